//! Does a kernel change alter what the model says? Greedy summaries of the first 20 TweetSumm
//! validation conversations, one request at a time (batched CPU generation is not
//! bit-reproducible), written as JSON lines; given the file of an earlier build, it also counts
//! the identical summaries, and scores both builds' summaries (ROUGE against the human
//! references) and the new against the old.
//!
//!   cargo bench --profile dev -p editor-svc --bench greedy_drift -- OUT.jsonl [BASELINE.jsonl]
//! `ARF_BENCH_MODEL` (default the cached SmolLM2 GGUF), `ARF_BENCH_CONVERSATIONS` (default 20).

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use editor_svc::{EditorConfig, load_editor};
use mistralrs::ModelDType;
use rougers::{RougeScorer, RougeType};

#[path = "support/summary_request.rs"]
mod summary_request;
use summary_request::summary_request;

const MAX_TOKENS: usize = 96;

#[derive(serde::Serialize, serde::Deserialize)]
struct Summary {
    id: String,
    text: String,
    references: Vec<String>,
}

fn model_path() -> anyhow::Result<PathBuf> {
    match std::env::var_os("ARF_BENCH_MODEL") {
        Some(path) => Ok(path.into()),
        None => arf_common::models::resolve("smollm2"),
    }
}

fn mean_f(scorer: &RougeScorer, pairs: &[(Vec<String>, &str)], kind: RougeType) -> f64 {
    let scores: Vec<f64> = pairs
        .iter()
        .filter_map(|(refs, text)| scorer.score_multi(refs, text))
        .map(|s| s.get(kind).map_or(0.0, |s| s.fmeasure))
        .collect();
    100.0 * scores.iter().sum::<f64>() / scores.len().max(1) as f64
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let out = args
        .first()
        .context("usage: greedy_drift OUT.jsonl [BASELINE.jsonl]")?;
    let count = std::env::var("ARF_BENCH_CONVERSATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let data =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/tweetsumm/valid.jsonl");
    let text = std::fs::read_to_string(&data).with_context(|| data.display().to_string())?;

    let gguf = model_path()?;
    let service = load_editor(&EditorConfig {
        dtype: ModelDType::F32,
        ..EditorConfig::new(&gguf)
    })
    .await?;
    let editor = service.editor().context("the editor did not load")?;
    let model = editor_svc::MistralBackend::of(editor.backend().as_ref())
        .expect("a mistral.rs editor")
        .model();

    let mut summaries = Vec::new();
    for line in text.lines().take(count) {
        let row: serde_json::Value = serde_json::from_str(line)?;
        let conversation: String = row["turns"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|t| {
                format!(
                    "{}: {}\n",
                    t["role"].as_str().unwrap_or(""),
                    t["text"].as_str().unwrap_or("")
                )
            })
            .collect();
        let request = summary_request(&conversation, MAX_TOKENS);
        let response = model
            .send_chat_request(editor_svc::backend::engine_request(request))
            .await?;
        let text = response.choices[0]
            .message
            .content
            .clone()
            .unwrap_or_default();
        summaries.push(Summary {
            id: row["id"].as_str().unwrap_or_default().into(),
            text,
            references: serde_json::from_value(row["references"].clone()).unwrap_or_default(),
        });
    }
    let mut file = String::new();
    for s in &summaries {
        file.push_str(&serde_json::to_string(s)?);
        file.push('\n');
    }
    std::fs::write(out, file)?;

    let scorer =
        RougeScorer::new(["rouge1", "rougeL"], true).map_err(|e| anyhow::anyhow!("{e}"))?;
    let against_refs: Vec<(Vec<String>, &str)> = summaries
        .iter()
        .map(|s| (s.references.clone(), s.text.as_str()))
        .collect();
    println!(
        "{} summaries of {} by {}: ROUGE-1 {:.2}, ROUGE-L {:.2} against the references",
        summaries.len(),
        data.display(),
        gguf.display(),
        mean_f(&scorer, &against_refs, RougeType::N(1)),
        mean_f(&scorer, &against_refs, RougeType::L)
    );
    if let Some(baseline) = args.get(1) {
        let old: Vec<Summary> = std::fs::read_to_string(baseline)?
            .lines()
            .map(serde_json::from_str)
            .collect::<Result<_, _>>()?;
        let identical = old
            .iter()
            .zip(&summaries)
            .filter(|(a, b)| a.id == b.id && a.text == b.text)
            .count();
        let old_refs: Vec<(Vec<String>, &str)> = old
            .iter()
            .map(|s| (s.references.clone(), s.text.as_str()))
            .collect();
        let new_vs_old: Vec<(Vec<String>, &str)> = old
            .iter()
            .zip(&summaries)
            .map(|(a, b)| (vec![a.text.clone()], b.text.as_str()))
            .collect();
        println!(
            "baseline {baseline}: ROUGE-1 {:.2}, ROUGE-L {:.2} against the references; {identical} of {} summaries identical; new vs baseline ROUGE-L {:.2}",
            mean_f(&scorer, &old_refs, RougeType::N(1)),
            mean_f(&scorer, &old_refs, RougeType::L),
            old.len().min(summaries.len()),
            mean_f(&scorer, &new_vs_old, RougeType::L),
        );
    }
    Ok(())
}
