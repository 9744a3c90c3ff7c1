//! Runs survive what production throws at them: an editor replica dying mid-run, and the
//! gateway itself killed with SIGKILL mid-run and started again.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::support::*;
use arf_common::client::{ClientOptions, GrpcChannel, connect_lazy};
use arf_proto::v1 as pb;
use arf_proto::v1::pipeline_client::PipelineClient;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_completes_when_an_editor_replica_dies_mid_run() {
    let dir = tempfile::tempdir().unwrap();
    let (mut suite, mut client) = suite_with_editors(dir.path(), 2).await;
    let rows = many_rows(2);
    let run = create(&mut client, analyze_and_revise(), rows.clone())
        .await
        .unwrap();
    wait_for_revisions(&mut client, &run.id, 3).await;
    suite.editors.remove(0).shutdown().await.unwrap();

    let events = watch(&mut client, &run.id, 0).await;
    let error = get_run(&mut client, &run.id).await.error;
    assert_eq!(
        final_state(&events),
        Some(pb::RunState::Succeeded),
        "{error}"
    );
    let outcomes = revise_outcomes(&events);
    assert_eq!(
        outcomes.values().sum::<usize>(),
        rows.len(),
        "every item has its revision outcome: {outcomes:?}"
    );
    suite.shutdown().await.unwrap();
}

struct GatewayProcess(std::process::Child);

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn spawn_gateway(
    port: u16,
    data_dir: &std::path::Path,
    suite: &arf::suite::Suite,
    extra_args: &[&str],
) -> (GatewayProcess, PipelineClient<GrpcChannel>) {
    // `arf gateway`: the gateway server as its own process, as deployed beside the services.
    let process = GatewayProcess(
        std::process::Command::new(env!("CARGO_BIN_EXE_arf"))
            .arg("gateway")
            .args(["--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
            .arg(data_dir)
            .args([
                "--analyzer",
                &suite.analyzer_endpoint(),
                "--trainer",
                &suite.trainer_endpoint(),
            ])
            .args(["--editor", &suite.editor_endpoints().join(",")])
            .args(extra_args)
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let endpoint = format!("http://127.0.0.1:{port}");
    let channel = connect_lazy(&endpoint, &ClientOptions::default()).unwrap();
    for _ in 0..300 {
        let health = HealthClient::new(channel.clone())
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await;
        if health.is_ok_and(|h| h.into_inner().status == 1) {
            return (process, PipelineClient::new(channel));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the gateway process never became healthy");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_killed_mid_run_resumes_without_losing_or_redoing_items() {
    let services = tempfile::tempdir().unwrap();
    let (suite, mut reference_client) = suite(services.path()).await;
    let rows = many_rows(2);

    // The uninterrupted run, on the suite's own gateway.
    let reference = create(&mut reference_client, analyze_and_revise(), rows.clone())
        .await
        .unwrap();
    let reference_events = watch(&mut reference_client, &reference.id, 0).await;
    assert_eq!(
        final_state(&reference_events),
        Some(pb::RunState::Succeeded)
    );
    let reference = get_run(&mut reference_client, &reference.id).await;

    // The same run on a gateway process that is killed with SIGKILL halfway through.
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let (process, mut client) = spawn_gateway(port, data.path(), &suite, &[]).await;
    let run = create(&mut client, analyze_and_revise(), rows.clone())
        .await
        .unwrap();
    wait_for_revisions(&mut client, &run.id, 4).await;
    drop(process); // SIGKILL

    let (_process, mut client) = spawn_gateway(port, data.path(), &suite, &[]).await;
    let events = watch(&mut client, &run.id, 0).await;
    assert_eq!(final_state(&events), Some(pb::RunState::Succeeded));
    let resumed = get_run(&mut client, &run.id).await;

    let counts = resumed.counts.unwrap();
    let expected = reference.counts.unwrap();
    assert_eq!(
        counts, expected,
        "the resumed run ends with the uninterrupted run's counts"
    );
    // No item was revised twice: each has one recorded outcome.
    let mut per_item: BTreeMap<&str, usize> = BTreeMap::new();
    for i in items(&events, pb::Stage::Revise) {
        *per_item.entry(i.conversation_id.as_str()).or_default() += 1;
    }
    assert!(per_item.values().all(|n| *n == 1), "{per_item:?}");
    assert_eq!(
        counts.revisions_accepted
            + counts.revisions_rejected
            + revise_outcomes(&events).get("clean").copied().unwrap_or(0) as u32,
        rows.len() as u32
    );
    suite.shutdown().await.unwrap();
}

/// SIGTERM (a deploy, a node drain) during Finetune is not a cancel: the training job goes on,
/// and the restarted gateway follows it to the end of the run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_stopped_during_finetune_leaves_the_job_training() {
    let services = tempfile::tempdir().unwrap();
    let (suite, _) = suite(services.path()).await;
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    // The suite's tiny model as the student base, given by the operator (a flag).
    let base = arf::suite::tiny_model(services.path()).unwrap();
    let base = base.display().to_string();
    let flags = ["--student-base", base.as_str()];
    let (process, mut client) = spawn_gateway(port, data.path(), &suite, &flags).await;

    // Long enough that the SIGTERM lands while the job trains.
    let run = create(&mut client, analyze_revise_finetune(400), sample_rows())
        .await
        .unwrap();
    // Wait for the job to report its first step, then stop the gateway as a deploy would.
    wait_for_training_step(&mut client, &run.id).await;
    let mut process = process;
    let status = std::process::Command::new("kill")
        .args(["-TERM", &process.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert!(process.0.wait().unwrap().success(), "a clean drain exits 0");

    let job_id = stored_training_job(data.path(), &run.id).await;
    let mut trainer = arf_proto::v1::trainer_client::TrainerClient::new(
        connect_lazy(&suite.trainer_endpoint(), &ClientOptions::default()).unwrap(),
    );
    let job = trainer
        .get_job(pb::GetJobRequest {
            job_id: job_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_ne!(
        job.state,
        pb::JobState::Cancelled as i32,
        "the shutdown cancelled the job: {job:?}"
    );

    let (_process, mut client) = spawn_gateway(port, data.path(), &suite, &flags).await;
    let events = watch(&mut client, &run.id, 0).await;
    let run = get_run(&mut client, &run.id).await;
    assert_eq!(
        final_state(&events),
        Some(pb::RunState::Succeeded),
        "{}",
        run.error
    );
    assert_eq!(
        run.training_job_id, job_id,
        "the same job, not a second one"
    );
    suite.shutdown().await.unwrap();
}

/// The run's training job id, read from the stored state of a gateway that has exited.
async fn stored_training_job(data: &std::path::Path, run_id: &str) -> String {
    let store = gateway::store::Store::open(&data.join(gateway::store::STORE_FILE))
        .await
        .unwrap();
    let job = store.run(run_id).await.unwrap().unwrap().training_job_id;
    assert!(!job.is_empty(), "the job id was stored before the shutdown");
    job
}
