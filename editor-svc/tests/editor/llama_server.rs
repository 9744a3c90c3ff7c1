//! `--backend openai` against the server a team would really run: llama.cpp's `llama-server`
//! (built from the llama-cpp-python sdist by scripts/build-llama-bench.sh, cached outside the
//! checkout) serving SmolLM2's GGUF on loopback. Needs `scripts/fetch-model.sh smollm2`.

use arf_common::llama_cpp::{ALIAS, LlamaServer};
use arf_proto::v1::editor_client::EditorClient;
use arf_proto::v1::*;
use editor_svc::backend::openai::UpstreamConfig;
use editor_svc::{EditorConfig, load_editor};

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_editor_forwards_to_llama_server_for_generation_and_revision() {
    let gguf = arf_common::models::resolve("smollm2").expect("scripts/fetch-model.sh smollm2");
    let upstream = LlamaServer::start(&gguf, 2).await.unwrap();
    let config = EditorConfig {
        default_max_tokens: 96,
        ..EditorConfig::upstream(UpstreamConfig::new(upstream.base_url(), ALIAS))
    };
    let service = load_editor(&config).await.expect("reaching llama-server");
    let server = serve(service.clone(), true).await;
    let mut editor = EditorClient::new(channel(&server));

    let info = editor
        .get_model_info(GetModelInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.model_id, ALIAS);
    assert!(
        info.max_context_tokens > 0,
        "llama-server lists its context"
    );

    let mut request = generate_request(
        "Summarize in one sentence: Customer: my order 1234 arrived damaged. Agent: I have refunded it.",
        48,
    );
    request.params.as_mut().unwrap().temperature = Some(0.0);
    let summary = editor.generate(request).await.unwrap().into_inner();
    assert!(!summary.text.trim().is_empty());
    assert!(
        (1..=48).contains(&summary.usage.unwrap().output_tokens),
        "{summary:?}"
    );

    // Span edits are JSON-constrained generations: llama-server enforces the schema.
    let revised = editor
        .revise(revise_request(findings(), 96))
        .await
        .unwrap_or_else(|e| {
            panic!(
                "SmolLM2 answers the span edits in the schema: {e:?}\nllama-server's log ends:\n{}",
                upstream.log_tail(40)
            )
        })
        .into_inner();
    assert!(revised.model_called);
    assert_ne!(
        revised.revised_summary, SUMMARY,
        "the flagged spans were rewritten"
    );

    let score = editor
        .score(ScoreRequest {
            messages: vec![user("Summarize.")],
            reply: "A summary.".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(score.code(), tonic::Code::Unimplemented);

    // A raw-text prompt (this editor's own /v1/completions) goes to llama-server's.
    let (front, _stop) = http_api(&service, None).await;
    let completion: serde_json::Value = reqwest::Client::new()
        .post(format!("http://{}/v1/completions", front.addr))
        .json(&serde_json::json!({"prompt": "The capital of France is", "max_tokens": 8, "temperature": 0}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        completion["choices"][0]["text"]
            .as_str()
            .is_some_and(|t| !t.trim().is_empty()),
        "{completion}"
    );
    assert!(
        (1..=8).contains(&completion["usage"]["completion_tokens"].as_u64().unwrap()),
        "{completion}"
    );
}
