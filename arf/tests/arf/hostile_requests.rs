//! A corpus of hostile and careless requests against the embedded suite's four services: each
//! gets its status code (never INTERNAL, never a panic or a hang), and every server keeps
//! serving afterwards. The dataset-level corpus is gateway/tests/gateway/hostile_input.rs; paths outside
//! the roots are gateway/tests/gateway/lean_gateway.rs and trainer-svc/tests/trainer/jobs_api.rs.

use std::time::Duration;

use crate::support::*;
use arf_common::client::{ClientOptions, GrpcChannel, connect_lazy};
use arf_proto::v1 as pb;
use arf_proto::v1::analyzer_client::AnalyzerClient;
use arf_proto::v1::editor_client::EditorClient;
use arf_proto::v1::trainer_client::TrainerClient;
use tonic::Code;

fn conversation(role: i32, text: &str) -> pb::Conversation {
    pb::Conversation {
        id: "c1".into(),
        channel: "chat".into(),
        turns: vec![pb::Turn {
            role,
            text: text.into(),
        }],
        metadata: Default::default(),
    }
}

fn channel(endpoint: &str) -> GrpcChannel {
    connect_lazy(endpoint, &ClientOptions::default()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_hostile_request_gets_its_status_and_the_servers_keep_serving() {
    let dir = tempfile::tempdir().unwrap();
    let (suite, mut gateway) = suite(dir.path()).await;
    let mut analyzer = AnalyzerClient::new(channel(&suite.analyzer_endpoint()));
    let mut editor = EditorClient::new(channel(&suite.editor_endpoints()[0]));
    let mut trainer = TrainerClient::new(channel(&suite.trainer_endpoint()));
    let customer = pb::Role::Customer as i32;
    let tiny = dir.path().join("tiny-llama").display().to_string();
    let job = |h: pb::Hyperparameters| pb::CreateJobRequest {
        base_model_dir: tiny.clone(),
        data: Some(pb::create_job_request::Data::Inline(pb::InlineExamples {
            examples: vec![pb::TrainingExample {
                conversation: Some(conversation(customer, "My order is late.")),
                summary: "The order is late.".into(),
            }],
        })),
        hyperparameters: Some(h),
        ..Default::default()
    };
    let generate = |role: &str, temperature: Option<f32>, max_tokens: u32| pb::GenerateRequest {
        messages: vec![pb::ChatMessage {
            role: role.into(),
            content: "Say hello.".into(),
        }],
        params: Some(pb::GenerationParams {
            max_tokens,
            temperature,
            ..Default::default()
        }),
        json_schema: String::new(),
    };
    let analyze = |c: pb::Conversation, summary: String| pb::AnalyzeRequest {
        request_id: "r".into(),
        conversation: Some(c),
        summary,
        options: None,
        revision_of: None,
    };

    let mut results: Vec<(&str, Code, Result<(), tonic::Status>)> = Vec::new();
    let code = |r: Result<(), tonic::Status>| r;
    // The analyzer.
    results.push((
        "analyzer: unknown role",
        Code::InvalidArgument,
        code(
            analyzer
                .analyze(analyze(conversation(99, "hi"), "s".into()))
                .await
                .map(drop),
        ),
    ));
    results.push((
        "analyzer: a 3 MiB summary",
        Code::InvalidArgument,
        code(
            analyzer
                .analyze(analyze(conversation(customer, "hi"), "x".repeat(3 << 20)))
                .await
                .map(drop),
        ),
    ));
    results.push((
        "analyzer: no conversation",
        Code::InvalidArgument,
        code(
            analyzer
                .analyze(pb::AnalyzeRequest {
                    conversation: None,
                    ..analyze(conversation(customer, "hi"), "s".into())
                })
                .await
                .map(drop),
        ),
    ));
    // The editor.
    results.push((
        "editor: unknown chat role",
        Code::InvalidArgument,
        code(editor.generate(generate("root", None, 4)).await.map(drop)),
    ));
    results.push((
        "editor: NaN temperature",
        Code::InvalidArgument,
        code(
            editor
                .generate(generate("user", Some(f32::NAN), 4))
                .await
                .map(drop),
        ),
    ));
    results.push((
        "editor: max_tokens past the context",
        Code::InvalidArgument,
        code(
            editor
                .generate(generate("user", None, u32::MAX))
                .await
                .map(drop),
        ),
    ));
    results.push((
        "editor: no messages",
        Code::InvalidArgument,
        code(
            editor
                .generate(pb::GenerateRequest::default())
                .await
                .map(drop),
        ),
    ));
    // The trainer.
    let rank = pb::Hyperparameters {
        lora: Some(pb::LoraConfig {
            rank: u32::MAX,
            ..Default::default()
        }),
        ..Default::default()
    };
    results.push((
        "trainer: LoRA rank 2^32-1",
        Code::InvalidArgument,
        code(trainer.create_job(job(rank)).await.map(drop)),
    ));
    results.push((
        "trainer: NaN learning rate",
        Code::InvalidArgument,
        code(
            trainer
                .create_job(job(pb::Hyperparameters {
                    learning_rate: f64::NAN,
                    ..Default::default()
                }))
                .await
                .map(drop),
        ),
    ));
    results.push((
        "trainer: an upload id that is a path",
        Code::InvalidArgument,
        code(
            trainer
                .create_job(pb::CreateJobRequest {
                    data: Some(pb::create_job_request::Data::UploadId(
                        "../../../etc/passwd".into(),
                    )),
                    ..job(pb::Hyperparameters::default())
                })
                .await
                .map(drop),
        ),
    ));
    results.push((
        "trainer: watch a job that does not exist",
        Code::NotFound,
        code(
            trainer
                .watch_job(pb::WatchJobRequest {
                    job_id: "job-../../x".into(),
                    after_sequence: 0,
                })
                .await
                .map(drop),
        ),
    ));
    // The gateway.
    let mut huge_rank = spec(&[pb::Stage::Analyze]);
    huge_rank.config.as_mut().unwrap().training = Some(pb::Hyperparameters {
        lora: Some(pb::LoraConfig {
            rank: u32::MAX,
            ..Default::default()
        }),
        ..Default::default()
    });
    results.push((
        "gateway: LoRA rank 2^32-1 in a run",
        Code::InvalidArgument,
        code(
            create(&mut gateway, huge_rank, sample_rows())
                .await
                .map(drop),
        ),
    ));
    let truncated = futures::stream::iter([pb::CreateRunRequest {
        part: Some(pb::create_run_request::Part::Spec(spec(&[
            pb::Stage::Analyze,
        ]))),
    }]);
    results.push((
        "gateway: a row stream that ends without its DatasetEnd",
        Code::Aborted,
        code(gateway.create_run(truncated).await.map(drop)),
    ));
    results.push((
        "gateway: the first message is a row",
        Code::InvalidArgument,
        code(
            gateway
                .create_run(futures::stream::iter([pb::CreateRunRequest {
                    part: Some(pb::create_run_request::Part::Row(sample_rows()[0].clone())),
                }]))
                .await
                .map(drop),
        ),
    ));
    let mut long_name = spec(&[pb::Stage::Analyze]);
    long_name.display_name = "n".repeat(10_000);
    results.push((
        "gateway: a 10,000-character display name",
        Code::InvalidArgument,
        code(
            create(&mut gateway, long_name, sample_rows())
                .await
                .map(drop),
        ),
    ));
    results.push((
        "gateway: watch a run that does not exist",
        Code::NotFound,
        code(
            gateway
                .watch_run(pb::WatchRunRequest {
                    run_id: "run-'; DROP TABLE runs; --".into(),
                    after_sequence: 0,
                })
                .await
                .map(drop),
        ),
    ));

    let mut wrong = Vec::new();
    for (what, expected, got) in &results {
        let code = got.as_ref().err().map(tonic::Status::code);
        println!("{what}: {code:?}");
        if code != Some(*expected) {
            wrong.push(format!("{what}: expected {expected:?}, got {got:?}"));
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
    println!("{} hostile requests, each with its status", results.len());

    // Still serving: a good request to each.
    let ok = tokio::time::timeout(Duration::from_secs(60), async {
        analyzer
            .analyze(analyze(
                conversation(customer, "My order is late."),
                "The order is late.".into(),
            ))
            .await
            .unwrap();
        editor.generate(generate("user", None, 4)).await.unwrap();
        trainer
            .list_jobs(pb::ListJobsRequest::default())
            .await
            .unwrap();
        let run = create(&mut gateway, spec(&[pb::Stage::Analyze]), sample_rows())
            .await
            .unwrap();
        assert_eq!(
            final_state(&watch(&mut gateway, &run.id, 0).await),
            Some(pb::RunState::Succeeded)
        );
    })
    .await;
    assert!(ok.is_ok(), "a server stopped answering");
    suite.shutdown().await.unwrap();
}
