//! Training: data rendering, loss, optimizer, schedule, checkpoints and the loop.

pub mod checkpoint;
pub mod data;
pub mod examples;
pub mod loss;
pub mod optim;
mod run;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use data::Example;
pub use examples::{ExampleFile, ExampleSource};
pub use run::{Outcome, train};

use crate::lora::LoraSpec;
use crate::model::ModelError;

/// Everything a training run needs besides its examples. Zero-valued fields of the API are
/// turned into these defaults by [`TrainConfig::with_defaults`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    pub base_model_dir: PathBuf,
    pub output_dir: PathBuf,
    pub lora: LoraSpec,
    pub learning_rate: f64,
    pub epochs: u32,
    /// Exactly this many optimizer steps, repeating the data as often as needed (`epochs` is
    /// then ignored); 0: the epochs decide.
    pub max_steps: u64,
    pub batch_size: usize,
    pub gradient_accumulation_steps: usize,
    pub warmup_steps: u64,
    pub weight_decay: f64,
    pub max_grad_norm: f64,
    pub max_seq_len: usize,
    pub seed: u64,
    /// 0: evaluate only at the end.
    pub eval_every_steps: u64,
    /// 0: no intermediate checkpoints.
    pub checkpoint_every_steps: u64,
    pub eval_fraction: f32,
    /// "f32" or "bf16".
    pub base_dtype: String,
    pub export_merged: bool,
}

impl TrainConfig {
    /// The server's defaults for a base model and an output directory.
    pub fn with_defaults(
        base_model_dir: impl Into<PathBuf>,
        output_dir: impl Into<PathBuf>,
    ) -> Self {
        Self {
            base_model_dir: base_model_dir.into(),
            output_dir: output_dir.into(),
            lora: LoraSpec::default(),
            learning_rate: 2e-4,
            epochs: 1,
            max_steps: 0,
            batch_size: 1,
            gradient_accumulation_steps: 1,
            warmup_steps: 0,
            weight_decay: 0.0,
            max_grad_norm: 1.0,
            max_seq_len: 2048,
            seed: 42,
            eval_every_steps: 0,
            checkpoint_every_steps: 0,
            eval_fraction: 0.0,
            base_dtype: "f32".into(),
            export_merged: false,
        }
    }

    /// Checks the hyperparameters; the error names the offending field.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let bad = |f: &str, m: &str| Err((f.to_string(), m.to_string()));
        if self.lora.rank == 0 || self.lora.rank > arf_common::bounds::MAX_LORA_RANK as usize {
            return bad(
                "hyperparameters.lora.rank",
                &format!("must be in 1..={}", arf_common::bounds::MAX_LORA_RANK),
            );
        }
        if !(self.lora.alpha.is_finite() && self.lora.alpha > 0.0) {
            return bad("hyperparameters.lora.alpha", "must be > 0");
        }
        if !(0.0..1.0).contains(&self.lora.dropout) {
            return bad("hyperparameters.lora.dropout", "must be in [0, 1)");
        }
        if !(self.learning_rate.is_finite() && self.learning_rate > 0.0 && self.learning_rate < 1.0)
        {
            return bad("hyperparameters.learning_rate", "must be in (0, 1)");
        }
        if self.epochs == 0 {
            return bad("hyperparameters.epochs", "must be > 0");
        }
        if self.batch_size == 0 || self.batch_size > 4096 {
            return bad("hyperparameters.batch_size", "must be in 1..=4096");
        }
        if self.gradient_accumulation_steps == 0 || self.gradient_accumulation_steps > 4096 {
            return bad(
                "hyperparameters.gradient_accumulation_steps",
                "must be in 1..=4096",
            );
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return bad("hyperparameters.weight_decay", "must be >= 0");
        }
        if !(self.max_grad_norm.is_finite() && self.max_grad_norm > 0.0) {
            return bad("hyperparameters.max_grad_norm", "must be > 0");
        }
        if self.max_seq_len < 8 {
            return bad("hyperparameters.max_seq_len", "must be at least 8");
        }
        if !(0.0..0.9).contains(&self.eval_fraction) {
            return bad("hyperparameters.eval_fraction", "must be in [0, 0.9)");
        }
        if !matches!(self.base_dtype.as_str(), "f32" | "bf16") {
            return bad("hyperparameters.base_dtype", "must be \"f32\" or \"bf16\"");
        }
        Ok(())
    }

    /// A digest of everything that determines the run's result, stored in checkpoints so a
    /// directory holding another run's checkpoints is never resumed by mistake.
    pub fn fingerprint(&self) -> String {
        let mut c = self.clone();
        c.output_dir = PathBuf::new();
        c.export_merged = false;
        let text = serde_json::to_string(&c).unwrap_or_default();
        // FNV-1a: stable across builds and platforms, unlike the std hasher.
        let hash = text.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        });
        format!("{hash:016x}")
    }
}

/// What a run reports as it goes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    Started {
        total_steps: u64,
        resumed: bool,
        from_step: u64,
        train_examples: u32,
        eval_examples: u32,
    },
    Step {
        step: u64,
        total_steps: u64,
        loss: f64,
        learning_rate: f64,
        tokens_per_second: f64,
        grad_norm: f64,
        epoch: u32,
    },
    Eval {
        step: u64,
        eval_loss: f64,
    },
    Checkpoint {
        step: u64,
        path: PathBuf,
    },
    Warning(String),
}

/// One line a person reads: `step 27/60 loss 2.1038 lr 1.200e-4 grad_norm 0.812 196 tok/s`.
impl std::fmt::Display for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Event::Started {
                total_steps,
                resumed,
                from_step,
                train_examples,
                eval_examples,
            } => {
                write!(
                    f,
                    "started: {total_steps} steps, {train_examples} train / {eval_examples} eval examples"
                )?;
                if *resumed {
                    write!(f, ", resumed at step {from_step}")?;
                }
                Ok(())
            }
            Event::Step {
                step,
                total_steps,
                loss,
                learning_rate: lr,
                tokens_per_second: speed,
                grad_norm: norm,
                ..
            } => write!(
                f,
                "step {step}/{total_steps} loss {loss:.4} lr {lr:.3e} grad_norm {norm:.3} {speed:.0} tok/s"
            ),
            Event::Eval { step, eval_loss } => {
                write!(f, "eval at step {step}: loss {eval_loss:.4}")
            }
            Event::Checkpoint { step, path } => write!(f, "checkpoint {step}: {}", path.display()),
            Event::Warning(w) => write!(f, "warning: {w}"),
        }
    }
}

/// The caller's side of a run: it receives events and says when to stop.
pub trait Observer {
    fn event(&mut self, event: Event);
    /// Checked before every step.
    fn cancelled(&self) -> bool {
        false
    }
}

impl<F: FnMut(Event)> Observer for F {
    fn event(&mut self, event: Event) {
        self(event)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("{0}")]
    Data(String),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

impl TrainError {
    pub fn io(path: &Path, e: std::io::Error) -> Self {
        TrainError::Data(format!("{}: {e}", path.display()))
    }
}
