//! `arf serve-student RUN_ID`: a finished run's ARF student, served to the apps that call models
//! with an `openai` client (and over gRPC), by an editor process on its merged folder. Run it
//! where that folder is (the trainer's machine: the gateway says where, in `Run.student_model_dir`).

use std::net::SocketAddr;

use anyhow::Context as _;
use arf_common::config::{Secret, ServerArgs};
use arf_proto::v1 as pb;
use clap::Parser as _;

use super::GatewayClientArgs;

#[derive(clap::Args, Debug, Clone)]
pub struct ServeStudentArgs {
    #[command(flatten)]
    pub gateway: GatewayClientArgs,
    /// The run whose student to serve (it must have finished Finetune).
    pub run_id: String,
    /// The OpenAI HTTP API's address (`/v1/chat/completions`, `/v1/models`, `/health`).
    #[arg(long, default_value = "127.0.0.1:8000")]
    pub http_listen: SocketAddr,
    /// The gRPC Editor API's address.
    #[arg(long, default_value = "127.0.0.1:50052")]
    pub listen: SocketAddr,
    /// Require `Authorization: Bearer <token>` on both APIs (needed beyond loopback).
    #[arg(long, env = "ARF_AUTH_TOKEN", hide_env_values = true)]
    pub auth_token: Option<Secret>,
    /// Serve beyond loopback without --auth-token (a loud warning at start-up).
    #[arg(long)]
    pub allow_unauthenticated: bool,
}

/// Clap's parse of the editor's own flags, so the student gets every default and `ARF_EDITOR_*`
/// setting an `arf editor` would.
#[derive(clap::Parser)]
struct EditorFlags {
    #[command(flatten)]
    editor: editor_svc::EditorArgs,
}

/// Asks the gateway for the run's merged student, then serves it until SIGINT/SIGTERM.
pub async fn serve_student(args: ServeStudentArgs) -> std::process::ExitCode {
    let serve = match student_serve_args(&args).await {
        Ok(serve) => serve,
        Err(e) => {
            eprintln!("error: {e:#}");
            return std::process::ExitCode::FAILURE;
        }
    };
    editor_svc::serve::run(serve).await
}

async fn student_serve_args(
    args: &ServeStudentArgs,
) -> anyhow::Result<editor_svc::serve::ServeArgs> {
    let run = args
        .gateway
        .connect()?
        .get_run(pb::GetRunRequest {
            run_id: args.run_id.clone(),
        })
        .await
        .with_context(|| format!("asking {} for run {}", args.gateway.gateway, args.run_id))?
        .into_inner();
    anyhow::ensure!(
        !run.student_model_dir.is_empty(),
        "run {} has no merged student yet (state {:?}, stage {:?}): serve it once Finetune has ended",
        run.id,
        pb::RunState::try_from(run.state).unwrap_or_default(),
        pb::Stage::try_from(run.current_stage).unwrap_or_default(),
    );
    let dir = std::path::Path::new(&run.student_model_dir);
    anyhow::ensure!(
        dir.join("config.json").is_file(),
        "{} is not a model folder on this machine: run `arf serve-student` where the trainer wrote it",
        dir.display()
    );
    let editor = EditorFlags::try_parse_from([
        "arf serve-student".as_ref(),
        "--model".as_ref(),
        dir.as_os_str(),
    ])?
    .editor;
    let server = ServerArgs {
        listen: Some(args.listen),
        auth_token: args.auth_token.clone(),
        allow_unauthenticated: args.allow_unauthenticated,
        ..ServerArgs::local()
    };
    Ok(editor_svc::serve::ServeArgs {
        server,
        editor,
        http_listen: Some(args.http_listen),
    })
}
