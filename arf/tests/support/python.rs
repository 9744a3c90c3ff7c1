//! Python for the tests that check ARF from the tools its users read its output with: a
//! virtual environment per requirements file, under the target directory, made on first use
//! with clients/python/setup-venv.sh (pinned packages from PyPI), or the interpreter an
//! environment variable names.

use std::path::{Path, PathBuf};
use std::process::Command;

pub const CLIENTS_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../clients");

/// A Python that can `import {module}`: `$override_var` when set (it must), else the virtual
/// environment `venv_name` made from `requirements` (a file under clients/; `None`: the
/// script's default, clients/python/requirements.txt).
pub fn python_with(
    module: &str,
    override_var: &str,
    venv_name: &str,
    requirements: Option<&str>,
) -> PathBuf {
    let imports = |python: &Path| {
        Command::new(python)
            .args(["-c", &format!("import {module}")])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if let Some(python) = std::env::var_os(override_var) {
        let python = PathBuf::from(python);
        assert!(
            imports(&python),
            "{override_var}={} cannot import {module}",
            python.display()
        );
        return python;
    }
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join(venv_name);
    let python = venv.join("bin/python");
    if !imports(&python) {
        let mut setup = Command::new("bash");
        setup
            .arg(Path::new(CLIENTS_DIR).join("python/setup-venv.sh"))
            .arg(&venv);
        if let Some(requirements) = requirements {
            setup.arg(Path::new(CLIENTS_DIR).join(requirements));
        }
        let status = setup.status().unwrap();
        assert!(
            status.success(),
            "clients/python/setup-venv.sh {} failed",
            venv.display()
        );
    }
    python
}
