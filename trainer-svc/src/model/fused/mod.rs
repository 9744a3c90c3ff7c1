//! Fused CPU kernels for training, each with a hand-written backward pass.
//!
//! Written as the formulas (`super::super::llama`'s fallback path), every op below costs
//! candle's autograd a dozen single-threaded passes and as many fresh tensors: softmax over the
//! masked half of attention, rms-norm as square, mean, sqrt, recip and two products, a
//! `seq x vocab` logits tensor and its gradient. Here each op is one parallel pass forward and
//! one backward, attention skips the masked half, and the loss never holds all the logits.
//! Every op is checked against the formulas' autograd in its tests. On CUDA the formulas run.

pub mod attention;
pub mod bf16;
pub mod exp;
pub mod gemm;
pub mod lm_head_loss;
pub mod lora_linear;
pub mod rms_norm;
pub mod rope;
pub mod swiglu;
pub mod threads;
pub mod weight;

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, DType, Layout, Result, Storage, Tensor};

/// Whether the fused kernels take this tensor: f32 on the CPU, unless `ARF_TRAINER_KERNELS` is
/// `formulas` (the candle-op path: the bench's "before" row, and a way around a kernel bug).
pub fn applies_to(t: &Tensor) -> bool {
    kernels_enabled() && t.device().is_cpu() && t.dtype() == DType::F32
}

/// False when `ARF_TRAINER_KERNELS` is `formulas`.
pub(crate) fn kernels_enabled() -> bool {
    static FORMULAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    !*FORMULAS.get_or_init(|| std::env::var("ARF_TRAINER_KERNELS").is_ok_and(|v| v == "formulas"))
}

/// The values of a contiguous f32 CPU storage.
pub(crate) fn values<'a>(s: &'a CpuStorage, l: &Layout, op: &str) -> Result<&'a [f32]> {
    let CpuStorage::F32(v) = s else {
        candle_core::bail!("{op}: expects f32, got {:?}", s.dtype())
    };
    let Some((start, end)) = l.contiguous_offsets() else {
        candle_core::bail!("{op}: expects a contiguous input")
    };
    Ok(&v[start..end])
}

/// Hands `f` the values of CPU tensors (each copied first only when it is not contiguous).
pub(crate) fn with_values<R, const N: usize>(
    tensors: [&Tensor; N],
    op: &str,
    f: impl FnOnce([&[f32]; N]) -> Result<R>,
) -> Result<R> {
    let tensors = tensors.map(|t| t.contiguous());
    let mut owned = Vec::with_capacity(N);
    for t in tensors {
        owned.push(t?);
    }
    let guards: Vec<_> = owned.iter().map(|t| t.storage_and_layout()).collect();
    let mut slices = Vec::with_capacity(N);
    for (s, l) in &guards {
        let Storage::Cpu(s) = &**s else {
            candle_core::bail!("{op}: expects a CPU tensor")
        };
        slices.push(values(s, l, op)?);
    }
    let slices: [&[f32]; N] = slices
        .try_into()
        .unwrap_or_else(|_| unreachable!("one slice per tensor"));
    f(slices)
}

/// Values handed to one parallel task at least: enough work to outweigh the task's cost.
pub(crate) const CHUNK: usize = 16_384;

/// Rows handed to one task at least: `CHUNK` values' worth.
pub(crate) fn rows_per_task(row_len: usize) -> usize {
    (CHUNK / row_len.max(1)).max(1)
}

#[cfg(test)]
pub(crate) mod testing {
    use candle_core::{Result, Tensor};

    pub fn max_diff(a: &Tensor, b: &Tensor) -> Result<f32> {
        (a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()
    }

    /// Asserts that two tensors agree within `tol`, relative to the larger magnitude.
    pub fn assert_close(what: &str, got: &Tensor, want: &Tensor, tol: f32) -> Result<()> {
        assert_eq!(got.dims(), want.dims(), "{what}: shapes");
        let scale = want
            .abs()?
            .flatten_all()?
            .max(0)?
            .to_scalar::<f32>()?
            .max(1.0);
        let d = max_diff(got, want)?;
        assert!(
            d <= tol * scale,
            "{what}: max difference {d} (scale {scale})"
        );
        Ok(())
    }
}
