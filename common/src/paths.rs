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
        let denied = || {
            Status::permission_denied(format!(
                "{field}: {path:?} is not under a folder this server reads for clients (its {} flag)",
                self.flag
            ))
        };
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
}
