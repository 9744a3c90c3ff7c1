//! Measures the revision gate's fidelity guard on a labelled TweetSumm file (rows with a teacher
//! `summary` made by injecting errors into `references[0]`, such as
//! `shared/data/tweetsumm/teacher_train.jsonl`): the data its thresholds were chosen on. The
//! candidates are built by `analyzer_svc::fidelity::eval`.
//!
//! Prints pass rates per candidate kind, which check refused, and percentiles of the guard's
//! figures for the ideal fixes; `--show KIND` lists that kind's verdicts on stderr.

use std::collections::BTreeMap;
use std::path::PathBuf;

use analyzer_svc::fidelity::{Thresholds, eval};
use anyhow::{Context as _, bail};

fn percentiles(mut v: Vec<f64>) -> String {
    if v.is_empty() {
        return "-".into();
    }
    v.sort_by(f64::total_cmp);
    let at = |p: f64| v[((v.len() - 1) as f64 * p).round() as usize];
    format!(
        "min {:.2}  p1 {:.2}  p5 {:.2}  median {:.2}  p95 {:.2}  p99 {:.2}  max {:.2}",
        at(0.0),
        at(0.01),
        at(0.05),
        at(0.5),
        at(0.95),
        at(0.99),
        at(1.0)
    )
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (mut path, mut show) = (None, None::<String>);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--show" => show = Some(args.next().context("--show needs a candidate kind")?),
            "-h" | "--help" => {
                println!("usage: fidelity-eval <teacher_train.jsonl> [--show KIND]");
                return Ok(());
            }
            _ if path.is_none() => path = Some(PathBuf::from(a)),
            _ => bail!("unexpected argument `{a}`"),
        }
    }
    let Some(path) = path else {
        bail!("usage: fidelity-eval <teacher_train.jsonl> [--show KIND]")
    };
    let thresholds = Thresholds::default();
    let mut ideal: BTreeMap<&'static str, Vec<f64>> = BTreeMap::new();
    let tallies = eval::run(&path, &thresholds, |j| {
        if j.kind == "ideal_fix" {
            let f = &j.verdict.figures;
            for (name, x) in [
                ("content kept", f.content_kept),
                ("new word share", f.new_word_share),
                ("length ratio", f.length_ratio),
                ("copied share", f.candidate_copied_share),
            ] {
                ideal.entry(name).or_default().push(x);
            }
        }
        if show.as_deref() == Some(j.kind) {
            eprintln!(
                "--- {} line {} labels={:?} passed={}\n    original:  {}\n    candidate: {}",
                j.kind,
                j.line,
                j.record.labels,
                j.verdict.passed(),
                j.record.summary.as_deref().unwrap_or_default(),
                j.candidate
            );
            for r in &j.verdict.refusals {
                eprintln!("    refused: {}: {}", r.check, r.message);
            }
        }
    })?;
    println!("fidelity guard on {} ({thresholds:?})\n", path.display());
    println!("| candidate | n | passed | close | refused by |\n| --- | ---: | ---: | ---: | --- |");
    for (kind, t) in &tallies {
        let by: Vec<String> = t
            .refused_by
            .iter()
            .map(|(c, n)| format!("{c} {n}"))
            .collect();
        println!(
            "| {kind} | {} | {:.1}% | {:.1}% | {} |",
            t.n,
            100.0 * t.passed as f64 / t.n.max(1) as f64,
            100.0 * t.close as f64 / t.n.max(1) as f64,
            by.join(", ")
        );
    }
    println!("\nideal fixes:");
    for (name, v) in ideal {
        println!("  {name:<15} {}", percentiles(v));
    }
    Ok(())
}
