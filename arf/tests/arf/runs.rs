//! Pipeline runs through the gateway over real gRPC, against the embedded suite.

use crate::support::*;
use arf_common::status::field_violations;
use arf_proto::v1 as pb;
use tonic::Code;

#[tokio::test]
async fn an_analyze_run_over_the_sample_is_watchable_resumable_and_exportable() {
    let dir = tempfile::tempdir().unwrap();
    let (suite, mut client) = suite(dir.path()).await;
    let run = create(&mut client, spec(&[pb::Stage::Analyze]), sample_rows())
        .await
        .unwrap();
    assert_eq!(run.counts.as_ref().unwrap().rows, 16);

    let events = watch(&mut client, &run.id, 0).await;
    assert_eq!(
        final_state(&events),
        Some(pb::RunState::Succeeded),
        "{events:?}"
    );
    let sequences: Vec<u64> = events.iter().map(|e| e.sequence).collect();
    assert_eq!(
        sequences,
        (1..=events.len() as u64).collect::<Vec<_>>(),
        "numbered from 1 without gaps"
    );
    let analyzed: Vec<String> = items(&events, pb::Stage::Analyze)
        .iter()
        .map(|i| i.outcome.clone())
        .collect();
    assert_eq!(analyzed.len(), 16);
    assert!(
        analyzed.iter().any(|o| o == "flagged") && analyzed.iter().any(|o| o == "clean"),
        "{analyzed:?}"
    );

    // A client that reconnects with the last sequence it saw gets exactly the rest.
    let resumed = watch(&mut client, &run.id, 5).await;
    assert_eq!(resumed, events[5..].to_vec());
    // One that reconnects after the end gets a finished, empty stream (not a hang).
    let late = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        watch(&mut client, &run.id, events.len() as u64),
    );
    assert!(
        late.await
            .expect("a watch past the end ends at once")
            .is_empty()
    );
    // Each stage event carries the stage's items: none done at the start, all at the end.
    let stage_progress: Vec<(bool, u32, u32)> = events
        .iter()
        .filter_map(|e| match &e.kind {
            Some(pb::run_event::Kind::Stage(s)) => {
                s.progress.as_ref().map(|p| (s.started, p.total, p.done))
            }
            _ => None,
        })
        .collect();
    assert_eq!(stage_progress, [(true, 16, 0), (false, 16, 16)]);

    let run = get_run(&mut client, &run.id).await;
    let counts = run.counts.unwrap();
    assert_eq!((counts.analyzed, counts.held_out), (16, 0));
    assert!(
        counts.flagged >= 8,
        "the sample's teacher summaries carry at least 8 errors: {counts:?}"
    );
    assert_eq!(run.last_event_sequence, events.len() as u64);

    let report = get_report(&mut client, &run.id).await;
    assert!(report.markdown.contains("| rows |"), "{}", report.markdown);
    assert!(std::path::Path::new(&report.path).exists());
    suite.shutdown().await.unwrap();
}

#[tokio::test]
async fn bad_rows_are_reported_with_their_line_and_skipped_or_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let (suite, mut client) = suite(dir.path()).await;
    let mut rows = sample_rows();
    rows[2].conversation.as_mut().unwrap().turns[1].role = 42;
    rows[4].teacher_summary = " ".into();
    rows[6].conversation.as_mut().unwrap().id = rows[0].conversation.as_ref().unwrap().id.clone();

    let run = create(&mut client, spec(&[pb::Stage::Analyze]), rows.clone())
        .await
        .unwrap();
    let bad: Vec<(u32, String)> = run
        .bad_rows
        .iter()
        .map(|b| (b.line, b.field.clone()))
        .collect();
    assert_eq!(
        bad,
        [
            (3, "conversation.turns[1].role".to_string()),
            (5, "teacher_summary".to_string()),
            (7, "conversation.id".to_string())
        ]
    );
    assert_eq!(run.counts.unwrap().rows, 13);
    assert_eq!(
        final_state(&watch(&mut client, &run.id, 0).await),
        Some(pb::RunState::Succeeded)
    );

    let mut fatal = spec(&[pb::Stage::Analyze]);
    fatal.on_bad_row = pb::BadRowPolicy::Fail as i32;
    let status = create(&mut client, fatal, rows).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("line 3"), "{status:?}");
    assert_eq!(field_violations(&status)[0].0, "conversation.turns[1].role");
    suite.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_server_side_dataset_path_and_pagination() {
    let dir = tempfile::tempdir().unwrap();
    let (suite, mut client) = suite(dir.path()).await;
    for _ in 0..3 {
        let mut s = spec(&[pb::Stage::Analyze]);
        s.dataset_path = SAMPLE.into();
        let run = create(&mut client, s, vec![]).await.unwrap();
        assert_eq!(run.counts.unwrap().rows, 16);
    }
    let mut s = spec(&[pb::Stage::Analyze]);
    s.dataset_path = "/nonexistent/rows.jsonl".into();
    assert_eq!(
        field_violations(&create(&mut client, s, vec![]).await.unwrap_err())[0].0,
        "spec.dataset_path"
    );
    let mut s = spec(&[pb::Stage::Analyze]);
    s.config.as_mut().unwrap().acceptance = 99;
    assert_eq!(
        field_violations(&create(&mut client, s, vec![]).await.unwrap_err())[0].0,
        "spec.config.acceptance"
    );
    let mut s = spec(&[pb::Stage::Analyze]);
    s.config.as_mut().unwrap().revision_max_tokens = 1 << 20;
    assert_eq!(
        field_violations(&create(&mut client, s, vec![]).await.unwrap_err())[0].0,
        "spec.config.revision_max_tokens"
    );
    // Every enum and size is checked up front, with its field path.
    let refused: [(&str, fn(&mut pb::RunConfig)); 4] = [
        ("spec.config.on_unimproved", |c| c.on_unimproved = 42),
        ("spec.config.repair", |c| c.repair = 42),
        ("spec.config.privacy", |c| c.privacy = 42),
        ("spec.config.evaluation.max_summary_tokens", |c| {
            c.evaluation = Some(pb::EvaluationConfig {
                max_summary_tokens: 1 << 20,
                ..Default::default()
            })
        }),
    ];
    for (field, set) in refused {
        let mut s = spec(&[pb::Stage::Analyze]);
        set(s.config.as_mut().unwrap());
        let status = create(&mut client, s, sample_rows()).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{field}");
        assert_eq!(field_violations(&status)[0].0, field);
    }
    // A student base the trainer cannot train is refused now (the trainer is asked), naming
    // its architecture and the ones it knows, not at Finetune.
    let models = tempfile::tempdir().unwrap();
    let tiny = arf::suite::tiny_model(models.path()).unwrap();
    let config = tiny.join("config.json");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace("LlamaForCausalLM", "MistralForCausalLM"),
    )
    .unwrap();
    let mut s = spec(&[pb::Stage::Analyze, pb::Stage::Finetune]);
    s.config.as_mut().unwrap().student_base_model_dir = tiny.display().to_string();
    let status = create(&mut client, s, sample_rows()).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let (field, why) = &field_violations(&status)[0];
    assert_eq!(field, "spec.config.student_base_model_dir");
    assert!(
        why.contains("MistralForCausalLM") && why.contains("Qwen3ForCausalLM"),
        "{why}"
    );

    let first = client
        .list_runs(pb::ListRunsRequest {
            page_size: 2,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.runs.len(), 2);
    let second = client
        .list_runs(pb::ListRunsRequest {
            page_size: 2,
            page_token: first.next_page_token,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(second.runs.len(), 1);
    assert!(second.next_page_token.is_empty());
    // Page tokens are opaque; a made-up one, an offset as the old tokens wrote it (which once
    // went negative in SQL or overflowed), or a forged huge one is INVALID_ARGUMENT.
    for token in [
        "garbage".to_string(),
        "1".into(),
        "18446744073709551615".into(),
        arf_common::paging::offset_token(usize::MAX),
    ] {
        let status = client
            .list_runs(pb::ListRunsRequest {
                page_size: 2,
                page_token: token.clone(),
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{token}");
        assert_eq!(field_violations(&status)[0].0, "page_token");
    }
    suite.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watching_resumes_mid_run_and_a_cancelled_run_stops() {
    let dir = tempfile::tempdir().unwrap();
    let (suite, mut client) = suite(dir.path()).await;
    let run = create(&mut client, analyze_and_revise(), sample_rows())
        .await
        .unwrap();

    // A client that drops its stream mid-run and reconnects with the last sequence it saw.
    let mut stream = client
        .watch_run(pb::WatchRunRequest {
            run_id: run.id.clone(),
            after_sequence: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let mut seen = Vec::new();
    while seen.len() < 10 {
        seen.push(
            stream
                .message()
                .await
                .unwrap()
                .expect("a run of 16 rows has more than 10 events"),
        );
    }
    drop(stream);
    assert_eq!(
        final_state(&seen),
        Some(pb::RunState::Running),
        "the first ten events come before the end"
    );
    let rest = watch(&mut client, &run.id, seen.last().unwrap().sequence).await;
    let whole = watch(&mut client, &run.id, 0).await;
    assert_eq!(
        [seen, rest].concat(),
        whole,
        "nothing lost, nothing repeated"
    );
    assert_eq!(final_state(&whole), Some(pb::RunState::Succeeded));

    // Cancelled mid-revise: the run ends CANCELLED and stops revising.
    let rows = sample_rows();
    let run = create(&mut client, analyze_and_revise(), rows.clone())
        .await
        .unwrap();
    wait_for_revisions(&mut client, &run.id, 2).await;
    let cancelled = client
        .cancel_run(pb::CancelRunRequest {
            run_id: run.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(cancelled.state(), pb::RunState::Cancelled);
    let events = watch(&mut client, &run.id, 0).await;
    assert_eq!(final_state(&events), Some(pb::RunState::Cancelled));
    let revised = items(&events, pb::Stage::Revise).len();
    assert!(
        revised < rows.len(),
        "revision stopped: {revised} of {} items",
        rows.len()
    );
    let again = client
        .cancel_run(pb::CancelRunRequest {
            run_id: run.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        again.state(),
        pb::RunState::Cancelled,
        "cancelling twice is harmless"
    );
    let missing = client
        .cancel_run(pb::CancelRunRequest {
            run_id: "run-nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    suite.shutdown().await.unwrap();
}

/// `arf run` streams the file as it reads it; a bad row partway aborts the upload, so the
/// gateway never takes the rows before it for the whole dataset.
#[tokio::test]
async fn a_dataset_file_is_streamed_and_a_bad_row_partway_aborts_the_upload() {
    let dir = tempfile::tempdir().unwrap();
    let (suite, mut client) = suite(dir.path()).await;
    let sample = std::fs::read_to_string(SAMPLE).unwrap();
    let good = dir.path().join("good.jsonl");
    std::fs::write(&good, &sample).unwrap();
    let rows = arf::upload::stream_jsonl(&good).unwrap();
    let run = arf::upload::create_run(&mut client, spec(&[pb::Stage::Analyze]), rows)
        .await
        .unwrap();
    assert_eq!(run.counts.unwrap().rows, 16);

    let mut lines: Vec<&str> = sample.lines().collect();
    lines.insert(3, "{\"id\": \"broken\", \"turns\": ");
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(&bad, lines.join("\n")).unwrap();
    let err = arf::upload::create_run(
        &mut client,
        spec(&[pb::Stage::Analyze]),
        arf::upload::stream_jsonl(&bad).unwrap(),
    )
    .await
    .unwrap_err();
    let text = format!("{err:#}");
    assert!(
        text.contains("bad.jsonl:4:") && text.contains("no run was started"),
        "{text}"
    );
    // The aborted upload's run (if the gateway had begun one) is failed, not run: once the
    // gateway has seen the reset, only the good run is not FAILED.
    let mut runs = Vec::new();
    for _ in 0..100 {
        runs = client
            .list_runs(pb::ListRunsRequest::default())
            .await
            .unwrap()
            .into_inner()
            .runs;
        if runs
            .iter()
            .filter(|r| r.state != pb::RunState::Failed as i32)
            .count()
            == 1
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(
        runs.iter()
            .filter(|r| r.state != pb::RunState::Failed as i32)
            .count(),
        1,
        "{runs:?}"
    );
    suite.shutdown().await.unwrap();
}

/// Detector and category names are checked against the analyzer's taxonomy at CreateRun: an
/// unknown one is INVALID_ARGUMENT with its path, before any row is read (it used to fail
/// every item, hours later). Known ones pass.
#[tokio::test]
async fn unknown_detector_or_category_names_are_refused_up_front() {
    let dir = tempfile::tempdir().unwrap();
    let (suite, mut client) = suite(dir.path()).await;
    let taxonomy = arf_proto::v1::analyzer_client::AnalyzerClient::new(
        arf_common::client::connect_lazy(
            &suite.analyzer_endpoint(),
            &arf_common::client::ClientOptions::default(),
        )
        .unwrap(),
    )
    .get_taxonomy(pb::GetTaxonomyRequest {})
    .await
    .unwrap()
    .into_inner();
    let with = |options: pb::AnalyzeOptions| {
        let mut s = spec(&[pb::Stage::Analyze]);
        s.config.as_mut().unwrap().analyzer = Some(options);
        s
    };
    let known = pb::AnalyzeOptions {
        detectors: vec![taxonomy.detectors[0].clone()],
        categories: vec![taxonomy.categories[0].id.clone()],
        ..Default::default()
    };
    for (options, field) in [
        (
            pb::AnalyzeOptions {
                detectors: vec![taxonomy.detectors[0].clone(), "no_such_detector".into()],
                ..Default::default()
            },
            "spec.config.analyzer.detectors[1]",
        ),
        (
            pb::AnalyzeOptions {
                categories: vec!["no_such_category".into()],
                ..known.clone()
            },
            "spec.config.analyzer.categories[0]",
        ),
    ] {
        let refused = create(&mut client, with(options), sample_rows())
            .await
            .unwrap_err();
        assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
        assert_eq!(
            arf_common::status::field_violations(&refused)[0].0,
            field,
            "{refused:?}"
        );
    }
    let run = create(&mut client, with(known), sample_rows())
        .await
        .unwrap();
    let events = watch(&mut client, &run.id, 0).await;
    assert_eq!(final_state(&events), Some(pb::RunState::Succeeded));
    suite.shutdown().await.unwrap();
}

/// A run that asks for the judge (ratings in Evaluate, or model-judged detectors) of an analyzer
/// that has none is refused at CreateRun with the field, instead of failing at Evaluate.
#[tokio::test]
async fn a_judge_the_analyzer_lacks_is_refused_up_front() {
    use arf_common::server::serve_loopback;
    use tonic::service::Routes;
    let dir = tempfile::tempdir().unwrap();
    let analyzer = analyzer_svc::grpc::AnalyzerService::new(
        Default::default(),
        None,
        4 << 20,
        tokio_util::sync::CancellationToken::new(),
    );
    let analyzer = serve_loopback(
        &arf_common::config::ServerArgs::local(),
        arf_proto::service_names::ANALYZER,
        true,
        Routes::new(analyzer.into_server(4 << 20)),
    )
    .await
    .unwrap();
    let nowhere = "http://127.0.0.1:9".to_string();
    let config = gateway::config::GatewayConfig::local(
        dir.path().to_path_buf(),
        gateway::clients::Endpoints {
            analyzer: analyzer.endpoint(),
            editors: vec![nowhere.clone()],
            teachers: Vec::new(),
            trainer: nowhere,
        },
    );
    let (_, routes) = gateway::server::build(
        &config,
        4 << 20,
        None,
        tokio_util::sync::CancellationToken::new(),
    )
    .await
    .unwrap();
    let server = serve_loopback(
        &arf_common::config::ServerArgs::local(),
        arf_proto::service_names::PIPELINE,
        true,
        routes,
    )
    .await
    .unwrap();
    let mut client = arf_proto::v1::pipeline_client::PipelineClient::new(
        arf_common::client::connect_lazy(
            &server.endpoint(),
            &arf_common::client::ClientOptions::default(),
        )
        .unwrap(),
    );
    let mut rating = spec(&[pb::Stage::Analyze, pb::Stage::Evaluate]);
    rating.config.as_mut().unwrap().evaluation = Some(pb::EvaluationConfig {
        judge: true,
        student_endpoint: "http://127.0.0.1:9".into(),
        ..Default::default()
    });
    let mut judged = spec(&[pb::Stage::Analyze]);
    judged.config.as_mut().unwrap().analyzer = Some(pb::AnalyzeOptions {
        model_judged: true,
        ..Default::default()
    });
    for (spec, field) in [
        (rating, "spec.config.evaluation.judge"),
        (judged, "spec.config.analyzer.model_judged"),
    ] {
        let refused = create(&mut client, spec, sample_rows()).await.unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
        assert_eq!(field_violations(&refused)[0].0, field, "{refused:?}");
    }
    server.shutdown().await.unwrap();
    analyzer.shutdown().await.unwrap();
}

/// CancelRun during Finetune reaches the training job: the trainer runs one job at a time, so
/// a job left training would hold up every later run's Finetune.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_run_during_finetune_cancels_its_training_job() {
    use arf_common::client::{ClientOptions, connect_lazy};
    let dir = tempfile::tempdir().unwrap();
    let (suite, mut client) = suite(dir.path()).await;
    // Long enough that the cancel lands while the job trains.
    let run = create(
        &mut client,
        analyze_revise_finetune(1_000_000),
        sample_rows(),
    )
    .await
    .unwrap();
    let job_id = wait_for_training_step(&mut client, &run.id).await;
    let cancelled = client
        .cancel_run(pb::CancelRunRequest {
            run_id: run.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(cancelled.state(), pb::RunState::Cancelled);

    let mut trainer = pb::trainer_client::TrainerClient::new(
        connect_lazy(&suite.trainer_endpoint(), &ClientOptions::default()).unwrap(),
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let state = loop {
        let job = trainer
            .get_job(pb::GetJobRequest {
                job_id: job_id.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        if job.state() != pb::JobState::Running || std::time::Instant::now() > deadline {
            break job.state();
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(state, pb::JobState::Cancelled, "the job stops with the run");
    suite.shutdown().await.unwrap();
}
