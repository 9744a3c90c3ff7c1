//! Run leases: which gateway drives a run. A run is leased by the gateway that created it, renewed
//! by its heartbeat, freed when the run ends (or the gateway shuts down cleanly), and taken over
//! by another gateway once it expires (the holder died). On PostgreSQL, gateways claim expired
//! runs with `FOR UPDATE SKIP LOCKED`, so two never claim the same one; on SQLite, one gateway
//! owns the file and takes over every run at start-up.
//!
//! Fencing tokens: each claim of a run's lease (its creation, a takeover, a cancel by a gateway
//! that does not drive it) takes the next number of the run's `lease_epoch`, and every write a
//! driver makes carries the number its claim took, checked in the write's own transaction (on
//! PostgreSQL with the run's row locked). A gateway that stalled past its lease (a VM pause, a
//! partition) and came back holds an old number: its writes are refused with [`LeaseLost`],
//! even where the run has ended and its lease is free again. A run in a final state takes no
//! write from anyone.
//!
//! Lease times come from the database's clock (PostgreSQL's `clock_timestamp()`, SQLite's
//! `julianday('now')`), the one clock every gateway sharing it reads: a gateway whose own clock
//! is off neither steals a live lease nor keeps a dead one.

use arf_proto::v1 as pb;
use sqlx::{Any, Row as _, Transaction};

use super::{Backend, Store};

/// A write refused because this gateway no longer drives the run: another gateway claimed it
/// since (this one's lease expired), or it has ended.
#[derive(Debug, thiserror::Error)]
#[error("run {run_id}: this gateway no longer drives it ({})", why(holder, *ended))]
pub struct LeaseLost {
    pub run_id: String,
    /// Whoever holds the lease now (empty: nobody).
    pub holder: String,
    /// The run is in a final state.
    pub ended: bool,
}

fn why(holder: &str, ended: bool) -> String {
    match (ended, holder) {
        (true, _) => "it has ended".into(),
        (false, "") => "its lease expired, and another claim was made since".into(),
        (false, holder) => format!("gateway {holder:?} claimed it since"),
    }
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
    /// This gateway's claim is still the run's latest, and the run has not ended.
    pub held: bool,
    /// The run is in a final state.
    pub ended: bool,
    pub cancel_requested: bool,
}

const UNFINISHED: [pb::RunState; 3] = [
    pb::RunState::Ingesting,
    pb::RunState::Queued,
    pb::RunState::Running,
];

/// Whether a state read back from the database is one a run is driven in.
fn is_unfinished(state: i64) -> bool {
    UNFINISHED.iter().any(|s| *s as i64 == state)
}

/// The SQL condition a driver's write to a run carries: its claim is the latest (the fencing
/// token is bound as `$n`), and the run has not ended.
pub(super) fn fenced(n: usize) -> String {
    format!(
        "lease_epoch = ${n} AND state IN ({}, {}, {})",
        UNFINISHED[0] as i64, UNFINISHED[1] as i64, UNFINISHED[2] as i64
    )
}

impl Store {
    /// How long a lease lasts without a heartbeat.
    pub fn lease_duration(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.lease_ms as u64)
    }

    /// The database's clock, in milliseconds since the epoch, as an SQL expression.
    pub(super) fn db_now(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite => "CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)",
            Backend::Postgres => "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)",
        }
    }

    /// The fencing token of this gateway's claim on the run (-1, which no run has: none).
    pub(super) fn claim(&self, run_id: &str) -> i64 {
        *super::lock(&self.claims).get(run_id).unwrap_or(&-1)
    }

    pub(super) fn hold(&self, run_id: &str, epoch: i64) {
        super::lock(&self.claims).insert(run_id.to_string(), epoch);
    }

    /// Forgets the claim: the run ended, or its lease was given up or lost.
    pub(super) fn let_go(&self, run_id: &str) {
        super::lock(&self.claims).remove(run_id);
    }

    /// Refuses the write unless this gateway's claim is the run's latest and the run has not
    /// ended. On PostgreSQL it also locks the run's row to the end of the transaction: the run's
    /// writes, its event appends first, go one at a time. `Ok` when there is no such run (the
    /// caller's write finds nothing to change).
    pub(super) async fn fence(
        &self,
        tx: &mut Transaction<'_, Any>,
        run_id: &str,
    ) -> anyhow::Result<()> {
        let sql = match self.backend {
            Backend::Sqlite => "SELECT lease_owner, lease_epoch, state FROM runs WHERE id = $1",
            Backend::Postgres => {
                "SELECT lease_owner, lease_epoch, state FROM runs WHERE id = $1 FOR UPDATE"
            }
        };
        let Some(row) = sqlx::query(sql)
            .bind(run_id)
            .fetch_optional(&mut **tx)
            .await?
        else {
            return Ok(());
        };
        let (holder, epoch, state): (String, i64, i64) = (
            row.try_get("lease_owner")?,
            row.try_get("lease_epoch")?,
            row.try_get("state")?,
        );
        let ended = !is_unfinished(state);
        if ended || epoch != self.claim(run_id) {
            // This gateway stops working on the run: it holds no claim on it any more.
            self.let_go(run_id);
            return Err(LeaseLost {
                run_id: run_id.to_string(),
                holder,
                ended,
            }
            .into());
        }
        Ok(())
    }

    /// Checks, without writing, that this gateway still drives the run: before work a late
    /// gateway must not start (a training job).
    pub async fn check_lease(&self, run_id: &str) -> anyhow::Result<()> {
        let mut tx = self.pool.begin().await?;
        self.fence(&mut tx, run_id).await?;
        tx.commit().await?;
        Ok(())
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
        let now = self.db_now();
        let sql = format!(
            "UPDATE runs SET lease_owner = $1, lease_expires_ms = {now} + $2, \
               lease_epoch = lease_epoch + 1 WHERE id IN ( \
               SELECT id FROM runs WHERE state IN ($3, $4, $5) \
               AND (lease_owner = '' OR lease_expires_ms < {now} OR (lease_owner = $1 AND $6 = 1) OR $8 = 1) \
               ORDER BY create_time_ms LIMIT $7{skip_locked}) \
             RETURNING id, state, lease_epoch"
        );
        let rows = sqlx::query(&sql)
            .bind(&self.owner)
            .bind(self.lease_ms)
            .bind(UNFINISHED[0] as i64)
            .bind(UNFINISHED[1] as i64)
            .bind(UNFINISHED[2] as i64)
            .bind(at_start as i64)
            .bind(limit as i64)
            .bind(take_all as i64)
            .fetch_all(&self.pool)
            .await?;
        let mut claimed = rows
            .iter()
            .map(|r| {
                let state: i64 = r.try_get("state")?;
                let run_id: String = r.try_get("id")?;
                self.hold(&run_id, r.try_get("lease_epoch")?);
                Ok(Claimed {
                    run_id,
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
        let renew = format!(
            "UPDATE runs SET lease_expires_ms = {} + $2 WHERE id = $1 AND {}",
            self.db_now(),
            fenced(3)
        );
        for id in run_ids {
            sqlx::query(&renew)
                .bind(id)
                .bind(self.lease_ms)
                .bind(self.claim(id))
                .execute(&self.pool)
                .await?;
            let row = sqlx::query(
                "SELECT lease_owner, cancel_requested, lease_epoch, state FROM runs WHERE id = $1",
            )
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
            if let Some(row) = row {
                let (cancel, epoch, state): (i64, i64, i64) = (
                    row.try_get("cancel_requested")?,
                    row.try_get("lease_epoch")?,
                    row.try_get("state")?,
                );
                let ended = !is_unfinished(state);
                let held = !ended && epoch == self.claim(id);
                if !held {
                    self.let_go(id);
                }
                states.push(LeaseState {
                    run_id: id.clone(),
                    holder: row.try_get("lease_owner")?,
                    held,
                    ended,
                    cancel_requested: cancel != 0,
                });
            }
        }
        Ok(states)
    }

    /// Gives up the lease of a run this gateway stops driving without ending it (a clean
    /// shutdown): another gateway takes it over at once instead of after the expiry.
    pub async fn release_lease(&self, run_id: &str) -> anyhow::Result<()> {
        sqlx::query(&format!(
            "UPDATE runs SET lease_owner = '', lease_expires_ms = 0 WHERE id = $1 AND {}",
            fenced(2)
        ))
        .bind(run_id)
        .bind(self.claim(run_id))
        .execute(&self.pool)
        .await?;
        self.let_go(run_id);
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
            "SELECT state, lease_owner, lease_expires_ms, {} AS now_ms FROM runs WHERE id = $1{lock}",
            self.db_now()
        ))
        .bind(run_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Ok(CancelOutcome::AlreadyFinal);
        };
        let state: i64 = row.try_get("state")?;
        let holder: String = row.try_get("lease_owner")?;
        let expires: i64 = row.try_get("lease_expires_ms")?;
        let now: i64 = row.try_get("now_ms")?;
        if !is_unfinished(state) {
            return Ok(CancelOutcome::AlreadyFinal);
        }
        let held_elsewhere = !holder.is_empty() && holder != self.owner && expires >= now;
        if held_elsewhere {
            sqlx::query("UPDATE runs SET cancel_requested = 1 WHERE id = $1")
                .bind(run_id)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            return Ok(CancelOutcome::Requested);
        }
        // Nobody drives it: claim it (a new fencing token: a holder that stalled and comes back
        // is refused) and end it, in this transaction.
        let epoch: i64 = sqlx::query_scalar(
            "UPDATE runs SET lease_owner = $2, lease_epoch = lease_epoch + 1 WHERE id = $1 \
             RETURNING lease_epoch",
        )
        .bind(run_id)
        .bind(&self.owner)
        .fetch_one(&mut *tx)
        .await?;
        self.hold(run_id, epoch);
        let event = self
            .set_run_state_in(
                &mut tx,
                run_id,
                pb::RunState::Cancelled,
                "cancelled by request",
            )
            .await;
        self.let_go(run_id);
        let event = event?;
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

    /// A run `id` created by `store` and running: leased by it.
    async fn running_run(store: &Store, id: &str) {
        store
            .create_run(id, id, &pb::RunConfig::default())
            .await
            .unwrap();
        store
            .set_run_state(id, pb::RunState::Running, "")
            .await
            .unwrap();
    }

    fn warning(text: &str) -> pb::run_event::Kind {
        pb::run_event::Kind::Warning(text.into())
    }

    /// A gateway frozen inside a transaction on its run's row (a VM pause between two
    /// statements) does not keep the run from the others: the server ends the transaction once
    /// it has been idle for a lease, and the row's lock with it (the claims skip locked rows).
    #[tokio::test]
    async fn a_gateway_frozen_inside_a_transaction_does_not_keep_its_run() {
        let Some((a, b)) = two_gateways(Duration::from_millis(600)).await else {
            return;
        };
        running_run(&a, "r").await;
        // What a frozen event append leaves: the row updated, the transaction never ended.
        let mut frozen = a.pool.begin().await.unwrap();
        sqlx::query("UPDATE runs SET last_event_seq = last_event_seq + 1 WHERE id = $1")
            .bind("r")
            .execute(&mut *frozen)
            .await
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let claimed = loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let claimed = b.claim_runs(8, false).await.unwrap();
            if !claimed.is_empty() || std::time::Instant::now() > deadline {
                break claimed;
            }
        };
        assert_eq!(
            claimed
                .iter()
                .map(|c| c.run_id.as_str())
                .collect::<Vec<_>>(),
            ["r"],
            "the other gateway takes the run once the frozen transaction is ended"
        );
        assert!(
            frozen.commit().await.is_err(),
            "the frozen gateway's transaction was ended by the server"
        );
    }

    /// A run is driven by the gateway that holds its lease; another takes it only once the lease
    /// expires, and from then on the first one's writes are refused: the log stays one gap-free
    /// sequence written by one gateway at a time.
    #[tokio::test]
    async fn a_lease_is_taken_over_only_when_it_expires_and_fences_the_old_holder() {
        let Some((a, b)) = two_gateways(Duration::from_millis(600)).await else {
            return;
        };
        running_run(&a, "r").await;
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
            (seen[0].holder.as_str(), seen[0].held),
            ("gateway-b", false),
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

    /// A run in a final state takes no write from anyone, its own last driver included.
    #[tokio::test]
    async fn an_ended_run_takes_no_write() {
        for (_db, store) in testing::stores().await {
            store
                .create_run("r", "r", &pb::RunConfig::default())
                .await
                .unwrap();
            store
                .set_run_state("r", pb::RunState::Cancelled, "cancelled by request")
                .await
                .unwrap();
            let refused = store.append_event("r", warning("late")).await.unwrap_err();
            let lost = refused.downcast_ref::<LeaseLost>().expect("LeaseLost");
            assert!(lost.ended, "{refused:#}");
            assert!(store.set_stage("r", pb::Stage::Revise).await.is_err());
            let lease = &store.renew_leases(&["r".into()]).await.unwrap()[0];
            assert!(!lease.held && lease.ended, "{lease:?}");
            assert_eq!(store.last_event_sequence("r").await.unwrap(), 1);
        }
    }

    /// The fencing token: a gateway frozen past its lease comes back after another gateway
    /// took the run over and ended it (the lease is free again, as every final state leaves
    /// it). Its claim is not the latest: each of its writes is refused, and its heartbeat says
    /// so.
    #[tokio::test]
    async fn a_stalled_holder_is_refused_after_another_gateway_ended_the_run() {
        let Some((a, b)) = two_gateways(Duration::from_millis(500)).await else {
            return;
        };
        for (id, end) in [
            ("cancelled", pb::RunState::Cancelled),
            ("finished", pb::RunState::Succeeded),
        ] {
            running_run(&a, id).await;
            tokio::time::sleep(Duration::from_millis(600)).await;
            assert_eq!(b.claim_runs(8, false).await.unwrap().len(), 1);
            b.set_run_state(id, end, "").await.unwrap();
            let last = b.last_event_sequence(id).await.unwrap();

            let refused = a.append_event(id, warning("a, late")).await.unwrap_err();
            assert!(refused.downcast_ref::<LeaseLost>().is_some(), "{refused:#}");
            assert!(a.set_stage(id, pb::Stage::Finetune).await.is_err());
            assert!(a.check_lease(id).await.is_err());
            assert!(
                a.set_run_state(id, pb::RunState::Failed, "x")
                    .await
                    .is_err()
            );
            let lease = &a.renew_leases(&[id.into()]).await.unwrap()[0];
            assert!(!lease.held, "{lease:?}");
            assert_eq!(b.last_event_sequence(id).await.unwrap(), last, "{id}");
            assert_eq!(b.run(id).await.unwrap().unwrap().state, end);
        }
    }

    /// Lease times are the database's: a gateway whose clock runs an hour fast neither takes a
    /// live lease nor, once it dies, holds its own for an hour; one whose clock is an hour slow
    /// keeps a lease it renews.
    #[tokio::test]
    async fn a_skewed_gateway_clock_neither_steals_nor_keeps_a_lease() {
        let Some((a, b)) = two_gateways(Duration::from_millis(500)).await else {
            return;
        };
        let hour = 3_600_000;
        let (fast, slow) = (a.with_clock_skew(hour), b.with_clock_skew(-hour));
        slow.create_run("slow's", "r", &pb::RunConfig::default())
            .await
            .unwrap();
        assert!(
            fast.claim_runs(8, false).await.unwrap().is_empty(),
            "a live lease is not stolen"
        );
        fast.create_run("fast's", "r", &pb::RunConfig::default())
            .await
            .unwrap();
        for _ in 0..4 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            // slow renews its run; fast has died (no heartbeat).
            assert!(slow.renew_leases(&["slow's".into()]).await.unwrap()[0].held);
        }
        let claimed: Vec<String> = slow
            .claim_runs(8, false)
            .await
            .unwrap()
            .into_iter()
            .map(|c| c.run_id)
            .collect();
        assert_eq!(
            claimed,
            ["fast's"],
            "the dead lease is taken, the live one kept"
        );
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
