//! `arf export-model RUN_ID --format gguf`: a finished run's ARF student as one GGUF file, for
//! llama.cpp, Ollama and LM Studio. Run it where the trainer wrote the merged folder (the
//! gateway says where, in `Run.student_model_dir`), as `arf serve-student`.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use arf_proto::v1 as pb;
use trainer_svc::model::gguf::{GgufQuant, write_gguf};

use super::GatewayClientArgs;

#[derive(clap::Args, Debug, Clone)]
pub struct ExportModelArgs {
    #[command(flatten)]
    pub gateway: GatewayClientArgs,
    /// The run whose student to export (it must have finished Finetune).
    #[arg(required_unless_present = "merged")]
    pub run_id: Option<String>,
    /// A merged student folder to export instead of a run's (a trainer job's `output/merged`,
    /// trained directly through the Trainer API); no gateway is asked.
    #[arg(long, conflicts_with = "run_id")]
    pub merged: Option<PathBuf>,
    /// The file format: gguf.
    #[arg(long, default_value = "gguf")]
    pub format: String,
    /// The weights' encoding: f16, q8_0 or q4_k (norms stay f32).
    #[arg(long, default_value = "f16")]
    pub quant: String,
    /// The file to write.
    #[arg(long, short)]
    pub output: PathBuf,
}

pub async fn export_model(args: &ExportModelArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.format == "gguf",
        "unknown model format {:?} (gguf; the merged Hugging Face folder is Run.student_model_dir)",
        args.format
    );
    let quant = GgufQuant::parse(&args.quant)
        .with_context(|| format!("unknown --quant {:?} ({})", args.quant, GgufQuant::NAMES))?;
    let merged = match (&args.merged, &args.run_id) {
        (Some(dir), _) => dir.clone(),
        (None, Some(run_id)) => run_student_dir(&args.gateway, run_id).await?,
        (None, None) => anyhow::bail!("name a run, or a merged folder with --merged"),
    };
    anyhow::ensure!(
        merged.join("model.safetensors").is_file(),
        "{} is not a model folder on this machine: run `arf export-model` where the trainer wrote it",
        merged.display()
    );
    let base = student_base(&merged)?;
    let output = args.output.clone();
    tokio::task::spawn_blocking(move || write_gguf(&merged, &base, quant, &output)).await??;
    eprintln!("wrote {}", args.output.display());
    Ok(())
}

/// The run's merged student folder, as the gateway names it.
async fn run_student_dir(gateway: &GatewayClientArgs, run_id: &str) -> anyhow::Result<PathBuf> {
    let run = gateway
        .connect()?
        .get_run(pb::GetRunRequest {
            run_id: run_id.into(),
        })
        .await
        .with_context(|| format!("asking {} for run {run_id}", gateway.gateway))?
        .into_inner();
    anyhow::ensure!(
        !run.student_model_dir.is_empty(),
        "run {} has no merged student yet: export it once Finetune has ended",
        run.id
    );
    Ok(PathBuf::from(run.student_model_dir))
}

/// The base the student was trained from, as the trainer recorded it beside the merged folder
/// (the adapter's `base_model_name_or_path`, PEFT's convention).
fn student_base(merged: &Path) -> anyhow::Result<PathBuf> {
    let config = merged.with_file_name("adapter").join("adapter_config.json");
    let text = std::fs::read_to_string(&config)
        .with_context(|| format!("reading the student's adapter config {}", config.display()))?;
    let value: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", config.display()))?;
    value["base_model_name_or_path"]
        .as_str()
        .map(PathBuf::from)
        .with_context(|| format!("{} names no base_model_name_or_path", config.display()))
}
