//! Model-judged detectors over the wire: each judge's request goes to an inference endpoint as
//! `Editor.Generate` with its JSON schema; a malformed answer is retried once (in
//! [`crate::judge::run_judge`]), then reported as a detector failure, never a silent pass.

use arf_common::client::GrpcChannel;
use arf_common::dataset::Conversation;
use arf_proto::v1 as pb;
use arf_proto::v1::editor_client::EditorClient;

use crate::finding::Finding;
use crate::judge::{self, JudgeRequest, ModelJudge};
use crate::rating;

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

    /// Runs the named judges concurrently; returns their findings and the judges that failed.
    pub async fn run(
        &self,
        names: &[&'static str],
        conversation: &Conversation,
        summary: &str,
    ) -> (Vec<Finding>, Vec<pb::DetectorFailure>) {
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
                Err(e) => {
                    tracing::warn!(detector = name, error = %e, "model-judged detector failed");
                    failures.push(pb::DetectorFailure {
                        detector: name.to_string(),
                        message: e.to_string(),
                    });
                }
            }
        }
        (findings, failures)
    }

    /// The rating judge: `Ok(rating)` or the failure to report (after one retry on a malformed
    /// answer).
    pub async fn rate(
        &self,
        conversation: &Conversation,
        summary: &str,
    ) -> Result<u8, pb::DetectorFailure> {
        if summary.trim().is_empty() {
            return Ok(rating::EMPTY_SUMMARY_RATING);
        }
        let request = rating::request(conversation, summary);
        judge::ask_strictly(rating::RATING, &request, rating::parse, |r| {
            self.generate(r)
        })
        .await
        .map_err(|e| {
            tracing::warn!(detector = rating::RATING, error = %e, "rating failed");
            pb::DetectorFailure {
                detector: rating::RATING.to_string(),
                message: e.to_string(),
            }
        })
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
