//! `gateway`: the public Pipeline API as its own server.

use std::sync::Arc;

use arf_common::config::ServerArgs;
use arf_proto::service_names::PIPELINE;
use clap::Parser;
use gateway::config::GatewayArgs;
use gateway::grpc::PipelineService;
use gateway::pipeline::Pipeline;
use gateway::store::Store;
use tonic::service::Routes;

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
    let args = &Args::parse();
    arf_common::server::run_binary(
        "arf-gateway",
        &[PIPELINE],
        50050,
        &args.server,
        args,
        |health, shutdown| async move {
            let store = Arc::new(Store::open(&args.gateway.data_dir.join("arf.sqlite3"))?);
            let clients = args.gateway.clients(args.server.max_message_bytes)?;
            let student_host = Arc::new(gateway::student::LocalStudentHost::new(
                args.server.max_message_bytes,
            ));
            let pipeline = Pipeline::new(
                store,
                clients,
                args.gateway.data_dir.clone(),
                args.gateway.student_base.clone(),
                Some(student_host),
                shutdown.clone(),
            );
            let resumed = pipeline.resume_unfinished()?;
            if resumed > 0 {
                tracing::info!(resumed, "resumed unfinished runs");
            }
            health.set_serving(PIPELINE, true).await;
            Ok(Routes::new(
                PipelineService::new(pipeline, shutdown).into_server(args.server.max_message_bytes),
            ))
        },
    )
    .await
}
