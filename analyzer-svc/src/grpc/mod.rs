//! The gRPC face of the analyzer: `arf.v1.Analyzer` over the domain. `convert` is the only
//! place that maps between proto and domain types.

mod convert;
mod judging;

use std::sync::Arc;

use arf_common::client::GrpcChannel;
use arf_common::dataset::conversation_from_wire;
use arf_common::server::ResponseStream;
use arf_common::status::invalid_field;
use arf_proto::v1 as pb;
use arf_proto::v1::analyzer_server::{Analyzer as AnalyzerRpc, AnalyzerServer};
use futures::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

pub use judging::JudgeClient;

use crate::fidelity;
use crate::judge::{self, JUDGE_DETECTORS};
use crate::profile::ProfileBuilder;
use crate::taxonomy::Taxonomy;
use crate::{Analyzer, error_score, merge_findings};

/// Responses an AnalyzeStream keeps buffered for a client that reads slower than it writes;
/// beyond it the server stops reading requests (back-pressure through HTTP/2 flow control).
const STREAM_BUFFER: usize = 64;
/// Requests of one AnalyzeStream analyzed at once (they wait on model judges; order is kept).
const STREAM_CONCURRENCY: usize = 8;

#[derive(Clone)]
pub struct AnalyzerService {
    inner: Arc<Inner>,
}

struct Inner {
    analyzer: Analyzer,
    judges: Option<JudgeClient>,
    shutdown: CancellationToken,
    /// What a Profile's revision plan may hold: half of one answer.
    plan_budget: usize,
}

impl AnalyzerService {
    /// `judge_channel`: an Editor endpoint for the model-judged detectors (none: they are refused).
    /// `shutdown`: open streams end when it is cancelled, so the server can drain.
    pub fn new(
        analyzer: Analyzer,
        judge_channel: Option<GrpcChannel>,
        max_message_bytes: usize,
        shutdown: CancellationToken,
    ) -> Self {
        let judges = judge_channel.map(|c| JudgeClient::new(c, max_message_bytes));
        Self {
            inner: Arc::new(Inner {
                analyzer,
                judges,
                shutdown,
                plan_budget: max_message_bytes / 2,
            }),
        }
    }

    pub fn into_server(self, max_message_bytes: usize) -> AnalyzerServer<Self> {
        AnalyzerServer::new(self)
            .max_decoding_message_size(max_message_bytes)
            .max_encoding_message_size(max_message_bytes)
    }

    async fn analyze_one(
        &self,
        request: pb::AnalyzeRequest,
    ) -> Result<pb::AnalyzeResponse, Status> {
        let conversation = conversation_from_wire(request.conversation, "conversation")?;
        let revision_of = request
            .revision_of
            .map(|r| convert::revision_of(r, self.inner.analyzer.limits()))
            .transpose()?;
        let (options, model_judged) = convert::options(request.options);
        let judges: Vec<&'static str> = if model_judged {
            JUDGE_DETECTORS.to_vec()
        } else {
            JUDGE_DETECTORS
                .iter()
                .copied()
                .filter(|j| options.detectors.iter().any(|d| d == j))
                .collect()
        };
        // Only model judges asked for by name: Analyzer::select picks no rule detector.
        let mut analysis = self
            .inner
            .analyzer
            .analyze(&conversation, &request.summary, &options)
            .map_err(convert::analyze_error)?;
        let mut failures = Vec::new();
        if !judges.is_empty() {
            let client = self.inner.judges.as_ref().ok_or_else(|| {
                Status::failed_precondition("model-judged detectors need an inference endpoint: start the analyzer with --judge-endpoint")
            })?;
            let (mut found, failed) = client.run(&judges, &conversation, &request.summary).await?;
            if !options.categories.is_empty() {
                found.retain(|f| options.categories.iter().any(|c| c == f.category.as_str()));
            }
            analysis.findings.append(&mut found);
            analysis.findings = merge_findings(std::mem::take(&mut analysis.findings));
            failures = failed;
        }
        let fidelity = revision_of.map(|(original, flagged)| {
            convert::fidelity(fidelity::check(
                &fidelity::Revision {
                    turns: &conversation.turns,
                    original: &original,
                    flagged: &flagged,
                    candidate: &request.summary,
                },
                &fidelity::Thresholds::default(),
            ))
        });
        Ok(pb::AnalyzeResponse {
            fidelity,
            request_id: request.request_id,
            conversation_id: conversation.id,
            error_score: error_score(&analysis.findings),
            findings: analysis
                .findings
                .into_iter()
                .map(convert::finding)
                .collect(),
            detector_failures: failures,
            taxonomy_version: analysis.taxonomy_version.to_string(),
        })
    }
}

#[tonic::async_trait]
impl AnalyzerRpc for AnalyzerService {
    type AnalyzeStreamStream = ResponseStream<pb::AnalyzeResponse>;

    async fn analyze(
        &self,
        request: Request<pb::AnalyzeRequest>,
    ) -> Result<Response<pb::AnalyzeResponse>, Status> {
        Ok(Response::new(self.analyze_one(request.into_inner()).await?))
    }

    async fn analyze_stream(
        &self,
        request: Request<Streaming<pb::AnalyzeRequest>>,
    ) -> Result<Response<Self::AnalyzeStreamStream>, Status> {
        let inbound = request.into_inner();
        let (tx, rx) = tokio::sync::mpsc::channel(STREAM_BUFFER);
        let service = self.clone();
        let shutdown = self.inner.shutdown.clone();
        tokio::spawn(async move {
            // `buffered` runs a few requests at once but yields their responses in request order.
            let mut responses = inbound
                .map(|item| {
                    let service = service.clone();
                    async move {
                        let request = item?;
                        let id = request.request_id.clone();
                        service
                            .analyze_one(request)
                            .await
                            .map_err(|s| with_request_id(s, &id))
                    }
                })
                .buffered(STREAM_CONCURRENCY);
            loop {
                let next = tokio::select! {
                    next = responses.next() => next,
                    () = shutdown.cancelled() => Some(Err(Status::unavailable("the analyzer is shutting down; resume from the last response"))),
                };
                let Some(result) = next else { break };
                let failed = result.is_err();
                // A closed channel means the client went away: stop reading its requests.
                if tx.send(result).await.is_err() || failed {
                    break;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn profile(
        &self,
        request: Request<Streaming<pb::ProfileRequest>>,
    ) -> Result<Response<pb::ProfileResponse>, Status> {
        let mut inbound = request.into_inner();
        let mut builder: Option<ProfileBuilder> = None;
        let mut n = 0usize;
        while let Some(message) = inbound.message().await? {
            let builder = builder.get_or_insert_with(|| {
                let exemplars = message
                    .options
                    .as_ref()
                    .map_or(0, |o| o.max_exemplars as usize);
                ProfileBuilder::new(if exemplars == 0 {
                    crate::profile::DEFAULT_EXEMPLARS
                } else {
                    exemplars.min(crate::profile::MAX_EXEMPLARS)
                })
                .with_plan_budget(self.inner.plan_budget)
            });
            for item in message.items {
                if item.conversation_id.is_empty() {
                    return Err(invalid_field(
                        &format!("items[{n}].conversation_id"),
                        "must not be empty",
                    ));
                }
                let findings = item
                    .findings
                    .into_iter()
                    .enumerate()
                    .map(|(j, f)| {
                        convert::finding_from_wire(f, &format!("items[{n}].findings[{j}]"))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                builder.add(&item.conversation_id, &item.channel, &findings);
                n += 1;
            }
        }
        Ok(Response::new(convert::profile(
            builder.unwrap_or_default().finish(),
        )))
    }

    async fn rate(
        &self,
        request: Request<pb::RateRequest>,
    ) -> Result<Response<pb::RateResponse>, Status> {
        let request = request.into_inner();
        let conversation = conversation_from_wire(request.conversation, "conversation")?;
        let client = self.inner.judges.as_ref().ok_or_else(|| {
            Status::failed_precondition(
                "rating needs an inference endpoint: start the analyzer with --judge-endpoint",
            )
        })?;
        let (rating, failure) = match client.rate(&conversation, &request.summary).await? {
            Ok(r) => (u32::from(r), None),
            Err(f) => (0, Some(f)),
        };
        Ok(Response::new(pb::RateResponse {
            request_id: request.request_id,
            rating,
            failure,
        }))
    }

    async fn get_taxonomy(
        &self,
        _: Request<pb::GetTaxonomyRequest>,
    ) -> Result<Response<pb::Taxonomy>, Status> {
        let judges: Vec<_> = judge::judges()
            .iter()
            .map(|j| (j.name(), j.categories()))
            .collect();
        let mut taxonomy = convert::taxonomy(
            Taxonomy::current(),
            &self.inner.analyzer.detector_catalog(),
            &judges,
        );
        taxonomy.judge_available = self.inner.judges.is_some();
        Ok(Response::new(taxonomy))
    }
}

/// On a stream, say which request an error is about.
fn with_request_id(status: Status, request_id: &str) -> Status {
    if request_id.is_empty() {
        return status;
    }
    let message = format!("request {request_id:?}: {}", status.message());
    Status::with_details(status.code(), message, status.details().to_vec().into())
}
