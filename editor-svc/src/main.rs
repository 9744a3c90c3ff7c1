//! `editor-svc`: a language model hosted through mistral.rs, as its own server.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arf_common::config::ServerArgs;
use arf_proto::service_names::EDITOR;
use clap::Parser;
use editor_svc::{EditorArgs, start_editor};
use tonic::service::Routes;

/// Revises summaries and generates text with a hosted model.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    #[command(flatten)]
    server: ServerArgs,
    #[command(flatten)]
    editor: EditorArgs,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let load_failed = Arc::new(AtomicBool::new(false));
    let failed = load_failed.clone();
    let (editor_args, max_message_bytes) = (args.editor.clone(), args.server.max_message_bytes);
    let code = arf_common::server::run_binary(
        "arf-editor",
        &[EDITOR],
        50052,
        &args.server,
        &args,
        |health, shutdown| async move {
            let config = editor_args.into_config()?;
            let (service, loading) = start_editor(config)?;
            // Load in the background so health answers (NOT_SERVING) meanwhile. A model that cannot
            // load ends the process: a replica that can never serve should not linger.
            tokio::spawn(async move {
                if let Err(e) = loading.then_serving(&health).await {
                    tracing::error!("the model failed to load: {e:#}");
                    failed.store(true, Ordering::SeqCst);
                    shutdown.cancel();
                }
            });
            Ok(Routes::new(service.into_server(max_message_bytes)))
        },
    )
    .await;
    if load_failed.load(Ordering::SeqCst) {
        std::process::ExitCode::FAILURE
    } else {
        code
    }
}
