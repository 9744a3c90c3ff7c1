//! The trainer service: LoRA fine-tuning of a Llama student on candle.

pub mod grpc;
