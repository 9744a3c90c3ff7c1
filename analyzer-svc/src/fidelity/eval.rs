//! The guard measured on labelled TweetSumm rows (`fidelity-eval`, and the test that keeps its
//! figures): for every row with injected errors, the original is the injected summary (its
//! flagged spans from the rule detectors) and the candidates are the ideal fix (the human
//! reference the errors were injected into: must pass), the other references (reported), and
//! constructed degenerate candidates, one per kind the gate must refuse.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context as _;
use arf_common::dataset::{OnBadRow, Record, Turn, read_jsonl_file};

use super::{Check, Flagged, Revision, Thresholds, Verdict, check};
use crate::{AnalyzeOptions, Analyzer};

/// The constructed degenerate candidates for one original.
pub fn degenerate(original: &str, turns: &[Turn]) -> Vec<(&'static str, String)> {
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

/// Span edits a random-weight editor makes (issue 34: accepted before the per-part checks):
/// every flagged span of a summary that has some replaced by words from the tiny model's
/// vocabulary, by a function word alone, or glued to the next word. They must fail.
pub fn random_span_edits(original: &str, flagged: &[Flagged]) -> Vec<(&'static str, String)> {
    let spans: Vec<std::ops::Range<usize>> = flagged
        .iter()
        .filter(|f| f.end > f.start && f.end - f.start < original.trim().len())
        .map(|f| f.start..f.end)
        .collect();
    if spans.is_empty() {
        return Vec::new();
    }
    let with = |text: &str| {
        let edits: Vec<_> = spans
            .iter()
            .map(|r| (r.clone(), text.to_string()))
            .collect();
        arf_common::splice::splice(original, &edits)
    };
    let first = &spans[0];
    let glued = format!(
        "{}will aren{}",
        &original[..first.start],
        &original[first.end..].trim_start()
    );
    vec![
        ("span_random_words", with("will aren")),
        ("span_function_word", with("the")),
        ("span_glued", glued),
    ]
}

#[derive(Debug, Default)]
pub struct Tally {
    pub n: usize,
    pub passed: usize,
    pub close: usize,
    pub refused_by: BTreeMap<Check, usize>,
}

impl Tally {
    pub fn add(&mut self, v: &Verdict) {
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

impl Tally {
    /// Share of candidates that passed.
    pub fn pass_rate(&self) -> f64 {
        self.passed as f64 / self.n.max(1) as f64
    }
}

/// One candidate's verdict.
pub struct Judged<'a> {
    pub line: usize,
    pub record: &'a Record,
    pub kind: &'static str,
    pub candidate: &'a str,
    pub verdict: &'a Verdict,
}

/// Runs the guard over every row of `path` with injected errors; `each` sees every verdict.
/// Returns the tallies per candidate kind.
pub fn run(
    path: &Path,
    thresholds: &Thresholds,
    mut each: impl FnMut(Judged<'_>),
) -> anyhow::Result<BTreeMap<&'static str, Tally>> {
    let analyzer = Analyzer::default();
    let mut tallies: BTreeMap<&'static str, Tally> = BTreeMap::new();
    for row in read_jsonl_file(path, OnBadRow::Stop)? {
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
        candidates.extend(random_span_edits(original, &flagged));
        for (kind, candidate) in candidates {
            let verdict = check(
                &Revision {
                    turns,
                    original,
                    flagged: &flagged,
                    candidate: &candidate,
                },
                thresholds,
            );
            tallies.entry(kind).or_default().add(&verdict);
            each(Judged {
                line,
                record: &record,
                kind,
                candidate: &candidate,
                verdict: &verdict,
            });
        }
    }
    Ok(tallies)
}
