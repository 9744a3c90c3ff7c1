//! The client side of every outgoing call: a client span whose W3C trace context is injected
//! into the call's metadata, the bearer token, and the deadline (the smallest of the caller's
//! own, the remaining time of the call being handled, and the client's default).

use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use http::HeaderValue;
use tower::{Layer, Service};
use tracing::Instrument;
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::inject_context;
use super::server_layer::{grpc_status, rpc_names};
use crate::config::Secret;
use crate::deadline;

#[derive(Clone, Default)]
pub struct ClientTelemetryLayer {
    authorization: Option<HeaderValue>,
    default_timeout: Option<Duration>,
}

impl ClientTelemetryLayer {
    pub fn new(
        auth_token: Option<&Secret>,
        default_timeout: Option<Duration>,
    ) -> anyhow::Result<Self> {
        let authorization = auth_token
            .map(|t| {
                let mut v =
                    HeaderValue::try_from(format!("Bearer {}", t.expose())).map_err(|_| {
                        anyhow::anyhow!("the auth token has characters not allowed in a header")
                    })?;
                v.set_sensitive(true);
                Ok::<_, anyhow::Error>(v)
            })
            .transpose()?;
        Ok(Self {
            authorization,
            default_timeout,
        })
    }
}

impl<S> Layer<S> for ClientTelemetryLayer {
    type Service = ClientTelemetry<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ClientTelemetry {
            inner,
            layer: self.clone(),
        }
    }
}

#[derive(Clone)]
pub struct ClientTelemetry<S> {
    inner: S,
    layer: ClientTelemetryLayer,
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for ClientTelemetry<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    ReqBody: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<ReqBody>) -> Self::Future {
        let (service, method) = rpc_names(request.uri().path());
        let span = tracing::info_span!(
            "grpc.client",
            otel.name = %format!("{service}/{method}"),
            otel.kind = "client",
            otel.status_code = Empty,
            rpc.system = "grpc",
            rpc.service = %service,
            rpc.method = %method,
            rpc.grpc.status_code = Empty,
        );
        let headers = request.headers_mut();
        inject_context(&span.context(), headers);
        if let Some(auth) = &self.layer.authorization {
            headers
                .entry(http::header::AUTHORIZATION)
                .or_insert_with(|| auth.clone());
        }
        let own = headers
            .get("grpc-timeout")
            .and_then(|v| v.to_str().ok())
            .and_then(deadline::parse_grpc_timeout);
        let timeout = [own.or(self.layer.default_timeout), deadline::remaining()]
            .into_iter()
            .flatten()
            .min();
        if let Some(timeout) = timeout {
            let value = deadline::format_grpc_timeout(timeout);
            headers.insert(
                "grpc-timeout",
                HeaderValue::try_from(value).expect("digits and a unit letter"),
            );
        }

        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let call = inner.call(request);
        Box::pin(
            async move {
                let response = call.await;
                let span = tracing::Span::current();
                match &response {
                    Ok(r) => {
                        if let Some(code) = grpc_status(r.headers()) {
                            span.record("rpc.grpc.status_code", code as i64);
                            if code != 0 {
                                span.record("otel.status_code", "ERROR");
                            }
                        }
                    }
                    Err(_) => {
                        span.record("rpc.grpc.status_code", tonic::Code::Unavailable as i64);
                        span.record("otel.status_code", "ERROR");
                    }
                }
                response
            }
            .instrument(span),
        )
    }
}
