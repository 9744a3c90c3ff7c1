//! The fault-injection suite: full runs (Analyze, Revise, Finetune, Evaluate on tiny models)
//! over the four services as separate processes (`arf analyzer|editor|trainer|gateway`), with
//! the gateway, the trainer or the editor SIGKILLed or SIGTERMed at seeded random points of
//! every stage, then restarted. Each run must end SUCCEEDED with the same items, outcomes,
//! export and report as an uninterrupted run, no item lost and none done twice.
//!
//! `ARF_FAULT_SEED` picks the points (default 1); the test prints a table of what it did. The
//! longer soak runs more seeds in one go and prints one table: `ARF_FAULT_SEEDS=20 cargo test
//! -p arf --test fault_injection -- --nocapture` (seeds 1 to 20, about 25 s each here).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use arf_common::client::{ClientOptions, GrpcChannel, connect_lazy};
use arf_proto::v1 as pb;
use arf_proto::v1::pipeline_client::PipelineClient;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

mod support;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Target {
    Gateway,
    Trainer,
    Editor,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Signal {
    Kill,
    Term,
}

/// One fault: which process, how, and when (after `after` item events of `stage`, or training
/// steps for Finetune).
#[derive(Debug, Clone, Copy)]
struct Fault {
    target: Target,
    signal: Signal,
    stage: pb::Stage,
    after: usize,
}

/// A small deterministic generator (splitmix64): the same seed gives the same faults.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)) % n
    }
}

/// Every stage is hit; the trainer only where it works (Finetune), the editor where it is
/// called (Revise; Evaluate asks the students the gateway hosts).
fn plan(seed: u64) -> Vec<Fault> {
    use pb::Stage::*;
    let mut rng = Rng(seed);
    let mut signal = || {
        if rng.below(2) == 0 {
            Signal::Kill
        } else {
            Signal::Term
        }
    };
    let shape = [
        (Target::Gateway, Analyze),
        (Target::Gateway, Revise),
        (Target::Editor, Revise),
        (Target::Trainer, Finetune),
        (Target::Gateway, Finetune),
        (Target::Gateway, Evaluate),
    ];
    let signals: Vec<Signal> = shape.iter().map(|_| signal()).collect();
    let mut rng = Rng(seed ^ 0x5eed);
    shape
        .into_iter()
        .zip(signals)
        .map(|((target, stage), signal)| Fault {
            target,
            signal,
            stage,
            after: 1 + rng.below(3) as usize,
        })
        .collect()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One service process, restartable on its port with the same arguments.
struct Process {
    name: &'static str,
    args: Vec<String>,
    port: u16,
    child: Option<Child>,
}

impl Process {
    fn new(name: &'static str, args: Vec<String>) -> Self {
        Self {
            name,
            args,
            port: free_port(),
            child: None,
        }
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    async fn start(&mut self) {
        let child = Command::new(env!("CARGO_BIN_EXE_arf"))
            .arg(self.name)
            .args(["--listen", &format!("127.0.0.1:{}", self.port)])
            .args(&self.args)
            .env("RUST_LOG", "error")
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let channel = connect_lazy(&self.endpoint(), &ClientOptions::default()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(120);
        while Instant::now() < deadline {
            let health = HealthClient::new(channel.clone())
                .check(HealthCheckRequest {
                    service: String::new(),
                })
                .await;
            if health.is_ok_and(|h| h.into_inner().status == 1) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("{} never became healthy", self.name);
    }

    /// Sends the signal and waits for the process to end.
    fn stop(&mut self, signal: Signal) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let name = match signal {
            Signal::Kill => "-KILL",
            Signal::Term => "-TERM",
        };
        Command::new("kill")
            .args([name, &child.id().to_string()])
            .status()
            .unwrap();
        let _ = child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The four services over one folder.
struct Deployment {
    /// Never faulted here (the gateway waits for it like for the others: tests/faults.rs).
    _analyzer: Process,
    editor: Process,
    trainer: Process,
    gateway: Process,
}

impl Deployment {
    async fn start(dir: &Path, tiny: &Path) -> Self {
        let path = |p: &Path| p.display().to_string();
        let mut editor = Process::new("editor", vec!["--model".into(), path(tiny)]);
        editor.start().await;
        let mut analyzer = Process::new(
            "analyzer",
            vec!["--judge-endpoint".into(), editor.endpoint()],
        );
        analyzer.start().await;
        let models = tiny.parent().unwrap();
        let mut trainer = Process::new(
            "trainer",
            vec![
                "--state-dir".into(),
                path(&dir.join("trainer")),
                "--model-root".into(),
                path(models),
            ],
        );
        trainer.start().await;
        let mut gateway = Process::new(
            "gateway",
            vec![
                "--data-dir".into(),
                path(&dir.join("gateway")),
                "--analyzer".into(),
                analyzer.endpoint(),
                "--editor".into(),
                editor.endpoint(),
                "--trainer".into(),
                trainer.endpoint(),
                "--student-base".into(),
                path(tiny),
            ],
        );
        gateway.start().await;
        Self {
            _analyzer: analyzer,
            editor,
            trainer,
            gateway,
        }
    }

    fn client(&self) -> PipelineClient<GrpcChannel> {
        PipelineClient::new(
            connect_lazy(&self.gateway.endpoint(), &ClientOptions::default()).unwrap(),
        )
    }

    fn process(&mut self, target: Target) -> &mut Process {
        match target {
            Target::Gateway => &mut self.gateway,
            Target::Trainer => &mut self.trainer,
            Target::Editor => &mut self.editor,
        }
    }
}

fn spec() -> pb::RunSpec {
    let mut spec = support::spec(&[
        pb::Stage::Analyze,
        pb::Stage::Revise,
        pb::Stage::Finetune,
        pb::Stage::Evaluate,
    ]);
    let config = spec.config.as_mut().unwrap();
    // One greedy round: revisions are reproducible, so runs can be compared.
    config.revision_rounds = 1;
    config.revision_max_tokens = 96;
    config.training = Some(pb::Hyperparameters {
        max_steps: 8,
        checkpoint_every_steps: 2,
        learning_rate: 1e-3,
        max_seq_len: 256,
        seed: 7,
        ..Default::default()
    });
    config.evaluation = Some(pb::EvaluationConfig {
        holdout_fraction: 0.25,
        seed: 3,
        max_summary_tokens: 12,
        ..Default::default()
    });
    spec
}

/// Whether `events` have reached the fault's point.
fn reached(events: &[pb::RunEvent], fault: &Fault) -> bool {
    let n = match fault.stage {
        pb::Stage::Finetune => events
            .iter()
            .filter(|e| {
                matches!(&e.kind, Some(pb::run_event::Kind::Training(j))
                    if matches!(j.kind, Some(pb::job_event::Kind::Step(_))))
            })
            .count(),
        stage => support::items(events, stage).len(),
    };
    n >= fault.after
}

/// Whether the run has reached a final state.
fn ended(events: &[pb::RunEvent]) -> bool {
    matches!(
        support::final_state(events),
        Some(pb::RunState::Succeeded | pb::RunState::Failed | pb::RunState::Cancelled)
    )
}

/// Follows the run until `until` says stop (or the run ends); returns the events seen.
async fn follow(
    client: &mut PipelineClient<GrpcChannel>,
    run_id: &str,
    until: impl Fn(&[pb::RunEvent]) -> bool,
) -> Vec<pb::RunEvent> {
    let mut stream = client
        .watch_run(pb::WatchRunRequest {
            run_id: run_id.into(),
            after_sequence: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let mut events = Vec::new();
    while let Ok(Some(e)) = stream.message().await {
        events.push(e);
        if until(&events) {
            break;
        }
    }
    events
}

/// What a run produced, to compare with an uninterrupted run.
#[derive(Debug, PartialEq)]
struct RunResult {
    /// Per stage, per conversation: its outcomes (exactly one each when nothing is lost or
    /// duplicated).
    outcomes: BTreeMap<(i32, String), Vec<String>>,
    export: Vec<u8>,
    overall: Vec<String>,
}

async fn result(client: &mut PipelineClient<GrpcChannel>, run_id: &str) -> RunResult {
    let events = follow(client, run_id, |_| false).await;
    let run = client
        .get_run(pb::GetRunRequest {
            run_id: run_id.into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        support::final_state(&events),
        Some(pb::RunState::Succeeded),
        "stage {:?}: {}",
        run.current_stage,
        run.error
    );
    let mut outcomes: BTreeMap<(i32, String), Vec<String>> = BTreeMap::new();
    for e in &events {
        if let Some(pb::run_event::Kind::Item(i)) = &e.kind {
            outcomes
                .entry((i.stage, i.conversation_id.clone()))
                .or_default()
                .push(i.outcome.clone());
        }
    }
    let mut export = Vec::new();
    let mut chunks = client
        .export_dataset(pb::ExportDatasetRequest {
            run_id: run_id.into(),
            format: pb::ExportFormat::Plain as i32,
        })
        .await
        .unwrap()
        .into_inner();
    while let Some(chunk) = chunks.message().await.unwrap() {
        export.extend(chunk.data);
    }
    let report = client
        .get_report(pb::GetReportRequest {
            run_id: run_id.into(),
        })
        .await
        .unwrap()
        .into_inner();
    // Error rates are a map: compared in a fixed order.
    let overall = report
        .overall
        .iter()
        .map(|m| {
            let rates: BTreeMap<_, _> = m.error_rates.iter().collect();
            format!(
                "{} {} {rates:?} {} {} {} {}",
                m.model, m.summaries, m.rouge1, m.rouge2, m.rouge_l, m.judge_mean
            )
        })
        .collect();
    RunResult {
        outcomes,
        export,
        overall,
    }
}

/// (lost, duplicated) items against the uninterrupted run's.
fn lost_and_duplicated(baseline: &RunResult, got: &RunResult) -> (usize, usize) {
    let lost = baseline
        .outcomes
        .keys()
        .filter(|k| !got.outcomes.contains_key(*k))
        .count();
    let duplicated = got.outcomes.values().filter(|o| o.len() > 1).count();
    (lost, duplicated)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_survive_kills_and_restarts_of_every_service_at_every_stage() {
    let env = |name: &str| std::env::var(name).ok().and_then(|s| s.parse::<u64>().ok());
    let seeds: Vec<u64> = match (env("ARF_FAULT_SEEDS"), env("ARF_FAULT_SEED")) {
        (Some(n), _) => (1..=n).collect(),
        (None, seed) => vec![seed.unwrap_or(1)],
    };
    let models = tempfile::tempdir().unwrap();
    let tiny = arf::suite::tiny_model(models.path()).unwrap();
    let rows = support::sample_rows();

    // The uninterrupted run of the same spec.
    let dir = tempfile::tempdir().unwrap();
    let deployment = Deployment::start(dir.path(), &tiny).await;
    let mut client = deployment.client();
    let run = support::create(&mut client, spec(), rows.clone())
        .await
        .unwrap();
    let baseline = result(&mut client, &run.id).await;
    drop(deployment);
    assert!(
        baseline.outcomes.values().all(|o| o.len() == 1),
        "{baseline:?}"
    );

    let mut table = Vec::new();
    for fault in seeds.iter().flat_map(|&seed| plan(seed)) {
        let dir = tempfile::tempdir().unwrap();
        let mut deployment = Deployment::start(dir.path(), &tiny).await;
        let mut client = deployment.client();
        let run = support::create(&mut client, spec(), rows.clone())
            .await
            .unwrap();
        let seen = follow(&mut client, &run.id, |e| reached(e, &fault) || ended(e)).await;
        let injected = !ended(&seen);
        if injected {
            let process = deployment.process(fault.target);
            process.stop(fault.signal);
            process.start().await;
        }
        let mut client = deployment.client();
        let got = result(&mut client, &run.id).await;
        let (lost, duplicated) = lost_and_duplicated(&baseline, &got);
        assert_eq!(
            (lost, duplicated),
            (0, 0),
            "{fault:?}: items lost or done twice"
        );
        assert_eq!(got.outcomes, baseline.outcomes, "{fault:?}: outcomes");
        assert_eq!(
            String::from_utf8_lossy(&got.export),
            String::from_utf8_lossy(&baseline.export),
            "{fault:?}: export"
        );
        // Every model's scores: the students too, trained on the same data with the same seed
        // (through a trainer restart: resumed from its checkpoint) and decoded greedily.
        assert_eq!(got.overall, baseline.overall, "{fault:?}: report");
        table.push((fault, injected, lost, duplicated));
    }

    println!("\nfault injection, seeds {seeds:?}");
    println!(
        "| stage | process | signal | after (items or steps) | injected | run succeeded | items lost | items duplicated | outcomes, export, report |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    for (f, injected, lost, duplicated) in &table {
        println!(
            "| {:?} | {:?} | {:?} | {} | {injected} | yes | {lost} | {duplicated} | equal |",
            f.stage, f.target, f.signal, f.after
        );
    }
    assert!(
        table.iter().all(|(_, injected, ..)| *injected),
        "every fault landed before its run ended: {table:?}"
    );
}
