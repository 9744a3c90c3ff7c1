//! The one loop behind every resumable event stream (WatchRun, WatchJob): send what the log
//! holds after the client's last sequence number, wait for the next change, and end once the
//! client has the log's terminal event. A client that reconnects with the last number it saw
//! misses nothing; one that reconnects after the end gets an empty, finished stream at once.

use tokio::sync::watch;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::Status;

use super::ResponseStream;

/// An append-only log of numbered events (numbers rise from 1).
pub trait EventLog: Send + Sync + 'static {
    type Event: Send + 'static;
    /// Events after sequence `after`, oldest first: all of them, or a first page.
    fn after(&self, after: u64) -> impl Future<Output = Result<Vec<Self::Event>, Status>> + Send;
    /// The number of the log's terminal event (the work has ended), once it has one.
    fn terminal(&self) -> impl Future<Output = Result<Option<u64>, Status>> + Send;
    fn sequence(event: &Self::Event) -> u64;
    /// How often to read the log again without being woken: for a log that other processes
    /// append to (runs in a database several gateways share). `None`: wake-ups suffice.
    fn poll_every(&self) -> Option<std::time::Duration> {
        None
    }
}

/// Streams `log` from after `after`. `changes` moves whenever any event is appended; on
/// `shutdown` the stream ends with UNAVAILABLE telling the client where to resume.
pub fn watch_log<L: EventLog>(
    log: L,
    mut changes: watch::Receiver<u64>,
    shutdown: CancellationToken,
    mut after: u64,
) -> ResponseStream<L::Event> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            // Marked seen before reading, so an event landing between the read and the wait
            // still wakes us.
            changes.mark_unchanged();
            let read = match log.terminal().await {
                Ok(end) => log.after(after).await.map(|events| (end, events)),
                Err(s) => Err(s),
            };
            let (end, events) = match read {
                Ok(r) => r,
                Err(s) => {
                    let _ = tx.send(Err(s)).await;
                    return;
                }
            };
            if end.is_some_and(|end| end <= after) {
                return; // the client has everything, the terminal event included
            }
            if events.is_empty() {
                let poll = log.poll_every();
                let next_poll = async {
                    match poll {
                        Some(every) => tokio::time::sleep(every).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    changed = changes.changed() => if changed.is_err() { return },
                    () = next_poll => {}
                    () = shutdown.cancelled() => {
                        let message = format!("the server is shutting down; resume with after_sequence {after}");
                        let _ = tx.send(Err(Status::unavailable(message))).await;
                        return;
                    }
                    () = tx.closed() => return,
                }
                continue;
            }
            for event in events {
                after = L::sequence(&event);
                if tx.send(Ok(event)).await.is_err() {
                    return; // the client went away
                }
            }
        }
    });
    Box::pin(ReceiverStream::new(rx))
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use futures::StreamExt;

    use super::*;

    #[derive(Clone, Default)]
    struct Log(Arc<Mutex<(Vec<u64>, Option<u64>)>>);

    impl EventLog for Log {
        type Event = u64;
        async fn after(&self, after: u64) -> Result<Vec<u64>, Status> {
            Ok(self
                .0
                .lock()
                .unwrap()
                .0
                .iter()
                .copied()
                .filter(|&e| e > after)
                .collect())
        }
        async fn terminal(&self) -> Result<Option<u64>, Status> {
            Ok(self.0.lock().unwrap().1)
        }
        fn sequence(event: &u64) -> u64 {
            *event
        }
    }

    #[tokio::test]
    async fn follows_the_log_to_its_terminal_event_and_a_late_client_ends_at_once() {
        let log = Log::default();
        let (notify, changes) = watch::channel(0);
        let stream = watch_log(log.clone(), changes.clone(), CancellationToken::new(), 0);
        let append = |seq: u64, terminal: bool| {
            let mut l = log.0.lock().unwrap();
            l.0.push(seq);
            if terminal {
                l.1 = Some(seq);
            }
            drop(l);
            notify.send_modify(|n| *n += 1);
        };
        append(1, false);
        tokio::task::yield_now().await;
        append(2, false);
        append(3, true);
        let seen: Vec<u64> = stream.map(Result::unwrap).collect().await;
        assert_eq!(seen, [1, 2, 3]);
        let resumed: Vec<u64> =
            watch_log(log.clone(), changes.clone(), CancellationToken::new(), 1)
                .map(Result::unwrap)
                .collect()
                .await;
        assert_eq!(resumed, [2, 3]);
        let late = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            watch_log(log, changes, CancellationToken::new(), 3).collect::<Vec<_>>(),
        );
        assert!(
            late.await
                .expect("a client past the end gets a finished stream")
                .is_empty()
        );
    }
}
