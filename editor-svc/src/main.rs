//! `editor-svc`: a language model hosted through mistral.rs, as its own server.

use clap::Parser;

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Revises summaries and generates text with a hosted model."
)]
struct Args {
    #[command(flatten)]
    serve: editor_svc::serve::ServeArgs,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    editor_svc::serve::run(Args::parse().serve).await
}
