//! trainer-svc's integration tests, one binary (each test file a module): every test binary
//! links the whole dependency tree, and on two cores each link costs minutes.

#[path = "../common/mod.rs"]
mod common;

mod gguf_base;
mod jobs_api;
mod reference;
mod training;
