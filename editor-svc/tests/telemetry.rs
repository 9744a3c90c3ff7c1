//! GenAI spans and metrics of a generation, and content capture only when opted in.
//!
//! Alone in its test binary: it installs a thread-local subscriber and a global meter provider
//! (tracing caches per-callsite interest process-wide, so tests beside it would hide its spans).

mod support;

use arf_common::telemetry::in_memory::InMemoryTelemetry;
use support::*;

fn chat_spans(telemetry: &InMemoryTelemetry) -> Vec<Vec<(String, String)>> {
    telemetry
        .finished_spans()
        .into_iter()
        .filter(|s| {
            s.attributes
                .iter()
                .any(|kv| kv.key.as_str() == "gen_ai.operation.name")
        })
        .map(|s| {
            s.attributes
                .iter()
                .map(|kv| (kv.key.to_string(), kv.value.to_string()))
                .collect()
        })
        .collect()
}

fn get<'a>(attributes: &'a [(String, String)], key: &str) -> Option<&'a str> {
    attributes
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

#[tokio::test]
async fn generations_follow_the_gen_ai_conventions_and_keep_content_out_unless_asked() {
    let telemetry = InMemoryTelemetry::install();
    let _guard = tracing::subscriber::set_default(telemetry.subscriber());

    let secret = "my card number is 4111";
    let t = start(|_| {}).await;
    let answer = t
        .client()
        .generate(generate_request(secret, 12))
        .await
        .unwrap()
        .into_inner();
    let spans = chat_spans(&telemetry);
    let span = spans.last().expect("a gen_ai span");
    assert_eq!(get(span, "gen_ai.operation.name"), Some("chat"));
    assert_eq!(
        get(span, "gen_ai.request.model"),
        Some(t.dir.path().display().to_string().as_str())
    );
    assert_eq!(get(span, "gen_ai.request.max_tokens"), Some("12"));
    assert_eq!(get(span, "gen_ai.request.temperature"), Some("0"));
    let usage = answer.usage.unwrap();
    assert_eq!(
        get(span, "gen_ai.usage.input_tokens"),
        Some(usage.input_tokens.to_string().as_str())
    );
    assert_eq!(
        get(span, "gen_ai.usage.output_tokens"),
        Some(usage.output_tokens.to_string().as_str())
    );
    assert!(
        get(span, "gen_ai.response.finish_reasons")
            .is_some_and(|v| v.contains(&answer.finish_reason)),
        "{span:?}"
    );
    assert!(
        span.iter().all(|(_, v)| !v.contains(secret)),
        "content stays out by default: {span:?}"
    );
    assert!(get(span, "gen_ai.input.messages").is_none());

    let exported = telemetry.metric_names();
    for name in [
        "gen_ai.server.request.duration",
        "gen_ai.server.time_to_first_token",
        "gen_ai.server.time_per_output_token",
        "gen_ai.server.token.usage",
        "arf.editor.sequences.queued",
        "arf.editor.sequences.running",
        "arf.editor.queue_depth",
        "arf.editor.running_sequences",
    ] {
        assert!(
            exported.iter().any(|n| n == name),
            "{name} missing from {exported:?}"
        );
    }
    // The autoscaler's gauges: nothing is waiting or decoding once the call has answered. The
    // engine drops a finished sequence (and its probe) just after it sends the last chunk, so
    // "running" reaches 0 a moment after the answer, not before it: wait a bounded while.
    for gauge in ["arf.editor.queue_depth", "arf.editor.running_sequences"] {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let points = loop {
            let points = telemetry.i64_gauge(gauge);
            let settled = !points.is_empty() && points.iter().all(|(_, v)| *v == 0);
            if settled || std::time::Instant::now() > deadline {
                break points;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        };
        assert!(!points.is_empty(), "{gauge}: no series");
        assert!(points.iter().all(|(_, v)| *v == 0), "{gauge}: {points:?}");
        assert!(
            points
                .iter()
                .all(|(attrs, _)| attrs.iter().any(|a| a.starts_with("gen_ai.request.model="))),
            "{gauge}: {points:?}"
        );
    }

    let opted_in = start(|c| c.log_content = true).await;
    let answer = opted_in
        .client()
        .generate(generate_request(secret, 12))
        .await
        .unwrap()
        .into_inner();
    let spans = chat_spans(&telemetry);
    let span = spans.last().expect("a gen_ai span");
    assert!(
        get(span, "gen_ai.input.messages").is_some_and(|v| v.contains(secret)),
        "{span:?}"
    );
    let output = get(span, "gen_ai.output.messages").expect("the completion is recorded");
    let output: serde_json::Value = serde_json::from_str(output).unwrap();
    assert_eq!(output[0]["parts"][0]["content"], answer.text.as_str());

    // An editor forwarding to an OpenAI-compatible server (here `t`'s own HTTP API) reports
    // its generations the same way, as provider "openai", with the upstream's token usage.
    let stop = tokio_util::sync::CancellationToken::new();
    let _stop = stop.clone().drop_guard();
    let http = editor_svc::http::serve(
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        editor_svc::http::router(t.service.clone(), &arf_common::config::ServerArgs::local()),
        stop,
    )
    .unwrap();
    let model = t.editor().model().model_id.clone();
    let forwarding = editor_svc::load_editor(&editor_svc::EditorConfig::upstream(
        editor_svc::backend::openai::UpstreamConfig::new(
            format!("http://{}/v1", http.addr),
            model.clone(),
        ),
    ))
    .await
    .unwrap();
    let server = serve(forwarding, true).await;
    let answer = arf_proto::v1::editor_client::EditorClient::new(channel(&server))
        .generate(generate_request(secret, 12))
        .await
        .unwrap()
        .into_inner();
    let spans = chat_spans(&telemetry);
    let span = spans
        .iter()
        .rev()
        .find(|s| get(s, "gen_ai.provider.name") == Some("openai"))
        .expect("a gen_ai span of the upstream backend");
    assert_eq!(get(span, "gen_ai.request.model"), Some(model.as_str()));
    let usage = answer.usage.unwrap();
    assert_eq!(
        get(span, "gen_ai.usage.output_tokens"),
        Some(usage.output_tokens.to_string().as_str())
    );
    assert!(usage.output_tokens > 0 && usage.input_tokens > 0);
    assert!(
        span.iter().all(|(_, v)| !v.contains(secret)),
        "content stays out by default: {span:?}"
    );
}
