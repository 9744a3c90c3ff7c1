//! `arf`: the ARF command line (see `arf::cli`).

use std::sync::Arc;

use arf::cli::{Cli, Command};
use arf::student_host::LocalStudentHost;
use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let command = match Cli::parse().command {
        Command::Gateway { server, gateway } => {
            // A server: telemetry (OTLP), health and drain, as every ARF binary has.
            let host = Arc::new(LocalStudentHost::new(
                server.max_message_bytes,
                &gateway.data_dir,
            ));
            return gateway::server::run(&server, &gateway, Some(host)).await;
        }
        // One binary runs any of the services (the fault-injection tests kill and restart them).
        Command::Analyzer(args) => return analyzer_svc::serve::run(&args).await,
        Command::Editor(args) => return editor_svc::serve::run(args).await,
        Command::Trainer(args) => return trainer_svc::serve::run(&args).await,
        other => other,
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
    let result = match command {
        // Served above.
        Command::Gateway { .. }
        | Command::Analyzer(_)
        | Command::Editor(_)
        | Command::Trainer(_) => Ok(()),
        Command::Demo(args) => arf::cli::demo(args).await,
        Command::Run {
            gateway,
            dataset,
            server_side,
            watch,
            config,
        } => arf::cli::run(&gateway, &dataset, server_side, watch, &config).await,
        Command::Watch {
            gateway,
            run_id,
            after,
        } => arf::cli::watch(&gateway, &run_id, after).await,
        Command::Export {
            gateway,
            run_id,
            format,
            output,
        } => arf::cli::export(&gateway, &run_id, &format, output.as_deref()).await,
        Command::Report {
            gateway,
            run_id,
            output,
        } => arf::cli::report(&gateway, &run_id, &output).await,
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
