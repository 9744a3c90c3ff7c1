//! `gateway`: the public Pipeline API as its own server. It links no inference engine, so it
//! serves no students itself: runs that evaluate name `evaluation.student_endpoint` (an editor
//! serving the merged student), or run under `arf gateway`, which hosts students in-process.

use arf_common::config::ServerArgs;
use clap::Parser;
use gateway::config::GatewayArgs;

/// Runs the ARF pipeline over datasets of teacher summaries.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    #[command(flatten)]
    server: ServerArgs,
    #[command(flatten)]
    gateway: GatewayArgs,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    gateway::server::run(&args.server, &args.gateway, None).await
}
