//! The gateway: the public Pipeline API that sequences Generate -> Analyze -> Revise ->
//! Finetune -> Evaluate over the other services, with its durable store, reports and exports.
//! It calls every model over gRPC and links none.

pub mod clients;
pub mod config;
pub mod export;
pub mod grpc;
pub mod pipeline;
pub mod report;
pub mod server;
pub mod store;
