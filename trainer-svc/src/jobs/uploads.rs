//! Examples streamed in chunks (UploadExamples) ahead of the CreateJob that names them: a
//! refined dataset can be larger than one gRPC message may be. An upload is written to
//! `<state>/uploads/<id>.jsonl.part` as it arrives, made durable and renamed to `<id>.jsonl`
//! when the stream ends, and moved into its job's folder by CreateJob (so it serves one job).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::JobError;
use super::store::{example_line, sync_dir};
use crate::train::Example;

/// A finished upload no job has claimed in this long is deleted (the gateway names its upload
/// in a CreateJob at once; an hour is for a client that retries).
const STALE: Duration = Duration::from_secs(3600);
/// How often a new upload looks for stale ones to delete.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// What uploads may hold on disk, so that a client (or many) cannot fill it.
#[derive(Clone, Copy, Debug)]
pub struct UploadLimits {
    /// Bytes of one upload (`--max-upload-bytes`).
    pub per_upload: u64,
    /// Bytes of every upload not yet claimed by a job, partial ones included
    /// (`--max-pending-upload-bytes`).
    pub pending: u64,
}

impl Default for UploadLimits {
    fn default() -> Self {
        Self {
            per_upload: 4 << 30,
            pending: 16 << 30,
        }
    }
}

pub struct Uploads {
    dir: PathBuf,
    limits: UploadLimits,
    /// Bytes of the files in `dir` (finished and partial uploads).
    pending: Arc<AtomicU64>,
    last_sweep: Mutex<Instant>,
}

/// Takes `bytes` off the pending count, never below zero: two CreateJobs naming one upload can
/// both release it before either has moved it, and a count that wrapped would refuse every
/// upload after.
fn release(pending: &AtomicU64, bytes: u64) {
    let _ = pending.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |p| {
        Some(p.saturating_sub(bytes))
    });
}

fn err(path: &Path, e: impl std::fmt::Display) -> JobError {
    JobError::Storage(format!("{}: {e}", path.display()))
}

impl Uploads {
    /// Opens `<state>/uploads`, dropping the partial uploads a stopped trainer left (their
    /// client got no id, so none can be named) and the finished ones nobody claimed.
    pub fn open(state_dir: &Path, limits: UploadLimits) -> Result<Self, JobError> {
        let dir = state_dir.join("uploads");
        std::fs::create_dir_all(&dir).map_err(|e| err(&dir, e))?;
        let uploads = Self {
            dir,
            limits,
            pending: Arc::new(AtomicU64::new(0)),
            last_sweep: Mutex::new(Instant::now()),
        };
        let kept = uploads.sweep(true)?;
        uploads.pending.store(kept, Ordering::SeqCst);
        Ok(uploads)
    }

    /// Deletes the stale finished uploads (and, at start-up, the partial ones); returns the
    /// bytes of what is kept.
    fn sweep(&self, starting: bool) -> Result<u64, JobError> {
        let mut kept = 0;
        for entry in std::fs::read_dir(&self.dir)
            .map_err(|e| err(&self.dir, e))?
            .flatten()
        {
            let path = entry.path();
            let Ok(meta) = entry.metadata() else { continue };
            let partial = path.extension().is_some_and(|e| e == "part");
            let stale = !partial
                && meta
                    .modified()
                    .is_ok_and(|t| t.elapsed().is_ok_and(|age| age > STALE));
            if (partial && starting) || stale {
                tracing::info!(path = %path.display(), "removing an unclaimed upload");
                if std::fs::remove_file(&path).is_ok() && !starting {
                    release(&self.pending, meta.len());
                }
            } else {
                kept += meta.len();
            }
        }
        Ok(kept)
    }

    /// A finished upload about to leave the folder (claimed by a job): its bytes no longer
    /// count against the pending limit.
    pub fn forget(&self, path: &Path) {
        if let Ok(meta) = std::fs::metadata(path) {
            release(&self.pending, meta.len());
        }
    }

    /// Deletes a finished upload that is not needed (its job existed already).
    pub fn discard(&self, path: &Path) {
        self.forget(path);
        let _ = std::fs::remove_file(path);
    }

    pub fn begin(&self) -> Result<UploadWriter, JobError> {
        let due = {
            let mut last = self.last_sweep.lock().unwrap_or_else(|p| p.into_inner());
            let due = last.elapsed() >= SWEEP_EVERY;
            if due {
                *last = Instant::now();
            }
            due
        };
        if due {
            self.sweep(false)?;
        }
        // 128 random bits: an upload id is a capability (whoever names it trains on its
        // examples), so no token holder may guess another's (it was the time and a counter).
        let id = format!("upl-{:032x}", rand::random::<u128>());
        let part = self.dir.join(format!("{id}.jsonl.part"));
        let file = std::fs::File::create(&part).map_err(|e| err(&part, e))?;
        Ok(UploadWriter {
            done: self.path(&id),
            dir: self.dir.clone(),
            id,
            file: std::io::BufWriter::new(file),
            part,
            examples: 0,
            bytes: 0,
            limits: self.limits,
            pending: Arc::clone(&self.pending),
        })
    }

    /// The finished upload `id`; the error names the field, and says nothing of the disk.
    pub fn finished(&self, id: &str) -> Result<PathBuf, JobError> {
        let invalid = |message: &str| JobError::Invalid {
            field: "upload_id".into(),
            message: message.into(),
        };
        // Ids are ours: anything else (a path, `..`) is not one, and is never joined to a path.
        let well_formed = id.starts_with("upl-")
            && id.len() <= 40
            && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if !well_formed {
            return Err(invalid("not an upload id"));
        }
        let path = self.path(id);
        if !path.is_file() {
            return Err(invalid(
                "no such upload: it was never finished, or a job has it already",
            ));
        }
        Ok(path)
    }

    fn path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.jsonl"))
    }
}

/// An upload being written. Dropped unfinished (the stream broke), it leaves a `.part` file
/// that the next start removes.
pub struct UploadWriter {
    id: String,
    dir: PathBuf,
    file: std::io::BufWriter<std::fs::File>,
    part: PathBuf,
    done: PathBuf,
    examples: u64,
    bytes: u64,
    limits: UploadLimits,
    pending: Arc<AtomicU64>,
}

impl UploadWriter {
    pub fn write(&mut self, example: &Example) -> Result<(), JobError> {
        let line = example_line(example).map_err(|e| err(&self.part, e))?;
        let n = line.len() as u64 + 1;
        // Too large is the request's fault (INVALID_ARGUMENT: no retry helps); too much pending
        // is the trainer's state (RESOURCE_EXHAUSTED: a caller waits, as for load shedding).
        if self.bytes + n > self.limits.per_upload {
            return Err(JobError::Invalid {
                field: format!("examples[{}]", self.examples),
                message: format!(
                    "an upload is at most {} bytes (the trainer's --max-upload-bytes)",
                    self.limits.per_upload
                ),
            });
        }
        let before = self.pending.fetch_add(n, Ordering::SeqCst);
        if before + n > self.limits.pending {
            release(&self.pending, n);
            return Err(JobError::Exhausted(format!(
                "uploads no job has claimed yet hold {before} bytes, at most {} (the trainer's \
                 --max-pending-upload-bytes): name them in CreateJob, or wait an hour for them to expire",
                self.limits.pending
            )));
        }
        self.bytes += n;
        writeln!(self.file, "{line}").map_err(|e| err(&self.part, e))?;
        self.examples += 1;
        Ok(())
    }

    pub fn examples(&self) -> u64 {
        self.examples
    }

    /// Makes the upload durable and nameable; returns its id.
    pub fn finish(self) -> Result<String, JobError> {
        let file = self
            .file
            .into_inner()
            .map_err(|e| err(&self.part, e.error()))?;
        file.sync_all().map_err(|e| err(&self.part, e))?;
        std::fs::rename(&self.part, &self.done).map_err(|e| err(&self.done, e))?;
        sync_dir(&self.dir)?;
        Ok(self.id)
    }

    /// Deletes what was written (the client sent a bad example, or its stream broke).
    pub fn abandon(self) {
        drop(self.file);
        let _ = std::fs::remove_file(&self.part);
        release(&self.pending, self.bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upload_ids_are_unguessable_from_one_another() {
        let dir = tempfile::tempdir().unwrap();
        let uploads = Uploads::open(dir.path(), UploadLimits::default()).unwrap();
        let ids: Vec<String> = (0..100)
            .map(|_| {
                let w = uploads.begin().unwrap();
                let id = w.id.clone();
                w.abandon();
                id
            })
            .collect();
        for (i, a) in ids.iter().enumerate() {
            assert!(
                uploads.finished(a).is_err(),
                "an abandoned upload is not nameable"
            );
            assert_eq!(a.len(), 36, "{a}");
            for b in &ids[i + 1..] {
                // Consecutive ids of a clock and a counter share most of their digits.
                assert_ne!(a[..16], b[..16], "{a} and {b}");
            }
        }
    }
}
