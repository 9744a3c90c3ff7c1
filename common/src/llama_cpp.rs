//! llama.cpp's `llama-server`, the OpenAI-compatible server a team would run in front of its
//! model, for the tests and benches that put an editor in front of it (`--backend openai`).
//! Built once from the llama-cpp-python sdist by `scripts/build-llama-bench.sh` into a cache
//! outside the checkout (or found in `ARF_LLAMA_CPP_BIN`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// The name the server answers to (`model` in requests, `id` in its model list).
pub const ALIAS: &str = "served-model";

/// The folder holding llama.cpp's tools: `ARF_LLAMA_CPP_BIN`, or the build script's cache
/// (building them the first time: minutes).
pub fn bin_dir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("ARF_LLAMA_CPP_BIN") {
        return Ok(dir.into());
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/build-llama-bench.sh");
    let out = Command::new("bash")
        .arg(&script)
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    anyhow::ensure!(
        out.status.success(),
        "{} failed:\n{}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(PathBuf::from(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .last()
            .unwrap_or_default()
            .trim(),
    ))
}

/// A running llama-server, killed when dropped (its log file removed with it).
pub struct LlamaServer {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl LlamaServer {
    /// Serves `gguf` on a free loopback port with `slots` parallel sequences, on 2 threads;
    /// returns once its `/health` answers 200.
    pub async fn start(gguf: &Path, slots: usize) -> anyhow::Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        // Its log goes to a file, so a failure can show what the server said (`log_tail`).
        let log = std::env::temp_dir().join(format!(
            "arf-llama-server-{}-{port}.log",
            std::process::id()
        ));
        let log_file =
            std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let child = Command::new(bin_dir()?.join("llama-server"))
            .arg("-m")
            .arg(gguf)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["-c", &(2048 * slots).to_string(), "-np", &slots.to_string()])
            .args(["-t", "2", "--alias", ALIAS])
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .context("starting llama-server")?;
        let server = Self { child, port, log };
        let deadline = Instant::now() + Duration::from_secs(120);
        while Instant::now() < deadline {
            if server.healthy().await {
                return Ok(server);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        anyhow::bail!(
            "llama-server on {} never became healthy; its log ends:\n{}",
            gguf.display(),
            server.log_tail(20)
        )
    }

    /// The last `lines` lines of the server's log: what to show when a request through it fails.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// The OpenAI API's base URL (`http://127.0.0.1:PORT/v1`).
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}/v1", self.port)
    }

    async fn healthy(&self) -> bool {
        let Ok(mut stream) = tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await else {
            return false;
        };
        if stream
            .write_all(b"GET /health HTTP/1.0\r\nHost: localhost\r\n\r\n")
            .await
            .is_err()
        {
            return false;
        }
        let mut head = [0u8; 12];
        stream.read_exact(&mut head).await.is_ok() && head.ends_with(b"200")
    }
}

impl Drop for LlamaServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}
