//! The `gateway` binary's server on its own: no other service, no inference engine, no student
//! host. What it can check without them, it checks at CreateRun.

use arf_common::client::{ClientOptions, connect_lazy};
use arf_common::config::ServerArgs;
use arf_common::server::serve_loopback;
use arf_common::status::field_violations;
use arf_proto::service_names::PIPELINE;
use arf_proto::v1 as pb;
use arf_proto::v1::pipeline_client::PipelineClient;
use gateway::config::GatewayArgs;
use tokio_util::sync::CancellationToken;

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

#[tokio::test]
async fn a_gateway_that_hosts_no_students_asks_where_they_are_served() {
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens on these: the clients connect lazily, and these runs never call them.
    let unreachable = "http://127.0.0.1:9".to_string();
    let args = GatewayArgs::local(
        dir.path().to_path_buf(),
        unreachable.clone(),
        vec![unreachable.clone()],
        unreachable,
    );
    let (_, routes) =
        gateway::server::build(&args, 4 << 20, None, CancellationToken::new()).unwrap();
    let server = serve_loopback(&ServerArgs::local(), PIPELINE, true, routes)
        .await
        .unwrap();
    let mut client =
        PipelineClient::new(connect_lazy(&server.endpoint(), &ClientOptions::default()).unwrap());

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
