//! Scoring a given reply by teacher forcing, through the engine.
//!
//! mistral.rs returns the logprobs of sampled tokens only, and raw logits of a prompt's last
//! position only. So the reply is "generated" with a logits processor, [`ForcedReply`], that
//! records the log-softmax of each reply token and then leaves that token the only one
//! possible: greedy decoding picks it, and the next step sees it in its context. One decode
//! step per token, batched with whatever else the engine runs, like a generation of the reply.
//!
//! The reply's position is the context's length past the prompt's: at the first step that is
//! 0 whatever the engine shows, since a prompt resumed from the prefix cache shows only the
//! tokens it computes (one).

use std::sync::Mutex;

use mistralrs::{CustomLogitsProcessor, DType, Tensor};

/// Rides along with one scoring request (see the module docs).
pub struct ForcedReply {
    targets: Vec<u32>,
    /// The prompt's length in tokens.
    prompt_len: usize,
    logprobs: Mutex<Vec<f32>>,
}

impl ForcedReply {
    pub fn new(prompt_len: usize, targets: Vec<u32>) -> Self {
        Self {
            logprobs: Mutex::new(Vec::with_capacity(targets.len())),
            targets,
            prompt_len,
        }
    }

    /// The logprob of each reply token scored so far, in order.
    pub fn logprobs(&self) -> Vec<f32> {
        self.logprobs.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

impl CustomLogitsProcessor for ForcedReply {
    fn apply(&self, logits: &Tensor, context: &[u32]) -> mistralrs::Result<Tensor> {
        let position = context.len().saturating_sub(self.prompt_len);
        let Some(&target) = self.targets.get(position) else {
            return Ok(logits.clone()); // past the reply: max_tokens stops the sequence
        };
        let values: Vec<f32> = logits.to_dtype(DType::F32)?.to_vec1()?;
        let target = target as usize;
        if target >= values.len() {
            candle_core::bail!(
                "reply token {target} is outside the vocabulary of {}",
                values.len()
            );
        }
        if let Ok(mut logprobs) = self.logprobs.lock() {
            logprobs.push(log_softmax_at(&values, target));
        }
        let mut forced = vec![f32::NEG_INFINITY; values.len()];
        forced[target] = 0.0;
        Tensor::from_vec(forced, values.len(), logits.device())
    }
}

/// `log_softmax(logits)[i]`, summed in f64 so that a 50k-entry vocabulary loses no precision.
pub fn log_softmax_at(logits: &[f32], i: usize) -> f32 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let sum: f64 = logits.iter().map(|&x| (x as f64 - max).exp()).sum();
    (logits[i] as f64 - max - sum.ln()) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_softmax_of_a_known_distribution() {
        // Logits ln(1), ln(2), ln(5): probabilities 1/8, 2/8, 5/8.
        let logits = [0.0f32, 2f32.ln(), 5f32.ln()];
        assert!((log_softmax_at(&logits, 0) - (0.125f32).ln()).abs() < 1e-6);
        assert!((log_softmax_at(&logits, 2) - (0.625f32).ln()).abs() < 1e-6);
        // Large logits do not overflow.
        assert!((log_softmax_at(&[1000.0, 1000.0], 1) - 0.5f32.ln()).abs() < 1e-6);
    }
}
