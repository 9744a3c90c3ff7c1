//! The training loop. Synchronous candle work: callers run it on a thread of its own.

use std::path::PathBuf;
use std::time::Instant;

use candle_core::{DType, Device, Tensor, Var};

use super::checkpoint::{self, CheckpointState};
use super::data::{ChatFormat, Encoded};
use super::examples::ExampleSource;
use super::optim::{AdamW, AdamWParams, clip_global_norm, lr_at};
use super::{Event, Observer, TrainConfig, TrainError};
use crate::lora::ForwardCtx;
use crate::lora::peft::{save_adapter, write_merged};
use crate::model::fused::threads;
use crate::model::{Llama, LoadOptions};
use crate::rng::Rng;

/// How a run ended (a failure is the `Err` of [`train`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Succeeded {
        adapter_dir: PathBuf,
        merged_dir: Option<PathBuf>,
        steps: u64,
        last_loss: f64,
        last_eval_loss: Option<f64>,
        truncated_examples: u32,
    },
    /// Stopped before a step at the caller's request; the checkpoints written so far stay.
    Cancelled {
        step: u64,
        last_checkpoint: Option<PathBuf>,
    },
}

/// Which micro-batches make up each optimizer step, from the seed alone.
struct Plan {
    train: Vec<usize>,
    batch_size: usize,
    accum: usize,
    steps_per_epoch: u64,
    seed: u64,
}

impl Plan {
    fn batches_per_epoch(&self) -> usize {
        self.train.len().div_ceil(self.batch_size)
    }

    /// `(epoch, first batch, micro-batches of example indices)` of optimizer step `step`.
    fn step(&self, step: u64) -> (u64, u64, Vec<Vec<usize>>) {
        let epoch = step / self.steps_per_epoch;
        let mut order = self.train.clone();
        Rng::derive(self.seed, "shuffle", epoch).shuffle(&mut order);
        let first = (step % self.steps_per_epoch) as usize * self.accum;
        let last = (first + self.accum).min(self.batches_per_epoch());
        let micro = (first..last)
            .map(|b| {
                order[b * self.batch_size..((b + 1) * self.batch_size).min(order.len())].to_vec()
            })
            .collect();
        (epoch, first as u64, micro)
    }
}

/// A padded batch: ids `[b, L]`, the rows of the flattened `[b*L]` positions that predict a
/// target, and those targets.
struct Batch {
    ids: Tensor,
    rows: Tensor,
    targets: Tensor,
    num_targets: usize,
    num_tokens: usize,
}

/// The examples at `indices`, read and tokenized: a batch's worth is all a run holds.
fn encode(
    examples: &(impl ExampleSource + ?Sized),
    indices: &[usize],
    format: &ChatFormat,
    max_seq_len: usize,
) -> Result<Vec<Encoded>, TrainError> {
    indices
        .iter()
        .map(|&i| format.encode(&examples.get(i)?, max_seq_len))
        .collect()
}

fn make_batch(items: &[Encoded], pad: u32, device: &Device) -> candle_core::Result<Batch> {
    let len = items.iter().map(|e| e.ids.len()).max().unwrap_or(1);
    let mut ids = Vec::with_capacity(items.len() * len);
    let (mut rows, mut targets) = (Vec::new(), Vec::new());
    for (i, e) in items.iter().enumerate() {
        ids.extend(&e.ids);
        ids.extend(std::iter::repeat_n(pad, len - e.ids.len()));
        // Right padding: real tokens never attend to pads under the causal mask.
        for p in e.target_start.saturating_sub(1)..e.ids.len() - 1 {
            rows.push((i * len + p) as u32);
            targets.push(e.ids[p + 1]);
        }
    }
    Ok(Batch {
        ids: Tensor::from_vec(ids, (items.len(), len), device)?,
        num_targets: rows.len(),
        num_tokens: items.iter().map(|e| e.ids.len()).sum(),
        rows: Tensor::new(rows, device)?,
        targets: Tensor::new(targets, device)?,
    })
}

/// Summed token loss of a batch: a graph node for backward, or (`for_backward` false) a value
/// whose gradient is never computed.
fn batch_loss(
    model: &Llama,
    batch: &Batch,
    ctx: &mut ForwardCtx,
    for_backward: bool,
) -> candle_core::Result<Tensor> {
    let hidden = model.forward_hidden(&batch.ids, ctx)?;
    let (b, l, h) = hidden.dims3()?;
    // Logits only where there is a target: the masked positions cost no lm_head work.
    let picked = hidden.reshape((b * l, h))?.index_select(&batch.rows, 0)?;
    let picked = if for_backward {
        picked
    } else {
        picked.detach()
    };
    model.loss_sum(&picked, &batch.targets)
}

fn eval_loss(
    model: &Llama,
    examples: &(impl ExampleSource + ?Sized),
    eval: &[usize],
    cfg: &TrainConfig,
    format: &ChatFormat,
    device: &Device,
) -> Result<f64, TrainError> {
    let (mut sum, mut n) = (0f64, 0usize);
    for chunk in eval.chunks(cfg.batch_size) {
        let items = encode(examples, chunk, format, cfg.max_seq_len)?;
        let batch = make_batch(&items, format.pad_id, device)?;
        sum += batch_loss(model, &batch, &mut ForwardCtx::eval(), false)?
            .detach()
            .to_scalar::<f32>()? as f64;
        n += batch.num_targets;
    }
    Ok(sum / n.max(1) as f64)
}

/// One optimizer step over `batches` (its micro-batches): forward, backward, gradients summed,
/// clipped, AdamW. The step's loss is the mean over all its target tokens, whatever the
/// micro-batching. Returns that mean loss, the tokens seen and the gradient norm.
fn gradient_step(
    model: &Llama,
    vars: &[(String, Var)],
    opt: &mut AdamW,
    batches: &[Batch],
    cfg: &TrainConfig,
    step: u64,
    lr: f64,
) -> Result<(f64, usize, f64), TrainError> {
    let step_targets: usize = batches.iter().map(|b| b.num_targets).sum();
    let mut grads: Vec<Tensor> = vars
        .iter()
        .map(|(_, v)| v.as_tensor().zeros_like())
        .collect::<candle_core::Result<_>>()?;
    let (mut loss_sum, mut tokens) = (0f64, 0usize);
    for (j, batch) in batches.iter().enumerate() {
        let stream = step * cfg.gradient_accumulation_steps as u64 + j as u64;
        let mut ctx = ForwardCtx {
            dropout_rng: Some(Rng::derive(cfg.seed, "dropout", stream)),
            kv_rounded_to: None,
        };
        let loss = batch_loss(model, batch, &mut ctx, true)?;
        loss_sum += loss.to_scalar::<f32>()? as f64;
        tokens += batch.num_tokens;
        let store = (loss / step_targets.max(1) as f64)?.backward()?;
        for (g, (_, var)) in grads.iter_mut().zip(vars) {
            if let Some(d) = store.get(var.as_tensor()) {
                *g = (&*g + d)?;
            }
        }
    }
    let grad_norm = clip_global_norm(&mut grads, cfg.max_grad_norm)?;
    opt.step(&grads, lr)?;
    Ok((loss_sum / step_targets.max(1) as f64, tokens, grad_norm))
}

/// Trains a LoRA adapter on `examples`, resuming from the last checkpoint under
/// `cfg.output_dir` if one of the same run is there. The examples are read as batches need
/// them (and once before, to count the truncated ones): memory does not grow with the set.
pub fn train(
    cfg: &TrainConfig,
    examples: &(impl ExampleSource + ?Sized),
    obs: &mut dyn Observer,
    device: &Device,
) -> Result<Outcome, TrainError> {
    cfg.validate()
        .map_err(|(f, m)| TrainError::Data(format!("{f}: {m}")))?;
    if examples.is_empty() {
        return Err(TrainError::Data("no training examples".into()));
    }
    let format = ChatFormat::for_base(&cfg.base_model_dir)?;
    let mut truncated = 0u32;
    for i in 0..examples.len() {
        truncated += u32::from(format.encode(&examples.get(i)?, cfg.max_seq_len)?.truncated);
    }
    if truncated > 0 {
        obs.event(Event::Warning(format!(
            "{truncated} of {} examples were longer than max_seq_len {} and were truncated (conversation side)",
            examples.len(),
            cfg.max_seq_len
        )));
    }

    // Held-out split, from the seed.
    let total = examples.len();
    let mut order: Vec<usize> = (0..total).collect();
    Rng::derive(cfg.seed, "split", 0).shuffle(&mut order);
    let n_eval = if cfg.eval_fraction > 0.0 && total >= 2 {
        ((total as f32 * cfg.eval_fraction).ceil() as usize).clamp(1, total - 1)
    } else {
        0
    };
    let eval: Vec<usize> = order[..n_eval].to_vec();
    let mut train_idx = order[n_eval..].to_vec();
    train_idx.sort_unstable();

    let batches = train_idx.len().div_ceil(cfg.batch_size) as u64;
    let steps_per_epoch = batches.div_ceil(cfg.gradient_accumulation_steps as u64);
    // `max_steps` overrides the epochs, as in transformers' Trainer: the data repeats, each
    // epoch in its own seeded order, so students trained on datasets of different sizes (the
    // comparison arms) still take the same number of optimizer steps.
    let total_steps = if cfg.max_steps > 0 {
        cfg.max_steps
    } else {
        steps_per_epoch * u64::from(cfg.epochs)
    };
    let plan = Plan {
        train: train_idx,
        batch_size: cfg.batch_size,
        accum: cfg.gradient_accumulation_steps,
        steps_per_epoch,
        seed: cfg.seed,
    };

    let dtype = if cfg.base_dtype == "bf16" {
        DType::BF16
    } else {
        DType::F32
    };
    let opts = LoadOptions {
        dtype,
        lora: Some(cfg.lora.clone()),
        seed: cfg.seed,
    };
    if dtype == DType::BF16 && device.is_cpu() {
        tracing::info!(
            kernel = crate::model::fused::bf16::kernel(),
            "the bf16 base's products"
        );
    }
    let model = Llama::load(&cfg.base_model_dir, &opts, device)?;
    let vars = model.lora_vars();
    let params = AdamWParams {
        weight_decay: cfg.weight_decay,
        ..Default::default()
    };
    let mut opt = AdamW::new(vars.clone(), params)?;

    // Resume from the newest checkpoint of this same run.
    let fingerprint = cfg.fingerprint();
    let mut start = 0u64;
    let mut last_checkpoint = None;
    let mut last_loss = f64::NAN;
    if let Some((step, path)) = checkpoint::list(&cfg.output_dir).pop() {
        let (state, moments) = checkpoint::read_state(&path, device)?;
        if state.config_fingerprint != fingerprint {
            return Err(TrainError::Data(format!(
                "{} holds checkpoints of a different run (other data or settings); use another output directory",
                cfg.output_dir.display()
            )));
        }
        let (_, adapter) =
            crate::lora::peft::load_adapter(&checkpoint::adapter_dir(&path), device)?;
        model.set_lora(&adapter)?;
        opt.restore(&moments, state.optimizer_t)?;
        start = step;
        last_loss = state.last_loss;
        last_checkpoint = Some(path);
    }
    obs.event(Event::Started {
        total_steps,
        resumed: start > 0,
        from_step: start,
        train_examples: plan.train.len() as u32,
        eval_examples: eval.len() as u32,
    });

    let mut last_eval = None;
    let mut evaluated_at = None;
    for step in start..total_steps {
        if obs.cancelled() {
            return Ok(Outcome::Cancelled {
                step,
                last_checkpoint,
            });
        }
        let started = Instant::now();
        let lr = lr_at(step, cfg.learning_rate, cfg.warmup_steps, total_steps);
        let (epoch, first_batch, micro) = plan.step(step);
        let batches: Vec<Batch> = micro
            .iter()
            .map(|idx| {
                let items = encode(examples, idx, &format, cfg.max_seq_len)?;
                Ok(make_batch(&items, format.pad_id, device)?)
            })
            .collect::<Result<_, TrainError>>()?;
        // One hand-off of the worker threads for the whole step, not one per product.
        let mut work = || gradient_step(&model, &vars, &mut opt, &batches, cfg, step, lr);
        let (loss, tokens, grad_norm) = if device.is_cpu() {
            threads::hold(work)
        } else {
            work()
        }?;
        last_loss = loss;
        let done = step + 1;
        obs.event(Event::Step {
            step: done,
            total_steps,
            loss: last_loss,
            learning_rate: lr,
            tokens_per_second: tokens as f64 / started.elapsed().as_secs_f64().max(1e-9),
            grad_norm,
            epoch: epoch as u32,
        });
        if !eval.is_empty() && cfg.eval_every_steps > 0 && done % cfg.eval_every_steps == 0 {
            let l = eval_loss(&model, examples, &eval, cfg, &format, device)?;
            obs.event(Event::Eval {
                step: done,
                eval_loss: l,
            });
            last_eval = Some(l);
            evaluated_at = Some(done);
        }
        if cfg.checkpoint_every_steps > 0
            && done % cfg.checkpoint_every_steps == 0
            && done < total_steps
        {
            let state = CheckpointState {
                step: done,
                total_steps,
                epoch: done / steps_per_epoch,
                next_batch_in_epoch: if done % steps_per_epoch == 0 {
                    0
                } else {
                    first_batch + micro.len() as u64
                },
                seed: cfg.seed,
                optimizer_t: opt.t,
                last_loss,
                config_fingerprint: fingerprint.clone(),
            };
            let path = write_checkpoint(cfg, &model, &opt, &state)?;
            obs.event(Event::Checkpoint {
                step: done,
                path: path.clone(),
            });
            last_checkpoint = Some(path);
        }
    }
    if !eval.is_empty() && evaluated_at != Some(total_steps) {
        let l = eval_loss(&model, examples, &eval, cfg, &format, device)?;
        obs.event(Event::Eval {
            step: total_steps,
            eval_loss: l,
        });
        last_eval = Some(l);
    }

    // Published whole (written aside, flushed, renamed), before the job is saved as Succeeded.
    let adapter_dir = checkpoint::publish(&cfg.output_dir.join("adapter"), |dir| {
        Ok(save_adapter(&model, &cfg.lora, &cfg.base_model_dir, dir)?)
    })?;
    let merged_dir = if cfg.export_merged {
        let tensors = vars
            .iter()
            .map(|(n, v)| (n.clone(), v.as_tensor().clone()))
            .collect();
        Some(checkpoint::publish(
            &cfg.output_dir.join("merged"),
            |dir| {
                write_merged(&cfg.base_model_dir, &tensors, &cfg.lora, dir)?;
                Ok(())
            },
        )?)
    } else {
        None
    };
    Ok(Outcome::Succeeded {
        adapter_dir,
        merged_dir,
        steps: total_steps,
        last_loss,
        last_eval_loss: last_eval,
        truncated_examples: truncated,
    })
}

fn write_checkpoint(
    cfg: &TrainConfig,
    model: &Llama,
    opt: &AdamW,
    state: &CheckpointState,
) -> Result<PathBuf, TrainError> {
    let root = checkpoint::checkpoints_dir(&cfg.output_dir);
    let tmp = root.join(format!(".tmp-step-{:08}", state.step));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| TrainError::io(&tmp, e))?;
    }
    std::fs::create_dir_all(&tmp).map_err(|e| TrainError::io(&tmp, e))?;
    save_adapter(
        model,
        &cfg.lora,
        &cfg.base_model_dir,
        &checkpoint::adapter_dir(&tmp),
    )?;
    checkpoint::write_state(&tmp, state, &opt.state())?;
    checkpoint::commit(&tmp, &cfg.output_dir, state.step)
}
