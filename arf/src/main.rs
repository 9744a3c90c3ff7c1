//! `arf`: the ARF command line (see `arf::cli`).

use std::sync::Arc;

use arf::cli::{Cli, Command};
use arf::student_host::LocalStudentHost;
use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match Cli::parse().command {
        // Servers: telemetry (OTLP), health and drain, as every ARF binary has.
        Command::Gateway { server, gateway } => {
            let host = Arc::new(LocalStudentHost::new(
                server.max_message_bytes,
                &gateway.data_dir,
            ));
            gateway::server::run(&server, &gateway, Some(host)).await
        }
        // One binary runs any of the services (the fault-injection tests kill and restart them).
        Command::Analyzer(args) => analyzer_svc::serve::run(&args).await,
        Command::Editor(args) => editor_svc::serve::run(args).await,
        Command::ServeStudent(args) => arf::cli::serve_student(args).await,
        Command::Trainer(args) => trainer_svc::serve::run(&args).await,
        // Clients of a gateway (the demo starts its own).
        Command::Demo(args) => client(arf::cli::demo(args)).await,
        Command::Run {
            gateway,
            dataset,
            server_side,
            watch,
            output,
            config,
        } => {
            let follow = watch.then_some(output);
            client(arf::cli::run(
                &gateway,
                &dataset,
                server_side,
                follow,
                &config,
            ))
            .await
        }
        Command::Watch {
            gateway,
            run_id,
            after,
            output,
        } => client(arf::cli::watch(&gateway, &run_id, after, output)).await,
        Command::Export {
            gateway,
            run_id,
            format,
            output,
        } => {
            client(arf::cli::export(
                &gateway,
                &run_id,
                &format,
                output.as_deref(),
            ))
            .await
        }
        Command::Report {
            gateway,
            run_id,
            output,
        } => client(arf::cli::report(&gateway, &run_id, &output)).await,
        Command::ExportModel(args) => client(arf::cli::export_model(&args)).await,
    }
}

/// A client command: warnings and errors on stderr (coloured on a terminal only), its error
/// as the exit status.
async fn client(command: impl Future<Output = anyhow::Result<()>>) -> std::process::ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
    match command.await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
