//! A store that blinks (a PostgreSQL restart, a lost connection, a primary failing over) does
//! not fail runs. A stage that meets a transient store error (`store::outage`) is waited out with
//! the backoff a service that is down gets, and the run goes on from what was committed: the
//! stage's pending items (an item whose result did not reach the store is done again, and its
//! result recorded once). Once the store answers, the run's events say what happened: a
//! `Waiting` for "the store" with the first error and the retries, then its recovery, both
//! written then, since the store is where events go.

use std::time::Instant;

use arf_proto::v1 as pb;
use pb::run_event::Kind;
use tokio_util::sync::CancellationToken;

use super::waiting::backoff;
use super::{Pipeline, RunError};
use crate::store::outage::is_transient;

/// The store, as the events name it.
pub(crate) const STORE: &str = "the store";

/// A store outage a run is waiting out.
struct Outage {
    first_error: String,
    retries: u32,
    since: Instant,
}

impl Pipeline {
    /// [`Pipeline::drive`], again from the committed state after each store outage.
    pub(super) async fn drive_through_outages(
        &self,
        run_id: &str,
        token: &CancellationToken,
    ) -> Result<(), RunError> {
        let mut outage: Option<Outage> = None;
        loop {
            let result = match &outage {
                Some(o) => match self.store_recovered(run_id, o).await {
                    Ok(()) => {
                        outage = None;
                        self.drive(run_id, token).await
                    }
                    Err(e) => Err(e.into()),
                },
                None => self.drive(run_id, token).await,
            };
            let e = match result {
                Err(RunError::Failed(e)) if is_transient(&e) => e,
                other => return other,
            };
            let o = outage.get_or_insert_with(|| Outage {
                // What the database said, without the gateway's context.
                first_error: e.root_cause().to_string(),
                retries: 0,
                since: Instant::now(),
            });
            o.retries += 1;
            let delay = backoff(o.retries);
            tracing::warn!(run_id, error = %format!("{e:#}"), retry = o.retries, delay_ms = delay.as_millis() as u64, "waiting for the store");
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = token.cancelled() => return Err(self.stopped(token)),
            }
        }
    }

    /// Records the run's end, waiting out a store outage the same way (until shutdown, which
    /// leaves the run to the next process).
    pub(super) async fn record_end(
        &self,
        run_id: &str,
        state: pb::RunState,
        error: &str,
    ) -> anyhow::Result<()> {
        let mut retries = 0;
        loop {
            match self.set_state(run_id, state, error).await {
                Err(e) if is_transient(&e) && !self.shutdown.is_cancelled() => {
                    retries += 1;
                    tracing::warn!(run_id, error = %format!("{e:#}"), retry = retries, "waiting for the store to record the run's end");
                    tokio::select! {
                        () = tokio::time::sleep(backoff(retries)) => {}
                        () = self.shutdown.cancelled() => return Err(e),
                    }
                }
                recorded => return recorded,
            }
        }
    }

    /// The store answers again: the run's events get the wait and its end.
    async fn store_recovered(&self, run_id: &str, outage: &Outage) -> anyhow::Result<()> {
        let waited = outage.since.elapsed();
        tracing::info!(
            run_id,
            retries = outage.retries,
            waited_ms = waited.as_millis() as u64,
            "the store answers again"
        );
        self.emit(
            run_id,
            Kind::Waiting(pb::Waiting {
                service: STORE.into(),
                code: "UNAVAILABLE".into(),
                message: format!("{} (for {:.1} s)", outage.first_error, waited.as_secs_f64()),
                attempt: outage.retries,
                retry_in_ms: 0,
                recovered: false,
            }),
        )
        .await?;
        self.emit(
            run_id,
            Kind::Waiting(pb::Waiting {
                service: STORE.into(),
                attempt: outage.retries,
                recovered: true,
                ..Default::default()
            }),
        )
        .await?;
        Ok(())
    }
}
