//! W3C trace context in and out of HTTP/2 headers (gRPC metadata), and in and out of a plain
//! map (stored with a run item or a training job), through the global propagator.

use std::collections::{BTreeMap, HashMap};

use http::HeaderMap;
use opentelemetry::Context;
use opentelemetry::propagation::{Extractor, Injector};

struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

struct HeaderInjector<'a>(&'a mut HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::try_from(key),
            http::HeaderValue::try_from(value),
        ) {
            self.0.insert(name, value);
        }
    }
}

/// The remote parent carried by incoming headers (an empty context when there is none).
pub fn extract_context(headers: &HeaderMap) -> Context {
    opentelemetry::global::get_text_map_propagator(|p| p.extract(&HeaderExtractor(headers)))
}

/// Writes `cx` as `traceparent`/`tracestate` into outgoing headers.
pub fn inject_context(cx: &Context, headers: &mut HeaderMap) {
    opentelemetry::global::get_text_map_propagator(|p| {
        p.inject_context(cx, &mut HeaderInjector(headers))
    });
}

/// A context as its W3C fields (`traceparent`, `tracestate`), to store beside the work it
/// belongs to and pick up again later, in another process if need be.
pub fn context_to_map(cx: &Context) -> BTreeMap<String, String> {
    let mut carrier: HashMap<String, String> = HashMap::new();
    opentelemetry::global::get_text_map_propagator(|p| p.inject_context(cx, &mut carrier));
    carrier.into_iter().collect()
}

/// The context stored by [`context_to_map`] (an empty context when the map holds none).
pub fn context_from_map(map: &BTreeMap<String, String>) -> Context {
    let carrier: HashMap<String, String> = map.clone().into_iter().collect();
    opentelemetry::global::get_text_map_propagator(|p| p.extract(&carrier))
}
