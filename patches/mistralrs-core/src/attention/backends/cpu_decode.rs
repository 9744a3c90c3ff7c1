//! ARF patch: attention for one new token per sequence (a decode step) on a CPU, in f32, reading
//! the KV cache where it lies.
//!
//! Through candle ops a decode step's attention was a batched gemm of a few query rows against
//! the whole cache (gemm's packing and threading set up for 3 rows), a scale, a mask add and a
//! softmax each writing a fresh tensor, then a second gemm: ~0.65 ms per layer at 1,000 tokens of
//! context, where reading the cache once takes ~0.1 ms. Decode speed fell from 53 to 29 tok/s
//! between 209 and 1,002 tokens of context while llama.cpp's stayed flat. Here each query head is
//! one task: its scores against every cached key, the mask, a softmax and the weighted sum of
//! values, in one pass over its K/V head's rows.

use candle_core::{DType, Layout, Result, Storage, Tensor};
use rayon::prelude::*;

use crate::attention::SdpaParams;

/// `softmax(q k^T * scale + mask) v` for `q` of shape (b, heads, 1, d) against `k`, `v` of shape
/// (b, kv_heads, kv_len, d); `mask` broadcastable to (b, heads, 1, kv_len). `None` for what this
/// does not handle (not a decode step, not f32 on a CPU, softcapping, rows not contiguous): the
/// caller then takes the general path.
pub(crate) fn decode_sdpa_cpu(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: Option<&Tensor>,
    sdpa_params: &SdpaParams,
) -> Result<Option<Tensor>> {
    let (b, heads, q_len, d) = q.dims4()?;
    let (kb, kv_heads, kv_len, kd) = k.dims4()?;
    let f32_cpu = |t: &Tensor| t.dtype() == DType::F32 && t.device().is_cpu();
    if q_len != 1
        || sdpa_params.softcap.is_some()
        || kb != b
        || kd != d
        || v.dims4()? != (b, kv_heads, kv_len, d)
        || kv_heads == 0
        || heads % kv_heads != 0
        || kv_len == 0
        || ![q, k, v].into_iter().all(f32_cpu)
        || mask.is_some_and(|m| !f32_cpu(m))
    {
        return Ok(None);
    }
    let mask = match mask {
        Some(m) => match m.broadcast_as((b, heads, 1, kv_len)) {
            Ok(m) => Some(m),
            Err(_) => return Ok(None),
        },
        None => None,
    };
    let q = q.contiguous()?;
    let (q_store, q_layout) = q.storage_and_layout();
    let (k_store, k_layout) = k.storage_and_layout();
    let (v_store, v_layout) = v.storage_and_layout();
    let mask_parts = mask.as_ref().map(|m| m.storage_and_layout());
    let (Storage::Cpu(q_cpu), Storage::Cpu(k_cpu), Storage::Cpu(v_cpu)) =
        (&*q_store, &*k_store, &*v_store)
    else {
        return Ok(None);
    };
    let q_all = &q_cpu.as_slice::<f32>()?[q_layout.start_offset()..];
    let keys = Rows::new(k_cpu.as_slice::<f32>()?, k_layout);
    let values = Rows::new(v_cpu.as_slice::<f32>()?, v_layout);
    let (Some(keys), Some(values)) = (keys, values) else {
        return Ok(None);
    };
    let mask = match &mask_parts {
        Some((store, layout)) => match &**store {
            Storage::Cpu(cpu) => Some((cpu.as_slice::<f32>()?, *layout)),
            _ => return Ok(None),
        },
        None => None,
    };
    let group = heads / kv_heads;
    let scale = sdpa_params.softmax_scale;

    let mut out = vec![0f32; b * heads * d];
    out.par_chunks_mut(d).enumerate().for_each(|(row, out)| {
        let (batch, head) = (row / heads, row % heads);
        let kv_head = head / group;
        let query = &q_all[row * d..(row + 1) * d];
        let mut scores: Vec<f32> = (0..kv_len)
            .map(|j| dot(query, keys.row(batch, kv_head, j, d)) * scale)
            .collect();
        if let Some((data, layout)) = mask {
            let s = layout.stride();
            let base = layout.start_offset() + batch * s[0] + head * s[1];
            for (j, score) in scores.iter_mut().enumerate() {
                *score += data[base + j * s[3]];
            }
        }
        let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut sum = 0f32;
        for score in scores.iter_mut() {
            // A row masked everywhere (max -inf) gets zeros, not NaNs.
            *score = if max == f32::NEG_INFINITY {
                0.0
            } else {
                (*score - max).exp()
            };
            sum += *score;
        }
        for (j, &p) in scores.iter().enumerate() {
            if p != 0.0 {
                axpy(p, values.row(batch, kv_head, j, d), out);
            }
        }
        if sum > 0.0 {
            let inv = 1.0 / sum;
            out.iter_mut().for_each(|o| *o *= inv);
        }
    });
    Tensor::from_vec(out, (b, heads, 1, d), q.device()).map(Some)
}

/// A (b, kv_heads, kv_len, d) cache tensor read in place: each position's `d` values are
/// contiguous (the cache's views narrow its length, never its last dimension).
#[derive(Clone, Copy)]
struct Rows<'a> {
    data: &'a [f32],
    start: usize,
    strides: [usize; 3],
}

impl<'a> Rows<'a> {
    fn new(data: &'a [f32], layout: &Layout) -> Option<Self> {
        match *layout.stride() {
            [s0, s1, s2, 1] => Some(Self {
                data,
                start: layout.start_offset(),
                strides: [s0, s1, s2],
            }),
            _ => None,
        }
    }

    fn row(&self, batch: usize, head: usize, pos: usize, d: usize) -> &'a [f32] {
        let [s0, s1, s2] = self.strides;
        let at = self.start + batch * s0 + head * s1 + pos * s2;
        &self.data[at..at + d]
    }
}

/// Eight independent sums, so the loop vectorizes (one AVX2 register) without reassociating.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (a8, a_rest) = a.split_at(a.len() / 8 * 8);
    let (b8, b_rest) = b.split_at(a8.len());
    for (x, y) in a8.chunks_exact(8).zip(b8.chunks_exact(8)) {
        for i in 0..8 {
            acc[i] = fma(x[i], y[i], acc[i]);
        }
    }
    let tail: f32 = a_rest.iter().zip(b_rest).map(|(x, y)| x * y).sum();
    acc.iter().sum::<f32>() + tail
}

/// `out += p * x`.
fn axpy(p: f32, x: &[f32], out: &mut [f32]) {
    for (o, &x) in out.iter_mut().zip(x) {
        *o = fma(p, x, *o);
    }
}

/// `a * b + c`: one instruction where the build targets FMA (x86-64-v3), else two (`mul_add`
/// without the instruction is a slow library call).
#[inline(always)]
fn fma(a: f32, b: f32, c: f32) -> f32 {
    if cfg!(target_feature = "fma") {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
}
