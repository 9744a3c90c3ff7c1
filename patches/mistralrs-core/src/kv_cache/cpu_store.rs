//! ARF patch: the dtype a KV cache on a CPU keeps its keys and values in.
//!
//! f16 by default, as llama.cpp's default cache: a generated token's attention reads every
//! cached key and value once per layer (47 MB of f32 for SmolLM2 at 1,000 tokens of context,
//! more than its quantized weights), and the caches of a decode batch are most of the editor's
//! memory beyond the weights. Keys and values are rounded to f16 as they are stored; the row
//! attention (`attention/backends/cpu_rows.rs`) widens them back to f32 as it reads, and every
//! product and sum stays f32. `ARF_KV_CACHE=f32` keeps them f32 (upstream's arithmetic).
//! Applies to plain caches (`KvCache::Normal`) of f32 tensors on a CPU; GPU caches and sliding
//! windows are left as they are.

use std::sync::OnceLock;

use candle_core::{DType, Result, Storage, Tensor};
use half::f16;
use half::slice::HalfFloatSliceExt;

/// The variable that chooses, and its values.
pub const ENV: &str = "ARF_KV_CACHE";

/// The dtype a CPU cache stores f32 keys and values in (`ARF_KV_CACHE`: `f16`, the default, or
/// `f32`); an error that names the variable for any other value.
pub fn cpu_kv_cache_dtype() -> std::result::Result<DType, String> {
    static CHOSEN: OnceLock<std::result::Result<DType, String>> = OnceLock::new();
    CHOSEN
        .get_or_init(|| match std::env::var(ENV) {
            Err(std::env::VarError::NotPresent) => Ok(DType::F16),
            Ok(value) => match value.trim().to_ascii_lowercase().as_str() {
                "f16" | "" => Ok(DType::F16),
                "f32" => Ok(DType::F32),
                _ => Err(format!("{ENV}={value:?}: expected f16 or f32")),
            },
            Err(e) => Err(format!("{ENV}: {e}")),
        })
        .clone()
}

/// `t` as the cache stores it: contiguous, and rounded to f16 when it is f32 on a CPU and the
/// cache keeps f16.
pub(super) fn to_store(t: &Tensor) -> Result<Tensor> {
    if !(t.device().is_cpu() && t.dtype() == DType::F32) {
        return t.contiguous();
    }
    match cpu_kv_cache_dtype().map_err(candle_core::Error::Msg)? {
        DType::F16 => round_to_f16(t),
        _ => t.contiguous(),
    }
}

/// One vectorized pass (F16C where the CPU has it), where `to_dtype` converts an element at a
/// time.
fn round_to_f16(t: &Tensor) -> Result<Tensor> {
    let t = t.contiguous()?;
    let (storage, layout) = t.storage_and_layout();
    let Storage::Cpu(cpu) = &*storage else {
        candle_core::bail!("kv-cache: a CPU tensor without CPU storage");
    };
    let src = &cpu.as_slice::<f32>()?[layout.start_offset()..][..t.elem_count()];
    let mut out = vec![f16::ZERO; src.len()];
    out.convert_from_f32_slice(src);
    Tensor::from_vec(out, t.shape(), t.device())
}
