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
//! products (cpu_blocks.rs). The cache may hold f16 (`kv_cache/cpu_store.rs`): the row kernel
//! widens each key and value as it reads it; a prompt's blocks widen the cache once per call.

use candle_core::{CpuStorage, DType, Layout, Result, Storage, Tensor};
use half::f16;
use rayon::prelude::*;

use super::cpu_blocks;
use crate::attention::SdpaParams;

/// `softmax(q k^T * scale + mask) v` for `q` of shape (b, heads, q_len, d) against `k`, `v` of
/// shape (b, kv_heads, kv_len, d); `mask` broadcastable to (b, heads, q_len, kv_len). `k` and
/// `v` may be f16 (an f16 cache). `None` for what this does not handle (not f32 on a CPU,
/// softcapping, rows not contiguous): the caller then takes the general path.
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
    let f16_cache = [k, v]
        .into_iter()
        .all(|t| t.dtype() == DType::F16 && t.device().is_cpu());
    if f16_cache && q_len >= cpu_blocks::FROM_ROWS {
        // A prompt: its blocks multiply f32, and widening the cache once costs a small part of
        // the products.
        let (k, v) = (k.to_dtype(DType::F32)?, v.to_dtype(DType::F32)?);
        return sdpa_by_rows_cpu(q, &k, &v, mask, sdpa_params);
    }
    if sdpa_params.softcap.is_some()
        || kb != b
        || kd != d
        || v.dims4()? != (b, kv_heads, kv_len, d)
        || kv_heads == 0
        || heads % kv_heads != 0
        || kv_len == 0
        || !f32_cpu(q)
        || !(f16_cache || [k, v].into_iter().all(f32_cpu))
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
    let dims = Dims {
        batch: b,
        heads,
        q_len,
        kv_len,
        d,
        group: heads / kv_heads,
    };
    let scale = sdpa_params.softmax_scale;
    let cache = (k_cpu, k_layout, v_cpu, v_layout);
    let out = if f16_cache {
        attend::<f16>(q_all, cache, mask, dims, scale)?
    } else {
        attend::<f32>(q_all, cache, mask, dims, scale)?
    };
    let Some(out) = out else {
        return Ok(None);
    };
    Tensor::from_vec(out, (b, heads, q_len, d), q.device()).map(Some)
}

/// Attention over a cache of `T`, read in place: `None` when its rows are not contiguous.
fn attend<T: CacheElement + candle_core::WithDType>(
    q_all: &[f32],
    (k, k_layout, v, v_layout): (&CpuStorage, &Layout, &CpuStorage, &Layout),
    mask: Option<MaskRows<'_>>,
    dims: Dims,
    scale: f32,
) -> Result<Option<Vec<f32>>> {
    let keys = Rows::new(k.as_slice::<T>()?, k_layout);
    let values = Rows::new(v.as_slice::<T>()?, v_layout);
    let (Some(keys), Some(values)) = (keys, values) else {
        return Ok(None);
    };
    Ok(Some(T::attend(&Operands {
        q_all,
        keys,
        values,
        mask,
        dims,
        scale,
    })))
}

/// The row kernel: each (sequence, head, query position) is one task.
fn attend_by_rows<T: CacheElement>(operands: &Operands<T>) -> Vec<f32> {
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
                m => T::dot(query, keys.row(batch, kv_head, j, d)) * scale + m,
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
                    T::axpy(p, values.row(batch, kv_head, j, d), out);
                }
            }
            let inv = 1.0 / sum;
            out.iter_mut().for_each(|o| *o *= inv);
        });
    out
}

/// What both kernels read: `q_all` is (b, heads, q_len, d), contiguous from its start; the
/// cache's keys and values are f32, or f16 for the row kernel.
pub(super) struct Operands<'a, T = f32> {
    pub q_all: &'a [f32],
    pub keys: Rows<'a, T>,
    pub values: Rows<'a, T>,
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
pub(super) struct Rows<'a, T = f32> {
    data: &'a [T],
    start: usize,
    strides: [usize; 3],
}

impl<'a, T> Rows<'a, T> {
    fn new(data: &'a [T], layout: &Layout) -> Option<Self> {
        match *layout.stride() {
            [s0, s1, s2, 1] => Some(Self {
                data,
                start: layout.start_offset(),
                strides: [s0, s1, s2],
            }),
            _ => None,
        }
    }

    fn row(&self, batch: usize, head: usize, pos: usize, d: usize) -> &'a [T] {
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
    ) -> (&'a [T], usize) {
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

/// What a cache row holds: the row kernel's two reads of a row, for each stored dtype, and the
/// kernel that attends over such a cache.
trait CacheElement: Sized + Sync {
    /// `a . b`.
    fn dot(a: &[f32], b: &[Self]) -> f32;
    /// `out += p * x`.
    fn axpy(p: f32, x: &[Self], out: &mut [f32]);
    /// The row kernel; f32 sends a prompt's rows to the blocks instead.
    fn attend(operands: &Operands<Self>) -> Vec<f32> {
        attend_by_rows(operands)
    }
}

impl CacheElement for f32 {
    fn dot(a: &[f32], b: &[f32]) -> f32 {
        dot(a, b)
    }
    fn axpy(p: f32, x: &[f32], out: &mut [f32]) {
        axpy(p, x, out)
    }
    /// A prompt's rows go in blocks, as matrix products (cpu_blocks.rs); a decode step's one row
    /// (or a few) by the row kernel, which reads each cached row once and builds nothing. (An
    /// f16 cache never gets here with a prompt: `sdpa_by_rows_cpu` widens it first.)
    fn attend(operands: &Operands<f32>) -> Vec<f32> {
        if operands.dims.q_len >= cpu_blocks::FROM_ROWS {
            cpu_blocks::attend_in_blocks(operands)
        } else {
            attend_by_rows(operands)
        }
    }
}

impl CacheElement for f16 {
    fn dot(a: &[f32], b: &[f16]) -> f32 {
        f16_reads::dot(a, b)
    }
    fn axpy(p: f32, x: &[f16], out: &mut [f32]) {
        f16_reads::axpy(p, x, out)
    }
}

/// Widened eight at a time (`vcvtph2ps`) where the build targets F16C and FMA (x86-64-v3, the
/// project's build), one at a time elsewhere.
#[cfg(all(
    target_arch = "x86_64",
    target_feature = "avx2",
    target_feature = "f16c",
    target_feature = "fma"
))]
use f16c as f16_reads;
#[cfg(not(all(
    target_arch = "x86_64",
    target_feature = "avx2",
    target_feature = "f16c",
    target_feature = "fma"
)))]
use portable_f16 as f16_reads;

/// The f16 reads one value at a time, for builds without F16C.
#[cfg(not(all(
    target_arch = "x86_64",
    target_feature = "avx2",
    target_feature = "f16c",
    target_feature = "fma"
)))]
mod portable_f16 {
    use half::f16;

    pub(super) fn dot(a: &[f32], b: &[f16]) -> f32 {
        a.iter().zip(b).map(|(x, y)| x * y.to_f32()).sum()
    }

    pub(super) fn axpy(p: f32, x: &[f16], out: &mut [f32]) {
        for (o, x) in out.iter_mut().zip(x) {
            *o = super::fma(p, x.to_f32(), *o);
        }
    }
}

/// The f16 reads with F16C: eight values widened per instruction, four 8-lane sums for a dot
/// product (as `dot`), the rest one at a time.
#[cfg(all(
    target_arch = "x86_64",
    target_feature = "avx2",
    target_feature = "f16c",
    target_feature = "fma"
))]
mod f16c {
    use half::f16;
    use std::arch::x86_64::*;

    /// Eight f16 from `x[i..i + 8]`, widened.
    ///
    /// # Safety
    /// `i + 8 <= x.len()`.
    #[inline(always)]
    unsafe fn widen8(x: &[f16], i: usize) -> __m256 {
        _mm256_cvtph_ps(_mm_loadu_si128(x.as_ptr().add(i).cast()))
    }

    pub(super) fn dot(a: &[f32], b: &[f16]) -> f32 {
        let n = a.len().min(b.len());
        let full = n / 32 * 32;
        // SAFETY: every load reads within `..full` of both slices (`full <= n`); the build
        // targets AVX2, F16C and FMA (this module's cfg).
        let mut total = unsafe {
            let mut acc = [_mm256_setzero_ps(); 4];
            for i in (0..full).step_by(32) {
                for (lane, acc) in acc.iter_mut().enumerate() {
                    let at = i + 8 * lane;
                    let x = _mm256_loadu_ps(a.as_ptr().add(at));
                    *acc = _mm256_fmadd_ps(x, widen8(b, at), *acc);
                }
            }
            let sum = _mm256_add_ps(
                _mm256_add_ps(acc[0], acc[1]),
                _mm256_add_ps(acc[2], acc[3]),
            );
            let mut lanes = [0f32; 8];
            _mm256_storeu_ps(lanes.as_mut_ptr(), sum);
            lanes.iter().sum::<f32>()
        };
        for i in full..n {
            total += a[i] * b[i].to_f32();
        }
        total
    }

    pub(super) fn axpy(p: f32, x: &[f16], out: &mut [f32]) {
        let n = out.len().min(x.len());
        let full = n / 8 * 8;
        // SAFETY: as in `dot`, every access is within `..full` of both slices.
        unsafe {
            let p8 = _mm256_set1_ps(p);
            for i in (0..full).step_by(8) {
                let o = out.as_mut_ptr().add(i);
                _mm256_storeu_ps(o, _mm256_fmadd_ps(p8, widen8(x, i), _mm256_loadu_ps(o)));
            }
        }
        for i in full..n {
            out[i] = p.mul_add(x[i].to_f32(), out[i]);
        }
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
