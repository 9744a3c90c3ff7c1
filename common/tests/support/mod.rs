//! Test implementations of `arf.v1` services and server helpers for the bootstrap tests.
//! What is under test is the bootstrap around them, not these handlers.

#![allow(dead_code)]

use std::pin::Pin;
use std::sync::Arc;

use arf_common::client::{ClientOptions, GrpcChannel, connect_lazy};
use arf_common::config::ServerArgs;
use arf_common::server::{RunningServer, serve_loopback};
use arf_proto::service_names::EDITOR;
use arf_proto::v1::analyzer_server::Analyzer;
use arf_proto::v1::editor_client::EditorClient;
use arf_proto::v1::editor_server::{Editor, EditorServer};
use arf_proto::v1::*;
use futures::Stream;
use tokio::sync::Semaphore;
use tonic::service::Routes;
use tonic::{Request, Response, Status, Streaming};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// An editor whose Generate waits for a permit (to hold calls in flight) and reports the
/// deadline it saw.
pub struct WaitingEditor {
    pub gate: Arc<Semaphore>,
}

#[tonic::async_trait]
impl Editor for WaitingEditor {
    type ReviseStreamStream = BoxStream<ReviseEvent>;

    async fn revise(&self, _: Request<ReviseRequest>) -> Result<Response<ReviseResponse>, Status> {
        Err(Status::unimplemented("test"))
    }
    async fn revise_stream(
        &self,
        _: Request<ReviseRequest>,
    ) -> Result<Response<Self::ReviseStreamStream>, Status> {
        Err(Status::unimplemented("test"))
    }
    async fn generate(
        &self,
        _: Request<GenerateRequest>,
    ) -> Result<Response<GenerateResponse>, Status> {
        let _permit = self
            .gate
            .acquire()
            .await
            .map_err(|_| Status::internal("closed"))?;
        let seen = arf_common::deadline::remaining()
            .map(|d| d.as_millis().to_string())
            .unwrap_or_default();
        Ok(Response::new(GenerateResponse {
            text: seen,
            ..Default::default()
        }))
    }
    async fn score(&self, _: Request<ScoreRequest>) -> Result<Response<ScoreResponse>, Status> {
        Err(Status::unimplemented("test"))
    }
    async fn get_model_info(
        &self,
        _: Request<GetModelInfoRequest>,
    ) -> Result<Response<ModelInfo>, Status> {
        Ok(Response::new(ModelInfo {
            model_id: "test".into(),
            ..Default::default()
        }))
    }
}

/// An analyzer whose Analyze calls the editor downstream (like the model-judged detectors).
pub struct ChainedAnalyzer {
    pub editor: EditorClient<GrpcChannel>,
}

#[tonic::async_trait]
impl Analyzer for ChainedAnalyzer {
    type AnalyzeStreamStream = BoxStream<AnalyzeResponse>;

    async fn analyze(
        &self,
        _: Request<AnalyzeRequest>,
    ) -> Result<Response<AnalyzeResponse>, Status> {
        let answer = self
            .editor
            .clone()
            .generate(GenerateRequest::default())
            .await?
            .into_inner();
        Ok(Response::new(AnalyzeResponse {
            request_id: answer.text,
            ..Default::default()
        }))
    }
    async fn analyze_stream(
        &self,
        _: Request<Streaming<AnalyzeRequest>>,
    ) -> Result<Response<Self::AnalyzeStreamStream>, Status> {
        Err(Status::unimplemented("test"))
    }
    async fn profile(
        &self,
        _: Request<Streaming<ProfileRequest>>,
    ) -> Result<Response<ProfileResponse>, Status> {
        Err(Status::unimplemented("test"))
    }
    async fn get_taxonomy(
        &self,
        _: Request<GetTaxonomyRequest>,
    ) -> Result<Response<Taxonomy>, Status> {
        Err(Status::unimplemented("test"))
    }
    async fn rate(
        &self,
        _: Request<arf_proto::v1::RateRequest>,
    ) -> Result<Response<arf_proto::v1::RateResponse>, Status> {
        Err(Status::unimplemented("test"))
    }
}

pub async fn start(
    args: &ServerArgs,
    service: &'static str,
    routes: Routes,
    serving: bool,
) -> RunningServer {
    serve_loopback(args, service, serving, routes)
        .await
        .unwrap()
}

pub async fn start_editor(args: &ServerArgs, gate: Arc<Semaphore>) -> RunningServer {
    start(
        args,
        EDITOR,
        Routes::new(EditorServer::new(WaitingEditor { gate })),
        true,
    )
    .await
}

pub fn channel(server: &RunningServer, options: &ClientOptions) -> GrpcChannel {
    let scheme = if options.tls_ca.is_some() {
        "https"
    } else {
        "http"
    };
    connect_lazy(
        &format!("{scheme}://localhost:{}", server.local_addr().port()),
        options,
    )
    .unwrap()
}

pub async fn health_of(channel: GrpcChannel, service: &str) -> Result<i32, Status> {
    let request = HealthCheckRequest {
        service: service.into(),
    };
    Ok(HealthClient::new(channel)
        .check(request)
        .await?
        .into_inner()
        .status)
}
