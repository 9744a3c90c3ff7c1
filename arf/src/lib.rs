//! ARF in one process: the `arf` command line, the embedded suite (the four services on loopback,
//! talking real gRPC) and the in-process student host that serves fine-tuned students for
//! evaluation. This is the one crate that links every service; the deployable gateway links none.

pub mod cli;
pub mod student_host;
pub mod suite;
/// CreateRun's upload (in `arf_common`, which the gateway's benches share).
pub use arf_common::upload;
