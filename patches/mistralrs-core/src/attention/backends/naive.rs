#![allow(clippy::cast_possible_truncation, clippy::cast_precision_loss)]

use crate::MemoryUsage;

use candle_core::{DType, Device, Result, Tensor};
use mistralrs_quant::MatMul;

use crate::attention::{chunked_attention, SdpaParams};

/// Not *really* sure why this is necessary but it is.
pub(crate) fn maybe_synchronize(device: &Device) -> Result<()> {
    // ARF patch: synchronizing a CPU does nothing, but asking how much memory is free builds a
    // `sysinfo::System::new_all()`, which reads /proc for every process on the machine: once
    // per layer per token, that was most of a CPU decode step.
    if device.is_cpu() {
        return Ok(());
    }
    // If less that 4 GB available, synchronize
    #[cfg(target_pointer_width = "64")]
    const FOUR_GIB: usize = 4 * 1024 * 1024 * 1024;
    #[cfg(not(target_pointer_width = "64"))]
    const FOUR_GIB: usize = usize::MAX;
    if MemoryUsage.get_memory_available(device)? < FOUR_GIB {
        device.synchronize()?;
    }
    Ok(())
}

/// Computes softmax(QK^T*sqrt(d_k))V
pub(crate) fn naive_sdpa(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: Option<&Tensor>,
    sdpa_params: &SdpaParams,
) -> Result<Tensor> {
    maybe_synchronize(q.device())?;

    // Use chunked attention with a closure that captures the necessary parameters
    chunked_attention(q, k, v, mask, |q_chunk, k, v, mask_chunk| {
        let mut att =
            MatMul.matmul_affine_mul(q_chunk, &k.t()?, sdpa_params.softmax_scale.into())?;

        if let Some(softcap) = sdpa_params.softcap {
            att = (att / softcap as f64)?;
            att = att.tanh()?;
            att = (att * softcap as f64)?;
        }

        if let Some(mask) = mask_chunk {
            att = att.broadcast_add(mask)?;
        }

        att = candle_nn::ops::softmax_last_dim(&att)?;
        MatMul.matmul(&att, v)
    })
}

/// ARF patch: attention on a CPU in f32, without copying the KV cache. Upstream's path repeats K
/// and V once per query head of a group (`repeat_kv`: a copy of the whole cache per layer per
/// token), and `mistralrs_quant::MatMul::matmul` turns both operands into f16 on a CPU (a
/// strided conversion of the cache, then an f16 gemm that converts element by element, and f16
/// scores). Here the query heads that share a K/V head are stacked as the rows of one f32 matmul
/// against it. `None` for what it does not handle (not f32, a mask layout it does not know): the
/// caller then takes upstream's path.
pub(crate) fn grouped_sdpa_cpu(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: Option<&Tensor>,
    sdpa_params: &SdpaParams,
) -> Result<Option<Tensor>> {
    let (b, heads, _, head_dim) = q.dims4()?;
    let (_, kv_heads, kv_len, _) = k.dims4()?;
    let v_dim = v.dim(3)?;
    let f32s = [q, k, v].iter().all(|x| x.dtype() == DType::F32);
    if !f32s || kv_heads == 0 || heads % kv_heads != 0 {
        return Ok(None);
    }
    let group = heads / kv_heads;
    // Mask layouts this path knows: (q, kv), (b, q, kv), (b, 1, q, kv) and (b, heads, q, kv).
    let known = |dims: &[usize]| match dims {
        [_, _] | [_, _, _] | [_, 1, _, _] => true,
        &[_, mh, _, _] => mh == heads,
        _ => false,
    };
    if mask.is_some_and(|m| !known(m.dims())) {
        return Ok(None);
    }
    // A known mask as (batch, kv_heads, group, q_len, kv_len), or broadcastable to it.
    let grouped_mask = |mask: &Tensor, q_len: usize| -> Result<Tensor> {
        match *mask.dims() {
            [_, _] => Ok(mask.clone()),
            [mb, _, _] | [mb, 1, _, _] => mask.contiguous()?.reshape((mb, 1, 1, q_len, kv_len)),
            [mb, ..] => mask
                .contiguous()?
                .reshape((mb, kv_heads, group, q_len, kv_len)),
            [] => candle_core::bail!("attention mask of rank 0"),
        }
    };
    chunked_attention(q, k, v, mask, |q, k, v, mask| {
        let q_len = q.dim(2)?;
        let rows = group * q_len;
        let q = q.contiguous()?.reshape((b, kv_heads, rows, head_dim))?;
        let mut att = (q.matmul(&k.t()?)? * f64::from(sdpa_params.softmax_scale))?;
        if let Some(softcap) = sdpa_params.softcap {
            att = ((att / f64::from(softcap))?.tanh()? * f64::from(softcap))?;
        }
        if let Some(mask) = mask {
            let mask = grouped_mask(mask, q_len)?;
            att = att
                .reshape((b, kv_heads, group, q_len, kv_len))?
                .broadcast_add(&mask)?
                .reshape((b, kv_heads, rows, kv_len))?;
        }
        let att = candle_nn::ops::softmax_last_dim(&att)?;
        att.matmul(v)?.reshape((b, heads, q_len, v_dim))
    })
    .map(Some)
}
