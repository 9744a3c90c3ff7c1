//! Serving behaviour: health follows the model, the in-flight limit, and cancellation that
//! reaches the engine.

use std::time::{Duration, Instant};

use crate::support::*;
use arf_common::server::Health;
use arf_proto::service_names::EDITOR;
use arf_proto::v1::GetModelInfoRequest;
use arf_proto::v1::editor_client::EditorClient;
use arf_tiny_llama::TinyLlamaSpec;
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// A model with room for long generations, so a cut-short one is plainly cut short.
fn long_context() -> TinyLlamaSpec {
    TinyLlamaSpec {
        max_position_embeddings: 8192,
        ..Default::default()
    }
}

#[tokio::test]
async fn health_is_not_serving_until_the_model_answered_its_warm_up() {
    let dir = tiny_model(&TinyLlamaSpec::default());
    let (service, loading) = editor_svc::start_editor(config(dir.path())).unwrap();
    let server = serve(service, false).await;
    let health: Health = server.health().clone();
    let ch = channel(&server);
    let status = |ch| async move {
        HealthClient::new(ch)
            .check(HealthCheckRequest {
                service: EDITOR.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status
    };

    assert_eq!(status(ch.clone()).await, ServingStatus::NotServing as i32);
    loading.then_serving(&health).await.unwrap();
    assert_eq!(status(ch.clone()).await, ServingStatus::Serving as i32);
    let info = EditorClient::new(ch)
        .get_model_info(GetModelInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(info.random_weights);
}

#[tokio::test]
async fn an_unloaded_editor_answers_unavailable_and_a_hub_id_is_refused() {
    let server = serve(editor_svc::EditorService::loading(), false).await;
    let status = EditorClient::new(channel(&server))
        .generate(generate_request("x", 4))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    let refused = editor_svc::start_editor(editor_svc::EditorConfig::new(
        "meta-llama/Llama-3.1-70B-Instruct",
    ))
    .err()
    .unwrap();
    assert!(refused.to_string().contains("never downloads"), "{refused}");
}

#[tokio::test]
async fn beyond_the_in_flight_limit_calls_get_resource_exhausted_with_retry_info() {
    let t = start_with(&long_context(), |c| c.max_in_flight = 1).await;
    let editor = t.editor();
    let mut first_client = t.client();
    let first = tokio::spawn(async move {
        first_client
            .generate(generate_request("Tell me a long story.", 1500))
            .await
    });
    assert!(
        eventually(Duration::from_secs(5), || editor.load_snapshot().in_flight
            == 1)
        .await,
        "the first call holds the slot"
    );

    let status = t
        .client()
        .generate(generate_request("x", 4))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        arf_common::status::retry_after(&status).is_some(),
        "RetryInfo is attached"
    );
    // Revisions share the limit.
    let status = t
        .client()
        .revise(revise_request(findings(), 0))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted);

    first.abort();
    assert!(
        eventually(Duration::from_secs(5), || editor.load_snapshot().in_flight
            == 0)
        .await,
        "the slot is released"
    );
    t.client()
        .generate(generate_request("x", 4))
        .await
        .expect("a free slot serves again");
}

#[tokio::test]
async fn a_passed_deadline_drops_the_sequence_from_the_engine() {
    let t = start_with(&long_context(), |_| {}).await;
    let editor = t.editor();
    let max_tokens = 6000;
    let mut request = tonic::Request::new(generate_request("Tell me a long story.", max_tokens));
    request.set_timeout(Duration::from_millis(400));
    let started = Instant::now();
    let before = editor.load_snapshot().engine.sampled_tokens;
    let status = t.client().generate(request).await.unwrap_err();
    assert!(
        matches!(status.code(), Code::DeadlineExceeded | Code::Cancelled),
        "{status:?}"
    );

    assert!(
        eventually(Duration::from_secs(2), || editor
            .load_snapshot()
            .engine
            .running
            == 0
            && editor.load_snapshot().engine.queued == 0)
        .await,
        "the engine dropped the sequence: {:?}",
        editor.load_snapshot()
    );
    let dropped_after = started.elapsed();
    let sampled = editor.load_snapshot().engine.sampled_tokens;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        editor.load_snapshot().engine.sampled_tokens,
        sampled,
        "no token is sampled after the drop"
    );
    // Left alone it runs to max_tokens (~6 s here); it was generating when the deadline passed.
    let generated = sampled - before;
    assert!(
        generated > 20 && generated < u64::from(max_tokens) / 2,
        "cut far short of max_tokens: {generated} tokens"
    );
    assert!(
        dropped_after < Duration::from_secs(3),
        "dropped {dropped_after:?} after the call began"
    );
    assert_eq!(
        editor.load_snapshot().in_flight,
        0,
        "the in-flight slot is free"
    );
}

#[tokio::test]
async fn a_client_that_drops_a_revise_stream_stops_its_generation() {
    let t = start_with(&long_context(), |_| {}).await;
    let editor = t.editor();
    let mut request = revise_request(findings(), 4000);
    request.summary = SUMMARY.repeat(5);
    // Greedy decoding: the same request always runs this long when left alone.
    let natural = t
        .client()
        .revise(request.clone())
        .await
        .unwrap()
        .into_inner()
        .usage
        .unwrap()
        .output_tokens;
    assert!(
        natural >= 100,
        "a revision long enough to cut short: {natural} tokens"
    );

    let before = editor.load_snapshot().engine.sampled_tokens;
    let mut events = t
        .client()
        .revise_stream(request)
        .await
        .unwrap()
        .into_inner();
    events.message().await.unwrap().expect("a first delta");
    drop(events);
    assert!(
        eventually(Duration::from_secs(2), || editor
            .load_snapshot()
            .engine
            .running
            == 0)
        .await,
        "the engine dropped the sequence: {:?}",
        editor.load_snapshot()
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    let sampled = editor.load_snapshot().engine.sampled_tokens - before;
    assert!(
        sampled < u64::from(natural) / 4,
        "stopped after {sampled} of {natural} tokens"
    );
}
