//! The editor against llama.cpp, side by side in one run, on the same GGUF and thread count:
//! prompts of about 200 and 1,000 tokens, 64 generated tokens, one request and 8 at once,
//! through the gRPC service and directly through mistral.rs. llama.cpp runs as `llama-bench`
//! (prompt and decode speed) and `llama-batched-bench` (8 sequences at once), built from the
//! llama-cpp-python sdist by `scripts/build-llama-bench.sh` when missing.
//!
//! Run nothing else meanwhile (2 cores; both sides use every core):
//!   bash scripts/fetch-model.sh smollm2
//!   cargo bench --profile dev -p editor-svc --bench vs_llama_cpp
//! `ARF_BENCH_MODEL` (a GGUF file; default the cached SmolLM2), `ARF_BENCH_RUNS` (rounds per
//! case, default 2), `ARF_BENCH_PROMPTS` (default "200,1000"), `ARF_BENCH_CONCURRENCY`
//! (default "1,8"; 1 must come first), `ARF_LLAMA_CPP_BIN` (a folder holding llama-bench and
//! llama-batched-bench, instead of building them).
//!
//! Each prompt and decode row also says what share of this machine's peak each side reaches,
//! both measured here first: a prompt's FLOPs (from the GGUF's weights and attention) over the
//! f32 FMA peak, a decoded token's bytes (every weight once, and the cache of its context, f16
//! for llama.cpp and for ARF unless `ARF_KV_CACHE=f32`) over the memory read bandwidth.

use std::path::{Path, PathBuf};

#[path = "support/model_costs.rs"]
mod model_costs;
#[path = "support/tweetsumm.rs"]
mod tweetsumm;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use arf_common::client::GrpcChannel;
use arf_common::client::{ClientOptions, connect_lazy};
use arf_common::config::ServerArgs;
use arf_common::server::serve_loopback;
use arf_proto::service_names::EDITOR;
use arf_proto::v1::editor_client::EditorClient;
use arf_proto::v1::{ChatMessage, GenerateRequest, GenerationParams};
use editor_svc::backend::engine_request;
use editor_svc::generation::{self, ChatRole, GenerationRequest, Sampling};
use editor_svc::{EditorConfig, load_editor};
use futures::future::try_join_all;
use mistralrs::{Model, ModelDType, TextMessageRole, TextMessages};
use tonic::service::Routes;

const GENERATED: usize = 64;
const THREADS: usize = 2;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `ARF_BENCH_MODEL`, or the SmolLM2 GGUF in the model cache (an error says how to fetch it:
/// the bench downloads nothing).
fn model_path() -> anyhow::Result<PathBuf> {
    match std::env::var_os("ARF_BENCH_MODEL") {
        Some(path) => Ok(path.into()),
        None => arf_common::models::resolve("smollm2"),
    }
}

const INSTRUCTION: &str =
    "Retell the customer-service conversations below in detail, turn by turn.";

/// `count` different prompts of at least `target` tokens once templated. Each starts with its
/// own ticket number, so no prompt shares a prefix with another (mistral.rs caches prefixes).
async fn prompts(
    model: &Model,
    corpus: &[Vec<String>],
    target: usize,
    count: usize,
    first_ticket: usize,
) -> anyhow::Result<Vec<String>> {
    let turns: Vec<&String> = corpus.iter().flatten().collect();
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        let ticket = first_ticket + i;
        let mut text = format!("Ticket {ticket}. {INSTRUCTION}\n");
        // Start each prompt at a different place in the corpus.
        for turn in turns.iter().cycle().skip(ticket * 37) {
            text.push_str(turn);
            text.push('\n');
            let messages = TextMessages::new().add_message(TextMessageRole::User, &text);
            let tokens = model
                .tokenize(either::Either::Left(messages), None, true, true, None)
                .await?;
            if tokens.len() >= target {
                break;
            }
        }
        out.push(text);
    }
    Ok(out)
}

/// What one case measured on ARF's side, summed over its requests.
#[derive(Default, Clone, Copy)]
struct Measured {
    requests: usize,
    prompt_tokens: usize,
    generated: usize,
    prompt_time: Duration,
    decode_time: Duration,
    wall: Duration,
}

impl Measured {
    fn prompt_rate(&self) -> f64 {
        self.prompt_tokens as f64 / self.prompt_time.as_secs_f64()
    }
    fn decode_rate(&self) -> f64 {
        self.generated as f64 / self.decode_time.as_secs_f64()
    }
    /// Generated tokens per second of wall time, prompts included: what a revision stage gets.
    fn throughput(&self) -> f64 {
        self.generated as f64 / self.wall.as_secs_f64()
    }
    fn add(&mut self, other: Measured) {
        self.requests += other.requests;
        self.prompt_tokens += other.prompt_tokens;
        self.generated += other.generated;
        self.prompt_time += other.prompt_time;
        self.decode_time += other.decode_time;
        self.wall += other.wall;
    }
}

fn direct_request(prompt: &str) -> GenerationRequest {
    GenerationRequest {
        prompt: vec![generation::ChatMessage::new(ChatRole::User, prompt)].into(),
        max_tokens: GENERATED,
        sampling: Sampling::default(),
        stop: Vec::new(),
        json_schema: None,
    }
}

fn grpc_request(prompt: &str) -> GenerateRequest {
    GenerateRequest {
        messages: vec![ChatMessage {
            role: "user".into(),
            content: prompt.into(),
        }],
        params: Some(GenerationParams {
            max_tokens: GENERATED as u32,
            ..Default::default()
        }),
        json_schema: String::new(),
    }
}

/// All of `prompts` at once, straight into mistral.rs.
async fn direct(model: &Model, prompts: &[String]) -> anyhow::Result<Measured> {
    let started = Instant::now();
    let responses = try_join_all(
        prompts
            .iter()
            .map(|p| model.send_chat_request(engine_request(direct_request(p)))),
    )
    .await?;
    let mut m = Measured {
        wall: started.elapsed(),
        ..Default::default()
    };
    for r in responses {
        m.requests += 1;
        m.prompt_tokens += r.usage.prompt_tokens;
        m.generated += r.usage.completion_tokens;
        m.prompt_time += Duration::from_secs_f32(r.usage.total_prompt_time_sec);
        m.decode_time += Duration::from_secs_f32(r.usage.total_completion_time_sec);
    }
    Ok(m)
}

/// All of `prompts` at once, through the editor's gRPC API.
async fn grpc(client: &EditorClient<GrpcChannel>, prompts: &[String]) -> anyhow::Result<Measured> {
    let started = Instant::now();
    let responses = try_join_all(prompts.iter().map(|p| {
        let mut client = client.clone();
        async move { client.generate(grpc_request(p)).await }
    }))
    .await?;
    let mut m = Measured {
        wall: started.elapsed(),
        ..Default::default()
    };
    for r in responses {
        let r = r.into_inner();
        let (usage, timing) = (r.usage.unwrap_or_default(), r.timing.unwrap_or_default());
        m.requests += 1;
        m.prompt_tokens += usage.input_tokens as usize;
        // The first token comes with the prompt; the rest are the decode.
        m.generated += usage.output_tokens.saturating_sub(1) as usize;
        m.prompt_time += Duration::from_secs_f64(timing.time_to_first_token_seconds);
        m.decode_time +=
            Duration::from_secs_f64(timing.total_seconds - timing.time_to_first_token_seconds);
    }
    Ok(m)
}

/// Runs one llama.cpp bench under `/usr/bin/time`: its JSON lines and its peak RSS in MiB.
fn llama(bin: &Path, tool: &str, args: &[String]) -> anyhow::Result<(Vec<serde_json::Value>, f64)> {
    let out = Command::new("/usr/bin/time")
        .args(["-f", "ARF_PEAK_KIB %M"])
        .arg(bin.join(tool))
        .args(args)
        .output()
        .with_context(|| format!("running {tool} (needs /usr/bin/time)"))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        bail!("{tool} failed: {stderr}");
    }
    let peak = stderr
        .lines()
        .find_map(|l| l.strip_prefix("ARF_PEAK_KIB "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kib| kib / 1024.0);
    let rows = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    Ok((rows, peak))
}

fn field(rows: &[serde_json::Value], key: &str) -> f64 {
    rows.first()
        .and_then(|r| r[key].as_f64())
        .unwrap_or(f64::NAN)
}

/// A table row; `shares`: each side's share of the machine's peak (ARF gRPC, llama.cpp).
fn row(work: &str, direct: f64, grpc: f64, anchor: f64, shares: Option<(f64, f64)>) {
    let shares = shares.map_or(String::new(), |(ours, theirs)| {
        format!("{:.0}% / {:.0}%", ours * 100.0, theirs * 100.0)
    });
    println!(
        "| {work} | {direct:.1} | {grpc:.1} | {anchor:.1} | {:.2}x | {shares} |",
        grpc / anchor
    );
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let runs = env_usize("ARF_BENCH_RUNS", 2).max(1);
    let list = |name: &str, default: &str| -> Vec<usize> {
        std::env::var(name)
            .unwrap_or_else(|_| default.into())
            .split(',')
            .filter_map(|v| v.trim().parse().ok())
            .collect()
    };
    let targets = list("ARF_BENCH_PROMPTS", "200,1000");
    let concurrency_levels = list("ARF_BENCH_CONCURRENCY", "1,8");
    anyhow::ensure!(
        concurrency_levels.first() == Some(&1),
        "ARF_BENCH_CONCURRENCY must start with 1 (the prompt and decode rows)"
    );
    let gguf = model_path()?;
    let costs = model_costs::ModelCosts::read(&gguf)?;
    // The peaks first, on a quiet machine (nothing loaded yet).
    let (flop_peak, isa) = arf_common::machine_peak::fma_peak(THREADS);
    let read_peak = arf_common::machine_peak::read_bandwidth(THREADS);
    // The bandwidth loop's buffers are gone; the RSS row is the editor's own.
    anyhow::ensure!(
        arf_common::process::reset_peak_rss(),
        "cannot reset the peak RSS (/proc/self/clear_refs)"
    );
    let our_kv_bytes = match mistralrs::core::cpu_kv_cache_dtype().map_err(anyhow::Error::msg)? {
        mistralrs::DType::F32 => 4.0,
        _ => 2.0,
    };
    let bin = arf_common::llama_cpp::bin_dir()?;
    let corpus = tweetsumm::conversations("train.jsonl")?;

    let config = EditorConfig {
        dtype: ModelDType::F32,
        ..EditorConfig::new(&gguf)
    };
    let service = load_editor(&config).await?;
    let editor = service.editor().context("the editor did not load")?;
    let model = editor_svc::MistralBackend::of(editor.backend().as_ref())
        .expect("a mistral.rs editor")
        .model();
    let args = ServerArgs::local();
    let routes = Routes::new(service.into_server(args.max_message_bytes));
    let server = serve_loopback(&args, EDITOR, true, routes).await?;
    let client = EditorClient::new(connect_lazy(&server.endpoint(), &ClientOptions::default())?);

    // Warm-up: caches, allocations, the first-request paths of both sides.
    let warm = prompts(model, &corpus, 64, 1, 0).await?;
    direct(model, &warm).await?;
    grpc(&client, &warm).await?;

    println!(
        "model: {}; {GENERATED} generated tokens, greedy; {THREADS} threads; {runs} rounds",
        gguf.display()
    );
    println!("CPU: {}", arf_common::machine_peak::cpu_line());
    println!(
        "measured peaks, {THREADS} threads: f32 FMA {flop_peak:.0} GFLOP/s ({isa}); memory read {read_peak:.1} GB/s"
    );
    println!(
        "| work | ARF direct | ARF gRPC | llama.cpp | ratio (gRPC / llama.cpp) | share of peak (gRPC / llama.cpp) |"
    );
    println!("| --- | --- | --- | --- | --- | --- |");
    let mut ticket = 1;
    let mut llama_peaks = Vec::new();
    for &target in &targets {
        let mut results = Vec::new();
        for &concurrency in &concurrency_levels {
            let (mut d, mut g) = (Measured::default(), Measured::default());
            for round in 0..runs {
                // Fresh prompts for each side and round: nothing is served from the prefix cache.
                let a = prompts(model, &corpus, target, concurrency, ticket).await?;
                let b = prompts(model, &corpus, target, concurrency, ticket + concurrency).await?;
                ticket += 2 * concurrency;
                // Alternate which side goes first, so drift hits both alike.
                if round % 2 == 0 {
                    d.add(direct(model, &a).await?);
                    g.add(grpc(&client, &b).await?);
                } else {
                    g.add(grpc(&client, &b).await?);
                    d.add(direct(model, &a).await?);
                }
            }
            eprintln!(
                "ARF, ~{target}-token prompts, {concurrency} at once: direct {:.1} s, gRPC {:.1} s",
                d.wall.as_secs_f64(),
                g.wall.as_secs_f64()
            );
            results.push((concurrency, d, g));
        }
        let (_, d1, g1) = results[0];
        let prompt_len = g1.prompt_tokens / g1.requests.max(1);

        let common = |extra: &[&str]| -> Vec<String> {
            let mut a: Vec<String> = [
                "-m",
                &gguf.display().to_string(),
                "-t",
                &THREADS.to_string(),
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            a.extend(extra.iter().map(|s| s.to_string()));
            a
        };
        let r = runs.to_string();
        let p = prompt_len.to_string();
        let n = GENERATED.to_string();
        let (pp, pp_peak) = llama(
            &bin,
            "llama-bench",
            &common(&["-r", &r, "-p", &p, "-n", "0", "-o", "jsonl"]),
        )?;
        let (tg, tg_peak) = llama(
            &bin,
            "llama-bench",
            &common(&["-r", &r, "-p", "0", "-n", &n, "-d", &p, "-o", "jsonl"]),
        )?;
        llama_peaks.extend([pp_peak, tg_peak]);

        let (pp_rate, tg_rate) = (field(&pp, "avg_ts"), field(&tg, "avg_ts"));
        let flop = costs.prompt_flop_per_token(prompt_len) / (flop_peak * 1e9);
        row(
            &format!("prompt of {prompt_len} tokens, 1 request: prompt tok/s"),
            d1.prompt_rate(),
            g1.prompt_rate(),
            pp_rate,
            Some((g1.prompt_rate() * flop, pp_rate * flop)),
        );
        // A decoded token's context, on average over the generated ones.
        let context = prompt_len + GENERATED / 2;
        let bytes =
            |per_value| costs.decode_bytes_per_token(context, per_value) / (read_peak * 1e9);
        row(
            &format!("decode after {prompt_len} tokens, 1 request: tok/s"),
            d1.decode_rate(),
            g1.decode_rate(),
            tg_rate,
            Some((g1.decode_rate() * bytes(our_kv_bytes), tg_rate * bytes(2.0))),
        );
        for &(concurrency, d, g) in &results[1..] {
            let ctx = ((prompt_len + GENERATED) * concurrency + 256).to_string();
            let npl = concurrency.to_string();
            let (batched, b_peak) = llama(
                &bin,
                "llama-batched-bench",
                &common(&[
                    "-c",
                    &ctx,
                    "-npp",
                    &p,
                    "-ntg",
                    &n,
                    "-npl",
                    &npl,
                    "--output-format",
                    "jsonl",
                ]),
            )?;
            llama_peaks.push(b_peak);
            // llama-batched-bench: `pl` sequences of `tg` tokens each in `t` seconds, prompts
            // included: the same measure as ARF's generated tokens over wall time.
            let batched_throughput = batched
                .iter()
                .find(|r| r["pl"].as_u64() == Some(concurrency as u64))
                .map(|r| {
                    r["pl"].as_f64().unwrap_or(f64::NAN) * r["tg"].as_f64().unwrap_or(f64::NAN)
                        / r["t"].as_f64().unwrap_or(f64::NAN)
                })
                .unwrap_or(f64::NAN);
            row(
                &format!(
                    "{concurrency} requests of {prompt_len} + {GENERATED} at once: generated tok/s of wall time"
                ),
                d.throughput(),
                g.throughput(),
                batched_throughput,
                None,
            );
        }
    }
    let llama_peak = llama_peaks.iter().cloned().fold(f64::NAN, f64::max);
    println!(
        "| peak RSS, MiB (ARF: the whole bench process; llama.cpp: its largest run) | {:.0} | | {llama_peak:.0} | {:.2}x | |",
        arf_common::process::peak_rss_mib(),
        arf_common::process::peak_rss_mib() / llama_peak
    );
    server.shutdown().await
}
