//! Output tokens per second through the gRPC service against a direct mistral.rs call, in the
//! same process, on the same loaded model. The service should add at most 5%.
//!
//! Run: `cargo bench --profile dev -p editor-svc --bench grpc_overhead`
//! (dev profile: dependencies at opt-level 2; a release build of mistral.rs takes 20+ minutes).
//! `ARF_BENCH_RUNS` and `ARF_BENCH_TOKENS` change the number of runs and tokens per run;
//! `ARF_BENCH_MODEL` (a model directory or GGUF file, e.g. the SmolLM2 GGUF that
//! `scripts/fetch-model.sh smollm2` caches) measures that model instead of a random one.

use std::time::{Duration, Instant};

use arf_common::client::{ClientOptions, connect_lazy};
use arf_common::config::ServerArgs;
use arf_common::server::serve_loopback;
use arf_proto::service_names::EDITOR;
use arf_proto::v1::editor_client::EditorClient;
use arf_proto::v1::{ChatMessage, GenerateRequest, GenerationParams};
use arf_tiny_llama::{TinyLlamaSpec, write_tiny_llama};
use editor_svc::backend::engine_request;
use editor_svc::generation::{self, ChatRole, GenerationRequest, Sampling};
use editor_svc::{EditorConfig, load_editor};
use mistralrs::ModelDType;
use tonic::service::Routes;

const PROMPT: &str = "Summarize the conversation: the customer's order arrived damaged and the agent issued a refund.";

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let runs = env_or("ARF_BENCH_RUNS", 5);
    let tokens = env_or("ARF_BENCH_TOKENS", 400);
    // Bigger than the test model, so per-token model time dominates as it does for a real model.
    let spec = TinyLlamaSpec {
        hidden_size: 256,
        num_hidden_layers: 4,
        num_attention_heads: 8,
        num_key_value_heads: 4,
        intermediate_size: 768,
        max_position_embeddings: 4096,
        ..Default::default()
    };
    let dir = tempfile::tempdir()?;
    let model_path = match std::env::var_os("ARF_BENCH_MODEL") {
        Some(path) => std::path::PathBuf::from(path),
        None => {
            write_tiny_llama(dir.path(), &spec)?;
            dir.path().to_path_buf()
        }
    };
    let described = match std::env::var_os("ARF_BENCH_MODEL") {
        Some(_) => model_path.display().to_string(),
        None => format!(
            "random, hidden {} x {} layers",
            spec.hidden_size, spec.num_hidden_layers
        ),
    };
    let config = EditorConfig {
        dtype: ModelDType::F32,
        ..EditorConfig::new(&model_path)
    };
    let service = load_editor(&config).await?;
    let editor = service
        .editor()
        .ok_or_else(|| anyhow::anyhow!("the editor did not load"))?;

    let args = ServerArgs::local();
    let routes = Routes::new(service.into_server(args.max_message_bytes));
    let server = serve_loopback(&args, EDITOR, true, routes).await?;
    let channel = connect_lazy(&server.endpoint(), &ClientOptions::default())?;
    let mut client = EditorClient::new(channel);

    let direct_request = || GenerationRequest {
        prompt: vec![generation::ChatMessage::new(ChatRole::User, PROMPT)].into(),
        max_tokens: tokens,
        sampling: Sampling::default(),
        stop: Vec::new(),
        json_schema: None,
    };
    let grpc_request = || GenerateRequest {
        messages: vec![ChatMessage {
            role: "user".into(),
            content: PROMPT.into(),
        }],
        params: Some(GenerationParams {
            max_tokens: tokens as u32,
            ..Default::default()
        }),
        json_schema: String::new(),
    };
    let model = editor_svc::MistralBackend::of(editor.backend().as_ref())
        .expect("a mistral.rs editor")
        .model();

    // One of each first: caches warm, allocations made.
    model
        .send_chat_request(engine_request(direct_request()))
        .await?;
    client.generate(grpc_request()).await?;

    let (mut direct, mut grpc) = (Measure::default(), Measure::default());
    for run in 0..runs {
        // Alternate which goes first, so drift (thermal, other load) hits both alike.
        for first in [run % 2 == 0, run % 2 != 0] {
            if first {
                let started = Instant::now();
                let response = model
                    .send_chat_request(engine_request(direct_request()))
                    .await?;
                direct.add(response.usage.completion_tokens, started.elapsed());
            } else {
                let started = Instant::now();
                let response = client.generate(grpc_request()).await?.into_inner();
                let usage = response.usage.unwrap_or_default();
                grpc.add(usage.output_tokens as usize, started.elapsed());
            }
        }
    }
    let (d, g) = (direct.tokens_per_second(), grpc.tokens_per_second());
    println!(
        "model: {described}, f32 activations, cpu; {runs} runs of up to {tokens} tokens each, greedy"
    );
    println!(
        "direct mistral.rs : {d:8.1} output tokens/s  ({} tokens in {:.2?})",
        direct.tokens, direct.time
    );
    println!(
        "through gRPC      : {g:8.1} output tokens/s  ({} tokens in {:.2?})",
        grpc.tokens, grpc.time
    );
    println!(
        "overhead          : {:+.2}%  (target: at most 5%)",
        (d - g) / d * 100.0
    );
    server.shutdown().await
}

#[derive(Default)]
struct Measure {
    tokens: usize,
    time: Duration,
}

impl Measure {
    fn add(&mut self, tokens: usize, time: Duration) {
        self.tokens += tokens;
        self.time += time;
    }

    fn tokens_per_second(&self) -> f64 {
        self.tokens as f64 / self.time.as_secs_f64()
    }
}
