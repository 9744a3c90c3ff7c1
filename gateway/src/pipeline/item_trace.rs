//! One trace per run item, across stages and restarts: the item's first span starts a new
//! trace (following from the run's span), its W3C traceparent is stored with the item, and
//! later stages open their spans under it.

use std::collections::HashMap;

use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// A root span for an item: a new trace, linked to the run's span.
pub fn start(name: &'static str, run_id: &str, conversation_id: &str) -> Span {
    let span = tracing::info_span!(parent: None, "arf.item", otel.name = name, arf.run_id = %run_id, arf.conversation_id = %conversation_id);
    // Becomes a span link to the run's trace.
    span.follows_from(Span::current());
    span
}

/// A span continuing the item's stored trace (a new trace if none was stored).
pub fn resume(
    name: &'static str,
    run_id: &str,
    conversation_id: &str,
    trace_parent: Option<&str>,
) -> Span {
    let span = start(name, run_id, conversation_id);
    if let Some(tp) = trace_parent {
        let carrier: HashMap<String, String> = [("traceparent".to_string(), tp.to_string())].into();
        let parent = opentelemetry::global::get_text_map_propagator(|p| p.extract(&carrier));
        let _ = span.set_parent(parent);
    }
    span
}

/// The span's traceparent, to store with the item.
pub fn traceparent(span: &Span) -> String {
    let mut carrier: HashMap<String, String> = HashMap::new();
    opentelemetry::global::get_text_map_propagator(|p| {
        p.inject_context(&span.context(), &mut carrier)
    });
    carrier.remove("traceparent").unwrap_or_default()
}
