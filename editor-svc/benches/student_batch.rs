//! Evaluate's work for one model, alone: a hosted student is an f32 model (merged LoRA; the
//! zero-shot base is a GGUF's f32 copy), and Evaluate sends it 16 held-out conversations at once
//! for greedy summaries of at most 96 tokens. This bench does that through the editor's engine
//! (the 16 first TweetSumm validation conversations), then the same 16 one at a time, and prints
//! the seconds per summary of each, the generated tokens per second and the peak RSS. It is the
//! fast loop for the engine's f32 path; `arf_quality` measures the whole Evaluate stage.
//!
//!   bash scripts/fetch-model.sh smollm2
//!   cargo bench --profile dev -p editor-svc --bench student_batch
//! `ARF_BENCH_MODEL`: a Hugging Face directory (default: an f32 copy of the cached SmolLM2 GGUF,
//! written once under the temp dir, as Evaluate writes one).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context as _;
use editor_svc::{EditorConfig, load_editor};
use futures::future::try_join_all;
use mistralrs::{Model, ModelDType};

#[path = "support/summary_request.rs"]
mod summary_request;
#[path = "support/tweetsumm.rs"]
mod tweetsumm;
use summary_request::summary_request;

/// Evaluate's batch per model and its summaries' budget.
const AT_ONCE: usize = 16;
const MAX_TOKENS: usize = 96;

/// `ARF_BENCH_MODEL`, or the f32 copy of the cached SmolLM2 GGUF (written on first use).
fn model_dir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("ARF_BENCH_MODEL") {
        return Ok(dir.into());
    }
    let gguf = arf_common::models::resolve("smollm2")?;
    let dir = std::env::temp_dir().join("arf-student-batch-smollm2.f32");
    if !dir.join("config.json").is_file() {
        let partial = dir.with_extension("partial");
        let _ = std::fs::remove_dir_all(&partial);
        trainer_svc::model::gguf::write_dequantized(&gguf, &partial)?;
        std::fs::rename(&partial, &dir)?;
    }
    Ok(dir)
}

/// One greedy summary; the number of tokens it generated.
async fn summarize(model: &Model, turns: &[String]) -> anyhow::Result<usize> {
    let request = summary_request(&turns.join("\n"), MAX_TOKENS);
    let response = model
        .send_chat_request(editor_svc::backend::engine_request(request))
        .await?;
    Ok(response.usage.completion_tokens)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let dir = model_dir()?;
    let conversations = tweetsumm::conversations("valid.jsonl")?;
    let batch = &conversations[..AT_ONCE.min(conversations.len())];
    let service = load_editor(&EditorConfig {
        dtype: ModelDType::F32,
        max_seqs: AT_ONCE,
        ..EditorConfig::new(&dir)
    })
    .await?;
    let editor = service.editor().context("the editor did not load")?;
    let model = editor_svc::MistralBackend::of(editor.backend().as_ref())
        .expect("a mistral.rs editor")
        .model();
    summarize(model, &batch[0]).await?; // warm-up

    let started = Instant::now();
    let tokens: usize = try_join_all(batch.iter().map(|turns| summarize(model, turns)))
        .await?
        .into_iter()
        .sum();
    let together = started.elapsed().as_secs_f64();

    let started = Instant::now();
    let mut alone_tokens = 0;
    for turns in batch {
        alone_tokens += summarize(model, turns).await?;
    }
    let alone = started.elapsed().as_secs_f64();

    let n = batch.len() as f64;
    println!(
        "model: {} (f32); CPU: {}",
        dir.display(),
        arf_common::machine_peak::cpu_line()
    );
    println!(
        "| {} summaries of <= {MAX_TOKENS} tokens | s per summary | generated tok/s |",
        batch.len()
    );
    println!("| --- | ---: | ---: |");
    println!(
        "| {AT_ONCE} at once (Evaluate's batch) | {:.2} | {:.1} |",
        together / n,
        tokens as f64 / together
    );
    println!(
        "| one at a time | {:.2} | {:.1} |",
        alone / n,
        alone_tokens as f64 / alone
    );
    println!("peak RSS {:.0} MiB", arf_common::process::peak_rss_mib());
    Ok(())
}
