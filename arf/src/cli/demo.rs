//! `arf demo`: the embedded default.

use std::path::PathBuf;

use arf_common::config::ServerArgs;
use arf_proto::v1 as pb;

use super::SAMPLE;
use super::outcome::print_outcome;
use super::progress::RunProgress;
use super::run_config::RunConfigArgs;
use crate::suite::{Suite, SuiteConfig};
use crate::upload::{create_run, rows_from_jsonl, rows_in_memory};
use gateway::pipeline::stages;

#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// Folder for the database, trainer state, tiny models and the report.
    #[arg(long, env = "ARF_DATA_DIR", default_value = "arf-data")]
    pub data_dir: PathBuf,
    /// One real model as editor, judge and student base: a name fetched with
    /// `scripts/fetch-model.sh` (smollm2) or a path. Turns on every comparison arm (unrevised,
    /// filter-only, oracle, base) and the revision settings that won on the bench.
    #[arg(long, env = "ARF_DEMO_MODEL", conflicts_with_all = ["editor_model", "student_base"])]
    pub model: Option<String>,
    /// The editor model (HF directory or GGUF file). Without it: a tiny random-weight model.
    #[arg(long, env = "ARF_EDITOR_MODEL")]
    pub editor_model: Option<PathBuf>,
    /// A JSONL dataset instead of the bundled sample.
    #[arg(long)]
    pub dataset: Option<PathBuf>,
    /// Editor replicas (each loads the editor model); revisions spread over them by load.
    #[arg(long, env = "ARF_EDITOR_REPLICAS", default_value_t = 1)]
    pub editor_replicas: usize,
    /// The run's configuration, as `arf run` takes it (`--student-base` is also the suite's
    /// trainer base; without it, a tiny random-weight model). A flag left out takes the demo's
    /// value (`demo_config`).
    #[command(flatten)]
    pub run: RunConfigArgs,
}

pub async fn demo(mut args: DemoArgs) -> anyhow::Result<()> {
    let real = args.model.is_some();
    if let Some(model) = &args.model {
        let path = super::models::resolve(model)?;
        eprintln!(
            "one real model as editor, judge and student base: {}",
            path.display()
        );
        // The editor serves the GGUF itself: the patched Q4_1 kernels decode it ~6x faster than
        // its f32 copy on a CPU (one sequence: ~38 against ~6 tok/s on 2 cores).
        args.editor_model = Some(path.clone());
        args.run.student_base = Some(path.display().to_string());
    }
    if args.run.student_base.is_none() {
        // The suite's trainer base, as the editor model has ARF_EDITOR_MODEL.
        args.run.student_base = std::env::var("ARF_STUDENT_BASE")
            .ok()
            .filter(|s| !s.is_empty());
    }
    let student_base = args.run.student_base.as_ref().map(PathBuf::from);
    if args.editor_model.is_none() || student_base.is_none() {
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
        student_base,
        editor_replicas: args.editor_replicas,
    })
    .await?;
    let config = demo_config(&args.run, real)?;
    let result = drive(&suite, rows, &source, config).await;
    suite.shutdown().await?;
    result
}

/// Demo defaults for what the flags leave out (a 0 or an absent flag). On a real model every
/// comparison arm is trained (unrevised, filter-only, oracle; the base model zero-shot), so the
/// report shows whether revision beat both keeping and dropping the flawed summaries; revision
/// takes the bench's winning settings (best-of-4 span edits, one round); budgets are sized for a
/// 2-core CPU.
fn demo_config(flags: &RunConfigArgs, real: bool) -> anyhow::Result<pb::RunConfig> {
    let mut c = flags.to_config()?;
    // On 2 CPU cores best-of-4 costs ~40 s a flagged summary (SmolLM2, prompts dominate): one
    // round, and a budget that fits a summary.
    let or = |v: &mut u32, default: u32| {
        if *v == 0 {
            *v = default;
        }
    };
    or(&mut c.revision_rounds, if real { 1 } else { 2 });
    or(&mut c.revision_candidates, if real { 4 } else { 1 });
    or(&mut c.revision_max_tokens, if real { 192 } else { 0 });
    let training = c.training.get_or_insert_with(Default::default);
    or(
        &mut training.max_steps,
        if training.epochs == 0 { 20 } else { 0 },
    );
    or(&mut training.max_seq_len, if real { 512 } else { 0 });
    if training.learning_rate == 0.0 {
        training.learning_rate = if real { 2e-4 } else { 1e-3 };
    }
    let evaluation = c.evaluation.get_or_insert_with(Default::default);
    if evaluation.holdout_fraction == 0.0 {
        evaluation.holdout_fraction = 0.25;
    }
    if evaluation.seed == 0 {
        evaluation.seed = 7;
    }
    evaluation.judge = true;
    or(
        &mut evaluation.max_summary_tokens,
        if real { 96 } else { 0 },
    );
    c.compare_unrevised |= real;
    c.compare_filter_only |= real;
    c.compare_oracle |= real;
    Ok(c)
}

async fn drive(
    suite: &Suite,
    rows: Vec<pb::DatasetRow>,
    source: &str,
    config: pb::RunConfig,
) -> anyhow::Result<()> {
    let mut client = super::GatewayClientArgs {
        gateway: suite.gateway_endpoint(),
        token: None,
        tls_ca: None,
        tls_cert: None,
        tls_key: None,
    }
    .connect()?;
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
    let mut progress = RunProgress::new(run.counts.unwrap_or_default(), &stages(&config));
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        demo: DemoArgs,
    }

    /// Issue 34: the demo takes `arf run`'s run-config flags; what they leave out is the
    /// demo's, and a real model trains every arm.
    #[test]
    fn the_demo_takes_the_run_flags_and_fills_in_its_own() {
        let cli = Cli::try_parse_from([
            "arf",
            "--revision-candidates",
            "2",
            "--train-steps",
            "7",
            "--holdout",
            "0.5",
            "--repair",
            "rules-then-model",
        ])
        .unwrap();
        let c = demo_config(&cli.demo.run, true).unwrap();
        assert_eq!(c.revision_candidates, 2);
        assert_eq!(c.revision_rounds, 1);
        assert_eq!(c.training.as_ref().unwrap().max_steps, 7);
        assert_eq!(c.evaluation.as_ref().unwrap().holdout_fraction, 0.5);
        assert_eq!(c.repair(), pb::RepairMode::RulesThenModel);
        assert!(c.compare_unrevised && c.compare_filter_only && c.compare_oracle);
        let c = demo_config(&Cli::try_parse_from(["arf"]).unwrap().demo.run, false).unwrap();
        assert_eq!((c.revision_candidates, c.revision_rounds), (1, 2));
        assert_eq!(c.training.as_ref().unwrap().max_steps, 20);
        assert!(!c.compare_unrevised && !c.compare_oracle);
        assert!(Cli::try_parse_from(["arf", "--model", "m", "--student-base", "b"]).is_err());
    }
}
