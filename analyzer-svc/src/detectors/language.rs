//! wrong_language: the summary is not in the conversation's language. Two cheap signals: the
//! dominant script differs (Latin vs. Cyrillic, CJK, Arabic, ...), or, for Latin-script English
//! conversations, the summary has none of the function words every English sentence has.

use super::{Context, Detector};
use crate::finding::{Evidence, Finding, TextSpan};
use crate::taxonomy::CategoryId;

pub struct Language;

const NAME: &str = "language";

const ENGLISH_FUNCTION_WORDS: &[&str] = &[
    "the", "a", "an", "is", "are", "was", "to", "and", "of", "in", "for", "that", "with", "on",
    "it", "be", "has", "have", "not", "they", "he", "she", "their", "his", "her", "as", "by",
    "this", "will", "can", "from", "at", "about", "i", "you", "my", "me", "we", "your", "our",
    "but", "or", "so", "do", "did", "no",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Script {
    Latin,
    Cyrillic,
    Greek,
    Arabic,
    Hebrew,
    Devanagari,
    Cjk,
    Hangul,
    Thai,
}

fn script(c: char) -> Option<Script> {
    let u = c as u32;
    Some(match u {
        _ if c.is_ascii_alphabetic() => Script::Latin,
        0x00C0..=0x024F => Script::Latin,
        0x0370..=0x03FF => Script::Greek,
        0x0400..=0x04FF => Script::Cyrillic,
        0x0590..=0x05FF => Script::Hebrew,
        0x0600..=0x06FF => Script::Arabic,
        0x0900..=0x097F => Script::Devanagari,
        0x0E00..=0x0E7F => Script::Thai,
        0x3040..=0x30FF | 0x4E00..=0x9FFF => Script::Cjk,
        0xAC00..=0xD7AF => Script::Hangul,
        _ => return None,
    })
}

/// The script of most letters, if there are enough letters to say.
fn dominant_script<'a>(texts: impl IntoIterator<Item = &'a str>) -> Option<Script> {
    let mut counts: Vec<(Script, usize)> = Vec::new();
    for sc in texts.into_iter().flat_map(|s| s.chars()).filter_map(script) {
        match counts.iter_mut().find(|(k, _)| *k == sc) {
            Some((_, n)) => *n += 1,
            None => counts.push((sc, 1)),
        }
    }
    let total: usize = counts.iter().map(|(_, n)| n).sum();
    let (sc, n) = counts.into_iter().max_by_key(|(_, n)| *n)?;
    (total >= 10 && n * 10 >= total * 6).then_some(sc)
}

fn english_ratio<'a>(words: impl Iterator<Item = &'a str>) -> (usize, usize) {
    let mut n = 0;
    let mut hits = 0;
    for w in words {
        n += 1;
        if ENGLISH_FUNCTION_WORDS.contains(&w) {
            hits += 1;
        }
    }
    (hits, n)
}

impl Detector for Language {
    fn name(&self) -> &'static str {
        NAME
    }

    fn categories(&self) -> &'static [CategoryId] {
        &[CategoryId::WrongLanguage]
    }

    fn detect(&self, cx: &Context<'_>, out: &mut Vec<Finding>) {
        let Some(summary_script) = dominant_script([cx.summary]) else {
            return;
        };
        let Some(conv_script) = dominant_script(cx.turns.iter().map(|t| t.text.as_str())) else {
            return;
        };
        let span = TextSpan::of(cx.summary, 0, cx.summary.len());
        if summary_script != conv_script {
            let why = format!(
                "the summary is in {summary_script:?} script, the conversation in {conv_script:?}"
            );
            out.push(Finding::new(
                CategoryId::WrongLanguage,
                NAME,
                span,
                Evidence::NotApplicable,
                0.9,
                why,
            ));
            return;
        }
        if conv_script != Script::Latin {
            return;
        }
        // The summary first: when it reads as English there is nothing to compare.
        let (sum_hits, sum_n) = english_ratio(cx.summary_keys().iter().map(String::as_str));
        if sum_n < 8 || sum_hits * 25 >= sum_n {
            return;
        }
        let (conv_hits, conv_n) =
            english_ratio(cx.conversation().words.iter().map(|w| w.key.as_ref()));
        let conv_english = conv_n >= 20 && conv_hits * 5 >= conv_n; // >= 20% function words
        if conv_english {
            let why = "the conversation is in English but the summary has almost no English words"
                .to_string();
            out.push(Finding::new(
                CategoryId::WrongLanguage,
                NAME,
                span,
                Evidence::NotApplicable,
                0.75,
                why,
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detectors::testing::turns;

    fn run(summary: &str) -> usize {
        let turns = turns(&[
            (
                "c",
                "My order has not arrived and it is the third time this has happened to me this month",
            ),
            (
                "a",
                "We are sorry to hear that, can you send us the order number so we can look into it for you",
            ),
        ]);
        let cx = Context::new(&turns, summary);
        let mut out = Vec::new();
        Language.detect(&cx, &mut out);
        out.len()
    }

    #[test]
    fn english_summary_of_english_conversation_passes() {
        assert_eq!(
            run("Customer's order has not arrived again. Agent asks for the order number."),
            0
        );
    }

    #[test]
    fn other_script_or_other_latin_language_is_flagged() {
        assert_eq!(
            run("Клиент жалуется, что заказ не пришёл. Агент просит номер заказа."),
            1
        );
        assert_eq!(
            run(
                "Der Kunde beklagt sich, dass seine Bestellung wieder nicht angekommen ist. Agent bittet um Bestellnummer."
            ),
            1
        );
        assert_eq!(
            run("顾客抱怨订单没有到达。客服要求提供订单号码以便查询。"),
            1
        );
    }
}
