//! The editor as a server process: what `editor-svc` and `arf editor` run.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arf_common::config::ServerArgs;
use arf_proto::service_names::EDITOR;
use tonic::service::Routes;

use crate::{EditorArgs, start_editor};

/// Revises summaries and generates text with a hosted model.
#[derive(clap::Args, Debug, Clone)]
pub struct ServeArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    #[command(flatten)]
    pub editor: EditorArgs,
}

/// Serves until SIGTERM or SIGINT (then drains). A model that cannot load ends the process
/// with a failure: a replica that can never serve should not linger.
pub async fn run(args: ServeArgs) -> std::process::ExitCode {
    let load_failed = Arc::new(AtomicBool::new(false));
    let failed = load_failed.clone();
    let (editor_args, max_message_bytes) = (args.editor.clone(), args.server.max_message_bytes);
    let code = arf_common::server::run_binary(
        "arf-editor",
        &[EDITOR],
        arf_proto::default_ports::EDITOR,
        &args.server,
        &args,
        |health, shutdown| async move {
            let config = editor_args.into_config()?;
            let (service, loading) = start_editor(config)?;
            // Load in the background so health answers (NOT_SERVING) meanwhile.
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
