//! Load shedding with one global limit on calls in flight.
//!
//! tower's `ConcurrencyLimit` + `LoadShed` would do most of this, but its permit is released
//! when the handler returns, while a streaming call holds the server until its last message,
//! and its RESOURCE_EXHAUSTED carries no RetryInfo. Here the permit rides in the response body,
//! and a refused call is told when to come back. Health checks and reflection are never refused:
//! an overloaded server is still alive.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::{BoxFuture, FutureExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower::{Layer, Service};

use crate::body_guard::GuardedBody;

const EXEMPT_PREFIXES: &[&str] = &["/grpc.health.v1.Health/", "/grpc.reflection."];

#[derive(Clone)]
pub struct LoadShedLayer {
    permits: Arc<Semaphore>,
    retry_after: Duration,
}

impl LoadShedLayer {
    pub fn new(max_in_flight: usize, retry_after: Duration) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(max_in_flight.max(1))),
            retry_after,
        }
    }
}

impl<S> Layer<S> for LoadShedLayer {
    type Service = LoadShed<S>;

    fn layer(&self, inner: S) -> Self::Service {
        LoadShed {
            inner,
            layer: self.clone(),
        }
    }
}

#[derive(Clone)]
pub struct LoadShed<S> {
    inner: S,
    layer: LoadShedLayer,
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for LoadShed<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = http::Response<GuardedBody<ResBody, OwnedSemaphorePermit>>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let exempt = EXEMPT_PREFIXES
            .iter()
            .any(|p| request.uri().path().starts_with(p));
        let permit = if exempt {
            None
        } else {
            match self.layer.permits.clone().try_acquire_owned() {
                Ok(permit) => Some(permit),
                Err(_) => {
                    let status = crate::status::overloaded(
                        "server at its limit of calls in flight; retry later",
                        self.layer.retry_after,
                    );
                    return futures::future::ready(Ok(status.into_http())).boxed();
                }
            }
        };
        let clone = self.inner.clone();
        let call = std::mem::replace(&mut self.inner, clone).call(request);
        async move {
            let response = call.await?;
            Ok(response.map(|body| match permit {
                Some(permit) => GuardedBody::new(body, permit),
                None => GuardedBody::unguarded(body),
            }))
        }
        .boxed()
    }
}
