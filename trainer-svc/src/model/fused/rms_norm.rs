//! `w * x / sqrt(mean(x^2) + eps)` over the last dimension, `w` frozen.

use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::{rows_per_task, threads, values, with_values};

struct RmsNorm {
    weight: Vec<f32>,
    eps: f32,
}

fn inv_rms(x: &[f32], eps: f32) -> f32 {
    let ms = x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32;
    1.0 / (ms + eps).sqrt()
}

impl CustomOp1 for RmsNorm {
    fn name(&self) -> &'static str {
        "fused-rms-norm"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = values(s, l, self.name())?;
        let h = self.weight.len();
        let mut y = vec![0f32; x.len()];
        threads::for_each(
            y.par_chunks_mut(h).zip(x.par_chunks(h)),
            rows_per_task(h),
            |(y, x)| {
                let r = inv_rms(x, self.eps);
                for ((y, x), w) in y.iter_mut().zip(x).zip(&self.weight) {
                    *y = x * r * w;
                }
            },
        );
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }

    /// With `r = 1/rms(x)` and `gw = g * w`: `dx = r gw - x r^3 (gw . x) / h`.
    fn bwd(&self, x: &Tensor, _y: &Tensor, g: &Tensor) -> Result<Option<Tensor>> {
        let h = self.weight.len();
        let dx = with_values([x, g], self.name(), |[x, g]| {
            let mut dx = vec![0f32; x.len()];
            threads::for_each(
                dx.par_chunks_mut(h)
                    .zip(x.par_chunks(h).zip(g.par_chunks(h))),
                rows_per_task(h),
                |(dx, (x, g))| {
                    let r = inv_rms(x, self.eps);
                    let dot: f32 = g
                        .iter()
                        .zip(&self.weight)
                        .zip(x)
                        .map(|((g, w), x)| g * w * x)
                        .sum();
                    let c = r * r * r * dot / h as f32;
                    for (((dx, g), w), x) in dx.iter_mut().zip(g).zip(&self.weight).zip(x) {
                        *dx = r * g * w - x * c;
                    }
                },
            );
            Ok(dx)
        })?;
        Ok(Some(Tensor::from_vec(dx, x.shape(), x.device())?))
    }
}

/// The fused rms-norm of `x` (f32, CPU) with the frozen weight `w` (`[h]`).
pub fn rms_norm(x: &Tensor, w: &Tensor, eps: f64) -> Result<Tensor> {
    let weight = w.to_vec1::<f32>()?;
    if x.dim(candle_core::D::Minus1)? != weight.len() {
        candle_core::bail!(
            "rms-norm: input width {:?} vs weight {}",
            x.dims(),
            weight.len()
        );
    }
    x.contiguous()?.apply_op1(RmsNorm {
        weight,
        eps: eps as f32,
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
        let x = Var::randn(0f32, 1., (2, 5, 48), &dev)?;
        let w = Tensor::randn(1f32, 0.2, 48, &dev)?;
        let probe = Tensor::randn(0f32, 1., (2, 5, 48), &dev)?;
        let ours = rms_norm(x.as_tensor(), &w, 1e-5)?;
        let var = x.as_tensor().sqr()?.mean_keepdim(D::Minus1)?;
        let plain = x
            .as_tensor()
            .broadcast_mul(&(var + 1e-5)?.sqrt()?.recip()?)?
            .broadcast_mul(&w)?;
        assert_close("forward", &ours, &plain, 1e-5)?;
        let g_ours = (ours * &probe)?.sum_all()?.backward()?;
        let g_plain = (plain * &probe)?.sum_all()?.backward()?;
        assert_close(
            "dx",
            g_ours.get(&x).unwrap(),
            g_plain.get(&x).unwrap(),
            1e-4,
        )
    }
}
