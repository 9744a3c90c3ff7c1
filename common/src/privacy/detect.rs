//! Where personal data is in a text: emails, phone numbers, payment card and account numbers,
//! social security numbers, street addresses and postcodes. Patterns, then checks that tell a
//! value from an id, a price or a date (a card number passes Luhn, a phone number has enough
//! digits). Names are not found here: a name is only recognisable from how a conversation uses
//! it (`scrub::names_in`).

use std::sync::LazyLock;

use regex::Regex;

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

/// A kind of personal data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PiiKind {
    Email,
    Phone,
    Card,
    Account,
    Ssn,
    Address,
    Name,
}

impl PiiKind {
    pub const ALL: [PiiKind; 7] = [
        PiiKind::Email,
        PiiKind::Phone,
        PiiKind::Card,
        PiiKind::Account,
        PiiKind::Ssn,
        PiiKind::Address,
        PiiKind::Name,
    ];

    /// Its name in reports and counts (`email`, `phone`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            PiiKind::Email => "email",
            PiiKind::Phone => "phone",
            PiiKind::Card => "card",
            PiiKind::Account => "account",
            PiiKind::Ssn => "ssn",
            PiiKind::Address => "address",
            PiiKind::Name => "name",
        }
    }

    /// What a scrubbed text says instead of the value: `[EMAIL]`, `[PHONE]`, ...
    pub fn placeholder(self) -> String {
        format!("[{}]", self.as_str().to_ascii_uppercase())
    }

    /// The value's identity: two spellings of one phone number or one email are one value.
    pub fn key(self, value: &str) -> String {
        match self {
            PiiKind::Email | PiiKind::Name | PiiKind::Address => value.to_ascii_lowercase(),
            // With or without its country code, one number.
            PiiKind::Phone => {
                let d = digits(value);
                d[d.len().saturating_sub(10)..].to_string()
            }
            _ => digits(value),
        }
    }
}

/// One value found in a text: its byte range and kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PiiSpan {
    pub start: usize,
    pub end: usize,
    pub kind: PiiKind,
}

pub fn digit_count(s: &str) -> usize {
    s.chars().filter(|c| c.is_ascii_digit()).count()
}

pub fn digits(s: &str) -> String {
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

/// The personal data in `text` (names aside), in order, without overlaps: where two patterns
/// match one stretch, the more specific wins (a card number is not also a phone number).
pub fn find_pii(text: &str) -> Vec<PiiSpan> {
    // Cheap pre-check: no '@' and fewer than 4 digits means none of the patterns can match.
    if !text.contains('@') && digit_count(text) < 4 {
        return Vec::new();
    }
    let mut out = Vec::new();
    let mut push = |re: &Regex, kind: PiiKind, ok: &dyn Fn(&str) -> bool| {
        for m in re.find_iter(text) {
            if ok(m.as_str()) {
                out.push(PiiSpan {
                    start: m.start(),
                    end: m.end(),
                    kind,
                });
            }
        }
    };
    push(&EMAIL, PiiKind::Email, &|_| true);
    push(&CARD_ENDING, PiiKind::Card, &|_| true);
    push(&CARD_NUMBER, PiiKind::Card, &|m| luhn(m));
    push(&ACCOUNT, PiiKind::Account, &|m| digit_count(m) >= 9);
    push(&IBAN, PiiKind::Account, &|_| true);
    push(&SSN, PiiKind::Ssn, &|_| true);
    push(&STREET, PiiKind::Address, &|_| true);
    push(&POSTCODE, PiiKind::Address, &|m| {
        m.chars().any(|c| c.is_ascii_digit())
    });
    push(&PHONE, PiiKind::Phone, &|m| is_phone(m));
    let mut kept: Vec<PiiSpan> = Vec::new();
    for c in out {
        if !kept.iter().any(|k| c.start < k.end && k.start < c.end) {
            kept.push(c);
        }
    }
    kept.sort_by_key(|c| c.start);
    kept
}

/// Finds `digits` in `text` ignoring separators between them; returns the byte range.
pub fn find_digits(text: &str, digits: &str) -> Option<(usize, usize)> {
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

    fn texts(s: &str) -> Vec<&str> {
        find_pii(s).iter().map(|p| &s[p.start..p.end]).collect()
    }

    #[test]
    fn finds_each_kind() {
        assert_eq!(
            texts("Customer (contact: jane.doe1987@gmail.com) asked."),
            ["jane.doe1987@gmail.com"]
        );
        assert_eq!(texts("Call +1 (415) 555-0134 now."), ["+1 (415) 555-0134"]);
        assert_eq!(texts("Call 07700 900123 now."), ["07700 900123"]);
        assert_eq!(texts("Paid with card ending 4821."), ["card ending 4821"]);
        assert_eq!(
            texts("Card 4111 1111 1111 1111 was used."),
            ["4111 1111 1111 1111"]
        );
        assert_eq!(
            texts("Lives at 221 Baker Street, NW1 6XE."),
            ["221 Baker Street", "NW1 6XE"]
        );
        assert_eq!(
            texts("Account number 123456789 is locked."),
            ["Account number 123456789"]
        );
    }

    #[test]
    fn ids_prices_versions_and_dates_are_not_pii() {
        for s in [
            "Order #A4417-923 costs $149.99 on iOS 11.0.3 since 10/20/2017.",
            "Regarding account 5521-0093 and ticket 88213.",
            "Waited from 2017 to 2018, 5 hours and 15 minutes.",
            "Card 4111 1111 1111 1112 fails Luhn.",
        ] {
            assert!(texts(s).is_empty(), "{s}: {:?}", texts(s));
        }
    }

    #[test]
    fn one_value_in_two_spellings_has_one_key() {
        assert_eq!(
            PiiKind::Phone.key("+1 (415) 555-0134"),
            PiiKind::Phone.key("415.555.0134")
        );
        assert_eq!(
            PiiKind::Email.key("Jane@X.com"),
            PiiKind::Email.key("jane@x.com")
        );
        assert_eq!(
            find_digits("call 0770-090-0123 now", "07700900123"),
            Some((5, 18))
        );
    }
}
