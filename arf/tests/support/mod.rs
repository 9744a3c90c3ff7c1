//! Starting the embedded suite in a temporary folder, and small client helpers.

#![allow(dead_code)]

pub mod postgres;
pub mod processes;
pub mod python;

use std::path::Path;

use arf::suite::{Suite, SuiteConfig};
use arf_common::client::{ClientOptions, GrpcChannel, connect_lazy};
use arf_common::config::ServerArgs;
use arf_proto::v1 as pb;
use arf_proto::v1::pipeline_client::PipelineClient;

pub const SAMPLE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/data/sample_conversations.jsonl"
);

pub async fn suite(data_dir: &Path) -> (Suite, PipelineClient<GrpcChannel>) {
    suite_with_editors(data_dir, 1).await
}

pub async fn suite_with_editors(
    data_dir: &Path,
    editor_replicas: usize,
) -> (Suite, PipelineClient<GrpcChannel>) {
    let config = SuiteConfig {
        server: ServerArgs::local(),
        data_dir: data_dir.to_path_buf(),
        editor_model: None,
        student_base: None,
        editor_replicas,
    };
    let suite = Suite::start(config).await.unwrap();
    let client = PipelineClient::new(
        connect_lazy(&suite.gateway_endpoint(), &ClientOptions::default()).unwrap(),
    );
    (suite, client)
}

/// The bundled sample as wire rows, with their line numbers.
pub fn sample_rows() -> Vec<pb::DatasetRow> {
    arf::upload::rows_from_jsonl(&std::fs::read(SAMPLE).unwrap(), SAMPLE).unwrap()
}

pub fn spec(stages: &[pb::Stage]) -> pb::RunSpec {
    pb::RunSpec {
        display_name: "test".into(),
        config: Some(pb::RunConfig {
            stages: stages.iter().map(|s| *s as i32).collect(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub async fn create(
    client: &mut PipelineClient<GrpcChannel>,
    spec: pb::RunSpec,
    rows: Vec<pb::DatasetRow>,
) -> Result<pb::Run, tonic::Status> {
    use pb::create_run_request::Part;
    let end = Part::End(pb::DatasetEnd {
        rows: rows.len() as u32,
    });
    let messages = std::iter::once(Part::Spec(spec))
        .chain(rows.into_iter().map(Part::Row))
        .chain(std::iter::once(end))
        .map(|p| pb::CreateRunRequest { part: Some(p) });
    client
        .create_run(futures::stream::iter(messages.collect::<Vec<_>>()))
        .await
        .map(|r| r.into_inner())
}

/// The sample repeated `times` times under fresh conversation ids (a longer run).
pub fn many_rows(times: usize) -> Vec<pb::DatasetRow> {
    let sample = sample_rows();
    let n = sample.len();
    (0..times)
        .flat_map(|k| {
            sample
                .clone()
                .into_iter()
                .enumerate()
                .map(move |(i, mut row)| {
                    let c = row.conversation.as_mut().unwrap();
                    c.id = format!("{}-{k}", c.id);
                    row.line = (k * n + i + 1) as u32;
                    row
                })
        })
        .collect()
}

/// The item events of one stage, in order.
pub fn items(events: &[pb::RunEvent], stage: pb::Stage) -> Vec<&pb::ItemProgress> {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            Some(pb::run_event::Kind::Item(i)) if i.stage == stage as i32 => Some(i),
            _ => None,
        })
        .collect()
}

/// Outcome counts of the revise stage from a run's events.
pub fn revise_outcomes(events: &[pb::RunEvent]) -> std::collections::BTreeMap<String, usize> {
    let mut out = std::collections::BTreeMap::new();
    for i in items(events, pb::Stage::Revise) {
        *out.entry(i.outcome.clone()).or_default() += 1;
    }
    out
}

/// Every event of the run from `after` to its end.
pub async fn watch(
    client: &mut PipelineClient<GrpcChannel>,
    run_id: &str,
    after: u64,
) -> Vec<pb::RunEvent> {
    let mut stream = client
        .watch_run(pb::WatchRunRequest {
            run_id: run_id.into(),
            after_sequence: after,
        })
        .await
        .unwrap()
        .into_inner();
    let mut events = Vec::new();
    while let Some(e) = stream.message().await.unwrap() {
        events.push(e);
    }
    events
}

pub fn final_state(events: &[pb::RunEvent]) -> Option<pb::RunState> {
    events.iter().rev().find_map(|e| match e.kind {
        Some(pb::run_event::Kind::State(s)) => pb::RunState::try_from(s).ok(),
        _ => None,
    })
}

/// Analyze and one greedy round of short revisions: a run that takes a while, reproducibly.
pub fn analyze_and_revise() -> pb::RunSpec {
    let mut s = spec(&[pb::Stage::Analyze, pb::Stage::Revise]);
    let config = s.config.as_mut().unwrap();
    // One greedy round: revisions are reproducible, so two runs can be compared.
    config.revision_rounds = 1;
    // Short revisions keep the runs quick; some are cut off and fail, which is an outcome too.
    config.revision_max_tokens = 128;
    s
}

/// Follows the run until `until` says stop (or the run ends); returns the events seen.
pub async fn follow(
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
    loop {
        // A run that stops making progress fails the test with what it saw, instead of holding
        // CI until its overall limit (a frozen gateway once kept a run's row lock forever).
        let next = tokio::time::timeout(QUIET_RUN_LIMIT, stream.message())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "run {run_id}: no event for {QUIET_RUN_LIMIT:?}; the last of {} events: {:?}",
                    events.len(),
                    events.last()
                )
            });
        let Ok(Some(e)) = next else { break };
        events.push(e);
        if until(&events) {
            break;
        }
    }
    events
}

/// How long a followed run may go without an event before its test fails: runs in these tests
/// record an event at least every training step or revision, seconds apart.
const QUIET_RUN_LIMIT: std::time::Duration = std::time::Duration::from_secs(300);

/// Waits on the run's events until `n` revision outcomes have been recorded.
pub async fn wait_for_revisions(client: &mut PipelineClient<GrpcChannel>, run_id: &str, n: usize) {
    let events = follow(client, run_id, |events| {
        items(events, pb::Stage::Revise).len() >= n
    })
    .await;
    let seen = items(&events, pb::Stage::Revise).len();
    assert!(seen >= n, "the run ended after {seen} revisions");
}

/// Analyze, one round of short revisions (unimproved summaries kept) and a Finetune of
/// `max_steps`: a run that reaches training quickly, then trains as long as asked.
pub fn analyze_revise_finetune(max_steps: u32) -> pb::RunSpec {
    let mut s = spec(&[pb::Stage::Analyze, pb::Stage::Revise, pb::Stage::Finetune]);
    let config = s.config.as_mut().unwrap();
    config.revision_rounds = 1;
    config.revision_max_tokens = 64;
    config.on_unimproved = pb::UnimprovedPolicy::KeepOriginal as i32;
    config.training = Some(pb::Hyperparameters {
        max_steps,
        batch_size: 1,
        ..Default::default()
    });
    s
}

/// Follows the run until its training job reports a step; returns the job's id. Panics with
/// the run's events when it ends before training.
pub async fn wait_for_training_step(
    client: &mut PipelineClient<GrpcChannel>,
    run_id: &str,
) -> String {
    let stepped = |e: &pb::RunEvent| match &e.kind {
        Some(pb::run_event::Kind::Training(t))
            if matches!(t.kind, Some(pb::job_event::Kind::Step(_))) =>
        {
            Some(t.job_id.clone())
        }
        _ => None,
    };
    let events = follow(client, run_id, |events| {
        events.last().and_then(stepped).is_some()
    })
    .await;
    events
        .last()
        .and_then(stepped)
        .unwrap_or_else(|| panic!("the run ended before its job trained: {events:?}"))
}

/// A run's export in `format`, one JSON value per line.
pub async fn export_lines(
    client: &mut PipelineClient<GrpcChannel>,
    run_id: &str,
    format: pb::ExportFormat,
) -> Vec<serde_json::Value> {
    let mut export = client
        .export_dataset(pb::ExportDatasetRequest {
            run_id: run_id.into(),
            format: format as i32,
        })
        .await
        .unwrap()
        .into_inner();
    let mut lines = Vec::new();
    while let Some(chunk) = export.message().await.unwrap() {
        for line in String::from_utf8(chunk.data).unwrap().lines() {
            lines.push(serde_json::from_str(line).unwrap());
        }
    }
    lines
}

/// The run as the gateway has it now.
pub async fn get_run(client: &mut PipelineClient<GrpcChannel>, run_id: &str) -> pb::Run {
    client
        .get_run(pb::GetRunRequest {
            run_id: run_id.into(),
        })
        .await
        .unwrap()
        .into_inner()
}

/// The run's report.
pub async fn get_report(client: &mut PipelineClient<GrpcChannel>, run_id: &str) -> pb::Report {
    client
        .get_report(pb::GetReportRequest {
            run_id: run_id.into(),
        })
        .await
        .unwrap()
        .into_inner()
}

/// Runs `command` to its end; panics with its standard error unless it succeeded.
pub fn run_to_success(command: &mut std::process::Command) {
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
