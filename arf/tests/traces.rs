//! What an operator sees in their tracing backend: one trace per run item crossing
//! gateway -> analyzer -> editor -> analyzer, and the training job's span linked to the run.
//!
//! Alone in its test binary: it installs the process-wide subscriber (the training job runs on
//! its own thread, the services on tokio's workers), with an in-memory exporter.

mod support;

use arf_common::telemetry::in_memory::InMemoryTelemetry;
use arf_proto::v1 as pb;
use opentelemetry::trace::{SpanKind, TraceId};
use opentelemetry_sdk::trace::SpanData;
use support::*;

fn attribute(span: &SpanData, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_item_is_one_trace_across_the_services_and_training_links_to_the_run() {
    let telemetry = InMemoryTelemetry::install();
    tracing::subscriber::set_global_default(telemetry.subscriber()).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let (suite, mut client) = suite(dir.path()).await;
    let mut spec = spec(&[pb::Stage::Analyze, pb::Stage::Revise, pb::Stage::Finetune]);
    let config = spec.config.as_mut().unwrap();
    config.revision_rounds = 1;
    config.revision_max_tokens = 128;
    config.training = Some(pb::Hyperparameters {
        max_steps: 2,
        learning_rate: 1e-3,
        max_seq_len: 256,
        ..Default::default()
    });
    let run = create(&mut client, spec, sample_rows()).await.unwrap();
    let events = watch(&mut client, &run.id, 0).await;
    assert_eq!(final_state(&events), Some(pb::RunState::Succeeded));
    // The autoscalers' gauge: one series per stage, nothing left once the run has ended.
    let pending = telemetry.i64_gauge("arf.gateway.pending_items");
    let mut stages: Vec<&str> = pending
        .iter()
        .flat_map(|(attrs, _)| attrs.iter().filter_map(|a| a.strip_prefix("stage=")))
        .collect();
    stages.sort_unstable();
    stages.dedup();
    assert_eq!(
        stages,
        ["analyze", "evaluate", "finetune", "generate", "revise"],
        "{pending:?}"
    );
    assert!(pending.iter().all(|(_, left)| *left == 0), "{pending:?}");
    suite.shutdown().await.unwrap();
    let spans = telemetry.finished_spans();

    let run_span = spans
        .iter()
        .find(|s| s.name == "arf.run")
        .expect("the run has a span");
    let run_trace = run_span.span_context.trace_id();
    let in_trace = |trace: TraceId, name: &str, kind: SpanKind| -> Vec<&SpanData> {
        let mut found: Vec<&SpanData> = spans
            .iter()
            .filter(|s| s.span_context.trace_id() == trace && s.name == name && s.span_kind == kind)
            .collect();
        found.sort_by_key(|s| s.start_time);
        found
    };

    // Every item's first span starts its own trace, linked to the run's.
    let analyzed: Vec<&SpanData> = spans
        .iter()
        .filter(|s| s.name == "arf.item.analyze")
        .collect();
    assert_eq!(analyzed.len(), 16, "one analyze span per row");
    for item in &analyzed {
        assert_ne!(
            item.span_context.trace_id(),
            run_trace,
            "an item is its own trace, not a span in the run's"
        );
        assert!(
            item.links
                .iter()
                .any(|l| l.span_context.trace_id() == run_trace),
            "the item's trace links to the run"
        );
    }

    // A revised item's trace: analyzed, revised by the editor, re-analyzed, all in one trace.
    let revised: Vec<&SpanData> = spans
        .iter()
        .filter(|s| s.name == "arf.item.revise")
        .collect();
    assert!(!revised.is_empty(), "the sample has flagged summaries");
    let (mut rechecked, mut repaired) = (0, 0);
    for item in &revised {
        let trace = item.span_context.trace_id();
        let id = attribute(item, "arf.conversation_id").unwrap();
        let first = analyzed
            .iter()
            .find(|a| attribute(a, "arf.conversation_id").as_deref() == Some(&id))
            .unwrap();
        assert_eq!(
            first.span_context.trace_id(),
            trace,
            "{id}: the revise stage continues the item's trace"
        );
        let analyses = in_trace(trace, "arf.v1.Analyzer/Analyze", SpanKind::Server);
        let revisions = in_trace(trace, "arf.v1.Editor/Revise", SpanKind::Server);
        if revisions.is_empty() && analyses.len() == 2 {
            // Personal data only: repaired by rule (its placeholder), re-analyzed, no editor.
            repaired += 1;
            continue;
        }
        assert_eq!(
            revisions.len(),
            1,
            "{id}: one round, one revision in the analyzer's trace"
        );
        assert!(
            !analyses.is_empty() && analyses[0].start_time < revisions[0].start_time,
            "{id}: analyzed before revising"
        );
        if analyses.len() == 2 {
            // Start times: a server span may end a moment after its client has its answer.
            assert!(
                revisions[0].start_time < analyses[1].start_time,
                "{id}: the revision is re-analyzed after it"
            );
            rechecked += 1;
        }
        for span in analyses.iter().chain(&revisions) {
            assert_ne!(
                span.parent_span_id,
                opentelemetry::trace::SpanId::INVALID,
                "{id}: the server span has a client parent"
            );
        }
    }
    let outcomes = revise_outcomes(&events);
    let parsed = outcomes.get("accepted").copied().unwrap_or(0)
        + outcomes.get("rejected").copied().unwrap_or(0);
    assert_eq!(
        rechecked, parsed,
        "every revision that parsed was re-analyzed in its item's trace: {outcomes:?}"
    );
    assert_eq!(
        repaired,
        outcomes.get("repaired").copied().unwrap_or(0),
        "{outcomes:?}"
    );

    // The training job runs on the trainer's own thread: its span links back to the run.
    let create = in_trace(run_trace, "arf.v1.Trainer/CreateJob", SpanKind::Server);
    assert_eq!(
        create.len(),
        1,
        "CreateJob is called within the run's trace"
    );
    let train = spans
        .iter()
        .find(|s| s.name == "arf.trainer.train")
        .expect("the training job has a span");
    assert!(
        train
            .links
            .iter()
            .any(|l| l.span_context.trace_id() == run_trace),
        "the training span links to the run's trace: {:?}",
        train.links.links
    );
}

/// The first log lines a service writes to a pipe (as to a file or a log collector), up to
/// the one that says it started.
fn first_log_lines(extra: &[&str]) -> Vec<String> {
    use std::io::BufRead as _;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_arf"))
        .args(["analyzer", "--listen", "127.0.0.1:0"])
        .args(extra)
        .env_remove("RUST_LOG")
        .env_remove("ARF_LOG_FORMAT")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = Vec::new();
    for line in std::io::BufReader::new(child.stderr.take().unwrap()).lines() {
        let line = line.unwrap();
        let started = line.contains("starting arf-analyzer");
        lines.push(line);
        if started || lines.len() > 50 {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    lines
}

#[test]
fn logs_written_to_a_pipe_carry_no_colour_codes_and_json_logs_are_one_object_a_line() {
    let text = first_log_lines(&[]);
    assert!(
        text.last()
            .is_some_and(|l| l.contains("starting arf-analyzer")),
        "{text:?}"
    );
    assert!(
        text.iter().all(|l| !l.contains('\u{1b}')),
        "escape codes in a pipe: {text:?}"
    );

    let json = first_log_lines(&["--log-format", "json"]);
    let started: serde_json::Value = serde_json::from_str(json.last().unwrap()).unwrap();
    assert_eq!(started["level"], "INFO", "{started}");
    assert!(
        started["fields"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("starting arf-analyzer")),
        "{started}"
    );
    for line in &json {
        serde_json::from_str::<serde_json::Value>(line)
            .unwrap_or_else(|e| panic!("not one JSON object a line ({e}): {line}"));
    }
}
