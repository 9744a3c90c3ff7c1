//! pii_exposure: personal data in the summary (emails, phone numbers, card and account numbers,
//! street addresses, postcodes). A summary is training data: personal data in it leaks.
//!
//! A phone number or email that an agent turn gave out is the company's contact, not personal
//! data, so it is not flagged. Short ids (order or ticket numbers) are not personal data by
//! themselves and are left to the grounding check.

use arf_common::privacy::detect::{PiiKind, digits, find_digits, find_pii};

use super::{Context, Detector, is_agent_role};
use crate::finding::{Evidence, Finding, TextSpan};
use crate::taxonomy::CategoryId;

pub struct Pii;

const NAME: &str = "pii";

/// The typed placeholders a repair puts where personal data was (`[email]`, ...), and those a
/// scrubbed run's texts carry (`[EMAIL]`, `[PHONE_2]`): what the fidelity guard lets a revision
/// insert though no conversation says it.
pub fn is_placeholder(text: &str) -> bool {
    let numbered = text
        .strip_suffix(']')
        .and_then(|t| t.rsplit_once('_'))
        .filter(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        .map(|(bare, _)| format!("{bare}]"));
    let text = numbered.as_deref().unwrap_or(text);
    PiiKind::ALL
        .iter()
        .any(|k| repair_placeholder(*k).eq_ignore_ascii_case(text) || k.placeholder() == text)
}

fn label(kind: PiiKind) -> &'static str {
    match kind {
        PiiKind::Email => "an email address",
        PiiKind::Phone => "a phone number",
        PiiKind::Card => "a payment card number",
        PiiKind::Account => "an account number",
        PiiKind::Ssn => "a social security number",
        PiiKind::Address => "a street address",
        PiiKind::Name => "a name",
    }
}

/// What replaces the value in a repaired summary: says what was there, exposes nothing.
fn repair_placeholder(kind: PiiKind) -> &'static str {
    match kind {
        PiiKind::Email => "[email]",
        PiiKind::Phone => "[phone number]",
        PiiKind::Card => "[card number]",
        PiiKind::Account => "[account number]",
        PiiKind::Ssn => "[SSN]",
        PiiKind::Address => "[address]",
        PiiKind::Name => "[name]",
    }
}

impl Detector for Pii {
    fn name(&self) -> &'static str {
        NAME
    }

    fn categories(&self) -> &'static [CategoryId] {
        &[CategoryId::PiiExposure]
    }

    fn detect(&self, cx: &Context<'_>, out: &mut Vec<Finding>) {
        for found in find_pii(cx.summary) {
            let (start, end, kind) = (found.start, found.end, found.kind);
            let found = &cx.summary[start..end];
            let key = if kind == PiiKind::Email {
                found.to_ascii_lowercase()
            } else {
                digits(found)
            };
            let mut evidence = Evidence::NotFound;
            let mut company_contact = false;
            for (i, t) in cx.turns.iter().enumerate() {
                let hit = if kind == PiiKind::Email {
                    t.text
                        .to_ascii_lowercase()
                        .find(&key)
                        .map(|p| (p, p + key.len()))
                } else {
                    find_digits(&t.text, &key)
                };
                if let Some((a, b)) = hit {
                    if is_agent_role(t.role) && matches!(kind, PiiKind::Phone | PiiKind::Email) {
                        company_contact = true;
                        break;
                    }
                    if evidence == Evidence::NotFound {
                        evidence = Evidence::turn(cx.turns, i, a, b);
                    }
                }
            }
            if company_contact {
                continue;
            }
            let span = TextSpan::of(cx.summary, start, end);
            let explanation = format!("the summary exposes {}: `{}`", label(kind), span.text);
            out.push(
                Finding::new(
                    CategoryId::PiiExposure,
                    NAME,
                    span,
                    evidence,
                    0.95,
                    explanation,
                )
                .with_fix(repair_placeholder(kind)),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detectors::testing::turns;

    fn run(conv: &[(&str, &str)], summary: &str) -> Vec<(String, Evidence)> {
        let turns = turns(conv);
        let cx = Context::new(&turns, summary);
        let mut out = Vec::new();
        Pii.detect(&cx, &mut out);
        out.into_iter()
            .map(|f| (f.summary_span.text, f.evidence))
            .collect()
    }

    fn texts(conv: &[(&str, &str)], summary: &str) -> Vec<String> {
        run(conv, summary).into_iter().map(|x| x.0).collect()
    }

    #[test]
    fn flags_personal_data_with_its_repair_placeholder() {
        let turns = turns(&[("c", "help"), ("a", "sure")]);
        let cx = Context::new(
            &turns,
            "Customer (jane.doe1987@gmail.com) paid with card ending 4821.",
        );
        let mut out = Vec::new();
        Pii.detect(&cx, &mut out);
        let fixes: Vec<_> = out.iter().map(|f| f.fix.as_deref()).collect();
        assert_eq!(fixes, [Some("[email]"), Some("[card number]")]);
    }

    #[test]
    fn repair_and_scrub_placeholders_are_placeholders() {
        for p in [
            "[email]",
            "[Phone Number]",
            "[EMAIL]",
            "[PHONE_2]",
            "[NAME]",
        ] {
            assert!(is_placeholder(p), "{p}");
        }
        for p in ["[PHONE_]", "[PHONE_x]", "[order]", "email"] {
            assert!(!is_placeholder(p), "{p}");
        }
    }

    #[test]
    fn company_contacts_are_not_flagged_but_customer_data_points_at_its_turn() {
        let conv = [
            ("c", "my number is 0770-090-0123"),
            ("a", "Call us on 0800 123 4567 or help@brand.com"),
        ];
        assert!(
            texts(
                &conv,
                "Agent said to call 0800 123 4567 or email help@brand.com."
            )
            .is_empty()
        );
        let found = run(&conv, "Customer gave 07700900123.");
        assert_eq!(found.len(), 1);
        match &found[0].1 {
            Evidence::Turn { turn, span } => {
                assert_eq!((*turn, span.text.as_str()), (0, "0770-090-0123"))
            }
            e => panic!("{e:?}"),
        }
    }
}
