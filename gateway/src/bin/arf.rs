//! `arf`: the ARF command line.

use arf_common::client::{ClientOptions, connect_lazy};
use arf_common::config::ServerArgs;
use clap::{Parser, Subcommand};
use gateway::suite::Suite;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

#[derive(Parser, Debug)]
#[command(version, about = "ARF: analyze, revise and fine-tune on teacher summaries")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// The embedded default: the whole suite in this process, on loopback.
    Demo,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Demo => demo().await,
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn demo() -> anyhow::Result<()> {
    let suite = Suite::start(gateway::suite::SuiteConfig {
        server: ServerArgs::local(),
        data_dir: std::path::PathBuf::from("arf-data"),
        editor_model: None,
        student_base: None,
    })
    .await?;
    println!("ARF suite running in this process:");
    for (service, server) in suite.servers() {
        let channel = connect_lazy(&format!("http://{}", server.local_addr()), &ClientOptions::default())?;
        let status = HealthClient::new(channel)
            .check(HealthCheckRequest { service: service.to_string() })
            .await?
            .into_inner()
            .status();
        println!("  {service:<18} {:<22} health {}", server.local_addr(), status.as_str_name());
    }
    println!("\nThe pipeline stages are not built yet: each service answers UNIMPLEMENTED for now.");
    suite.shutdown().await
}
