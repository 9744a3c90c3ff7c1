//! Cross-entropy in f32, written here because candle's has no mask: the trainer selects the
//! rows that carry a target (the assistant's tokens) and sums their negative log-likelihood.

use candle_core::{D, DType, Result, Tensor};

/// `sum_i -log softmax(logits_i)[target_i]` over the rows of `logits` (`[n, vocab]`),
/// `targets` being `[n]` u32.
pub fn cross_entropy_sum(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let logits = logits.to_dtype(DType::F32)?;
    // log-sum-exp with the max shifted out; the shift is a constant for the gradient.
    let max = logits.max_keepdim(D::Minus1)?.detach();
    let shifted = logits.broadcast_sub(&max)?;
    let lse = shifted.exp()?.sum_keepdim(D::Minus1)?.log()?;
    let picked = shifted.gather(&targets.contiguous()?.unsqueeze(1)?, 1)?;
    (lse - picked)?.sum_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn matches_the_textbook_value() -> Result<()> {
        let logits = Tensor::new(&[[1f32, 2., 3.], [0., 0., 0.]], &Device::Cpu)?;
        let targets = Tensor::new(&[2u32, 0], &Device::Cpu)?;
        let got = cross_entropy_sum(&logits, &targets)?.to_scalar::<f32>()?;
        let want = -(3f32.exp() / (1f32.exp() + 2f32.exp() + 3f32.exp())).ln() + 3f32.ln();
        assert!((got - want).abs() < 1e-5, "{got} vs {want}");
        Ok(())
    }
}
