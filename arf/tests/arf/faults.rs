//! Fault injection: services that go away and come back, and items no model can take. The run
//! must neither fail for a fault that passes nor stop for one item; and its events must say
//! what it is waiting for.

use std::time::Duration;

use crate::support::*;
use arf_proto::v1 as pb;
use tokio_util::sync::CancellationToken;

fn waits(events: &[pb::RunEvent], service: &str) -> Vec<pb::Waiting> {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            Some(pb::run_event::Kind::Waiting(w)) if w.service == service => Some(w.clone()),
            _ => None,
        })
        .collect()
}

/// The analyzer restarts in the middle of Revise: the items waiting on it wait (the run stays
/// RUNNING, its events say so), and go on when it is back. Before, the run failed at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_waits_for_a_restarting_analyzer_and_then_finishes() {
    let dir = tempfile::tempdir().unwrap();
    let (mut suite, mut client) = suite(dir.path()).await;
    let rows = many_rows(2);
    let run = create(&mut client, analyze_and_revise(), rows.clone())
        .await
        .unwrap();
    wait_for_revisions(&mut client, &run.id, 2).await;

    let addr = suite.analyzer.local_addr();
    let judge = suite.editor_endpoints()[0].clone();
    let placeholder = arf::suite::serve_analyzer(
        &arf_common::config::ServerArgs::local(),
        &judge,
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        CancellationToken::new(),
    )
    .await
    .unwrap();
    std::mem::replace(&mut suite.analyzer, placeholder)
        .shutdown()
        .await
        .unwrap();

    // The run says it is waiting, and is still running.
    let mut stream = client
        .watch_run(pb::WatchRunRequest {
            run_id: run.id.clone(),
            after_sequence: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let waiting = tokio::time::timeout(Duration::from_secs(120), async {
        while let Some(e) = stream.message().await.unwrap() {
            if let Some(pb::run_event::Kind::Waiting(w)) = e.kind {
                return w;
            }
            let ended = [
                pb::RunState::Succeeded,
                pb::RunState::Failed,
                pb::RunState::Cancelled,
            ]
            .map(|s| s as i32);
            assert!(
                !matches!(e.kind, Some(pb::run_event::Kind::State(s)) if ended.contains(&s)),
                "the run ended while the analyzer was down: {e:?}"
            );
        }
        panic!("the run's events ended without a waiting event");
    })
    .await
    .expect("a waiting event within two minutes");
    assert_eq!(waiting.service, "the analyzer", "{waiting:?}");
    assert_eq!(waiting.code, "UNAVAILABLE", "{waiting:?}");
    assert!(
        waiting.attempt >= 1 && waiting.retry_in_ms > 0,
        "{waiting:?}"
    );

    // Back on the same address: the gateway's lazy channel reconnects.
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let restarted = arf::suite::serve_analyzer(
        &arf_common::config::ServerArgs::local(),
        &judge,
        listener,
        CancellationToken::new(),
    )
    .await
    .unwrap();
    std::mem::replace(&mut suite.analyzer, restarted)
        .shutdown()
        .await
        .unwrap();

    let events = watch(&mut client, &run.id, 0).await;
    let error = get_run(&mut client, &run.id).await.error;
    assert_eq!(
        final_state(&events),
        Some(pb::RunState::Succeeded),
        "{error}"
    );
    assert_eq!(
        revise_outcomes(&events).values().sum::<usize>(),
        rows.len(),
        "every item has its one revision outcome"
    );
    let analyzer_waits = waits(&events, "the analyzer");
    assert!(
        analyzer_waits.iter().any(|w| w.recovered),
        "the events say when the analyzer answered again: {analyzer_waits:?}"
    );
    let levels: Vec<u32> = analyzer_waits
        .iter()
        .filter(|w| !w.recovered)
        .map(|w| w.attempt)
        .collect();
    let mut unique = levels.clone();
    unique.dedup();
    assert_eq!(
        levels, unique,
        "each retry level is announced once, however many items wait"
    );
    suite.shutdown().await.unwrap();
}

/// A held-out conversation longer than the student's context: the student refuses it, that
/// item is scored as failed, and the others are evaluated. Before, the whole run failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conversation_too_long_for_the_student_fails_only_its_item() {
    let dir = tempfile::tempdir().unwrap();
    let (suite, mut client) = suite(dir.path()).await;
    let mut rows = sample_rows();
    let mut long = rows[0].clone();
    let conversation = long.conversation.as_mut().unwrap();
    conversation.id = "far-too-long".into();
    // Well past the tiny model's 8192 positions, whatever its tokenizer merges.
    conversation.turns[0].text = "my order number is 1234567 and it is late. ".repeat(1500);
    long.line = rows.len() as u32 + 1;
    rows.push(long);

    let mut spec = spec(&[pb::Stage::Evaluate]);
    let config = spec.config.as_mut().unwrap();
    config.evaluation = Some(pb::EvaluationConfig {
        // Nearly all held out (the split is by a hash of the id; 1.0 is not a fraction).
        holdout_fraction: 0.99,
        // The tiny editor stands for the student: what matters is the context it refuses.
        student_endpoint: suite.editor_endpoints()[0].clone(),
        max_summary_tokens: 16,
        ..Default::default()
    });
    let run = create(&mut client, spec, rows.clone()).await.unwrap();
    let events = watch(&mut client, &run.id, 0).await;
    let finished = get_run(&mut client, &run.id).await;
    assert_eq!(
        final_state(&events),
        Some(pb::RunState::Succeeded),
        "{}",
        finished.error
    );
    let counts = finished.counts.unwrap();
    assert!(counts.held_out > 1, "{counts:?}");
    assert_eq!(
        counts.evaluated, counts.held_out,
        "every held-out item is evaluated, the refused one too"
    );
    let report = suite
        .pipeline
        .store()
        .items(&run.id)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|i| Some((i.conversation.id.clone(), i.evaluation?)))
        .collect::<std::collections::BTreeMap<_, _>>();
    let refused = &report["far-too-long"].student;
    assert!(refused.failed && refused.summary.is_empty(), "{refused:?}");
    assert!(
        report
            .iter()
            .filter(|(id, _)| *id != "far-too-long")
            .all(|(_, e)| !e.student.summary.is_empty()),
        "the others were summarized"
    );
    suite.shutdown().await.unwrap();
}
