//! The Llama forward pass (Qwen3's too: the same with q/k head norms), differentiable, frozen
//! weights behind [`super::frozen`] so they cost no gradient memory. On the CPU (f32) rms-norm,
//! rope, attention, the MLP gate and the loss are [`super::fused`] kernels with their own
//! backward passes; elsewhere they are the formulas, written with candle ops that differentiate.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{D, DType, Device, Result as CResult, Tensor, Var};

use super::config::{LlamaConfig, RopeScaling};
use super::frozen::{add_const, frozen_matmul, mul_const};
use super::fused;
use super::{BaseModel, ModelError};
use crate::lora::{ALL_MODULES, ForwardCtx, Linear, LoraPair, LoraSpec};
use crate::rng::Rng;

/// How to load a base model for training.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Dtype of the frozen projection and embedding weights (F32 or BF16). Activations, norms
    /// and LoRA stay f32.
    pub dtype: DType,
    /// Adapters to attach; `None` for the plain base model.
    pub lora: Option<LoraSpec>,
    /// Seed of the adapters' initialization.
    pub seed: u64,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            dtype: DType::F32,
            lora: None,
            seed: 0,
        }
    }
}

struct Block {
    input_norm: Tensor,
    post_norm: Tensor,
    /// In [`ALL_MODULES`] order: q, k, v, o, gate, up, down.
    proj: Vec<Linear>,
    /// Qwen3: RMS norms over each query and each key head (`[head_dim]`), before the rotation.
    q_norm: Option<Tensor>,
    k_norm: Option<Tensor>,
}

pub struct Llama {
    pub cfg: LlamaConfig,
    embed: Tensor,
    blocks: Vec<Block>,
    norm: Tensor,
    lm_head: Tensor,
    inv_freq: Vec<f32>,
    device: Device,
}

/// `self_attn` or `mlp`: where a module sits in the checkpoint's names.
pub fn module_parent(module: &str) -> &'static str {
    if matches!(module, "q_proj" | "k_proj" | "v_proj" | "o_proj") {
        "self_attn"
    } else {
        "mlp"
    }
}

impl Llama {
    /// Loads a base model: a Hugging Face directory, or a GGUF file (dequantized).
    pub fn load(path: &Path, opts: &LoadOptions, device: &Device) -> Result<Self, ModelError> {
        let (cfg, mut w) = BaseModel::resolve(path)?.load(opts.dtype, device)?;
        let mut take = |name: &str| {
            w.remove(name)
                .ok_or_else(|| ModelError::Weights(format!("{}: no tensor {name}", path.display())))
        };
        let embed = take("model.embed_tokens.weight")?;
        let norm = take("model.norm.weight")?.to_dtype(DType::F32)?;
        let lm_head = if cfg.tie_word_embeddings {
            embed.clone()
        } else {
            take("lm_head.weight")?
        };
        let mut rng = Rng::derive(opts.seed, "lora-init", 0);
        let mut blocks = Vec::with_capacity(cfg.num_hidden_layers);
        for i in 0..cfg.num_hidden_layers {
            let p = format!("model.layers.{i}");
            let mut proj = Vec::with_capacity(ALL_MODULES.len());
            for m in ALL_MODULES {
                let weight = take(&format!("{p}.{}.{m}.weight", module_parent(m)))?;
                let (out_dim, in_dim) = weight.dims2()?;
                let lora = match &opts.lora {
                    Some(spec) if spec.target_modules.iter().any(|t| t == m) => {
                        Some(LoraPair::init(in_dim, out_dim, spec, &mut rng, device)?)
                    }
                    _ => None,
                };
                proj.push(Linear { weight, lora });
            }
            let mut norm = |name: &str| -> Result<Tensor, ModelError> {
                Ok(take(&format!("{p}.{name}.weight"))?.to_dtype(DType::F32)?)
            };
            let mut head_norm = |name: &str| -> Result<Option<Tensor>, ModelError> {
                cfg.architecture.qk_norm().then(|| norm(name)).transpose()
            };
            let (q_norm, k_norm) = (
                head_norm("self_attn.q_norm")?,
                head_norm("self_attn.k_norm")?,
            );
            blocks.push(Block {
                input_norm: norm("input_layernorm")?,
                post_norm: norm("post_attention_layernorm")?,
                proj,
                q_norm,
                k_norm,
            });
        }
        let inv_freq = inv_freq(&cfg);
        Ok(Self {
            cfg,
            embed,
            blocks,
            norm,
            lm_head,
            inv_freq,
            device: device.clone(),
        })
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The adapters, as `(peft_tensor_name, var)`, layer by layer, A before B.
    pub fn lora_vars(&self) -> Vec<(String, Var)> {
        let mut out = Vec::new();
        for (i, block) in self.blocks.iter().enumerate() {
            for (m, lin) in ALL_MODULES.iter().zip(&block.proj) {
                if let Some(l) = &lin.lora {
                    let base =
                        format!("base_model.model.model.layers.{i}.{}.{m}", module_parent(m));
                    out.push((format!("{base}.lora_A.weight"), l.a.clone()));
                    out.push((format!("{base}.lora_B.weight"), l.b.clone()));
                }
            }
        }
        out
    }

    /// Overwrites the adapters with saved tensors (a checkpoint, a PEFT adapter). Every adapter
    /// must be present with its exact shape.
    pub fn set_lora(&self, tensors: &HashMap<String, Tensor>) -> Result<(), ModelError> {
        for (name, var) in self.lora_vars() {
            let t = tensors
                .get(&name)
                .ok_or_else(|| ModelError::Weights(format!("adapter lacks {name}")))?;
            if t.dims() != var.dims() {
                return Err(ModelError::Weights(format!(
                    "{name}: shape {:?}, expected {:?}",
                    t.dims(),
                    var.dims()
                )));
            }
            var.set(&t.to_dtype(DType::F32)?.to_device(&self.device)?)?;
        }
        Ok(())
    }

    /// The final hidden states `[b, s, hidden]` (after the last norm), f32.
    pub fn forward_hidden(&self, ids: &Tensor, ctx: &mut ForwardCtx) -> CResult<Tensor> {
        let (b, s) = ids.dims2()?;
        let (cos, sin) = self.rope_tables(s)?;
        let mask = causal_mask(s, &self.device)?;
        let mut x = self
            .embed
            .index_select(&ids.flatten_all()?, 0)?
            .to_dtype(DType::F32)?;
        x = x.reshape((b, s, self.cfg.hidden_size))?;
        for block in &self.blocks {
            let h = rms_norm(&x, &block.input_norm, self.cfg.rms_norm_eps)?;
            x = (x + self.attention(block, &h, &cos, &sin, &mask, ctx)?)?;
            let h = rms_norm(&x, &block.post_norm, self.cfg.rms_norm_eps)?;
            x = (x + mlp(block, &h, ctx)?)?;
        }
        rms_norm(&x, &self.norm, self.cfg.rms_norm_eps)
    }

    /// Logits (f32) for hidden states of any leading shape.
    pub fn logits(&self, hidden: &Tensor) -> CResult<Tensor> {
        frozen_matmul(hidden, &self.lm_head)?.to_dtype(DType::F32)
    }

    /// `sum_i -log softmax(logits(hidden_i))[target_i]` for hidden states `[n, hidden]` and
    /// targets `[n]` (u32): on the CPU without ever holding the `n x vocab` logits.
    pub fn loss_sum(&self, hidden: &Tensor, targets: &Tensor) -> CResult<Tensor> {
        if fused::applies_to(hidden) {
            fused::lm_head_loss::lm_head_loss(hidden, &self.lm_head, targets)
        } else {
            crate::train::loss::cross_entropy_sum(&self.logits(hidden)?, targets)
        }
    }

    /// `[b, s, vocab]` logits for every position.
    pub fn forward(&self, ids: &Tensor, ctx: &mut ForwardCtx) -> CResult<Tensor> {
        self.logits(&self.forward_hidden(ids, ctx)?)
    }

    fn attention(
        &self,
        block: &Block,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        mask: &Tensor,
        ctx: &mut ForwardCtx,
    ) -> CResult<Tensor> {
        let c = &self.cfg;
        let (b, s, _) = x.dims3()?;
        let (nh, nkv, hd) = (c.num_attention_heads, c.num_key_value_heads, c.head_dim);
        // Qwen3's head norms: over the last dimension, a head, wherever the heads sit.
        let head_norm = |t: Tensor, norm: &Option<Tensor>| match norm {
            Some(w) => rms_norm(&t, w, c.rms_norm_eps),
            None => Ok(t),
        };
        if fused::applies_to(x) {
            // Heads stay where the projections put them: [b, s, heads, d].
            let q = head_norm(
                block.proj[0].forward(x, ctx)?.reshape((b, s, nh, hd))?,
                &block.q_norm,
            )?;
            let k = head_norm(
                block.proj[1].forward(x, ctx)?.reshape((b, s, nkv, hd))?,
                &block.k_norm,
            )?;
            let v = block.proj[2].forward(x, ctx)?.reshape((b, s, nkv, hd))?;
            let q = fused::rope::rope(&q, cos, sin)?;
            let k = ctx.kv_as_read(fused::rope::rope(&k, cos, sin)?)?;
            let v = ctx.kv_as_read(v)?;
            let out = fused::attention::causal_attention(&q, &k, &v)?.reshape((b, s, nh * hd))?;
            return block.proj[3].forward(&out, ctx);
        }
        let heads = |t: Tensor, n: usize| t.reshape((b, s, n, hd))?.transpose(1, 2)?.contiguous();
        let q = head_norm(heads(block.proj[0].forward(x, ctx)?, nh)?, &block.q_norm)?;
        let k = head_norm(heads(block.proj[1].forward(x, ctx)?, nkv)?, &block.k_norm)?;
        let v = heads(block.proj[2].forward(x, ctx)?, nkv)?;
        let q = apply_rope(&q, cos, sin)?;
        let k = repeat_kv(&ctx.kv_as_read(apply_rope(&k, cos, sin)?)?, nh / nkv)?;
        let v = repeat_kv(&ctx.kv_as_read(v)?, nh / nkv)?;
        let scores = (q.matmul(&k.t()?)? * (1.0 / (hd as f64).sqrt()))?;
        let probs = softmax_last(&add_const(&scores, mask)?)?;
        let out = probs
            .matmul(&v)?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((b, s, nh * hd))?;
        block.proj[3].forward(&out, ctx)
    }

    /// `cos`/`sin` of shape `[s, head_dim]` (the halves repeated, as `rotate_half` expects).
    fn rope_tables(&self, s: usize) -> CResult<(Tensor, Tensor)> {
        let half = self.inv_freq.len();
        let mut cos = Vec::with_capacity(s * half * 2);
        let mut sin = Vec::with_capacity(s * half * 2);
        for p in 0..s {
            for _half in 0..2 {
                for f in &self.inv_freq {
                    let angle = p as f32 * f;
                    cos.push(angle.cos());
                    sin.push(angle.sin());
                }
            }
        }
        let shape = (s, half * 2);
        Ok((
            Tensor::from_vec(cos, shape, &self.device)?,
            Tensor::from_vec(sin, shape, &self.device)?,
        ))
    }
}

fn mlp(block: &Block, x: &Tensor, ctx: &mut ForwardCtx) -> CResult<Tensor> {
    let gate = block.proj[4].forward(x, ctx)?;
    let up = block.proj[5].forward(x, ctx)?;
    let act = if fused::applies_to(&gate) {
        fused::swiglu::swiglu(&gate, &up)?
    } else {
        (candle_nn::ops::silu(&gate)? * up)?
    };
    block.proj[6].forward(&act, ctx)
}

/// `w * x / sqrt(mean(x^2) + eps)`, in f32: on CUDA the formula, because candle's fused op has
/// no backward.
fn rms_norm(x: &Tensor, w: &Tensor, eps: f64) -> CResult<Tensor> {
    if fused::applies_to(x) {
        return fused::rms_norm::rms_norm(x, w, eps);
    }
    let var = x.sqr()?.mean_keepdim(D::Minus1)?;
    let normed = x.broadcast_mul(&(var + eps)?.sqrt()?.recip()?)?;
    mul_const(&normed, w)
}

/// Softmax over the last dimension. The max is a constant shift (it cancels in the gradient),
/// so it is detached rather than differentiated.
fn softmax_last(x: &Tensor) -> CResult<Tensor> {
    let max = x.max_keepdim(D::Minus1)?.detach();
    let e = x.broadcast_sub(&max)?.exp()?;
    e.broadcast_div(&e.sum_keepdim(D::Minus1)?)
}

fn apply_rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> CResult<Tensor> {
    let hd = x.dim(D::Minus1)?;
    let x1 = x.narrow(D::Minus1, 0, hd / 2)?;
    let x2 = x.narrow(D::Minus1, hd / 2, hd / 2)?;
    let rotated = Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?;
    mul_const(x, cos)? + mul_const(&rotated, sin)?
}

/// `[b, n_kv, s, d]` -> `[b, n_kv * rep, s, d]`, each kv head shared by `rep` query heads.
fn repeat_kv(x: &Tensor, rep: usize) -> CResult<Tensor> {
    if rep == 1 {
        return Ok(x.clone());
    }
    let (b, n, s, d) = x.dims4()?;
    x.unsqueeze(2)?
        .broadcast_as((b, n, rep, s, d))?
        .reshape((b, n * rep, s, d))
}

fn causal_mask(s: usize, device: &Device) -> CResult<Tensor> {
    let m: Vec<f32> = (0..s)
        .flat_map(|i| (0..s).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 }))
        .collect();
    Tensor::from_vec(m, (s, s), device)
}

/// The rotary frequencies as transformers computes them (f32), with Llama 3.1's scaling.
pub fn inv_freq(cfg: &LlamaConfig) -> Vec<f32> {
    let dim = cfg.head_dim;
    let base: Vec<f32> = (0..dim / 2)
        .map(|i| 1.0 / (cfg.rope_theta as f32).powf((2 * i) as f32 / dim as f32))
        .collect();
    match cfg.rope_scaling {
        RopeScaling::Default => base,
        RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_max_position_embeddings,
        } => {
            let (factor, low, high, old) = (
                factor as f32,
                low_freq_factor as f32,
                high_freq_factor as f32,
                original_max_position_embeddings as f32,
            );
            let low_freq_wavelen = old / low;
            let high_freq_wavelen = old / high;
            base.into_iter()
                .map(|f| {
                    let wavelen = 2.0 * std::f32::consts::PI / f;
                    if wavelen < high_freq_wavelen {
                        f
                    } else if wavelen > low_freq_wavelen {
                        f / factor
                    } else {
                        let smooth = (old / wavelen - low) / (high - low);
                        (1.0 - smooth) * f / factor + smooth * f
                    }
                })
                .collect()
        }
    }
}
