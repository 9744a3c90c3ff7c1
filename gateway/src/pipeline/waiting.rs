//! Every call a stage makes to another service goes through [`Pipeline::call`]: the status is
//! judged by the one policy in `clients::faults`, a service that is down is waited for with
//! backoff while the run stays RUNNING, and the run's events say so ("waiting for the editor:
//! UNAVAILABLE, retry 3 in 4 s"), once per retry level however many items are waiting, and once
//! more when the service answers again.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use arf_proto::v1 as pb;
use pb::run_event::Kind;
use rand::Rng;
use tokio_util::sync::CancellationToken;
use tonic::Status;

use super::{Pipeline, RunError};
use crate::clients::faults::{Fault, SERVER_ERRORS_IN_A_ROW, SLOW_ATTEMPTS, classify};

/// The services, as the events name them.
pub(crate) const ANALYZER: &str = "the analyzer";
pub(crate) const EDITOR: &str = "the editor";
pub(crate) const TEACHER: &str = "the teacher";
pub(crate) const TRAINER: &str = "the trainer";
pub(crate) const STUDENT: &str = "the student";

/// The longest pause between two tries.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
const FIRST_BACKOFF: Duration = Duration::from_millis(500);

/// Per run and service that has failed lately: the highest retry already announced in the
/// run's events, and the server errors in a row. No entry: the service is answering.
#[derive(Default)]
pub(crate) struct Waits(Mutex<HashMap<(String, &'static str), Wait>>);

#[derive(Default)]
struct Wait {
    announced: u32,
    server_errors: u32,
}

impl Waits {
    fn with<R>(&self, run_id: &str, service: &'static str, f: impl FnOnce(&mut Wait) -> R) -> R {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        f(map.entry((run_id.to_string(), service)).or_default())
    }

    /// Whether retry `attempt` is the first of its level for this run and service.
    fn announce(&self, run_id: &str, service: &'static str, attempt: u32) -> bool {
        self.with(run_id, service, |w| {
            let first = attempt > w.announced;
            w.announced = w.announced.max(attempt);
            first
        })
    }

    /// Counts one more server error in a row; returns how many.
    fn server_error(&self, run_id: &str, service: &'static str) -> u32 {
        self.with(run_id, service, |w| {
            w.server_errors += 1;
            w.server_errors
        })
    }

    /// The service answered: forgets its failures; returns the retries that had been announced
    /// (0: it was not waited for). Called after every answer, so the common case (nothing
    /// failed) takes no allocation.
    fn recovered(&self, run_id: &str, service: &'static str) -> u32 {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if map.is_empty() {
            return 0;
        }
        map.remove(&(run_id.to_string(), service))
            .map_or(0, |w| w.announced)
    }

    pub(crate) fn forget_run(&self, run_id: &str) {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|(run, _), _| run != run_id);
    }
}

/// The pause before retry `attempt` (from 1): doubling from half a second to
/// [`MAX_BACKOFF`], with a fifth of jitter so that waiting items do not call back in lockstep.
pub(super) fn backoff(attempt: u32) -> Duration {
    let base = FIRST_BACKOFF
        .saturating_mul(1 << attempt.saturating_sub(1).min(10))
        .min(MAX_BACKOFF);
    base.mul_f64(rand::rng().random_range(0.8..1.2))
}

impl Pipeline {
    /// Calls `service` (named for the events: "the editor", ...) until it answers, or until the
    /// fault policy says to stop. `Ok(Ok(answer))`; `Ok(Err(status))`: the service refused this
    /// item, or kept timing out on it, and the caller fails the item; `Err`: the run stops.
    pub(crate) async fn call<T, F, Fut>(
        &self,
        run_id: &str,
        token: &CancellationToken,
        service: &'static str,
        mut call: F,
    ) -> Result<Result<T, Status>, RunError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let mut attempt = 0u32;
        let mut timeouts = 0u32;
        loop {
            self.check(token)?;
            let status = match call().await {
                Ok(answer) => {
                    self.answered(run_id, service).await?;
                    return Ok(Ok(answer));
                }
                Err(status) => status,
            };
            let fault = classify(&status);
            match fault {
                Fault::ItemRejected => return Ok(Err(status)),
                Fault::ServerError
                    if self.waits.server_error(run_id, service) < SERVER_ERRORS_IN_A_ROW =>
                {
                    return Ok(Err(status));
                }
                Fault::ServerError => {
                    return Err(anyhow::anyhow!(
                        "{service} failed {SERVER_ERRORS_IN_A_ROW} items in a row, the last with \
                         {}: {}",
                        status.code(),
                        status.message()
                    )
                    .into());
                }
                Fault::Fatal => {
                    return Err(anyhow::anyhow!(
                        "{service} failed: {}: {}",
                        status.code(),
                        status.message()
                    )
                    .into());
                }
                Fault::Slow if timeouts + 1 >= SLOW_ATTEMPTS => return Ok(Err(status)),
                Fault::Slow | Fault::Transient => {
                    timeouts += u32::from(fault == Fault::Slow);
                    attempt += 1;
                    let delay = arf_common::status::retry_after(&status)
                        .unwrap_or_else(|| backoff(attempt));
                    self.waiting(run_id, service, &status, attempt, delay)
                        .await?;
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = token.cancelled() => return Err(self.stopped(token)),
                    }
                }
            }
        }
    }

    /// Why the run stops now that its token fired.
    pub(super) fn stopped(&self, token: &CancellationToken) -> RunError {
        self.check(token).err().unwrap_or(RunError::Cancelled)
    }

    async fn waiting(
        &self,
        run_id: &str,
        service: &'static str,
        status: &Status,
        attempt: u32,
        delay: Duration,
    ) -> anyhow::Result<()> {
        tracing::warn!(run_id, service, code = ?status.code(), error = %status.message(), attempt, delay_ms = delay.as_millis() as u64, "waiting for a service");
        if self.waits.announce(run_id, service, attempt) {
            self.emit(
                run_id,
                Kind::Waiting(pb::Waiting {
                    service: service.into(),
                    code: code_name(status.code()),
                    message: status.message().into(),
                    attempt,
                    retry_in_ms: delay.as_millis() as u64,
                    recovered: false,
                }),
            )
            .await?;
        }
        Ok(())
    }

    async fn answered(&self, run_id: &str, service: &'static str) -> anyhow::Result<()> {
        let retries = self.waits.recovered(run_id, service);
        if retries > 0 {
            tracing::info!(run_id, service, retries, "the service answers again");
            self.emit(
                run_id,
                Kind::Waiting(pb::Waiting {
                    service: service.into(),
                    attempt: retries,
                    recovered: true,
                    ..Default::default()
                }),
            )
            .await?;
        }
        Ok(())
    }
}

/// The code as gRPC spells it ("UNAVAILABLE"), for events that scripts read.
fn code_name(code: tonic::Code) -> String {
    let spaced = format!("{code:?}");
    let mut name = String::new();
    for (i, c) in spaced.chars().enumerate() {
        if c.is_uppercase() && i > 0 {
            name.push('_');
        }
        name.push(c.to_ascii_uppercase());
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        assert!(backoff(1) <= Duration::from_millis(600));
        assert!(backoff(3) >= Duration::from_millis(1600));
        assert!(backoff(40) <= MAX_BACKOFF.mul_f64(1.2));
        assert_eq!(
            code_name(tonic::Code::DeadlineExceeded),
            "DEADLINE_EXCEEDED"
        );
        assert_eq!(code_name(tonic::Code::Unavailable), "UNAVAILABLE");
    }

    #[test]
    fn each_retry_level_is_announced_once_per_run_and_service() {
        let waits = Waits::default();
        assert!(waits.announce("r", "the editor", 1));
        assert!(
            !waits.announce("r", "the editor", 1),
            "a second waiting item"
        );
        assert!(waits.announce("r", "the analyzer", 1));
        assert!(waits.announce("r", "the editor", 2));
        assert_eq!(waits.server_error("r", "the editor"), 1);
        assert_eq!(waits.server_error("r", "the editor"), 2);
        assert_eq!(waits.recovered("r", "the editor"), 2);
        assert_eq!(
            waits.server_error("r", "the editor"),
            1,
            "an answer resets the count"
        );
        assert_eq!(waits.recovered("r", "the editor"), 0);
    }
}
