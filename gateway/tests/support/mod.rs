//! The gateway server alone, for the tests of this crate: nothing listens on the downstream
//! addresses (the clients connect lazily; a run that calls them waits for them).

#![allow(dead_code)]

use arf_common::client::{ClientOptions, GrpcChannel, connect_lazy};
use arf_common::config::ServerArgs;
use arf_common::server::{RunningServer, serve_loopback};
use arf_proto::service_names::PIPELINE;
use arf_proto::v1::pipeline_client::PipelineClient;
use gateway::config::GatewayArgs;
use tokio_util::sync::CancellationToken;

/// The local arguments on `dir`, every downstream address unreachable.
pub fn local_args(dir: &std::path::Path) -> GatewayArgs {
    let unreachable = "http://127.0.0.1:9".to_string();
    GatewayArgs::local(
        dir.to_path_buf(),
        unreachable.clone(),
        vec![unreachable.clone()],
        unreachable,
    )
}

/// The gateway with `args`, serving on a loopback port, and a client of it.
pub async fn serve(args: &GatewayArgs) -> (RunningServer, PipelineClient<GrpcChannel>) {
    let (_, routes) = gateway::server::build(args, 4 << 20, None, CancellationToken::new())
        .await
        .unwrap();
    let server = serve_loopback(&ServerArgs::local(), PIPELINE, true, routes)
        .await
        .unwrap();
    let client =
        PipelineClient::new(connect_lazy(&server.endpoint(), &ClientOptions::default()).unwrap());
    (server, client)
}
