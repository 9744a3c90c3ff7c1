//! The gateway: the public Pipeline API that sequences Analyze -> Revise -> Finetune -> Evaluate.

pub mod grpc;
pub mod suite;
