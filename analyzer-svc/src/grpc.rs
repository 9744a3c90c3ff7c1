//! The gRPC face of the analyzer: the only place that maps between `arf.v1` and the domain.

use std::pin::Pin;

use arf_common::status::not_built_yet;
use arf_proto::v1::analyzer_server::{Analyzer, AnalyzerServer};
use arf_proto::v1::{AnalyzeRequest, AnalyzeResponse, GetTaxonomyRequest, ProfileRequest, ProfileResponse, Taxonomy};
use futures::Stream;
use tonic::{Request, Response, Status, Streaming};

const ISSUE: &str = "the analyzer issue";

#[derive(Debug, Default)]
pub struct AnalyzerService;

impl AnalyzerService {
    pub fn into_server(self, max_message_bytes: usize) -> AnalyzerServer<Self> {
        AnalyzerServer::new(self)
            .max_decoding_message_size(max_message_bytes)
            .max_encoding_message_size(max_message_bytes)
    }
}

type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl Analyzer for AnalyzerService {
    type AnalyzeStreamStream = ResponseStream<AnalyzeResponse>;

    async fn analyze(&self, _: Request<AnalyzeRequest>) -> Result<Response<AnalyzeResponse>, Status> {
        Err(not_built_yet("arf.v1.Analyzer/Analyze", ISSUE))
    }

    async fn analyze_stream(
        &self,
        _: Request<Streaming<AnalyzeRequest>>,
    ) -> Result<Response<Self::AnalyzeStreamStream>, Status> {
        Err(not_built_yet("arf.v1.Analyzer/AnalyzeStream", ISSUE))
    }

    async fn profile(&self, _: Request<Streaming<ProfileRequest>>) -> Result<Response<ProfileResponse>, Status> {
        Err(not_built_yet("arf.v1.Analyzer/Profile", ISSUE))
    }

    async fn get_taxonomy(&self, _: Request<GetTaxonomyRequest>) -> Result<Response<Taxonomy>, Status> {
        Err(not_built_yet("arf.v1.Analyzer/GetTaxonomy", ISSUE))
    }
}
