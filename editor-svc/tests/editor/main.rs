//! editor-svc's integration tests, one binary (each test file a module): every test binary
//! links the whole dependency tree, and on two cores each link costs minutes.

#[path = "../support/mod.rs"]
mod support;

mod generate;
mod gguf;
mod llama_server;
mod model_layouts;
mod openai_api;
mod quantized_kernels;
mod revise;
mod serving;
