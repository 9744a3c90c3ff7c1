//! Jobs on disk: `<state>/jobs/<id>/job.json` (rewritten atomically on each change),
//! `events.jsonl` (appended), `examples.jsonl` (inline data), `output/` (checkpoints, adapter).

use std::io::Write;
use std::path::{Path, PathBuf};

use arf_common::dataset::Record;

use super::{Job, JobError, JobEvent};
use crate::train::Example;

pub struct Store {
    root: PathBuf,
}

/// Makes a rename in `dir` durable (the directory entry is data too).
pub(super) fn sync_dir(dir: &Path) -> Result<(), JobError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| err(dir, e))
}

fn err(path: &Path, e: impl std::fmt::Display) -> JobError {
    JobError::Storage(format!("{}: {e}", path.display()))
}

/// One example as a line of a job's examples file (the dataset's JSONL row format).
pub(super) fn example_line(e: &Example) -> serde_json::Result<String> {
    serde_json::to_string(&Record {
        conversation: e.conversation.clone(),
        summary: Some(e.summary.clone()),
        references: Vec::new(),
        labels: Vec::new(),
        injections: Vec::new(),
    })
}

impl Store {
    pub fn open(state_dir: &Path) -> Result<Self, JobError> {
        let root = state_dir.join("jobs");
        std::fs::create_dir_all(&root).map_err(|e| err(&root, e))?;
        Ok(Self { root })
    }

    pub fn job_dir(&self, id: &str) -> PathBuf {
        self.root.join(id)
    }

    pub fn create_job_dir(&self, id: &str) -> Result<(), JobError> {
        let dir = self.job_dir(id);
        std::fs::create_dir_all(&dir).map_err(|e| err(&dir, e))
    }

    pub fn output_dir(&self, id: &str) -> PathBuf {
        self.job_dir(id).join("output")
    }

    pub fn save_job(&self, job: &Job) -> Result<(), JobError> {
        let dir = self.job_dir(&job.id);
        std::fs::create_dir_all(&dir).map_err(|e| err(&dir, e))?;
        let tmp = dir.join("job.json.tmp");
        let text = serde_json::to_string_pretty(job).map_err(|e| err(&tmp, e))?;
        // Written, flushed to disk, then renamed, and the rename itself flushed: after a power
        // cut job.json is the old state or the new one, never an empty file.
        let mut file = std::fs::File::create(&tmp).map_err(|e| err(&tmp, e))?;
        file.write_all(text.as_bytes()).map_err(|e| err(&tmp, e))?;
        file.sync_all().map_err(|e| err(&tmp, e))?;
        std::fs::rename(&tmp, dir.join("job.json")).map_err(|e| err(&dir, e))?;
        sync_dir(&dir)
    }

    /// Deletes what was written for a job that is not kept (a duplicate of an idempotent create).
    pub fn remove_job_files(&self, id: &str) {
        let _ = std::fs::remove_dir_all(self.job_dir(id));
    }

    /// Appends one event and flushes it to disk before anyone is told of it (a watcher, the
    /// gateway's relay): a number once relayed is on disk, so a restart never hands it out again.
    /// The line and its newline go in one write, so a killed process leaves whole lines; only a
    /// power cut can tear the last one, and `load_all` cuts that off.
    pub fn append_event(&self, event: &JobEvent) -> Result<(), JobError> {
        let path = self.job_dir(&event.job_id).join("events.jsonl");
        let mut line = serde_json::to_string(event).map_err(|e| err(&path, e))?;
        line.push('\n');
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| err(&path, e))?;
        f.write_all(line.as_bytes()).map_err(|e| err(&path, e))?;
        f.sync_data().map_err(|e| err(&path, e))
    }

    /// Writes a job's inline examples whole and durably (temporary file, flushed, renamed) before
    /// the job is acknowledged: a job resumed after a power cut trains on all of them.
    pub fn save_examples(&self, id: &str, examples: &[Example]) -> Result<PathBuf, JobError> {
        let dir = self.job_dir(id);
        std::fs::create_dir_all(&dir).map_err(|e| err(&dir, e))?;
        let path = self.examples_path(id);
        let tmp = dir.join("examples.jsonl.tmp");
        let mut file =
            std::io::BufWriter::new(std::fs::File::create(&tmp).map_err(|e| err(&tmp, e))?);
        for e in examples {
            let line = example_line(e).map_err(|e| err(&path, e))?;
            writeln!(file, "{line}").map_err(|e| err(&tmp, e))?;
        }
        let file = file.into_inner().map_err(|e| err(&tmp, e.error()))?;
        file.sync_all().map_err(|e| err(&tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| err(&path, e))?;
        sync_dir(&dir)?;
        Ok(path)
    }

    /// Where a job's own copy of its examples is (inline or uploaded ones).
    pub fn examples_path(&self, id: &str) -> PathBuf {
        self.job_dir(id).join("examples.jsonl")
    }

    /// Moves a finished upload into the job's folder: the job owns it from now on.
    pub fn claim_upload(&self, id: &str, upload: &Path) -> Result<PathBuf, JobError> {
        let path = self.examples_path(id);
        std::fs::rename(upload, &path).map_err(|e| err(&path, e))?;
        sync_dir(&self.job_dir(id))?;
        Ok(path)
    }

    /// Every stored job with its events, in id (= creation) order, and the job folders whose
    /// `job.json` cannot be read (listed apart, so that one damaged folder does not keep the
    /// trainer from starting). A torn last event line (a crash mid-write) is dropped.
    pub fn load_all(&self) -> Result<(Vec<(Job, Vec<JobEvent>)>, Vec<Unreadable>), JobError> {
        let mut jobs = Vec::new();
        let mut unreadable = Vec::new();
        let entries = std::fs::read_dir(&self.root).map_err(|e| err(&self.root, e))?;
        for entry in entries.flatten() {
            let dir = entry.path();
            let Some(id) = dir.file_name().and_then(|n| n.to_str()).map(str::to_string) else {
                continue;
            };
            let path = dir.join("job.json");
            let job = match std::fs::read_to_string(&path) {
                // Created, but stopped before its first save: never acknowledged to a client.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => Err(e.to_string()),
                Ok(text) => serde_json::from_str::<Job>(&text).map_err(|e| e.to_string()),
            };
            let job = match job {
                Ok(job) if job.id == id => job,
                Ok(job) => {
                    let error = format!("it names job {:?}, not its folder's", job.id);
                    unreadable.push(Unreadable { id, path, error });
                    continue;
                }
                Err(error) => {
                    unreadable.push(Unreadable { id, path, error });
                    continue;
                }
            };
            let events = read_events(&dir.join("events.jsonl"))?;
            jobs.push((job, events));
        }
        jobs.sort_by(|a, b| a.0.id.cmp(&b.0.id));
        unreadable.sort_by(|a, b| a.id.cmp(&b.id));
        Ok((jobs, unreadable))
    }
}

/// A job's event log. A last line without its newline is what a power cut mid-append leaves: it
/// is cut off the file (that event was never told to anyone, since an event is flushed before it
/// is), so the next append starts a line of its own instead of gluing onto it and being lost
/// at the next restart, its number then handed out twice.
fn read_events(path: &Path) -> Result<Vec<JobEvent>, JobError> {
    let mut text = match std::fs::read_to_string(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        other => other.map_err(|e| err(path, e))?,
    };
    if !text.is_empty() && !text.ends_with('\n') {
        let whole = text.rfind('\n').map_or(0, |i| i + 1);
        tracing::warn!(path = %path.display(), torn = text.len() - whole,
            "cut a torn last line off a job's event log (a crash mid-append)");
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(|e| err(path, e))?;
        file.set_len(whole as u64)
            .and_then(|()| file.sync_all())
            .map_err(|e| err(path, e))?;
        text.truncate(whole);
    }
    Ok(text
        .lines()
        .enumerate()
        .filter_map(|(i, line)| match serde_json::from_str(line) {
            Ok(event) => Some(event),
            Err(e) => {
                tracing::warn!(path = %path.display(), line = i + 1, error = %e,
                    "skipped an unreadable line of a job's event log");
                None
            }
        })
        .collect())
}

/// A job folder whose `job.json` could not be read or parsed.
#[derive(Debug)]
pub struct Unreadable {
    pub id: String,
    pub path: PathBuf,
    pub error: String,
}
