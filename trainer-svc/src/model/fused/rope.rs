//! Rotary position embedding, `x cos + rotate_half(x) sin`, on heads laid out as the
//! projections give them (`[b, s, heads, d]`), so no transpose is needed around it.

use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::{rows_per_task, threads, values, with_values};

struct Rope {
    /// `[s, d]` each, the halves repeated (as `rotate_half` expects).
    cos: Vec<f32>,
    sin: Vec<f32>,
    seq: usize,
    heads: usize,
    dim: usize,
}

impl Rope {
    /// Applies the rotation (`sign` 1) or its transpose (`sign` -1, the backward pass) to every
    /// `[d]` row of `x`, the row's position being its index in the sequence dimension.
    fn apply(&self, x: &[f32], sign: f32) -> Vec<f32> {
        let (d, half) = (self.dim, self.dim / 2);
        let mut y = vec![0f32; x.len()];
        threads::for_each(
            y.par_chunks_mut(d).zip(x.par_chunks(d)).enumerate(),
            rows_per_task(d),
            |(row, (y, x))| {
                let pos = (row / self.heads) % self.seq;
                let (cos, sin) = (&self.cos[pos * d..][..d], &self.sin[pos * d..][..d]);
                for i in 0..half {
                    let j = i + half;
                    if sign > 0.0 {
                        // rotate_half(x) = [-x2, x1]
                        y[i] = x[i] * cos[i] - x[j] * sin[i];
                        y[j] = x[j] * cos[j] + x[i] * sin[j];
                    } else {
                        // its transpose maps z to [z2, -z1]
                        y[i] = x[i] * cos[i] + x[j] * sin[j];
                        y[j] = x[j] * cos[j] - x[i] * sin[i];
                    }
                }
            },
        );
        y
    }
}

impl CustomOp1 for Rope {
    fn name(&self) -> &'static str {
        "fused-rope"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = values(s, l, self.name())?;
        Ok((CpuStorage::F32(self.apply(x, 1.0)), l.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, g: &Tensor) -> Result<Option<Tensor>> {
        let dx = with_values([g], self.name(), |[g]| Ok(self.apply(g, -1.0)))?;
        Ok(Some(Tensor::from_vec(dx, x.shape(), x.device())?))
    }
}

/// Rotates `x` (`[b, s, heads, d]`, f32, CPU) by the tables `cos`/`sin` (`[s, d]`).
pub fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let (_, seq, heads, dim) = x.dims4()?;
    if cos.dims() != [seq, dim] || sin.dims() != [seq, dim] || dim % 2 != 0 {
        candle_core::bail!("rope: input {:?}, tables {:?}", x.dims(), cos.dims());
    }
    x.contiguous()?.apply_op1(Rope {
        cos: cos.flatten_all()?.to_vec1()?,
        sin: sin.flatten_all()?.to_vec1()?,
        seq,
        heads,
        dim,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::fused::testing::assert_close;
    use candle_core::{D, Device, Var};

    #[test]
    fn matches_the_formula_and_its_autograd() -> Result<()> {
        let dev = Device::Cpu;
        let (b, s, h, d) = (2, 7, 3, 8);
        let x = Var::randn(0f32, 1., (b, s, h, d), &dev)?;
        let angles = Tensor::randn(0f32, 3., (s, d / 2), &dev)?;
        let angles = Tensor::cat(&[&angles, &angles], 1)?;
        let (cos, sin) = (angles.cos()?, angles.sin()?);
        let probe = Tensor::randn(0f32, 1., (b, s, h, d), &dev)?;
        let ours = rope(x.as_tensor(), &cos, &sin)?;
        // The formula, on [b, h, s, d] as the fallback path runs it.
        let xt = x.as_tensor().transpose(1, 2)?;
        let x1 = xt.narrow(D::Minus1, 0, d / 2)?;
        let x2 = xt.narrow(D::Minus1, d / 2, d / 2)?;
        let rotated = Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?;
        let plain = (xt.broadcast_mul(&cos)? + rotated.broadcast_mul(&sin)?)?.transpose(1, 2)?;
        assert_close("forward", &ours, &plain, 1e-5)?;
        let g_ours = (ours * &probe)?.sum_all()?.backward()?;
        let g_plain = (plain * &probe)?.sum_all()?.backward()?;
        assert_close(
            "dx",
            g_ours.get(&x).unwrap(),
            g_plain.get(&x).unwrap(),
            1e-5,
        )
    }
}
