//! The gRPC face of the gateway (the public Pipeline API): the only place that maps between
//! `arf.v1` and the domain.

use std::pin::Pin;

use arf_common::status::not_built_yet;
use arf_proto::v1::pipeline_server::{Pipeline, PipelineServer};
use arf_proto::v1::{
    CancelRunRequest, CreateRunRequest, ExportChunk, ExportDatasetRequest, GetReportRequest, GetRunRequest,
    ListRunsRequest, ListRunsResponse, Report, Run, RunEvent, WatchRunRequest,
};
use futures::Stream;
use tonic::{Request, Response, Status, Streaming};

const ISSUE: &str = "the gateway issue";

#[derive(Debug, Default)]
pub struct PipelineService;

impl PipelineService {
    pub fn into_server(self, max_message_bytes: usize) -> PipelineServer<Self> {
        PipelineServer::new(self)
            .max_decoding_message_size(max_message_bytes)
            .max_encoding_message_size(max_message_bytes)
    }
}

type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl Pipeline for PipelineService {
    type WatchRunStream = ResponseStream<RunEvent>;
    type ExportDatasetStream = ResponseStream<ExportChunk>;

    async fn create_run(&self, _: Request<Streaming<CreateRunRequest>>) -> Result<Response<Run>, Status> {
        Err(not_built_yet("arf.v1.Pipeline/CreateRun", ISSUE))
    }

    async fn get_run(&self, _: Request<GetRunRequest>) -> Result<Response<Run>, Status> {
        Err(not_built_yet("arf.v1.Pipeline/GetRun", ISSUE))
    }

    async fn list_runs(&self, _: Request<ListRunsRequest>) -> Result<Response<ListRunsResponse>, Status> {
        Err(not_built_yet("arf.v1.Pipeline/ListRuns", ISSUE))
    }

    async fn cancel_run(&self, _: Request<CancelRunRequest>) -> Result<Response<Run>, Status> {
        Err(not_built_yet("arf.v1.Pipeline/CancelRun", ISSUE))
    }

    async fn watch_run(&self, _: Request<WatchRunRequest>) -> Result<Response<Self::WatchRunStream>, Status> {
        Err(not_built_yet("arf.v1.Pipeline/WatchRun", ISSUE))
    }

    async fn export_dataset(
        &self,
        _: Request<ExportDatasetRequest>,
    ) -> Result<Response<Self::ExportDatasetStream>, Status> {
        Err(not_built_yet("arf.v1.Pipeline/ExportDataset", ISSUE))
    }

    async fn get_report(&self, _: Request<GetReportRequest>) -> Result<Response<Report>, Status> {
        Err(not_built_yet("arf.v1.Pipeline/GetReport", ISSUE))
    }
}
