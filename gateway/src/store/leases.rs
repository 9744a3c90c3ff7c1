//! Run leases: which gateway drives a run. A run is leased by the gateway that created it, renewed
//! by its heartbeat, freed when the run ends (or the gateway shuts down cleanly), and taken over
//! by another gateway once it expires (the holder died). On PostgreSQL, gateways claim expired
//! runs with `FOR UPDATE SKIP LOCKED`, so two never claim the same one; on SQLite, one gateway
//! owns the file and takes over every run at start-up.
//!
//! Fencing: each write a driver makes checks, in its transaction, that it still holds the lease
//! (on PostgreSQL with the run's row locked), so a gateway that stalled past its lease and came
//! back cannot write next to the one that took over.

use arf_proto::v1 as pb;
use sqlx::{Any, Row as _, Transaction};

use super::{Backend, Store, now_ms};

/// A write refused because another gateway holds the run now.
#[derive(Debug, thiserror::Error)]
#[error("run {run_id} is now driven by gateway {holder:?}: this gateway's lease expired")]
pub struct LeaseLost {
    pub run_id: String,
    pub holder: String,
}

/// A run this gateway took the lease of, in the state it was in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimed {
    pub run_id: String,
    pub state: pb::RunState,
}

/// What became of a cancel.
#[derive(Debug, Clone, PartialEq)]
pub enum CancelOutcome {
    /// No gateway drives the run (or this one holds it idle): cancelled now, with its event.
    Cancelled(pb::RunEvent),
    /// Another live gateway drives it: it was asked to, and stops at its next heartbeat.
    Requested,
    /// It had ended already.
    AlreadyFinal,
}

/// The lease as the heartbeat saw it, for a run this gateway drives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseState {
    pub run_id: String,
    /// Whoever holds it now (empty: nobody; the run ended).
    pub holder: String,
    pub cancel_requested: bool,
}

const UNFINISHED: [pb::RunState; 3] = [
    pb::RunState::Ingesting,
    pb::RunState::Queued,
    pb::RunState::Running,
];

impl Store {
    /// How long a lease lasts without a heartbeat.
    pub fn lease_duration(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.lease_ms as u64)
    }

    pub(super) fn lease_until(&self) -> i64 {
        now_ms() + self.lease_ms
    }

    /// Refuses the write unless this gateway holds the run's lease (or nobody does). On
    /// PostgreSQL it also locks the run's row to the end of the transaction: the run's writes,
    /// its event appends first, go one at a time.
    pub(super) async fn fence(
        &self,
        tx: &mut Transaction<'_, Any>,
        run_id: &str,
    ) -> anyhow::Result<()> {
        let sql = match self.backend {
            Backend::Sqlite => "SELECT lease_owner FROM runs WHERE id = $1",
            Backend::Postgres => "SELECT lease_owner FROM runs WHERE id = $1 FOR UPDATE",
        };
        let holder: Option<String> = sqlx::query_scalar(sql)
            .bind(run_id)
            .fetch_optional(&mut **tx)
            .await?;
        match holder {
            Some(holder) if !holder.is_empty() && holder != self.owner => Err(LeaseLost {
                run_id: run_id.to_string(),
                holder,
            }
            .into()),
            _ => Ok(()),
        }
    }

    /// Takes the lease of up to `limit` unfinished runs that nobody holds (their holder's lease
    /// expired, or it shut down), oldest first. `at_start`: also the ones leased under this
    /// gateway's own name, which a previous process of the same name left behind (on SQLite,
    /// all of them: the previous process is gone, or this one would not have the file).
    pub async fn claim_runs(&self, limit: usize, at_start: bool) -> anyhow::Result<Vec<Claimed>> {
        let skip_locked = match self.backend {
            Backend::Sqlite => "",
            Backend::Postgres => " FOR UPDATE SKIP LOCKED",
        };
        // A SQLite file has one gateway (its lock says so): at start-up, every run is its own.
        let take_all = at_start && self.backend == Backend::Sqlite;
        let sql = format!(
            "UPDATE runs SET lease_owner = $1, lease_expires_ms = $2 WHERE id IN ( \
               SELECT id FROM runs WHERE state IN ($3, $4, $5) \
               AND (lease_owner = '' OR lease_expires_ms < $6 OR (lease_owner = $1 AND $7 = 1) OR $9 = 1) \
               ORDER BY create_time_ms LIMIT $8{skip_locked}) \
             RETURNING id, state"
        );
        let rows = sqlx::query(&sql)
            .bind(&self.owner)
            .bind(self.lease_until())
            .bind(UNFINISHED[0] as i64)
            .bind(UNFINISHED[1] as i64)
            .bind(UNFINISHED[2] as i64)
            .bind(now_ms())
            .bind(at_start as i64)
            .bind(limit as i64)
            .bind(take_all as i64)
            .fetch_all(&self.pool)
            .await?;
        let mut claimed = rows
            .iter()
            .map(|r| {
                let state: i64 = r.try_get(1)?;
                Ok(Claimed {
                    run_id: r.try_get(0)?,
                    state: pb::RunState::try_from(state as i32)
                        .unwrap_or(pb::RunState::Unspecified),
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()?;
        claimed.sort_by(|a, b| a.run_id.cmp(&b.run_id));
        Ok(claimed)
    }

    /// The heartbeat: extends this gateway's leases of `run_ids` (the runs it is driving or
    /// ingesting) and reports, for each, who holds it now and whether a cancel was asked.
    pub async fn renew_leases(&self, run_ids: &[String]) -> anyhow::Result<Vec<LeaseState>> {
        let mut states = Vec::with_capacity(run_ids.len());
        for id in run_ids {
            sqlx::query("UPDATE runs SET lease_expires_ms = $3 WHERE id = $1 AND lease_owner = $2")
                .bind(id)
                .bind(&self.owner)
                .bind(self.lease_until())
                .execute(&self.pool)
                .await?;
            let row = sqlx::query("SELECT lease_owner, cancel_requested FROM runs WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
            if let Some(row) = row {
                let cancel: i64 = row.try_get(1)?;
                states.push(LeaseState {
                    run_id: id.clone(),
                    holder: row.try_get(0)?,
                    cancel_requested: cancel != 0,
                });
            }
        }
        Ok(states)
    }

    /// Gives up the lease of a run this gateway stops driving without ending it (a clean
    /// shutdown): another gateway takes it over at once instead of after the expiry.
    pub async fn release_lease(&self, run_id: &str) -> anyhow::Result<()> {
        sqlx::query(
            "UPDATE runs SET lease_owner = '', lease_expires_ms = 0 WHERE id = $1 AND lease_owner = $2",
        )
        .bind(run_id)
        .bind(&self.owner)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// CancelRun for a run this gateway is not driving: cancelled here when no live gateway
    /// holds it, asked of its holder otherwise.
    pub async fn cancel_or_request(&self, run_id: &str) -> anyhow::Result<CancelOutcome> {
        let mut tx = self.pool.begin().await?;
        let lock = match self.backend {
            Backend::Sqlite => "",
            Backend::Postgres => " FOR UPDATE",
        };
        let row = sqlx::query(&format!(
            "SELECT state, lease_owner, lease_expires_ms FROM runs WHERE id = $1{lock}"
        ))
        .bind(run_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Ok(CancelOutcome::AlreadyFinal);
        };
        let state: i64 = row.try_get(0)?;
        let holder: String = row.try_get(1)?;
        let expires: i64 = row.try_get(2)?;
        if !UNFINISHED.iter().any(|s| *s as i64 == state) {
            return Ok(CancelOutcome::AlreadyFinal);
        }
        let held_elsewhere = !holder.is_empty() && holder != self.owner && expires >= now_ms();
        if held_elsewhere {
            sqlx::query("UPDATE runs SET cancel_requested = 1 WHERE id = $1")
                .bind(run_id)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            return Ok(CancelOutcome::Requested);
        }
        // Nobody drives it: take it (the fence then passes) and end it, in this transaction.
        sqlx::query("UPDATE runs SET lease_owner = $2 WHERE id = $1")
            .bind(run_id)
            .bind(&self.owner)
            .execute(&mut *tx)
            .await?;
        let event = self
            .set_run_state_in(
                &mut tx,
                run_id,
                pb::RunState::Cancelled,
                "cancelled by request",
            )
            .await?;
        tx.commit().await?;
        Ok(CancelOutcome::Cancelled(event))
    }

    /// Whether a CancelRun asked of another gateway is waiting for this run.
    pub async fn cancel_requested(&self, run_id: &str) -> anyhow::Result<bool> {
        let flag: Option<i64> =
            sqlx::query_scalar("SELECT cancel_requested FROM runs WHERE id = $1")
                .bind(run_id)
                .fetch_optional(&self.pool)
                .await?;
        Ok(flag.unwrap_or(0) != 0)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::store::{StoreLocation, testing};

    /// Two gateways on one PostgreSQL database, with short leases.
    async fn two_gateways(lease: Duration) -> Option<(Store, Store)> {
        let url = testing::postgres_database().await?;
        let location = StoreLocation::Postgres(url);
        let a = Store::connect(&location, "gateway-a", lease).await.unwrap();
        let b = Store::connect(&location, "gateway-b", lease).await.unwrap();
        Some((a, b))
    }

    fn warning(text: &str) -> pb::run_event::Kind {
        pb::run_event::Kind::Warning(text.into())
    }

    /// A run is driven by the gateway that holds its lease; another takes it only once the lease
    /// expires, and from then on the first one's writes are refused: the log stays one gap-free
    /// sequence written by one gateway at a time.
    #[tokio::test]
    async fn a_lease_is_taken_over_only_when_it_expires_and_fences_the_old_holder() {
        let Some((a, b)) = two_gateways(Duration::from_millis(600)).await else {
            return;
        };
        a.create_run("r", "r", &pb::RunConfig::default())
            .await
            .unwrap();
        a.set_run_state("r", pb::RunState::Running, "")
            .await
            .unwrap();
        assert!(
            b.claim_runs(8, false).await.unwrap().is_empty(),
            "a holds it"
        );
        let renewed = a.renew_leases(&["r".into()]).await.unwrap();
        assert_eq!(renewed[0].holder, "gateway-a");
        assert!(
            b.append_event("r", warning("b")).await.is_err(),
            "b is fenced"
        );

        tokio::time::sleep(Duration::from_millis(700)).await;
        let claimed = b.claim_runs(8, false).await.unwrap();
        assert_eq!(
            claimed,
            [Claimed {
                run_id: "r".into(),
                state: pb::RunState::Running
            }]
        );
        b.append_event("r", warning("b drives it")).await.unwrap();
        let refused = a.append_event("r", warning("a, late")).await.unwrap_err();
        assert!(refused.downcast_ref::<LeaseLost>().is_some(), "{refused:#}");
        let seen = a.renew_leases(&["r".into()]).await.unwrap();
        assert_eq!(
            seen[0].holder, "gateway-b",
            "a's heartbeat learns it lost the run"
        );

        let seqs: Vec<u64> = a
            .events_after("r", 0, 100)
            .await
            .unwrap()
            .iter()
            .map(|e| e.sequence)
            .collect();
        assert_eq!(
            seqs,
            (1..=seqs.len() as u64).collect::<Vec<_>>(),
            "gap-free"
        );
        // Ended: the lease is freed, and nobody claims a finished run.
        b.set_run_state("r", pb::RunState::Succeeded, "")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(700)).await;
        assert!(a.claim_runs(8, false).await.unwrap().is_empty());
    }

    /// Gateways claiming at the same moment share the free runs: each is claimed once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn gateways_claiming_together_never_claim_one_run_twice() {
        let Some((a, b)) = two_gateways(Duration::from_secs(60)).await else {
            return;
        };
        for i in 0..60 {
            let id = format!("r{i:02}");
            a.create_run(&id, &id, &pb::RunConfig::default())
                .await
                .unwrap();
            a.finish_ingest(&id).await.unwrap();
            // As a gateway shutting down leaves them: free, to be taken at once.
            a.release_lease(&id).await.unwrap();
        }
        let (a, b) = (std::sync::Arc::new(a), std::sync::Arc::new(b));
        let claim = |s: std::sync::Arc<Store>| async move {
            let mut mine = Vec::new();
            loop {
                let got = s.claim_runs(2, false).await.unwrap();
                if got.is_empty() {
                    return mine;
                }
                mine.extend(got.into_iter().map(|c| c.run_id));
            }
        };
        let (by_a, by_b) = tokio::join!(
            tokio::spawn(claim(a.clone())),
            tokio::spawn(claim(b.clone()))
        );
        let (by_a, by_b) = (by_a.unwrap(), by_b.unwrap());
        let mut all: Vec<&String> = by_a.iter().chain(&by_b).collect();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 60, "every run claimed");
        assert_eq!(by_a.len() + by_b.len(), 60, "none claimed twice");
    }

    /// CancelRun on a gateway that does not drive the run: asked of its live holder, done at
    /// once when nobody holds it.
    #[tokio::test]
    async fn a_cancel_is_asked_of_the_live_holder_and_done_when_there_is_none() {
        let Some((a, b)) = two_gateways(Duration::from_secs(30)).await else {
            return;
        };
        a.create_run("held", "held", &pb::RunConfig::default())
            .await
            .unwrap();
        assert_eq!(
            b.cancel_or_request("held").await.unwrap(),
            CancelOutcome::Requested
        );
        assert!(a.renew_leases(&["held".into()]).await.unwrap()[0].cancel_requested);
        a.release_lease("held").await.unwrap();
        assert!(matches!(
            b.cancel_or_request("held").await.unwrap(),
            CancelOutcome::Cancelled(_)
        ));
        assert_eq!(
            a.run("held").await.unwrap().unwrap().state,
            pb::RunState::Cancelled
        );
        assert_eq!(
            b.cancel_or_request("held").await.unwrap(),
            CancelOutcome::AlreadyFinal
        );
    }
}
