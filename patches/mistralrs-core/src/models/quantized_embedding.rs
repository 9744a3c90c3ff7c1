//! ARF patch: token embeddings kept as the GGUF stores them; a forward pass dequantizes only
//! the rows it looks up.
//!
//! Upstream dequantized the whole table to f32 when it loaded: SmolLM2-135M's 49,152 x 576 Q8_0
//! table (29 MB) became 113 MB, held for the model's life to read a few rows per step, and a
//! tied output layer loaded the quantized table a second time beside it. A row dequantizes with
//! the same block arithmetic as the whole table, so the embeddings are bit-identical.

use std::borrow::Cow;
use std::sync::Arc;

use candle_core::quantized::{GgmlDType, QStorage, QTensor};
use candle_core::{Device, Module, Result, Tensor};
use candle_nn::Embedding;

pub enum TokenEmbedding {
    /// Off a CPU (or an unquantized table): the dequantized table, as upstream.
    Dense(Embedding),
    /// On a CPU: the table as loaded, `(vocab, hidden)`.
    Quantized(Arc<QTensor>),
}

impl TokenEmbedding {
    pub fn new(table: Arc<QTensor>, device: &Device) -> Result<Self> {
        let (_, hidden) = table.shape().dims2()?;
        if device.is_cpu() && !matches!(table.dtype(), GgmlDType::F32 | GgmlDType::F16) {
            Ok(Self::Quantized(table))
        } else {
            Ok(Self::Dense(Embedding::new(
                table.dequantize(device)?,
                hidden,
            )))
        }
    }
}

impl Module for TokenEmbedding {
    fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        let table = match self {
            Self::Dense(embedding) => return embedding.forward(ids),
            Self::Quantized(table) => table,
        };
        let (vocab, hidden) = table.shape().dims2()?;
        let data = table.data()?;
        let row_bytes = data.len() / vocab;
        let picked = ids.flatten_all()?.to_vec1::<u32>()?;
        let mut rows = Vec::with_capacity(picked.len() * row_bytes);
        for &id in &picked {
            let id = id as usize;
            if id >= vocab {
                candle_core::bail!("token id {id} is outside the vocabulary of {vocab}");
            }
            rows.extend_from_slice(&data[id * row_bytes..(id + 1) * row_bytes]);
        }
        // Borrowed: `QStorage::from_data` with an owned `Cow` reads the bytes after freeing them
        // (patches/README.md, stacked projections).
        let storage = QStorage::from_data(Cow::Borrowed(&rows), &Device::Cpu, table.dtype())?;
        let mut dims = ids.dims().to_vec();
        dims.push(hidden);
        QTensor::new(storage, (picked.len(), hidden))?
            .dequantize(&Device::Cpu)?
            .reshape(dims)
    }
}
