//! Causal self-attention with grouped K/V heads, on heads laid out as the projections give them
//! (`q`: `[b, s, heads, d]`, `k`/`v`: `[b, s, kv_heads, d]`). Query rows go in blocks; a block
//! computes scores only against the keys before its last row, so the masked half of the
//! `s x s` scores is never computed, and no score tensor outlives its block. The backward pass
//! recomputes each block's probabilities instead of keeping them (as FlashAttention does).

use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::exp::{exp_nonpositive, lane_sum};
use super::gemm::{Threads, matmul, rows, rows_mut};
use super::{threads, values, with_values};

/// Query rows per block: a block's scores are `BLOCK x s` values.
const BLOCK: usize = 64;

#[derive(Clone, Copy)]
struct Dims {
    batch: usize,
    seq: usize,
    heads: usize,
    kv_heads: usize,
    dim: usize,
}

impl Dims {
    /// Where query head `h` of sequence `b` starts; its rows are `q_stride` apart.
    fn q_start(&self, b: usize, h: usize) -> usize {
        (b * self.seq * self.heads + h) * self.dim
    }
    fn q_stride(&self) -> usize {
        self.heads * self.dim
    }
    /// Where the K/V head serving query head `h` of sequence `b` starts.
    fn kv_start(&self, b: usize, h: usize) -> usize {
        let group = h / (self.heads / self.kv_heads);
        (b * self.seq * self.kv_heads + group) * self.dim
    }
    fn kv_stride(&self) -> usize {
        self.kv_heads * self.dim
    }
}

struct CausalAttention {
    dims: Dims,
    scale: f32,
}

impl CausalAttention {
    /// The attention probabilities of query rows `i0..i1` over keys `0..i1`, into `p`
    /// (`(i1 - i0) x i1`, row-major), zero where the mask hides a key.
    fn probs(&self, p: &mut [f32], q: &[f32], k: &[f32], i0: usize, i1: usize) {
        let d = self.dims;
        let m = i1 - i0;
        matmul(
            rows_mut(p, m, i1, i1),
            rows(&q[i0 * d.q_stride()..], m, d.dim, d.q_stride()),
            rows(k, i1, d.dim, d.kv_stride()).transpose(),
            self.scale,
            false,
            Threads::One,
        );
        for (r, row) in p.chunks_mut(i1).take(m).enumerate() {
            let (seen, hidden) = row.split_at_mut(i0 + r + 1);
            let max = seen.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
            for v in seen.iter_mut() {
                *v = exp_nonpositive(*v - max);
            }
            let inv = 1.0 / lane_sum(seen, |p| p);
            for v in seen.iter_mut() {
                *v *= inv;
            }
            hidden.fill(0.0);
        }
    }

    /// One head's output, `[s, d]`.
    fn head_forward(&self, q: &[f32], k: &[f32], v: &[f32]) -> Vec<f32> {
        let d = self.dims;
        let mut out = vec![0f32; d.seq * d.dim];
        let mut p = vec![0f32; BLOCK * d.seq];
        for i0 in (0..d.seq).step_by(BLOCK) {
            let i1 = (i0 + BLOCK).min(d.seq);
            let m = i1 - i0;
            self.probs(&mut p, q, k, i0, i1);
            matmul(
                rows_mut(&mut out[i0 * d.dim..], m, d.dim, d.dim),
                rows(&p, m, i1, i1),
                rows(v, i1, d.dim, d.kv_stride()),
                1.0,
                false,
                Threads::One,
            );
        }
        out
    }

    /// One head's gradients of q, k and v, each `[s, d]`, given its output `o` and `dout`.
    fn head_backward(&self, [q, k, v, o, dout]: [&[f32]; 5]) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let d = self.dims;
        let (s, hd, qs) = (d.seq, d.dim, d.q_stride());
        // D_i = dout_i . o_i, the softmax backward's row term.
        let drow: Vec<f32> = (0..s)
            .map(|i| {
                let (a, b) = (&dout[i * qs..][..hd], &o[i * qs..][..hd]);
                a.iter().zip(b).map(|(a, b)| a * b).sum()
            })
            .collect();
        let (mut dq, mut dk, mut dv) = (vec![0f32; s * hd], vec![0f32; s * hd], vec![0f32; s * hd]);
        let (mut p, mut ds) = (vec![0f32; BLOCK * s], vec![0f32; BLOCK * s]);
        for i0 in (0..s).step_by(BLOCK) {
            let i1 = (i0 + BLOCK).min(s);
            let m = i1 - i0;
            self.probs(&mut p, q, k, i0, i1);
            let dout_blk = rows(&dout[i0 * qs..], m, hd, qs);
            // dP = dout V^T, then dS = P (dP - D_i) in place.
            matmul(
                rows_mut(&mut ds, m, i1, i1),
                dout_blk,
                rows(v, i1, hd, d.kv_stride()).transpose(),
                1.0,
                false,
                Threads::One,
            );
            for (r, (ds, p)) in ds.chunks_mut(i1).zip(p.chunks(i1)).take(m).enumerate() {
                let di = drow[i0 + r];
                for (ds, p) in ds.iter_mut().zip(p) {
                    *ds = p * (*ds - di);
                }
            }
            let (ds_blk, p_blk) = (rows(&ds, m, i1, i1), rows(&p, m, i1, i1));
            // dQ = scale dS K; dK += scale dS^T Q; dV += P^T dout.
            matmul(
                rows_mut(&mut dq[i0 * hd..], m, hd, hd),
                ds_blk,
                rows(k, i1, hd, d.kv_stride()),
                self.scale,
                false,
                Threads::One,
            );
            matmul(
                rows_mut(&mut dk, i1, hd, hd),
                ds_blk.transpose(),
                rows(&q[i0 * qs..], m, hd, qs),
                self.scale,
                true,
                Threads::One,
            );
            matmul(
                rows_mut(&mut dv, i1, hd, hd),
                p_blk.transpose(),
                dout_blk,
                1.0,
                true,
                Threads::One,
            );
        }
        (dq, dk, dv)
    }

    /// Runs `f` on every (sequence, head) pair in parallel: its results in that order.
    fn per_head<T: Default + Send>(&self, f: impl Fn(usize, usize) -> T + Sync) -> Vec<T> {
        let heads = self.dims.heads;
        let mut out: Vec<T> = (0..self.dims.batch * heads).map(|_| T::default()).collect();
        threads::for_each(out.par_iter_mut().enumerate(), 1, |(i, slot)| {
            *slot = f(i / heads, i % heads)
        });
        out
    }
}

/// Copies `[s, d]` per-head rows into a `[b, s, heads, d]` layout (`add`ing when heads share).
fn scatter(dst: &mut [f32], start: usize, stride: usize, head: &[f32], dim: usize) {
    for (i, row) in head.chunks(dim).enumerate() {
        for (d, v) in dst[start + i * stride..][..dim].iter_mut().zip(row) {
            *d += v;
        }
    }
}

impl CustomOp3 for CausalAttention {
    fn name(&self) -> &'static str {
        "fused-causal-attention"
    }

    fn cpu_fwd(
        &self,
        queries: &CpuStorage,
        queries_layout: &Layout,
        keys: &CpuStorage,
        keys_layout: &Layout,
        values_in: &CpuStorage,
        values_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let name = self.name();
        let q = values(queries, queries_layout, name)?;
        let k = values(keys, keys_layout, name)?;
        let v = values(values_in, values_layout, name)?;
        let d = self.dims;
        let outs: Vec<Vec<f32>> = self.per_head(|b, h| {
            self.head_forward(
                &q[d.q_start(b, h)..],
                &k[d.kv_start(b, h)..],
                &v[d.kv_start(b, h)..],
            )
        });
        let mut out = vec![0f32; q.len()];
        for (i, o) in outs.iter().enumerate() {
            scatter(
                &mut out,
                d.q_start(i / d.heads, i % d.heads),
                d.q_stride(),
                o,
                d.dim,
            );
        }
        Ok((CpuStorage::F32(out), queries_layout.shape().clone()))
    }

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        o: &Tensor,
        dout: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let name = self.name();
        let d = self.dims;
        let (dq, dk, dv) = with_values([q, k, v, o, dout], name, |[qv, kv, vv, ov, gv]| {
            let per_head = self.per_head(|b, h| {
                let (qs, ks) = (d.q_start(b, h), d.kv_start(b, h));
                self.head_backward([&qv[qs..], &kv[ks..], &vv[ks..], &ov[qs..], &gv[qs..]])
            });
            let (mut dq, mut dk, mut dv) = (
                vec![0f32; qv.len()],
                vec![0f32; kv.len()],
                vec![0f32; vv.len()],
            );
            for (i, (hq, hk, hv)) in per_head.iter().enumerate() {
                let (b, h) = (i / d.heads, i % d.heads);
                scatter(&mut dq, d.q_start(b, h), d.q_stride(), hq, d.dim);
                scatter(&mut dk, d.kv_start(b, h), d.kv_stride(), hk, d.dim);
                scatter(&mut dv, d.kv_start(b, h), d.kv_stride(), hv, d.dim);
            }
            Ok((dq, dk, dv))
        })?;
        let dev = q.device();
        Ok((
            Some(Tensor::from_vec(dq, q.shape(), dev)?),
            Some(Tensor::from_vec(dk, k.shape(), dev)?),
            Some(Tensor::from_vec(dv, v.shape(), dev)?),
        ))
    }
}

/// `softmax(q k^T / sqrt(d) + causal mask) v` for `q` `[b, s, heads, d]` and `k`, `v`
/// `[b, s, kv_heads, d]` (f32, CPU); the output is laid out as `q`.
pub fn causal_attention(q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Tensor> {
    let (batch, seq, heads, dim) = q.dims4()?;
    let (kb, ks, kv_heads, kd) = k.dims4()?;
    if (kb, ks, kd) != (batch, seq, dim)
        || v.dims() != k.dims()
        || kv_heads == 0
        || heads % kv_heads != 0
    {
        candle_core::bail!(
            "attention: q {:?}, k {:?}, v {:?}",
            q.dims(),
            k.dims(),
            v.dims()
        );
    }
    let op = CausalAttention {
        dims: Dims {
            batch,
            seq,
            heads,
            kv_heads,
            dim,
        },
        scale: 1.0 / (dim as f32).sqrt(),
    };
    q.contiguous()?
        .apply_op3(&k.contiguous()?, &v.contiguous()?, op)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::fused::testing::assert_close;
    use candle_core::{D, Device, Var};

    /// The formula, as the fallback path computes it: heads first, K/V repeated, full scores.
    fn plain(q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Tensor> {
        let (_, s, nh, d) = q.dims4()?;
        let rep = nh / k.dim(2)?;
        let heads = |t: &Tensor| -> Result<Tensor> {
            let t = t.transpose(1, 2)?.contiguous()?;
            let (b, n, s, d) = t.dims4()?;
            t.unsqueeze(2)?
                .broadcast_as((b, n, rep, s, d))?
                .reshape((b, n * rep, s, d))
        };
        let q = q.transpose(1, 2)?.contiguous()?;
        let (k, v) = (heads(k)?, heads(v)?);
        let mask: Vec<f32> = (0..s)
            .flat_map(|i| (0..s).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 }))
            .collect();
        let mask = Tensor::from_vec(mask, (s, s), q.device())?;
        let scores = (q.matmul(&k.t()?)? / (d as f64).sqrt())?.broadcast_add(&mask)?;
        let probs = candle_nn::ops::softmax(&scores, D::Minus1)?;
        probs.matmul(&v)?.transpose(1, 2)
    }

    #[test]
    fn matches_the_formula_and_its_autograd_across_blocks_and_groups() -> Result<()> {
        let dev = Device::Cpu;
        // 150 positions: two full blocks and a partial one; 6 query heads over 2 K/V heads.
        let (b, s, nh, nkv, d) = (2, 150, 6, 2, 16);
        let q = Var::randn(0f32, 1., (b, s, nh, d), &dev)?;
        let k = Var::randn(0f32, 1., (b, s, nkv, d), &dev)?;
        let v = Var::randn(0f32, 1., (b, s, nkv, d), &dev)?;
        let probe = Tensor::randn(0f32, 1., (b, s, nh, d), &dev)?;
        let ours = causal_attention(q.as_tensor(), k.as_tensor(), v.as_tensor())?;
        let want = plain(q.as_tensor(), k.as_tensor(), v.as_tensor())?;
        assert_close("forward", &ours, &want, 1e-5)?;
        let g_ours = (ours * &probe)?.sum_all()?.backward()?;
        let g_plain = (want * &probe)?.sum_all()?.backward()?;
        for (name, t) in [("dq", &q), ("dk", &k), ("dv", &v)] {
            assert_close(name, g_ours.get(t).unwrap(), g_plain.get(t).unwrap(), 1e-4)?;
        }
        Ok(())
    }
}
