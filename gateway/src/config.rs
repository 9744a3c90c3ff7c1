//! The gateway's configuration: where the other services are and where state lives.

use std::path::PathBuf;
use std::time::Duration;

use arf_common::client::{ClientOptions, connect_lazy};
use arf_common::config::Secret;
use arf_proto::v1::analyzer_client::AnalyzerClient;
use arf_proto::v1::trainer_client::TrainerClient;

use crate::editors::EditorPool;
use crate::pipeline::Clients;

#[derive(clap::Args, Debug, Clone)]
pub struct GatewayArgs {
    /// Folder for the SQLite database, reports and exports.
    #[arg(long, env = "ARF_DATA_DIR", default_value = "arf-data")]
    pub data_dir: PathBuf,

    /// Analyzer endpoint.
    #[arg(
        long,
        env = "ARF_ANALYZER_ENDPOINT",
        default_value = "http://127.0.0.1:50051"
    )]
    pub analyzer: String,

    /// Editor replicas (comma-separated or repeated): revision calls are spread over them by load.
    #[arg(
        long = "editor",
        env = "ARF_EDITOR_ENDPOINTS",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:50052"
    )]
    pub editors: Vec<String>,

    /// Teacher endpoints (any Editor; comma-separated or repeated): the Generate stage asks
    /// them for the summaries rows lack. Without any, the editor replicas write them.
    #[arg(long = "teacher", env = "ARF_TEACHER_ENDPOINTS", value_delimiter = ',')]
    pub teachers: Vec<String>,

    /// Trainer endpoint.
    #[arg(
        long,
        env = "ARF_TRAINER_ENDPOINT",
        default_value = "http://127.0.0.1:50053"
    )]
    pub trainer: String,

    /// Student base model (a directory or a .gguf file, on the trainer's machine) for runs that
    /// name none.
    #[arg(long, env = "ARF_STUDENT_BASE")]
    pub student_base: Option<PathBuf>,

    /// Bearer token the gateway presents to the other services.
    #[arg(long, env = "ARF_DOWNSTREAM_TOKEN", hide_env_values = true)]
    pub downstream_token: Option<Secret>,

    /// PEM CA bundle to verify the other services' certificates.
    #[arg(long, env = "ARF_DOWNSTREAM_TLS_CA")]
    pub downstream_tls_ca: Option<PathBuf>,

    /// Deadline of one call to another service, in seconds (a revision by a 70B model is slow).
    #[arg(long, env = "ARF_DOWNSTREAM_TIMEOUT_SECS", default_value_t = 600)]
    pub downstream_timeout_secs: u64,
}

impl GatewayArgs {
    pub fn client_options(&self) -> ClientOptions {
        ClientOptions {
            tls_ca: self.downstream_tls_ca.clone(),
            auth_token: self.downstream_token.clone(),
            default_timeout: Some(Duration::from_secs(self.downstream_timeout_secs)),
            ..Default::default()
        }
    }

    /// Lazily connected clients: the other services may start after the gateway.
    pub fn clients(&self, max_message_bytes: usize) -> anyhow::Result<Clients> {
        let options = self.client_options();
        Ok(Clients {
            analyzer: AnalyzerClient::new(connect_lazy(&self.analyzer, &options)?)
                .max_decoding_message_size(max_message_bytes),
            editors: EditorPool::connect(&self.editors, &options, max_message_bytes)?,
            trainer: TrainerClient::new(connect_lazy(&self.trainer, &options)?)
                .max_decoding_message_size(max_message_bytes),
            teacher: if self.teachers.is_empty() {
                None
            } else {
                Some(EditorPool::connect(
                    &self.teachers,
                    &options,
                    max_message_bytes,
                )?)
            },
        })
    }
}
