//! A differentiable Llama 3 (and Qwen3, the same decoder with q/k norms) on candle: what
//! `transformers` computes, with every position's logits, from a Hugging Face directory or a GGUF
//! file ([`BaseModel`]).

pub mod base;
pub mod config;
pub mod frozen;
pub mod fused;
pub mod gguf;
pub mod llama;
pub mod weights;

pub use base::BaseModel;
pub use config::{Architecture, LlamaConfig, RopeScaling};
pub use llama::{Llama, LoadOptions};

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{0}")]
    Config(String),
    #[error("{0}")]
    Weights(String),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}
