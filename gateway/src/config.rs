//! The gateway's configuration: where the other services are and where state lives.

use std::path::PathBuf;
use std::time::Duration;

use arf_common::client::ClientOptions;
use arf_common::config::Secret;
use arf_proto::default_ports::{self, loopback};

use arf_common::paths::PathRoots;

use crate::clients::{Clients, Endpoints};
use crate::pipeline::ClientPaths;
use crate::store::{STORE_FILE, StoreLocation};

/// A revision by a 70B model is slow: ten minutes per call before the gateway gives up.
pub const DEFAULT_DOWNSTREAM_TIMEOUT_SECS: u64 = 600;

#[derive(clap::Args, Debug, Clone)]
pub struct GatewayArgs {
    /// Folder for the SQLite database, reports and exports.
    #[arg(long, env = "ARF_DATA_DIR", default_value = "arf-data")]
    pub data_dir: PathBuf,

    /// Where runs are kept: `sqlite` (the file under --data-dir, one gateway), another file
    /// (`sqlite:///path`), or a PostgreSQL database that several gateways share
    /// (`postgres://user:password@host:5432/arf`; `?sslmode=require` for TLS).
    #[arg(
        long,
        env = "ARF_STORE",
        default_value = "sqlite",
        hide_env_values = true
    )]
    pub store: String,

    /// This gateway's name in the runs' leases; unique among the gateways on one database (the
    /// pod's name). Default: host name, process id and a random suffix.
    #[arg(long, env = "ARF_GATEWAY_ID")]
    pub gateway_id: Option<String>,

    /// How long a gateway's lease of a run lasts without a heartbeat (one every third of it):
    /// when a gateway dies, another takes its runs over after this.
    #[arg(long, env = "ARF_LEASE_SECS", default_value_t = 15.0)]
    pub lease_secs: f64,

    /// Analyzer endpoint.
    #[arg(
        long,
        env = "ARF_ANALYZER_ENDPOINT",
        default_value_t = loopback(default_ports::ANALYZER)
    )]
    pub analyzer: String,

    /// Editor replicas (comma-separated or repeated): revision calls are spread over them by
    /// load. `dns:///name:port` stands for every A/AAAA record of the name (a Kubernetes
    /// headless Service), resolved again every --editor-resolve-secs.
    #[arg(
        long = "editor",
        env = "ARF_EDITOR_ENDPOINTS",
        value_delimiter = ',',
        default_values_t = [loopback(default_ports::EDITOR)]
    )]
    pub editors: Vec<String>,

    /// How often `dns:///name:port` editor (and teacher) endpoints are resolved again, in
    /// seconds: replicas that appear join the pool, replicas that vanish leave it.
    #[arg(long, env = "ARF_EDITOR_RESOLVE_SECS", default_value_t = 10)]
    pub editor_resolve_secs: u64,

    /// Teacher endpoints (any Editor; comma-separated or repeated): the Generate stage asks
    /// them for the summaries rows lack. Without any, the editor replicas write them.
    #[arg(long = "teacher", env = "ARF_TEACHER_ENDPOINTS", value_delimiter = ',')]
    pub teachers: Vec<String>,

    /// Trainer endpoint.
    #[arg(
        long,
        env = "ARF_TRAINER_ENDPOINT",
        default_value_t = loopback(default_ports::TRAINER)
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

    /// PEM client certificate the gateway presents to the other services, for mutual TLS
    /// (with --downstream-tls-key).
    #[arg(long, env = "ARF_DOWNSTREAM_TLS_CERT", requires = "downstream_tls_key")]
    pub downstream_tls_cert: Option<PathBuf>,

    /// PEM private key of --downstream-tls-cert.
    #[arg(long, env = "ARF_DOWNSTREAM_TLS_KEY", requires = "downstream_tls_cert")]
    pub downstream_tls_key: Option<PathBuf>,

    /// Deadline of one call to another service, in seconds (a revision by a 70B model is slow).
    #[arg(long, env = "ARF_DOWNSTREAM_TIMEOUT_SECS", default_value_t = DEFAULT_DOWNSTREAM_TIMEOUT_SECS)]
    pub downstream_timeout_secs: u64,

    /// Folders under which a run's `dataset_path` may name a file on this machine (repeat or
    /// comma-separate). None: runs must stream their rows. Outside: PERMISSION_DENIED.
    #[arg(
        long = "dataset-root",
        env = "ARF_DATASET_ROOTS",
        value_delimiter = ','
    )]
    pub dataset_roots: Vec<PathBuf>,

    /// Folders under which a run's `student_base_model_dir` may be (the trainer checks its own
    /// `--model-root` too). None: runs use the gateway's --student-base.
    #[arg(long = "model-root", env = "ARF_MODEL_ROOTS", value_delimiter = ',')]
    pub model_roots: Vec<PathBuf>,

    /// Editor endpoints that a run may name as its `evaluation.student_endpoint` (repeat or
    /// comma-separate): the gateway calls them with its TLS settings and token. Any other is
    /// PERMISSION_DENIED.
    #[arg(
        long = "student-endpoint",
        env = "ARF_STUDENT_ENDPOINTS",
        value_delimiter = ','
    )]
    pub student_endpoints: Vec<String>,
}

/// The gateway's configuration, checked: made from its flags by [`GatewayArgs::into_config`],
/// or by [`GatewayConfig::local`] for a gateway whose client is its operator.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Reports and exports (and the SQLite file, by default).
    pub data_dir: PathBuf,
    pub store: StoreLocation,
    /// This gateway's name in the runs' leases.
    pub gateway_id: String,
    pub lease: Duration,
    pub endpoints: Endpoints,
    /// How often `dns:///` endpoints are resolved again.
    pub resolve_every: Duration,
    /// The student base model for runs that name none.
    pub student_base: Option<PathBuf>,
    /// TLS, token and deadline of every call to another service.
    pub downstream: ClientOptions,
    /// What a client may name.
    pub client_paths: ClientPaths,
}

impl GatewayArgs {
    /// The checked configuration: the store's location, the lease, the client paths.
    pub fn into_config(&self) -> anyhow::Result<GatewayConfig> {
        anyhow::ensure!(
            self.lease_secs.is_finite() && (1.0..=3600.0).contains(&self.lease_secs),
            "--lease-secs {} must be between 1 and 3600",
            self.lease_secs
        );
        Ok(GatewayConfig {
            store: StoreLocation::parse(&self.store, &self.data_dir.join(STORE_FILE))?,
            data_dir: self.data_dir.clone(),
            gateway_id: gateway_id(self.gateway_id.as_deref()),
            lease: Duration::from_secs_f64(self.lease_secs),
            endpoints: Endpoints {
                analyzer: self.analyzer.clone(),
                editors: self.editors.clone(),
                teachers: self.teachers.clone(),
                trainer: self.trainer.clone(),
            },
            resolve_every: Duration::from_secs(self.editor_resolve_secs.max(1)),
            student_base: self.student_base.clone(),
            downstream: ClientOptions {
                tls_ca: self.downstream_tls_ca.clone(),
                tls_identity: self
                    .downstream_tls_cert
                    .clone()
                    .zip(self.downstream_tls_key.clone()),
                auth_token: self.downstream_token.clone(),
                default_timeout: Some(Duration::from_secs(self.downstream_timeout_secs)),
                ..Default::default()
            },
            client_paths: ClientPaths {
                datasets: PathRoots::only(&self.dataset_roots, "--dataset-root"),
                models: PathRoots::only(&self.model_roots, "--model-root"),
                student_endpoints: Some(self.student_endpoints.clone()),
            },
        })
    }
}

impl GatewayConfig {
    /// A gateway on a SQLite file under `data_dir` over services at `endpoints`, without TLS
    /// or tokens, reading any file and calling any student endpoint a client names: for the
    /// embedded suite and tests, whose client is their operator.
    pub fn local(data_dir: PathBuf, endpoints: Endpoints) -> Self {
        Self {
            store: StoreLocation::Sqlite(data_dir.join(STORE_FILE)),
            data_dir,
            gateway_id: gateway_id(None),
            lease: Duration::from_secs(15),
            endpoints,
            resolve_every: Duration::from_secs(10),
            student_base: None,
            downstream: ClientOptions {
                default_timeout: Some(Duration::from_secs(DEFAULT_DOWNSTREAM_TIMEOUT_SECS)),
                ..Default::default()
            },
            client_paths: ClientPaths {
                datasets: PathRoots::any("--dataset-root"),
                models: PathRoots::any("--model-root"),
                student_endpoints: None,
            },
        }
    }

    /// Lazily connected clients: the other services may start after the gateway.
    pub fn clients(&self, max_message_bytes: usize) -> anyhow::Result<Clients> {
        Clients::connect(&self.endpoints, self.downstream.clone(), max_message_bytes)
    }
}

/// `--gateway-id`, or a name no other process has: host name, process id, a random suffix.
fn gateway_id(flag: Option<&str>) -> String {
    if let Some(id) = flag.map(str::trim).filter(|id| !id.is_empty()) {
        return id.to_string();
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "gateway".into());
    format!(
        "{host}-{}-{:04x}",
        std::process::id(),
        rand::random::<u16>()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        gateway: GatewayArgs,
    }

    /// The client certificate for mutual TLS reaches the options every downstream client (the
    /// students a run names included) is built from; half of the pair is refused.
    #[test]
    fn a_downstream_client_certificate_comes_with_its_key() {
        let cli = Cli::try_parse_from([
            "gateway",
            "--downstream-tls-cert",
            "client.pem",
            "--downstream-tls-key",
            "client.key",
        ])
        .unwrap();
        assert_eq!(
            cli.gateway.into_config().unwrap().downstream.tls_identity,
            Some((PathBuf::from("client.pem"), PathBuf::from("client.key")))
        );
        assert!(Cli::try_parse_from(["gateway", "--downstream-tls-cert", "client.pem"]).is_err());
    }
}
