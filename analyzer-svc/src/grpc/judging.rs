//! Model-judged detectors over the wire: each judge's request goes to an inference endpoint as
//! `Editor.Generate` with its JSON schema; a malformed answer is retried once (in
//! [`crate::judge::run_judge`]), then reported as a detector failure, never a silent pass.
//!
//! An endpoint that is down or sheds load (UNAVAILABLE, RESOURCE_EXHAUSTED, ...) fails no
//! detector: the whole analysis answers UNAVAILABLE with a `RetryInfo` (the endpoint's own
//! delay when it gave one), so the caller's fault policy waits and asks again, and the item is
//! analyzed in full once the endpoint answers.

use arf_common::client::GrpcChannel;
use arf_common::dataset::Conversation;
use arf_proto::v1 as pb;
use arf_proto::v1::editor_client::EditorClient;

use std::time::Duration;

use tonic::{Code, Status};
use tonic_types::StatusExt as _;

use crate::finding::Finding;
use crate::judge::{self, JudgeError, JudgeRequest, ModelJudge};
use crate::rating;

/// The retry delay asked for when the endpoint gave none.
const JUDGE_RETRY: Duration = Duration::from_secs(1);

#[derive(Clone)]
pub struct JudgeClient {
    editor: EditorClient<GrpcChannel>,
}

impl JudgeClient {
    pub fn new(channel: GrpcChannel, max_message_bytes: usize) -> Self {
        Self {
            editor: EditorClient::new(channel).max_decoding_message_size(max_message_bytes),
        }
    }

    /// Runs the named judges concurrently; returns their findings and the judges that failed,
    /// or UNAVAILABLE when the endpoint is down or shedding load (see the module's comment).
    pub async fn run(
        &self,
        names: &[&'static str],
        conversation: &Conversation,
        summary: &str,
    ) -> Result<(Vec<Finding>, Vec<pb::DetectorFailure>), Status> {
        let judges: Vec<Box<dyn ModelJudge>> = judge::judges()
            .into_iter()
            .filter(|j| names.contains(&j.name()))
            .collect();
        let runs = judges.iter().map(|j| async move {
            let outcome = judge::run_judge(j.as_ref(), conversation, summary, |request| {
                self.generate(request)
            })
            .await;
            (j.name(), outcome)
        });
        let mut findings = Vec::new();
        let mut failures = Vec::new();
        for (name, outcome) in futures::future::join_all(runs).await {
            match outcome {
                Ok(mut f) => findings.append(&mut f),
                Err(JudgeError::Transport { cause, .. }) if is_transient(&cause) => {
                    return Err(wait_for_the_endpoint(name, &cause));
                }
                Err(e) => {
                    tracing::warn!(detector = name, error = %e, "model-judged detector failed");
                    failures.push(pb::DetectorFailure {
                        detector: name.to_string(),
                        message: e.to_string(),
                    });
                }
            }
        }
        Ok((findings, failures))
    }

    /// The rating judge: `Ok(rating)` or the failure to report (after one retry on a malformed
    /// answer).
    pub async fn rate(
        &self,
        conversation: &Conversation,
        summary: &str,
    ) -> Result<Result<u8, pb::DetectorFailure>, Status> {
        if summary.trim().is_empty() {
            return Ok(Ok(rating::EMPTY_SUMMARY_RATING));
        }
        let request = rating::request(conversation, summary);
        match judge::ask_strictly(rating::RATING, &request, rating::parse, |r| {
            self.generate(r)
        })
        .await
        {
            Ok(rating) => Ok(Ok(rating)),
            Err(JudgeError::Transport { cause, .. }) if is_transient(&cause) => {
                Err(wait_for_the_endpoint(rating::RATING, &cause))
            }
            Err(e) => {
                tracing::warn!(detector = rating::RATING, error = %e, "rating failed");
                Ok(Err(pb::DetectorFailure {
                    detector: rating::RATING.to_string(),
                    message: e.to_string(),
                }))
            }
        }
    }

    async fn generate(&self, request: JudgeRequest) -> Result<String, tonic::Status> {
        let message = |role: &str, content: String| pb::ChatMessage {
            role: role.into(),
            content,
        };
        let call = pb::GenerateRequest {
            messages: vec![
                message("system", request.system),
                message("user", request.prompt),
            ],
            params: Some(pb::GenerationParams {
                max_tokens: request.max_tokens,
                temperature: Some(request.temperature),
                top_p: None,
                stop: Vec::new(),
            }),
            json_schema: request.json_schema.to_string(),
        };
        Ok(self.editor.clone().generate(call).await?.into_inner().text)
    }
}

/// Whether the endpoint's status goes away by waiting: down, overloaded, or cut off mid-call.
fn is_transient(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable | Code::ResourceExhausted | Code::Aborted | Code::Cancelled
    )
}

/// UNAVAILABLE naming the judge and the endpoint's answer, with the endpoint's retry delay.
fn wait_for_the_endpoint(detector: &str, cause: &Status) -> Status {
    tracing::warn!(detector, code = ?cause.code(), error = %cause.message(), "the judge's endpoint cannot answer now");
    let delay = arf_common::status::retry_after(cause).unwrap_or(JUDGE_RETRY);
    Status::with_error_details(
        Code::Unavailable,
        format!(
            "the model-judged detector {detector} cannot reach its endpoint now ({:?}: {}): retry later",
            cause.code(),
            cause.message()
        ),
        tonic_types::ErrorDetails::with_retry_info(Some(delay)),
    )
}
