//! Operations on frozen tensors whose backward pass returns only the gradient of the input.
//!
//! candle's backward computes a gradient for *both* operands of a matmul or a binary op, and
//! keeps it until the `GradStore` drops, even when one operand is a constant: for an 8B base
//! that is a weight-sized buffer per layer (~16 GB in all), and for norm weights, rope tables
//! and masks an activation-sized one each. Capturing the constant inside a `CustomOp1` hides
//! it from the graph, so autograd sees a unary op of the input and nothing else.

use candle_core::backend::BackendStorage;
use candle_core::op::{Add, Mul};
use candle_core::{
    CpuStorage, CudaStorage, CustomOp1, DType, Layout, Result, Shape, Storage, Tensor,
};

use super::fused::{self, weight};

/// `x @ W^T` for a frozen `W` of shape `[out, in]`; `x` is `[n, in]`.
struct FrozenMatmul {
    w: Tensor,
}

impl FrozenMatmul {
    fn fwd<S: BackendStorage>(
        &self,
        x: &S,
        x_l: &Layout,
        w: &S,
        w_l: &Layout,
    ) -> Result<(S, Shape)> {
        let (n, k) = x_l.shape().dims2()?;
        let (out, k_w) = w_l.shape().dims2()?;
        if k != k_w {
            candle_core::bail!("frozen matmul: input has {k} features, weight expects {k_w}");
        }
        let wt = w_l.transpose(0, 1)?;
        Ok((
            x.matmul(w, (1, n, out, k), x_l, &wt)?,
            Shape::from((n, out)),
        ))
    }
}

impl CustomOp1 for FrozenMatmul {
    fn name(&self) -> &'static str {
        "frozen-matmul"
    }

    fn cpu_fwd(&self, x: &CpuStorage, x_l: &Layout) -> Result<(CpuStorage, Shape)> {
        if matches!(x, CpuStorage::F32(_)) && weight::applies_to(&self.w) {
            // faer's AVX-512 kernels (fused::gemm), not candle's AVX2 ones; a bf16 base in
            // bf16 (fused::bf16).
            let (n, k) = x_l.shape().dims2()?;
            let x = fused::values(x, x_l, self.name())?;
            let out = self.w.dim(0)?;
            let y = weight::with_weight(&self.w, self.name(), |w| {
                Ok(w.times_transposed(x, n, k, out))
            })?;
            return Ok((CpuStorage::F32(y), Shape::from((n, out))));
        }
        let (w, w_l) = self.w.storage_and_layout();
        match &*w {
            Storage::Cpu(w) => self.fwd(x, x_l, w, w_l),
            _ => candle_core::bail!("frozen matmul: input on cpu, weight elsewhere"),
        }
    }

    fn cuda_fwd(&self, x: &CudaStorage, x_l: &Layout) -> Result<(CudaStorage, Shape)> {
        let (w, w_l) = self.w.storage_and_layout();
        match &*w {
            Storage::Cuda(w) => self.fwd(x, x_l, w, w_l),
            _ => candle_core::bail!("frozen matmul: input on cuda, weight elsewhere"),
        }
    }

    fn bwd(&self, _x: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        // d(x W^T)/dx = g W. No gradient for W: it is frozen.
        if fused::applies_to(grad) && weight::applies_to(&self.w) {
            let (n, out) = grad.dims2()?;
            let k = self.w.dim(1)?;
            let dx = fused::with_values([grad], self.name(), |[g]| {
                weight::with_weight(&self.w, self.name(), |w| Ok(w.times(g, n, out, k)))
            })?;
            return Ok(Some(Tensor::from_vec(dx, (n, k), grad.device())?));
        }
        Ok(Some(grad.matmul(&self.w)?))
    }
}

/// `x @ W^T` over the last dimension of `x` (any rank), with `W` frozen.
/// `x` is converted to `W`'s dtype (a bf16 base) and the result back to `x`'s.
pub fn frozen_matmul(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    let dims = x.dims().to_vec();
    let Some((&k, lead)) = dims.split_last() else {
        candle_core::bail!("frozen matmul of a scalar")
    };
    let n: usize = lead.iter().product();
    let in_dtype = x.dtype();
    // A bf16 base is kept in bf16 (half the memory). The fused kernels multiply it in bf16 as
    // CUDA does (f32 input, rounded inside the product); candle's CPU matmul has no bf16
    // kernel, so without them it is widened one layer at a time.
    let fused = fused::applies_to(x) && weight::applies_to(w);
    let w = if !fused && w.device().is_cpu() && w.dtype() != DType::F32 {
        &w.to_dtype(DType::F32)?
    } else {
        w
    };
    let x_dtype = if fused { DType::F32 } else { w.dtype() };
    let x2 = x.to_dtype(x_dtype)?.reshape((n, k))?.contiguous()?;
    let y = x2
        .apply_op1(FrozenMatmul { w: w.clone() })?
        .to_dtype(in_dtype)?;
    let mut out_dims = lead.to_vec();
    out_dims.push(w.dim(0)?);
    y.reshape(out_dims)
}

#[derive(Clone, Copy)]
enum ConstKind {
    Mul,
    Add,
}

/// `x * c` or `x + c` for a constant `c` that broadcasts to `x`'s shape.
struct ConstBinary {
    c: Tensor,
    kind: ConstKind,
}

impl ConstBinary {
    fn fwd<S: BackendStorage>(
        &self,
        x: &S,
        x_l: &Layout,
        c: &S,
        c_l: &Layout,
    ) -> Result<(S, Shape)> {
        let c_l = c_l.broadcast_as(x_l.shape().clone())?;
        let out = match self.kind {
            ConstKind::Mul => x.binary_impl::<Mul>(c, x_l, &c_l)?,
            ConstKind::Add => x.binary_impl::<Add>(c, x_l, &c_l)?,
        };
        Ok((out, x_l.shape().clone()))
    }
}

impl CustomOp1 for ConstBinary {
    fn name(&self) -> &'static str {
        match self.kind {
            ConstKind::Mul => "const-mul",
            ConstKind::Add => "const-add",
        }
    }

    fn cpu_fwd(&self, x: &CpuStorage, x_l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (c, c_l) = self.c.storage_and_layout();
        match &*c {
            Storage::Cpu(c) => self.fwd(x, x_l, c, c_l),
            _ => candle_core::bail!("{}: input on cpu, constant elsewhere", self.name()),
        }
    }

    fn cuda_fwd(&self, x: &CudaStorage, x_l: &Layout) -> Result<(CudaStorage, Shape)> {
        let (c, c_l) = self.c.storage_and_layout();
        match &*c {
            Storage::Cuda(c) => self.fwd(x, x_l, c, c_l),
            _ => candle_core::bail!("{}: input on cuda, constant elsewhere", self.name()),
        }
    }

    fn bwd(&self, _x: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        match self.kind {
            ConstKind::Mul => Ok(Some(grad.broadcast_mul(&self.c)?)),
            ConstKind::Add => Ok(Some(grad.clone())),
        }
    }
}

fn check_broadcast(x: &Tensor, c: &Tensor) -> Result<()> {
    if x.dtype() != c.dtype() {
        candle_core::bail!("constant op: dtype {:?} vs {:?}", x.dtype(), c.dtype());
    }
    c.broadcast_as(x.shape())?;
    Ok(())
}

/// `x * c` with `c` frozen (norm weights, rope tables).
pub fn mul_const(x: &Tensor, c: &Tensor) -> Result<Tensor> {
    check_broadcast(x, c)?;
    x.apply_op1(ConstBinary {
        c: c.clone(),
        kind: ConstKind::Mul,
    })
}

/// `x + c` with `c` frozen (the causal mask).
pub fn add_const(x: &Tensor, c: &Tensor) -> Result<Tensor> {
    check_broadcast(x, c)?;
    x.apply_op1(ConstBinary {
        c: c.clone(),
        kind: ConstKind::Add,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    #[test]
    fn frozen_ops_match_plain_ops_and_keep_no_weight_gradient() -> Result<()> {
        let dev = Device::Cpu;
        let x = Var::randn(0f32, 1., (3, 5), &dev)?;
        let w = Tensor::randn(0f32, 1., (4, 5), &dev)?;
        let c = Tensor::randn(0f32, 1., (3, 4), &dev)?;
        let ours = add_const(&mul_const(&frozen_matmul(x.as_tensor(), &w)?, &c)?, &c)?;
        let wt = w.t()?;
        let plain = x.as_tensor().matmul(&wt)?.mul(&c)?.add(&c)?;
        assert!(max_diff(&ours, &plain) < 1e-5);
        let g_ours = ours.sqr()?.sum_all()?.backward()?;
        let g_plain = plain.sqr()?.sum_all()?.backward()?;
        assert!(max_diff(g_ours.get(&x).unwrap(), g_plain.get(&x).unwrap()) < 1e-4);
        // The plain graph stored a gradient for the weight; ours did not.
        assert!(g_plain.get(&wt).is_some());
        assert!(g_ours.get(&w).is_none());
        assert!(g_ours.get(&c).is_none());
        Ok(())
    }
}
