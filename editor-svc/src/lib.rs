//! The editor service: a model hosted through mistral.rs, targeted revision, generic generation.

pub mod grpc;
