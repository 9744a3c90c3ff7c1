//! GenAI spans and metrics of a generation, and content capture only when opted in.
//!
//! Alone in its test binary: it installs a thread-local subscriber and a global meter provider
//! (tracing caches per-callsite interest process-wide, so tests beside it would hide its spans).

mod support;

use arf_common::telemetry::ContentCapture;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
use support::*;

fn chat_spans(exporter: &InMemorySpanExporter) -> Vec<Vec<(String, String)>> {
    exporter
        .get_finished_spans()
        .unwrap()
        .into_iter()
        .filter(|s| s.attributes.iter().any(|kv| kv.key.as_str() == "gen_ai.operation.name"))
        .map(|s| s.attributes.iter().map(|kv| (kv.key.to_string(), kv.value.to_string())).collect())
        .collect()
}

fn get<'a>(attributes: &'a [(String, String)], key: &str) -> Option<&'a str> {
    attributes.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

#[tokio::test]
async fn generations_follow_the_gen_ai_conventions_and_keep_content_out_unless_asked() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder().with_simple_exporter(exporter.clone()).build();
    let _guard = tracing::subscriber::set_default(arf_common::telemetry::subscriber(provider.tracer("test"), false));
    let metrics = InMemoryMetricExporter::default();
    let meter_provider = SdkMeterProvider::builder().with_reader(PeriodicReader::builder(metrics.clone()).build()).build();
    opentelemetry::global::set_meter_provider(meter_provider.clone());

    let secret = "my card number is 4111";
    let t = start(|_| {}).await;
    let answer = t.client().generate(generate_request(secret, 12)).await.unwrap().into_inner();
    let spans = chat_spans(&exporter);
    let span = spans.last().expect("a gen_ai span");
    assert_eq!(get(span, "gen_ai.operation.name"), Some("chat"));
    assert_eq!(get(span, "gen_ai.request.model"), Some(t.dir.path().display().to_string().as_str()));
    assert_eq!(get(span, "gen_ai.request.max_tokens"), Some("12"));
    assert_eq!(get(span, "gen_ai.request.temperature"), Some("0"));
    let usage = answer.usage.unwrap();
    assert_eq!(get(span, "gen_ai.usage.input_tokens"), Some(usage.input_tokens.to_string().as_str()));
    assert_eq!(get(span, "gen_ai.usage.output_tokens"), Some(usage.output_tokens.to_string().as_str()));
    assert!(get(span, "gen_ai.response.finish_reasons").is_some_and(|v| v.contains(&answer.finish_reason)), "{span:?}");
    assert!(span.iter().all(|(_, v)| !v.contains(secret)), "content stays out by default: {span:?}");
    assert!(get(span, "gen_ai.input.messages").is_none());

    meter_provider.force_flush().unwrap();
    let exported: Vec<String> = metrics
        .get_finished_metrics()
        .unwrap()
        .iter()
        .flat_map(|rm| rm.scope_metrics().flat_map(|sm| sm.metrics().map(|m| m.name().to_string())).collect::<Vec<_>>())
        .collect();
    for name in [
        "gen_ai.server.request.duration",
        "gen_ai.server.time_to_first_token",
        "gen_ai.server.time_per_output_token",
        "gen_ai.server.token.usage",
        "arf.editor.sequences.queued",
        "arf.editor.sequences.running",
    ] {
        assert!(exported.iter().any(|n| n == name), "{name} missing from {exported:?}");
    }

    let opted_in = start(|c| c.content = ContentCapture::On).await;
    let answer = opted_in.client().generate(generate_request(secret, 12)).await.unwrap().into_inner();
    let spans = chat_spans(&exporter);
    let span = spans.last().expect("a gen_ai span");
    assert!(get(span, "gen_ai.input.messages").is_some_and(|v| v.contains(secret)), "{span:?}");
    let output = get(span, "gen_ai.output.messages").expect("the completion is recorded");
    let output: serde_json::Value = serde_json::from_str(output).unwrap();
    assert_eq!(output[0]["parts"][0]["content"], answer.text.as_str());
}
