//! Revise and ReviseStream over gRPC against the tiny model loaded through mistral.rs.

use crate::support::*;
use arf_proto::v1::{Conversation, ReviseRequest, revise_event};
use tonic::Code;

#[tokio::test]
async fn revise_with_findings_returns_a_parsed_summary_and_usage() {
    let t = start(|c| c.default_max_tokens = 512).await;
    let answer = t
        .client()
        .revise(revise_request(findings(), 0))
        .await
        .unwrap()
        .into_inner();
    assert!(answer.model_called);
    assert!(!answer.revised_summary.trim().is_empty());
    assert_ne!(
        answer.revised_summary, SUMMARY,
        "the tiny model's output is random, never the input"
    );
    // Both findings point at spans: each span is replaced, the text around them stays.
    let revised = answer.revised_summary.to_lowercase();
    assert!(
        revised.starts_with("the customer's") && revised.contains("arrived late and the agent"),
        "{}",
        answer.revised_summary
    );
    let usage = answer.usage.unwrap();
    assert!(
        usage.input_tokens > 100,
        "the prompts hold the conversation and findings: {usage:?}"
    );
    assert!(usage.output_tokens > 0);
    let timing = answer.timing.unwrap();
    assert!(
        timing.total_seconds > 0.0 && timing.time_to_first_token_seconds <= timing.total_seconds
    );
    assert_eq!(
        answer.finish_reason, "stop",
        "the JSON closed before the token budget"
    );
}

#[tokio::test]
async fn revise_without_findings_returns_the_summary_without_a_model_call() {
    let t = start(|_| {}).await;
    let before = t.editor().load_snapshot().engine.sampled_tokens;
    let answer = t
        .client()
        .revise(revise_request(vec![], 0))
        .await
        .unwrap()
        .into_inner();
    assert!(!answer.model_called);
    assert_eq!(answer.revised_summary, SUMMARY);
    let usage = answer.usage.unwrap();
    assert_eq!((usage.input_tokens, usage.output_tokens), (0, 0));
    assert_eq!(
        t.editor().load_snapshot().engine.sampled_tokens,
        before,
        "no token was sampled"
    );
}

/// The findings with no span: the summary is rewritten as a whole.
fn whole_summary_findings() -> Vec<arf_proto::v1::Finding> {
    let mut f = findings();
    for finding in &mut f {
        finding.summary_span = None;
    }
    f
}

#[tokio::test]
async fn revise_stream_sends_deltas_then_the_parsed_result() {
    let t = start(|c| c.default_max_tokens = 512).await;
    let mut events = t
        .client()
        .revise_stream(revise_request(whole_summary_findings(), 0))
        .await
        .unwrap()
        .into_inner();
    let mut raw = String::new();
    let mut deltas = 0;
    let done = loop {
        match events
            .message()
            .await
            .unwrap()
            .expect("the stream ends with done")
            .event
            .unwrap()
        {
            revise_event::Event::Delta(text) => {
                raw.push_str(&text);
                deltas += 1;
            }
            revise_event::Event::Done(done) => break done,
        }
    };
    assert!(deltas > 1, "tokens are streamed one by one");
    let parsed: serde_json::Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(
        parsed["summary"].as_str().unwrap().trim(),
        done.revised_summary,
        "done carries the parsed deltas"
    );
    assert!(done.model_called);
    assert!(
        events.message().await.unwrap().is_none(),
        "nothing after done"
    );
    // Same greedy revision through the unary call.
    let unary = t
        .client()
        .revise(revise_request(whole_summary_findings(), 0))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(unary.revised_summary, done.revised_summary);
}

#[tokio::test]
async fn span_edits_stream_each_replacement_then_the_spliced_summary() {
    let t = start(|c| c.default_max_tokens = 512).await;
    let mut events = t
        .client()
        .revise_stream(revise_request(findings(), 0))
        .await
        .unwrap()
        .into_inner();
    let mut raw = String::new();
    let done = loop {
        match events.message().await.unwrap().unwrap().event.unwrap() {
            revise_event::Event::Delta(text) => raw.push_str(&text),
            revise_event::Event::Done(done) => break done,
        }
    };
    // One JSON object per flagged span, one after the other.
    let replacements: Vec<String> = serde_json::Deserializer::from_str(&raw)
        .into_iter::<serde_json::Value>()
        .map(|v| {
            v.unwrap()["replacement"]
                .as_str()
                .unwrap()
                .trim()
                .to_string()
        })
        .collect();
    assert_eq!(replacements.len(), 2, "{raw}");
    for r in replacements.iter().filter(|r| !r.is_empty()) {
        assert!(
            done.revised_summary
                .to_lowercase()
                .contains(&r.to_lowercase()),
            "{r:?} spliced into {:?}",
            done.revised_summary
        );
    }
}

#[tokio::test]
async fn a_revision_cut_short_is_a_reported_failure() {
    let t = start(|_| {}).await;
    // Four tokens cannot close the JSON object: the output does not parse, and the call says so.
    let status = t
        .client()
        .revise(revise_request(findings(), 4))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Internal, "{status:?}");
    assert!(status.message().contains("length"), "{}", status.message());
}

#[tokio::test]
async fn bad_revision_requests_name_their_field() {
    let t = start(|_| {}).await;
    let mut client = t.client();
    let field_of = |status: tonic::Status| {
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        arf_common::status::field_violations(&status)
            .into_iter()
            .next()
            .map(|(f, _)| f)
            .unwrap_or_default()
    };
    let no_turns = ReviseRequest {
        conversation: Some(Conversation {
            turns: vec![],
            ..conversation()
        }),
        ..revise_request(findings(), 0)
    };
    assert_eq!(
        field_of(client.revise(no_turns).await.unwrap_err()),
        "conversation.turns"
    );
    let no_conversation = ReviseRequest {
        conversation: None,
        ..revise_request(vec![], 0)
    };
    assert_eq!(
        field_of(client.revise(no_conversation).await.unwrap_err()),
        "conversation.turns"
    );
    let no_summary = ReviseRequest {
        summary: " ".into(),
        ..revise_request(findings(), 0)
    };
    assert_eq!(
        field_of(client.revise(no_summary).await.unwrap_err()),
        "summary"
    );
    let mut bad_turn = findings();
    bad_turn[1].evidence.as_mut().unwrap().turn_index = Some(9);
    assert_eq!(
        field_of(
            client
                .revise(revise_request(bad_turn, 0))
                .await
                .unwrap_err()
        ),
        "findings[1].evidence.turn_index"
    );
    let mut bad_span = findings();
    bad_span[0].summary_span.as_mut().unwrap().end = 500;
    assert_eq!(
        field_of(
            client
                .revise_stream(revise_request(bad_span, 0))
                .await
                .unwrap_err()
        ),
        "findings[0].summary_span"
    );
}
