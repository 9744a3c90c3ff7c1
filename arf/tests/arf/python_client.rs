//! The gateway from another language: a Python client generated from proto/ with grpcio-tools
//! (clients/python) creates a run over the bundled sample and watches it to the end.
//!
//! Python: `ARF_PYTHON` when set, otherwise a virtual environment under the target directory,
//! made with clients/python/setup-venv.sh on first use (it installs grpcio-tools from PyPI).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::*;
use arf_proto::v1 as pb;

const CLIENT_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../clients/python");

fn python_with_grpc_tools() -> PathBuf {
    python::python_with(
        "grpc_tools.protoc, grpc",
        "ARF_PYTHON",
        "python-client-venv",
        None,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_generated_python_client_creates_a_run_and_watches_it_to_the_end() {
    let python = python_with_grpc_tools();
    let dir = tempfile::tempdir().unwrap();
    let (suite, mut client) = suite(dir.path()).await;
    let gateway = suite
        .gateway_endpoint()
        .trim_start_matches("http://")
        .to_string();

    let mut command = Command::new(python);
    command
        .arg(Path::new(CLIENT_DIR).join("arf_client.py"))
        .args(["--gateway", &gateway, "--dataset", SAMPLE]);
    command
        .args([
            "--revision-max-tokens",
            "128",
            "--train-steps",
            "2",
            "--generated",
        ])
        .arg(dir.path().join("stubs"));
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    println!("{stdout}");
    assert!(
        output.status.success(),
        "the Python client failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );

    // What the client printed is what the gateway holds.
    let runs = client
        .list_runs(pb::ListRunsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .runs;
    assert_eq!(runs.len(), 1);
    let run = &runs[0];
    assert_eq!(run.state(), pb::RunState::Succeeded);
    let c = run.counts.unwrap();
    assert_eq!(c.rows, 16);
    assert!(
        stdout.contains(&format!("run {} ended RUN_STATE_SUCCEEDED", run.id)),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("rows=16 analyzed=16 flagged={}", c.flagged)),
        "{stdout}"
    );
    assert!(
        stdout.contains("STAGE_EVALUATE ended"),
        "the client saw every stage through: {stdout}"
    );
    suite.shutdown().await.unwrap();
}
