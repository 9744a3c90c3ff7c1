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
        super::subscriber(self.tracer_provider.tracer("test"), None)
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

    /// The last value of each series of the i64 gauge `name` (each with its attributes as
    /// `key=value` strings), from the latest export.
    pub fn i64_gauge(&self, name: &str) -> Vec<(Vec<String>, i64)> {
        use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData};
        self.meter_provider.force_flush().expect("flushing metrics");
        let exported = self
            .metrics
            .get_finished_metrics()
            .expect("reading metrics");
        let mut points = Vec::new();
        // The latest export only: each one carries every series the callbacks observed.
        for rm in exported.iter().rev().take(1) {
            for sm in rm.scope_metrics() {
                for m in sm.metrics().filter(|m| m.name() == name) {
                    if let AggregatedMetrics::I64(MetricData::Gauge(g)) = m.data() {
                        for p in g.data_points() {
                            let attrs = p.attributes().map(|kv| format!("{}={}", kv.key, kv.value));
                            points.push((attrs.collect(), p.value()));
                        }
                    }
                }
            }
        }
        points
    }
}
