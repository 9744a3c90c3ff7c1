//! Did the revision gate accept better summaries? Measured in every run, because a gate that
//! lets worse summaries through makes the student worse while every count looks healthy.
//!
//! Where the data has human references: the mean ROUGE-L of the accepted revisions against them,
//! beside the mean ROUGE-L of the teacher summaries they replaced. Where it has none: the share of
//! accepted revisions the fidelity guard scored as close to their original. And how many
//! distinct pairs each student learned from, since rejected pairs may be left out.

use std::fmt::Write as _;

use arf_proto::v1 as pb;
use rougers::{RougeScorer, RougeType};

use crate::store::{ItemRecord, RevisionOutcome, Split, Unimproved};

/// ROUGE-L F-measure of `summary` against the best of `references`, in points.
fn rouge_l(scorer: &RougeScorer, references: &[String], summary: &str) -> Option<f64> {
    let scores = scorer.score_multi(references, summary)?;
    scores.get(RougeType::L).map(|s| s.fmeasure * 100.0)
}

/// The gate's figures, tallied one training item at a time: a report reads a run page by page.
pub struct GateTally {
    scorer: RougeScorer,
    unimproved: Unimproved,
    figures: pb::GateQuality,
    revised_sum: f64,
    original_sum: f64,
}

impl GateTally {
    pub fn new(unimproved: Unimproved) -> anyhow::Result<Self> {
        Ok(Self {
            scorer: RougeScorer::new(["rougeL"], true).map_err(|e| anyhow::anyhow!("{e}"))?,
            unimproved,
            figures: pb::GateQuality::default(),
            revised_sum: 0.0,
            original_sum: 0.0,
        })
    }

    /// Counts one item; held-out items are not the gate's business.
    pub fn add(&mut self, item: &ItemRecord) {
        if item.split != Split::Train {
            return;
        }
        let g = &mut self.figures;
        g.refined_pairs += u32::from(
            item.revision_outcome
                .is_some_and(|o| o.trained_on(self.unimproved)),
        );
        g.unrevised_pairs += u32::from(!item.teacher_summary.is_empty());
        count_by_category(&mut g.by_category, item);
        if !item
            .revision_outcome
            .is_some_and(RevisionOutcome::is_revised)
        {
            return;
        }
        let Some(revision) = item.final_summary.as_deref() else {
            return;
        };
        g.accepted += 1;
        if let Some(f) = item
            .revised_analysis
            .as_ref()
            .and_then(|a| a.fidelity.as_ref())
        {
            g.guarded += 1;
            g.close += u32::from(f.close);
        }
        if item.references.is_empty() {
            return;
        }
        if let (Some(r), Some(o)) = (
            rouge_l(&self.scorer, &item.references, revision),
            rouge_l(&self.scorer, &item.references, &item.teacher_summary),
        ) {
            g.with_references += 1;
            self.revised_sum += r;
            self.original_sum += o;
        }
    }

    pub fn finish(self) -> pb::GateQuality {
        let mut g = self.figures;
        if g.with_references > 0 {
            g.revised_rouge_l = self.revised_sum / f64::from(g.with_references);
            g.original_rouge_l = self.original_sum / f64::from(g.with_references);
        }
        g.warning = warning(&g);
        g
    }
}

/// Per category flagged in the teacher's summaries: how many summaries, how many of them had a
/// revision accepted, and how many of those were repaired by rule. Categories in order of
/// first appearance.
fn count_by_category(rows: &mut Vec<pb::CategoryRevisions>, item: &ItemRecord) {
    let Some(analysis) = &item.analysis else {
        return;
    };
    let accepted = item
        .revision_outcome
        .is_some_and(RevisionOutcome::is_revised);
    let by_rule = item.revision_outcome == Some(RevisionOutcome::Repaired);
    let mut seen: Vec<&str> = Vec::new();
    for f in &analysis.findings {
        if seen.contains(&f.category_id.as_str()) {
            continue;
        }
        seen.push(&f.category_id);
        let row = match rows.iter().position(|r| r.category_id == f.category_id) {
            Some(i) => &mut rows[i],
            None => {
                rows.push(pb::CategoryRevisions {
                    category_id: f.category_id.clone(),
                    ..Default::default()
                });
                rows.last_mut().expect("just pushed")
            }
        };
        row.flagged += 1;
        row.accepted += u32::from(accepted);
        row.repaired_by_rule += u32::from(by_rule);
    }
}

/// A warning a person must not miss: accepted revisions further from the references than the
/// summaries they replaced.
fn warning(g: &pb::GateQuality) -> String {
    if g.with_references > 0 && g.revised_rouge_l < g.original_rouge_l {
        format!(
            "the {} accepted revisions with references score ROUGE-L {:.1} against them, below the {:.1} of the teacher summaries they replaced: revision made this training data worse",
            g.with_references, g.revised_rouge_l, g.original_rouge_l
        )
    } else {
        String::new()
    }
}

/// The report's section.
pub fn section(md: &mut String, g: &pb::GateQuality) {
    let _ = writeln!(md, "## Did the gate accept better summaries?\n");
    if g.accepted == 0 {
        let _ = writeln!(md, "No revision was accepted.\n");
    } else if g.with_references > 0 {
        let _ = writeln!(
            md,
            "Of {} accepted revisions, {} have human references: ROUGE-L **{:.1}** for the revisions against \
             **{:.1}** for the teacher summaries they replaced.\n",
            g.accepted, g.with_references, g.revised_rouge_l, g.original_rouge_l
        );
    }
    if g.guarded > 0 {
        let _ = writeln!(
            md,
            "The fidelity guard scored {} of {} accepted revisions as close to their original.\n",
            g.close, g.guarded
        );
    }
    if !g.by_category.is_empty() {
        let _ = writeln!(
            md,
            "| category | summaries flagged | revision accepted | of which repaired by rule |\n| --- | ---: | ---: | ---: |"
        );
        for c in &g.by_category {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} |",
                c.category_id, c.flagged, c.accepted, c.repaired_by_rule
            );
        }
        md.push('\n');
    }
    let _ = writeln!(
        md,
        "Distinct pairs each student learned from: ARF-refined {}, unrevised {}.\n",
        g.refined_pairs, g.unrevised_pairs
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use arf_common::dataset::Conversation;

    fn gate_quality(
        items: &[ItemRecord],
        unimproved: Unimproved,
    ) -> anyhow::Result<pb::GateQuality> {
        let mut tally = GateTally::new(unimproved)?;
        items.iter().for_each(|i| tally.add(i));
        Ok(tally.finish())
    }

    fn item(
        outcome: RevisionOutcome,
        teacher: &str,
        revision: Option<&str>,
        references: &[&str],
        close: bool,
    ) -> ItemRecord {
        ItemRecord {
            line: 1,
            split: Split::Train,
            conversation: Conversation {
                id: "c".into(),
                channel: "chat".into(),
                turns: vec![],
                metadata: Default::default(),
            },
            teacher_summary: teacher.into(),
            references: references.iter().map(|r| r.to_string()).collect(),
            analysis: None,
            revision_outcome: Some(outcome),
            final_summary: revision.map(str::to_string),
            revision_rounds: Some(1),
            losing_candidates: vec![],
            revised_analysis: revision.map(|_| pb::AnalyzeResponse {
                fidelity: Some(pb::Fidelity {
                    passed: true,
                    close,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            evaluation: None,
            trace_parent: None,
        }
    }

    const REFERENCE: &str =
        "the customer asks about a late parcel and the agent sends a tracking link";

    #[test]
    fn gate_quality_on_a_constructed_run_with_known_answers() {
        let items = vec![
            // Accepted, identical to the reference: ROUGE-L 100; the original had half of it.
            item(
                RevisionOutcome::Accepted,
                "the customer asks about a late parcel",
                Some(REFERENCE),
                &[REFERENCE],
                true,
            ),
            // Accepted, no references: counted for closeness only.
            item(RevisionOutcome::Accepted, "x y", Some("x z"), &[], false),
            item(RevisionOutcome::Rejected, "a b", None, &[REFERENCE], false),
            item(RevisionOutcome::Clean, "a b c", None, &[], false),
        ];
        let g = gate_quality(&items, Unimproved::Exclude).unwrap();
        assert_eq!(
            (g.accepted, g.with_references, g.guarded, g.close),
            (2, 1, 2, 1)
        );
        assert!((g.revised_rouge_l - 100.0).abs() < 1e-9, "{g:?}");
        // LCS 7 words of 7 and 14: P 1, R 0.5, F 2/3.
        assert!((g.original_rouge_l - 200.0 / 3.0).abs() < 1e-6, "{g:?}");
        assert!(g.warning.is_empty());
        // Exclude: the clean one and the two accepted; keep-original adds the rejected one.
        assert_eq!((g.refined_pairs, g.unrevised_pairs), (3, 4));
        assert_eq!(
            gate_quality(&items, Unimproved::KeepOriginal)
                .unwrap()
                .refined_pairs,
            4
        );
    }

    #[test]
    fn revisions_are_counted_per_category_flagged() {
        let flagged = |outcome, categories: &[&str]| {
            let mut i = item(outcome, "a b", None, &[], false);
            i.analysis = Some(pb::AnalyzeResponse {
                findings: categories
                    .iter()
                    .map(|c| pb::Finding {
                        category_id: c.to_string(),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            });
            i
        };
        let items = vec![
            // Two findings of one category count one summary.
            flagged(
                RevisionOutcome::Accepted,
                &["pii_exposure", "pii_exposure", "repetition"],
            ),
            flagged(RevisionOutcome::Rejected, &["repetition"]),
            flagged(RevisionOutcome::Failed, &["omission"]),
            flagged(RevisionOutcome::Clean, &[]),
        ];
        let rows: Vec<(String, u32, u32)> = gate_quality(&items, Unimproved::Exclude)
            .unwrap()
            .by_category
            .into_iter()
            .map(|c| (c.category_id, c.flagged, c.accepted))
            .collect();
        assert_eq!(
            rows,
            [
                ("pii_exposure".to_string(), 1, 1),
                ("repetition".to_string(), 2, 1),
                ("omission".to_string(), 1, 0)
            ]
        );
    }

    #[test]
    fn worse_accepted_revisions_raise_a_warning() {
        let items = vec![item(
            RevisionOutcome::Accepted,
            REFERENCE,
            Some("{{#1}}"),
            &[REFERENCE],
            false,
        )];
        let g = gate_quality(&items, Unimproved::Exclude).unwrap();
        assert!(
            g.revised_rouge_l < 1.0 && g.original_rouge_l > 99.0,
            "{g:?}"
        );
        assert!(
            g.warning.contains("made this training data worse"),
            "{}",
            g.warning
        );
    }
}
