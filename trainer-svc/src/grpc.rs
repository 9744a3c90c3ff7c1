//! The gRPC face of the trainer: the only place that maps between `arf.v1` and the domain.

use std::pin::Pin;

use arf_common::status::not_built_yet;
use arf_proto::v1::trainer_server::{Trainer, TrainerServer};
use arf_proto::v1::{
    CancelJobRequest, CreateJobRequest, DownloadAdapterRequest, FileChunk, GetJobRequest, Job, JobEvent,
    ListCheckpointsRequest, ListCheckpointsResponse, ListJobsRequest, ListJobsResponse, WatchJobRequest,
};
use futures::Stream;
use tonic::{Request, Response, Status};

const ISSUE: &str = "the trainer issue";

#[derive(Debug, Default)]
pub struct TrainerService;

impl TrainerService {
    pub fn into_server(self, max_message_bytes: usize) -> TrainerServer<Self> {
        TrainerServer::new(self)
            .max_decoding_message_size(max_message_bytes)
            .max_encoding_message_size(max_message_bytes)
    }
}

type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl Trainer for TrainerService {
    type WatchJobStream = ResponseStream<JobEvent>;
    type DownloadAdapterStream = ResponseStream<FileChunk>;

    async fn create_job(&self, _: Request<CreateJobRequest>) -> Result<Response<Job>, Status> {
        Err(not_built_yet("arf.v1.Trainer/CreateJob", ISSUE))
    }

    async fn get_job(&self, _: Request<GetJobRequest>) -> Result<Response<Job>, Status> {
        Err(not_built_yet("arf.v1.Trainer/GetJob", ISSUE))
    }

    async fn list_jobs(&self, _: Request<ListJobsRequest>) -> Result<Response<ListJobsResponse>, Status> {
        Err(not_built_yet("arf.v1.Trainer/ListJobs", ISSUE))
    }

    async fn cancel_job(&self, _: Request<CancelJobRequest>) -> Result<Response<Job>, Status> {
        Err(not_built_yet("arf.v1.Trainer/CancelJob", ISSUE))
    }

    async fn watch_job(&self, _: Request<WatchJobRequest>) -> Result<Response<Self::WatchJobStream>, Status> {
        Err(not_built_yet("arf.v1.Trainer/WatchJob", ISSUE))
    }

    async fn list_checkpoints(
        &self,
        _: Request<ListCheckpointsRequest>,
    ) -> Result<Response<ListCheckpointsResponse>, Status> {
        Err(not_built_yet("arf.v1.Trainer/ListCheckpoints", ISSUE))
    }

    async fn download_adapter(
        &self,
        _: Request<DownloadAdapterRequest>,
    ) -> Result<Response<Self::DownloadAdapterStream>, Status> {
        Err(not_built_yet("arf.v1.Trainer/DownloadAdapter", ISSUE))
    }
}
