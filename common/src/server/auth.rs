//! Bearer-token auth as a tower layer: every call but health checks must carry
//! `authorization: Bearer <token>`; a wrong or missing token gets UNAUTHENTICATED.

use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::{BoxFuture, FutureExt};
use tower::{Layer, Service};

use crate::config::Secret;

const HEALTH_PREFIX: &str = "/grpc.health.v1.Health/";

#[derive(Clone)]
pub struct BearerAuthLayer {
    expected: Option<Arc<[u8]>>,
}

impl BearerAuthLayer {
    /// `None`: auth is off and every call passes.
    pub fn new(token: Option<&Secret>) -> Self {
        Self {
            expected: token.map(|t| Arc::from(format!("Bearer {}", t.expose()).into_bytes())),
        }
    }
}

impl<S> Layer<S> for BearerAuthLayer {
    type Service = BearerAuth<S>;

    fn layer(&self, inner: S) -> Self::Service {
        BearerAuth {
            inner,
            expected: self.expected.clone(),
        }
    }
}

#[derive(Clone)]
pub struct BearerAuth<S> {
    inner: S,
    expected: Option<Arc<[u8]>>,
}

/// Compares in time independent of where the first difference is (a token check that leaks
/// no prefix).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for BearerAuth<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        if let Some(expected) = &self.expected
            && !request.uri().path().starts_with(HEALTH_PREFIX)
        {
            let given = request
                .headers()
                .get(http::header::AUTHORIZATION)
                .map(|v| v.as_bytes());
            let status = match given {
                None => Some(tonic::Status::unauthenticated(
                    "missing `authorization: Bearer <token>` metadata",
                )),
                Some(given) if !constant_time_eq(given, expected) => {
                    Some(tonic::Status::unauthenticated("invalid bearer token"))
                }
                Some(_) => None,
            };
            if let Some(status) = status {
                return futures::future::ready(Ok(status.into_http())).boxed();
            }
        }
        let clone = self.inner.clone();
        std::mem::replace(&mut self.inner, clone)
            .call(request)
            .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn compares_whole_tokens() {
        assert!(constant_time_eq(b"Bearer abc", b"Bearer abc"));
        assert!(!constant_time_eq(b"Bearer abc", b"Bearer abd"));
        assert!(!constant_time_eq(b"Bearer abc", b"Bearer abcd"));
    }
}
