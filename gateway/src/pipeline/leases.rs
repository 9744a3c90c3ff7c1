//! The lease keeper: every gateway's heartbeat over the runs it drives, and its claim on the
//! runs nobody drives. Several gateways on one PostgreSQL share the runs this way; a single
//! gateway on SQLite takes over every unfinished run at start-up through the same path.
//!
//! Each beat (a third of the lease, so two can be missed):
//! 1. renews the leases of the runs this process drives or ingests; a run whose lease another
//!    gateway claimed since (this one stalled past the expiry), or that has ended meanwhile, is
//!    dropped here without a word, as this gateway may write nothing more to it; a run with a CancelRun asked of another gateway is cancelled;
//! 2. claims unfinished runs whose lease expired (their gateway died) and drives them, or fails
//!    the ones whose upload their gateway never finished.

use std::sync::Arc;

use arf_proto::v1 as pb;

use super::{INTERRUPTED_INGEST, Pipeline};

/// Runs claimed per beat: a gateway that comes back to a backlog takes it a few at a time,
/// leaving some to the others.
const CLAIM_PER_BEAT: usize = 8;

impl Pipeline {
    /// Claims the unfinished runs nobody drives and starts them; at start-up, also the ones a
    /// previous process of this gateway left. Returns how many it started.
    pub async fn claim_unfinished(self: &Arc<Self>, at_start: bool) -> anyhow::Result<usize> {
        let mut started = 0;
        loop {
            let claimed = self.store.claim_runs(CLAIM_PER_BEAT, at_start).await?;
            let n = claimed.len();
            for run in claimed {
                if self.is_active_here(&run.run_id) {
                    continue;
                }
                if run.state == pb::RunState::Ingesting {
                    tracing::warn!(run_id = %run.run_id, "failing a run whose upload never finished");
                    self.set_state(&run.run_id, pb::RunState::Failed, INTERRUPTED_INGEST)
                        .await?;
                } else {
                    tracing::info!(run_id = %run.run_id, "taking over run");
                    self.start(&run.run_id);
                    started += 1;
                }
            }
            // At start-up, everything left behind at once; later, a few per beat.
            if !at_start || n < CLAIM_PER_BEAT {
                return Ok(started);
            }
        }
    }

    /// One heartbeat over the runs this process drives (see the module's comment); it also
    /// counts their pending items for `arf.gateway.pending_items`.
    pub async fn renew_leases(&self) -> anyhow::Result<()> {
        let ids = self.active_runs();
        self.renew(&ids).await?;
        // The gauge after the leases, never before: a slow or failing count of a large run's
        // items must not delay or skip a renewal.
        self.count_pending(&ids).await
    }

    async fn renew(&self, ids: &[String]) -> anyhow::Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        for lease in self.store.renew_leases(ids).await? {
            if !lease.held {
                if !lease.ended {
                    tracing::warn!(
                        run_id = %lease.run_id,
                        holder = %lease.holder,
                        "lost the run's lease (this gateway stalled past it): another gateway drives it now"
                    );
                }
                // Ended (by this gateway a moment ago, or by another that took it over): either
                // way nothing more is written here.
                self.drop_run(&lease.run_id);
            } else if lease.cancel_requested {
                self.cancel(&lease.run_id);
            }
        }
        Ok(())
    }

    /// Items still to do in each run's current stage, for the autoscalers' gauge.
    async fn count_pending(&self, ids: &[String]) -> anyhow::Result<()> {
        let mut pending = std::collections::HashMap::new();
        for id in ids {
            let Some(run) = self.store.run(id).await? else {
                continue;
            };
            let counts = self
                .store
                .counts(id, crate::store::Unimproved::of(&run.config))
                .await?;
            let p = super::stage_progress(&counts, run.current_stage);
            let left = p.total.saturating_sub(p.done + p.failed);
            if run.current_stage != pb::Stage::Unspecified {
                pending.insert(id.clone(), (run.current_stage, left));
            }
        }
        for (id, run) in super::lock(&self.here).iter_mut() {
            run.pending = pending.remove(id);
        }
        Ok(())
    }

    /// Beats until shutdown.
    pub fn spawn_lease_keeper(self: &Arc<Self>) {
        let this = self.clone();
        tokio::spawn(async move {
            let beat = this.store.lease_duration() / 3;
            let mut ticks = tokio::time::interval(beat);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = ticks.tick() => {}
                    () = this.shutdown.cancelled() => return,
                }
                if let Err(e) = this.renew_leases().await {
                    tracing::error!(error = %format!("{e:#}"), "cannot renew the runs' leases");
                }
                if let Err(e) = this.claim_unfinished(false).await {
                    tracing::error!(error = %format!("{e:#}"), "cannot claim unfinished runs");
                }
            }
        });
    }
}
