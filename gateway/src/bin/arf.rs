//! `arf`: the ARF command line (see `gateway::cli`).

use clap::Parser;
use gateway::cli::{Cli, Command};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
    let result = match cli.command {
        Command::Demo(args) => gateway::cli::demo(args).await,
        Command::Run {
            gateway,
            dataset,
            server_side,
            watch,
            config,
        } => gateway::cli::run(&gateway, &dataset, server_side, watch, &config).await,
        Command::Watch {
            gateway,
            run_id,
            after,
        } => gateway::cli::watch(&gateway, &run_id, after).await,
        Command::Export {
            gateway,
            run_id,
            format,
            output,
        } => gateway::cli::export(&gateway, &run_id, &format, output.as_deref()).await,
        Command::Report {
            gateway,
            run_id,
            output,
        } => gateway::cli::report(&gateway, &run_id, &output).await,
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
