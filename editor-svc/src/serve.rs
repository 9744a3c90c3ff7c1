//! The editor as a server process: what `editor-svc` and `arf editor` run.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use arf_common::config::ServerArgs;
use arf_proto::service_names::EDITOR;
use tonic::service::Routes;

use crate::http::HttpServer;
use crate::{EditorArgs, start_editor};

/// Revises summaries and generates text with a hosted model.
#[derive(clap::Args, Debug, Clone)]
pub struct ServeArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    #[command(flatten)]
    pub editor: EditorArgs,
    /// Also serve the model over the OpenAI HTTP API here (`/v1/chat/completions`,
    /// `/v1/models`, `/health`), with the same bearer token, limits and telemetry as gRPC.
    /// HTTPS with --tls-cert (client certificates with --tls-client-ca), else plain HTTP; beyond
    /// loopback it needs --auth-token or --tls-client-ca (or --allow-unauthenticated).
    #[arg(long, env = "ARF_HTTP_LISTEN")]
    pub http_listen: Option<SocketAddr>,
}

/// Serves until SIGTERM or SIGINT (then drains). A model that cannot load ends the process
/// with a failure: a replica that can never serve should not linger.
pub async fn run(args: ServeArgs) -> std::process::ExitCode {
    let load_failed = Arc::new(AtomicBool::new(false));
    let failed = load_failed.clone();
    let http: Arc<Mutex<Option<HttpServer>>> = Arc::default();
    let http_slot = http.clone();
    let (editor_args, server_args) = (args.editor.clone(), args.server.clone());
    let http_listen = args.http_listen;
    let code = arf_common::server::run_binary(
        "arf-editor",
        &[EDITOR],
        arf_proto::default_ports::EDITOR,
        &args.server,
        &args,
        |health, shutdown| async move {
            let config = editor_args.into_config()?;
            let (service, loading) = start_editor(config)?;
            if let Some(addr) = http_listen {
                check_http_exposure(addr, &server_args)?;
                let listener = tokio::net::TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("cannot listen on {addr} (--http-listen)"))?;
                let router = crate::http::router(service.clone(), &server_args);
                let server =
                    crate::http::serve_as(listener, router, &server_args, shutdown.clone())?;
                *http_slot.lock().expect("not poisoned") = Some(server);
            }
            // Load in the background so health answers (NOT_SERVING) meanwhile.
            tokio::spawn(async move {
                if let Err(e) = loading.then_serving(&health).await {
                    tracing::error!("the model failed to load: {e:#}");
                    failed.store(true, Ordering::SeqCst);
                    shutdown.cancel();
                }
            });
            Ok(Routes::new(
                service.into_server(args.server.max_message_bytes),
            ))
        },
    )
    .await;
    // gRPC has drained; the HTTP server was told to stop at the same moment.
    let server = http.lock().expect("not poisoned").take();
    if let Some(server) = server
        && let Err(e) = tokio::time::timeout(args.server.shutdown_grace(), server.stopped())
            .await
            .unwrap_or(Ok(()))
    {
        eprintln!("error: the HTTP server: {e:#}");
    }
    if load_failed.load(Ordering::SeqCst) {
        std::process::ExitCode::FAILURE
    } else {
        code
    }
}

/// The API beyond loopback without a token or client certificates would let anyone on the
/// network use the model.
fn check_http_exposure(addr: SocketAddr, server: &ServerArgs) -> anyhow::Result<()> {
    if addr.ip().is_loopback() || server.auth_token.is_some() || server.tls_client_ca.is_some() {
        return Ok(());
    }
    anyhow::ensure!(
        server.allow_unauthenticated,
        "refusing to serve the OpenAI HTTP API on {addr} without --auth-token: anyone who can reach \
         it could use the model. Set --auth-token (or ARF_AUTH_TOKEN), or --http-listen 127.0.0.1:PORT; \
         --allow-unauthenticated if you mean it"
    );
    tracing::warn!(%addr, "SERVING THE OPENAI HTTP API WITHOUT AUTHENTICATION beyond loopback");
    Ok(())
}
