//! Measures the revision gate's fidelity guard on a labelled TweetSumm file (rows with a teacher
//! `summary` made by injecting errors into `references[0]`, such as
//! `shared/data/tweetsumm/teacher_train.jsonl`): the data its thresholds were chosen on.
//!
//! For every row with injected errors, the original is the injected summary (its flagged spans
//! from the rule detectors) and the candidates are:
//! - the ideal fix: the human reference the errors were injected into (should pass);
//! - the other human references: independent summaries, not revisions (reported, not a target);
//! - constructed degenerate candidates, one per kind the gate must refuse (should all fail).
//!
//! Prints pass rates per candidate kind, which check refused, and percentiles of the guard's
//! figures for the ideal fixes; `--show KIND` lists that kind's verdicts on stderr.

use std::collections::BTreeMap;
use std::path::PathBuf;

use analyzer_svc::fidelity::{self, Check, Flagged, Revision, Thresholds, Verdict};
use analyzer_svc::{AnalyzeOptions, Analyzer};
use anyhow::{Context as _, bail};
use arf_common::dataset::{OnBadRow, Turn, read_jsonl_file};

/// The constructed degenerate candidates for one original.
fn degenerate(original: &str, turns: &[Turn]) -> Vec<(&'static str, String)> {
    let words: Vec<&str> = original.split_whitespace().collect();
    let first_sentence = original
        .split_inclusive(['.', '!', '?'])
        .next()
        .unwrap_or(original)
        .trim()
        .to_string();
    let transcript: Vec<String> = turns
        .iter()
        .take(4)
        .map(|t| format!("{}: {}", t.role.as_str(), t.text))
        .collect();
    let pasted: Vec<&str> = turns.iter().take(4).map(|t| t.text.as_str()).collect();
    vec![
        ("markup", "{{#1}}".to_string()),
        (
            "five_words",
            words.iter().take(5).copied().collect::<Vec<_>>().join(" "),
        ),
        ("first_third", words[..words.len() / 3].join(" ")),
        (
            "repeated_sentence",
            format!("{first_sentence} {first_sentence} {first_sentence}"),
        ),
        (
            "invented_refund",
            format!(
                "{original} The agent also issued a 100% refund of $240 and a Zorblax gift card."
            ),
        ),
        ("transcript_labelled", transcript.join("\n")),
        ("transcript_pasted", pasted.join(" ")),
    ]
}

#[derive(Default)]
struct Tally {
    n: usize,
    passed: usize,
    close: usize,
    refused_by: BTreeMap<Check, usize>,
}

impl Tally {
    fn add(&mut self, v: &Verdict) {
        self.n += 1;
        self.passed += usize::from(v.passed());
        self.close += usize::from(v.close);
        let mut checks: Vec<Check> = v.refusals.iter().map(|r| r.check).collect();
        checks.dedup();
        for c in checks {
            *self.refused_by.entry(c).or_default() += 1;
        }
    }
}

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
    let analyzer = Analyzer::default();
    let thresholds = Thresholds::default();
    let mut tallies: BTreeMap<&'static str, Tally> = BTreeMap::new();
    let mut ideal: BTreeMap<&'static str, Vec<f64>> = BTreeMap::new();
    for row in read_jsonl_file(&path, OnBadRow::Stop)? {
        let (line, record) = row?;
        let (Some(original), Some(ideal_fix)) = (&record.summary, record.references.first()) else {
            continue;
        };
        if record.labels.is_empty() || original == ideal_fix {
            continue;
        }
        let turns = &record.conversation.turns;
        let analysis = analyzer
            .analyze(&record.conversation, original, &AnalyzeOptions::default())
            .with_context(|| format!("{}:{line}", path.display()))?;
        let flagged: Vec<Flagged> = analysis
            .findings
            .iter()
            .map(|f| Flagged {
                start: f.summary_span.start,
                end: f.summary_span.end,
                category: f.category,
            })
            .collect();
        let mut candidates: Vec<(&'static str, String)> = vec![("ideal_fix", ideal_fix.clone())];
        candidates.extend(
            record.references[1..]
                .iter()
                .map(|r| ("other_reference", r.clone())),
        );
        candidates.extend(degenerate(original, turns));
        for (kind, candidate) in candidates {
            let v = fidelity::check(
                &Revision {
                    turns,
                    original,
                    flagged: &flagged,
                    candidate: &candidate,
                },
                &thresholds,
            );
            if kind == "ideal_fix" {
                let f = &v.figures;
                for (name, x) in [
                    ("content kept", f.content_kept),
                    ("new word share", f.new_word_share),
                    ("length ratio", f.length_ratio),
                    ("copied share", f.candidate_copied_share),
                ] {
                    ideal.entry(name).or_default().push(x);
                }
            }
            if show.as_deref() == Some(kind) {
                eprintln!(
                    "--- {} line {line} labels={:?} passed={}\n    original:  {original}\n    candidate: {candidate}",
                    kind,
                    record.labels,
                    v.passed()
                );
                for r in &v.refusals {
                    eprintln!("    refused: {}: {}", r.check, r.message);
                }
            }
            tallies.entry(kind).or_default().add(&v);
        }
    }
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
