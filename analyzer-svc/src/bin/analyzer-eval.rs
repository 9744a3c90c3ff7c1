//! Scores the rule detectors on a labelled benchmark (JSONL of `{id, channel, turns, summary,
//! labels}` rows, such as `shared/data/tweetsumm/analyzer_bench_dev.jsonl`).
//!
//! Prints a table, then, as its last line, one JSON object with the per-category scores and the
//! false-positive rate on clean summaries. `--show <category>` also lists that category's misses
//! and false alarms on stderr (for tuning).
//!
//! With `--conversations FILE` (repeatable), the benchmark is a labels file that holds no
//! conversation text (`{id, summary, labels, split}` rows, such as
//! `analyzer-svc/data/model-summaries/labels.jsonl`: TweetSumm may not be copied into the
//! repository): each row's conversation is looked up by id in those files. `--split NAME` keeps
//! the rows of one split (`dev` or `heldout`).

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::Instant;

use analyzer_svc::eval::Evaluation;
use analyzer_svc::{AnalyzeOptions, Analyzer, CategoryId};
use anyhow::{Context as _, bail};
use arf_common::dataset::{OnBadRow, Record, read_jsonl_file};

/// One row of a labels file: a summary to analyze, its gold labels, and where its conversation is.
#[derive(serde::Deserialize)]
struct LabelRow {
    id: String,
    summary: String,
    labels: Vec<String>,
    #[serde(default)]
    split: String,
}

/// The benchmark rows, each with where it came from (`file:line`).
fn rows(
    path: &Path,
    conversations: &[PathBuf],
    split: Option<&str>,
) -> anyhow::Result<Vec<(String, Record)>> {
    let mut out = Vec::new();
    if conversations.is_empty() {
        for row in read_jsonl_file(path, OnBadRow::Stop)? {
            let (line, record) = row?;
            out.push((format!("{}:{line}", path.display()), record));
        }
        return Ok(out);
    }
    let mut by_id: HashMap<String, Record> = HashMap::new();
    for file in conversations {
        for row in read_jsonl_file(file, OnBadRow::Stop)? {
            let (_, record) = row?;
            by_id.insert(record.conversation.id.clone(), record);
        }
    }
    let text = std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))?;
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let at = format!("{}:{}", path.display(), i + 1);
        let row: LabelRow = serde_json::from_str(line).with_context(|| at.clone())?;
        if split.is_some_and(|s| s != row.split) {
            continue;
        }
        let Some(base) = by_id.get(&row.id) else {
            bail!(
                "{at}: conversation {} is in none of the --conversations files",
                row.id
            )
        };
        let mut record = base.clone();
        record.summary = Some(row.summary);
        record.labels = row.labels;
        out.push((at, record));
    }
    Ok(out)
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let mut path = None;
    let mut show: Option<String> = None;
    let mut conversations = Vec::new();
    let mut split = None;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--show" => show = Some(args.next().context("--show needs a category id")?),
            "--conversations" => conversations.push(PathBuf::from(
                args.next().context("--conversations needs a file")?,
            )),
            "--split" => split = Some(args.next().context("--split needs a name")?),
            "-h" | "--help" => {
                println!(
                    "usage: analyzer-eval <benchmark.jsonl> [--show <category>] [--conversations FILE]... [--split NAME]"
                );
                return Ok(());
            }
            _ if path.is_none() => path = Some(PathBuf::from(a)),
            _ => bail!("unexpected argument `{a}`"),
        }
    }
    let Some(path) = path else {
        bail!(
            "usage: analyzer-eval <benchmark.jsonl> [--show <category>] [--conversations FILE]... [--split NAME]"
        )
    };
    if let Some(c) = &show {
        c.parse::<CategoryId>()?;
    }

    let analyzer = Analyzer::default();
    let options = AnalyzeOptions::default();
    let mut eval = Evaluation::default();
    let mut elapsed = std::time::Duration::ZERO;
    for (at, record) in rows(&path, &conversations, split.as_deref())? {
        let Some(summary) = record.summary.as_deref() else {
            bail!("{at}: row has no summary")
        };
        let start = Instant::now();
        let analysis = analyzer
            .analyze(&record.conversation, summary, &options)
            .with_context(|| at.clone())?;
        elapsed += start.elapsed();
        let predicted: BTreeSet<CategoryId> = analysis.categories();
        if let Some(c) = &show {
            let gold = record.labels.iter().any(|l| l == c);
            let pred = predicted.iter().any(|p| p.as_str() == c);
            if gold != pred {
                eprintln!(
                    "--- {} {} labels={:?} id={}",
                    if gold { "MISS" } else { "FALSE ALARM" },
                    c,
                    record.labels,
                    record.conversation.id
                );
                eprintln!("    summary: {summary}");
                for f in analysis
                    .findings
                    .iter()
                    .filter(|f| f.category.as_str() == c)
                {
                    eprintln!(
                        "    finding: `{}` ({}: {})",
                        f.summary_span.text, f.detector, f.explanation
                    );
                }
            }
        }
        eval.add(&record.labels, &predicted);
    }
    println!(
        "rule detectors on {} ({} summaries)\n",
        path.display(),
        eval.rows
    );
    print!("{}", eval.table());
    let rate = eval.rows as f64 / elapsed.as_secs_f64().max(1e-9);
    println!(
        "analysis time: {:.1} ms in all, {:.0} summaries/s on one thread",
        elapsed.as_secs_f64() * 1e3,
        rate
    );
    println!("{}", eval.json());
    Ok(())
}
