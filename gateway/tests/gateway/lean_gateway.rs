//! The `gateway` binary's server on its own: no other service, no inference engine, no student
//! host. What it can check without them, it checks at CreateRun.

use arf_common::status::field_violations;
use arf_proto::v1 as pb;
use arf_proto::v1::pipeline_client::PipelineClient;

fn row() -> pb::DatasetRow {
    pb::DatasetRow {
        line: 1,
        conversation: Some(pb::Conversation {
            id: "c1".into(),
            channel: "chat".into(),
            turns: vec![pb::Turn {
                role: pb::Role::Customer as i32,
                text: "My order is late.".into(),
            }],
            ..Default::default()
        }),
        teacher_summary: "The customer's order is late.".into(),
        ..Default::default()
    }
}

fn spec(config: pb::RunConfig) -> pb::CreateRunRequest {
    let spec = pb::RunSpec {
        display_name: "lean".into(),
        config: Some(config),
        ..Default::default()
    };
    pb::CreateRunRequest {
        part: Some(pb::create_run_request::Part::Spec(spec)),
    }
}

/// The gateway server on `dir`, with no other service.
async fn lean_gateway(
    dir: &std::path::Path,
) -> (
    arf_common::server::RunningServer,
    PipelineClient<arf_common::client::GrpcChannel>,
) {
    crate::support::serve(&crate::support::local_config(dir)).await
}

fn analyze_only() -> pb::RunConfig {
    pb::RunConfig {
        stages: vec![pb::Stage::Analyze as i32],
        ..Default::default()
    }
}

/// A gateway that stopped partway through an upload left a run with part of its rows: at
/// start-up it fails that run, with a message that says so, instead of running it.
#[tokio::test]
async fn a_run_left_half_uploaded_fails_at_start_up() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = gateway::store::Store::open(&dir.path().join(gateway::store::STORE_FILE))
            .await
            .unwrap();
        store
            .create_run("run-cut", "cut", &analyze_only())
            .await
            .unwrap();
    }
    let (server, mut client) = lean_gateway(dir.path()).await;
    let run = client
        .get_run(pb::GetRunRequest {
            run_id: "run-cut".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(run.state, pb::RunState::Failed as i32, "{run:?}");
    assert_eq!(run.error, gateway::pipeline::INTERRUPTED_INGEST);
    server.shutdown().await.unwrap();
}

/// CancelRun while the rows are still arriving is not lost: the run never starts.
#[tokio::test]
async fn a_run_cancelled_during_its_upload_never_runs() {
    let dir = tempfile::tempdir().unwrap();
    let (server, mut client) = lean_gateway(dir.path()).await;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(spec(analyze_only())).await.unwrap();
    tx.send(pb::CreateRunRequest {
        part: Some(pb::create_run_request::Part::Row(row())),
    })
    .await
    .unwrap();
    let creating = {
        let mut client = client.clone();
        tokio::spawn(async move {
            client
                .create_run(tokio_stream::wrappers::ReceiverStream::new(rx))
                .await
        })
    };
    let run_id = loop {
        let runs = client
            .list_runs(pb::ListRunsRequest::default())
            .await
            .unwrap()
            .into_inner()
            .runs;
        if let Some(run) = runs.first() {
            assert_eq!(run.state, pb::RunState::Ingesting as i32, "{run:?}");
            break run.id.clone();
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    };
    let cancelled = client
        .cancel_run(pb::CancelRunRequest {
            run_id: run_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(cancelled.state, pb::RunState::Cancelled as i32);
    tx.send(pb::CreateRunRequest {
        part: Some(pb::create_run_request::Part::End(pb::DatasetEnd {
            rows: 1,
        })),
    })
    .await
    .unwrap();
    let created = creating.await.unwrap().unwrap().into_inner();
    assert_eq!(created.state, pb::RunState::Cancelled as i32, "{created:?}");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let run = client
        .get_run(pb::GetRunRequest { run_id })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(run.state, pb::RunState::Cancelled as i32, "{run:?}");
    assert_eq!(
        run.current_stage,
        pb::Stage::Unspecified as i32,
        "no stage began: {run:?}"
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_gateway_that_hosts_no_students_asks_where_they_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let (server, mut client) = lean_gateway(dir.path()).await;

    let row = pb::CreateRunRequest {
        part: Some(pb::create_run_request::Part::Row(row())),
    };
    let end = pb::CreateRunRequest {
        part: Some(pb::create_run_request::Part::End(pb::DatasetEnd {
            rows: 1,
        })),
    };
    let create =
        |config: pb::RunConfig| futures::stream::iter([spec(config), row.clone(), end.clone()]);

    let everything = client
        .create_run(create(pb::RunConfig::default()))
        .await
        .unwrap_err();
    assert_eq!(everything.code(), tonic::Code::InvalidArgument);
    assert_eq!(
        field_violations(&everything)[0].0,
        "spec.config.evaluation.student_endpoint"
    );
    assert!(
        everything.message().contains("arf gateway"),
        "{}",
        everything.message()
    );

    let comparing = pb::RunConfig {
        compare_unrevised: true,
        evaluation: Some(pb::EvaluationConfig {
            student_endpoint: "http://127.0.0.1:9".into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let refused = client.create_run(create(comparing)).await.unwrap_err();
    assert_eq!(
        field_violations(&refused)[0].0,
        "spec.config.compare_unrevised"
    );

    // Every bound is checked before a row is read: training settings used hours later, the
    // display name. Each answer names the field's path.
    let analyze = |training: pb::Hyperparameters| pb::RunConfig {
        stages: vec![pb::Stage::Analyze as i32],
        training: Some(training),
        ..Default::default()
    };
    for (training, field) in [
        (
            pb::Hyperparameters {
                lora: Some(pb::LoraConfig {
                    rank: u32::MAX,
                    ..Default::default()
                }),
                ..Default::default()
            },
            "spec.config.training.lora.rank",
        ),
        (
            pb::Hyperparameters {
                learning_rate: f64::NAN,
                ..Default::default()
            },
            "spec.config.training.learning_rate",
        ),
        (
            pb::Hyperparameters {
                epochs: u32::MAX,
                ..Default::default()
            },
            "spec.config.training.epochs",
        ),
    ] {
        let refused = client
            .create_run(create(analyze(training)))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
        assert_eq!(field_violations(&refused)[0].0, field, "{refused:?}");
    }
    let mut long_name = spec(analyze(Default::default()));
    if let Some(pb::create_run_request::Part::Spec(s)) = &mut long_name.part {
        s.display_name = "x".repeat(10_000);
    }
    let refused = client
        .create_run(futures::stream::iter([long_name, row.clone(), end.clone()]))
        .await
        .unwrap_err();
    assert_eq!(field_violations(&refused)[0].0, "spec.display_name");

    // Without Evaluate (or with a student served elsewhere) the run is taken.
    let analyze_only = pb::RunConfig {
        stages: vec![pb::Stage::Analyze as i32],
        ..Default::default()
    };
    let run = client
        .create_run(create(analyze_only))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(run.counts.unwrap().rows, 1);

    // An upload that stops before its end is broken, not a smaller dataset: the run fails and
    // nothing runs. An end that counts other rows than arrived is refused too.
    let stages = || pb::RunConfig {
        stages: vec![pb::Stage::Analyze as i32],
        ..Default::default()
    };
    let cut = client
        .create_run(futures::stream::iter([spec(stages()), row.clone()]))
        .await
        .unwrap_err();
    assert_eq!(cut.code(), tonic::Code::Aborted, "{cut:?}");
    assert!(cut.message().contains("without its DatasetEnd"), "{cut:?}");
    let miscounted = pb::CreateRunRequest {
        part: Some(pb::create_run_request::Part::End(pb::DatasetEnd {
            rows: 2,
        })),
    };
    let wrong = client
        .create_run(futures::stream::iter([
            spec(stages()),
            row.clone(),
            miscounted,
        ]))
        .await
        .unwrap_err();
    assert_eq!(field_violations(&wrong)[0].0, "end.rows");
    let runs = client
        .list_runs(pb::ListRunsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .runs;
    let broken: Vec<&pb::Run> = runs
        .iter()
        .filter(|r| r.error.contains("the client's row stream broke"))
        .collect();
    assert_eq!(broken.len(), 2, "{runs:?}");
    for run in broken {
        assert_eq!(run.state, pb::RunState::Failed as i32, "{run:?}");
        assert_eq!(
            run.counts.as_ref().unwrap().analyzed,
            0,
            "nothing ran: {run:?}"
        );
    }
    server.shutdown().await.unwrap();
}

/// A run's `dataset_path` names a file on the gateway's machine only under `--dataset-root`:
/// elsewhere the answer is PERMISSION_DENIED, the same whether the file exists or not.
#[tokio::test]
async fn a_dataset_path_outside_the_roots_is_denied() {
    let dir = tempfile::tempdir().unwrap();
    let datasets = tempfile::tempdir().unwrap();
    let inside = datasets.path().join("rows.jsonl");
    std::fs::write(
        &inside,
        r#"{"id":"c1","channel":"chat","turns":[{"role":"customer","text":"My order is late."}],"summary":"The order is late."}"#,
    )
    .unwrap();
    let root = datasets.path().display().to_string();
    let config = crate::support::config_from_flags(dir.path(), &["--dataset-root", &root]);
    let (server, mut client) = crate::support::serve(&config).await;
    let from_file = |path: &str| {
        let spec = pb::RunSpec {
            dataset_path: path.into(),
            config: Some(analyze_only()),
            ..Default::default()
        };
        futures::stream::iter([pb::CreateRunRequest {
            part: Some(pb::create_run_request::Part::Spec(spec)),
        }])
    };
    let secret = client
        .create_run(from_file("/etc/passwd"))
        .await
        .unwrap_err();
    let missing = client
        .create_run(from_file("/etc/no-such-file"))
        .await
        .unwrap_err();
    assert_eq!(secret.code(), tonic::Code::PermissionDenied, "{secret:?}");
    assert_eq!(missing.code(), tonic::Code::PermissionDenied, "{missing:?}");
    let escape = format!("{}/../../etc/passwd", datasets.path().display());
    let escaped = client.create_run(from_file(&escape)).await.unwrap_err();
    assert_eq!(escaped.code(), tonic::Code::PermissionDenied);
    let run = client
        .create_run(from_file(&inside.display().to_string()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(run.counts.unwrap().rows, 1);
    server.shutdown().await.unwrap();
}

/// A run may name as its student only an endpoint the operator listed (`--student-endpoint`):
/// the gateway calls it with its own token and TLS settings. Any other is PERMISSION_DENIED,
/// before a row is read.
#[tokio::test]
async fn a_student_endpoint_off_the_allow_list_is_denied() {
    let dir = tempfile::tempdir().unwrap();
    let config = crate::support::config_from_flags(
        dir.path(),
        &["--student-endpoint", "http://students.arf.svc:50052"],
    );
    let (server, mut client) = crate::support::serve(&config).await;
    let naming = |endpoint: &str| {
        let config = pb::RunConfig {
            stages: vec![pb::Stage::Evaluate as i32],
            evaluation: Some(pb::EvaluationConfig {
                student_endpoint: endpoint.into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let row = pb::CreateRunRequest {
            part: Some(pb::create_run_request::Part::Row(row())),
        };
        let end = pb::CreateRunRequest {
            part: Some(pb::create_run_request::Part::End(pb::DatasetEnd {
                rows: 1,
            })),
        };
        futures::stream::iter([spec(config), row, end])
    };
    for endpoint in [
        "http://169.254.169.254:80",
        "http://students.arf.svc:50052.evil",
    ] {
        let denied = client.create_run(naming(endpoint)).await.unwrap_err();
        assert_eq!(denied.code(), tonic::Code::PermissionDenied, "{denied:?}");
        assert!(
            denied
                .message()
                .contains("spec.config.evaluation.student_endpoint"),
            "{}",
            denied.message()
        );
    }
    let allowed = client
        .create_run(naming("http://students.arf.svc:50052/"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(allowed.counts.unwrap().rows, 1);
    server.shutdown().await.unwrap();
}
