//! The gateway: the public Pipeline API that sequences Analyze -> Revise -> Finetune -> Evaluate.

pub mod cli;
pub mod config;
pub mod editors;
pub mod export;
pub mod grpc;
pub mod pipeline;
pub mod report;
pub mod store;
pub mod student;
pub mod suite;
