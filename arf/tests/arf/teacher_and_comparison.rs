//! Runs that start from raw conversations (the Generate stage writes the teacher's summaries
//! the rows lack), and the ARF comparison: students trained on the unrevised summaries, on the
//! unflagged ones only and on the human references, the base model zero-shot, every student
//! and the teacher side by side in the report, with each model's reference likelihood.

use crate::support::*;
use arf_proto::v1 as pb;

/// The sample with the teacher summaries of every other row removed.
fn half_raw_rows() -> Vec<pb::DatasetRow> {
    sample_rows()
        .into_iter()
        .enumerate()
        .map(|(i, mut row)| {
            if i % 2 == 0 {
                row.teacher_summary.clear();
            }
            row
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_conversations_get_teacher_summaries_and_the_report_compares_every_arm() {
    let dir = tempfile::tempdir().unwrap();
    let (suite, mut client) = suite(dir.path()).await;
    let rows = half_raw_rows();
    let raw: Vec<String> = rows
        .iter()
        .filter(|r| r.teacher_summary.is_empty())
        .map(|r| r.conversation.as_ref().unwrap().id.clone())
        .collect();
    let mut spec = spec(&[]);
    let config = spec.config.as_mut().unwrap();
    config.revision_rounds = 1;
    config.revision_max_tokens = 96;
    config.compare_unrevised = true;
    config.compare_filter_only = true;
    config.compare_oracle = true;
    // A tiny random model's generated summaries are flagged and its revisions of them refused by
    // the gate; kept as they are, they still reach the training set, which is what this checks.
    config.set_on_unimproved(pb::UnimprovedPolicy::KeepOriginal);
    config.training = Some(pb::Hyperparameters {
        max_steps: 2,
        learning_rate: 1e-3,
        max_seq_len: 384,
        ..Default::default()
    });
    config.evaluation = Some(pb::EvaluationConfig {
        holdout_fraction: 0.25,
        seed: 3,
        max_summary_tokens: 16,
        ..Default::default()
    });

    let run = create(&mut client, spec, rows).await.unwrap();
    let events = watch(&mut client, &run.id, 0).await;
    let run = get_run(&mut client, &run.id).await;
    assert_eq!(
        final_state(&events),
        Some(pb::RunState::Succeeded),
        "stage {:?}: {}",
        run.current_stage,
        run.error
    );
    assert_eq!(
        suite.student_host.loaded(),
        0,
        "the five models evaluated are unloaded after the run"
    );
    assert_eq!(
        suite.student_host.peak_loaded(),
        1,
        "the models are hosted one at a time, whatever the number of arms"
    );

    let c = run.counts.unwrap();
    assert_eq!((c.without_summary, c.generated), (8, 8), "{c:?}");
    let generated: Vec<&str> = items(&events, pb::Stage::Generate)
        .iter()
        .map(|i| i.conversation_id.as_str())
        .collect();
    let mut sorted = generated.clone();
    sorted.sort_unstable();
    let mut want: Vec<&str> = raw.iter().map(String::as_str).collect();
    want.sort_unstable();
    assert_eq!(
        sorted, want,
        "exactly the rows without a summary, once each"
    );
    assert_eq!(
        c.analyzed, 16,
        "generated summaries are analyzed like the others"
    );
    let progress = run
        .progress
        .iter()
        .find(|p| p.stage == pb::Stage::Generate as i32)
        .unwrap();
    assert_eq!((progress.total, progress.done), (8, 8));

    // Four students, from four jobs; the report sets six models side by side.
    assert!(!run.training_job_id.is_empty() && !run.baseline_job_id.is_empty());
    assert_ne!(run.training_job_id, run.baseline_job_id);
    let report = get_report(&mut client, &run.id).await;
    let models: Vec<(&str, u32)> = report
        .overall
        .iter()
        .map(|c| (c.model.as_str(), c.summaries))
        .collect();
    assert_eq!(
        models,
        [
            ("base", c.held_out),
            ("unrevised", c.held_out),
            ("filter_only", c.held_out),
            ("student", c.held_out),
            ("oracle", c.held_out),
            ("teacher", c.held_out)
        ]
    );
    // Every model but the teacher gave the held-out references a likelihood, and a random
    // model gives them little.
    for card in &report.overall {
        match card.model.as_str() {
            "teacher" => assert_eq!(card.reference_nll, None),
            _ => assert!(card.reference_nll.is_some_and(|n| n > 1.0), "{card:?}"),
        }
    }
    for arm in ["student", "filter_only", "oracle"] {
        assert!(
            report.differences.iter().any(|d| d.model == arm
                && d.baseline == "unrevised"
                && d.metric == "reference_nll"),
            "{arm} minus unrevised on reference NLL: {:?}",
            report.differences
        );
    }
    assert!(
        report
            .differences
            .iter()
            .any(|d| d.metric.starts_with("error:") && d.mcnemar_p.is_some()),
        "per-category error rates against the unrevised student"
    );
    // Revising against dropping: ARF minus filter-only, the metrics and the categories.
    for metric in ["reference_nll", "rouge_l"] {
        assert!(
            report
                .differences
                .iter()
                .any(|d| d.model == "student" && d.baseline == "filter_only" && d.metric == metric),
            "student minus filter_only on {metric}: {:?}",
            report.differences
        );
    }
    for ch in &report.per_channel {
        assert!(
            ch.scores.iter().any(|s| s.model == "base")
                && ch.scores.iter().any(|s| s.model == "unrevised"),
            "{ch:?}"
        );
    }
    assert!(
        report.markdown.contains("student on unrevised data")
            && report.markdown.contains("base model, zero-shot")
    );
    assert!(
        report.markdown.contains("## Read them yourself"),
        "held-out summaries a person can read"
    );
    assert!(
        report.markdown.contains("The teacher wrote 8 summaries"),
        "Generate's cost is reported"
    );
    assert!(
        report.markdown.contains("| generate |"),
        "each stage's wall time"
    );

    // What the student is trained on includes the generated summaries.
    let mut exported = Vec::new();
    for v in export_lines(&mut client, &run.id, pb::ExportFormat::Plain).await {
        assert!(!v["summary"].as_str().unwrap().is_empty());
        exported.push(v["id"].as_str().unwrap().to_string());
    }
    assert!(
        exported.iter().any(|id| raw.contains(id)),
        "a generated summary reached the training set: {exported:?}"
    );
    suite.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generate_resumes_after_a_restart_without_asking_twice() {
    let dir = tempfile::tempdir().unwrap();
    let (suite, mut client) = suite(dir.path()).await;
    let rows: Vec<pb::DatasetRow> = many_rows(2)
        .into_iter()
        .map(|mut r| {
            r.teacher_summary.clear();
            r
        })
        .collect();
    let total = rows.len();
    let mut spec = spec(&[pb::Stage::Generate, pb::Stage::Analyze]);
    spec.config.as_mut().unwrap().evaluation = Some(pb::EvaluationConfig {
        max_summary_tokens: 48,
        ..Default::default()
    });
    let run = create(&mut client, spec, rows).await.unwrap();
    // Stop the whole suite once a few summaries are in: the run stays RUNNING.
    let mut stream = client
        .watch_run(pb::WatchRunRequest {
            run_id: run.id.clone(),
            after_sequence: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let mut seen = 0;
    while let Some(e) = stream.message().await.unwrap() {
        if matches!(&e.kind, Some(pb::run_event::Kind::Item(i)) if i.stage == pb::Stage::Generate as i32)
        {
            seen += 1;
            if seen == 3 {
                break;
            }
        }
    }
    drop(stream);
    suite.shutdown().await.unwrap();

    let (suite, mut client) = crate::support::suite(dir.path()).await;
    let events = watch(&mut client, &run.id, 0).await;
    assert_eq!(final_state(&events), Some(pb::RunState::Succeeded));
    let generated = items(&events, pb::Stage::Generate);
    let mut ids: Vec<&str> = generated
        .iter()
        .map(|i| i.conversation_id.as_str())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(
        (generated.len(), ids.len()),
        (total, total),
        "every summary written once, none twice"
    );
    let c = get_run(&mut client, &run.id).await.counts.unwrap();
    assert_eq!((c.generated, c.analyzed), (total as u32, total as u32));
    suite.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_generate_stage_a_row_needs_its_summary() {
    let dir = tempfile::tempdir().unwrap();
    let (suite, mut client) = suite(dir.path()).await;
    let run = create(&mut client, spec(&[pb::Stage::Analyze]), half_raw_rows())
        .await
        .unwrap();
    let events = watch(&mut client, &run.id, 0).await;
    let bad: Vec<&pb::BadRow> = events
        .iter()
        .filter_map(|e| match &e.kind {
            Some(pb::run_event::Kind::BadRow(b)) => Some(b),
            _ => None,
        })
        .collect();
    assert_eq!(bad.len(), 8);
    assert!(
        bad.iter()
            .all(|b| b.field == "teacher_summary" && b.message.contains("Generate")),
        "{bad:?}"
    );
    assert_eq!(bad[0].line, 1, "the offending row's line");
    suite.shutdown().await.unwrap();
}
