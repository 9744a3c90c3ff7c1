//! `arf demo`: the embedded default.

use std::path::PathBuf;

use arf_common::config::ServerArgs;
use arf_proto::v1 as pb;

use super::outcome::print_outcome;
use super::progress::RunProgress;
use super::{SAMPLE, create_run, rows_from_jsonl, rows_in_memory};
use crate::suite::{Suite, SuiteConfig};
use gateway::pipeline::stages;

#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// Folder for the database, trainer state, tiny models and the report.
    #[arg(long, env = "ARF_DATA_DIR", default_value = "arf-data")]
    pub data_dir: PathBuf,
    /// One real model as editor, judge and student base: a name fetched with
    /// `scripts/fetch-model.sh` (smollm2) or a path. Turns on the four-way comparison.
    #[arg(long, env = "ARF_DEMO_MODEL", conflicts_with_all = ["editor_model", "student_base"])]
    pub model: Option<String>,
    /// The editor model (HF directory or GGUF file). Without it: a tiny random-weight model.
    #[arg(long, env = "ARF_EDITOR_MODEL")]
    pub editor_model: Option<PathBuf>,
    /// The student's base model (HF directory or GGUF file). Without it: a tiny random-weight model.
    #[arg(long, env = "ARF_STUDENT_BASE")]
    pub student_base: Option<PathBuf>,
    /// A JSONL dataset instead of the bundled sample.
    #[arg(long)]
    pub dataset: Option<PathBuf>,
    /// Editor replicas (each loads the editor model); revisions spread over them by load.
    #[arg(long, env = "ARF_EDITOR_REPLICAS", default_value_t = 1)]
    pub editor_replicas: usize,
    /// Training steps (0: one epoch).
    #[arg(long, default_value_t = 20)]
    pub train_steps: u32,
}

pub async fn demo(mut args: DemoArgs) -> anyhow::Result<()> {
    let real = args.model.is_some();
    if let Some(model) = &args.model {
        let path = super::models::resolve(model)?;
        eprintln!(
            "one real model as editor, judge and student base: {}",
            path.display()
        );
        let editor = if path.is_file() {
            super::models::dequantized_copy(&path, &args.data_dir)?
        } else {
            path.clone()
        };
        args.editor_model = Some(editor);
        args.student_base = Some(path);
    }
    if args.editor_model.is_none() || args.student_base.is_none() {
        eprintln!(
            "\n  WARNING: no {} configured: using a tiny RANDOM-WEIGHT Llama written under {}.\n  \
             Every code path is real, but its revisions and summaries are meaningless.\n  \
             Point --editor-model and --student-base (or ARF_EDITOR_MODEL / ARF_STUDENT_BASE) at real models.\n",
            if args.editor_model.is_none() {
                "editor model"
            } else {
                "student base"
            },
            args.data_dir.display()
        );
    }
    let (text, source) = match &args.dataset {
        Some(path) => (std::fs::read(path)?, path.display().to_string()),
        None => (SAMPLE.as_bytes().to_vec(), "the bundled sample".to_string()),
    };
    let rows = rows_from_jsonl(&text, &source)?;
    eprintln!("starting the suite (analyzer, editor, trainer, gateway) on loopback...");
    let suite = Suite::start(SuiteConfig {
        server: ServerArgs::local(),
        data_dir: args.data_dir.clone(),
        editor_model: args.editor_model.clone(),
        student_base: args.student_base.clone(),
        editor_replicas: args.editor_replicas,
    })
    .await?;
    let result = drive(&suite, rows, &source, args.train_steps, real).await;
    suite.shutdown().await?;
    result
}

/// The demo's run. On a real model it also trains the unrevised student and evaluates the base
/// model, so the report shows whether revision helped; budgets are sized for a 2-core CPU.
fn demo_config(train_steps: u32, real: bool) -> pb::RunConfig {
    pb::RunConfig {
        // On a CPU a 135M model writes ~5-7 tokens/s: one round, and a budget that fits a summary.
        revision_rounds: if real { 1 } else { 2 },
        revision_max_tokens: if real { 192 } else { 0 },
        training: Some(pb::Hyperparameters {
            max_steps: train_steps,
            learning_rate: if real { 2e-4 } else { 1e-3 },
            max_seq_len: if real { 512 } else { 0 },
            ..Default::default()
        }),
        evaluation: Some(pb::EvaluationConfig {
            holdout_fraction: 0.25,
            seed: 7,
            judge: true,
            max_summary_tokens: if real { 96 } else { 0 },
            ..Default::default()
        }),
        compare_unrevised: real,
        ..Default::default()
    }
}

async fn drive(
    suite: &Suite,
    rows: Vec<pb::DatasetRow>,
    source: &str,
    train_steps: u32,
    real: bool,
) -> anyhow::Result<()> {
    let mut client = super::GatewayClientArgs {
        gateway: suite.gateway_endpoint(),
        token: None,
        tls_ca: None,
        tls_cert: None,
        tls_key: None,
    }
    .connect()?;
    let config = demo_config(train_steps, real);
    let spec = pb::RunSpec {
        display_name: format!("demo over {source}"),
        config: Some(config.clone()),
        ..Default::default()
    };
    let run = create_run(&mut client, spec, rows_in_memory(rows)).await?;
    eprintln!(
        "run {} created: {} rows",
        run.id,
        run.counts.as_ref().map_or(0, |c| c.rows)
    );
    let mut progress = RunProgress::new(run.counts.clone().unwrap_or_default(), &stages(&config));
    let mut events = client
        .watch_run(pb::WatchRunRequest {
            run_id: run.id.clone(),
            after_sequence: 0,
        })
        .await?
        .into_inner();
    while let Some(event) = events.message().await? {
        progress.on_event(&event);
    }
    let run = print_outcome(&mut client, &run.id).await?;
    anyhow::ensure!(
        run.state == pb::RunState::Succeeded as i32,
        "the run did not succeed"
    );
    Ok(())
}
