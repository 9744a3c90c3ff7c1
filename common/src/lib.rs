//! What every ARF service shares, and nothing a single service owns: the server bootstrap,
//! clients, telemetry, configuration, deadlines, error details, the dataset model, and
//! CreateRun's upload as its clients make it.

pub mod body_guard;
pub mod bounds;
pub mod client;
pub mod config;
pub mod cpu;
pub mod dataset;
pub mod deadline;
/// llama.cpp's server for the tests and benches that forward to it (feature `testing`).
#[cfg(feature = "testing")]
pub mod llama_cpp;
pub mod machine_peak;
pub mod models;
pub mod paging;
pub mod paths;
pub mod privacy;
pub mod process;
pub mod server;
pub mod splice;
pub mod status;
pub mod telemetry;
/// A certificate authority for the tests of TLS (feature `testing`).
#[cfg(feature = "testing")]
pub mod test_ca;
pub mod upload;
