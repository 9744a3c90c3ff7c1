//! The services as separate processes (`arf analyzer|editor|trainer|gateway`), and what the
//! process-level suites (fault injection, failover) compare: a full run's outcomes per item,
//! its export and its report.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{get_report, get_run};
use arf_common::client::{ClientOptions, GrpcChannel, connect_lazy};
use arf_proto::v1 as pb;
use arf_proto::v1::pipeline_client::PipelineClient;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Kill,
    Term,
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One service process, restartable on its port with the same arguments.
pub struct Process {
    name: &'static str,
    pub args: Vec<String>,
    pub port: u16,
    child: Option<Child>,
    /// Where its output goes, at debug level (else its errors go to the test's stderr).
    pub log: Option<PathBuf>,
}

impl Process {
    pub fn new(name: &'static str, args: Vec<String>) -> Self {
        Self {
            name,
            args,
            port: free_port(),
            child: None,
            log: None,
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub async fn start(&mut self) {
        let mut command = Command::new(env!("CARGO_BIN_EXE_arf"));
        command
            .arg(self.name)
            .args(["--listen", &format!("127.0.0.1:{}", self.port)])
            .args(&self.args)
            .env("RUST_LOG", "error")
            .stdout(Stdio::null());
        if let Some(path) = &self.log {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .unwrap();
            command
                .env("RUST_LOG", "debug")
                .stdout(file.try_clone().unwrap())
                .stderr(file);
        }
        let child = command.spawn().unwrap();
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

    /// Freezes the process (SIGSTOP), as a VM pause or a long stall would: it neither works
    /// nor renews its leases until [`Process::resume`].
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Lets a paused process go on (SIGCONT) from where it stood.
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, name: &str) {
        let child = self.child.as_ref().expect("the process is running");
        let sent = Command::new("kill")
            .args([name, &child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success(), "kill {name} {}", self.name);
    }

    /// Sends the signal and waits for the process to end.
    pub fn stop(&mut self, signal: Signal) {
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

/// The analyzer, editor and trainer every gateway here calls.
pub struct Services {
    pub editor: Process,
    pub analyzer: Process,
    pub trainer: Process,
}

impl Services {
    pub async fn start(dir: &Path, tiny: &Path) -> Self {
        Self::start_logged(dir, tiny, None).await
    }

    /// With each service's output, at debug level, in `logs/<service>.log`.
    pub async fn start_logged(dir: &Path, tiny: &Path, logs: Option<&Path>) -> Self {
        let path = |p: &Path| p.display().to_string();
        let log = |name: &str| logs.map(|l| l.join(format!("{name}.log")));
        let mut editor = Process::new("editor", vec!["--model".into(), path(tiny)]);
        editor.log = log("editor");
        editor.start().await;
        let mut analyzer = Process::new(
            "analyzer",
            vec!["--judge-endpoint".into(), editor.endpoint()],
        );
        analyzer.log = log("analyzer");
        analyzer.start().await;
        let mut trainer = Process::new(
            "trainer",
            vec![
                "--state-dir".into(),
                path(&dir.join("trainer")),
                "--model-root".into(),
                path(tiny.parent().unwrap()),
            ],
        );
        trainer.log = log("trainer");
        trainer.start().await;
        Self {
            editor,
            analyzer,
            trainer,
        }
    }

    /// A gateway over these services, with its data under `data_dir`, started. It finds the
    /// editor through `editor` when given (`dns:///localhost:port`, say), else at its endpoint.
    pub async fn gateway(
        &self,
        data_dir: &Path,
        tiny: &Path,
        editor: Option<String>,
        extra: Vec<String>,
    ) -> Process {
        let mut gateway = self.gateway_process(data_dir, tiny, editor, extra);
        gateway.start().await;
        gateway
    }

    /// The same, not started yet.
    pub fn gateway_process(
        &self,
        data_dir: &Path,
        tiny: &Path,
        editor: Option<String>,
        extra: Vec<String>,
    ) -> Process {
        let path = |p: &Path| p.display().to_string();
        let mut args = vec![
            "--data-dir".into(),
            path(data_dir),
            "--analyzer".into(),
            self.analyzer.endpoint(),
            "--editor".into(),
            editor.unwrap_or_else(|| self.editor.endpoint()),
            "--trainer".into(),
            self.trainer.endpoint(),
            "--student-base".into(),
            path(tiny),
        ];
        args.extend(extra);
        Process::new("gateway", args)
    }
}

/// A full run (Analyze, Revise, Finetune, Evaluate) on tiny models, reproducible from run to run.
pub fn full_spec() -> pb::RunSpec {
    let mut spec = super::spec(&[
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

/// Whether the run has reached a final state.
pub fn ended(events: &[pb::RunEvent]) -> bool {
    matches!(
        super::final_state(events),
        Some(pb::RunState::Succeeded | pb::RunState::Failed | pb::RunState::Cancelled)
    )
}

/// What a run produced, to compare with an uninterrupted run.
#[derive(Debug, PartialEq)]
pub struct RunResult {
    /// Per stage, per conversation: its outcomes (exactly one each when nothing is lost or
    /// duplicated).
    pub outcomes: BTreeMap<(i32, String), Vec<String>>,
    pub export: Vec<u8>,
    pub overall: Vec<String>,
}

pub async fn result(client: &mut PipelineClient<GrpcChannel>, run_id: &str) -> RunResult {
    let events = super::follow(client, run_id, |_| false).await;
    let run = get_run(client, run_id).await;
    assert_eq!(
        super::final_state(&events),
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
    let report = get_report(client, run_id).await;
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
pub fn lost_and_duplicated(baseline: &RunResult, got: &RunResult) -> (usize, usize) {
    let lost = baseline
        .outcomes
        .keys()
        .filter(|k| !got.outcomes.contains_key(*k))
        .count();
    let duplicated = got.outcomes.values().filter(|o| o.len() > 1).count();
    (lost, duplicated)
}

/// A child process killed (and reaped) when the test ends, however it ends.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
