//! The editor replicas, called by load: power-of-two-choices on the number of calls each
//! replica has in flight from this gateway, and a retry on another replica (with a short
//! backoff) when one fails in a way `faults` calls transient (UNAVAILABLE, RESOURCE_EXHAUSTED,
//! a connection dropped mid-call, ...). Every call the gateway makes to an editor is
//! idempotent, so a retry is always safe. When every replica has failed, the status goes back
//! to the stage, which waits (`Pipeline::call`) with a longer backoff.
//!
//! Not tonic's `balance_list` (it sees every replica as idle, so p2c degrades to random), and
//! not tower's `Balance` either: it cannot be told to avoid the replica that just failed this
//! very call, which is what "retry on another replica" needs.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use arf_common::client::{ClientOptions, GrpcChannel, connect_lazy};
use arf_proto::v1 as pb;
use arf_proto::v1::editor_client::EditorClient;
use rand::Rng;
use tonic::Status;

use super::faults::{Fault, classify};

struct Replica {
    endpoint: String,
    client: EditorClient<GrpcChannel>,
    in_flight: AtomicUsize,
}

/// Decrements a replica's in-flight count when the call ends, however it ends.
struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[derive(Clone)]
pub struct EditorPool {
    replicas: Arc<[Replica]>,
    max_attempts: usize,
}

impl EditorPool {
    pub fn connect(
        endpoints: &[String],
        options: &ClientOptions,
        max_message_bytes: usize,
    ) -> anyhow::Result<Self> {
        anyhow::ensure!(
            !endpoints.is_empty(),
            "at least one editor endpoint is needed"
        );
        let replicas = endpoints
            .iter()
            .map(|e| {
                let client = EditorClient::new(connect_lazy(e, options)?)
                    .max_decoding_message_size(max_message_bytes)
                    .max_encoding_message_size(max_message_bytes);
                Ok(Replica {
                    endpoint: e.clone(),
                    client,
                    in_flight: AtomicUsize::new(0),
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        // Every replica gets a chance, and a lone replica a few.
        let max_attempts = (replicas.len() * 2).max(3);
        Ok(Self {
            replicas: replicas.into(),
            max_attempts,
        })
    }

    /// How many replicas the pool spreads calls over.
    pub fn replica_count(&self) -> usize {
        self.replicas.len()
    }

    /// Runs `call` on the least loaded of two random replicas; on a transient fault retries on
    /// another one after a backoff (the server's RetryInfo if it sent one). Other errors are
    /// the caller's to handle.
    pub async fn call<T, F, Fut>(&self, mut call: F) -> Result<T, Status>
    where
        F: FnMut(EditorClient<GrpcChannel>) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let mut failed: Vec<usize> = Vec::new();
        let mut last = None;
        for attempt in 0..self.max_attempts {
            let index = self.pick(&failed);
            let replica = &self.replicas[index];
            replica.in_flight.fetch_add(1, Ordering::Relaxed);
            let guard = InFlight(&replica.in_flight);
            let result = call(replica.client.clone()).await;
            drop(guard);
            match result {
                Err(status) if classify(&status) == Fault::Transient => {
                    tracing::warn!(endpoint = %replica.endpoint, code = ?status.code(), attempt, "editor replica refused; retrying on another");
                    let backoff = arf_common::status::retry_after(&status)
                        .unwrap_or_else(|| Duration::from_millis(50 << attempt.min(6)));
                    failed.push(index);
                    if failed.len() == self.replicas.len() {
                        failed.clear(); // all tried: start over, after the backoff
                    }
                    last = Some(status);
                    tokio::time::sleep(backoff).await;
                }
                other => return other,
            }
        }
        Err(last.unwrap_or_else(|| Status::unavailable("no editor replica answered")))
    }

    pub async fn revise(&self, request: &pb::ReviseRequest) -> Result<pb::ReviseResponse, Status> {
        self.call(|mut editor| {
            let request = request.clone();
            async move { editor.revise(request).await.map(|r| r.into_inner()) }
        })
        .await
    }

    pub async fn generate(
        &self,
        request: &pb::GenerateRequest,
    ) -> Result<pb::GenerateResponse, Status> {
        self.call(|mut editor| {
            let request = request.clone();
            async move { editor.generate(request).await.map(|r| r.into_inner()) }
        })
        .await
    }

    /// Power of two choices among the replicas not yet failed for this call.
    fn pick(&self, failed: &[usize]) -> usize {
        let candidates: Vec<usize> = (0..self.replicas.len())
            .filter(|i| !failed.contains(i))
            .collect();
        let mut rng = rand::rng();
        let a = candidates[rng.random_range(0..candidates.len())];
        let b = candidates[rng.random_range(0..candidates.len())];
        let load = |i: usize| self.replicas[i].in_flight.load(Ordering::Relaxed);
        if load(b) < load(a) { b } else { a }
    }
}
