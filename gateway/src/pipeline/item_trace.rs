//! One trace per run item, across stages and restarts: the item's first span starts a new
//! trace (following from the run's span), its W3C traceparent is stored with the item, and
//! later stages open their spans under it.

use arf_common::telemetry::{context_from_map, context_to_map};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

const TRACEPARENT: &str = "traceparent";

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
        let _ = span.set_parent(context_from_map(
            &[(TRACEPARENT.to_string(), tp.to_string())].into(),
        ));
    }
    span
}

/// The span's traceparent, to store with the item.
pub fn traceparent(span: &Span) -> String {
    context_to_map(&span.context())
        .remove(TRACEPARENT)
        .unwrap_or_default()
}
