//! Llama's MLP gate: `silu(gate) * up`.

use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::exp::sigmoid;
use super::{CHUNK, threads, values, with_values};

struct SwiGlu;

impl CustomOp2 for SwiGlu {
    fn name(&self) -> &'static str {
        "fused-swiglu"
    }

    fn cpu_fwd(
        &self,
        gate_in: &CpuStorage,
        gate_layout: &Layout,
        up_in: &CpuStorage,
        up_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let gate = values(gate_in, gate_layout, self.name())?;
        let up = values(up_in, up_layout, self.name())?;
        if gate_layout.shape() != up_layout.shape() {
            candle_core::bail!(
                "swiglu: gate {:?} vs up {:?}",
                gate_layout.dims(),
                up_layout.dims()
            );
        }
        let mut y = vec![0f32; gate.len()];
        threads::for_each(
            y.par_chunks_mut(CHUNK)
                .zip(gate.par_chunks(CHUNK).zip(up.par_chunks(CHUNK))),
            1,
            |(y, (g, u))| {
                for ((y, g), u) in y.iter_mut().zip(g).zip(u) {
                    *y = g * sigmoid(*g) * u;
                }
            },
        );
        Ok((CpuStorage::F32(y), gate_layout.shape().clone()))
    }

    /// `d gate = dy * up * s (1 + gate (1 - s))` with `s = sigmoid(gate)`; `d up = dy * silu(gate)`.
    fn bwd(
        &self,
        gate: &Tensor,
        up: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let n = gate.elem_count();
        let (mut dgate, mut dup) = (vec![0f32; n], vec![0f32; n]);
        with_values([gate, up, dy], self.name(), |[g, u, d]| {
            threads::for_each(
                dgate
                    .par_chunks_mut(CHUNK)
                    .zip(dup.par_chunks_mut(CHUNK))
                    .zip(g.par_chunks(CHUNK).zip(u.par_chunks(CHUNK)))
                    .zip(d.par_chunks(CHUNK)),
                1,
                |(((dg, du), (g, u)), d)| {
                    for i in 0..g.len() {
                        let s = sigmoid(g[i]);
                        dg[i] = d[i] * u[i] * s * (1.0 + g[i] * (1.0 - s));
                        du[i] = d[i] * g[i] * s;
                    }
                },
            );
            Ok(())
        })?;
        let dev = gate.device();
        Ok((
            Some(Tensor::from_vec(dgate, gate.shape(), dev)?),
            Some(Tensor::from_vec(dup, up.shape(), dev)?),
        ))
    }
}

/// `silu(gate) * up`, fused (f32, CPU).
pub fn swiglu(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    gate.contiguous()?.apply_op2(&up.contiguous()?, SwiGlu)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::fused::testing::assert_close;
    use candle_core::{Device, Var};

    #[test]
    fn matches_the_formula_and_its_autograd() -> Result<()> {
        let dev = Device::Cpu;
        let gate = Var::randn(0f32, 2., (3, 40_000), &dev)?;
        let up = Var::randn(0f32, 1., (3, 40_000), &dev)?;
        let probe = Tensor::randn(0f32, 1., (3, 40_000), &dev)?;
        let ours = swiglu(gate.as_tensor(), up.as_tensor())?;
        let plain = (candle_nn::ops::silu(gate.as_tensor())? * up.as_tensor())?;
        assert_close("forward", &ours, &plain, 1e-5)?;
        let g_ours = (ours * &probe)?.sum_all()?.backward()?;
        let g_plain = (plain * &probe)?.sum_all()?.backward()?;
        for (name, v) in [("d gate", &gate), ("d up", &up)] {
            assert_close(name, g_ours.get(v).unwrap(), g_plain.get(v).unwrap(), 1e-5)?;
        }
        Ok(())
    }
}
