//! Bounds on what a client may ask for, checked before any work starts, in every service that
//! accepts it: the gateway at CreateRun (a run's training settings are used hours later) and the
//! trainer at CreateJob. Without them a LoRA rank of 2^32-1 is an allocation of terabytes that
//! aborts the process, and a NaN learning rate trains a model of NaNs.

use arf_proto::v1 as pb;

/// The projections of a Llama block that can carry an adapter, by their checkpoint names.
pub const LLAMA_PROJECTIONS: [&str; 7] = [
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
];

pub const MAX_LORA_RANK: u32 = 1024;
pub const MAX_LORA_ALPHA: f32 = 1.0e4;
pub const MAX_EPOCHS: u32 = 1000;
/// Optimizer steps, warm-up steps, and the evaluation and checkpoint intervals.
pub const MAX_STEPS: u32 = 10_000_000;
pub const MAX_BATCH: u32 = 4096;
pub const MAX_SEQ_LEN: u32 = 131_072;
/// Characters of a run's display name.
pub const MAX_DISPLAY_NAME: usize = 256;
/// Tokens a run may ask the editor to generate for one revision or one summary: more than any
/// summary needs, and checked at CreateRun rather than refused by every call hours later.
pub const MAX_GENERATED_TOKENS: u32 = 32_768;
/// Rows of one run's dataset (good and bad together).
pub const MAX_ROWS: usize = 10_000_000;
/// Bad rows one run records before it stops reading: past this many, the file is more likely
/// the wrong one than a dataset with a few bad lines.
pub const MAX_BAD_ROWS: usize = 10_000;

/// A bound broken: the field's path (relative to the message checked) and what is allowed.
pub type Violation = (String, String);

fn bad(field: &str, message: impl Into<String>) -> Result<(), Violation> {
    Err((field.to_string(), message.into()))
}

/// True when `name` (`q` or `q_proj`) names a Llama projection.
pub fn is_llama_projection(name: &str) -> bool {
    let canonical = name.strip_suffix("_proj").unwrap_or(name);
    LLAMA_PROJECTIONS
        .iter()
        .any(|p| p.strip_suffix("_proj") == Some(canonical))
}

/// Training settings as they come on the wire (zero means the server's default). Field paths
/// are relative to the `Hyperparameters` message: prefix them with where it sits.
pub fn check_hyperparameters(h: &pb::Hyperparameters) -> Result<(), Violation> {
    if let Some(lora) = &h.lora {
        if lora.rank > MAX_LORA_RANK {
            return bad(
                "lora.rank",
                format!("at most {MAX_LORA_RANK} (0 means the default)"),
            );
        }
        if !(lora.alpha.is_finite() && (0.0..=MAX_LORA_ALPHA).contains(&lora.alpha)) {
            return bad(
                "lora.alpha",
                format!("must be in [0, {MAX_LORA_ALPHA}] (0 means twice the rank)"),
            );
        }
        if !(lora.dropout.is_finite() && (0.0..1.0).contains(&lora.dropout)) {
            return bad("lora.dropout", "must be in [0, 1)");
        }
        for (i, name) in lora.target_modules.iter().enumerate() {
            if !is_llama_projection(name) {
                return bad(
                    &format!("lora.target_modules[{i}]"),
                    format!(
                        "no Llama block has a module {name:?} (there are {})",
                        LLAMA_PROJECTIONS.join(", ")
                    ),
                );
            }
        }
    }
    if !(h.learning_rate.is_finite() && (0.0..1.0).contains(&h.learning_rate)) {
        return bad("learning_rate", "must be in (0, 1) (0 means the default)");
    }
    if h.epochs > MAX_EPOCHS {
        return bad("epochs", format!("at most {MAX_EPOCHS}"));
    }
    for (field, value) in [
        ("max_steps", h.max_steps),
        ("warmup_steps", h.warmup_steps),
        ("eval_every_steps", h.eval_every_steps),
        ("checkpoint_every_steps", h.checkpoint_every_steps),
    ] {
        if value > MAX_STEPS {
            return bad(field, format!("at most {MAX_STEPS}"));
        }
    }
    for (field, value) in [
        ("batch_size", h.batch_size),
        ("gradient_accumulation_steps", h.gradient_accumulation_steps),
    ] {
        if value > MAX_BATCH {
            return bad(field, format!("at most {MAX_BATCH}"));
        }
    }
    if !(h.weight_decay.is_finite() && (0.0..=1.0).contains(&h.weight_decay)) {
        return bad("weight_decay", "must be in [0, 1]");
    }
    if !(h.max_grad_norm.is_finite() && h.max_grad_norm >= 0.0) {
        return bad("max_grad_norm", "must be >= 0 (0 means the default)");
    }
    if h.max_seq_len != 0 && !(8..=MAX_SEQ_LEN).contains(&h.max_seq_len) {
        return bad(
            "max_seq_len",
            format!("must be in 8..={MAX_SEQ_LEN} (0 means the default)"),
        );
    }
    if !(h.eval_fraction.is_finite() && (0.0..0.9).contains(&h.eval_fraction)) {
        return bad("eval_fraction", "must be in [0, 0.9)");
    }
    if !matches!(h.base_dtype.as_str(), "" | "f32" | "bf16") {
        return bad(
            "base_dtype",
            "must be \"f32\" or \"bf16\" (empty means f32)",
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(h: pb::Hyperparameters) -> String {
        check_hyperparameters(&h).expect_err("out of bounds").0
    }

    #[test]
    fn defaults_pass_and_each_bound_names_its_field() {
        check_hyperparameters(&pb::Hyperparameters::default()).unwrap();
        let lora = |l: pb::LoraConfig| pb::Hyperparameters {
            lora: Some(l),
            ..Default::default()
        };
        assert_eq!(
            field(lora(pb::LoraConfig {
                rank: u32::MAX,
                ..Default::default()
            })),
            "lora.rank"
        );
        assert_eq!(
            field(lora(pb::LoraConfig {
                alpha: f32::NAN,
                ..Default::default()
            })),
            "lora.alpha"
        );
        assert_eq!(
            field(lora(pb::LoraConfig {
                target_modules: vec!["q".into(), "attn".into()],
                ..Default::default()
            })),
            "lora.target_modules[1]"
        );
        let h = |f: fn(&mut pb::Hyperparameters)| {
            let mut h = pb::Hyperparameters::default();
            f(&mut h);
            h
        };
        assert_eq!(field(h(|h| h.learning_rate = f64::NAN)), "learning_rate");
        assert_eq!(field(h(|h| h.learning_rate = -1.0)), "learning_rate");
        assert_eq!(field(h(|h| h.epochs = u32::MAX)), "epochs");
        assert_eq!(field(h(|h| h.max_steps = u32::MAX)), "max_steps");
        assert_eq!(
            field(h(|h| h.checkpoint_every_steps = u32::MAX)),
            "checkpoint_every_steps"
        );
        assert_eq!(field(h(|h| h.batch_size = 1 << 20)), "batch_size");
        assert_eq!(field(h(|h| h.weight_decay = f64::INFINITY)), "weight_decay");
        assert_eq!(field(h(|h| h.max_seq_len = 4)), "max_seq_len");
        assert_eq!(field(h(|h| h.max_seq_len = u32::MAX)), "max_seq_len");
        assert_eq!(field(h(|h| h.eval_fraction = f32::NAN)), "eval_fraction");
        assert_eq!(field(h(|h| h.base_dtype = "f8".into())), "base_dtype");
    }

    #[test]
    fn projections_take_either_spelling() {
        assert!(is_llama_projection("q") && is_llama_projection("down_proj"));
        assert!(!is_llama_projection("lm_head") && !is_llama_projection("_proj"));
    }
}
