//! A frozen projection with its LoRA adapter in one op: `y = x W^T + s (x' A^T) B^T`, where
//! `x'` is `x` under the adapter's dropout mask (or `x`). Through candle ops the adapter's two
//! thin products, the scaling, the add and their backward passes were ~10 tensors per
//! projection per step, and candle's AVX2 gemm on `n x 8` shapes; here they are five products
//! on faer and no intermediate tensor outlives the op.

use std::borrow::Cow;

use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};

use super::gemm::{Threads, matmul, rows, rows_mut};
use super::weight::with_weight;
use super::{values, with_values};

/// The adapter's products have the rank (8-64) as one dimension: a few MFLOP each, less than
/// what waking the other threads costs (faer's barrier and the kernel's wake-ups were ~14% of a
/// SmolLM2 step when they ran on every thread).
const THIN: Threads = Threads::One;

struct LoraLinear {
    /// `[out, in]`, f32 or bf16 (multiplied in bf16).
    weight: Tensor,
    scaling: f32,
    /// The dropout mask of the adapter's input (`[n, in]`, 0 or 1/(1-p)), when training with one.
    mask: Option<Vec<f32>>,
}

impl LoraLinear {
    /// `x'`: the adapter's input (`x` itself, not a copy, without dropout).
    fn dropped<'a>(&self, x: &'a [f32]) -> Cow<'a, [f32]> {
        match &self.mask {
            Some(m) => Cow::Owned(x.iter().zip(m).map(|(x, m)| x * m).collect()),
            None => Cow::Borrowed(x),
        }
    }
}

impl CustomOp3 for LoraLinear {
    fn name(&self) -> &'static str {
        "fused-lora-linear"
    }

    fn cpu_fwd(
        &self,
        input: &CpuStorage,
        input_layout: &Layout,
        lora_a: &CpuStorage,
        a_layout: &Layout,
        lora_b: &CpuStorage,
        b_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let name = self.name();
        let x = values(input, input_layout, name)?;
        let a = values(lora_a, a_layout, name)?;
        let b = values(lora_b, b_layout, name)?;
        let (n, k) = input_layout.shape().dims2()?;
        let (r, out) = (a_layout.shape().dims2()?.0, b_layout.shape().dims2()?.0);
        let mut y = with_weight(&self.weight, name, |w| Ok(w.times_transposed(x, n, k, out)))?;
        let xd = self.dropped(x);
        let mut t = vec![0f32; n * r];
        matmul(
            rows_mut(&mut t, n, r, r),
            rows(&xd, n, k, k),
            rows(a, r, k, k).transpose(),
            1.0,
            false,
            THIN,
        );
        matmul(
            rows_mut(&mut y, n, out, out),
            rows(&t, n, r, r),
            rows(b, out, r, r).transpose(),
            self.scaling,
            true,
            THIN,
        );
        Ok((CpuStorage::F32(y), Shape::from((n, out))))
    }

    /// With `gB = g B` and `t = x' A^T`: `dx = g W + s (gB A) * mask`, `dA = s gB^T x'`,
    /// `dB = s g^T t`.
    fn bwd(
        &self,
        x: &Tensor,
        a: &Tensor,
        b: &Tensor,
        _y: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let name = self.name();
        let (n, k) = x.dims2()?;
        let (r, out) = (a.dim(0)?, b.dim(0)?);
        let s = self.scaling;
        let tensors = [x, a, b, g];
        let (dx, da, db) = with_values(tensors, name, |[xv, av, bv, gv]| {
            let g_m = rows(gv, n, out, out);
            let mut gb = vec![0f32; n * r];
            matmul(
                rows_mut(&mut gb, n, r, r),
                g_m,
                rows(bv, out, r, r),
                1.0,
                false,
                THIN,
            );
            // dx: the frozen path, then the adapter's (through the mask).
            let mut dx = with_weight(&self.weight, name, |w| Ok(w.times(gv, n, out, k)))?;
            let adapter_dx = |dst: &mut [f32], accumulate| {
                let (gb, a) = (rows(&gb, n, r, r), rows(av, r, k, k));
                matmul(rows_mut(dst, n, k, k), gb, a, s, accumulate, THIN);
            };
            match &self.mask {
                None => adapter_dx(&mut dx, true),
                Some(m) => {
                    let mut dxd = vec![0f32; n * k];
                    adapter_dx(&mut dxd, false);
                    dx.iter_mut()
                        .zip(dxd)
                        .zip(m)
                        .for_each(|((d, a), m)| *d += a * m);
                }
            }
            let xd = self.dropped(xv);
            let xd_m = rows(&xd, n, k, k);
            let mut da = vec![0f32; r * k];
            matmul(
                rows_mut(&mut da, r, k, k),
                rows(&gb, n, r, r).transpose(),
                xd_m,
                s,
                false,
                THIN,
            );
            let mut t = vec![0f32; n * r];
            matmul(
                rows_mut(&mut t, n, r, r),
                xd_m,
                rows(av, r, k, k).transpose(),
                1.0,
                false,
                THIN,
            );
            let mut db = vec![0f32; out * r];
            matmul(
                rows_mut(&mut db, out, r, r),
                g_m.transpose(),
                rows(&t, n, r, r),
                s,
                false,
                THIN,
            );
            Ok((dx, da, db))
        })?;
        let dev = x.device();
        Ok((
            Some(Tensor::from_vec(dx, (n, k), dev)?),
            Some(Tensor::from_vec(da, (r, k), dev)?),
            Some(Tensor::from_vec(db, (out, r), dev)?),
        ))
    }
}

/// `x W^T + scaling (x' A^T) B^T` for `x` `[n, in]` (f32, CPU), a frozen `W` `[out, in]` (f32,
/// or bf16: its product then in bf16),
/// the adapter `A` `[r, in]`, `B` `[out, r]`, and `x' = x * mask` when a dropout mask is given.
pub fn lora_linear(
    x: &Tensor,
    weight: &Tensor,
    a: &Tensor,
    b: &Tensor,
    scaling: f64,
    mask: Option<&Tensor>,
) -> Result<Tensor> {
    let (n, k) = x.dims2()?;
    let (out, k_w) = weight.dims2()?;
    let (r, k_a) = a.dims2()?;
    if k_w != k || k_a != k || b.dims() != [out, r] {
        candle_core::bail!(
            "lora linear: x {:?}, W {:?}, A {:?}, B {:?}",
            x.dims(),
            weight.dims(),
            a.dims(),
            b.dims()
        );
    }
    let mask = match mask {
        Some(m) if m.dims() == [n, k] => Some(m.flatten_all()?.to_vec1()?),
        Some(m) => candle_core::bail!("lora linear: mask {:?} for x {:?}", m.dims(), x.dims()),
        None => None,
    };
    let op = LoraLinear {
        weight: weight.contiguous()?,
        scaling: scaling as f32,
        mask,
    };
    x.contiguous()?
        .apply_op3(&a.contiguous()?, &b.contiguous()?, op)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::fused::testing::assert_close;
    use candle_core::{Device, Var};

    #[test]
    fn matches_the_formula_and_its_autograd_with_and_without_dropout() -> Result<()> {
        let dev = Device::Cpu;
        let (n, k, out, r) = (37, 24, 40, 4);
        let w = Tensor::randn(0f32, 0.3, (out, k), &dev)?;
        let mask = Tensor::randn(0f32, 1., (n, k), &dev)?
            .ge(0.0)?
            .to_dtype(candle_core::DType::F32)?;
        let mask = (mask * 2.0)?;
        let probe = Tensor::randn(0f32, 1., (n, out), &dev)?;
        for m in [None, Some(&mask)] {
            let x = Var::randn(0f32, 1., (n, k), &dev)?;
            let a = Var::randn(0f32, 0.3, (r, k), &dev)?;
            let b = Var::randn(0f32, 0.3, (out, r), &dev)?;
            let ours = lora_linear(x.as_tensor(), &w, a.as_tensor(), b.as_tensor(), 2.5, m)?;
            let xd = match m {
                Some(m) => (x.as_tensor() * m)?,
                None => x.as_tensor().clone(),
            };
            let plain = (x.as_tensor().matmul(&w.t()?)?
                + (xd
                    .matmul(&a.as_tensor().t()?)?
                    .matmul(&b.as_tensor().t()?)?
                    * 2.5)?)?;
            assert_close("forward", &ours, &plain, 1e-5)?;
            let g_ours = (ours * &probe)?.sum_all()?.backward()?;
            let g_plain = (plain * &probe)?.sum_all()?.backward()?;
            for (name, v) in [("dx", &x), ("dA", &a), ("dB", &b)] {
                assert_close(name, g_ours.get(v).unwrap(), g_plain.get(v).unwrap(), 1e-5)?;
            }
        }
        Ok(())
    }
}
