//! Scoring detectors against labelled summaries: per-category precision, recall, F1 and support,
//! and how many clean summaries get flagged at all. A summary counts as predicted for a category
//! when it has at least one finding of it.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use serde_json::{Value, json};

use crate::taxonomy::CategoryId;

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CategoryScore {
    pub true_positives: usize,
    pub false_positives: usize,
    pub false_negatives: usize,
}

impl CategoryScore {
    /// Summaries labelled with the category.
    pub fn support(&self) -> usize {
        self.true_positives + self.false_negatives
    }

    /// 0 when nothing was predicted (no credit for silence).
    pub fn precision(&self) -> f64 {
        ratio(
            self.true_positives,
            self.true_positives + self.false_positives,
        )
    }

    pub fn recall(&self) -> f64 {
        ratio(self.true_positives, self.support())
    }

    pub fn f1(&self) -> f64 {
        let (p, r) = (self.precision(), self.recall());
        if p + r == 0.0 {
            0.0
        } else {
            2.0 * p * r / (p + r)
        }
    }
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

/// Accumulates labelled rows.
#[derive(Debug, Clone, Default)]
pub struct Evaluation {
    pub categories: BTreeMap<String, CategoryScore>,
    pub rows: usize,
    pub clean: usize,
    pub clean_flagged: usize,
}

impl Evaluation {
    /// One summary: its gold labels (category ids) and the categories predicted for it.
    pub fn add(&mut self, labels: &[String], predicted: &BTreeSet<CategoryId>) {
        self.rows += 1;
        let gold: BTreeSet<&str> = labels.iter().map(String::as_str).collect();
        let pred: BTreeSet<&str> = predicted.iter().map(|c| c.as_str()).collect();
        if gold.is_empty() {
            self.clean += 1;
            if !pred.is_empty() {
                self.clean_flagged += 1;
            }
        }
        for c in gold.union(&pred) {
            let s = self.categories.entry(c.to_string()).or_default();
            match (gold.contains(c), pred.contains(c)) {
                (true, true) => s.true_positives += 1,
                (false, true) => s.false_positives += 1,
                (true, false) => s.false_negatives += 1,
                (false, false) => {}
            }
        }
    }

    pub fn clean_false_positive_rate(&self) -> f64 {
        ratio(self.clean_flagged, self.clean)
    }

    /// Categories in taxonomy order, then any label the taxonomy does not know.
    fn ordered(&self) -> Vec<(&str, &CategoryScore)> {
        let mut out: Vec<(&str, &CategoryScore)> = CategoryId::ALL
            .iter()
            .filter_map(|c| self.categories.get(c.as_str()).map(|s| (c.as_str(), s)))
            .collect();
        for (k, s) in &self.categories {
            if k.parse::<CategoryId>().is_err() {
                out.push((k, s));
            }
        }
        out
    }

    /// A readable table.
    pub fn table(&self) -> String {
        let mut t = String::new();
        let _ = writeln!(
            t,
            "{:<22} {:>9} {:>7} {:>6} {:>8} {:>5} {:>5} {:>5}",
            "category", "precision", "recall", "f1", "support", "tp", "fp", "fn"
        );
        let _ = writeln!(t, "{}", "-".repeat(76));
        for (c, s) in self.ordered() {
            let _ = writeln!(
                t,
                "{:<22} {:>9.3} {:>7.3} {:>6.3} {:>8} {:>5} {:>5} {:>5}",
                c,
                s.precision(),
                s.recall(),
                s.f1(),
                s.support(),
                s.true_positives,
                s.false_positives,
                s.false_negatives
            );
        }
        let _ = writeln!(t, "{}", "-".repeat(76));
        let _ = writeln!(
            t,
            "clean summaries flagged: {}/{} = {:.3}   (rows: {})",
            self.clean_flagged,
            self.clean,
            self.clean_false_positive_rate(),
            self.rows
        );
        t
    }

    /// `{"categories": {"<id>": {"precision", "recall", "f1", "support"}}, "clean_false_positive_rate"}`.
    pub fn json(&self) -> Value {
        let round = |x: f64| (x * 10_000.0).round() / 10_000.0;
        let categories: serde_json::Map<String, Value> = self
            .ordered()
            .into_iter()
            .map(|(c, s)| {
                (c.to_string(), json!({"precision": round(s.precision()), "recall": round(s.recall()), "f1": round(s.f1()), "support": s.support()}))
            })
            .collect();
        json!({"categories": categories, "clean_false_positive_rate": round(self.clean_false_positive_rate())})
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AnalyzeOptions, Analyzer};
    use arf_common::dataset::{OnBadRow, read_jsonl_file};

    #[test]
    fn rule_detectors_meet_the_targets_on_the_dev_benchmark() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../shared/data/tweetsumm/analyzer_bench_dev.jsonl");
        if !path.exists() {
            eprintln!("skipped: {} is not here", path.display());
            return;
        }
        let analyzer = Analyzer::default();
        let mut e = Evaluation::default();
        for row in read_jsonl_file(&path, OnBadRow::Stop).unwrap() {
            let (_, r) = row.unwrap();
            let a = analyzer
                .analyze(
                    &r.conversation,
                    r.summary.as_deref().unwrap(),
                    &AnalyzeOptions::default(),
                )
                .unwrap();
            e.add(&r.labels, &a.categories());
        }
        for (c, target) in [
            ("hallucinated_fact", 0.9),
            ("pii_exposure", 0.9),
            ("format_violation", 0.9),
            ("truncation", 0.9),
            ("unsupported_action", 0.75),
            ("omission", 0.75),
        ] {
            assert!(
                e.categories[c].f1() >= target,
                "{c}: {}\n{}",
                e.categories[c].f1(),
                e.table()
            );
        }
        assert!(e.clean_false_positive_rate() <= 0.10, "{}", e.table());
    }

    #[test]
    fn counts_precision_recall_and_clean_flags() {
        let mut e = Evaluation::default();
        let p = |cs: &[CategoryId]| cs.iter().copied().collect::<BTreeSet<_>>();
        e.add(&["truncation".into()], &p(&[CategoryId::Truncation]));
        e.add(
            &["truncation".into(), "omission".into()],
            &p(&[CategoryId::Repetition]),
        );
        e.add(&[], &p(&[CategoryId::Truncation]));
        e.add(&[], &p(&[]));
        let t = e.categories["truncation"];
        assert_eq!(
            (
                t.true_positives,
                t.false_positives,
                t.false_negatives,
                t.support()
            ),
            (1, 1, 1, 2)
        );
        assert_eq!((t.precision(), t.recall(), t.f1()), (0.5, 0.5, 0.5));
        assert_eq!(e.categories["omission"].precision(), 0.0);
        assert_eq!(e.clean_false_positive_rate(), 0.5);
        let j = e.json();
        assert_eq!(j["categories"]["truncation"]["support"], 2);
        assert_eq!(j["clean_false_positive_rate"], 0.5);
        assert!(e.table().contains("clean summaries flagged: 1/2"));
        // Taxonomy order: hallucinated_fact .. truncation, repetition last.
        let keys: Vec<_> = e.ordered().into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["omission", "truncation", "repetition"]);
    }
}
