//! `gateway`: the public Pipeline API as its own server.

use arf_common::config::ServerArgs;
use arf_proto::service_names::PIPELINE;
use clap::Parser;
use tonic::service::Routes;

/// Runs the ARF pipeline over datasets of teacher summaries.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    #[command(flatten)]
    server: ServerArgs,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    arf_common::server::run_binary("arf-gateway", &[PIPELINE], 50050, &args.server, &args, |health, _| async move {
        health.set_serving(PIPELINE, true).await;
        Ok(Routes::new(gateway::grpc::PipelineService.into_server(args.server.max_message_bytes)))
    })
    .await
}
