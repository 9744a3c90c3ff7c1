//! pii_exposure: personal data in the summary (emails, phone numbers, card and account numbers,
//! street addresses, postcodes). A summary is training data: personal data in it leaks.
//!
//! A phone number or email that an agent turn gave out is the company's contact, not personal
//! data, so it is not flagged. Short ids (order or ticket numbers) are not personal data by
//! themselves and are left to the grounding check.

use std::sync::LazyLock;

use regex::Regex;

use super::{Context, Detector, is_agent_role};
use crate::finding::{Evidence, Finding, TextSpan};
use crate::taxonomy::CategoryId;

pub struct Pii;

const NAME: &str = "pii";

static EMAIL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}").unwrap()
});
static PHONE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?:\+\d{1,3}[\s.\-]?)?(?:\(\d{1,5}\)[\s.\-]?)?\d{2,5}(?:[\s.\-]\d{2,6}){1,4}\b|\+?\b\d{10,13}\b").unwrap()
});
static CARD_ENDING: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)\b(?:card|visa|mastercard|amex|debit|credit)\b[\w ]{0,20}?\b(?:ending|ends|last (?:4|four)(?: digits)?)(?: (?:in|with))?[ :]*\d{4}\b").unwrap()
});
static CARD_NUMBER: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\b\d(?:[ \-]?\d){12,18}\b").unwrap());
static ACCOUNT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?i)\b(?:account|acct|a/c)\s*(?:number|no\.?|num|#)?\s*[:#]?\s*[A-Z]{0,4}\d[\d \-]{7,}\d",
    )
    .unwrap()
});
static IBAN: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){3,7}\b").unwrap());
static SSN: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\b\d{3}-\d{2}-\d{4}\b").unwrap());
static STREET: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\b\d{1,5}[A-Za-z]? (?:[A-Z][a-z]+ ){1,3}(?:Street|St|Road|Rd|Avenue|Ave|Lane|Ln|Boulevard|Blvd|Drive|Dr|Court|Ct|Way|Place|Pl|Terrace|Close|Crescent|Square|Sq)\b").unwrap()
});
static POSTCODE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\b[A-Z]{1,2}\d[A-Z\d]? ?\d[A-Z]{2}\b").unwrap());

/// The typed placeholders a repair puts where personal data was (`[email]`, ...): what the
/// fidelity guard lets a revision insert though no conversation says it.
pub fn is_placeholder(text: &str) -> bool {
    Kind::ALL
        .iter()
        .any(|k| k.placeholder().eq_ignore_ascii_case(text))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Email,
    Phone,
    Card,
    Account,
    Ssn,
    Address,
}

impl Kind {
    const ALL: [Kind; 6] = [
        Kind::Email,
        Kind::Phone,
        Kind::Card,
        Kind::Account,
        Kind::Ssn,
        Kind::Address,
    ];

    fn label(self) -> &'static str {
        match self {
            Kind::Email => "an email address",
            Kind::Phone => "a phone number",
            Kind::Card => "a payment card number",
            Kind::Account => "an account number",
            Kind::Ssn => "a social security number",
            Kind::Address => "a street address",
        }
    }

    /// What replaces the value in a repaired summary: says what was there, exposes nothing.
    fn placeholder(self) -> &'static str {
        match self {
            Kind::Email => "[email]",
            Kind::Phone => "[phone number]",
            Kind::Card => "[card number]",
            Kind::Account => "[account number]",
            Kind::Ssn => "[SSN]",
            Kind::Address => "[address]",
        }
    }
}

fn digit_count(s: &str) -> usize {
    s.chars().filter(|c| c.is_ascii_digit()).count()
}

fn digits(s: &str) -> String {
    s.chars().filter(|c| c.is_ascii_digit()).collect()
}

fn luhn(number: &str) -> bool {
    let d: Vec<u32> = number.chars().filter_map(|c| c.to_digit(10)).collect();
    let sum: u32 = d
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &x)| {
            if i % 2 == 1 {
                if x * 2 > 9 { x * 2 - 9 } else { x * 2 }
            } else {
                x
            }
        })
        .sum();
    d.len() >= 13 && sum.is_multiple_of(10)
}

/// A phone number has 10 to 15 digits, or 7+ when written with a country code or area code in
/// brackets; fewer is an id, a time or a price.
fn is_phone(m: &str) -> bool {
    let n = digit_count(m);
    let marked = m.starts_with('+') || m.contains('(');
    (10..=15).contains(&n) || (marked && (7..=15).contains(&n))
}

fn candidates(summary: &str) -> Vec<(usize, usize, Kind)> {
    let mut out = Vec::new();
    let mut push = |re: &Regex, kind: Kind, ok: &dyn Fn(&str) -> bool| {
        for m in re.find_iter(summary) {
            if ok(m.as_str()) {
                out.push((m.start(), m.end(), kind));
            }
        }
    };
    push(&EMAIL, Kind::Email, &|_| true);
    push(&CARD_ENDING, Kind::Card, &|_| true);
    push(&CARD_NUMBER, Kind::Card, &|m| luhn(m));
    push(&ACCOUNT, Kind::Account, &|m| digit_count(m) >= 9);
    push(&IBAN, Kind::Account, &|_| true);
    push(&SSN, Kind::Ssn, &|_| true);
    push(&STREET, Kind::Address, &|_| true);
    push(&POSTCODE, Kind::Address, &|m| {
        m.chars().any(|c| c.is_ascii_digit())
    });
    push(&PHONE, Kind::Phone, &|m| is_phone(m));
    // Keep the first (most specific) match for each stretch of text: a card number is not
    // also reported as a phone number.
    let mut kept: Vec<(usize, usize, Kind)> = Vec::new();
    for c in out {
        if !kept.iter().any(|k| c.0 < k.1 && k.0 < c.1) {
            kept.push(c);
        }
    }
    kept.sort_by_key(|c| c.0);
    kept
}

impl Detector for Pii {
    fn name(&self) -> &'static str {
        NAME
    }

    fn categories(&self) -> &'static [CategoryId] {
        &[CategoryId::PiiExposure]
    }

    fn detect(&self, cx: &Context<'_>, out: &mut Vec<Finding>) {
        // Cheap pre-check: no '@' and fewer than 4 digits means none of the patterns can match.
        if !cx.summary.contains('@') && digit_count(cx.summary) < 4 {
            return;
        }
        for (start, end, kind) in candidates(cx.summary) {
            let found = &cx.summary[start..end];
            let key = if kind == Kind::Email {
                found.to_ascii_lowercase()
            } else {
                digits(found)
            };
            let mut evidence = Evidence::NotFound;
            let mut company_contact = false;
            for (i, t) in cx.turns.iter().enumerate() {
                let hit = if kind == Kind::Email {
                    t.text
                        .to_ascii_lowercase()
                        .find(&key)
                        .map(|p| (p, p + key.len()))
                } else {
                    find_digits(&t.text, &key)
                };
                if let Some((a, b)) = hit {
                    if is_agent_role(t.role) && matches!(kind, Kind::Phone | Kind::Email) {
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
            let explanation = format!("the summary exposes {}: `{}`", kind.label(), span.text);
            out.push(
                Finding::new(
                    CategoryId::PiiExposure,
                    NAME,
                    span,
                    evidence,
                    0.95,
                    explanation,
                )
                .with_fix(kind.placeholder()),
            );
        }
    }
}

/// Finds `digits` in `text` ignoring separators between them; returns the byte range.
fn find_digits(text: &str, digits: &str) -> Option<(usize, usize)> {
    if digits.is_empty() {
        return None;
    }
    let positions: Vec<(usize, char)> = text
        .char_indices()
        .filter(|(_, c)| c.is_ascii_digit())
        .collect();
    let flat: String = positions.iter().map(|(_, c)| *c).collect();
    let at = flat.find(digits)?;
    let (a, _) = positions[at];
    let (b, _) = positions[at + digits.len() - 1];
    Some((a, b + 1))
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
    fn finds_each_kind() {
        let conv = [("c", "help"), ("a", "sure")];
        assert_eq!(
            texts(&conv, "Customer (contact: jane.doe1987@gmail.com) asked."),
            ["jane.doe1987@gmail.com"]
        );
        assert_eq!(
            texts(&conv, "Call +1 (415) 555-0134 now."),
            ["+1 (415) 555-0134"]
        );
        assert_eq!(texts(&conv, "Call 07700 900123 now."), ["07700 900123"]);
        assert_eq!(
            texts(&conv, "Paid with card ending 4821."),
            ["card ending 4821"]
        );
        assert_eq!(
            texts(&conv, "Card 4111 1111 1111 1111 was used."),
            ["4111 1111 1111 1111"]
        );
        assert_eq!(
            texts(&conv, "Lives at 221 Baker Street, NW1 6XE."),
            ["221 Baker Street", "NW1 6XE"]
        );
        assert_eq!(
            texts(&conv, "Account number 123456789 is locked."),
            ["Account number 123456789"]
        );
    }

    #[test]
    fn ids_prices_versions_and_dates_are_not_pii() {
        let conv = [("c", "help"), ("a", "sure")];
        for s in [
            "Order #A4417-923 costs $149.99 on iOS 11.0.3 since 10/20/2017.",
            "Regarding account 5521-0093 and ticket 88213.",
            "Waited from 2017 to 2018, 5 hours and 15 minutes.",
            "Card 4111 1111 1111 1112 fails Luhn.",
        ] {
            assert!(texts(&conv, s).is_empty(), "{s}: {:?}", texts(&conv, s));
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
