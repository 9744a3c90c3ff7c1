//! The gateway server alone, for the tests of this crate: nothing listens on the downstream
//! addresses (the clients connect lazily; a run that calls them waits for them).

#![allow(dead_code)]

use arf_common::client::{ClientOptions, GrpcChannel, connect_lazy};
use arf_common::config::ServerArgs;
use arf_common::server::{RunningServer, serve_loopback};
use arf_proto::service_names::PIPELINE;
use arf_proto::v1::pipeline_client::PipelineClient;
use gateway::clients::Endpoints;
use gateway::config::{GatewayArgs, GatewayConfig};
use tokio_util::sync::CancellationToken;

/// Nothing listens here.
const UNREACHABLE: &str = "http://127.0.0.1:9";

/// A local gateway on `dir`, every downstream address unreachable.
pub fn local_config(dir: &std::path::Path) -> GatewayConfig {
    GatewayConfig::local(
        dir.to_path_buf(),
        Endpoints {
            analyzer: UNREACHABLE.into(),
            editors: vec![UNREACHABLE.into()],
            teachers: Vec::new(),
            trainer: UNREACHABLE.into(),
        },
    )
}

/// The configuration an operator's flags give (`gateway --data-dir DIR FLAGS...`), every
/// downstream address unreachable.
pub fn config_from_flags(dir: &std::path::Path, flags: &[&str]) -> GatewayConfig {
    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        gateway: GatewayArgs,
    }
    let dir = dir.display().to_string();
    let mut argv = vec!["gateway", "--data-dir", &dir];
    argv.extend([
        "--analyzer",
        UNREACHABLE,
        "--editor",
        UNREACHABLE,
        "--trainer",
        UNREACHABLE,
    ]);
    argv.extend(flags);
    let cli = <Cli as clap::Parser>::try_parse_from(argv).unwrap();
    cli.gateway.into_config().unwrap()
}

/// The gateway with `config`, serving on a loopback port, and a client of it.
pub async fn serve(config: &GatewayConfig) -> (RunningServer, PipelineClient<GrpcChannel>) {
    let (_, routes) = gateway::server::build(config, 4 << 20, None, CancellationToken::new())
        .await
        .unwrap();
    let server = serve_loopback(&ServerArgs::local(), PIPELINE, true, routes)
        .await
        .unwrap();
    let client =
        PipelineClient::new(connect_lazy(&server.endpoint(), &ClientOptions::default()).unwrap());
    (server, client)
}
