//! `trainer-svc`: LoRA fine-tuning jobs on candle, as a server (`serve`, the default) or one
//! run from the command line (`train`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use trainer_svc::lora::LoraSpec;
use trainer_svc::train::{Event, ExampleFile, Outcome, TrainConfig, train};

/// Fine-tunes a student model with LoRA.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: trainer_svc::serve::ServeArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve the Trainer gRPC API (the default).
    Serve,
    /// Train once, without a server, and print the output paths.
    Train(TrainArgs),
}

#[derive(clap::Args, Debug)]
struct TrainArgs {
    /// The base model: a Hugging Face directory or a GGUF file (dequantized at load).
    #[arg(long)]
    base: PathBuf,
    /// JSONL training rows (`{id, channel, turns, summary}`).
    #[arg(long)]
    data: PathBuf,
    /// Output directory (adapter/, merged/, checkpoints/). A rerun resumes from its checkpoints.
    #[arg(long)]
    output: PathBuf,
    #[arg(long, default_value_t = trainer_svc::lora::DEFAULT_RANK)]
    rank: usize,
    /// Default: 2 * rank.
    #[arg(long)]
    alpha: Option<f64>,
    #[arg(long, default_value_t = 0.0)]
    dropout: f32,
    /// Comma-separated module names; default q,k,v,o,gate,up,down.
    #[arg(long, value_delimiter = ',')]
    target_modules: Vec<String>,
    #[arg(long, default_value_t = 2e-4)]
    lr: f64,
    #[arg(long, default_value_t = 1)]
    epochs: u32,
    /// Exactly this many optimizer steps, repeating the data as needed (0: run the epochs).
    #[arg(long, default_value_t = 0)]
    steps: u64,
    #[arg(long, default_value_t = 1)]
    batch_size: usize,
    #[arg(long, default_value_t = 1)]
    grad_accum: usize,
    #[arg(long, default_value_t = 0)]
    warmup: u64,
    #[arg(long, default_value_t = 0.0)]
    weight_decay: f64,
    #[arg(long, default_value_t = 1.0)]
    max_grad_norm: f64,
    #[arg(long, default_value_t = 2048)]
    max_seq_len: usize,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    #[arg(long, default_value_t = 0)]
    eval_every: u64,
    #[arg(long, default_value_t = 0)]
    checkpoint_every: u64,
    #[arg(long, default_value_t = 0.0)]
    eval_fraction: f32,
    /// f32 or bf16: the frozen base's weights, and the arithmetic of its products (bf16 runs on
    /// AMX tiles where the CPU has them; the adapters and the optimizer stay f32).
    #[arg(long, default_value = "f32")]
    base_dtype: String,
    /// Also write a merged model directory.
    #[arg(long)]
    merged: bool,
}

fn run_train(a: TrainArgs) -> anyhow::Result<()> {
    let target_modules =
        LoraSpec::normalize_modules(&a.target_modules).map_err(anyhow::Error::msg)?;
    let mut cfg = TrainConfig::with_defaults(&a.base, &a.output);
    cfg.lora = LoraSpec {
        rank: a.rank,
        alpha: a.alpha.unwrap_or(LoraSpec::default_alpha(a.rank)),
        dropout: a.dropout,
        target_modules,
    };
    cfg.learning_rate = a.lr;
    cfg.epochs = a.epochs;
    cfg.max_steps = a.steps;
    cfg.batch_size = a.batch_size;
    cfg.gradient_accumulation_steps = a.grad_accum;
    cfg.warmup_steps = a.warmup;
    cfg.weight_decay = a.weight_decay;
    cfg.max_grad_norm = a.max_grad_norm;
    cfg.max_seq_len = a.max_seq_len;
    cfg.seed = a.seed;
    cfg.eval_every_steps = a.eval_every;
    cfg.checkpoint_every_steps = a.checkpoint_every;
    cfg.eval_fraction = a.eval_fraction;
    cfg.base_dtype = a.base_dtype;
    cfg.export_merged = a.merged;
    let examples = ExampleFile::open(&a.data)?;
    let mut print = |e: Event| match e {
        Event::Warning(_) => eprintln!("{e}"),
        e => println!("{e}"),
    };
    let device = trainer_svc::device();
    let outcome = trainer_svc::model::fused::threads::on_one_worker(|| {
        train(&cfg, &examples, &mut print, &device)
    })?;
    match outcome {
        Outcome::Succeeded {
            adapter_dir,
            merged_dir,
            ..
        } => {
            println!("adapter: {}", adapter_dir.display());
            if let Some(m) = merged_dir {
                println!("merged: {}", m.display());
            }
            Ok(())
        }
        Outcome::Cancelled { .. } => anyhow::bail!("cancelled"),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    match args.command {
        Some(Command::Train(a)) => {
            // Training is synchronous candle work: keep it off the async runtime's workers.
            match tokio::task::spawn_blocking(move || run_train(a)).await {
                Ok(Ok(())) => ExitCode::SUCCESS,
                Ok(Err(e)) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Some(Command::Serve) | None => trainer_svc::serve::run(&args.serve).await,
    }
}
