//! Tracing and metrics through OpenTelemetry.
//!
//! `tracing` is the API everywhere; an OpenTelemetry layer turns spans into OTel spans.
//! Export is OTLP/gRPC when `OTEL_EXPORTER_OTLP_ENDPOINT` is set (the user's collector);
//! `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES` are honoured. Without an endpoint, spans
//! still get real ids, so W3C trace context still propagates between services.
//!
//! Conversation text never goes into spans or logs: the one opt-in is the editor's
//! (the editor's `--log-content`).

mod client_layer;
#[cfg(feature = "testing")]
pub mod in_memory;
mod metrics;
mod propagation;
mod server_layer;

use std::io::IsTerminal as _;
use std::time::Duration;

use anyhow::Context as _;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Registry};

pub use client_layer::{ClientTelemetry, ClientTelemetryLayer};
pub use metrics::RpcMetrics;
pub use propagation::{context_from_map, context_to_map, extract_context, inject_context};
pub use server_layer::{ServerTelemetry, ServerTelemetryLayer};

/// Owns the tracer and meter providers; [`Telemetry::shutdown`] flushes them. Call it after
/// the server has drained, so the spans of the last calls are exported too.
pub struct Telemetry {
    tracer_provider: SdkTracerProvider,
    meter_provider: SdkMeterProvider,
}

impl Telemetry {
    /// Installs the global subscriber, tracer, meter and W3C propagator for a binary.
    pub fn init(default_service_name: &str, log_format: LogFormat) -> anyhow::Result<Self> {
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        let resource = resource(default_service_name);
        let otlp = std::env::var_os("OTEL_EXPORTER_OTLP_ENDPOINT").is_some()
            || std::env::var_os("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_some();

        let mut tracer_provider = SdkTracerProvider::builder().with_resource(resource.clone());
        let mut meter_provider = SdkMeterProvider::builder().with_resource(resource);
        if otlp {
            let spans = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .build()
                .context("building the OTLP span exporter")?;
            tracer_provider = tracer_provider.with_batch_exporter(spans);
            let metrics = opentelemetry_otlp::MetricExporter::builder()
                .with_tonic()
                .build()
                .context("building the OTLP metric exporter")?;
            meter_provider = meter_provider.with_periodic_exporter(metrics);
        }
        let tracer_provider = tracer_provider.build();
        let meter_provider = meter_provider.build();
        opentelemetry::global::set_tracer_provider(tracer_provider.clone());
        // Without an exporter, the no-op meter: an SDK meter with no reader logs an error for
        // every observable gauge (the autoscalers' ones), which would greet every start-up.
        if otlp {
            opentelemetry::global::set_meter_provider(meter_provider.clone());
        }

        let tracer = tracer_provider.tracer("arf");
        subscriber(tracer, Some(log_format))
            .try_init()
            .context("installing the tracing subscriber")?;
        if otlp {
            tracing::info!("exporting traces and metrics over OTLP");
        }
        Ok(Self {
            tracer_provider,
            meter_provider,
        })
    }

    /// Flushes and stops the exporters (bounded: a missing collector must not hang shutdown).
    pub fn shutdown(self) {
        let timeout = Duration::from_secs(5);
        if let Err(e) = self.tracer_provider.shutdown_with_timeout(timeout) {
            eprintln!("flushing traces failed: {e}");
        }
        if let Err(e) = self.meter_provider.shutdown_with_timeout(timeout) {
            eprintln!("flushing metrics failed: {e}");
        }
    }
}

/// How log lines are written on stderr.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// For people: one line an event, coloured only when stderr is a terminal (a file or a
    /// pipe gets no escape codes).
    #[default]
    Text,
    /// For log collectors: one JSON object a line, with the current span's fields.
    Json,
}

/// The subscriber every binary runs: env filter (`RUST_LOG`, default info), log lines on
/// stderr (`None`: none), and the OpenTelemetry layer. Tests build it around an in-memory
/// tracer.
pub fn subscriber(
    tracer: SdkTracer,
    log_lines: Option<LogFormat>,
) -> impl tracing::Subscriber + Send + Sync {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let text = (log_lines == Some(LogFormat::Text)).then(|| {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal())
            .with_target(false)
    });
    let json = (log_lines == Some(LogFormat::Json)).then(|| {
        tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::stderr)
            .with_current_span(true)
            .with_span_list(false)
    });
    Registry::default()
        .with(filter)
        .with(text)
        .with(json)
        .with(tracing_opentelemetry::layer().with_tracer(tracer))
}

fn resource(default_service_name: &str) -> Resource {
    let builder = Resource::builder();
    // The SDK's env detector already reads OTEL_SERVICE_NAME; only fill in our default.
    if std::env::var_os("OTEL_SERVICE_NAME").is_some() {
        builder.build()
    } else {
        builder
            .with_service_name(default_service_name.to_string())
            .build()
    }
}
