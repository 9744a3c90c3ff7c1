//! The gRPC face of the editor: the only place that maps between `arf.v1` and the domain.

use std::pin::Pin;

use arf_common::status::not_built_yet;
use arf_proto::v1::editor_server::{Editor, EditorServer};
use arf_proto::v1::{GenerateRequest, GenerateResponse, GetModelInfoRequest, ModelInfo, ReviseEvent, ReviseRequest, ReviseResponse};
use futures::Stream;
use tonic::{Request, Response, Status};

const ISSUE: &str = "the editor issue";

#[derive(Debug, Default)]
pub struct EditorService;

impl EditorService {
    pub fn into_server(self, max_message_bytes: usize) -> EditorServer<Self> {
        EditorServer::new(self)
            .max_decoding_message_size(max_message_bytes)
            .max_encoding_message_size(max_message_bytes)
    }
}

type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl Editor for EditorService {
    type ReviseStreamStream = ResponseStream<ReviseEvent>;

    async fn revise(&self, _: Request<ReviseRequest>) -> Result<Response<ReviseResponse>, Status> {
        Err(not_built_yet("arf.v1.Editor/Revise", ISSUE))
    }

    async fn revise_stream(&self, _: Request<ReviseRequest>) -> Result<Response<Self::ReviseStreamStream>, Status> {
        Err(not_built_yet("arf.v1.Editor/ReviseStream", ISSUE))
    }

    async fn generate(&self, _: Request<GenerateRequest>) -> Result<Response<GenerateResponse>, Status> {
        Err(not_built_yet("arf.v1.Editor/Generate", ISSUE))
    }

    async fn get_model_info(&self, _: Request<GetModelInfoRequest>) -> Result<Response<ModelInfo>, Status> {
        Err(not_built_yet("arf.v1.Editor/GetModelInfo", ISSUE))
    }
}
