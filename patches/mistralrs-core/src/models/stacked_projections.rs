//! ARF patch: projections of the same input (q, k and v; gate and up) as one quantized matmul
//! over their weight rows stacked, on a CPU.
//!
//! Each matmul on a CPU is a parallel region of its own (the activation quantized to Q8_1, rayon
//! tasks of 16 weight rows, a join): seven per layer, ~210 per decoded token for SmolLM2's 30
//! layers, each a few microseconds of hand-off and an activation quantized again. Stacked, q, k
//! and v are one region and gate and up another. Every output is the same row-by-row dot product
//! of the same operands as before, so decoding gives the same numbers; a prompt's dequantized
//! tiles (16 or more rows) are cut from the stacked rows instead of from each matrix alone.

use std::borrow::Cow;
use std::sync::Arc;

use candle_core::quantized::{QStorage, QTensor};
use candle_core::{Device, Result, Tensor, D};
use mistralrs_quant::{GgufMatMul, QuantMethod, QuantMethodConfig};

use crate::layers::MatMul;

pub(crate) enum Projections {
    /// One matmul per weight (not on a CPU, or the weights differ in format or width).
    Separate(Vec<Arc<dyn QuantMethod>>),
    /// The weights' rows stacked; `rows[i]` outputs belong to the `i`-th projection.
    Stacked {
        weight: Arc<dyn QuantMethod>,
        rows: Vec<usize>,
    },
}

fn gguf_matmul(weight: QTensor) -> Result<Arc<dyn QuantMethod>> {
    Ok(Arc::new(GgufMatMul::new(QuantMethodConfig::Gguf {
        q_weight: Arc::new(weight),
        b: None,
    })?))
}

impl Projections {
    /// `weights`: `[out_i, in]` each, all of the same input.
    pub(crate) fn new(weights: Vec<QTensor>) -> Result<Self> {
        let stackable = weights.len() > 1
            && weights.iter().all(|w| {
                matches!(w.device(), Device::Cpu)
                    && w.dtype() == weights[0].dtype()
                    && w.shape().dims().len() == 2
                    && w.shape().dims()[1] == weights[0].shape().dims()[1]
            });
        if !stackable {
            return Ok(Self::Separate(
                weights.into_iter().map(gguf_matmul).collect::<Result<_>>()?,
            ));
        }
        let columns = weights[0].shape().dims()[1];
        let rows: Vec<usize> = weights.iter().map(|w| w.shape().dims()[0]).collect();
        let mut bytes = Vec::new();
        for w in &weights {
            bytes.extend_from_slice(&w.data()?);
        }
        let dtype = weights[0].dtype();
        drop(weights);
        // Borrowed, not owned: candle's `from_data` reads the bytes through a slice of its
        // argument and copies them, so owned bytes would be freed before the copy.
        let storage = QStorage::from_data(Cow::Borrowed(&bytes), &Device::Cpu, dtype)?;
        let stacked = QTensor::new(storage, (rows.iter().sum::<usize>(), columns))?;
        Ok(Self::Stacked {
            weight: gguf_matmul(stacked)?,
            rows,
        })
    }

    /// Each projection of `x` (`[.., in]` to `[.., out_i]`), contiguous, in the order given to
    /// [`Projections::new`]; `N` is how many were given.
    pub(crate) fn forward<const N: usize>(&self, x: &Tensor) -> Result<[Tensor; N]> {
        let outputs: Vec<Tensor> = match self {
            Self::Separate(weights) => weights
                .iter()
                .map(|w| MatMul.qmethod_matmul(x, &**w))
                .collect::<Result<_>>()?,
            Self::Stacked { weight, rows } => {
                let all = MatMul.qmethod_matmul(x, &**weight)?;
                let mut start = 0;
                rows.iter()
                    .map(|&n| {
                        let part = all.narrow(D::Minus1, start, n)?.contiguous();
                        start += n;
                        part
                    })
                    .collect::<Result<_>>()?
            }
        };
        let count = outputs.len();
        outputs
            .try_into()
            .map_err(|_| candle_core::Error::Msg(format!("{count} projections, {N} asked for")))
    }
}
