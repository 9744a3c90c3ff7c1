//! The editor's model over the OpenAI HTTP API (`--http-listen`), for the apps that already call
//! models with an `openai` client: `POST /v1/chat/completions` and `POST /v1/completions`
//! (streaming too), `GET /v1/models` and `GET /health`. The same editor answers as over gRPC:
//! its validation, its in-flight limit (429 with Retry-After past it), its GenAI spans and
//! metrics, and the server's bearer token.
//! HTTP/1.1, over TLS when the server has a certificate (`--tls-cert`), as its gRPC is.
//!
//! Not mistral.rs's own OpenAI layer (`mistralrs-server-core`): it talks to the engine directly,
//! so it would bypass the editor (the `Backend` trait, hence upstream-backed editors; the
//! in-flight limit; the validation and telemetry gRPC has) and bring its own router, auth-less.
//! The wire types here are the few fields ARF serves (`openai_wire`).

mod chat;
mod completion;
mod errors;
mod text;
mod tls;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use arf_common::config::ServerArgs;
use arf_common::server::constant_time_eq;
use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

pub use errors::ApiError;

use crate::editor::Editor;
use crate::error::EditorError;
use crate::grpc::EditorService;

/// The paths that answer without a token (probes).
const HEALTH_PATH: &str = "/health";

/// What every handler shares.
#[derive(Clone)]
pub struct Api {
    service: EditorService,
    /// `Bearer <token>`, when the server requires one.
    expected_auth: Option<Arc<[u8]>>,
    /// The server's upper bound on a call (`--request-timeout-secs`), as gRPC calls have.
    request_timeout: Duration,
}

impl Api {
    fn editor(&self) -> Result<Arc<Editor>, ApiError> {
        self.service
            .editor()
            .ok_or_else(|| ApiError::from(EditorError::NotReady))
    }
}

/// The routes, with the server's token, body limit (`--max-message-bytes`) and call deadline
/// (`--request-timeout-secs`), and a span per request.
pub fn router(service: EditorService, server: &ServerArgs) -> Router {
    let api = Api {
        service,
        expected_auth: server
            .auth_token
            .as_ref()
            .map(|t| Arc::from(format!("Bearer {}", t.expose()).into_bytes())),
        request_timeout: server.request_timeout(),
    };
    let max_body_bytes = server.max_message_bytes;
    Router::new()
        .route("/v1/chat/completions", post(chat::chat_completions))
        .route("/v1/completions", post(text::completions))
        .route("/v1/models", get(models))
        .route(HEALTH_PATH, get(health))
        .fallback(|| async {
            ApiError::not_found(
                "no such path: /v1/chat/completions, /v1/completions, /v1/models and /health are served",
            )
        })
        .layer(middleware::from_fn_with_state(api.clone(), authenticate))
        .layer(middleware::from_fn(trace))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(api)
}

/// The HTTP server, running until `shutdown` is cancelled (then it drains).
pub struct HttpServer {
    pub addr: std::net::SocketAddr,
    task: JoinHandle<std::io::Result<()>>,
}

impl HttpServer {
    /// Waits for the server to finish draining after `shutdown`.
    pub async fn stopped(self) -> anyhow::Result<()> {
        self.task.await.context("the HTTP server task panicked")??;
        Ok(())
    }
}

/// Serves `router` on `listener` until `shutdown`, over plain HTTP.
pub fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
) -> anyhow::Result<HttpServer> {
    serve_on(listener, router, shutdown, false)
}

/// Serves `router` on `listener` until `shutdown`: over HTTPS when the server has a
/// certificate (`--tls-cert`; client certificates too with `--tls-client-ca`), as its gRPC is.
pub fn serve_as(
    listener: TcpListener,
    router: Router,
    server: &ServerArgs,
    shutdown: CancellationToken,
) -> anyhow::Result<HttpServer> {
    match arf_common::server::rustls_server_config(server, &[b"http/1.1"])? {
        Some(tls) => serve_on(
            tls::TlsListener::new(listener, tls)?,
            router,
            shutdown,
            true,
        ),
        None => serve(listener, router, shutdown),
    }
}

fn serve_on<L>(
    listener: L,
    router: Router,
    shutdown: CancellationToken,
    https: bool,
) -> anyhow::Result<HttpServer>
where
    L: axum::serve::Listener<Addr = std::net::SocketAddr>,
{
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await
    });
    tracing::info!(%addr, https, "serving the OpenAI HTTP API");
    Ok(HttpServer { addr, task })
}

async fn models(State(api): State<Api>) -> Result<Response, ApiError> {
    let editor = api.editor()?;
    let m = editor.model();
    Ok(axum::Json(json!({"object": "list", "data": [{
        "id": m.model_id, "object": "model", "created": 0, "owned_by": "arf",
        "max_model_len": m.max_context_tokens,
    }]}))
    .into_response())
}

/// 200 once the model answers, 503 while it loads.
async fn health(State(api): State<Api>) -> Response {
    match api.service.editor() {
        Some(_) => (StatusCode::OK, axum::Json(json!({"status": "ok"}))).into_response(),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({"status": "loading"})),
        )
            .into_response(),
    }
}

/// Every path but health needs the server's bearer token, when it has one.
async fn authenticate(State(api): State<Api>, request: Request, next: Next) -> Response {
    if let Some(expected) = &api.expected_auth
        && request.uri().path() != HEALTH_PATH
    {
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .map(|v| v.as_bytes());
        match given {
            None => {
                return ApiError::unauthorized("missing `Authorization: Bearer <token>`")
                    .into_response();
            }
            Some(given) if !constant_time_eq(given, expected) => {
                return ApiError::unauthorized("invalid bearer token").into_response();
            }
            Some(_) => {}
        }
    }
    next.run(request).await
}

/// A server span per request (child of the caller's W3C trace context): the generation's
/// `gen_ai` span nests under it, as under a gRPC call's.
async fn trace(request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().map_or_else(
        || request.uri().path().to_string(),
        |p| p.as_str().to_string(),
    );
    let method = request.method().to_string();
    let span = tracing::info_span!(
        "http.server",
        otel.name = %format!("{method} {route}"),
        otel.kind = "server",
        http.request.method = %method,
        http.route = %route,
        http.response.status_code = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    );
    let _ = span.set_parent(arf_common::telemetry::extract_context(request.headers()));
    let started = Instant::now();
    let response = next.run(request).instrument(span.clone()).await;
    let status = response.status();
    span.record("http.response.status_code", status.as_u16() as i64);
    if status.is_server_error() {
        span.record("otel.status_code", "ERROR");
    }
    tracing::debug!(parent: &span, status = status.as_u16(), seconds = started.elapsed().as_secs_f64(), "answered");
    response
}
