//! The trainer service: LoRA fine-tuning of a Llama student on candle.
//!
//! - [`model`]: a differentiable Llama (frozen base weights behind custom ops),
//! - [`lora`]: adapters, PEFT files and merged exports,
//! - [`train`]: the training loop with checkpoints and resume,
//! - [`jobs`]: the durable job queue behind the gRPC API ([`grpc`]).

pub mod grpc;
pub mod jobs;
pub mod lora;
pub mod model;
pub mod rng;
pub mod serve;
pub mod train;

/// The device training runs on: the first CUDA GPU when built with `cuda` and one is present.
pub fn device() -> candle_core::Device {
    #[cfg(feature = "cuda")]
    if let Ok(d) = candle_core::Device::new_cuda(0) {
        return d;
    }
    candle_core::Device::Cpu
}
