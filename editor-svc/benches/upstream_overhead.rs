//! What `editor-svc --backend openai` costs over calling its upstream directly: the same
//! summaries asked of an OpenAI-compatible server straight (a streamed chat completion, as the
//! backend asks it) and through an editor that forwards to it (gRPC Generate), greedy, the same
//! prompts, each prompt once each way. The upstream keeps the last prompt's cache, so which side
//! asks a prompt first alternates (each side gets as many cold prompts as warm ones), and a
//! cached prefill may end in another greedy text of another length: the ratio compared is the
//! seconds per generated token over all requests (target <= 1.05), beside the plain totals.
//!
//! The upstream is llama.cpp's `llama-server` on the SmolLM2 GGUF (built from the
//! llama-cpp-python sdist by `scripts/build-llama-bench.sh` when missing), or with
//! `--upstream ours` an editor serving it over its own HTTP API:
//!   bash scripts/fetch-model.sh smollm2
//!   cargo bench --profile dev -p editor-svc --bench upstream_overhead -- [--upstream llama-server|ours] [--requests N] [--max-tokens T]

use std::time::Instant;

#[path = "support/tweetsumm.rs"]
mod tweetsumm;

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

/// TweetSumm conversations as summary prompts.
fn prompts(n: usize) -> anyhow::Result<Vec<String>> {
    Ok(tweetsumm::conversations("valid.jsonl")?
        .into_iter()
        .take(n)
        .map(|turns| {
            format!(
                "Summarize this customer-service conversation in two sentences.\n{}",
                turns.join("\n")
            )
        })
        .collect())
}

/// One streamed chat completion straight to the upstream, read to its end.
async fn direct(
    http: &reqwest::Client,
    base: &str,
    model: &str,
    prompt: &str,
    max_tokens: u32,
) -> anyhow::Result<(String, u32)> {
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
    let mut tokens = 0;
    let mut bytes = response.bytes_stream();
    use futures::StreamExt as _;
    while let Some(chunk) = bytes.next().await {
        for data in sse.push(&chunk?) {
            if data.trim() == "[DONE]" {
                return Ok((text, tokens));
            }
            let chunk: editor_svc::openai_wire::ChunkIn = serde_json::from_str(&data)?;
            if let Some(u) = chunk.usage {
                tokens = u.completion_tokens as u32;
            }
            for c in chunk.choices {
                text.push_str(c.delta.content.as_deref().unwrap_or(""));
            }
        }
    }
    Ok((text, tokens))
}

async fn timed_direct(
    http: &reqwest::Client,
    base: &str,
    model: &str,
    prompt: &str,
    max_tokens: u32,
) -> anyhow::Result<(f64, String, u32)> {
    let t = Instant::now();
    let (text, tokens) = direct(http, base, model, prompt, max_tokens).await?;
    Ok((t.elapsed().as_secs_f64(), text, tokens))
}

async fn timed_forwarded(
    editor: &mut EditorClient<arf_common::client::GrpcChannel>,
    request: GenerateRequest,
) -> anyhow::Result<(f64, String, u32)> {
    let t = Instant::now();
    let g = editor.generate(request).await?.into_inner();
    let tokens = g.usage.map_or(0, |u| u.output_tokens);
    if std::env::var_os("ARF_BENCH_DEBUG").is_some() {
        eprintln!(
            "forwarded: {:.3} s seen, editor's timing {:?}",
            t.elapsed().as_secs_f64(),
            g.timing
        );
    }
    Ok((t.elapsed().as_secs_f64(), g.text, tokens))
}

/// A greedy Generate of `prompt` as the one user message.
fn summary_request(prompt: &str, max_tokens: u32) -> GenerateRequest {
    GenerateRequest {
        messages: vec![ChatMessage {
            role: "user".into(),
            content: prompt.into(),
        }],
        params: Some(GenerationParams {
            max_tokens,
            temperature: Some(0.0),
            ..Default::default()
        }),
        json_schema: String::new(),
    }
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
            let router = editor_svc::http::router(service.clone(), &ServerArgs::local());
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
    let forwarding = load_editor(&EditorConfig::upstream(UpstreamConfig::new(
        base.clone(),
        model.clone(),
    )))
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
    // One of each first, unmeasured (connections, allocations), on a prompt not measured: the
    // first measured prompt must be cold for whichever side asks it first.
    let warm_up = "Say hello.";
    direct(&http, &base, &model, warm_up, 4).await?;
    timed_forwarded(&mut editor, summary_request(warm_up, 4)).await?;
    let (mut straight, mut forwarded, mut differ) = (Vec::new(), Vec::new(), 0);
    for (i, prompt) in prompts.iter().enumerate() {
        let request = summary_request(prompt, a.max_tokens);
        // Alternate which goes first, so each side meets as many warm prompt caches as cold.
        let (d, f) = if i % 2 == 0 {
            let d = timed_direct(&http, &base, &model, prompt, a.max_tokens).await?;
            (d, timed_forwarded(&mut editor, request).await?)
        } else {
            let f = timed_forwarded(&mut editor, request).await?;
            (
                timed_direct(&http, &base, &model, prompt, a.max_tokens).await?,
                f,
            )
        };
        differ += usize::from(d.1 != f.1);
        straight.push((d.0, d.2));
        forwarded.push((f.0, f.2));
    }
    let seconds = |v: &[(f64, u32)]| v.iter().map(|x| x.0).sum::<f64>();
    let tokens = |v: &[(f64, u32)]| v.iter().map(|x| f64::from(x.1)).sum::<f64>();
    let per_token = |v: &[(f64, u32)]| seconds(v) / tokens(v);
    for (name, v) in [
        ("direct to the upstream:  ", &straight),
        ("through --backend openai:", &forwarded),
    ] {
        println!(
            "{name} {:.1} s for {} tokens, {:.2} ms a token, median request {:.3} s",
            seconds(v),
            tokens(v),
            1e3 * per_token(v),
            median(v.iter().map(|x| x.0).collect())
        );
    }
    println!(
        "overhead ratio (seconds per generated token): {:.3}; total seconds: {:.3}; greedy texts that differ: {differ} of {}",
        per_token(&forwarded) / per_token(&straight),
        seconds(&forwarded) / seconds(&straight),
        straight.len()
    );
    server.shutdown().await?;
    Ok(())
}
