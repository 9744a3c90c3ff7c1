//! The model-judged detectors' plumbing against a real model: the tiny random-weight Llama
//! served by the editor over gRPC. Its answers are meaningless, so what is checked is that every
//! judge either returns findings or is reported as a detector failure: never a crash, never a
//! silent pass. (Judging quality needs a real model and is not claimed here.)

use analyzer_svc::Analyzer;
use analyzer_svc::grpc::AnalyzerService;
use arf_common::client::{ClientOptions, connect_lazy};
use arf_common::config::ServerArgs;
use arf_common::server::serve_loopback;
use arf_proto::service_names::{ANALYZER, EDITOR};
use arf_proto::v1 as pb;
use arf_proto::v1::analyzer_client::AnalyzerClient;
use arf_tiny_llama::{TinyLlamaSpec, write_tiny_llama};
use editor_svc::EditorConfig;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn judges_go_through_editor_generate_and_failures_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    write_tiny_llama(dir.path(), &TinyLlamaSpec::default()).unwrap();
    let args = ServerArgs::local();
    let editor = editor_svc::load_editor(&EditorConfig::new(dir.path()))
        .await
        .unwrap();
    let model = editor.editor().expect("loaded");
    let sampled_before = model.load_snapshot().0.sampled_tokens;
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
    let mut client =
        AnalyzerClient::new(connect_lazy(&analyzer.endpoint(), &ClientOptions::default()).unwrap());

    let request = pb::AnalyzeRequest {
        request_id: "j1".into(),
        conversation: Some(pb::Conversation {
            id: "j1".into(),
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
    };
    let conversation = request.conversation.clone();
    let answer = client.analyze(request).await.unwrap().into_inner();
    assert!(
        model.load_snapshot().0.sampled_tokens > sampled_before,
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
