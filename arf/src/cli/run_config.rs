//! `arf run`'s flags for a run's configuration. Left out, a flag means the gateway's default.

use arf_proto::v1 as pb;
use clap::{Args, ValueEnum};

#[derive(Args, Debug, Default)]
pub struct RunConfigArgs {
    /// Only these stages (generate, analyze, revise, finetune, evaluate); all by default.
    #[arg(long, value_delimiter = ',')]
    pub stages: Vec<String>,
    /// Analyzer detectors to run (from the taxonomy); all rule detectors by default.
    #[arg(long, value_delimiter = ',')]
    pub detectors: Vec<String>,
    /// Also run the model-judged detectors.
    #[arg(long)]
    pub model_judged: bool,
    /// Revision attempts per flagged summary (default 2, at most 10).
    #[arg(long)]
    pub revision_rounds: Option<u32>,
    /// Candidates sampled per revision round, the best one the gate accepts wins (default 1).
    #[arg(long)]
    pub revision_candidates: Option<u32>,
    /// Token budget of one revision (default: the editor's).
    #[arg(long)]
    pub revision_max_tokens: Option<u32>,
    /// When a revision counts as better than the teacher's summary.
    #[arg(long, value_enum, default_value_t = Acceptance::LowerWeightedScore)]
    pub acceptance: Acceptance,
    /// What becomes of a summary no revision improved.
    #[arg(long, value_enum, default_value_t = Unimproved::KeepOriginal)]
    pub on_unimproved: Unimproved,
    /// Student base model (a directory or a .gguf file), on the trainer's machine.
    #[arg(long)]
    pub student_base: Option<String>,
    /// Train for exactly this many optimizer steps, repeating the data as often as needed
    /// (overrides --epochs; every student of a comparison takes the same number).
    #[arg(long)]
    pub train_steps: Option<u32>,
    #[arg(long)]
    pub epochs: Option<u32>,
    #[arg(long)]
    pub learning_rate: Option<f64>,
    #[arg(long)]
    pub lora_rank: Option<u32>,
    /// Fraction of the conversations held out from training and evaluated (default 0.2).
    #[arg(long)]
    pub holdout: Option<f32>,
    /// Seed of the held-out split.
    #[arg(long, default_value_t = 0)]
    pub split_seed: u64,
    /// An Editor endpoint serving the student (default: the gateway serves the merged model itself).
    #[arg(long)]
    pub student_endpoint: Option<String>,
    /// Also rate summaries 1-5 with a judge model.
    #[arg(long)]
    pub judge: bool,
    /// Token budget of a summary written by the teacher (Generate) or a student (Evaluate).
    #[arg(long)]
    pub summary_max_tokens: Option<u32>,
    /// Also train a student on the unrevised teacher summaries and evaluate the base model
    /// zero-shot: the report compares base, unrevised student, ARF student and teacher.
    #[arg(long)]
    pub compare_unrevised: bool,
    /// Also train a student on the teacher summaries the analyzer did not flag (flagged rows
    /// dropped, nothing revised): what revising adds over filtering.
    #[arg(long)]
    pub compare_filter_only: bool,
    /// Also train a student on the human references of the training rows: the ceiling, which
    /// tells whether the evaluation can see a difference in training data at all.
    #[arg(long)]
    pub compare_oracle: bool,
    /// `rules-then-model`: apply the fixes the detectors determine (PII placeholder, preamble
    /// or unsupported clause deleted, bullets as prose, swapped party) before asking the editor;
    /// counted as "repaired by rule". A separate arm: the same detectors then repair and judge.
    #[arg(long, value_enum, default_value_t = Repair::Model)]
    pub repair: Repair,
    /// Replace personal data (emails, phone, card and account numbers, addresses, the
    /// customer's name) by typed placeholders in every row before it is stored: nothing the run
    /// trains on, exports or reports holds the values (`privacy: SCRUB_PII`).
    #[arg(long)]
    pub scrub_pii: bool,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum Repair {
    #[default]
    Model,
    RulesThenModel,
}

#[derive(Clone, Copy, Debug, Default, ValueEnum)]
pub enum Acceptance {
    #[default]
    LowerWeightedScore,
    FewerFindings,
    Clean,
}

#[derive(Clone, Copy, Debug, Default, ValueEnum)]
pub enum Unimproved {
    Exclude,
    #[default]
    KeepOriginal,
}

impl RunConfigArgs {
    pub fn to_config(&self) -> anyhow::Result<pb::RunConfig> {
        let lora = self.lora_rank.map(|rank| pb::LoraConfig {
            rank,
            ..Default::default()
        });
        Ok(pb::RunConfig {
            stages: parse_stages(&self.stages)?,
            analyzer: Some(pb::AnalyzeOptions {
                detectors: self.detectors.clone(),
                categories: vec![],
                model_judged: self.model_judged,
            }),
            revision_rounds: self.revision_rounds.unwrap_or(0),
            revision_max_tokens: self.revision_max_tokens.unwrap_or(0),
            revision_candidates: self.revision_candidates.unwrap_or(0),
            acceptance: match self.acceptance {
                Acceptance::LowerWeightedScore => pb::AcceptanceRule::LowerWeightedScore,
                Acceptance::FewerFindings => pb::AcceptanceRule::FewerFindings,
                Acceptance::Clean => pb::AcceptanceRule::Clean,
            } as i32,
            on_unimproved: match self.on_unimproved {
                Unimproved::Exclude => pb::UnimprovedPolicy::Exclude,
                Unimproved::KeepOriginal => pb::UnimprovedPolicy::KeepOriginal,
            } as i32,
            training: Some(pb::Hyperparameters {
                lora,
                learning_rate: self.learning_rate.unwrap_or(0.0),
                epochs: self.epochs.unwrap_or(0),
                max_steps: self.train_steps.unwrap_or(0),
                ..Default::default()
            }),
            evaluation: Some(pb::EvaluationConfig {
                holdout_fraction: self.holdout.unwrap_or(0.0),
                seed: self.split_seed,
                student_endpoint: self.student_endpoint.clone().unwrap_or_default(),
                judge: self.judge,
                max_summary_tokens: self.summary_max_tokens.unwrap_or(0),
            }),
            student_base_model_dir: self.student_base.clone().unwrap_or_default(),
            compare_unrevised: self.compare_unrevised,
            compare_filter_only: self.compare_filter_only,
            compare_oracle: self.compare_oracle,
            repair: match self.repair {
                Repair::Model => pb::RepairMode::Model,
                Repair::RulesThenModel => pb::RepairMode::RulesThenModel,
            } as i32,
            privacy: if self.scrub_pii {
                pb::Privacy::ScrubPii
            } else {
                pb::Privacy::Keep
            } as i32,
        })
    }
}

/// Stage names as the proto's numbers, in the order given.
fn parse_stages(names: &[String]) -> anyhow::Result<Vec<i32>> {
    names
        .iter()
        .map(|n| {
            Ok(match n.to_ascii_lowercase().as_str() {
                "generate" => pb::Stage::Generate,
                "analyze" => pb::Stage::Analyze,
                "revise" => pb::Stage::Revise,
                "finetune" => pb::Stage::Finetune,
                "evaluate" => pb::Stage::Evaluate,
                other => anyhow::bail!(
                    "unknown stage {other:?} (generate, analyze, revise, finetune, evaluate)"
                ),
            } as i32)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        config: RunConfigArgs,
    }

    #[test]
    fn flags_become_the_run_config() {
        let cli = Cli::try_parse_from([
            "arf",
            "--stages",
            "analyze,revise",
            "--revision-rounds",
            "3",
            "--acceptance",
            "clean",
            "--on-unimproved",
            "keep-original",
            "--lora-rank",
            "8",
            "--holdout",
            "0.3",
        ])
        .unwrap();
        let c = cli.config.to_config().unwrap();
        assert_eq!(
            c.stages,
            [pb::Stage::Analyze as i32, pb::Stage::Revise as i32]
        );
        assert_eq!(c.revision_rounds, 3);
        assert_eq!(c.acceptance(), pb::AcceptanceRule::Clean);
        assert_eq!(c.on_unimproved(), pb::UnimprovedPolicy::KeepOriginal);
        assert_eq!(c.training.unwrap().lora.unwrap().rank, 8);
        assert_eq!(c.evaluation.unwrap().holdout_fraction, 0.3);
        assert!(Cli::try_parse_from(["arf", "--acceptance", "best"]).is_err());
    }
}
