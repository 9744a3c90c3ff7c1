//! `editor-svc`: a language model hosted through mistral.rs, as its own server.

use arf_common::config::ServerArgs;
use arf_proto::service_names::EDITOR;
use clap::Parser;
use tonic::service::Routes;

/// Revises summaries and generates text with a hosted model.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    #[command(flatten)]
    server: ServerArgs,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    // Health stays NOT_SERVING: no model is loaded until the editor issue lands.
    arf_common::server::run_binary("arf-editor", &[EDITOR], 50052, &args.server, &args, |_, _| async move {
        Ok(Routes::new(editor_svc::grpc::EditorService.into_server(args.server.max_message_bytes)))
    })
    .await
}
