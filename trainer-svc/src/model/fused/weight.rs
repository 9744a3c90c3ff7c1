//! A frozen weight as the fused ops multiply it: f32 products on faer for an f32 base, bf16
//! products (`super::bf16`) for a bf16 one, never a widened copy of the weight per step.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, DType, Result, Storage, Tensor};
use half::bf16;

use super::{bf16 as bf16_products, gemm};

/// The values of a frozen `W` `[out, k]`.
#[derive(Clone, Copy)]
pub enum Weight<'a> {
    F32(&'a [f32]),
    Bf16(&'a [bf16]),
}

impl Weight<'_> {
    /// Its rows (`out`), for rows of `k` values.
    pub fn rows(self, k: usize) -> usize {
        match self {
            Weight::F32(w) => w.len() / k,
            Weight::Bf16(w) => w.len() / k,
        }
    }

    /// `x W^T` for `x` `[n, k]`: `[n, out]`.
    pub fn times_transposed(self, x: &[f32], n: usize, k: usize, out: usize) -> Vec<f32> {
        match self {
            Weight::F32(w) => gemm::times_transposed(x, n, k, w, out),
            Weight::Bf16(w) => bf16_products::times_transposed(x, n, k, w, out),
        }
    }

    /// `g W` for `g` `[n, out]`: `[n, k]`.
    pub fn times(self, g: &[f32], n: usize, out: usize, k: usize) -> Vec<f32> {
        match self {
            Weight::F32(w) => gemm::times(g, n, out, w, k),
            Weight::Bf16(w) => bf16_products::times(g, n, &bf16_products::pack(w, out, k)),
        }
    }
}

/// Whether the fused ops take this frozen weight as it is: f32 or bf16 on the CPU (unless
/// `ARF_TRAINER_KERNELS=formulas`).
pub fn applies_to(w: &Tensor) -> bool {
    super::kernels_enabled() && w.device().is_cpu() && matches!(w.dtype(), DType::F32 | DType::BF16)
}

/// The weight as the fused ops multiply it: itself when it [`applies_to`] them (a bf16 base
/// stays bf16, its products in bf16), widened to f32 otherwise.
pub fn as_multiplied(w: &Tensor) -> Result<Tensor> {
    if applies_to(w) {
        Ok(w.clone())
    } else {
        w.to_dtype(DType::F32)
    }
}

/// Hands `f` the values of a frozen weight (copied first only when it is not contiguous).
pub fn with_weight<R>(w: &Tensor, op: &str, f: impl FnOnce(Weight<'_>) -> Result<R>) -> Result<R> {
    let w = w.contiguous()?;
    let (storage, layout) = w.storage_and_layout();
    let Some((start, end)) = layout.contiguous_offsets() else {
        candle_core::bail!("{op}: expects a contiguous weight")
    };
    match &*storage {
        Storage::Cpu(CpuStorage::F32(v)) => f(Weight::F32(&v[start..end])),
        Storage::Cpu(CpuStorage::BF16(v)) => f(Weight::Bf16(&v[start..end])),
        Storage::Cpu(s) => candle_core::bail!("{op}: a frozen weight in {:?}", s.dtype()),
        _ => candle_core::bail!("{op}: expects a CPU weight"),
    }
}
