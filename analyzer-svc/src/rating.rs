//! A judge's 1-5 rating of a summary, for evaluation: the same model endpoint as the
//! model-judged detectors, constrained to `{"rating": n}`, parsed strictly and retried once
//! through [`crate::judge::ask_strictly`]. A rating that never parses is a failure, reported as
//! such, never a guessed number.

use arf_common::dataset::{Conversation, summarize_user_prompt};
use serde::Deserialize;
use serde_json::json;

use crate::judge::{JudgeRequest, MalformedAnswer, malformed, strict};

/// The rating's name where a failure is reported.
pub const RATING: &str = "judge.rating";

/// The rating of an empty summary, given without asking.
pub const EMPTY_SUMMARY_RATING: u8 = 1;

pub fn request(conversation: &Conversation, summary: &str) -> JudgeRequest {
    JudgeRequest {
        system: "You are a strict judge of customer-service summaries.".into(),
        prompt: format!(
            "{}\nSummary to rate:\n{summary}\n\nRate the summary from 1 (useless or wrong) to 5 \
             (complete, faithful, concise). Answer with JSON: {{\"rating\": n}}.",
            summarize_user_prompt(conversation)
        ),
        json_schema: json!({
            "x-guidance": {"whitespace_flexible": false},
            "type": "object",
            "properties": {"rating": {"type": "integer", "minimum": 1, "maximum": 5}},
            "required": ["rating"],
            "additionalProperties": false,
        }),
        max_tokens: 16,
        temperature: 0.0,
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Answer {
    rating: i64,
}

pub fn parse(answer: &str) -> Result<u8, MalformedAnswer> {
    let Answer { rating } = strict(RATING, answer)?;
    u8::try_from(rating)
        .ok()
        .filter(|r| (1..=5).contains(r))
        .ok_or_else(|| malformed(RATING, format!("rating {rating} is not in 1..=5")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::judge::{JudgeError, ask_strictly};

    #[test]
    fn parses_only_a_rating_in_range() {
        assert_eq!(parse(r#" {"rating": 4} "#), Ok(4));
        for bad in [
            r#"{"rating": 0}"#,
            r#"{"rating": 6}"#,
            r#"{"rating": 3, "why": "x"}"#,
            "4",
            r#"{"rating": "4"}"#,
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_malformed_rating_is_asked_again_once() {
        let conversation = Conversation {
            id: "c".into(),
            channel: "chat".into(),
            turns: vec![],
            metadata: Default::default(),
        };
        let request = request(&conversation, "s");
        let mut answers = ["{\"rating\": 9}", "{\"rating\": 2}"].into_iter();
        let rating = futures::executor::block_on(ask_strictly(RATING, &request, parse, |_| {
            std::future::ready(Ok::<_, String>(answers.next().unwrap().to_string()))
        }));
        assert_eq!(rating, Ok(2));
        let never = futures::executor::block_on(ask_strictly(RATING, &request, parse, |_| {
            std::future::ready(Ok::<_, String>("{}".to_string()))
        }));
        assert!(matches!(never, Err(JudgeError::Malformed(_))));
    }
}
