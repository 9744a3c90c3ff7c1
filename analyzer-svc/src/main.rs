//! `analyzer-svc`: the analyzer as its own server.

use clap::Parser;

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Finds and categorizes the errors of teacher summaries."
)]
struct Args {
    #[command(flatten)]
    serve: analyzer_svc::serve::ServeArgs,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    analyzer_svc::serve::run(&Args::parse().serve).await
}
