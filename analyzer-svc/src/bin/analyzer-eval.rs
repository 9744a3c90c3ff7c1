//! Scores the rule detectors on a labelled benchmark (JSONL of `{id, channel, turns, summary,
//! labels}` rows, such as `shared/data/tweetsumm/analyzer_bench_dev.jsonl`).
//!
//! Prints a table, then, as its last line, one JSON object with the per-category scores and the
//! false-positive rate on clean summaries. `--show <category>` also lists that category's misses
//! and false alarms on stderr (for tuning).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Instant;

use analyzer_svc::eval::Evaluation;
use analyzer_svc::{AnalyzeOptions, Analyzer, CategoryId};
use anyhow::{Context as _, bail};
use arf_common::dataset::{OnBadRow, read_jsonl_file};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let mut path = None;
    let mut show: Option<String> = None;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--show" => show = Some(args.next().context("--show needs a category id")?),
            "-h" | "--help" => {
                println!("usage: analyzer-eval <benchmark.jsonl> [--show <category>]");
                return Ok(());
            }
            _ if path.is_none() => path = Some(PathBuf::from(a)),
            _ => bail!("unexpected argument `{a}`"),
        }
    }
    let Some(path) = path else {
        bail!("usage: analyzer-eval <benchmark.jsonl> [--show <category>]")
    };
    if let Some(c) = &show {
        c.parse::<CategoryId>()?;
    }

    let analyzer = Analyzer::default();
    let options = AnalyzeOptions::default();
    let mut eval = Evaluation::default();
    let mut elapsed = std::time::Duration::ZERO;
    for row in read_jsonl_file(&path, OnBadRow::Stop)? {
        let (line, record) = row?;
        let Some(summary) = record.summary.as_deref() else {
            bail!("{}:{line}: row has no summary", path.display())
        };
        let start = Instant::now();
        let analysis = analyzer
            .analyze(&record.conversation, summary, &options)
            .with_context(|| format!("{}:{line}", path.display()))?;
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
                    eprintln!("    finding: `{}` ({})", f.summary_span.text, f.explanation);
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
