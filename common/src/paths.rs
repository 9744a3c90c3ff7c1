//! Files a client may name on a server's machine (a dataset, a base model), confined to folders
//! the operator configures (`--dataset-root`, `--model-root`). Outside them the answer is
//! PERMISSION_DENIED, worded the same whether the file exists or not, so a client learns
//! nothing about the rest of the machine (no `/etc/passwd` through a run's dataset).

use std::path::{Component, Path, PathBuf};

use tonic::Status;

/// The folders under which client-named paths are allowed.
#[derive(Debug, Clone)]
pub struct PathRoots {
    /// None: any path (the embedded suite and tests, where the client is the operator).
    roots: Option<Vec<PathBuf>>,
    /// The flag that configures them, for the error message.
    flag: &'static str,
}

impl PathRoots {
    /// Every path is allowed: for a single-user process whose client is its operator.
    pub fn any(flag: &'static str) -> Self {
        Self { roots: None, flag }
    }

    /// Only paths under these folders (none: no client-named path at all).
    pub fn only(roots: &[PathBuf], flag: &'static str) -> Self {
        let roots = roots
            .iter()
            .map(|r| {
                let absolute = normalize(r);
                std::fs::canonicalize(&absolute).unwrap_or(absolute)
            })
            .collect();
        Self {
            roots: Some(roots),
            flag,
        }
    }

    /// The path to use for `path`, named by a client in `field`, or PERMISSION_DENIED.
    pub fn confine(&self, field: &str, path: &str) -> Result<PathBuf, Status> {
        let Some(roots) = &self.roots else {
            return Ok(PathBuf::from(path));
        };
        let denied = || self.denied(field, path);
        let lexical = normalize(Path::new(path));
        let inside = |p: &Path| roots.iter().any(|r| p.starts_with(r));
        if !inside(&lexical) {
            return Err(denied());
        }
        // A symbolic link inside a root may point outside it: judge where it really leads.
        match std::fs::canonicalize(&lexical) {
            Ok(real) if inside(&real) => Ok(real),
            Ok(_) => Err(denied()),
            Err(_) => Ok(lexical),
        }
    }

    /// Opens the file at `path` (named by a client in `field`) to read it now, confined as
    /// [`Self::confine`] says, and judges what was opened rather than the name: the real path is
    /// read back from the open descriptor, so a link swapped in after an earlier check (a path
    /// checked at CreateJob, read when the job trains) is refused. A missing file or a folder is
    /// INVALID_ARGUMENT naming the field.
    pub fn open(&self, field: &str, path: &str) -> Result<Opened, Status> {
        let confined = self.confine(field, path)?;
        let file = std::fs::File::open(&confined).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => {
                crate::status::invalid_field(field, format!("no file at {path} on this server"))
            }
            _ => crate::status::invalid_field(field, format!("cannot open {path}: {e}")),
        })?;
        if !file.metadata().is_ok_and(|m| m.is_file()) {
            return Err(crate::status::invalid_field(
                field,
                format!("{path} is not a file"),
            ));
        }
        let real = opened_path(&file, &confined);
        if !self.allows(&real) {
            return Err(self.denied(field, path));
        }
        Ok(Opened { path: real, file })
    }

    /// Checks, when a model is about to be loaded, that the model at `path` (a file, or a folder
    /// and every file in it) still lies under the roots: a file inside a confined folder may be a
    /// link to anywhere, or be swapped for one after the request was checked.
    pub fn check_model(&self, field: &str, path: &Path) -> Result<(), Status> {
        if self.roots.is_none() {
            return Ok(());
        }
        let shown = path.display().to_string();
        let real = std::fs::canonicalize(path).map_err(|_| self.denied(field, &shown))?;
        if !self.allows(&real) {
            return Err(self.denied(field, &shown));
        }
        if real.is_dir() {
            let entries = std::fs::read_dir(&real).map_err(|_| self.denied(field, &shown))?;
            for entry in entries.flatten() {
                let named = entry.path().display().to_string();
                match std::fs::canonicalize(entry.path()) {
                    Ok(target) if self.allows(&target) => {}
                    _ => return Err(self.denied(field, &named)),
                }
            }
        }
        Ok(())
    }

    fn allows(&self, real: &Path) -> bool {
        self.roots
            .as_ref()
            .is_none_or(|roots| roots.iter().any(|r| real.starts_with(r)))
    }

    fn denied(&self, field: &str, path: &str) -> Status {
        Status::permission_denied(format!(
            "{field}: {path:?} is not under a folder this server reads for clients (its {} flag)",
            self.flag
        ))
    }
}

/// A client-named file, open, with where it really is.
#[derive(Debug)]
pub struct Opened {
    pub path: PathBuf,
    pub file: std::fs::File,
}

/// The path of the file behind an open descriptor (Linux: its /proc link, which names the file
/// that was opened whatever has been renamed or linked since); elsewhere the name it was opened by.
fn opened_path(file: &std::fs::File, opened_by: &Path) -> PathBuf {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        if let Ok(real) = std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd())) {
            return real;
        }
    }
    let _ = file;
    std::fs::canonicalize(opened_by).unwrap_or_else(|_| opened_by.to_path_buf())
}

/// Absolute, with `.` and `..` resolved by name (without touching the file system).
fn normalize(path: &Path) -> PathBuf {
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let mut out = PathBuf::new();
    for part in absolute.components() {
        match part {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    #[test]
    fn only_paths_under_the_roots_pass_and_the_answer_reveals_nothing() {
        let root = tempfile::tempdir().unwrap();
        let data = root.path().join("data.jsonl");
        std::fs::write(&data, "{}").unwrap();
        let roots = PathRoots::only(&[root.path().to_path_buf()], "--dataset-root");
        let real_root = std::fs::canonicalize(root.path()).unwrap();
        assert_eq!(
            roots
                .confine("spec.dataset_path", &data.display().to_string())
                .unwrap(),
            real_root.join("data.jsonl")
        );
        let denied = |p: &str| roots.confine("spec.dataset_path", p).unwrap_err();
        let existing = denied("/etc/passwd");
        let missing = denied("/etc/no-such-file");
        assert_eq!(existing.code(), Code::PermissionDenied);
        assert_eq!(
            existing.message().replace("passwd", "X"),
            missing.message().replace("no-such-file", "X"),
            "the same answer whether the file exists or not"
        );
        let escape = format!("{}/../../etc/passwd", root.path().display());
        assert_eq!(denied(&escape).code(), Code::PermissionDenied);
        // A link inside the root that leads out of it.
        std::os::unix::fs::symlink("/etc/passwd", root.path().join("link")).unwrap();
        assert_eq!(
            denied(&root.path().join("link").display().to_string()).code(),
            Code::PermissionDenied
        );
        let none = PathRoots::only(&[], "--dataset-root");
        assert_eq!(
            none.confine("f", &data.display().to_string())
                .unwrap_err()
                .code(),
            Code::PermissionDenied
        );
        assert!(
            PathRoots::any("--dataset-root")
                .confine("f", "/etc/passwd")
                .is_ok()
        );
    }

    /// Issue 35 item 7: a path checked once and read later is judged again when it is opened,
    /// by the file the descriptor holds; a model's files are checked one by one.
    #[test]
    fn a_link_swapped_in_after_the_check_is_refused_at_use() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let secret = outside.path().join("secret.jsonl");
        std::fs::write(&secret, "{}").unwrap();
        let data = root.path().join("data.jsonl");
        std::fs::write(&data, "{}").unwrap();
        let roots = PathRoots::only(&[root.path().to_path_buf()], "--dataset-root");
        let named = data.display().to_string();
        let checked = roots.confine("jsonl_path", &named).unwrap();
        assert!(roots.open("jsonl_path", &named).is_ok());

        std::fs::remove_file(&data).unwrap();
        std::os::unix::fs::symlink(&secret, &data).unwrap();
        let swapped = roots
            .open("jsonl_path", &checked.display().to_string())
            .unwrap_err();
        assert_eq!(swapped.code(), Code::PermissionDenied, "{swapped:?}");
        let missing = roots
            .open(
                "jsonl_path",
                &root.path().join("gone").display().to_string(),
            )
            .unwrap_err();
        assert_eq!(missing.code(), Code::InvalidArgument, "{missing:?}");
        assert!(missing.message().starts_with("jsonl_path:"), "{missing:?}");

        let model = root.path().join("model");
        std::fs::create_dir(&model).unwrap();
        std::fs::write(model.join("config.json"), "{}").unwrap();
        assert!(roots.check_model("base_model_dir", &model).is_ok());
        std::os::unix::fs::symlink(&secret, model.join("model.safetensors")).unwrap();
        let linked = roots.check_model("base_model_dir", &model).unwrap_err();
        assert_eq!(linked.code(), Code::PermissionDenied);
        assert!(linked.message().contains("model.safetensors"), "{linked:?}");
        assert!(
            PathRoots::any("--model-root")
                .check_model("base_model_dir", &model)
                .is_ok()
        );
    }
}
