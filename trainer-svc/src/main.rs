//! `trainer-svc`: LoRA fine-tuning jobs on candle, as its own server.

use arf_common::config::ServerArgs;
use arf_proto::service_names::TRAINER;
use clap::Parser;
use tonic::service::Routes;

/// Fine-tunes a student model with LoRA.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    #[command(flatten)]
    server: ServerArgs,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    arf_common::server::run_binary("arf-trainer", &[TRAINER], 50053, &args.server, &args, |health, _| async move {
        health.set_serving(TRAINER, true).await;
        Ok(Routes::new(trainer_svc::grpc::TrainerService.into_server(args.server.max_message_bytes)))
    })
    .await
}
