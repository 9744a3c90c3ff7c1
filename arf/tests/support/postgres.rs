//! A PostgreSQL server of one test's own, which the test may restart without disturbing the
//! others (they share the one `scripts/with-postgres.sh` started; that script names the
//! server's binaries in `ARF_TEST_PG_BIN`). Stopped and removed when dropped.

use std::path::PathBuf;
use std::process::Command;

pub struct PrivatePostgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
}

impl PrivatePostgres {
    /// `None` (the test skips) without `ARF_TEST_PG_BIN`, unless `ARF_REQUIRE_POSTGRES` is set.
    pub fn start() -> Option<Self> {
        let Some(bin) = std::env::var_os("ARF_TEST_PG_BIN") else {
            assert!(
                std::env::var_os("ARF_REQUIRE_POSTGRES").is_none(),
                "ARF_REQUIRE_POSTGRES is set but ARF_TEST_PG_BIN names no PostgreSQL binaries"
            );
            eprintln!("NOTE: skipped: no ARF_TEST_PG_BIN (run under scripts/with-postgres.sh)");
            return None;
        };
        let server = Self {
            dir: tempfile::tempdir().unwrap(),
            bin: bin.into(),
            port: super::processes::free_port(),
        };
        if is_root() {
            // PostgreSQL refuses to run as root: the package's postgres user runs it.
            run(Command::new("chown")
                .arg("postgres:")
                .arg(server.dir.path()));
        }
        let data = server.data();
        run(server.command("initdb").args([
            "-D",
            &data,
            "-U",
            "arf",
            "--auth=trust",
            "--no-sync",
            "-E",
            "UTF8",
        ]));
        run(&mut server.pg_ctl("start"));
        Some(server)
    }

    /// A database URL on it, as `--store` takes it.
    pub fn url(&self) -> String {
        format!("postgres://arf@127.0.0.1:{}/postgres", self.port)
    }

    /// `pg_ctl restart -m fast`, with the server down for `down` in the middle: every
    /// connection is ended, new ones are refused, and it is back once it accepts them again.
    /// (A bare restart takes well under a second here: a client that happened not to call in
    /// that moment would never see it.)
    pub fn restart(&self, down: std::time::Duration) {
        run(self.pg_ctl("stop").args(["-m", "fast"]));
        std::thread::sleep(down);
        run(&mut self.pg_ctl("start"));
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    fn pg_ctl(&self, action: &str) -> Command {
        let log = self.dir.path().join("server.log").display().to_string();
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        let mut command = self.command("pg_ctl");
        command.args([
            "-D",
            &self.data(),
            "-l",
            &log,
            "-w",
            "-t",
            "60",
            "-o",
            &options,
            action,
        ]);
        command
    }

    fn command(&self, program: &str) -> Command {
        let program = self.bin.join(program);
        if is_root() {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(program);
            command
        } else {
            Command::new(program)
        }
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = self
            .command("pg_ctl")
            .args(["-D", &self.data(), "-m", "immediate", "stop"])
            .output();
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

fn run(command: &mut Command) {
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "{command:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
