//! Examples streamed in chunks (UploadExamples) ahead of the CreateJob that names them: a
//! refined dataset can be larger than one gRPC message may be. An upload is written to
//! `<state>/uploads/<id>.jsonl.part` as it arrives, made durable and renamed to `<id>.jsonl`
//! when the stream ends, and moved into its job's folder by CreateJob (so it serves one job).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::JobError;
use super::store::{example_line, sync_dir};
use crate::train::Example;

/// A finished upload no job has claimed in this long is deleted when the trainer starts.
const STALE: Duration = Duration::from_secs(24 * 3600);

pub struct Uploads {
    dir: PathBuf,
}

fn err(path: &Path, e: impl std::fmt::Display) -> JobError {
    JobError::Storage(format!("{}: {e}", path.display()))
}

impl Uploads {
    /// Opens `<state>/uploads`, dropping the partial uploads a stopped trainer left (their
    /// client got no id, so none can be named) and the finished ones nobody claimed.
    pub fn open(state_dir: &Path) -> Result<Self, JobError> {
        let dir = state_dir.join("uploads");
        std::fs::create_dir_all(&dir).map_err(|e| err(&dir, e))?;
        for entry in std::fs::read_dir(&dir).map_err(|e| err(&dir, e))?.flatten() {
            let path = entry.path();
            let partial = path.extension().is_some_and(|e| e == "part");
            let stale = entry
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t.elapsed().is_ok_and(|age| age > STALE));
            if partial || stale {
                tracing::info!(path = %path.display(), "removing an unclaimed upload");
                let _ = std::fs::remove_file(&path);
            }
        }
        Ok(Self { dir })
    }

    pub fn begin(&self) -> Result<UploadWriter, JobError> {
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
}

impl UploadWriter {
    pub fn write(&mut self, example: &Example) -> Result<(), JobError> {
        let line = example_line(example).map_err(|e| err(&self.part, e))?;
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

    /// Deletes what was written (the client sent a bad example).
    pub fn abandon(self) {
        drop(self.file);
        let _ = std::fs::remove_file(&self.part);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upload_ids_are_unguessable_from_one_another() {
        let dir = tempfile::tempdir().unwrap();
        let uploads = Uploads::open(dir.path()).unwrap();
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
