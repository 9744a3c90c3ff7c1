//! LoRA: the trainable low-rank pair beside a frozen linear layer, PEFT's way
//! (`y = x W^T + scaling * dropout(x) A^T B^T`, scaling = alpha / r, A kaiming-uniform, B zero).

pub mod peft;

use candle_core::{DType, Device, Result, Tensor, Var};
use serde::{Deserialize, Serialize};

use crate::model::frozen::{frozen_matmul, mul_const};
use crate::model::fused;
use crate::rng::Rng;

/// The projections of a Llama block, by their checkpoint names (one list, shared with the
/// gateway's up-front checks).
pub use arf_common::bounds::LLAMA_PROJECTIONS as ALL_MODULES;

/// Which layers get adapters, and how big they are.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoraSpec {
    pub rank: usize,
    pub alpha: f64,
    pub dropout: f32,
    /// Canonical names (`q_proj`, ...), in [`ALL_MODULES`] order.
    pub target_modules: Vec<String>,
}

/// LoRA's rank when a job names none.
pub const DEFAULT_RANK: usize = 16;

impl Default for LoraSpec {
    fn default() -> Self {
        Self {
            rank: DEFAULT_RANK,
            alpha: Self::default_alpha(DEFAULT_RANK),
            dropout: 0.0,
            target_modules: ALL_MODULES.iter().map(|s| s.to_string()).collect(),
        }
    }
}

impl LoraSpec {
    /// Alpha when a job names none: twice the rank (scaling 2, as the LoRA paper's setups).
    pub fn default_alpha(rank: usize) -> f64 {
        2.0 * rank as f64
    }

    pub fn scaling(&self) -> f64 {
        self.alpha / self.rank as f64
    }

    /// Canonical module names for what a user wrote: `q` or `q_proj`, any order, no duplicates.
    /// Errs with the first name that no Llama block has.
    pub fn normalize_modules(names: &[String]) -> std::result::Result<Vec<String>, String> {
        if names.is_empty() {
            return Ok(ALL_MODULES.iter().map(|s| s.to_string()).collect());
        }
        let mut wanted = Vec::new();
        for name in names {
            let canonical = if name.ends_with("_proj") {
                name.clone()
            } else {
                format!("{name}_proj")
            };
            if !ALL_MODULES.contains(&canonical.as_str()) {
                return Err(format!(
                    "the model has no module {name:?} (it has {})",
                    ALL_MODULES.join(", ")
                ));
            }
            wanted.push(canonical);
        }
        Ok(ALL_MODULES
            .iter()
            .filter(|m| wanted.iter().any(|w| w == *m))
            .map(|s| s.to_string())
            .collect())
    }
}

/// One adapter: A is `[r, in]`, B is `[out, r]`, both f32 whatever the base dtype.
pub struct LoraPair {
    pub a: Var,
    pub b: Var,
    pub scaling: f64,
    pub dropout: f32,
}

impl LoraPair {
    /// PEFT's init: `kaiming_uniform_(A, a=sqrt(5))`, i.e. U(-1/sqrt(in), 1/sqrt(in)); B = 0.
    pub fn init(
        in_dim: usize,
        out_dim: usize,
        spec: &LoraSpec,
        rng: &mut Rng,
        device: &Device,
    ) -> Result<Self> {
        let bound = 1.0 / (in_dim as f32).sqrt();
        let a: Vec<f32> = (0..spec.rank * in_dim)
            .map(|_| (rng.next_f32() * 2.0 - 1.0) * bound)
            .collect();
        let a = Var::from_tensor(&Tensor::from_vec(a, (spec.rank, in_dim), device)?)?;
        let b = Var::zeros((out_dim, spec.rank), DType::F32, device)?;
        Ok(Self {
            a,
            b,
            scaling: spec.scaling(),
            dropout: spec.dropout,
        })
    }

    /// `W + scaling * B A`, in W's dtype (the merged export).
    pub fn merge_into(&self, w: &Tensor) -> Result<Tensor> {
        let delta = (self.b.as_tensor().matmul(self.a.as_tensor())? * self.scaling)?;
        (w.to_dtype(DType::F32)? + delta)?.to_dtype(w.dtype())
    }
}

/// What one forward pass needs beyond its input: a dropout stream when training.
pub struct ForwardCtx {
    /// `None` in evaluation (no dropout).
    pub dropout_rng: Option<Rng>,
    /// Set: attention reads its keys and values rounded to this dtype, as an inference engine
    /// reads them from a cache that stores them so (the editor's f16 cache on a CPU). Only for
    /// a reference of such an engine: training and evaluation leave it `None`.
    pub kv_rounded_to: Option<DType>,
}

impl ForwardCtx {
    pub fn eval() -> Self {
        Self {
            dropout_rng: None,
            kv_rounded_to: None,
        }
    }

    /// Keys or values as attention reads them: rounded to `kv_rounded_to`, back in f32.
    pub fn kv_as_read(&self, t: Tensor) -> Result<Tensor> {
        match self.kv_rounded_to {
            Some(dtype) if dtype != t.dtype() => t.to_dtype(dtype)?.to_dtype(t.dtype()),
            _ => Ok(t),
        }
    }
}

/// A frozen linear layer (no bias: Llama has none), with an optional adapter.
pub struct Linear {
    pub weight: Tensor,
    pub lora: Option<LoraPair>,
}

impl Linear {
    pub fn forward(&self, x: &Tensor, ctx: &mut ForwardCtx) -> Result<Tensor> {
        let Some(l) = &self.lora else {
            return frozen_matmul(x, &self.weight);
        };
        // The adapter's dropout mask, drawn the same way on every path (resumes reproduce it).
        let mask = match (&mut ctx.dropout_rng, l.dropout) {
            (Some(rng), p) if p > 0.0 => {
                let keep = 1.0 / (1.0 - p);
                let mask: Vec<f32> = (0..x.elem_count())
                    .map(|_| if rng.next_f32() < p { 0.0 } else { keep })
                    .collect();
                Some(Tensor::from_vec(mask, x.shape(), x.device())?)
            }
            _ => None,
        };
        let dims = x.dims().to_vec();
        let (in_dim, lead) = (dims[dims.len() - 1], &dims[..dims.len() - 1]);
        let n: usize = lead.iter().product();
        let mut out = lead.to_vec();
        out.push(self.weight.dim(0)?);
        if fused::applies_to(x) {
            let w = fused::weight::as_multiplied(&self.weight)?;
            let mask = mask.map(|m| m.reshape((n, in_dim))).transpose()?;
            let y = fused::lora_linear::lora_linear(
                &x.reshape((n, in_dim))?,
                &w,
                l.a.as_tensor(),
                l.b.as_tensor(),
                l.scaling,
                mask.as_ref(),
            )?;
            return y.reshape(out);
        }
        let y = frozen_matmul(x, &self.weight)?;
        let x = match &mask {
            Some(m) => mul_const(x, m)?,
            None => x.clone(),
        };
        let x2 = x.reshape((n, in_dim))?;
        let delta = (x2
            .matmul(&l.a.as_tensor().t()?)?
            .matmul(&l.b.as_tensor().t()?)?
            * l.scaling)?;
        y + delta.reshape(out)?
    }
}
