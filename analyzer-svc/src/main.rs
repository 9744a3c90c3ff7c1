//! `analyzer-svc`: the analyzer as its own server.

use arf_common::config::ServerArgs;
use arf_proto::service_names::ANALYZER;
use clap::Parser;
use tonic::service::Routes;

/// Finds and categorizes the errors of teacher summaries.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    #[command(flatten)]
    server: ServerArgs,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    arf_common::server::run_binary("arf-analyzer", &[ANALYZER], 50051, &args.server, &args, |health, _| async move {
        health.set_serving(ANALYZER, true).await;
        Ok(Routes::new(analyzer_svc::grpc::AnalyzerService.into_server(args.server.max_message_bytes)))
    })
    .await
}
