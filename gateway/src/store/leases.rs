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
        let free = if at_start && self.backend == Backend::Sqlite {
            "$6 = $6 AND $7 = $7"
        } else {
            "(lease_owner = '' OR lease_expires_ms < $6 OR (lease_owner = $1 AND $7 = 1))"
        };
        let sql = format!(
            "UPDATE runs SET lease_owner = $1, lease_expires_ms = $2 WHERE id IN ( \
               SELECT id FROM runs WHERE state IN ($3, $4, $5) AND {free} \
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
