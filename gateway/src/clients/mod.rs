//! The gateway's clients of the other services, one small typed client per service, all built
//! from the one [`ClientOptions`] the pipeline owns: every call carries the gateway's TLS
//! settings, bearer token and deadline (TGI's router keeps its `ShardedClient` the same way).

mod analyzer;
mod editors;
pub mod faults;
mod trainer;

use arf_common::client::{ClientOptions, GrpcChannel, connect_lazy};
use arf_proto::v1::editor_client::EditorClient;

pub use analyzer::{Analyzer, first_unsupported};
pub use editors::{EditorPool, Resolve, SystemResolver};
pub use trainer::{Chunker, Trainer};

/// Where the other services are.
#[derive(Debug, Clone)]
pub struct Endpoints {
    pub analyzer: String,
    /// Editor replicas: revisions (and judge ratings) are spread over them by load.
    pub editors: Vec<String>,
    /// Write the summaries rows lack (Generate); the editor replicas when empty.
    pub teachers: Vec<String>,
    pub trainer: String,
}

/// The services a run calls.
#[derive(Clone)]
pub struct Clients {
    options: ClientOptions,
    max_message_bytes: usize,
    pub analyzer: Analyzer,
    pub editors: EditorPool,
    pub trainer: Trainer,
    pub teacher: Option<EditorPool>,
}

impl Clients {
    /// Lazily connected: the other services may start after the gateway.
    pub fn connect(
        endpoints: &Endpoints,
        options: ClientOptions,
        max_message_bytes: usize,
    ) -> anyhow::Result<Self> {
        let teacher = if endpoints.teachers.is_empty() {
            None
        } else {
            Some(EditorPool::connect(
                &endpoints.teachers,
                &options,
                max_message_bytes,
            )?)
        };
        Ok(Self {
            analyzer: Analyzer::connect(&endpoints.analyzer, &options, max_message_bytes)?,
            editors: EditorPool::connect(&endpoints.editors, &options, max_message_bytes)?,
            trainer: Trainer::connect(&endpoints.trainer, &options, max_message_bytes)?,
            teacher,
            options,
            max_message_bytes,
        })
    }

    /// A student that a run names (`evaluation.student_endpoint`): called like every other
    /// service, with the gateway's TLS, token and deadline.
    pub fn student(&self, endpoint: &str) -> anyhow::Result<EditorClient<GrpcChannel>> {
        Ok(self.student_over(connect_lazy(endpoint, &self.options)?))
    }

    /// A student over a channel the caller made (one the gateway's student host serves).
    pub fn student_over(&self, channel: GrpcChannel) -> EditorClient<GrpcChannel> {
        EditorClient::new(channel).max_decoding_message_size(self.max_message_bytes)
    }
}
