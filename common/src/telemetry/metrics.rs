//! RPC metrics, following the OpenTelemetry RPC semantic conventions.

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Histogram, UpDownCounter};

/// Server-side RPC instruments, created once per server from the global meter provider.
#[derive(Clone)]
pub struct RpcMetrics {
    /// `rpc.server.call.duration` (seconds), by method and status code.
    pub duration: Histogram<f64>,
    /// `rpc.server.active_requests`: calls in flight, streams until their last message.
    pub active: UpDownCounter<i64>,
}

impl RpcMetrics {
    pub fn new() -> Self {
        let meter = opentelemetry::global::meter("arf");
        Self {
            duration: meter
                .f64_histogram("rpc.server.call.duration")
                .with_unit("s")
                .with_description("Duration of gRPC calls handled, until the last response message")
                .with_boundaries(vec![
                    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                    60.0, 300.0,
                ])
                .build(),
            active: meter
                .i64_up_down_counter("rpc.server.active_requests")
                .with_unit("{request}")
                .with_description("gRPC calls in flight")
                .build(),
        }
    }

    pub fn method_attributes(service: &str, method: &str) -> Vec<KeyValue> {
        vec![
            KeyValue::new("rpc.system", "grpc"),
            KeyValue::new("rpc.service", service.to_string()),
            KeyValue::new("rpc.method", method.to_string()),
        ]
    }
}

impl Default for RpcMetrics {
    fn default() -> Self {
        Self::new()
    }
}
