//! `arf run`, `arf watch`, `arf export`, `arf report`: against a running gateway.

use std::io::Write as _;
use std::path::Path;

use arf_proto::v1 as pb;

use super::{GatewayClientArgs, RunConfigArgs};
use crate::upload::{create_run, rows_in_memory, stream_jsonl};

pub async fn run(
    gateway: &GatewayClientArgs,
    dataset: &Path,
    server_side: bool,
    follow: Option<EventOutput>,
    config: &RunConfigArgs,
) -> anyhow::Result<()> {
    let mut client = gateway.connect()?;
    let config = config.to_config()?;
    let mut spec = pb::RunSpec {
        display_name: dataset.display().to_string(),
        config: Some(config),
        ..Default::default()
    };
    let rows = if server_side {
        spec.dataset_path = dataset.display().to_string();
        rows_in_memory(Vec::new())
    } else {
        stream_jsonl(dataset)?
    };
    let run = create_run(&mut client, spec, rows).await?;
    println!("{}", run.id);
    for bad in &run.bad_rows {
        eprintln!(
            "bad row at line {}: {}: {}",
            bad.line, bad.field, bad.message
        );
    }
    if let Some(output) = follow {
        watch(gateway, &run.id, 0, output).await?;
        super::outcome::print_outcome(&mut client, &run.id).await?;
    }
    Ok(())
}

/// How `arf watch` and `arf run --watch` print a run's events.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum EventOutput {
    /// One line a person reads: `27 training step 27/60 loss 2.10 lr 1.2e-4 196 tok/s`.
    #[default]
    Text,
    /// One `RunEvent` a line in protobuf's JSON mapping, for scripts.
    Json,
}

pub async fn watch(
    gateway: &GatewayClientArgs,
    run_id: &str,
    after: u64,
    output: EventOutput,
) -> anyhow::Result<()> {
    let mut client = gateway.connect()?;
    let mut events = client
        .watch_run(pb::WatchRunRequest {
            run_id: run_id.into(),
            after_sequence: after,
        })
        .await?
        .into_inner();
    while let Some(e) = events.message().await? {
        match output {
            EventOutput::Text => println!("{:>6} {}", e.sequence, super::progress::event_line(&e)),
            EventOutput::Json => println!("{}", super::event_json::to_json(&e)?),
        }
    }
    Ok(())
}

pub async fn export(
    gateway: &GatewayClientArgs,
    run_id: &str,
    format: &str,
    output: Option<&Path>,
) -> anyhow::Result<()> {
    let format = match format {
        "openai" => pb::ExportFormat::OpenaiChat,
        "plain" => pb::ExportFormat::Plain,
        "dpo" => pb::ExportFormat::Dpo,
        "openai-preference" => pb::ExportFormat::OpenaiPreference,
        other => {
            anyhow::bail!("unknown format {other:?} (openai, plain, dpo or openai-preference)")
        }
    };
    let mut client = gateway.connect()?;
    let mut chunks = client
        .export_dataset(pb::ExportDatasetRequest {
            run_id: run_id.into(),
            format: format as i32,
        })
        .await?
        .into_inner();
    let mut out: Box<dyn std::io::Write> = match output {
        Some(path) => Box::new(std::fs::File::create(path)?),
        None => Box::new(std::io::stdout().lock()),
    };
    while let Some(chunk) = chunks.message().await? {
        out.write_all(&chunk.data)?;
    }
    out.flush()?;
    Ok(())
}

pub async fn report(
    gateway: &GatewayClientArgs,
    run_id: &str,
    output: &Path,
) -> anyhow::Result<()> {
    let mut client = gateway.connect()?;
    let report = client
        .get_report(pb::GetReportRequest {
            run_id: run_id.into(),
        })
        .await?
        .into_inner();
    let dir = output.join(format!("arf-report-{run_id}"));
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("report.md"), &report.markdown)?;
    for file in &report.files {
        std::fs::write(dir.join(plain_file_name(&file.name)?), &file.content)?;
    }
    println!("{}", dir.join("report.md").display());
    Ok(())
}

/// A file name from the server, refused unless it stays in the report's folder: no path
/// separators, no `..`, nothing empty (a hostile or broken server must not write elsewhere).
fn plain_file_name(name: &str) -> anyhow::Result<&str> {
    let plain =
        !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\\', '\0']);
    anyhow::ensure!(
        plain,
        "the report names a file {name:?}: not a plain file name; nothing written for it"
    );
    Ok(name)
}

#[cfg(test)]
mod tests {
    #[test]
    fn report_files_stay_in_the_report_folder() {
        assert_eq!(
            super::plain_file_name("summaries.jsonl").unwrap(),
            "summaries.jsonl"
        );
        for bad in ["", ".", "..", "../x", "/etc/passwd", "a/b", "a\\b", "a\0b"] {
            assert!(super::plain_file_name(bad).is_err(), "{bad:?}");
        }
    }
}
