//! The analyzer, as the stages call it: one conversation and one summary at a time, in the
//! run's analyzer options. What its statuses mean for a run (a refusal of this item, an
//! analyzer to wait for, ...) is `faults`' decision.

use std::collections::HashMap;

use arf_common::client::{ClientOptions, GrpcChannel, connect_lazy};
use arf_common::dataset::{Conversation, conversation_to_wire};
use arf_proto::v1 as pb;
use arf_proto::v1::analyzer_client::AnalyzerClient;
use tonic::Status;

#[derive(Clone)]
pub struct Analyzer {
    client: AnalyzerClient<GrpcChannel>,
}

impl Analyzer {
    pub fn connect(
        endpoint: &str,
        options: &ClientOptions,
        max_message_bytes: usize,
    ) -> anyhow::Result<Self> {
        let client = AnalyzerClient::new(connect_lazy(endpoint, options)?)
            .max_decoding_message_size(max_message_bytes)
            .max_encoding_message_size(max_message_bytes);
        Ok(Self { client })
    }

    /// Checks `summary` of `conversation`. The request id is the conversation's id, so the
    /// analyzer's logs and the run's items line up.
    pub async fn analyze(
        &self,
        conversation: &Conversation,
        summary: &str,
        options: Option<pb::AnalyzeOptions>,
    ) -> Result<pb::AnalyzeResponse, Status> {
        self.analyze_with(conversation, summary, options, None)
            .await
    }

    /// Checks `revision`, a revision of `original` (whose findings are `original_findings`): the
    /// response also has the fidelity guard's verdict on it.
    pub async fn analyze_revision(
        &self,
        conversation: &Conversation,
        original: &pb::AnalyzeResponse,
        original_summary: &str,
        revision: &str,
        options: Option<pb::AnalyzeOptions>,
    ) -> Result<pb::AnalyzeResponse, Status> {
        let revision_of = pb::RevisionOf {
            original_summary: original_summary.to_string(),
            original_findings: original.findings.clone(),
        };
        self.analyze_with(conversation, revision, options, Some(revision_of))
            .await
    }

    async fn analyze_with(
        &self,
        conversation: &Conversation,
        summary: &str,
        options: Option<pb::AnalyzeOptions>,
        revision_of: Option<pb::RevisionOf>,
    ) -> Result<pb::AnalyzeResponse, Status> {
        let request = pb::AnalyzeRequest {
            request_id: conversation.id.clone(),
            conversation: Some(conversation_to_wire(conversation)),
            summary: summary.to_string(),
            options,
            revision_of,
        };
        Ok(self.client.clone().analyze(request).await?.into_inner())
    }

    pub async fn taxonomy(&self) -> Result<pb::Taxonomy, Status> {
        Ok(self
            .client
            .clone()
            .get_taxonomy(pb::GetTaxonomyRequest {})
            .await?
            .into_inner())
    }

    /// What the editor is told to do about each error category (from the analyzer's taxonomy).
    pub async fn revision_instructions(&self) -> Result<HashMap<String, String>, Status> {
        let taxonomy = self.taxonomy().await?;
        Ok(taxonomy
            .categories
            .into_iter()
            .map(|c| (c.id, c.revision_instruction))
            .collect())
    }

    /// The judge's 1-5 rating of `summary`; `None` when the judge could not give one (it is
    /// reported as missing, never guessed).
    pub async fn rate(
        &self,
        conversation: &Conversation,
        summary: &str,
    ) -> Result<Option<u8>, Status> {
        let request = pb::RateRequest {
            request_id: conversation.id.clone(),
            conversation: Some(conversation_to_wire(conversation)),
            summary: summary.to_string(),
        };
        let answer = self.client.clone().rate(request).await?.into_inner();
        Ok(u8::try_from(answer.rating)
            .ok()
            .filter(|r| (1..=5).contains(r)))
    }
}

/// The first thing a run's analyzer options ask that the analyzer cannot do: a detector or
/// category it does not know, or model-judged detectors without a judge; as (field path under
/// the options, why). A run that asked would see every item refused, hours later: it is refused
/// up front instead.
pub fn first_unsupported(
    options: &pb::AnalyzeOptions,
    taxonomy: &pb::Taxonomy,
) -> Option<(String, String)> {
    if options.model_judged && !taxonomy.judge_available {
        return Some((
            "model_judged".into(),
            "the analyzer has no judge endpoint (its --judge-endpoint)".into(),
        ));
    }
    for (i, d) in options.detectors.iter().enumerate() {
        if !taxonomy.detectors.contains(d) {
            return Some((
                format!("detectors[{i}]"),
                format!(
                    "unknown detector {d:?}; the analyzer has {:?}",
                    taxonomy.detectors
                ),
            ));
        }
    }
    for (i, c) in options.categories.iter().enumerate() {
        if !taxonomy.categories.iter().any(|k| &k.id == c) {
            let known: Vec<&str> = taxonomy.categories.iter().map(|k| k.id.as_str()).collect();
            return Some((
                format!("categories[{i}]"),
                format!("unknown category {c:?}; the analyzer has {known:?}"),
            ));
        }
    }
    None
}
