//! Telemetry kept in memory, for tests: what an operator's collector would receive from the
//! same subscriber, tracer and meter the binaries run (feature `testing`).

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};

pub struct InMemoryTelemetry {
    spans: InMemorySpanExporter,
    tracer_provider: SdkTracerProvider,
    metrics: InMemoryMetricExporter,
    meter_provider: SdkMeterProvider,
}

impl InMemoryTelemetry {
    /// Installs the W3C propagator and a global meter provider. Spans are recorded once the
    /// caller installs [`Self::subscriber`], thread-locally or process-wide.
    pub fn install() -> Self {
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        let spans = InMemorySpanExporter::default();
        let tracer_provider = SdkTracerProvider::builder()
            .with_simple_exporter(spans.clone())
            .build();
        let metrics = InMemoryMetricExporter::default();
        let meter_provider = SdkMeterProvider::builder()
            .with_reader(PeriodicReader::builder(metrics.clone()).build())
            .build();
        opentelemetry::global::set_meter_provider(meter_provider.clone());
        Self {
            spans,
            tracer_provider,
            metrics,
            meter_provider,
        }
    }

    /// The binaries' subscriber (no log lines) around the in-memory tracer.
    pub fn subscriber(&self) -> impl tracing::Subscriber + Send + Sync {
        super::subscriber(self.tracer_provider.tracer("test"), false)
    }

    /// Every span ended so far.
    pub fn finished_spans(&self) -> Vec<SpanData> {
        self.tracer_provider.force_flush().expect("flushing spans");
        self.spans.get_finished_spans().expect("reading spans")
    }

    /// The names of the metrics recorded so far.
    pub fn metric_names(&self) -> Vec<String> {
        self.meter_provider.force_flush().expect("flushing metrics");
        let exported = self
            .metrics
            .get_finished_metrics()
            .expect("reading metrics");
        exported
            .iter()
            .flat_map(|rm| {
                rm.scope_metrics()
                    .flat_map(|sm| sm.metrics().map(|m| m.name().to_string()))
                    .collect::<Vec<_>>()
            })
            .collect()
    }
}
