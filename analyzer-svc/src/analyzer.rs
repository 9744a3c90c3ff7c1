//! The entry point: validate the input, run the selected detectors, merge their findings.

use std::collections::BTreeSet;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::LazyLock;

use arf_common::dataset::Conversation;
use serde::Serialize;

use crate::detectors::{self, Context, Detector};
use crate::finding::Finding;
use crate::judge;
use crate::taxonomy::{CategoryId, TAXONOMY_VERSION};

/// Size limits on one request; beyond them the input is rejected, not truncated (a truncated
/// conversation would produce findings about text the caller never sees analyzed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_turns: usize,
    pub max_turn_bytes: usize,
    pub max_conversation_bytes: usize,
    pub max_summary_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_turns: 1_000,
            max_turn_bytes: 32 * 1024,
            max_conversation_bytes: 256 * 1024,
            max_summary_bytes: 16 * 1024,
        }
    }
}

/// Per-request configuration.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AnalyzeOptions {
    /// Detector names to run (rule names from [`Analyzer::detector_names`], or the model-judged
    /// names in [`judge::JUDGE_DETECTORS`], which [`Analyzer::analyze`] accepts but leaves to the
    /// caller to run). Empty: every rule detector.
    pub detectors: Vec<String>,
    /// Category ids to report. Empty: all.
    pub categories: Vec<String>,
}

/// Why a request was refused. Every variant names the offending field, for INVALID_ARGUMENT.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnalyzeError {
    #[error("{field}: {message}")]
    InvalidArgument { field: String, message: String },
    #[error("{field}: unknown detector `{name}`")]
    UnknownDetector { field: String, name: String },
    #[error("{field}: unknown category id `{id}`")]
    UnknownCategory { field: String, id: String },
    /// A detector failed on this input (a bug); the others' findings are not returned either,
    /// so a caller never mistakes a partial analysis for a clean one.
    #[error("detector `{detector}` failed on this input")]
    DetectorFailed { detector: String },
}

impl AnalyzeError {
    /// The request field the error is about (empty for an internal failure).
    pub fn field(&self) -> &str {
        match self {
            AnalyzeError::InvalidArgument { field, .. }
            | AnalyzeError::UnknownDetector { field, .. }
            | AnalyzeError::UnknownCategory { field, .. } => field,
            AnalyzeError::DetectorFailed { .. } => "",
        }
    }

    fn invalid(field: impl Into<String>, message: impl Into<String>) -> AnalyzeError {
        AnalyzeError::InvalidArgument {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// The findings for one summary.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Analysis {
    pub taxonomy_version: &'static str,
    /// Merged and de-duplicated, ordered by position in the summary.
    pub findings: Vec<Finding>,
}

impl Analysis {
    /// The distinct categories found.
    pub fn categories(&self) -> BTreeSet<CategoryId> {
        self.findings.iter().map(|f| f.category).collect()
    }

    pub fn is_clean(&self) -> bool {
        self.findings.is_empty()
    }
}

/// Runs rule detectors. Build once and share: it holds no per-request state.
pub struct Analyzer {
    detectors: Vec<Box<dyn Detector>>,
    limits: Limits,
}

impl Default for Analyzer {
    fn default() -> Self {
        Analyzer::new(Limits::default())
    }
}

impl Analyzer {
    /// An analyzer with every rule detector.
    pub fn new(limits: Limits) -> Analyzer {
        Analyzer {
            detectors: detectors::rule_detectors(),
            limits,
        }
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Every rule detector's name with the categories it can raise, in run order.
    pub fn detector_catalog(&self) -> Vec<(&'static str, &'static [CategoryId])> {
        self.detectors
            .iter()
            .map(|d| (d.name(), d.categories()))
            .collect()
    }

    /// Names of the rule detectors, in run order.
    pub fn detector_names(&self) -> Vec<&'static str> {
        self.detectors.iter().map(|d| d.name()).collect()
    }

    /// Checks options and input, runs the selected rule detectors, merges their findings.
    pub fn analyze(
        &self,
        conversation: &Conversation,
        summary: &str,
        options: &AnalyzeOptions,
    ) -> Result<Analysis, AnalyzeError> {
        let selected = self.select(options)?;
        let categories = categories(options)?;
        self.validate(conversation, summary)?;
        let cx = Context::new(&conversation.turns, summary);
        let mut findings = Vec::new();
        for d in selected {
            // Last line of defence: detectors are written not to panic, but a bug in one must
            // become an error for this request, never a crashed stream.
            let mut out = Vec::new();
            catch_unwind(AssertUnwindSafe(|| d.detect(&cx, &mut out))).map_err(|_| {
                AnalyzeError::DetectorFailed {
                    detector: d.name().to_string(),
                }
            })?;
            findings.append(&mut out);
        }
        findings.retain(|f| categories.is_empty() || categories.contains(&f.category));
        Ok(Analysis {
            taxonomy_version: TAXONOMY_VERSION,
            findings: merge_findings(findings),
        })
    }

    fn select(&self, options: &AnalyzeOptions) -> Result<Vec<&dyn Detector>, AnalyzeError> {
        if options.detectors.is_empty() {
            return Ok(self.detectors.iter().map(|d| d.as_ref()).collect());
        }
        let mut selected = Vec::new();
        for (i, name) in options.detectors.iter().enumerate() {
            match self.detectors.iter().find(|d| d.name() == name) {
                Some(d) if !selected.iter().any(|s: &&dyn Detector| s.name() == name) => {
                    selected.push(d.as_ref())
                }
                Some(_) => {}
                None if judge::JUDGE_DETECTORS.contains(&name.as_str()) => {}
                None => {
                    return Err(AnalyzeError::UnknownDetector {
                        field: format!("options.detectors[{i}]"),
                        name: name.clone(),
                    });
                }
            }
        }
        Ok(selected)
    }

    fn validate(&self, conversation: &Conversation, summary: &str) -> Result<(), AnalyzeError> {
        let l = &self.limits;
        if summary.trim().is_empty() {
            return Err(AnalyzeError::invalid("summary", "must not be empty"));
        }
        if summary.len() > l.max_summary_bytes {
            return Err(AnalyzeError::invalid(
                "summary",
                format!(
                    "{} bytes is over the limit of {}",
                    summary.len(),
                    l.max_summary_bytes
                ),
            ));
        }
        let turns = &conversation.turns;
        if turns.is_empty() {
            return Err(AnalyzeError::invalid(
                "conversation.turns",
                "a conversation needs at least one turn",
            ));
        }
        if turns.len() > l.max_turns {
            return Err(AnalyzeError::invalid(
                "conversation.turns",
                format!("{} turns is over the limit of {}", turns.len(), l.max_turns),
            ));
        }
        let mut total = 0;
        for (i, t) in turns.iter().enumerate() {
            if t.text.len() > l.max_turn_bytes {
                return Err(AnalyzeError::invalid(
                    format!("conversation.turns[{i}].text"),
                    format!(
                        "{} bytes is over the limit of {}",
                        t.text.len(),
                        l.max_turn_bytes
                    ),
                ));
            }
            total += t.text.len();
        }
        if total > l.max_conversation_bytes {
            return Err(AnalyzeError::invalid(
                "conversation.turns",
                format!(
                    "{total} bytes of text is over the limit of {}",
                    l.max_conversation_bytes
                ),
            ));
        }
        // Individual empty turns are harmless (a deleted message); a conversation with no text is not.
        if turns.iter().all(|t| t.text.trim().is_empty()) {
            return Err(AnalyzeError::invalid(
                "conversation.turns",
                "every turn is empty",
            ));
        }
        Ok(())
    }
}

/// Severity-weighted count of findings: the number a revision must lower to be accepted.
/// Weights double per level, so one critical error outweighs several low ones.
pub fn error_score(findings: &[Finding]) -> f64 {
    findings
        .iter()
        .map(|f| match f.severity {
            crate::taxonomy::Severity::Low => 1.0,
            crate::taxonomy::Severity::Medium => 2.0,
            crate::taxonomy::Severity::High => 4.0,
            crate::taxonomy::Severity::Critical => 8.0,
        })
        .sum()
}

/// Analyzes with a process-wide [`Analyzer`] holding every rule detector and the default limits.
pub fn analyze(
    conversation: &Conversation,
    summary: &str,
    options: &AnalyzeOptions,
) -> Result<Analysis, AnalyzeError> {
    static DEFAULT: LazyLock<Analyzer> = LazyLock::new(Analyzer::default);
    DEFAULT.analyze(conversation, summary, options)
}

fn categories(options: &AnalyzeOptions) -> Result<Vec<CategoryId>, AnalyzeError> {
    options
        .categories
        .iter()
        .enumerate()
        .map(|(i, id)| {
            id.parse().map_err(|_| AnalyzeError::UnknownCategory {
                field: format!("options.categories[{i}]"),
                id: id.clone(),
            })
        })
        .collect()
}

/// Merges findings from any detectors (rules and model judges alike):
/// - one finding per category and stretch of overlapping spans: the most confident stays;
/// - a hallucinated_fact overlapping a pii_exposure or unsupported_action span is dropped: the
///   number is part of that error (a phone number, the "$25" of an invented credit), and
///   removing the data or the invented action fixes both.
///
/// The result is ordered by position in the summary, then category. O(n log n): a hostile
/// summary with thousands of findings must not make merging quadratic.
pub fn merge_findings(mut findings: Vec<Finding>) -> Vec<Finding> {
    findings.sort_by_key(|f| (f.category, f.summary_span.start, f.summary_span.end));
    let mut kept: Vec<Finding> = Vec::with_capacity(findings.len());
    // End of the current overlapping stretch of the current category.
    let mut stretch_end = 0;
    for f in findings {
        match kept.last_mut() {
            Some(last)
                if last.category == f.category
                    && f.summary_span.start < stretch_end.max(last.summary_span.start + 1) =>
            {
                stretch_end = stretch_end.max(f.summary_span.end);
                if f.confidence > last.confidence {
                    *last = f;
                }
            }
            _ => {
                stretch_end = f.summary_span.end;
                kept.push(f);
            }
        }
    }
    let mut covers: Vec<(usize, usize)> = kept
        .iter()
        .filter(|k| {
            matches!(
                k.category,
                CategoryId::PiiExposure | CategoryId::UnsupportedAction
            )
        })
        .map(|k| (k.summary_span.start, k.summary_span.end))
        .collect();
    covers.sort_unstable();
    // Longest end among covers starting at or before each index, for a binary-searched overlap test.
    let mut max_end = Vec::with_capacity(covers.len());
    for &(_, e) in &covers {
        max_end.push(max_end.last().map_or(e, |&m: &usize| m.max(e)));
    }
    kept.retain(|f| {
        if f.category != CategoryId::HallucinatedFact {
            return true;
        }
        let (start, end) = (
            f.summary_span.start,
            f.summary_span.end.max(f.summary_span.start + 1),
        );
        let n = covers.partition_point(|&(s, _)| s < end);
        !(n > 0 && max_end[n - 1] > start)
    });
    kept.sort_by_key(|a| (a.summary_span.start, a.category));
    kept
}

#[cfg(test)]
mod tests {
    use super::*;
    use arf_common::dataset::{Role, Turn};

    fn conv(turns: &[(Role, &str)]) -> Conversation {
        Conversation {
            id: "c1".into(),
            channel: "chat".into(),
            turns: turns
                .iter()
                .map(|(r, t)| Turn {
                    role: *r,
                    text: t.to_string(),
                })
                .collect(),
            metadata: Default::default(),
        }
    }

    fn basic() -> Conversation {
        conv(&[
            (Role::Customer, "My order 1234 is late, I paid $40"),
            (Role::Agent, "Sorry, please DM us and we'll check"),
        ])
    }

    #[test]
    fn finds_and_merges_across_detectors() {
        let a = Analyzer::default();
        let s = "Sure! Here is a summary: Customer's order 1234 is late (contact: +1 (415) 555-0134). Agent issued a $25 credit.";
        let out = a.analyze(&basic(), s, &AnalyzeOptions::default()).unwrap();
        let cats: Vec<_> = out.categories().into_iter().collect();
        assert_eq!(
            cats,
            [
                CategoryId::UnsupportedAction,
                CategoryId::PiiExposure,
                CategoryId::FormatViolation
            ]
        );
        // "$25" is inside the invented credit, the phone digits inside the PII span: no hallucinated_fact.
        assert!(
            out.findings
                .windows(2)
                .all(|w| w[0].summary_span.start <= w[1].summary_span.start)
        );
        let clean = a
            .analyze(
                &basic(),
                "Customer's order 1234 is late. Agent asks for a DM to check.",
                &AnalyzeOptions::default(),
            )
            .unwrap();
        assert!(clean.is_clean(), "{:?}", clean.findings);
    }

    #[test]
    fn one_analyzer_serves_many_threads_with_the_same_findings() {
        // An invented refund: no agent turn mentions one.
        let s = "Customer's order 1234 is late. Agent issued a full refund.";
        let o = AnalyzeOptions::default();
        let alone = analyze(&basic(), s, &o).unwrap();
        assert!(
            alone.categories().contains(&CategoryId::UnsupportedAction),
            "{:?}",
            alone.findings
        );
        let shared = std::sync::Arc::new(Analyzer::default());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (a, o) = (shared.clone(), o.clone());
                std::thread::spawn(move || a.analyze(&basic(), s, &o).unwrap())
            })
            .collect();
        for t in threads {
            assert_eq!(t.join().unwrap(), alone);
        }
    }

    #[test]
    fn options_select_detectors_and_categories_and_name_unknown_ones() {
        let a = Analyzer::default();
        let s = "Sure! Customer's order 9999 is late. Agent asks for a DM.";
        let only_pii = AnalyzeOptions {
            detectors: vec!["pii".into()],
            ..Default::default()
        };
        // The preamble ("Sure!") and the unsupported order number are other detectors' findings.
        assert!(
            !a.analyze(&basic(), s, &AnalyzeOptions::default())
                .unwrap()
                .is_clean()
        );
        let out = a.analyze(&basic(), s, &only_pii).unwrap();
        assert!(out.is_clean(), "{:?}", out.findings);
        let only_facts = AnalyzeOptions {
            categories: vec!["hallucinated_fact".into()],
            ..Default::default()
        };
        assert_eq!(
            a.analyze(&basic(), s, &only_facts)
                .unwrap()
                .categories()
                .into_iter()
                .collect::<Vec<_>>(),
            [CategoryId::HallucinatedFact]
        );
        let bad = AnalyzeOptions {
            detectors: vec!["pii".into(), "magic".into()],
            ..Default::default()
        };
        let err = a.analyze(&basic(), s, &bad).unwrap_err();
        assert_eq!(
            (err.field(), err.to_string().contains("`magic`")),
            ("options.detectors[1]", true)
        );
        let bad = AnalyzeOptions {
            categories: vec!["nope".into()],
            ..Default::default()
        };
        assert_eq!(
            a.analyze(&basic(), s, &bad).unwrap_err().field(),
            "options.categories[0]"
        );
        let judged = AnalyzeOptions {
            detectors: vec![judge::JUDGE_DETECTORS[0].into()],
            ..Default::default()
        };
        // A model judge named alone runs no rule detector here (the service runs the judge).
        assert!(a.analyze(&basic(), s, &judged).unwrap().is_clean());
    }

    #[test]
    fn invalid_input_names_the_field() {
        let a = Analyzer::new(Limits {
            max_summary_bytes: 100,
            max_turn_bytes: 50,
            ..Limits::default()
        });
        let o = AnalyzeOptions::default();
        assert_eq!(
            a.analyze(&basic(), "  \n", &o).unwrap_err().field(),
            "summary"
        );
        assert_eq!(
            a.analyze(&basic(), &"x".repeat(101), &o)
                .unwrap_err()
                .field(),
            "summary"
        );
        assert_eq!(
            a.analyze(&conv(&[]), "ok summary", &o).unwrap_err().field(),
            "conversation.turns"
        );
        assert_eq!(
            a.analyze(&conv(&[(Role::Agent, " "), (Role::Customer, "")]), "ok", &o)
                .unwrap_err()
                .field(),
            "conversation.turns"
        );
        let long = "y".repeat(51);
        assert_eq!(
            a.analyze(
                &conv(&[(Role::Customer, "hi"), (Role::Agent, &long)]),
                "ok",
                &o
            )
            .unwrap_err()
            .field(),
            "conversation.turns[1].text"
        );
    }

    #[test]
    fn never_panics_on_odd_input() {
        let a = Analyzer::new(Limits {
            max_summary_bytes: 1 << 20,
            max_turn_bytes: 1 << 20,
            max_conversation_bytes: 4 << 20,
            ..Limits::default()
        });
        let o = AnalyzeOptions::default();
        let odd = [
            "é",
            "😀😀😀",
            "\u{0}\u{1}\u{7f}",
            "İstanbul İİİ $",
            "a\u{301}\u{301}\u{301}.",
            "\u{202e}reversed\u{202c}",
            "\n\n\n- \n- ",
            "$",
            "$$$1,,,2...3",
            "#",
            "@",
            "1",
            "card ending",
            "+(((",
            "１２３４５６７８９０",
            "٣٤٥٦٧٨٩٠١٢",
            &*"ß".repeat(3000).leak(),
            "Agent escalated",
            "at all",
            "Customer. Agent. .",
            "a@b.c",
            "\t",
            "Sure!",
            "- ",
            "…",
            "(contact: ",
        ];
        let big = "word 123 $4.5 ".repeat(20_000);
        let turns_sets = [
            conv(&[(Role::Customer, ""), (Role::Agent, "ok 😀 123")]),
            conv(&[(Role::System, "İ"), (Role::Bot, "é 5 days")]),
            conv(&[(Role::Customer, &big)]),
            conv(&(0..500).map(|_| (Role::Agent, "ß 1")).collect::<Vec<_>>()),
        ];
        for c in &turns_sets {
            for s in odd.iter().copied().chain([big.as_str()]) {
                if let Ok(out) = a.analyze(c, s, &o) {
                    for f in &out.findings {
                        assert_eq!(
                            &s[f.summary_span.start..f.summary_span.end],
                            f.summary_span.text
                        );
                        assert!((0.0..=1.0).contains(&f.confidence));
                    }
                }
            }
        }
    }

    #[test]
    fn hostile_inputs_at_the_default_limits_finish() {
        // Inputs shaped to hit every per-match loop: repeated anchored numbers, action claims,
        // copied runs and negations, at the largest size the default limits accept.
        let l = Limits::default();
        let a = Analyzer::new(l);
        let unit =
            "Agent issued a refund at Terminal 3 on Friday, will not help at all, 07700 900123. ";
        let summary: String = unit.repeat(l.max_summary_bytes / unit.len());
        let turn =
            "3 3 terminal refund will help at all Agent issued a refund at Terminal 3 on Friday "
                .repeat(300);
        let turns: Vec<(Role, &str)> = (0..l.max_conversation_bytes / turn.len())
            .map(|i| {
                (
                    if i % 2 == 0 {
                        Role::Customer
                    } else {
                        Role::Agent
                    },
                    turn.as_str(),
                )
            })
            .collect();
        let started = std::time::Instant::now();
        let out = a
            .analyze(&conv(&turns), &summary, &AnalyzeOptions::default())
            .unwrap();
        assert!(!out.findings.is_empty());
        // Generous bound (unoptimized test builds on a loaded machine): what it guards against is
        // quadratic blow-ups, which take minutes here.
        assert!(
            started.elapsed().as_secs() < 20,
            "took {:?}",
            started.elapsed()
        );
    }

    #[test]
    fn merge_keeps_the_most_confident_duplicate() {
        use crate::finding::{Evidence, TextSpan};
        let s = "abcdefghij";
        let f = |c, a, b, conf| {
            Finding::new(c, "t", TextSpan::of(s, a, b), Evidence::NotFound, conf, "")
        };
        let merged = merge_findings(vec![
            f(CategoryId::Truncation, 0, 4, 0.5),
            f(CategoryId::Truncation, 2, 6, 0.9),
            f(CategoryId::Truncation, 7, 9, 0.4),
            f(CategoryId::Repetition, 0, 4, 0.3),
            f(CategoryId::HallucinatedFact, 3, 5, 0.99),
            f(CategoryId::PiiExposure, 1, 8, 0.2),
        ]);
        let got: Vec<_> = merged
            .iter()
            .map(|f| (f.category, f.summary_span.start, f.confidence))
            .collect();
        assert_eq!(
            got,
            [
                (CategoryId::Repetition, 0, 0.3),
                (CategoryId::PiiExposure, 1, 0.2),
                (CategoryId::Truncation, 2, 0.9),
                (CategoryId::Truncation, 7, 0.4)
            ]
        );
    }
}
