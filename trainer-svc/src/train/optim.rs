//! AdamW over the LoRA parameters (PyTorch's formula), the warm-up + cosine schedule of
//! transformers' `get_cosine_schedule_with_warmup`, and clipping by global norm. Written here
//! rather than taken from candle-nn because the optimizer state must be saved and restored.

use std::collections::HashMap;

use candle_core::{Result, Tensor, Var};

#[derive(Debug, Clone, Copy)]
pub struct AdamWParams {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamWParams {
    fn default() -> Self {
        Self {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        }
    }
}

pub struct AdamW {
    params: AdamWParams,
    /// `(name, var, first moment, second moment)`.
    slots: Vec<(String, Var, Tensor, Tensor)>,
    /// Steps taken (for bias correction).
    pub t: u64,
}

impl AdamW {
    pub fn new(vars: Vec<(String, Var)>, params: AdamWParams) -> Result<Self> {
        let slots = vars
            .into_iter()
            .map(|(n, v)| {
                let z = v.as_tensor().zeros_like()?;
                Ok((n, v, z.clone(), z))
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            params,
            slots,
            t: 0,
        })
    }

    /// One update with `grads[i]` the gradient of the i-th var (same order as given to `new`).
    pub fn step(&mut self, grads: &[Tensor], lr: f64) -> Result<()> {
        self.t += 1;
        let p = self.params;
        let bc1 = 1.0 - p.beta1.powi(self.t as i32);
        let bc2 = 1.0 - p.beta2.powi(self.t as i32);
        for ((_, var, m, v), g) in self.slots.iter_mut().zip(grads) {
            *m = ((&*m * p.beta1)? + (g * (1.0 - p.beta1))?)?;
            *v = ((&*v * p.beta2)? + (g.sqr()? * (1.0 - p.beta2))?)?;
            let update = ((&*m / bc1)? / ((&*v / bc2)?.sqrt()? + p.eps)?)?;
            let decayed = (var.as_tensor() * (1.0 - lr * p.weight_decay))?;
            var.set(&(decayed - (update * lr)?)?)?;
        }
        Ok(())
    }

    /// The moments, named `m.<var>` and `v.<var>`, for a checkpoint.
    pub fn state(&self) -> HashMap<String, Tensor> {
        let mut out = HashMap::new();
        for (name, _, m, v) in &self.slots {
            out.insert(format!("m.{name}"), m.clone());
            out.insert(format!("v.{name}"), v.clone());
        }
        out
    }

    pub fn restore(&mut self, state: &HashMap<String, Tensor>, t: u64) -> Result<()> {
        for (name, _, m, v) in self.slots.iter_mut() {
            let get = |k: String| {
                state
                    .get(&k)
                    .cloned()
                    .ok_or_else(|| candle_core::Error::Msg(format!("optimizer state lacks {k}")))
            };
            *m = get(format!("m.{name}"))?;
            *v = get(format!("v.{name}"))?;
        }
        self.t = t;
        Ok(())
    }
}

/// Learning rate for optimizer step `step` (0-based): linear warm-up from 0, then cosine to 0.
pub fn lr_at(step: u64, base_lr: f64, warmup: u64, total: u64) -> f64 {
    if step < warmup {
        return base_lr * step as f64 / warmup.max(1) as f64;
    }
    let progress = (step - warmup) as f64 / (total.saturating_sub(warmup)).max(1) as f64;
    base_lr * (0.5 * (1.0 + (std::f64::consts::PI * progress).cos())).max(0.0)
}

/// Scales `grads` in place so their global L2 norm is at most `max_norm` (PyTorch's
/// `clip_grad_norm_`); returns the norm before clipping.
pub fn clip_global_norm(grads: &mut [Tensor], max_norm: f64) -> Result<f64> {
    let mut sq = 0f64;
    for g in grads.iter() {
        sq += g.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
    }
    let norm = sq.sqrt();
    let coef = max_norm / (norm + 1e-6);
    if max_norm > 0.0 && coef < 1.0 {
        for g in grads.iter_mut() {
            *g = (&*g * coef)?;
        }
    }
    Ok(norm)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn schedule_warms_up_then_decays_to_zero() {
        assert_eq!(lr_at(0, 1.0, 4, 20), 0.0);
        assert!((lr_at(2, 1.0, 4, 20) - 0.5).abs() < 1e-12);
        assert!((lr_at(4, 1.0, 4, 20) - 1.0).abs() < 1e-12);
        assert!((lr_at(12, 1.0, 4, 20) - 0.5).abs() < 1e-12);
        assert!(lr_at(20, 1.0, 4, 20).abs() < 1e-12);
    }

    #[test]
    fn clipping_bounds_the_global_norm() -> Result<()> {
        let mut g = vec![
            Tensor::new(&[3f32], &Device::Cpu)?,
            Tensor::new(&[4f32], &Device::Cpu)?,
        ];
        let norm = clip_global_norm(&mut g, 1.0)?;
        assert!((norm - 5.0).abs() < 1e-6);
        let after = clip_global_norm(&mut g.clone(), 100.0)?;
        assert!((after - 1.0).abs() < 1e-5);
        Ok(())
    }

    #[test]
    fn adamw_first_step_moves_by_lr_against_the_gradient() -> Result<()> {
        let var = Var::new(&[1f32, -1.], &Device::Cpu)?;
        let mut opt = AdamW::new(vec![("w".into(), var.clone())], AdamWParams::default())?;
        opt.step(&[Tensor::new(&[0.5f32, -2.], &Device::Cpu)?], 0.1)?;
        let w = var.as_tensor().to_vec1::<f32>()?;
        assert!(
            (w[0] - 0.9).abs() < 1e-5 && (w[1] + 0.9).abs() < 1e-5,
            "{w:?}"
        );
        Ok(())
    }
}
