//! The server side of every call: a span (child of the caller's, from W3C trace context) that
//! the handler runs inside, the RPC metrics, and the call's deadline made visible to the
//! handler's own downstream calls.

use std::task::{Context, Poll};
use std::time::Instant;

use futures::future::BoxFuture;
use http::HeaderMap;
use opentelemetry::KeyValue;
use tower::{Layer, Service};
use tracing::Instrument;
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::{RpcMetrics, extract_context};
use crate::body_guard::{BodyGuard, GuardedBody};
use crate::deadline;

#[derive(Clone, Default)]
pub struct ServerTelemetryLayer {
    metrics: RpcMetrics,
}

impl ServerTelemetryLayer {
    pub fn new() -> Self {
        Self {
            metrics: RpcMetrics::new(),
        }
    }
}

impl<S> Layer<S> for ServerTelemetryLayer {
    type Service = ServerTelemetry<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ServerTelemetry {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

#[derive(Clone)]
pub struct ServerTelemetry<S> {
    inner: S,
    metrics: RpcMetrics,
}

/// Splits "/arf.v1.Analyzer/Analyze" into ("arf.v1.Analyzer", "Analyze").
pub(crate) fn rpc_names(path: &str) -> (String, String) {
    let mut parts = path.trim_start_matches('/').splitn(2, '/');
    let service = parts.next().unwrap_or_default().to_string();
    let method = parts.next().unwrap_or_default().to_string();
    (service, method)
}

pub(crate) fn grpc_status(headers: &HeaderMap) -> Option<i32> {
    headers.get("grpc-status")?.to_str().ok()?.parse().ok()
}

/// Status codes that mean the server failed (OpenTelemetry RPC conventions for server spans).
fn is_server_error(code: i32) -> bool {
    use tonic::Code;
    [
        Code::Unknown,
        Code::DeadlineExceeded,
        Code::Unimplemented,
        Code::Internal,
        Code::Unavailable,
        Code::DataLoss,
    ]
    .iter()
    .any(|c| *c as i32 == code)
}

/// Finishes the call's telemetry when the response body ends or is dropped.
pub struct CallRecord {
    span: tracing::Span,
    started: Instant,
    attributes: Vec<KeyValue>,
    metrics: RpcMetrics,
    code: Option<i32>,
}

impl BodyGuard for CallRecord {
    fn on_trailers(&mut self, trailers: &HeaderMap) {
        if let Some(code) = grpc_status(trailers) {
            self.code = Some(code);
        }
    }
}

impl Drop for CallRecord {
    fn drop(&mut self) {
        // No status at all: the client went away before the call ended.
        let code = self.code.unwrap_or(tonic::Code::Cancelled as i32);
        self.span.record("rpc.grpc.status_code", code as i64);
        if is_server_error(code) {
            self.span.record("otel.status_code", "ERROR");
        }
        self.metrics.active.add(-1, &self.attributes);
        let mut attributes = std::mem::take(&mut self.attributes);
        attributes.push(KeyValue::new("rpc.grpc.status_code", code as i64));
        self.metrics
            .duration
            .record(self.started.elapsed().as_secs_f64(), &attributes);
    }
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for ServerTelemetry<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: Send + 'static,
{
    type Response = http::Response<GuardedBody<ResBody, CallRecord>>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let (service, method) = rpc_names(request.uri().path());
        let span = tracing::info_span!(
            "grpc.server",
            otel.name = %format!("{service}/{method}"),
            otel.kind = "server",
            otel.status_code = Empty,
            rpc.system = "grpc",
            rpc.service = %service,
            rpc.method = %method,
            rpc.grpc.status_code = Empty,
        );
        // A malformed traceparent only costs the link to the caller, never the call.
        let _ = span.set_parent(extract_context(request.headers()));
        let deadline = request
            .headers()
            .get("grpc-timeout")
            .and_then(|v| v.to_str().ok())
            .and_then(deadline::parse_grpc_timeout)
            .map(|d| tokio::time::Instant::now() + d);

        let attributes = RpcMetrics::method_attributes(&service, &method);
        self.metrics.active.add(1, &attributes);
        let mut record = CallRecord {
            span: span.clone(),
            started: Instant::now(),
            attributes,
            metrics: self.metrics.clone(),
            code: None,
        };

        // Take the service that was polled ready; leave a fresh clone in its place.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let handled = deadline::scope(deadline, inner.call(request)).instrument(span);
        Box::pin(async move {
            let response = handled.await?;
            // Errors answered without a body carry their status in the headers.
            record.code = grpc_status(response.headers());
            Ok(response.map(|body| GuardedBody::new(body, record)))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_grpc_paths() {
        assert_eq!(
            rpc_names("/arf.v1.Analyzer/Analyze"),
            ("arf.v1.Analyzer".into(), "Analyze".into())
        );
        assert_eq!(rpc_names("/"), (String::new(), String::new()));
    }
}
