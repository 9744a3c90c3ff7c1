//! OpenTelemetry GenAI semantic conventions for the editor: attribute names (defined here: the
//! Rust semconv crate marks its `GEN_AI_*` constants deprecated), the span of a generation, and
//! the metric instruments.

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Histogram, UpDownCounter};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use crate::generation::{Generation, GenerationRequest, Prompt};

pub const GEN_AI_OPERATION_NAME: &str = "gen_ai.operation.name";
pub const GEN_AI_PROVIDER_NAME: &str = "gen_ai.provider.name";
pub const GEN_AI_REQUEST_MODEL: &str = "gen_ai.request.model";
pub const GEN_AI_REQUEST_MAX_TOKENS: &str = "gen_ai.request.max_tokens";
pub const GEN_AI_REQUEST_TEMPERATURE: &str = "gen_ai.request.temperature";
pub const GEN_AI_REQUEST_TOP_P: &str = "gen_ai.request.top_p";
pub const GEN_AI_RESPONSE_MODEL: &str = "gen_ai.response.model";
pub const GEN_AI_RESPONSE_FINISH_REASONS: &str = "gen_ai.response.finish_reasons";
pub const GEN_AI_USAGE_INPUT_TOKENS: &str = "gen_ai.usage.input_tokens";
pub const GEN_AI_USAGE_OUTPUT_TOKENS: &str = "gen_ai.usage.output_tokens";
pub const GEN_AI_TOKEN_TYPE: &str = "gen_ai.token.type";
pub const GEN_AI_OUTPUT_TYPE: &str = "gen_ai.output.type";
/// Opt-in content (`--log-content`): the chat messages in and the completion out, as JSON.
pub const GEN_AI_INPUT_MESSAGES: &str = "gen_ai.input.messages";
pub const GEN_AI_OUTPUT_MESSAGES: &str = "gen_ai.output.messages";
pub const ERROR_TYPE: &str = "error.type";
/// Not in the conventions: time to first token of this call, in seconds, on its span.
pub const ARF_TIME_TO_FIRST_TOKEN: &str = "arf.gen_ai.time_to_first_token";

/// The GenAI operation every editor generation is.
pub const OPERATION_CHAT: &str = "chat";
/// A raw-text prompt (`POST /v1/completions`).
pub const OPERATION_TEXT_COMPLETION: &str = "text_completion";
/// Who serves the model: the in-process engine, or an OpenAI-compatible upstream (the
/// conventions' well-known value for the OpenAI API).
pub const PROVIDER_MISTRAL_RS: &str = "mistral.rs";
pub const PROVIDER_OPENAI: &str = "openai";

/// Metric instruments, created once per backend from the global meter provider.
#[derive(Clone)]
pub struct GenAiMetrics {
    provider: &'static str,
    pub request_duration: Histogram<f64>,
    pub time_to_first_token: Histogram<f64>,
    pub time_per_output_token: Histogram<f64>,
    pub token_usage: Histogram<u64>,
    /// Sequences admitted by the engine with no token sampled yet.
    pub sequences_queued: UpDownCounter<i64>,
    /// Sequences sampling tokens.
    pub sequences_running: UpDownCounter<i64>,
}

impl GenAiMetrics {
    pub fn new(provider: &'static str) -> Self {
        let meter = opentelemetry::global::meter("arf");
        let seconds = vec![
            0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
        ];
        Self {
            provider,
            request_duration: meter
                .f64_histogram("gen_ai.server.request.duration")
                .with_unit("s")
                .with_description("Generation time, from submission to the last token")
                .with_boundaries(seconds.clone())
                .build(),
            time_to_first_token: meter
                .f64_histogram("gen_ai.server.time_to_first_token")
                .with_unit("s")
                .with_description(
                    "Time to the first generated token, queueing and prefill included",
                )
                .with_boundaries(vec![
                    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5,
                    5.0, 7.5, 10.0,
                ])
                .build(),
            time_per_output_token: meter
                .f64_histogram("gen_ai.server.time_per_output_token")
                .with_unit("s")
                .with_description("Decode time per output token after the first")
                .with_boundaries(vec![
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3,
                    0.4, 0.5, 0.75, 1.0, 2.5,
                ])
                .build(),
            token_usage: meter
                .u64_histogram("gen_ai.server.token.usage")
                .with_unit("{token}")
                .with_description("Input and output tokens per generation")
                .with_boundaries(vec![
                    1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0,
                ])
                .build(),
            sequences_queued: meter
                .i64_up_down_counter("arf.editor.sequences.queued")
                .with_unit("{sequence}")
                .with_description("Sequences the engine admitted that have not sampled a token yet")
                .build(),
            sequences_running: meter
                .i64_up_down_counter("arf.editor.sequences.running")
                .with_unit("{sequence}")
                .with_description("Sequences the engine is decoding")
                .build(),
        }
    }

    /// Records a finished generation.
    pub fn record(&self, model: &str, generation: &Generation) {
        let attrs = base_attributes(self.provider, model);
        self.request_duration
            .record(generation.timing.total.as_secs_f64(), &attrs);
        self.time_to_first_token
            .record(generation.timing.time_to_first_token.as_secs_f64(), &attrs);
        if generation.usage.output_tokens > 1 {
            let decode = generation
                .timing
                .total
                .saturating_sub(generation.timing.time_to_first_token);
            self.time_per_output_token.record(
                decode.as_secs_f64() / f64::from(generation.usage.output_tokens - 1),
                &attrs,
            );
        }
        for (kind, n) in [
            ("input", generation.usage.input_tokens),
            ("output", generation.usage.output_tokens),
        ] {
            let mut with_type = attrs.clone();
            with_type.push(KeyValue::new(GEN_AI_TOKEN_TYPE, kind));
            self.token_usage.record(u64::from(n), &with_type);
        }
    }

    /// Records a generation that failed, with its error type.
    pub fn record_failure(
        &self,
        model: &str,
        elapsed: std::time::Duration,
        error_type: &'static str,
    ) {
        let mut attrs = base_attributes(self.provider, model);
        attrs.push(KeyValue::new(ERROR_TYPE, error_type));
        self.request_duration.record(elapsed.as_secs_f64(), &attrs);
    }
}

fn base_attributes(provider: &'static str, model: &str) -> Vec<KeyValue> {
    vec![
        KeyValue::new(GEN_AI_OPERATION_NAME, OPERATION_CHAT),
        KeyValue::new(GEN_AI_PROVIDER_NAME, provider),
        KeyValue::new(GEN_AI_REQUEST_MODEL, model.to_string()),
    ]
}

/// The span of one generation ("chat {model}"), with the request attributes set.
pub fn generation_span(
    provider: &'static str,
    model: &str,
    request: &GenerationRequest,
    capture_content: bool,
) -> tracing::Span {
    let operation = match request.prompt {
        Prompt::Chat(_) => OPERATION_CHAT,
        Prompt::Text(_) => OPERATION_TEXT_COMPLETION,
    };
    let span = tracing::info_span!(
        "gen_ai",
        otel.name = format!("{operation} {model}"),
        otel.kind = "internal"
    );
    span.set_attribute(GEN_AI_OPERATION_NAME, operation);
    span.set_attribute(GEN_AI_PROVIDER_NAME, provider);
    span.set_attribute(GEN_AI_REQUEST_MODEL, model.to_string());
    span.set_attribute(GEN_AI_REQUEST_MAX_TOKENS, request.max_tokens as i64);
    span.set_attribute(
        GEN_AI_REQUEST_TEMPERATURE,
        request.sampling.temperature.unwrap_or(0.0),
    );
    if let Some(top_p) = request.sampling.top_p {
        span.set_attribute(GEN_AI_REQUEST_TOP_P, top_p);
    }
    span.set_attribute(
        GEN_AI_OUTPUT_TYPE,
        if request.json_schema.is_some() {
            "json"
        } else {
            "text"
        },
    );
    if capture_content {
        span.set_attribute(GEN_AI_INPUT_MESSAGES, messages_json(&request.prompt));
    }
    span
}

/// Sets the response attributes of a finished generation on its span.
pub fn record_response(
    span: &tracing::Span,
    model: &str,
    generation: &Generation,
    capture_content: bool,
) {
    span.set_attribute(GEN_AI_RESPONSE_MODEL, model.to_string());
    span.set_attribute(
        GEN_AI_USAGE_INPUT_TOKENS,
        i64::from(generation.usage.input_tokens),
    );
    span.set_attribute(
        GEN_AI_USAGE_OUTPUT_TOKENS,
        i64::from(generation.usage.output_tokens),
    );
    span.set_attribute(
        GEN_AI_RESPONSE_FINISH_REASONS,
        opentelemetry::Value::Array(
            vec![opentelemetry::StringValue::from(
                generation.finish_reason.clone(),
            )]
            .into(),
        ),
    );
    span.set_attribute(
        ARF_TIME_TO_FIRST_TOKEN,
        generation.timing.time_to_first_token.as_secs_f64(),
    );
    if capture_content {
        let out = serde_json::json!([{"role": "assistant", "parts": [{"type": "text", "content": generation.text}],
                                      "finish_reason": generation.finish_reason}]);
        span.set_attribute(GEN_AI_OUTPUT_MESSAGES, out.to_string());
    }
}

pub fn record_error(span: &tracing::Span, error_type: &'static str) {
    span.set_attribute(ERROR_TYPE, error_type);
}

/// The input as GenAI messages; a raw-text prompt is one user message.
fn messages_json(prompt: &Prompt) -> String {
    let message = |role: &str, content: &str| serde_json::json!({"role": role, "parts": [{"type": "text", "content": content}]});
    let list: Vec<_> = match prompt {
        Prompt::Chat(messages) => messages
            .iter()
            .map(|m| message(m.role.as_str(), &m.content))
            .collect(),
        Prompt::Text(text) => vec![message("user", text)],
    };
    serde_json::Value::Array(list).to_string()
}
