//! Splicing replacements into a text and mending the seams: what a span edit (the editor's
//! replacement of a flagged span) and a rule repair (a fix the analyzer's detector determines)
//! both do to a summary. Only the seams are touched: spaces, doubled punctuation, a conjunction
//! or preposition left before a full stop, brackets left empty, two words run together, the
//! capital after a sentence end.

use std::ops::Range;

/// `summary` with each range replaced. Only the seams are tidied (a deletion must not leave
/// doubled spaces or punctuation, a space before a full stop, or a lowercase sentence start);
/// the text around them stays as the summary had it.
pub fn splice(summary: &str, replacements: &[(Range<usize>, String)]) -> String {
    let mut sorted: Vec<&(Range<usize>, String)> = replacements.iter().collect();
    sorted.sort_by_key(|(r, _)| r.start);
    let mut out = String::with_capacity(summary.len());
    let mut at = 0;
    for (range, text) in sorted {
        let valid = range.start <= range.end
            && range.end <= summary.len()
            && summary.is_char_boundary(range.start)
            && summary.is_char_boundary(range.end);
        if range.start < at || !valid {
            continue; // overlapping (the earlier one stands) or not a range of the text
        }
        join(&mut out, &summary[at..range.start]);
        join(&mut out, text);
        at = range.end;
    }
    if summary[at..].trim().is_empty() && drop_dangling_conjunction(&mut out) {
        // The text's end was deleted after a conjunction: it ends where the clause before did.
        out.push('.');
    }
    join(&mut out, &summary[at..]);
    drop_emptied_brackets(&out, summary)
}

/// `out` without the brackets a deletion emptied ("(contact: )", "()"), and the space before
/// them; brackets the summary itself had stay.
fn drop_emptied_brackets(out: &str, summary: &str) -> String {
    static EMPTY: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(r"\s*(?:\(\s*(?:[\w ]{1,20}:\s*)?\)|\[\s*\])").unwrap()
    });
    let tidied = EMPTY.replace_all(out, |c: &regex::Captures<'_>| {
        let m = &c[0];
        if summary.contains(m.trim()) {
            m.to_string()
        } else {
            String::new()
        }
    });
    tidied.trim().to_string()
}

/// Words a deleted clause can leave joining or introducing nothing ("... apologized and .",
/// "a letter regarding."). Not "in" or "on", which end phrasal verbs ("log in.").
const DANGLING: [&str; 19] = [
    "and",
    "but",
    "or",
    "then",
    "regarding",
    "about",
    "for",
    "with",
    "to",
    "of",
    "from",
    "by",
    "at",
    "as",
    "into",
    "via",
    "the",
    "a",
    "an",
];

/// Removes a dangling word (and a comma before it) that ends `out`; whether there was one.
fn drop_dangling_conjunction(out: &mut String) -> bool {
    let trimmed = out.trim_end();
    let Some(word) = DANGLING.iter().find(|w| {
        // Byte arithmetic on text that may hold any character: check the boundary first.
        let Some(cut) = trimmed.len().checked_sub(w.len()) else {
            return false;
        };
        trimmed.is_char_boundary(cut)
            && trimmed[cut..].eq_ignore_ascii_case(w)
            && trimmed[..cut].ends_with([' ', ','])
    }) else {
        return false;
    };
    let keep = trimmed[..trimmed.len() - word.len()]
        .trim_end_matches(|c: char| c == ',' || c.is_whitespace())
        .len();
    out.truncate(keep);
    true
}

const PUNCTUATION: [char; 6] = ['.', ',', ';', ':', '!', '?'];

/// Appends `piece` to `out`, mending the seam between them.
fn join(out: &mut String, piece: &str) {
    if piece.is_empty() {
        return;
    }
    if out.trim().is_empty() {
        // The summary now starts here: no leading space or punctuation, a capital first.
        out.clear();
        let rest =
            piece.trim_start_matches(|c: char| c.is_whitespace() || PUNCTUATION.contains(&c));
        push_capitalized(out, rest);
        return;
    }
    let mut piece = piece;
    if out.ends_with(char::is_whitespace) {
        piece = piece.trim_start();
    } else if out.ends_with(char::is_alphanumeric) && piece.starts_with(char::is_alphanumeric) {
        // Two words never run together at a seam ("will aren" + "Customer complaints").
        out.push(' ');
    }
    if piece.trim_start().starts_with(PUNCTUATION) {
        drop_dangling_conjunction(out);
        piece = piece.trim_start();
        while out.ends_with(char::is_whitespace) {
            out.pop();
        }
        if out.ends_with(PUNCTUATION) {
            let mark = piece.chars().next().unwrap_or('.');
            if mark == '.' && !out.ends_with(['.', '!', '?']) {
                out.pop();
                out.push('.');
            }
            piece = &piece[mark.len_utf8()..];
        }
    }
    if out.trim_end().ends_with(['.', '!', '?']) {
        if !out.ends_with(char::is_whitespace) && piece.starts_with(char::is_alphanumeric) {
            out.push(' ');
        }
        push_capitalized(out, piece);
    } else {
        out.push_str(piece);
    }
}

/// Appends `s` with its first letter upper-cased when it is a lowercase letter.
fn push_capitalized(out: &mut String, s: &str) {
    let text = s.trim_start();
    out.push_str(&s[..s.len() - text.len()]);
    let mut chars = text.chars();
    match chars.next() {
        Some(c) if c.is_lowercase() => {
            out.extend(c.to_uppercase());
            out.push_str(chars.as_str());
        }
        _ => out.push_str(text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deleted_clause_takes_its_conjunction_along() {
        let s = "The agent apologized and issued a refund of $30. The customer thanked them.";
        let clause = s.find("issued").unwrap()..s.find('.').unwrap();
        assert_eq!(
            splice(s, &[(clause, String::new())]),
            "The agent apologized. The customer thanked them."
        );
        let s = "The agent apologized, and promised a callback";
        let clause = s.find("promised").unwrap()..s.len();
        assert_eq!(
            splice(s, &[(clause, String::new())]),
            "The agent apologized."
        );
        // A conjunction that still joins something stays.
        let s = "The customer asked for a refund and a new card.";
        let a = s.find("a refund").unwrap()..s.find(" and").unwrap();
        assert_eq!(
            splice(s, &[(a, "a replacement".into())]),
            "The customer asked for a replacement and a new card."
        );
    }

    /// Seen from a tiny random model: a text ending in a 4-byte character, where the
    /// conjunction check must not slice inside it.
    #[test]
    fn a_text_ending_in_a_wide_character_is_no_panic() {
        let s = "The bot booked it. thanks not this𐪐";
        let booked = s.find("booked").unwrap()..s.find(" it").unwrap();
        assert_eq!(
            splice(s, &[(booked, "moved".into())]),
            "The bot moved it. thanks not this𐪐"
        );
        let tail = s.find(" thanks").unwrap()..s.len();
        let mut out = String::from("a𐪐");
        assert!(!drop_dangling_conjunction(&mut out));
        assert_eq!(splice(s, &[(tail, String::new())]), "The bot booked it.");
    }

    /// Seen from a random-weight editor's span edits (issue 34): words glued at a seam, a
    /// preposition left before the full stop, a bracket emptied by a deletion.
    #[test]
    fn seams_leave_no_glued_words_hanging_prepositions_or_empty_brackets() {
        let s = "Summary: Customer complaints about a letter.";
        let label = 0..s.find("Customer").unwrap();
        assert_eq!(
            splice(s, &[(label, "will aren".into())]),
            "Will aren Customer complaints about a letter."
        );
        let s = "The agent sent a letter regarding 48 hours.";
        let hours = s.find("48").unwrap()..s.find('.').unwrap();
        assert_eq!(
            splice(s, &[(hours, String::new())]),
            "The agent sent a letter."
        );
        let s = "Call the customer (contact: +1 (415) 555-0134) today. Old (note) stays.";
        let phone = s.find("+1").unwrap()..s.find(") today").unwrap();
        assert_eq!(
            splice(s, &[(phone, String::new())]),
            "Call the customer today. Old (note) stays."
        );
    }

    #[test]
    fn ranges_that_are_not_of_the_text_are_skipped() {
        let s = "Café order late.";
        // 4 is inside "é": not a character boundary; 99 is past the end.
        assert_eq!(splice(s, &[(3..4, "x".into()), (5..99, String::new())]), s);
    }
}
