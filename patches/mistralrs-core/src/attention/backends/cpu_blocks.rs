//! ARF patch: a prompt's attention on a CPU in f32, a block of query rows at a time, as two
//! matrix products per block (faer): the block's scores against the keys its rows can see,
//! then those probabilities times the values.
//!
//! The row kernel (cpu_rows.rs) computes each score as its own 64-wide dot product and adds
//! each value row as its own axpy: ~30 ns per (query row, key) on one thread whatever the
//! bytes, so a 1,022-token prompt spent ~69 ms per layer in attention on two threads, a third
//! of the prompt (`scripts/kernel-candidates attention`). A matrix product reuses each loaded
//! key and value across the block's rows. The keys a block multiplies are those between its
//! rows' first and last visible positions: a causal prompt computes about half the square, as
//! the row kernel does, and the mask still decides each score.

use std::ops::Range;

use faer::linalg::matmul::matmul;
use faer::{Accum, MatMut, MatRef, Par};
use rayon::prelude::*;

use super::cpu_rows::{Dims, Operands};

/// From this many query rows on, a call takes this kernel; a decode step's one row (or a few
/// rows of a prefix-cache hit) stays on the row kernel.
pub(super) const FROM_ROWS: usize = 16;

/// Query rows per block: a block's scores are `BLOCK x` its keys.
const BLOCK: usize = 64;

/// `softmax(q k^T * scale + mask) v`, into a fresh (b, heads, q_len, d).
pub(super) fn attend_in_blocks(operands: &Operands) -> Vec<f32> {
    let (q_all, keys, values) = (operands.q_all, &operands.keys, &operands.values);
    let (mask, scale) = (operands.mask.as_ref(), operands.scale);
    let Dims {
        heads,
        q_len,
        kv_len,
        d,
        group,
        ..
    } = operands.dims;
    let mut out = vec![0f32; operands.dims.batch * heads * q_len * d];
    out.par_chunks_mut(q_len * d)
        .enumerate()
        .for_each(|(head_index, head_out)| {
            let (batch, head) = (head_index / heads, head_index % heads);
            let kv_head = head / group;
            let head_q = &q_all[head_index * q_len * d..(head_index + 1) * q_len * d];
            head_out
                .par_chunks_mut(BLOCK * d)
                .enumerate()
                .for_each_init(Block::default, |block, (i, block_out)| {
                    let first = i * BLOCK;
                    let rows = block_out.len() / d;
                    block.seen.clear();
                    block.seen.extend(
                        (first..first + rows)
                            .map(|pos| visible(mask.map(|m| m.row(batch, head, pos)), kv_len)),
                    );
                    let Some(span) = union(&block.seen) else {
                        // Every row masked everywhere: zeros, as the row kernel gives.
                        return;
                    };
                    let (k, k_step) = keys.rows(batch, kv_head, span.start, span.len(), d);
                    let (v, v_step) = values.rows(batch, kv_head, span.start, span.len(), d);
                    let q = &head_q[first * d..(first + rows) * d];
                    let mask_rows = |r: usize| mask.map(|m| m.row(batch, head, first + r));
                    block.attend(
                        q,
                        [k, v],
                        [k_step, v_step],
                        span,
                        rows,
                        d,
                        scale,
                        mask_rows,
                        block_out,
                    );
                });
        });
    out
}

/// One task's scratch, kept across the blocks a thread takes.
#[derive(Default)]
struct Block {
    /// The keys each of the block's rows can see.
    seen: Vec<Range<usize>>,
    /// The block's scores, then its probabilities: `rows x span.len()`, row-major.
    probs: Vec<f32>,
}

impl Block {
    #[allow(clippy::too_many_arguments)]
    fn attend<'m>(
        &mut self,
        q: &[f32],
        [k, v]: [&[f32]; 2],
        [k_step, v_step]: [usize; 2],
        span: Range<usize>,
        rows: usize,
        d: usize,
        scale: f32,
        mask_rows: impl Fn(usize) -> Option<(&'m [f32], usize)>,
        out: &mut [f32],
    ) {
        let width = span.len();
        self.probs.resize(rows * width, 0.0);
        matmul(
            MatMut::from_row_major_slice_mut(&mut self.probs[..rows * width], rows, width),
            Accum::Replace,
            MatRef::from_row_major_slice(q, rows, d),
            MatRef::from_row_major_slice_with_stride(k, width, d, k_step).transpose(),
            scale,
            Par::Seq,
        );
        let mut inverse_sums = [0f32; BLOCK];
        for (r, row) in self.probs.chunks_mut(width).take(rows).enumerate() {
            let seen = self.seen[r].clone();
            let mask_row = mask_rows(r);
            for (key, score) in span.clone().zip(row.iter_mut()) {
                *score = match mask_row {
                    _ if !seen.contains(&key) => f32::NEG_INFINITY,
                    Some((m, step)) => *score + m[key * step],
                    None => *score,
                };
            }
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            if max == f32::NEG_INFINITY {
                // A row masked everywhere gets zeros, not NaNs.
                row.fill(0.0);
                continue;
            }
            // Eight lanes of sums, so that the exps and the adds vectorize.
            let mut lanes = [0f32; 8];
            let mut chunks = row.chunks_exact_mut(8);
            for chunk in &mut chunks {
                for (lane, p) in lanes.iter_mut().zip(chunk) {
                    *p = exp_nonpositive(*p - max);
                    *lane += *p;
                }
            }
            for p in chunks.into_remainder() {
                *p = exp_nonpositive(*p - max);
                lanes[0] += *p;
            }
            inverse_sums[r] = 1.0 / lanes.iter().sum::<f32>();
        }
        matmul(
            MatMut::from_row_major_slice_mut(out, rows, d),
            Accum::Replace,
            MatRef::from_row_major_slice(&self.probs[..rows * width], rows, width),
            MatRef::from_row_major_slice_with_stride(v, width, d, v_step),
            1.0,
            Par::Seq,
        );
        for (row, inv) in out.chunks_mut(d).zip(inverse_sums) {
            row.iter_mut().for_each(|o| *o *= inv);
        }
    }
}

/// The keys one query row can see: from the first to the last position its mask leaves above
/// `-inf` (all of them without a mask); empty where it hides them all.
fn visible(mask_row: Option<(&[f32], usize)>, kv_len: usize) -> Range<usize> {
    let Some((mask, step)) = mask_row else {
        return 0..kv_len;
    };
    let seen = |j: &usize| mask[j * step] != f32::NEG_INFINITY;
    match (0..kv_len).find(seen) {
        Some(first) => first..(first..kv_len).rfind(seen).map_or(first, |last| last + 1),
        None => 0..0,
    }
}

/// The smallest range holding every non-empty one.
fn union(ranges: &[Range<usize>]) -> Option<Range<usize>> {
    ranges
        .iter()
        .filter(|r| !r.is_empty())
        .cloned()
        .reduce(|a, b| a.start.min(b.start)..a.end.max(b.end))
}

/// `e^x` for `x <= 0`, in arithmetic the compiler vectorizes (`f32::exp` is a libm call per
/// element): `x = n ln 2 + r`, Cephes' polynomial for `e^r` (within ~2 ulp of libm), times `2^n`
/// built in the exponent bits; 0 below -87, where `e^x` leaves the normal range. The trainer's
/// softmaxes use the same function (trainer-svc `model/fused/exp.rs`); a patched crate cannot
/// depend on the workspace's own.
#[inline(always)]
fn exp_nonpositive(x: f32) -> f32 {
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // 1.5 * 2^23: adding it leaves round(x * log2 e) in the low mantissa bits.
    const ROUND: f32 = 12_582_912.0;
    let clamped = x.max(-87.0);
    let t = clamped.mul_add(std::f32::consts::LOG2_E, ROUND);
    let n = t - ROUND;
    let r = n.mul_add(-LN2_LO, n.mul_add(-LN2_HI, clamped));
    let mut p = 1.987_569_1e-4_f32;
    for c in [
        1.398_199_9e-3,
        8.333_452e-3,
        4.166_579_6e-2,
        1.666_666_6e-1,
        5e-1,
    ] {
        p = p.mul_add(r, c);
    }
    let e_r = p.mul_add(r * r, r) + 1.0;
    let exponent = (t.to_bits() as i32 - ROUND.to_bits() as i32 + 127) as u32;
    let e = e_r * f32::from_bits(exponent << 23);
    if x < -87.0 { 0.0 } else { e }
}
