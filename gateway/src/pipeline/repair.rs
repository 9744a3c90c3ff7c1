//! Deterministic repairs (`repair: RULES_THEN_MODEL`): the fixes the analyzer's detectors
//! determine (`Finding.rule_fix`: a PII value's typed placeholder, a preamble or an unsupported
//! clause deleted, bullets as prose, a swapped party swapped back), spliced into the summary.
//! What comes out is re-checked and gated like any revision (revise.rs).
//!
//! Personal data is always fixed by rule, whatever the repair mode: a summary whose only
//! findings are PII with their placeholders is repaired here, and the editor splices the
//! placeholder of a PII span in a summary it revises (never model text where personal data was).
//! So is a swapped party with the detector's swap: the one right answer, which a small editor
//! mostly misses (it writes the party it was shown back).

use std::ops::Range;

use arf_common::splice::splice;
use arf_proto::v1 as pb;

/// Whether the rule fixes are tried before the editor: always under `RULES_THEN_MODEL`, and
/// under any mode when every finding is personal data with its placeholder or a swapped party
/// with its swap.
pub fn tried_first(mode: pb::RepairMode, findings: &[pb::Finding]) -> bool {
    mode == pb::RepairMode::RulesThenModel
        || (!findings.is_empty()
            && findings.iter().all(|f| {
                matches!(
                    f.category_id.as_str(),
                    "pii_exposure" | "speaker_attribution"
                ) && f.rule_fix.is_some()
            }))
}

/// `summary` with every rule fix of `findings` applied; `None` when no finding carries one, or
/// the fixes change nothing. Overlapping fixes: the earlier span's stands.
pub fn by_rule(summary: &str, findings: &[pb::Finding]) -> Option<String> {
    let edits: Vec<(Range<usize>, String)> = findings
        .iter()
        .filter_map(|f| {
            let fix = f.rule_fix.as_ref()?;
            let span = f.summary_span.as_ref()?;
            let range = span.start as usize..span.end as usize;
            // A span that is not this summary's text (a stale finding) is no place to splice.
            (summary.get(range.clone()) == Some(span.text.as_str())).then(|| (range, fix.clone()))
        })
        .collect();
    if edits.is_empty() {
        return None;
    }
    let repaired = splice(summary, &edits);
    (!repaired.trim().is_empty() && repaired != summary).then_some(repaired)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finding(summary: &str, part: &str, fix: Option<&str>) -> pb::Finding {
        let start = summary.find(part).unwrap();
        pb::Finding {
            summary_span: Some(pb::TextSpan {
                start: start as u32,
                end: (start + part.len()) as u32,
                text: part.into(),
            }),
            rule_fix: fix.map(str::to_string),
            ..Default::default()
        }
    }

    #[test]
    fn personal_data_and_swapped_parties_are_fixed_by_rule_in_any_mode() {
        let s = "Agent is upset about the bill. Customer gave jane@example.com.";
        let of = |category: &str, part: &str, fix: Option<&str>| pb::Finding {
            category_id: category.into(),
            ..finding(s, part, fix)
        };
        let pii = of("pii_exposure", "jane@example.com", Some("[email]"));
        let swap = of("speaker_attribution", "Agent", Some("Customer"));
        let invented = of("hallucinated_fact", "about the bill", Some(""));
        let model = pb::RepairMode::Model;
        assert!(tried_first(model, &[pii, swap.clone()]));
        assert!(!tried_first(model, &[swap.clone(), invented]));
        assert!(!tried_first(
            model,
            &[of("speaker_attribution", "Agent", None)]
        ));
        assert!(!tried_first(model, &[]));
    }

    #[test]
    fn rule_fixes_are_spliced_and_findings_without_one_are_left_to_the_editor() {
        let s =
            "The customer gave jane@example.com and the agent refunded $30, then closed the chat.";
        let findings = [
            finding(s, "jane@example.com", Some("[email]")),
            finding(s, "refunded $30", Some("")),
            finding(s, "closed the chat", None),
        ];
        assert_eq!(
            by_rule(s, &findings).as_deref(),
            Some("The customer gave [email] and the agent, then closed the chat.")
        );
        assert_eq!(
            by_rule(s, &findings[2..]),
            None,
            "no rule fix: nothing to do"
        );
        // A finding whose span no longer matches the text is not applied.
        let stale = finding("xx jane@example.com", "jane@example.com", Some("[email]"));
        assert_eq!(by_rule(s, &[stale]), None);
    }
}
