//! format_violation: the summary is not plain third-person prose of a sensible length.
//!
//! Five checks, each a common failure of instruction-tuned teachers: a chatty preamble or
//! sign-off, bullets or markdown, the model speaking in the first person, a sentence in a
//! party's own voice (a turn pasted whole, a request to the reader), and a length far outside
//! bounds (including a transcript pasted in: long verbatim runs of the conversation).

use std::collections::HashMap;
use std::sync::LazyLock;

use regex::Regex;

use super::{Context, Detector};
use crate::finding::{Evidence, Finding, TextSpan};
use crate::taxonomy::CategoryId;

pub struct Format;

const NAME: &str = "format";

/// Upper bound for a summary of a customer-service conversation, in bytes; beyond it the summary
/// is no longer a summary whatever the conversation.
const MAX_BYTES: usize = 600;
/// Fewer words than this cannot say who wanted what.
const MIN_WORDS: usize = 4;
/// A sentence of at least this many words that is, word for word, part of one turn is that turn
/// pasted: none of TweetSumm's 2,985 human references has one (its injected pasted transcripts
/// and an editor's half-deleted ones do).
const PASTED_SENTENCE_WORDS: usize = 5;
/// A verbatim run this long that crosses from one turn into the next is pasted transcript.
const CROSS_TURN_RUN_WORDS: usize = 8;
/// A verbatim run this long from one turn is pasted too: copied clauses in real summaries are
/// shorter (under 24 words on TweetSumm's human references).
const LONG_COPY_RUN_WORDS: usize = 26;

static PREAMBLE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        // One or more of these in a row ("Sure! Here is the summary:"): the span is all of
        // them, so deleting it removes the whole preamble.
        r"(?ix)^\s*(?:(?:
            (?:sure|certainly|of\ course|okay|ok|absolutely|great)\b[!.,]?
          | here(?:'s|’s|\ is|\ are)\b[^\n.]{0,60}?\bsummar(?:y|ies)\b[^\n]{0,40}?[:.!\n]
          | (?:\*\*|\#+\ *)?(?:summary|tl;?dr|overview)(?:\ of\ the\ (?:conversation|chat|exchange))?\s*(?:\*\*)?\s*:
          | as\ an\ ai\b
          | (?:i|i've|i\ have|i'll|i\ will)\b[^\n.]{0,40}?\bsummar
          | (?:this|the)\ (?:conversation|chat|exchange)\ (?:can\ be\ )?summari[sz]ed
        )[\ \t\n]*)+",
    )
    .unwrap()
});
static SIGN_OFF: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)(?:let me know if|i hope this helps|hope this helps|feel free to ask|is there anything else)[^\n]*$").unwrap()
});
/// A sentence that starts as a request ("Please change it ..."): a party's words, never a
/// summary's (no TweetSumm reference has one).
static REQUEST: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?i)^(?:please|pls|plz|kindly)\b").unwrap());
static AI_SELF: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?i)\bas an ai(?: language model)?\b").unwrap());
/// A line that starts with a bullet, a numbered item or a markdown heading.
static BULLET: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?m)^[ \t]*(?:[-*•▪◦‣]|\d{1,2}[.)]|#{1,6})[ \t]+\S").unwrap());
/// The writer speaking: "I" as the subject of a writing verb, not a customer's quoted "I".
static FIRST_PERSON: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)\b(?:I|I'm|I've|I'll|we've|we'll)\s+(?:have\s+|will\s+|would\s+|can\s+|am\s+)?(?:summari[sz]\w*|provid\w*|hope|think|believe|notice\w*|read|reviewed|analy[sz]\w*)\b").unwrap()
});

impl Detector for Format {
    fn name(&self) -> &'static str {
        NAME
    }

    fn categories(&self) -> &'static [CategoryId] {
        &[CategoryId::FormatViolation]
    }

    fn detect(&self, cx: &Context<'_>, out: &mut Vec<Finding>) {
        let s = cx.summary;
        // `fix`: the replacement that repairs it, where the finding determines one.
        let mut push_fixed =
            |start: usize, end: usize, confidence: f32, why: String, fix: Option<String>| {
                let mut f = Finding::new(
                    CategoryId::FormatViolation,
                    NAME,
                    TextSpan::of(s, start, end),
                    Evidence::NotApplicable,
                    confidence,
                    why,
                );
                f.fix = fix;
                out.push(f);
            };
        if let Some(m) = PREAMBLE.find(s) {
            // A preamble or a sign-off says nothing about the conversation: deleting it fixes it.
            let why = format!("model preamble `{}`", m.as_str().trim());
            push_fixed(m.start(), m.end(), 0.95, why, Some(String::new()));
        } else if let Some(m) = AI_SELF.find(s) {
            push_fixed(
                m.start(),
                m.end(),
                0.9,
                "the model talks about itself".into(),
                None,
            );
        }
        if let Some(m) = SIGN_OFF.find(s) {
            let why = "chatty sign-off addressed to the reader".to_string();
            push_fixed(m.start(), m.end(), 0.9, why, Some(String::new()));
        }
        let bullets: Vec<_> = BULLET.find_iter(s).collect();
        if let (Some(first), Some(last)) = (bullets.first(), bullets.last()) {
            let end = s[last.start()..]
                .find('\n')
                .map_or(s.len(), |i| last.start() + i);
            let why = format!(
                "{} bullet or heading line(s) where prose is expected",
                bullets.len()
            );
            let prose = as_prose(&s[first.start()..end]);
            push_fixed(first.start(), end, 0.95, why, Some(prose));
        }
        if let Some(m) = FIRST_PERSON.find(s) {
            push_fixed(
                m.start(),
                m.end(),
                0.8,
                "the summary is written in the first person".into(),
                None,
            );
        }
        let mut flagged_by_length = false;
        length(cx, &mut |a, b, c, why| {
            flagged_by_length = true;
            push_fixed(a, b, c, why, None)
        });
        // A pasted transcript is flagged above (whole, or its longest run); one of its lines flagged
        // too would be merged with it into one smaller span, and the rest would read as unflagged.
        if !flagged_by_length && let Some((start, end, why)) = in_a_partys_voice(cx) {
            push_fixed(start, end, 0.85, why, None);
        }
    }
}

/// The first sentence written in a party's voice rather than about the parties: one that is a
/// turn's words copied whole, or a request. An editor that deletes most of a pasted transcript
/// leaves such a sentence behind, and one that "mends" an omission adds one.
fn in_a_partys_voice(cx: &Context<'_>) -> Option<(usize, usize, String)> {
    let conversation = &cx.conversation().words;
    for &(start, end) in &cx.sentences {
        if REQUEST.is_match(&cx.summary[start..end]) {
            return Some((
                start,
                end,
                "a sentence that makes a request: a party's words, not a summary's".into(),
            ));
        }
        let sentence = cx.keys_in(start, end);
        if sentence.len() < PASTED_SENTENCE_WORDS {
            continue;
        }
        let copied_from = conversation.windows(sentence.len()).find(|run| {
            run[0].turn == run[run.len() - 1].turn
                && run.iter().zip(sentence).all(|(c, k)| c.key == k.as_str())
        });
        if let Some(run) = copied_from {
            let why = format!("a sentence copied word for word from turn {}", run[0].turn);
            return Some((start, end, why));
        }
    }
    None
}

/// Bullet lines as sentences: markers stripped, each line ending in a full stop, joined by
/// spaces; headings and blank lines dropped.
fn as_prose(lines: &str) -> String {
    static MARKER: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"^[ \t]*(?:[-*•▪◦‣]|\d{1,2}[.)])[ \t]+").unwrap());
    let sentences: Vec<String> = lines
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .map(|l| MARKER.replace(l, "").trim().to_string())
        .filter(|l| !l.is_empty())
        .map(|l| {
            if l.ends_with(['.', '!', '?']) {
                l
            } else {
                format!("{}.", l.trim_end_matches([':', ';', ',']))
            }
        })
        .collect();
    sentences.join(" ")
}

fn length(cx: &Context<'_>, push: &mut impl FnMut(usize, usize, f32, String)) {
    let s = cx.summary;
    let n_words = cx.summary_words.len();
    if n_words < MIN_WORDS {
        push(
            0,
            s.len(),
            0.8,
            format!("only {n_words} word(s): too short to summarize anything"),
        );
        return;
    }
    let conv_bytes: usize = cx.turns.iter().map(|t| t.text.len()).sum();
    if s.len() > MAX_BYTES || (s.len() > 200 && s.len() > conv_bytes) {
        push(
            0,
            s.len(),
            0.9,
            format!(
                "{} bytes: far longer than a summary should be ({} bytes of conversation)",
                s.len(),
                conv_bytes
            ),
        );
        return;
    }
    // A transcript retold turn by turn ("Customer: ... Agent: ..."): small models do this when
    // asked to summarize, and the labels break the verbatim runs `pasted` looks for.
    let labels = crate::text::speaker_labels(s);
    if let (true, Some(first), Some(last)) = (labels.len() >= 2, labels.first(), labels.last()) {
        push(
            first.0,
            last.1,
            0.9,
            format!(
                "{} speaker labels (\"Customer:\", \"Agent:\"): a transcript, not a summary",
                labels.len()
            ),
        );
        return;
    }
    // Pasted transcript: a verbatim run from the conversation that runs across the end of one
    // turn into the next (no writer copies that), or one far longer than a copied clause.
    if let Some((start, end, why)) = pasted(cx) {
        push(start, end, 0.85, why);
    }
}

/// Finds a pasted stretch of conversation in the summary. Indexes the (short) summary rather
/// than the (long) conversation, and extends only maximal runs, so it is one pass over the
/// conversation.
fn pasted(cx: &Context<'_>) -> Option<(usize, usize, String)> {
    let sw = cx.summary_keys();
    if sw.len() < CROSS_TURN_RUN_WORDS {
        return None;
    }
    let mut at: HashMap<&str, Vec<usize>> = HashMap::with_capacity(sw.len());
    for (i, k) in sw.iter().enumerate() {
        at.entry(k.as_str()).or_default().push(i);
    }
    let cw = &cx.conversation().words;
    for (j, w) in cw.iter().enumerate() {
        let Some(starts) = at.get(w.key.as_ref()) else {
            continue;
        };
        for &i in starts {
            // Only from the start of a maximal run: the words before must differ.
            if i > 0 && j > 0 && cw[j - 1].key == sw[i - 1] {
                continue;
            }
            let run = (0..sw.len() - i)
                .take_while(|&k| cw.get(j + k).is_some_and(|c| c.key == sw[i + k]))
                .count();
            if run < CROSS_TURN_RUN_WORDS {
                continue;
            }
            let (first_turn, last_turn) = (cw[j].turn, cw[j + run - 1].turn);
            let (start, end) = (cx.summary_words[i].start, cx.summary_words[i + run - 1].end);
            if first_turn != last_turn {
                return Some((
                    start,
                    end,
                    format!(
                        "{run} words copied verbatim across turns {first_turn} to {last_turn}: a pasted transcript"
                    ),
                ));
            }
            if run >= LONG_COPY_RUN_WORDS {
                return Some((
                    start,
                    end,
                    format!("{run} words copied verbatim from turn {first_turn}"),
                ));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detectors::testing::turns;

    fn run(conv: &[(&str, &str)], summary: &str) -> Vec<String> {
        crate::detectors::testing::detect(&Format, conv, summary)
            .into_iter()
            .map(|f| f.explanation)
            .collect()
    }

    /// The fixes a preamble, bullets and a sign-off carry, spliced in, leave plain prose.
    #[test]
    fn the_fixes_of_a_preamble_bullets_and_a_sign_off_leave_prose() {
        let summary = "Sure! Here is the summary:\n- The customer lost a card\n- The agent blocked it.\nLet me know if you need more.";
        let turns = turns(CONV);
        let cx = Context::new(&turns, summary);
        let mut out = Vec::new();
        Format.detect(&cx, &mut out);
        let edits: Vec<(std::ops::Range<usize>, String)> = out
            .iter()
            .filter_map(|f| Some((f.summary_span.start..f.summary_span.end, f.fix.clone()?)))
            .collect();
        assert_eq!(edits.len(), 3, "{out:?}");
        assert_eq!(
            arf_common::splice::splice(summary, &edits),
            "The customer lost a card. The agent blocked it."
        );
    }

    const CONV: &[(&str, &str)] = &[
        (
            "c",
            "My parcel never arrived and the tracking page has said out for delivery since Monday morning at nine",
        ),
        (
            "a",
            "Sorry about that, please DM us your order number and we will chase the courier for you today",
        ),
    ];

    #[test]
    fn clean_prose_passes() {
        assert!(run(CONV, "Customer's parcel has not arrived. Agent asks for the order number by DM to chase the courier.").is_empty());
        assert!(run(CONV, "Customer says I want my parcel. Agent will chase it.").is_empty());
    }

    #[test]
    fn preambles_bullets_and_first_person() {
        for s in [
            "Sure! Here is a summary of the conversation: Customer's parcel is late. Agent will chase it.",
            "Here's a brief summary of the chat:\nCustomer's parcel is late. Agent will chase it.",
            "Summary: Customer's parcel is late. Agent will chase it.",
            "As an AI language model, I can summarize this conversation. Customer's parcel is late.",
            "- Customer's parcel is late.\n- Agent will chase it.",
            "Customer's parcel is late. Agent will chase it. I hope this helps!",
            "Customer's parcel is late. I have summarized the key points: agent will chase it.",
        ] {
            assert!(!run(CONV, s).is_empty(), "{s}");
        }
    }

    #[test]
    fn a_sentence_in_a_partys_voice() {
        let pasted = "Customer's parcel is late. Sorry about that, please DM us your order number.";
        let found = run(CONV, pasted);
        assert!(found.iter().any(|f| f.contains("from turn 1")), "{found:?}");
        let request = "Customer's parcel is late. Please chase the courier today.";
        assert!(run(CONV, request).iter().any(|f| f.contains("request")));
        // A copied clause inside a sentence of the summary's own is reported speech.
        let reported = "Agent says please DM us your order number so they can chase the courier.";
        assert!(run(CONV, reported).is_empty(), "{:?}", run(CONV, reported));
    }

    #[test]
    fn a_transcript_retold_turn_by_turn() {
        let retold = "Customer: My parcel never arrived and the tracking page says out for delivery. Agent: Sorry about that, please DM us your order number.";
        let found = run(CONV, retold);
        assert!(
            found.iter().any(|f| f.contains("speaker labels")),
            "{found:?}"
        );
        // One label-like phrase in prose is not a transcript.
        assert!(
            run(
                CONV,
                "Customer: parcel late since Monday; the agent asks for the order number by DM."
            )
            .is_empty()
        );
    }

    #[test]
    fn length_bounds_and_pasted_transcript() {
        assert!(run(CONV, "Parcel late.")[0].contains("too short"));
        let long = "Customer is unhappy. ".repeat(40);
        let short_conv = [("c", "Parcel late"), ("a", "Sorry, DM us")];
        assert!(run(&short_conv, &"Customer's parcel is late and the customer wants it delivered quickly. Agent apologizes, asks for a DM. ".repeat(2))[0].contains("far longer"));
        assert!(run(CONV, &long)[0].contains("far longer"));
        let pasted = "Customer's parcel is late. My parcel never arrived and the tracking page has said out for delivery since Monday morning at nine\nSorry about that, please DM us your order number and we will chase the courier";
        let long_conv = [
            CONV[0],
            CONV[1],
            (
                "c",
                "ok thanks, I will send it over in a minute once I find the confirmation email from the shop",
            ),
        ];
        assert!(
            run(&long_conv, pasted)
                .iter()
                .any(|f| f.contains("across turns 0 to 1")),
            "{:?}",
            run(&long_conv, pasted)
        );
        // One copied clause in an otherwise written summary is fine.
        let quoted = "Customer says the tracking page has said out for delivery since Monday morning at nine and is upset about it. Agent asks for the order number by DM so they can chase the courier.";
        assert!(
            run(&long_conv, quoted).is_empty(),
            "{:?}",
            run(&long_conv, quoted)
        );
    }
}
