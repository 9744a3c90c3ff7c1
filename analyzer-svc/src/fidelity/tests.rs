use super::*;
use crate::detectors::testing::turns;
use crate::taxonomy::CategoryId;

fn conversation() -> Vec<Turn> {
    turns(&[
        (
            "c",
            "I returned the blue jacket (order 77120) two weeks ago and still have not received my money back. My phone is 555-201-8841 if you need it.",
        ),
        (
            "a",
            "Sorry about the wait! I can see the return arrived at our warehouse on Monday. Could you confirm the email on the order?",
        ),
        ("c", "It is jane.doe@example.com, thanks."),
        (
            "a",
            "Thanks Jane. The jacket was out of stock, so I have sent you a replacement in the same size instead; it ships tomorrow and you will get a tracking link by email.",
        ),
        ("c", "Great, a replacement works for me. Thank you!"),
    ])
}

const ORIGINAL: &str = "The customer returned a blue jacket two weeks ago and had not been refunded; their phone number is 555-201-8841. The agent confirmed the return reached the warehouse and sent a replacement in the same size, which ships tomorrow with a tracking link by email.";

/// The original's flagged span: the phone number clause.
fn pii_span() -> Flagged {
    Flagged {
        start: ORIGINAL.find("; their phone").unwrap(),
        end: ORIGINAL.find(". The agent").unwrap(),
        category: CategoryId::PiiExposure,
    }
}

fn verdict(candidate: &str) -> Verdict {
    let turns = conversation();
    let flagged = [pii_span()];
    check(
        &Revision {
            turns: &turns,
            original: ORIGINAL,
            flagged: &flagged,
            candidate,
        },
        &Thresholds::default(),
    )
}

fn refused_by(candidate: &str) -> Vec<Check> {
    let v = verdict(candidate);
    v.refusals.iter().map(|r| r.check).collect()
}

#[test]
fn accepts_a_revision_that_deletes_the_flagged_pii_span() {
    let candidate = "The customer returned a blue jacket two weeks ago and had not been refunded. The agent confirmed the return reached the warehouse and sent a replacement in the same size, which ships tomorrow with a tracking link by email.";
    let v = verdict(candidate);
    assert!(v.passed(), "{:?}", v.refusals);
    assert!(v.close, "{:?}", v.figures);
    assert_eq!(v.figures.content_kept, 1.0);
}

#[test]
fn accepts_a_light_rewording() {
    let candidate = "The customer sent back a blue jacket two weeks ago without being refunded. The agent confirmed that the warehouse received the return and sent a replacement in the same size; it ships tomorrow and a tracking link will follow by email.";
    let v = verdict(candidate);
    assert!(v.passed(), "{:?} {:?}", v.refusals, v.figures);
}

#[test]
fn refuses_template_tokens() {
    assert!(refused_by("{{#1}}").contains(&Check::Markup));
    assert!(
        refused_by(&format!("{ORIGINAL} <|im_end|>")).contains(&Check::Markup),
        "a chat token after a good summary"
    );
}

#[test]
fn refuses_a_five_word_summary_of_a_long_conversation() {
    let refused = refused_by("The customer returned a jacket.");
    assert!(refused.contains(&Check::Length), "{refused:?}");
    assert!(refused.contains(&Check::ContentDropped), "{refused:?}");
}

#[test]
fn refuses_a_repeated_sentence() {
    let s = "The agent sent a replacement jacket that ships tomorrow.";
    let refused = refused_by(&format!("{ORIGINAL} {s} {s} {s}"));
    assert!(refused.contains(&Check::Repetition), "{refused:?}");
    // The same phrase looping without sentence ends.
    let looped = "the agent sent a replacement jacket ".repeat(5);
    assert!(refused_by(&looped).contains(&Check::Repetition));
}

#[test]
fn refuses_an_invented_refund() {
    let candidate = "The customer returned a blue jacket two weeks ago. We are providing a 100% refund to the customer and a $25 voucher. The agent sent a replacement in the same size, which ships tomorrow with a tracking link by email.";
    let v = verdict(candidate);
    assert!(
        v.refusals
            .iter()
            .any(|r| r.check == Check::UnsupportedContent),
        "{v:?}"
    );
    assert!(v.figures.new_numbers.contains(&"100".to_string()), "{v:?}");
    assert!(
        v.figures.new_actions.iter().any(|a| a == "voucher"),
        "{v:?}"
    );
}

#[test]
fn refuses_an_invented_name() {
    let candidate = "The customer returned a blue jacket two weeks ago and had not been refunded. The agent confirmed the return reached the Dublin warehouse and sent a replacement in the same size, which ships tomorrow with a tracking link by email.";
    let v = verdict(candidate);
    assert_eq!(v.figures.new_names, ["Dublin"], "{v:?}");
    assert!(!v.passed());
}

#[test]
fn refuses_a_transcript_copy() {
    let candidate = "Customer: I returned the blue jacket (order 77120) two weeks ago and still have not received my money back. Agent: Sorry about the wait! I can see the return arrived at our warehouse on Monday.";
    assert!(refused_by(candidate).contains(&Check::TranscriptCopy));
    // Without labels: long verbatim runs of the turns.
    let pasted = "I returned the blue jacket (order 77120) two weeks ago and still have not received my money back. Sorry about the wait! I can see the return arrived at our warehouse on Monday. The jacket was out of stock, so I have sent you a replacement in the same size instead.";
    assert!(refused_by(pasted).contains(&Check::TranscriptCopy));
}

#[test]
fn refuses_another_language() {
    let german = "Der Kunde hat eine blaue Jacke vor zwei Wochen zurückgeschickt und noch kein Geld erhalten. Die Agentin schickt stattdessen einen Ersatz in derselben Größe, der morgen versandt wird.";
    assert!(refused_by(german).contains(&Check::Language));
    let russian =
        "Клиент вернул синюю куртку две недели назад. Агент отправил замену того же размера.";
    assert!(refused_by(russian).contains(&Check::Language));
}

#[test]
fn a_whole_summary_finding_still_needs_a_summary() {
    let turns = conversation();
    // A finding over the whole original that is fixed by deleting (a wrong fact, say) frees its
    // content, but a handful of words is still no summary.
    let flagged = [Flagged {
        start: 0,
        end: ORIGINAL.len(),
        category: CategoryId::HallucinatedFact,
    }];
    let v = check(
        &Revision {
            turns: &turns,
            original: ORIGINAL,
            flagged: &flagged,
            candidate: "The customer returned a jacket.",
        },
        &Thresholds::default(),
    );
    assert_eq!(
        v.refusals.iter().map(|r| r.check).collect::<Vec<_>>(),
        [Check::Length]
    );
}

#[test]
fn an_omission_or_bullets_flagged_whole_free_nothing() {
    let turns = conversation();
    for category in [
        CategoryId::Omission,
        CategoryId::Truncation,
        CategoryId::FormatViolation,
    ] {
        let flagged = [Flagged {
            start: 0,
            end: ORIGINAL.len(),
            category,
        }];
        let v = check(
            &Revision {
                turns: &turns,
                original: ORIGINAL,
                flagged: &flagged,
                candidate: "The customer returned a blue jacket two weeks ago and had not been refunded.",
            },
            &Thresholds::default(),
        );
        assert!(
            v.refusals.iter().any(|r| r.check == Check::ContentDropped),
            "{category:?}: {v:?}"
        );
    }
}

#[test]
fn refuses_a_revision_cut_off_mid_sentence() {
    let cut = "The customer returned a blue jacket two weeks ago and had not been refunded. The agent confirmed the return reached the warehouse and sent a replacement in the same size, which ships tomorrow with a";
    assert_eq!(refused_by(cut), [Check::CutOff]);
}

#[test]
fn every_check_has_a_distinct_name() {
    let names: std::collections::HashSet<_> = Check::ALL.iter().map(|c| c.as_str()).collect();
    assert_eq!(names.len(), Check::ALL.len());
}

/// Issue 34, on both shared TweetSumm sets: the ideal fixes still pass (>= 95%), and a span
/// edit a random-weight editor makes (random words, or words glued to the next) passes at most
/// once in 200 (the one seen: "Agent informed they will" -> "Will aren", a truncation
/// completed with one word, where a completion is judged by the share rules). A lone function
/// word is mostly a deletion once spliced, so it has no target.
#[test]
fn ideal_fixes_pass_and_random_span_edits_do_not_on_tweetsumm() {
    let corpus =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/tweetsumm");
    if !corpus.exists() {
        eprintln!(
            "skipped: the TweetSumm corpus is not at {}",
            corpus.display()
        );
        return;
    }
    for file in ["teacher_train.jsonl", "analyzer_bench_dev.jsonl"] {
        let tallies = super::eval::run(&corpus.join(file), &Thresholds::default(), |_| {}).unwrap();
        let ideal = &tallies["ideal_fix"];
        assert!(ideal.n >= 70, "{file}: {ideal:?}");
        assert!(
            ideal.pass_rate() >= 0.95,
            "{file}: ideal fixes pass {:.1}%: {ideal:?}",
            ideal.pass_rate() * 100.0
        );
        let random = &tallies["span_random_words"];
        assert!(random.n >= 60, "{file}: {random:?}");
        assert!(random.passed * 200 <= random.n, "{file}: {random:?}");
        assert_eq!(tallies["span_glued"].passed, 0, "{file}");
    }
}

/// Whether `v` has a refusal by `check` whose message mentions `text`.
fn refused_for(v: &Verdict, check: Check, text: &str) -> bool {
    v.refusals
        .iter()
        .any(|r| r.check == check && r.message.contains(text))
}

fn verdict_on(original: &str, span: &str, category: CategoryId, candidate: &str) -> Verdict {
    let turns = conversation();
    let start = original.find(span).unwrap();
    let flagged = [Flagged {
        start,
        end: start + span.len(),
        category,
    }];
    check(
        &Revision {
            turns: &turns,
            original,
            flagged: &flagged,
            candidate,
        },
        &Thresholds::default(),
    )
}

/// Seen on SmolLM2's span edits: "delayed by 17 days but" became "delayed by but".
#[test]
fn refuses_a_figure_deleted_from_the_middle_of_a_sentence() {
    let original = ORIGINAL.replace("two weeks ago", "19 days ago");
    let cut = original.replace("19 days ", "");
    let v = verdict_on(&original, "19 days", CategoryId::HallucinatedFact, &cut);
    assert!(refused_for(&v, Check::Seam, "`19 days`"), "{v:?}");
    // The conversation's figure in its place passes.
    let fixed = verdict_on(&original, "19 days", CategoryId::HallucinatedFact, ORIGINAL);
    assert!(fixed.passed(), "{:?}", fixed.refusals);
}

/// Seen on SmolLM2's span edits of a truncated tail: "... to the tv. Customer has provided the
/// URL as" became "... to the tv. Customer".
#[test]
fn refuses_a_truncated_tail_trimmed_to_its_subject() {
    let first = "The customer returned a blue jacket two weeks ago and had not been refunded.";
    let original = format!("{first} The agent has confirmed the return as");
    let span = "has confirmed the return as";
    let bare = format!("{first} The agent ");
    let v = verdict_on(&original, span, CategoryId::Truncation, &bare);
    assert!(refused_for(&v, Check::Seam, "one word"), "{v:?}");
    // Ending the summary where its last whole sentence ends passes the seam check.
    let trimmed = verdict_on(
        &original,
        &format!(" The agent {span}"),
        CategoryId::Truncation,
        first,
    );
    assert!(
        !trimmed.refusals.iter().any(|r| r.check == Check::Seam),
        "{:?}",
        trimmed.refusals
    );
}

/// Seen on SmolLM2's span edits: "Customer requests for the name, ID" became "Customer, ID".
#[test]
fn a_wrong_speaker_is_fixed_by_naming_the_other_party_not_by_dropping_the_act() {
    let original = ORIGINAL.replace("The agent confirmed", "The customer confirmed");
    let span = "The customer confirmed the return reached the warehouse";
    let named = verdict_on(&original, span, CategoryId::SpeakerAttribution, ORIGINAL);
    assert!(named.passed(), "{:?}", named.refusals);
    let swallowed = original.replace(span, "The agent");
    let v = verdict_on(&original, span, CategoryId::SpeakerAttribution, &swallowed);
    assert!(refused_for(&v, Check::ContentDropped, "confirmed"), "{v:?}");
}
