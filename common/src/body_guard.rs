//! A response body that carries a guard until the body ends.
//!
//! A gRPC call is not over when its handler returns: a stream goes on sending. Whatever must
//! last as long as the call (a load-shedding permit, the span and timer of the call) rides in
//! the body and is dropped when the last frame has been sent, or when the client goes away.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};

/// Something that watches a response body and finishes its work on drop.
pub trait BodyGuard: Send + 'static {
    /// Called with the trailers (where gRPC puts `grpc-status` after a stream).
    fn on_trailers(&mut self, _trailers: &HeaderMap) {}
}

impl BodyGuard for tokio::sync::OwnedSemaphorePermit {}

pin_project_lite::pin_project! {
    pub struct GuardedBody<B, G> {
        #[pin]
        inner: B,
        guard: Option<G>,
    }
}

impl<B, G> GuardedBody<B, G> {
    pub fn new(inner: B, guard: G) -> Self {
        Self {
            inner,
            guard: Some(guard),
        }
    }

    pub fn unguarded(inner: B) -> Self {
        Self { inner, guard: None }
    }
}

impl<B: Default, G> Default for GuardedBody<B, G> {
    fn default() -> Self {
        Self::unguarded(B::default())
    }
}

impl<B, G> Body for GuardedBody<B, G>
where
    B: Body<Data = Bytes>,
    G: BodyGuard,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(trailers), Some(guard)) = (frame.trailers_ref(), this.guard.as_mut()) {
                    guard.on_trailers(trailers);
                }
            }
            // The body is over (or broken): finish now rather than when hyper drops it.
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => drop(this.guard.take()),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
