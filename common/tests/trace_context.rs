//! W3C trace context and deadlines across a chain of calls: client -> analyzer -> editor.
//!
//! Alone in its test binary: it installs a thread-local subscriber, and tracing caches
//! per-callsite interest process-wide, so tests running beside it would hide its spans.

mod support;

use std::sync::Arc;
use std::time::Duration;

use arf_common::client::ClientOptions;
use arf_common::config::ServerArgs;
use arf_common::telemetry::in_memory::InMemoryTelemetry;
use arf_proto::service_names::ANALYZER;
use arf_proto::v1::AnalyzeRequest;
use arf_proto::v1::analyzer_client::AnalyzerClient;
use arf_proto::v1::analyzer_server::AnalyzerServer;
use arf_proto::v1::editor_client::EditorClient;
use opentelemetry::trace::SpanId;
use support::{ChainedAnalyzer, channel, start, start_editor};
use tokio::sync::Semaphore;
use tonic::Request;
use tonic::service::Routes;

#[tokio::test]
async fn one_trace_crosses_client_server_and_downstream_calls_with_the_deadline() {
    let telemetry = InMemoryTelemetry::install();
    let _guard = tracing::subscriber::set_default(telemetry.subscriber());

    let args = ServerArgs::local();
    let editor_server = start_editor(&args, Arc::new(Semaphore::new(1))).await;
    let editor = EditorClient::new(channel(&editor_server, &ClientOptions::default()));
    let analyzer_routes = Routes::new(AnalyzerServer::new(ChainedAnalyzer { editor }));
    let analyzer_server = start(&args, ANALYZER, analyzer_routes, true).await;

    let mut analyzer = AnalyzerClient::new(channel(&analyzer_server, &ClientOptions::default()));
    let mut request = Request::new(AnalyzeRequest::default());
    request.set_timeout(Duration::from_secs(20));
    let answer = analyzer.analyze(request).await.unwrap().into_inner();
    let downstream_ms: u64 = answer
        .request_id
        .parse()
        .expect("the editor saw a deadline");
    assert!(
        downstream_ms > 0 && downstream_ms <= 20_000,
        "downstream deadline {downstream_ms} ms"
    );

    analyzer_server.shutdown().await.unwrap();
    editor_server.shutdown().await.unwrap();
    let spans = telemetry.finished_spans();
    let named = |name: &str| spans.iter().filter(|s| s.name == name).collect::<Vec<_>>();
    let names: Vec<_> = spans.iter().map(|s| s.name.to_string()).collect();

    let analyze = named("arf.v1.Analyzer/Analyze");
    assert_eq!(
        analyze.len(),
        2,
        "a client and a server span for Analyze in {names:?}"
    );
    let (client, server) = if analyze[0].parent_span_id == SpanId::INVALID {
        (analyze[0], analyze[1])
    } else {
        (analyze[1], analyze[0])
    };
    let trace_id = client.span_context.trace_id();
    assert_eq!(server.span_context.trace_id(), trace_id);
    assert_eq!(
        server.parent_span_id,
        client.span_context.span_id(),
        "the server span's parent is the client span"
    );

    let generate = named("arf.v1.Editor/Generate");
    assert_eq!(
        generate.len(),
        2,
        "the downstream call has a client and a server span in {names:?}"
    );
    assert!(
        generate
            .iter()
            .all(|s| s.span_context.trace_id() == trace_id),
        "one trace end to end"
    );
    let downstream_client = generate
        .iter()
        .find(|s| s.parent_span_id == server.span_context.span_id())
        .expect("the downstream client span is a child of the analyzer's server span");
    assert!(
        generate
            .iter()
            .any(|s| s.parent_span_id == downstream_client.span_context.span_id())
    );

    let attributes: Vec<_> = server
        .attributes
        .iter()
        .map(|kv| (kv.key.to_string(), kv.value.to_string()))
        .collect();
    for (key, value) in [
        ("rpc.system", "grpc"),
        ("rpc.service", "arf.v1.Analyzer"),
        ("rpc.method", "Analyze"),
        ("rpc.grpc.status_code", "0"),
    ] {
        assert!(
            attributes.contains(&(key.to_string(), value.to_string())),
            "{key}={value} missing from {attributes:?}"
        );
    }

    let exported = telemetry.metric_names();
    for name in ["rpc.server.call.duration", "rpc.server.active_requests"] {
        assert!(
            exported.iter().any(|n| n == name),
            "{name} missing from {exported:?}"
        );
    }
}
