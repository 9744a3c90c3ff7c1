//! The analyzer as a server process: what `analyzer-svc` and `arf analyzer` run.

use std::path::PathBuf;

use crate::grpc::AnalyzerService;
use crate::{Analyzer, Limits};
use arf_common::client::{ClientOptions, connect_lazy};
use arf_common::config::{Secret, ServerArgs};
use arf_proto::service_names::ANALYZER;
use tonic::service::Routes;

/// Finds and categorizes the errors of teacher summaries.
#[derive(clap::Args, Debug, Clone)]
pub struct ServeArgs {
    #[command(flatten)]
    pub server: ServerArgs,

    /// Editor endpoint (http[s]://host:port) for the model-judged detectors; without it they are refused.
    #[arg(long, env = "ARF_JUDGE_ENDPOINT")]
    pub judge_endpoint: Option<String>,

    /// Bearer token for the judge endpoint.
    #[arg(long, env = "ARF_JUDGE_TOKEN", hide_env_values = true)]
    pub judge_token: Option<Secret>,

    /// PEM CA bundle to verify the judge endpoint's certificate.
    #[arg(long, env = "ARF_JUDGE_TLS_CA")]
    pub judge_tls_ca: Option<PathBuf>,

    /// PEM client certificate presented to the judge endpoint, for mutual TLS (with
    /// --judge-tls-key).
    #[arg(long, env = "ARF_JUDGE_TLS_CERT", requires = "judge_tls_key")]
    pub judge_tls_cert: Option<PathBuf>,

    /// PEM private key of --judge-tls-cert.
    #[arg(long, env = "ARF_JUDGE_TLS_KEY", requires = "judge_tls_cert")]
    pub judge_tls_key: Option<PathBuf>,

    /// Largest summary accepted, in bytes.
    #[arg(long, env = "ARF_MAX_SUMMARY_BYTES", default_value_t = Limits::default().max_summary_bytes)]
    pub max_summary_bytes: usize,

    /// Largest conversation accepted (all turns), in bytes.
    #[arg(long, env = "ARF_MAX_CONVERSATION_BYTES", default_value_t = Limits::default().max_conversation_bytes)]
    pub max_conversation_bytes: usize,
}

/// Serves until SIGTERM or SIGINT (then drains).
pub async fn run(args: &ServeArgs) -> std::process::ExitCode {
    arf_common::server::run_binary(
        "arf-analyzer",
        &[ANALYZER],
        arf_proto::default_ports::ANALYZER,
        &args.server,
        args,
        |health, shutdown| async move {
            let judge = match &args.judge_endpoint {
                Some(endpoint) => {
                    let options = ClientOptions {
                        auth_token: args.judge_token.clone(),
                        tls_ca: args.judge_tls_ca.clone(),
                        tls_identity: args.judge_tls_cert.clone().zip(args.judge_tls_key.clone()),
                        ..Default::default()
                    };
                    Some(connect_lazy(endpoint, &options)?)
                }
                None => None,
            };
            let limits = Limits {
                max_summary_bytes: args.max_summary_bytes,
                max_conversation_bytes: args.max_conversation_bytes,
                ..Limits::default()
            };
            let service = AnalyzerService::new(
                Analyzer::new(limits),
                judge,
                args.server.max_message_bytes,
                shutdown,
            );
            health.set_serving(ANALYZER, true).await;
            Ok(Routes::new(
                service.into_server(args.server.max_message_bytes),
            ))
        },
    )
    .await
}

/// The analyzer on `listener`, in this process, with its model-judged detectors asking the
/// editor at `judge_endpoint` (the embedded suite, tests and benches; tests restart it on the
/// same port to stand for an analyzer that restarts).
pub async fn serve_on(
    args: &ServerArgs,
    judge_endpoint: &str,
    listener: tokio::net::TcpListener,
    shutdown: tokio_util::sync::CancellationToken,
) -> anyhow::Result<arf_common::server::RunningServer> {
    let limit = args.max_message_bytes;
    let judge = connect_lazy(judge_endpoint, &ClientOptions::default())?;
    let service = AnalyzerService::new(Default::default(), Some(judge), limit, shutdown);
    let health = arf_common::server::Health::new(&[ANALYZER]).await;
    health.set_serving(ANALYZER, true).await;
    arf_common::server::serve_on(
        listener,
        args,
        health,
        Routes::new(service.into_server(limit)),
        tokio_util::sync::CancellationToken::new(),
    )
    .await
}
