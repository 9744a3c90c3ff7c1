//! The output layer and cross-entropy in one op: `sum_i -log softmax(h_i W^T)[t_i]`, computed
//! a block of rows at a time, so neither the `n x vocab` logits nor their gradient ever exist
//! whole (`384 x 49,152` is 75 MB each for SmolLM2). The gradient of the hidden states is
//! computed in the forward pass, while each block's logits are at hand, and kept for the
//! backward pass: the block is never recomputed. `W` is frozen (tied embeddings included).

use std::sync::Mutex;

use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::bf16;
use super::exp::{exp_nonpositive, lane_sum};
use super::gemm::{Threads, matmul, rows, rows_mut};
use super::weight::{Weight, as_multiplied, with_weight};
use super::{threads, values};

/// Logit values per block (~32 MB).
const BLOCK_VALUES: usize = 8 << 20;

struct LmHeadLoss {
    /// `[vocab, hidden]`.
    weight: Tensor,
    targets: Vec<u32>,
    /// Whether to compute the hidden states' gradient (training) or only the loss.
    with_grad: bool,
    /// `d loss / d hidden`, `[n, hidden]`, set by the forward pass.
    grad: Mutex<Option<Vec<f32>>>,
}

impl LmHeadLoss {
    fn run(&self, h: &[f32], w: Weight<'_>, hidden: usize) -> Result<f32> {
        let n = h.len() / hidden;
        let vocab = w.rows(hidden);
        if let Some(t) = self.targets.iter().find(|&&t| t as usize >= vocab) {
            candle_core::bail!("loss: target {t} is outside the vocabulary of {vocab}");
        }
        let block = (BLOCK_VALUES / vocab).clamp(1, n.max(1));
        let mut logits = vec![0f32; block * vocab];
        let mut dh = if self.with_grad {
            vec![0f32; n * hidden]
        } else {
            Vec::new()
        };
        // A bf16 output layer, packed once for every block's gradient.
        let mut packed = None;
        let mut total = 0f64;
        for r0 in (0..n).step_by(block) {
            let m = block.min(n - r0);
            let h_block = &h[r0 * hidden..(r0 + m) * hidden];
            let logits = &mut logits[..m * vocab];
            match w {
                Weight::F32(w) => matmul(
                    rows_mut(logits, m, vocab, vocab),
                    rows(h_block, m, hidden, hidden),
                    rows(w, vocab, hidden, hidden).transpose(),
                    1.0,
                    false,
                    Threads::All,
                ),
                Weight::Bf16(w) => {
                    bf16::times_transposed_into(h_block, m, hidden, w, vocab, logits)
                }
            }
            let targets = &self.targets[r0..r0 + m];
            // Each row: its loss, and (training) softmax - one_hot(target) in place.
            let mut nll = vec![0f64; m];
            threads::for_each(
                logits
                    .par_chunks_mut(vocab)
                    .zip(targets.par_iter().zip(nll.par_iter_mut())),
                1,
                |(row, (&t, nll))| {
                    let max = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
                    let sum = lane_sum(row, |v| exp_nonpositive(v - max));
                    let lse = max + sum.ln();
                    *nll = f64::from(lse - row[t as usize]);
                    if self.with_grad {
                        for v in row.iter_mut() {
                            *v = exp_nonpositive(*v - lse);
                        }
                        row[t as usize] -= 1.0;
                    }
                },
            );
            total += nll.iter().sum::<f64>();
            if !self.with_grad {
                continue;
            }
            let dh_block = &mut dh[r0 * hidden..(r0 + m) * hidden];
            match w {
                Weight::F32(w) => matmul(
                    rows_mut(dh_block, m, hidden, hidden),
                    rows(logits, m, vocab, vocab),
                    rows(w, vocab, hidden, hidden),
                    1.0,
                    false,
                    Threads::All,
                ),
                Weight::Bf16(w) => {
                    let packed = packed.get_or_insert_with(|| bf16::pack(w, vocab, hidden));
                    dh_block.copy_from_slice(&bf16::times(logits, m, packed));
                }
            }
        }
        if self.with_grad {
            *self.grad.lock().expect("loss gradient lock") = Some(dh);
        }
        Ok(total as f32)
    }
}

impl CustomOp1 for LmHeadLoss {
    fn name(&self) -> &'static str {
        "fused-lm-head-loss"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let h = values(s, l, self.name())?;
        let (n, hidden) = l.shape().dims2()?;
        if n != self.targets.len() {
            candle_core::bail!("loss: {n} rows, {} targets", self.targets.len());
        }
        let loss = with_weight(&self.weight, self.name(), |w| self.run(h, w, hidden))?;
        Ok((CpuStorage::F32(vec![loss]), Shape::from(())))
    }

    fn bwd(&self, h: &Tensor, _loss: &Tensor, g: &Tensor) -> Result<Option<Tensor>> {
        let Some(dh) = self.grad.lock().expect("loss gradient lock").take() else {
            candle_core::bail!("loss: backward without a gradient from the forward pass")
        };
        let dh = Tensor::from_vec(dh, h.shape(), h.device())?;
        Ok(Some(dh.broadcast_mul(g)?))
    }
}

/// The summed cross-entropy of `hidden` (`[n, h]`, f32, CPU) through the frozen output layer
/// `weight` (`[vocab, h]`) against `targets` (`[n]`, u32).
pub fn lm_head_loss(hidden: &Tensor, weight: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let (n, h) = hidden.dims2()?;
    if weight.dim(1)? != h {
        candle_core::bail!(
            "loss: hidden {:?} vs output layer {:?}",
            hidden.dims(),
            weight.dims()
        );
    }
    let op = LmHeadLoss {
        weight: as_multiplied(weight)?.contiguous()?,
        targets: targets.flatten_all()?.to_vec1()?,
        with_grad: hidden.track_op(),
        grad: Mutex::new(None),
    };
    if op.targets.len() != n {
        candle_core::bail!("loss: {n} rows, {} targets", op.targets.len());
    }
    hidden.contiguous()?.apply_op1(op)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::fused::testing::assert_close;
    use crate::train::loss::cross_entropy_sum;
    use candle_core::{Device, Var};

    #[test]
    fn matches_logits_then_cross_entropy_over_several_blocks() -> Result<()> {
        let dev = Device::Cpu;
        // A vocabulary big enough that 40 rows take three blocks.
        let (n, h, vocab) = (40, 24, BLOCK_VALUES / 16);
        let hid = Var::randn(0f32, 1., (n, h), &dev)?;
        let w = Tensor::randn(0f32, 0.3, (vocab, h), &dev)?;
        let targets: Vec<u32> = (0..n as u32).map(|i| (i * 7919) % vocab as u32).collect();
        let targets = Tensor::new(targets.as_slice(), &dev)?;
        let ours = lm_head_loss(hid.as_tensor(), &w, &targets)?;
        let plain = cross_entropy_sum(&hid.as_tensor().matmul(&w.t()?)?, &targets)?;
        assert_close("loss", &ours, &plain, 1e-5)?;
        let g_ours = (ours * 0.5)?.backward()?;
        let g_plain = (plain * 0.5)?.backward()?;
        // Half a million vocabulary terms summed in f32, in another order: ~3e-5 apart.
        assert_close(
            "dh",
            g_ours.get(&hid).unwrap(),
            g_plain.get(&hid).unwrap(),
            1e-4,
        )
    }

    #[test]
    fn a_target_outside_the_vocabulary_is_an_error() -> Result<()> {
        let dev = Device::Cpu;
        let hid = Tensor::zeros((1, 4), candle_core::DType::F32, &dev)?;
        let w = Tensor::zeros((3, 4), candle_core::DType::F32, &dev)?;
        let err = lm_head_loss(&hid, &w, &Tensor::new(&[3u32], &dev)?).unwrap_err();
        assert!(err.to_string().contains("outside the vocabulary"), "{err}");
        Ok(())
    }
}
