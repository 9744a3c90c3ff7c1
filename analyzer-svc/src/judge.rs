//! Model-judged detectors: what rules cannot see (paraphrased contradictions, swapped speakers,
//! omitted key facts), asked of an LLM in the style of FineSurE: sentence-level fact checking,
//! and key-fact alignment.
//!
//! This module is transport-free: a judge builds a [`JudgeRequest`] (prompt plus the JSON schema
//! the endpoint must constrain its output to) and parses the answer *strictly* into findings. The
//! gRPC layer sends the request (Editor.Generate) and hands back the text. A malformed answer is
//! an error, never an empty (clean-looking) result; [`run_judge`] retries it once.

use std::collections::BTreeSet;
use std::fmt::{self, Write as _};

use arf_common::dataset::Conversation;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::finding::{Evidence, Finding, TextSpan};
use crate::taxonomy::CategoryId;
use crate::text;

/// Names of the model-judged detectors, as used in [`crate::AnalyzeOptions::detectors`].
pub const JUDGE_DETECTORS: &[&str] = &[FACT_CHECK, KEY_FACTS];
pub const FACT_CHECK: &str = "judge.fact_check";
pub const KEY_FACTS: &str = "judge.key_facts";

/// Confidence of a model-judged finding: a judge is useful, not infallible.
const JUDGE_CONFIDENCE: f32 = 0.7;

/// What to send to the inference endpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct JudgeRequest {
    pub system: String,
    pub prompt: String,
    /// JSON schema the output must follow (for constrained decoding).
    pub json_schema: Value,
    pub max_tokens: u32,
    /// 0: the judge should be deterministic.
    pub temperature: f32,
}

/// The answer did not follow the contract.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed answer from {detector}: {reason}")]
pub struct MalformedAnswer {
    pub detector: &'static str,
    pub reason: String,
}

/// A judge run that produced no findings to trust. `E` is the transport's error, kept whole so
/// the caller can tell an endpoint that sheds load (to wait for) from one that failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JudgeError<E: fmt::Display> {
    /// Two malformed answers in a row: a detector failure, reported as such.
    #[error("{0} (after one retry)")]
    Malformed(MalformedAnswer),
    /// The transport failed (unreachable endpoint, deadline): not retried here.
    #[error("{detector}: generation failed: {cause}")]
    Transport { detector: &'static str, cause: E },
}

/// A model-judged detector.
pub trait ModelJudge: Send + Sync {
    fn name(&self) -> &'static str;
    fn categories(&self) -> &'static [CategoryId];
    fn request(&self, conversation: &Conversation, summary: &str) -> JudgeRequest;
    fn parse(
        &self,
        conversation: &Conversation,
        summary: &str,
        answer: &str,
    ) -> Result<Vec<Finding>, MalformedAnswer>;
}

/// Both judges.
pub fn judges() -> Vec<Box<dyn ModelJudge>> {
    vec![Box::new(FactCheck), Box::new(KeyFactAlignment)]
}

/// Runs a judge through `generate` (the transport: Editor.Generate in the service, a closure in
/// tests): one retry on a malformed answer, then [`JudgeError::Malformed`].
pub async fn run_judge<E, F, Fut>(
    judge: &dyn ModelJudge,
    conversation: &Conversation,
    summary: &str,
    generate: F,
) -> Result<Vec<Finding>, JudgeError<E>>
where
    E: fmt::Display,
    F: FnMut(JudgeRequest) -> Fut,
    Fut: std::future::Future<Output = Result<String, E>>,
{
    let request = judge.request(conversation, summary);
    ask_strictly(
        judge.name(),
        &request,
        |answer| judge.parse(conversation, summary, answer),
        generate,
    )
    .await
}

/// Sends `request` through `generate` and parses the answer with `parse`; one retry on a
/// malformed answer, then [`JudgeError::Malformed`]. Every model-judged answer goes through it.
pub async fn ask_strictly<T, E, F, Fut>(
    name: &'static str,
    request: &JudgeRequest,
    parse: impl Fn(&str) -> Result<T, MalformedAnswer>,
    mut generate: F,
) -> Result<T, JudgeError<E>>
where
    E: fmt::Display,
    F: FnMut(JudgeRequest) -> Fut,
    Fut: std::future::Future<Output = Result<String, E>>,
{
    let mut last = None;
    for _ in 0..2 {
        let answer = generate(request.clone())
            .await
            .map_err(|cause| JudgeError::Transport {
                detector: name,
                cause,
            })?;
        match parse(&answer) {
            Ok(value) => return Ok(value),
            Err(e) => last = Some(e),
        }
    }
    Err(JudgeError::Malformed(last.expect("two attempts were made")))
}

fn transcript(conversation: &Conversation) -> String {
    let mut out = String::new();
    for (i, t) in conversation.turns.iter().enumerate() {
        let _ = writeln!(
            out,
            "[{i}] {}: {}",
            t.role.as_str(),
            t.text.replace('\n', " ")
        );
    }
    out
}

fn numbered_sentences(summary: &str) -> (Vec<(usize, usize)>, String) {
    let sentences = text::sentences(summary);
    let mut out = String::new();
    for (i, &(a, b)) in sentences.iter().enumerate() {
        let _ = writeln!(out, "({}) {}", i + 1, summary[a..b].replace('\n', " "));
    }
    (sentences, out)
}

/// Strict JSON: the whole answer is one JSON value (whitespace around it allowed, nothing else).
pub(crate) fn strict<'a, T: Deserialize<'a>>(
    detector: &'static str,
    answer: &'a str,
) -> Result<T, MalformedAnswer> {
    serde_json::from_str(answer.trim()).map_err(|e| MalformedAnswer {
        detector,
        reason: e.to_string(),
    })
}

pub(crate) fn malformed(detector: &'static str, reason: impl Into<String>) -> MalformedAnswer {
    MalformedAnswer {
        detector,
        reason: reason.into(),
    }
}

fn evidence(conversation: &Conversation, turn: Option<usize>) -> Evidence {
    match turn {
        Some(t) => Evidence::turn(
            &conversation.turns,
            t,
            0,
            conversation.turns.get(t).map_or(0, |x| x.text.len()),
        ),
        None => Evidence::NotFound,
    }
}

// ---------------------------------------------------------------------------------------------
// Sentence-level fact checking.

/// For every summary sentence: supported by the conversation, or which error it makes.
pub struct FactCheck;

const FACT_CHECK_CATEGORIES: [CategoryId; 4] = [
    CategoryId::HallucinatedFact,
    CategoryId::UnsupportedAction,
    CategoryId::SpeakerAttribution,
    CategoryId::Polarity,
];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FactCheckAnswer {
    sentences: Vec<SentenceVerdict>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SentenceVerdict {
    sentence: usize,
    verdict: String,
    category: Option<String>,
    evidence_turn: Option<usize>,
    reason: String,
}

impl ModelJudge for FactCheck {
    fn name(&self) -> &'static str {
        FACT_CHECK
    }

    fn categories(&self) -> &'static [CategoryId] {
        &FACT_CHECK_CATEGORIES
    }

    fn request(&self, conversation: &Conversation, summary: &str) -> JudgeRequest {
        let (sentences, numbered) = numbered_sentences(summary);
        let categories: Vec<&str> = FACT_CHECK_CATEGORIES.iter().map(|c| c.as_str()).collect();
        let mut prompt = String::new();
        let _ = write!(
            prompt,
            "Conversation (turns numbered from 0):\n{}\nSummary sentences (numbered from 1):\n{}\n\
             For EACH summary sentence, decide whether the conversation supports it.\n\
             - verdict \"supported\": everything in it is stated or directly implied by the conversation; category null.\n\
             - verdict \"error\": give the category:\n",
            transcript(conversation),
            numbered
        );
        for c in FACT_CHECK_CATEGORIES {
            let _ = writeln!(prompt, "  - {}: {}", c.as_str(), c.category().definition);
        }
        let _ = write!(
            prompt,
            "evidence_turn: the turn that shows the sentence is right or wrong, or null if no turn is relevant.\n\
             reason: one short sentence.\nAnswer with JSON only, one entry per sentence, {} entries.",
            sentences.len()
        );
        let schema = json!({
            "type": "object",
            "additionalProperties": false,
            "required": ["sentences"],
            "properties": {"sentences": {
                "type": "array", "minItems": sentences.len(), "maxItems": sentences.len(),
                "items": {
                    "type": "object",
                    "additionalProperties": false,
                    "required": ["sentence", "verdict", "category", "evidence_turn", "reason"],
                    "properties": {
                        "sentence": {"type": "integer", "minimum": 1, "maximum": sentences.len()},
                        "verdict": {"enum": ["supported", "error"]},
                        "category": {"enum": categories.iter().map(|c| Value::from(*c)).chain([Value::Null]).collect::<Vec<_>>()},
                        "evidence_turn": {"type": ["integer", "null"], "minimum": 0},
                        "reason": {"type": "string", "maxLength": 500}
                    }
                }
            }}
        });
        JudgeRequest {
            system: "You are a meticulous fact checker of customer-service conversation summaries. You answer in JSON only.".into(),
            prompt,
            json_schema: schema,
            max_tokens: 128 + 96 * sentences.len() as u32,
            temperature: 0.0,
        }
    }

    fn parse(
        &self,
        conversation: &Conversation,
        summary: &str,
        answer: &str,
    ) -> Result<Vec<Finding>, MalformedAnswer> {
        let parsed: FactCheckAnswer = strict(FACT_CHECK, answer)?;
        let sentences = text::sentences(summary);
        if parsed.sentences.len() != sentences.len() {
            return Err(malformed(
                FACT_CHECK,
                format!(
                    "{} verdicts for {} sentences",
                    parsed.sentences.len(),
                    sentences.len()
                ),
            ));
        }
        let mut seen = BTreeSet::new();
        let mut findings = Vec::new();
        for v in parsed.sentences {
            let Some(&(a, b)) = v.sentence.checked_sub(1).and_then(|i| sentences.get(i)) else {
                return Err(malformed(
                    FACT_CHECK,
                    format!("sentence {} does not exist", v.sentence),
                ));
            };
            if !seen.insert(v.sentence) {
                return Err(malformed(
                    FACT_CHECK,
                    format!("sentence {} judged twice", v.sentence),
                ));
            }
            if v.evidence_turn
                .is_some_and(|t| t >= conversation.turns.len())
            {
                return Err(malformed(
                    FACT_CHECK,
                    format!("evidence_turn {:?} does not exist", v.evidence_turn),
                ));
            }
            match (v.verdict.as_str(), v.category.as_deref()) {
                ("supported", None) => {}
                ("error", Some(c)) => {
                    let category = FACT_CHECK_CATEGORIES
                        .into_iter()
                        .find(|x| x.as_str() == c)
                        .ok_or_else(|| {
                            malformed(
                                FACT_CHECK,
                                format!("category `{c}` is not one a fact check can give"),
                            )
                        })?;
                    let span = TextSpan::of(summary, a, b);
                    findings.push(Finding::new(
                        category,
                        FACT_CHECK,
                        span,
                        evidence(conversation, v.evidence_turn),
                        JUDGE_CONFIDENCE,
                        v.reason,
                    ));
                }
                (verdict, category) => {
                    return Err(malformed(
                        FACT_CHECK,
                        format!("verdict `{verdict}` with category {category:?}"),
                    ));
                }
            }
        }
        Ok(findings)
    }
}

// ---------------------------------------------------------------------------------------------
// Key-fact alignment.

/// Lists the conversation's key facts (issue, response, outcome) and aligns each to the summary
/// sentences that state it; a key fact no sentence states is an omission.
pub struct KeyFactAlignment;

const MAX_KEY_FACTS: usize = 8;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFactAnswer {
    key_facts: Vec<KeyFact>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFact {
    fact: String,
    turn: usize,
    kind: String,
    in_summary: bool,
    sentences: Vec<usize>,
}

impl ModelJudge for KeyFactAlignment {
    fn name(&self) -> &'static str {
        KEY_FACTS
    }

    fn categories(&self) -> &'static [CategoryId] {
        &[CategoryId::Omission]
    }

    fn request(&self, conversation: &Conversation, summary: &str) -> JudgeRequest {
        let (sentences, numbered) = numbered_sentences(summary);
        let prompt = format!(
            "Conversation (turns numbered from 0):\n{}\nSummary sentences (numbered from 1):\n{}\n\
             List the key facts of the conversation, at most {MAX_KEY_FACTS}, each one short sentence:\n\
             the customer's issue (kind \"issue\"), what the agent said or did about it (kind \"response\"),\n\
             how it ended if it did (kind \"outcome\"), and other facts a reader needs (kind \"detail\").\n\
             For each: the turn it comes from, whether the summary states it (in_summary), and the numbers\n\
             of the summary sentences that state it (empty when in_summary is false). Answer with JSON only.",
            transcript(conversation),
            numbered
        );
        let schema = json!({
            "type": "object",
            "additionalProperties": false,
            "required": ["key_facts"],
            "properties": {"key_facts": {
                "type": "array", "minItems": 1, "maxItems": MAX_KEY_FACTS,
                "items": {
                    "type": "object",
                    "additionalProperties": false,
                    "required": ["fact", "turn", "kind", "in_summary", "sentences"],
                    "properties": {
                        "fact": {"type": "string", "minLength": 1, "maxLength": 300},
                        "turn": {"type": "integer", "minimum": 0, "maximum": conversation.turns.len().saturating_sub(1)},
                        "kind": {"enum": ["issue", "response", "outcome", "detail"]},
                        "in_summary": {"type": "boolean"},
                        "sentences": {"type": "array", "items": {"type": "integer", "minimum": 1, "maximum": sentences.len().max(1)}}
                    }
                }
            }}
        });
        JudgeRequest {
            system: "You extract key facts from customer-service conversations and check summaries against them. You answer in JSON only.".into(),
            prompt,
            json_schema: schema,
            max_tokens: 1024,
            temperature: 0.0,
        }
    }

    fn parse(
        &self,
        conversation: &Conversation,
        summary: &str,
        answer: &str,
    ) -> Result<Vec<Finding>, MalformedAnswer> {
        let parsed: KeyFactAnswer = strict(KEY_FACTS, answer)?;
        let n_sentences = text::sentences(summary).len();
        if parsed.key_facts.is_empty() || parsed.key_facts.len() > MAX_KEY_FACTS {
            return Err(malformed(
                KEY_FACTS,
                format!(
                    "{} key facts (expected 1 to {MAX_KEY_FACTS})",
                    parsed.key_facts.len()
                ),
            ));
        }
        let mut findings = Vec::new();
        for (i, k) in parsed.key_facts.into_iter().enumerate() {
            if k.fact.trim().is_empty() {
                return Err(malformed(
                    KEY_FACTS,
                    format!("key_facts[{i}].fact is empty"),
                ));
            }
            if k.turn >= conversation.turns.len() {
                return Err(malformed(
                    KEY_FACTS,
                    format!("key_facts[{i}].turn {} does not exist", k.turn),
                ));
            }
            if !matches!(k.kind.as_str(), "issue" | "response" | "outcome" | "detail") {
                return Err(malformed(
                    KEY_FACTS,
                    format!("key_facts[{i}].kind `{}` is unknown", k.kind),
                ));
            }
            if let Some(s) = k.sentences.iter().find(|&&s| s == 0 || s > n_sentences) {
                return Err(malformed(
                    KEY_FACTS,
                    format!("key_facts[{i}] cites sentence {s}, which does not exist"),
                ));
            }
            if k.in_summary == k.sentences.is_empty() {
                return Err(malformed(
                    KEY_FACTS,
                    format!(
                        "key_facts[{i}]: in_summary is {} but {} sentences are cited",
                        k.in_summary,
                        k.sentences.len()
                    ),
                ));
            }
            // Missing details are a judgment call; a missing issue, response or outcome is an omission.
            if !k.in_summary && k.kind != "detail" {
                let span = TextSpan::of(summary, 0, summary.len());
                let why = format!("the summary leaves out the {}: {}", k.kind, k.fact.trim());
                findings.push(Finding::new(
                    CategoryId::Omission,
                    KEY_FACTS,
                    span,
                    evidence(conversation, Some(k.turn)),
                    JUDGE_CONFIDENCE,
                    why,
                ));
            }
        }
        Ok(findings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arf_common::dataset::{Role, Turn};
    use futures::executor::block_on;

    fn conv() -> Conversation {
        Conversation {
            id: "c".into(),
            channel: "chat".into(),
            turns: vec![
                Turn {
                    role: Role::Customer,
                    text: "My router keeps dropping wifi".into(),
                },
                Turn {
                    role: Role::Agent,
                    text: "Please restart it; if that fails we'll send an engineer".into(),
                },
            ],
            metadata: Default::default(),
        }
    }

    const SUMMARY: &str = "Customer's wifi keeps dropping. Customer sent an engineer.";

    #[test]
    fn fact_check_request_numbers_sentences_and_turns_and_constrains_the_count() {
        let r = FactCheck.request(&conv(), SUMMARY);
        assert!(
            r.prompt.contains("[1] agent: Please restart"),
            "{}",
            r.prompt
        );
        assert!(r.prompt.contains("(2) Customer sent an engineer."));
        assert_eq!(r.json_schema["properties"]["sentences"]["minItems"], 2);
        assert_eq!(r.temperature, 0.0);
    }

    #[test]
    fn fact_check_parses_a_good_answer_into_findings() {
        let answer = r#" {"sentences": [
            {"sentence": 1, "verdict": "supported", "category": null, "evidence_turn": 0, "reason": "turn 0"},
            {"sentence": 2, "verdict": "error", "category": "speaker_attribution", "evidence_turn": 1, "reason": "the agent offered the engineer"}
        ]} "#;
        let f = FactCheck.parse(&conv(), SUMMARY, answer).unwrap();
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].category, CategoryId::SpeakerAttribution);
        assert_eq!(f[0].summary_span.text, "Customer sent an engineer.");
        assert!(matches!(&f[0].evidence, Evidence::Turn { turn: 1, .. }));
        assert_eq!(f[0].detector, FACT_CHECK);
    }

    #[test]
    fn fact_check_rejects_malformed_answers() {
        let ok1 = r#"{"sentence": 1, "verdict": "supported", "category": null, "evidence_turn": null, "reason": "x"}"#;
        for bad in [
            "".to_string(),
            "Sure! {\"sentences\": []}".to_string(),
            format!("```json\n{{\"sentences\": [{ok1}, {ok1}]}}\n```"),
            format!("{{\"sentences\": [{ok1}]}}"),
            format!("{{\"sentences\": [{ok1}, {ok1}]}}"),
            format!(
                "{{\"sentences\": [{ok1}, {}]}}",
                ok1.replace("\"sentence\": 1", "\"sentence\": 3")
            ),
            format!(
                "{{\"sentences\": [{ok1}, {}]}}",
                ok1.replace("\"sentence\": 1", "\"sentence\": 2")
                    .replace("null, \"evidence", "\"omission\", \"evidence")
                    .replace("supported", "error")
            ),
            format!(
                "{{\"sentences\": [{ok1}, {}]}}",
                ok1.replace("\"sentence\": 1", "\"sentence\": 2")
                    .replace("supported", "error")
            ),
            format!(
                "{{\"sentences\": [{ok1}, {}]}}",
                ok1.replace("\"sentence\": 1", "\"sentence\": 2")
                    .replace("\"evidence_turn\": null", "\"evidence_turn\": 7")
            ),
            format!(
                "{{\"sentences\": [{ok1}, {}], \"extra\": 1}}",
                ok1.replace("\"sentence\": 1", "\"sentence\": 2")
            ),
            format!(
                "{{\"sentences\": [{ok1}, {}]}}",
                ok1.replace("\"sentence\": 1", "\"sentence\": 2")
                    .replace("\"reason\": \"x\"", "\"reason\": \"x\", \"score\": 3")
            ),
        ] {
            assert!(
                FactCheck.parse(&conv(), SUMMARY, &bad).is_err(),
                "accepted: {bad}"
            );
        }
    }

    #[test]
    fn key_facts_turn_missing_issue_response_outcome_into_omissions() {
        let answer = r#"{"key_facts": [
            {"fact": "Router drops wifi", "turn": 0, "kind": "issue", "in_summary": true, "sentences": [1]},
            {"fact": "Agent asks to restart the router", "turn": 1, "kind": "response", "in_summary": false, "sentences": []},
            {"fact": "An engineer may be sent", "turn": 1, "kind": "detail", "in_summary": false, "sentences": []}
        ]}"#;
        let f = KeyFactAlignment.parse(&conv(), SUMMARY, answer).unwrap();
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].category, CategoryId::Omission);
        assert!(f[0].explanation.contains("restart the router"));
        for bad in [
            r#"{"key_facts": []}"#,
            r#"{"key_facts": [{"fact": "x", "turn": 5, "kind": "issue", "in_summary": false, "sentences": []}]}"#,
            r#"{"key_facts": [{"fact": "x", "turn": 0, "kind": "vibe", "in_summary": false, "sentences": []}]}"#,
            r#"{"key_facts": [{"fact": "x", "turn": 0, "kind": "issue", "in_summary": true, "sentences": []}]}"#,
            r#"{"key_facts": [{"fact": "x", "turn": 0, "kind": "issue", "in_summary": true, "sentences": [3]}]}"#,
            r#"{"key_facts": [{"fact": " ", "turn": 0, "kind": "issue", "in_summary": false, "sentences": []}]}"#,
            r#"{"key_facts": [{"fact": "x", "turn": 0, "kind": "issue", "in_summary": false}]}"#,
        ] {
            assert!(
                KeyFactAlignment.parse(&conv(), SUMMARY, bad).is_err(),
                "accepted: {bad}"
            );
        }
    }

    #[test]
    fn run_judge_retries_a_malformed_answer_once_then_fails() {
        let good = r#"{"sentences": [
            {"sentence": 1, "verdict": "supported", "category": null, "evidence_turn": 0, "reason": "ok"},
            {"sentence": 2, "verdict": "supported", "category": null, "evidence_turn": 1, "reason": "ok"}]}"#;
        let mut answers = vec!["not json", good].into_iter();
        let mut calls = 0;
        let out = block_on(run_judge(&FactCheck, &conv(), SUMMARY, |_| {
            calls += 1;
            std::future::ready(Ok::<_, String>(answers.next().unwrap().to_string()))
        }));
        assert_eq!((out.unwrap().len(), calls), (0, 2));
        let mut calls = 0;
        let out = block_on(run_judge(&FactCheck, &conv(), SUMMARY, |_| {
            calls += 1;
            std::future::ready(Ok::<_, String>("{}".to_string()))
        }));
        assert!(matches!(out, Err(JudgeError::Malformed(_))));
        assert_eq!(calls, 2);
        let out = block_on(run_judge(&KeyFactAlignment, &conv(), SUMMARY, |_| {
            std::future::ready(Err::<String, _>("deadline exceeded"))
        }));
        assert!(matches!(out, Err(JudgeError::Transport { .. })));
    }
}
