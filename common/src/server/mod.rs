//! The bootstrap every ARF server runs: health, reflection, limits, auth, TLS, telemetry and
//! graceful shutdown, around the service routes a binary hands it.

mod auth;
mod health;
mod https;
mod load_shed;
pub mod watch;

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Certificate, Identity, ServerTlsConfig};
use tower::ServiceBuilder;

/// The stream a server-streaming RPC answers with.
pub type ResponseStream<T> =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<T, tonic::Status>> + Send>>;

pub use auth::{BearerAuthLayer, constant_time_eq};
pub use health::Health;
pub use https::rustls_server_config;
pub use load_shed::LoadShedLayer;

use crate::config::ServerArgs;
use crate::telemetry::ServerTelemetryLayer;

/// How long a refused call is told to wait before it retries.
const RETRY_AFTER_OVERLOAD: Duration = Duration::from_millis(200);

/// A server that is accepting calls.
pub struct RunningServer {
    addr: SocketAddr,
    /// The plaintext health-only listener (`--health-listen`), if any.
    health_addr: Option<SocketAddr>,
    health: Health,
    shutdown: CancellationToken,
    grace: Duration,
    task: JoinHandle<Result<(), tonic::transport::Error>>,
}

/// Binds the listener and starts serving `routes` (the service's own gRPC services) with health,
/// reflection (listing only `health.services()`), and the layer stack:
/// telemetry (outermost, so refused calls are traced too) -> auth -> load shedding -> handler.
/// `shutdown` is cancelled when shutdown begins; streams that could run forever end on it.
pub async fn serve(
    args: &ServerArgs,
    default_port: u16,
    health: Health,
    routes: Routes,
    shutdown: CancellationToken,
) -> anyhow::Result<RunningServer> {
    let addr = args.listen_or(default_port);
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    serve_on(listener, args, health, routes, shutdown).await
}

/// As [`serve`], on a listener the caller already bound (tests bind 127.0.0.1:0).
pub async fn serve_on(
    listener: TcpListener,
    args: &ServerArgs,
    health: Health,
    routes: Routes,
    shutdown: CancellationToken,
) -> anyhow::Result<RunningServer> {
    let addr = listener.local_addr()?;
    let mut builder = tonic::transport::Server::builder().timeout(args.request_timeout());
    if let Some(tls) = tls_config(args)? {
        builder = builder.tls_config(tls).context("configuring TLS")?;
    }
    let routes = with_health_and_reflection(routes, &health)?;
    let layers = ServiceBuilder::new()
        .layer(ServerTelemetryLayer::new())
        .layer(BearerAuthLayer::new(args.auth_token.as_ref()))
        .layer(LoadShedLayer::new(
            args.max_concurrent_requests,
            RETRY_AFTER_OVERLOAD,
        ))
        .into_inner();

    let health_addr = match args.health_listen {
        Some(at) => Some(serve_health(at, &health, shutdown.clone()).await?),
        None => None,
    };
    let stop = shutdown.clone();
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let task = tokio::spawn(
        builder
            .layer(layers)
            .add_routes(routes)
            .serve_with_incoming_shutdown(incoming, async move { stop.cancelled().await }),
    );
    tracing::info!(%addr, services = ?health.services(), tls = args.tls_cert.is_some(),
        mutual_tls = args.tls_client_ca.is_some(), auth = args.auth_token.is_some(), "listening");
    Ok(RunningServer {
        addr,
        health_addr,
        health,
        shutdown,
        grace: args.shutdown_grace(),
        task,
    })
}

/// Serves one service on 127.0.0.1 with an OS-chosen port: the embedded suite and tests.
pub async fn serve_loopback(
    args: &ServerArgs,
    service: &'static str,
    serving: bool,
    routes: Routes,
) -> anyhow::Result<RunningServer> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let health = Health::new(&[service]).await;
    health.set_serving(service, serving).await;
    serve_on(listener, args, health, routes, CancellationToken::new()).await
}

/// The health service alone, in plaintext and without auth, on its own address: what a prober
/// that cannot do TLS asks. It reads the same reporter, so it follows the main server (NOT_SERVING
/// until the model is loaded, and from the start of a shutdown), and stops with it.
async fn serve_health(
    at: SocketAddr,
    health: &Health,
    shutdown: CancellationToken,
) -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind(at)
        .await
        .with_context(|| format!("cannot listen on {at} (--health-listen)"))?;
    let addr = listener.local_addr()?;
    let service = tonic_health::pb::health_server::HealthServer::new(
        tonic_health::server::HealthService::from_health_reporter(health.reporter()),
    );
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming_shutdown(incoming, async move { shutdown.cancelled().await }),
    );
    tracing::info!(%addr, "health (plaintext, grpc.health.v1 only) listening");
    Ok(addr)
}

fn with_health_and_reflection(routes: Routes, health: &Health) -> anyhow::Result<Routes> {
    let health_service = tonic_health::pb::health_server::HealthServer::new(
        tonic_health::server::HealthService::from_health_reporter(health.reporter()),
    );
    // Reflection lists an allow-list: this server's services and health, nothing internal.
    let reflection = || {
        let mut b = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(arf_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .with_service_name("grpc.health.v1.Health");
        for name in health.services() {
            b = b.with_service_name(*name);
        }
        b
    };
    Ok(routes
        .add_service(health_service)
        .add_service(reflection().build_v1().context("building reflection v1")?)
        .add_service(
            reflection()
                .build_v1alpha()
                .context("building reflection v1alpha")?,
        ))
}

fn tls_config(args: &ServerArgs) -> anyhow::Result<Option<ServerTlsConfig>> {
    let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) else {
        return Ok(None);
    };
    // Two rustls crypto backends are linked (ring here, aws-lc-rs through mistral.rs's HTTP
    // client), so rustls cannot pick one itself; tonic's server config asks for the default.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let read = |p: &std::path::Path| {
        std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))
    };
    let mut tls = ServerTlsConfig::new().identity(Identity::from_pem(read(cert)?, read(key)?));
    if let Some(ca) = &args.tls_client_ca {
        tls = tls.client_ca_root(Certificate::from_pem(read(ca)?));
    }
    Ok(Some(tls))
}

impl RunningServer {
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address as a client's endpoint (plain HTTP/2: loopback servers have no TLS).
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn health(&self) -> &Health {
        &self.health
    }

    /// Where the plaintext health-only listener is (`--health-listen`).
    pub fn health_addr(&self) -> Option<SocketAddr> {
        self.health_addr
    }

    /// Begins shutdown from inside the process (the demo, tests).
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Serves until SIGINT or SIGTERM, then shuts down gracefully.
    pub async fn run_until_signal(self) -> anyhow::Result<()> {
        tokio::select! {
            signal = shutdown_signal() => tracing::info!(signal, "shutting down"),
            () = self.shutdown.cancelled() => tracing::info!("shutdown requested"),
        }
        self.shutdown().await
    }

    /// Health goes NOT_SERVING, new calls stop, in-flight calls drain up to the grace period.
    /// The caller flushes telemetry afterwards, so the drained calls' spans are exported too.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        self.health.set_all_not_serving().await;
        self.shutdown.cancel();
        match tokio::time::timeout(self.grace, &mut self.task).await {
            Ok(joined) => joined
                .context("server task panicked")?
                .context("server failed"),
            Err(_) => {
                tracing::warn!(
                    grace_secs = self.grace.as_secs(),
                    "calls still in flight after the grace period; dropping them"
                );
                self.task.abort();
                Ok(())
            }
        }
    }
}

/// What a service binary's `main` does: telemetry, log the (redacted) configuration, build the
/// service's routes, serve until SIGINT/SIGTERM, drain, and only then flush telemetry.
pub async fn run_binary<F, Fut>(
    telemetry_name: &str,
    services: &[&'static str],
    default_port: u16,
    args: &ServerArgs,
    config: &dyn std::fmt::Debug,
    build: F,
) -> std::process::ExitCode
where
    F: FnOnce(Health, CancellationToken) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Routes>>,
{
    let telemetry = match crate::telemetry::Telemetry::init(telemetry_name, args.log_format) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {e:#}");
            return std::process::ExitCode::FAILURE;
        }
    };
    tracing::info!(config = ?config, "starting {telemetry_name}");
    let result = async {
        args.check_exposure(default_port)?;
        let health = Health::new(services).await;
        let shutdown = CancellationToken::new();
        let routes = build(health.clone(), shutdown.clone()).await?;
        serve(args, default_port, health, routes, shutdown)
            .await?
            .run_until_signal()
            .await
    }
    .await;
    if let Err(e) = &result {
        tracing::error!("{e:#}");
    }
    telemetry.shutdown();
    if result.is_ok() {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    }
}

/// Resolves on SIGINT or SIGTERM, naming which.
pub async fn shutdown_signal() -> &'static str {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
        "SIGINT"
    };
    #[cfg(unix)]
    {
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
            "SIGTERM"
        };
        tokio::select! { s = ctrl_c => s, s = term => s }
    }
    #[cfg(not(unix))]
    ctrl_c.await
}
