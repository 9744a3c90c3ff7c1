//! ARF patch: attention on a CPU in f32, one query row at a time, reading the KV cache where it
//! lies and never building the (q_len, kv_len) score matrix.
//!
//! Through candle ops attention was a batched gemm of the query rows against the whole cache, a
//! scale, a mask add and a softmax each writing a fresh score tensor, then a second gemm. In a
//! decode step that was ~0.65 ms per layer at 1,000 tokens of context, where reading the cache
//! once takes ~0.1 ms (decode fell from 53 to 29 tok/s between 209 and 1,002 tokens while
//! llama.cpp's stayed flat); in a prompt of 1,000 tokens, four 38 MB score tensors per layer,
//! half of them masked. Here each (sequence, head, query position) is one task: its scores
//! against the cached keys its mask lets it see (a `-inf` position costs nothing, so a causal
//! prompt does half the work), a softmax, and the weighted sum of values. From
//! `cpu_blocks::FROM_ROWS` query rows on (a prompt), the rows go in blocks instead, as matrix
//! products (cpu_blocks.rs).

use candle_core::{DType, Layout, Result, Storage, Tensor};
use rayon::prelude::*;

use super::cpu_blocks;
use crate::attention::SdpaParams;

/// `softmax(q k^T * scale + mask) v` for `q` of shape (b, heads, q_len, d) against `k`, `v` of
/// shape (b, kv_heads, kv_len, d); `mask` broadcastable to (b, heads, q_len, kv_len). `None` for
/// what this does not handle (not f32 on a CPU, softcapping, rows not contiguous): the caller
/// then takes the general path.
pub(crate) fn sdpa_by_rows_cpu(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: Option<&Tensor>,
    sdpa_params: &SdpaParams,
) -> Result<Option<Tensor>> {
    let (b, heads, q_len, d) = q.dims4()?;
    let (kb, kv_heads, kv_len, kd) = k.dims4()?;
    let f32_cpu = |t: &Tensor| t.dtype() == DType::F32 && t.device().is_cpu();
    if sdpa_params.softcap.is_some()
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
        Some(m) => match m.broadcast_as((b, heads, q_len, kv_len)) {
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
            Storage::Cpu(cpu) => Some(MaskRows {
                data: cpu.as_slice::<f32>()?,
                layout: (*layout).clone(),
            }),
            _ => return Ok(None),
        },
        None => None,
    };
    let operands = Operands {
        q_all,
        keys,
        values,
        mask,
        dims: Dims {
            batch: b,
            heads,
            q_len,
            kv_len,
            d,
            group: heads / kv_heads,
        },
        scale: sdpa_params.softmax_scale,
    };
    // A prompt's rows go in blocks, as matrix products (cpu_blocks.rs); a decode step's one
    // row (or a few) by the loop below, which reads each cached row once and builds nothing.
    let out = if q_len >= cpu_blocks::FROM_ROWS {
        cpu_blocks::attend_in_blocks(&operands)
    } else {
        attend_by_rows(&operands)
    };
    Tensor::from_vec(out, (b, heads, q_len, d), q.device()).map(Some)
}

/// The row kernel: each (sequence, head, query position) is one task.
fn attend_by_rows(operands: &Operands) -> Vec<f32> {
    let Operands {
        q_all,
        keys,
        values,
        mask,
        dims,
        scale,
    } = operands;
    let (scale, mask) = (*scale, mask.as_ref());
    let Dims {
        batch: b,
        heads,
        q_len,
        kv_len,
        d,
        group,
    } = *dims;
    let mut out = vec![0f32; b * heads * q_len * d];
    out.par_chunks_mut(d)
        .enumerate()
        .for_each_init(Vec::new, |scores, (row, out)| {
            let (batch, head, pos) = (row / (heads * q_len), row / q_len % heads, row % q_len);
            let kv_head = head / group;
            let query = &q_all[row * d..(row + 1) * d];
            let mask_row = mask.map(|m| m.row(batch, head, pos));
            let mask_of = |j: usize| mask_row.map_or(0.0, |(data, step)| data[j * step]);
            scores.clear();
            scores.extend((0..kv_len).map(|j| match mask_of(j) {
                f32::NEG_INFINITY => f32::NEG_INFINITY,
                m => dot(query, keys.row(batch, kv_head, j, d)) * scale + m,
            }));
            let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            if max == f32::NEG_INFINITY {
                // A row masked everywhere gets zeros, not NaNs.
                return;
            }
            let mut sum = 0f32;
            for (j, score) in scores.iter().enumerate() {
                if *score != f32::NEG_INFINITY {
                    let p = (*score - max).exp();
                    sum += p;
                    axpy(p, values.row(batch, kv_head, j, d), out);
                }
            }
            let inv = 1.0 / sum;
            out.iter_mut().for_each(|o| *o *= inv);
        });
    out
}

/// What both kernels read: `q_all` is (b, heads, q_len, d), contiguous from its start.
pub(super) struct Operands<'a> {
    pub q_all: &'a [f32],
    pub keys: Rows<'a>,
    pub values: Rows<'a>,
    pub mask: Option<MaskRows<'a>>,
    pub dims: Dims,
    pub scale: f32,
}

/// The sizes both kernels need: `heads` query heads share a K/V head `group` at a time.
#[derive(Clone, Copy)]
pub(super) struct Dims {
    pub batch: usize,
    pub heads: usize,
    pub q_len: usize,
    pub kv_len: usize,
    pub d: usize,
    pub group: usize,
}

/// A (b, kv_heads, kv_len, d) cache tensor read in place: each position's `d` values are
/// contiguous (the cache's views narrow its length, never its last dimension).
pub(super) struct Rows<'a> {
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
        self.rows(batch, head, pos, 1, d).0
    }

    /// Positions `from..from + n` of one head, and the step from one position to the next.
    pub(super) fn rows(
        &self,
        batch: usize,
        head: usize,
        from: usize,
        n: usize,
        d: usize,
    ) -> (&'a [f32], usize) {
        let [s0, s1, s2] = self.strides;
        let at = self.start + batch * s0 + head * s1 + from * s2;
        (&self.data[at..at + (n.max(1) - 1) * s2 + d], s2)
    }
}

/// The additive mask, broadcast to (b, heads, q_len, kv_len), read in place.
pub(super) struct MaskRows<'a> {
    data: &'a [f32],
    layout: Layout,
}

impl<'a> MaskRows<'a> {
    /// One query position's mask: where it starts, and the step from one key to the next.
    pub(super) fn row(&self, batch: usize, head: usize, pos: usize) -> (&'a [f32], usize) {
        let s = self.layout.stride();
        let at = self.layout.start_offset() + batch * s[0] + head * s[1] + pos * s[2];
        (&self.data[at..], s[3])
    }
}

/// Four independent 8-lane sums, so the loop vectorizes (four AVX2 registers, two dependent
/// FMAs each for a 64-wide head) without reassociating.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 32];
    let (a32, a_rest) = a.split_at(a.len() / 32 * 32);
    let (b32, b_rest) = b.split_at(a32.len());
    for (x, y) in a32.chunks_exact(32).zip(b32.chunks_exact(32)) {
        for i in 0..32 {
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
