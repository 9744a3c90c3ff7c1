//! What `editor-svc --backend openai` costs over calling its upstream directly: the same
//! summaries asked of an OpenAI-compatible server straight (a streamed chat completion, as the
//! backend asks it) and through an editor that forwards to it (gRPC Generate), alternating one
//! and the other, greedy, the same prompts. Prints the medians and their ratio (target <= 1.05).
//!
//! The upstream is llama.cpp's `llama-server` on the SmolLM2 GGUF (built from the
//! llama-cpp-python sdist by `scripts/build-llama-bench.sh` when missing), or with
//! `--upstream ours` an editor serving it over its own HTTP API:
//!   bash scripts/fetch-model.sh smollm2
//!   cargo bench --profile dev -p editor-svc --bench upstream_overhead -- [--upstream llama-server|ours] [--requests N] [--max-tokens T]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use arf_common::client::{ClientOptions, connect_lazy};
use arf_common::config::ServerArgs;
use arf_common::server::serve_loopback;
use arf_proto::service_names::EDITOR;
use arf_proto::v1::editor_client::EditorClient;
use arf_proto::v1::{ChatMessage, GenerateRequest, GenerationParams};
use editor_svc::backend::openai::UpstreamConfig;
use editor_svc::{EditorConfig, load_editor};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;

struct Args {
    upstream: String,
    requests: usize,
    max_tokens: u32,
}

fn args() -> anyhow::Result<Args> {
    let mut a = Args {
        upstream: "llama-server".into(),
        requests: 20,
        max_tokens: 48,
    };
    let mut it = std::env::args().skip(1).filter(|s| s != "--bench");
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--upstream" => a.upstream = value()?,
            "--requests" => a.requests = value()?.parse()?,
            "--max-tokens" => a.max_tokens = value()?.parse()?,
            other => bail!("unknown flag {other}"),
        }
    }
    Ok(a)
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// TweetSumm conversations as summary prompts.
fn prompts(n: usize) -> anyhow::Result<Vec<String>> {
    let path = workspace().join("../shared/data/tweetsumm/valid.jsonl");
    let text = std::fs::read_to_string(&path).with_context(|| path.display().to_string())?;
    text.lines()
        .take(n)
        .map(|line| {
            let row: serde_json::Value = serde_json::from_str(line)?;
            let turns: Vec<String> = row["turns"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|t| {
                    format!(
                        "{}: {}",
                        t["role"].as_str().unwrap_or(""),
                        t["text"].as_str().unwrap_or("")
                    )
                })
                .collect();
            Ok(format!(
                "Summarize this customer-service conversation in two sentences.\n{}",
                turns.join("\n")
            ))
        })
        .collect()
}

/// One streamed chat completion straight to the upstream, read to its end.
async fn direct(
    http: &reqwest::Client,
    base: &str,
    model: &str,
    prompt: &str,
    max_tokens: u32,
) -> anyhow::Result<String> {
    let body = json!({"model": model, "messages": [{"role": "user", "content": prompt}],
                      "max_tokens": max_tokens, "temperature": 0, "stream": true,
                      "stream_options": {"include_usage": true}});
    let response = http
        .post(format!("{base}/chat/completions"))
        .json(&body)
        .send()
        .await?;
    anyhow::ensure!(response.status().is_success(), "{}", response.status());
    let mut sse = editor_svc::openai_wire::SseReader::default();
    let mut text = String::new();
    let mut bytes = response.bytes_stream();
    use futures::StreamExt as _;
    while let Some(chunk) = bytes.next().await {
        for data in sse.push(&chunk?) {
            if data.trim() == "[DONE]" {
                return Ok(text);
            }
            let chunk: editor_svc::openai_wire::ChunkIn = serde_json::from_str(&data)?;
            for c in chunk.choices {
                text.push_str(c.delta.content.as_deref().unwrap_or(""));
            }
        }
    }
    Ok(text)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let a = args()?;
    let gguf = arf_common::models::resolve("smollm2")?;
    let stop = CancellationToken::new();
    let _stop = stop.clone().drop_guard();
    // The upstream: llama-server, or an editor serving the GGUF over its own HTTP API.
    let (_server, base, model, _ours) = match a.upstream.as_str() {
        "llama-server" => {
            let server = arf_common::llama_cpp::LlamaServer::start(&gguf, 1).await?;
            let base = server.base_url();
            (
                Some(server),
                base,
                arf_common::llama_cpp::ALIAS.to_string(),
                None,
            )
        }
        "ours" => {
            let service = load_editor(&EditorConfig::new(&gguf)).await?;
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let router = editor_svc::http::router(service.clone(), None, 1 << 24);
            let http = editor_svc::http::serve(listener, router, stop.clone())?;
            let model = service.editor().context("loaded")?.model().model_id.clone();
            (
                None,
                format!("http://{}/v1", http.addr),
                model,
                Some((service, http)),
            )
        }
        other => bail!("--upstream {other}: llama-server or ours"),
    };
    let forwarding = load_editor(&EditorConfig::upstream(UpstreamConfig {
        base_url: base.clone(),
        model: model.clone(),
        api_key: None,
        ca_file: None,
    }))
    .await?;
    let args = ServerArgs::local();
    let server = serve_loopback(
        &args,
        EDITOR,
        true,
        Routes::new(forwarding.into_server(args.max_message_bytes)),
    )
    .await?;
    let mut editor =
        EditorClient::new(connect_lazy(&server.endpoint(), &ClientOptions::default())?);
    let http = reqwest::Client::new();
    let prompts = prompts(a.requests)?;

    println!(
        "upstream: {} ({base}, model {model}); {} requests of <= {} tokens, greedy, alternating",
        a.upstream,
        prompts.len(),
        a.max_tokens
    );
    // One of each first, unmeasured: connections, caches.
    direct(&http, &base, &model, &prompts[0], a.max_tokens).await?;
    let (mut straight, mut forwarded, mut differ) = (Vec::new(), Vec::new(), 0);
    for (i, prompt) in prompts.iter().enumerate() {
        let request = GenerateRequest {
            messages: vec![ChatMessage {
                role: "user".into(),
                content: prompt.clone(),
            }],
            params: Some(GenerationParams {
                max_tokens: a.max_tokens,
                temperature: Some(0.0),
                ..Default::default()
            }),
            json_schema: String::new(),
        };
        // Alternate which goes first, so neither side always meets a warmer cache.
        let run_direct = async || -> anyhow::Result<(f64, String)> {
            let t = Instant::now();
            let text = direct(&http, &base, &model, prompt, a.max_tokens).await?;
            Ok((t.elapsed().as_secs_f64(), text))
        };
        let (d, f) = if i % 2 == 0 {
            let d = run_direct().await?;
            let t = Instant::now();
            let g = editor.generate(request).await?.into_inner();
            (d, (t.elapsed().as_secs_f64(), g.text))
        } else {
            let t = Instant::now();
            let g = editor.generate(request).await?.into_inner();
            let f = (t.elapsed().as_secs_f64(), g.text);
            (run_direct().await?, f)
        };
        differ += usize::from(d.1 != f.1);
        straight.push(d.0);
        forwarded.push(f.0);
    }
    let (s, f) = (median(straight.clone()), median(forwarded.clone()));
    let total = |v: &[f64]| v.iter().sum::<f64>();
    println!(
        "direct to the upstream:     median {:.3} s, total {:.1} s",
        s,
        total(&straight)
    );
    println!(
        "through --backend openai:   median {:.3} s, total {:.1} s",
        f,
        total(&forwarded)
    );
    println!(
        "overhead ratio (median): {:.3}; total: {:.3}; texts that differ: {differ}",
        f / s,
        total(&forwarded) / total(&straight)
    );
    server.shutdown().await?;
    Ok(())
}
