//! The model-judged detectors' plumbing against a real model: the tiny random-weight Llama
//! served by the editor over gRPC. Its answers are meaningless, so what is checked is that every
//! judge either returns findings or is reported as a detector failure: never a crash, never a
//! silent pass. (Judging quality needs a real model and is not claimed here.)

use analyzer_svc::Analyzer;
use analyzer_svc::grpc::AnalyzerService;
use arf_common::client::{ClientOptions, GrpcChannel, connect_lazy};
use arf_common::config::ServerArgs;
use arf_common::server::{RunningServer, serve_loopback};
use arf_proto::service_names::{ANALYZER, EDITOR};
use arf_proto::v1 as pb;
use arf_proto::v1::analyzer_client::AnalyzerClient;
use arf_tiny_llama::{TinyLlamaSpec, write_tiny_llama};
use editor_svc::EditorConfig;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;

/// The tiny editor (taking `max_in_flight` generations at once) and an analyzer judging with it.
struct Judged {
    editor: RunningServer,
    analyzer: RunningServer,
    client: AnalyzerClient<GrpcChannel>,
    model: std::sync::Arc<editor_svc::Editor>,
    _dir: tempfile::TempDir,
}

async fn judged(max_in_flight: usize) -> Judged {
    let dir = tempfile::tempdir().unwrap();
    write_tiny_llama(dir.path(), &TinyLlamaSpec::default()).unwrap();
    let args = ServerArgs::local();
    let editor = editor_svc::load_editor(&EditorConfig {
        max_in_flight,
        ..EditorConfig::new(dir.path())
    })
    .await
    .unwrap();
    let model = editor.editor().expect("loaded");
    let editor = serve_loopback(
        &args,
        EDITOR,
        true,
        Routes::new(editor.into_server(args.max_message_bytes)),
    )
    .await
    .unwrap();
    let judge = connect_lazy(&editor.endpoint(), &ClientOptions::default()).unwrap();
    let service = AnalyzerService::new(
        Analyzer::default(),
        Some(judge),
        args.max_message_bytes,
        CancellationToken::new(),
    );
    let analyzer = serve_loopback(
        &args,
        ANALYZER,
        true,
        Routes::new(service.into_server(args.max_message_bytes)),
    )
    .await
    .unwrap();
    let client =
        AnalyzerClient::new(connect_lazy(&analyzer.endpoint(), &ClientOptions::default()).unwrap());
    Judged {
        editor,
        analyzer,
        client,
        model,
        _dir: dir,
    }
}

fn judge_request(id: &str) -> pb::AnalyzeRequest {
    pb::AnalyzeRequest {
        request_id: id.into(),
        conversation: Some(pb::Conversation {
            id: id.into(),
            channel: "chat".into(),
            turns: vec![
                pb::Turn {
                    role: pb::Role::Customer as i32,
                    text: "My parcel is late.".into(),
                },
                pb::Turn {
                    role: pb::Role::Agent as i32,
                    text: "It ships tomorrow.".into(),
                },
            ],
            metadata: Default::default(),
        }),
        summary: "Customer's parcel is late. Agent says it ships tomorrow.".into(),
        options: Some(pb::AnalyzeOptions {
            detectors: vec!["judge.fact_check".into(), "judge.key_facts".into()],
            ..Default::default()
        }),
        revision_of: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn judges_go_through_editor_generate_and_failures_are_reported() {
    let Judged {
        editor,
        analyzer,
        mut client,
        model,
        _dir,
    } = judged(editor_svc::config::DEFAULT_MAX_IN_FLIGHT).await;
    let sampled_before = model.load_snapshot().engine.sampled_tokens;
    let request = judge_request("j1");
    let conversation = request.conversation.clone();
    let answer = client.analyze(request).await.unwrap().into_inner();
    assert!(
        model.load_snapshot().engine.sampled_tokens > sampled_before,
        "the judges asked the model"
    );
    // A malformed answer is retried once, then reported as that judge's failure.
    for failure in &answer.detector_failures {
        assert!(failure.detector.starts_with("judge."), "{failure:?}");
        assert!(
            failure.message.contains("after one retry")
                || failure.message.contains("internal error in generation"),
            "{failure:?}"
        );
    }
    // Rule detectors were not asked for: every finding comes from a judge.
    assert!(
        answer
            .findings
            .iter()
            .all(|f| f.detector.starts_with("judge.")),
        "{:?}",
        answer.findings
    );

    // The rating judge: constrained to {"rating": n}, so even random weights give a number in
    // range, or a reported failure; an empty summary is rated 1 without asking.
    let rate = |summary: &str| pb::RateRequest {
        request_id: "r1".into(),
        conversation: conversation.clone(),
        summary: summary.into(),
    };
    let rated = client
        .rate(rate("Customer's parcel is late."))
        .await
        .unwrap()
        .into_inner();
    match &rated.failure {
        None => assert!((1..=5).contains(&rated.rating), "{rated:?}"),
        Some(f) => assert!(
            rated.rating == 0 && f.detector == "judge.rating",
            "{rated:?}"
        ),
    }
    assert_eq!(
        client.rate(rate("  ")).await.unwrap().into_inner().rating,
        1
    );
    analyzer.shutdown().await.unwrap();
    editor.shutdown().await.unwrap();
}

/// An editor that sheds load (RESOURCE_EXHAUSTED beyond two generations at once) fails no
/// detector: the analysis answers UNAVAILABLE with a retry delay, and asked again once the
/// editor has room, every one completes with no judge reported failed for want of the editor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_editor_shedding_load_makes_the_analysis_wait_not_fail() {
    let Judged {
        editor,
        analyzer,
        client,
        _dir,
        ..
    } = judged(2).await;
    let asks = (0..4).map(|i| {
        let mut client = client.clone();
        async move {
            let mut unavailable = 0;
            loop {
                match client.analyze(judge_request(&format!("j{i}"))).await {
                    Ok(answer) => return (answer.into_inner(), unavailable),
                    Err(status) => {
                        assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
                        let delay = arf_common::status::retry_after(&status)
                            .expect("UNAVAILABLE says when to retry");
                        unavailable += 1;
                        tokio::time::sleep(delay.min(std::time::Duration::from_millis(200))).await;
                    }
                }
            }
        }
    });
    let answers = futures::future::join_all(asks).await;
    let waited: usize = answers.iter().map(|(_, n)| n).sum();
    assert!(
        waited > 0,
        "four analyses of two judges each, two generations at a time: some were shed"
    );
    for (answer, _) in &answers {
        for failure in &answer.detector_failures {
            assert!(
                !failure.message.contains("RESOURCE_EXHAUSTED")
                    && !failure.message.contains("ResourceExhausted"),
                "a judge failed for want of the editor: {failure:?}"
            );
        }
    }
    analyzer.shutdown().await.unwrap();
    editor.shutdown().await.unwrap();
}
