//! Where the store is, from `--store` (`ARF_STORE`): the embedded SQLite file under the data
//! folder by default, another SQLite file, or a PostgreSQL database shared by several gateways.

use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreLocation {
    Sqlite(PathBuf),
    /// A `postgres://` (or `postgresql://`) URL, with its credentials.
    Postgres(String),
}

impl StoreLocation {
    /// `spec` as the operator wrote it; empty or `sqlite` is `default_file`.
    pub fn parse(spec: &str, default_file: &Path) -> anyhow::Result<Self> {
        let spec = spec.trim();
        if spec.is_empty() || spec == "sqlite" {
            return Ok(Self::Sqlite(default_file.to_path_buf()));
        }
        if spec.starts_with("postgres://") || spec.starts_with("postgresql://") {
            return Ok(Self::Postgres(spec.to_string()));
        }
        if let Some(path) = spec.strip_prefix("sqlite://") {
            anyhow::ensure!(!path.is_empty(), "--store sqlite:// names no file");
            return Ok(Self::Sqlite(PathBuf::from(path)));
        }
        anyhow::bail!(
            "--store {:?}: expected `sqlite` (the file under --data-dir), sqlite:///path/to/file, \
             or postgres://user:password@host:port/database",
            redact(spec)
        )
    }

    /// The URL the driver connects to.
    pub(super) fn url(&self) -> String {
        match self {
            // The driver percent-decodes the path: keep '%', '?' and '#' in a name literal.
            Self::Sqlite(path) => {
                let path = path
                    .to_string_lossy()
                    .replace('%', "%25")
                    .replace('?', "%3F")
                    .replace('#', "%23");
                format!("sqlite://{path}?mode=rwc")
            }
            Self::Postgres(url) => url.clone(),
        }
    }

    /// For logs and errors: never the password.
    pub fn redacted(&self) -> String {
        match self {
            Self::Sqlite(path) => path.display().to_string(),
            Self::Postgres(url) => redact(url),
        }
    }
}

/// `scheme://user:secret@host/...` -> `scheme://user:***@host/...`.
pub(super) fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (authority, tail) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or("");
            let hidden = if userinfo.contains(':') { ":***" } else { "" };
            format!("{scheme}://{user}{hidden}@{host}{tail}")
        }
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_each_form_and_never_shows_a_password() {
        let default = Path::new("/data/arf.sqlite3");
        assert_eq!(
            StoreLocation::parse("", default).unwrap(),
            StoreLocation::Sqlite(default.into())
        );
        assert_eq!(
            StoreLocation::parse("sqlite:///var/arf/x.db", default).unwrap(),
            StoreLocation::Sqlite("/var/arf/x.db".into())
        );
        let pg = StoreLocation::parse("postgres://arf:s3cret@db:5432/arf", default).unwrap();
        assert_eq!(pg.redacted(), "postgres://arf:***@db:5432/arf");
        let err = StoreLocation::parse("mysql://root:s3cret@db/arf", default)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("expected `sqlite`") && !err.contains("s3cret"),
            "{err}"
        );
        assert_eq!(
            StoreLocation::Sqlite("/a b/c?d".into()).url(),
            "sqlite:///a b/c%3Fd?mode=rwc"
        );
    }
}
