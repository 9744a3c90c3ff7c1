//! The paper's comparison at small scale, on a real model and a real corpus: TweetSumm
//! conversations (../shared/data/tweetsumm), SmolLM2-135M-Instruct as editor, judge and student
//! base, and for each teacher the models side by side: base model zero-shot, student trained on
//! the teacher's summaries as they are, student trained on the unflagged ones only
//! (filter-only), student trained on the ARF-refined ones, student trained on the human
//! references (oracle), and the teacher. Every student takes the same `--steps` optimizer steps
//! with the same seed, or with `--epochs E` the same E passes over its own set.
//!
//! Two teachers:
//! - `injected`: the summaries of teacher_train.jsonl (human references with one or two injected
//!   errors each: a teacher whose mistakes the analyzer can see), held-out rows from
//!   analyzer_bench_dev.jsonl (valid conversations, same shape), and past its 110 rows from
//!   teacher_train.jsonl's rows after the training ones (conversations no student sees);
//! - `smollm2`: no summaries at all: the Generate stage has SmolLM2 write them zero-shot, for
//!   the training rows and for the held-out rows of valid.jsonl.
//!
//! ```text
//! cargo bench --profile dev -p arf --bench arf_quality -- [--train N] [--eval M] [--steps S | --epochs E]
//!     [--teachers injected,smollm2] [--judge] [--data-dir DIR] [--candidates N] [--rounds R]
//!     [--stages analyze,revise] [--export DIR] [--arms filter_only,oracle|none] [--rules]
//!     [--on-unimproved exclude|keep-original] [--resume RUN_ID] [--seed N] [--summary-tokens T]
//!     [--skip-unrevised]
//! ```
//!
//! `--skip-unrevised` trains and evaluates neither the unrevised student nor the base model
//! (compare_unrevised off): ARF against filter-only alone, twice the held-out conversations in
//! the same Evaluate time, for a narrower CI on that one comparison.
//!
//! `--resume RUN_ID` watches a run left unfinished in `--data-dir` (a bench stopped midway: the
//! gateway takes it up again where it stopped) instead of creating one; its stage times count
//! from the restart.
//!
//! `--rules` runs the RULES_THEN_MODEL arm (detector-determined fixes first, then the editor):
//! a separate arm, since the same detectors then repair, gate and score.
//!
//! `--stages analyze,revise` measures revision alone (acceptance per category, the gate's
//! quality) without training or evaluating. `--export DIR` writes each run's refined set there
//! (`<teacher>.jsonl`, plain format: which summaries were revised, to read beside the originals).
//!
//! Needs `scripts/fetch-model.sh smollm2` first. Prints each table, the stage times, the
//! diagnosis of the accepted revisions (diagnosis.rs), the peak RSS and one JSON line per teacher.

#[path = "arf_quality/diagnosis.rs"]
mod diagnosis;

use std::path::PathBuf;
use std::time::Instant;

use arf::suite::{Suite, SuiteConfig};
use arf_common::client::{ClientOptions, connect_lazy};
use arf_common::config::ServerArgs;
use arf_proto::v1 as pb;
use arf_proto::v1::pipeline_client::PipelineClient;

struct Args {
    train: usize,
    eval: usize,
    steps: u32,
    /// Whole passes over each student's own set instead of `steps` (0: use `steps`): every arm
    /// sees each of its pairs equally often, so a smaller set gets fewer steps.
    epochs: u32,
    teachers: Vec<String>,
    judge: bool,
    data_dir: Option<PathBuf>,
    candidates: u32,
    rounds: u32,
    stages: Vec<i32>,
    export: Option<PathBuf>,
    filter_only: bool,
    oracle: bool,
    /// The unrevised student and the base model (compare_unrevised); off: `--skip-unrevised`.
    unrevised: bool,
    rules: bool,
    on_unimproved: pb::UnimprovedPolicy,
    /// Watch this run (left unfinished in `--data-dir`'s store) instead of creating one.
    resume: Option<String>,
    /// The students' training seed (0: the trainer's default): a second seed replicates a run.
    seed: u64,
    /// Each held-out summary's token budget in Evaluate (96). A small one (1) measures reference
    /// NLL alone, in a fraction of the time: for replicating a comparison over training seeds.
    summary_tokens: u32,
}

fn args() -> anyhow::Result<Args> {
    let mut a = Args {
        train: 12,
        eval: 8,
        steps: 12,
        epochs: 0,
        teachers: vec!["injected".into(), "smollm2".into()],
        judge: false,
        data_dir: None,
        candidates: 1,
        rounds: 1,
        stages: vec![],
        export: None,
        filter_only: true,
        oracle: true,
        unrevised: true,
        rules: false,
        on_unimproved: pb::UnimprovedPolicy::KeepOriginal,
        resume: None,
        seed: 0,
        summary_tokens: 96,
    };
    let mut it = std::env::args().skip(1).filter(|s| s != "--bench");
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .ok_or_else(|| anyhow::anyhow!("{flag} needs a value"))
        };
        match flag.as_str() {
            "--train" => a.train = value()?.parse()?,
            "--eval" => a.eval = value()?.parse()?,
            "--steps" => a.steps = value()?.parse()?,
            "--epochs" => a.epochs = value()?.parse()?,
            "--teachers" => a.teachers = value()?.split(',').map(str::to_string).collect(),
            "--judge" => a.judge = true,
            "--rules" => a.rules = true,
            "--skip-unrevised" => a.unrevised = false,
            "--on-unimproved" => {
                let v = value()?;
                a.on_unimproved = pb::UnimprovedPolicy::from_str_name(&format!(
                    "UNIMPROVED_POLICY_{}",
                    v.trim().to_uppercase().replace('-', "_")
                ))
                .ok_or_else(|| anyhow::anyhow!("--on-unimproved {v}: exclude or keep-original"))?
            }
            "--resume" => a.resume = Some(value()?),
            "--seed" => a.seed = value()?.parse()?,
            "--summary-tokens" => a.summary_tokens = value()?.parse()?,
            "--data-dir" => a.data_dir = Some(value()?.into()),
            "--candidates" => a.candidates = value()?.parse()?,
            "--rounds" => a.rounds = value()?.parse()?,
            "--export" => a.export = Some(value()?.into()),
            "--arms" => {
                let arms = value()?;
                a.filter_only = arms.split(',').any(|s| s == "filter_only");
                a.oracle = arms.split(',').any(|s| s == "oracle");
            }
            "--stages" => {
                a.stages = value()?
                    .split(',')
                    .map(|s| {
                        pb::Stage::from_str_name(&format!("STAGE_{}", s.trim().to_uppercase()))
                            .map(|s| s as i32)
                            .ok_or_else(|| anyhow::anyhow!("unknown stage {s}"))
                    })
                    .collect::<anyhow::Result<_>>()?
            }
            other => anyhow::bail!("unknown flag {other}"),
        }
    }
    anyhow::ensure!(
        a.resume.is_none() || a.teachers.len() == 1,
        "--resume watches one run: name its teacher alone with --teachers"
    );
    Ok(a)
}

fn tweetsumm(file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/data/tweetsumm")
        .join(file)
}

/// `n` rows of a TweetSumm file after its first `skip`, with or without their teacher summaries.
fn rows(
    file: &str,
    skip: usize,
    n: usize,
    split: pb::RowSplit,
    keep_summary: bool,
) -> anyhow::Result<Vec<pb::DatasetRow>> {
    let path = tweetsumm(file);
    let text = std::fs::read(&path).map_err(|e| {
        anyhow::anyhow!(
            "{}: {e} (the TweetSumm corpus lives beside the checkout)",
            path.display()
        )
    })?;
    let mut rows = arf::upload::rows_from_jsonl(&text, &path.display().to_string())?;
    rows.drain(..skip.min(rows.len()));
    rows.truncate(n);
    for r in &mut rows {
        r.split = split as i32;
        if !keep_summary {
            r.teacher_summary.clear();
        }
    }
    Ok(rows)
}

fn dataset(teacher: &str, a: &Args) -> anyhow::Result<Vec<pb::DatasetRow>> {
    let (train, eval, keep) = match teacher {
        "injected" => ("teacher_train.jsonl", "analyzer_bench_dev.jsonl", true),
        "smollm2" => ("train.jsonl", "valid.jsonl", false),
        other => anyhow::bail!("unknown teacher {other} (injected, smollm2)"),
    };
    let mut all = rows(train, 0, a.train, pb::RowSplit::Train, keep)?;
    let mut held_out = rows(eval, 0, a.eval, pb::RowSplit::Holdout, keep)?;
    // More held-out conversations than the held-out file has (a narrower CI): the rest from the
    // training file, after the rows the students train on.
    let missing = a.eval - held_out.len();
    if missing > 0 {
        held_out.extend(rows(train, a.train, missing, pb::RowSplit::Holdout, keep)?);
    }
    anyhow::ensure!(
        held_out.len() == a.eval,
        "--eval {}: only {} held-out conversations beside {} training ones",
        a.eval,
        held_out.len(),
        a.train
    );
    all.extend(held_out);
    for (i, r) in all.iter_mut().enumerate() {
        r.line = i as u32 + 1;
    }
    Ok(all)
}

/// The run's configuration. Unimproved summaries stay in the ARF set (the default,
/// KEEP_ORIGINAL): the two students then differ exactly by the revisions that were accepted.
fn config(a: &Args) -> pb::RunConfig {
    pb::RunConfig {
        stages: a.stages.clone(),
        revision_rounds: a.rounds,
        revision_candidates: a.candidates,
        revision_max_tokens: 192,
        on_unimproved: a.on_unimproved as i32,
        compare_unrevised: a.unrevised,
        compare_filter_only: a.filter_only,
        compare_oracle: a.oracle,
        repair: if a.rules {
            pb::RepairMode::RulesThenModel
        } else {
            pb::RepairMode::Model
        } as i32,
        training: Some(pb::Hyperparameters {
            // max_steps wins over epochs in the trainer: one or the other.
            max_steps: if a.epochs > 0 { 0 } else { a.steps },
            epochs: a.epochs,
            learning_rate: 2e-4,
            max_seq_len: 512,
            seed: a.seed,
            ..Default::default()
        }),
        evaluation: Some(pb::EvaluationConfig {
            judge: a.judge,
            max_summary_tokens: a.summary_tokens,
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let a = args()?;
    let gguf = arf::cli::models::resolve("smollm2")?;
    let scratch = tempfile::tempdir()?;
    let data_dir = a
        .data_dir
        .clone()
        .unwrap_or_else(|| scratch.path().to_path_buf());
    let started = Instant::now();
    let suite = Suite::start(SuiteConfig {
        server: ServerArgs::local(),
        data_dir: data_dir.clone(),
        editor_model: Some(gguf.clone()),
        student_base: Some(gguf.clone()),
        editor_replicas: 1,
    })
    .await?;
    let mut client = PipelineClient::new(connect_lazy(
        &suite.gateway_endpoint(),
        &ClientOptions::default(),
    )?);
    println!(
        "ARF quality bench: SmolLM2-135M-Instruct ({}), {} training and {} held-out TweetSumm conversations, {} per student, judge {}, revision best-of-{} x {} rounds",
        gguf.display(),
        a.train,
        a.eval,
        if a.epochs > 0 {
            format!("{} epochs", a.epochs)
        } else {
            format!("{} steps", a.steps)
        },
        if a.judge { "on" } else { "off" },
        a.candidates,
        a.rounds
    );
    for teacher in &a.teachers {
        let t0 = Instant::now();
        let spec = pb::RunSpec {
            display_name: format!("quality bench, teacher {teacher}"),
            config: Some(config(&a)),
            ..Default::default()
        };
        let run = match &a.resume {
            // The gateway took its unfinished run up again when it started.
            Some(id) => client
                .get_run(pb::GetRunRequest { run_id: id.clone() })
                .await?
                .into_inner(),
            None => {
                arf::upload::create_run(
                    &mut client,
                    spec,
                    arf::upload::rows_in_memory(dataset(teacher, &a)?),
                )
                .await?
            }
        };
        // A resumed run's Evaluate is timed from the restart: count only what it evaluates then.
        let evaluated_before = run.counts.as_ref().map_or(0, |c| c.evaluated as usize);
        let mut events = client
            .watch_run(pb::WatchRunRequest {
                run_id: run.id.clone(),
                after_sequence: 0,
            })
            .await?
            .into_inner();
        let mut evaluate = (0.0, 0.0);
        while let Some(e) = events.message().await? {
            if let Some(pb::run_event::Kind::Stage(s)) = &e.kind {
                if s.stage == pb::Stage::Evaluate as i32 {
                    let at = t0.elapsed().as_secs_f64();
                    if s.started {
                        evaluate.0 = at
                    } else {
                        evaluate.1 = at
                    }
                }
                let stage = pb::Stage::try_from(s.stage).map_or("?", |s| s.as_str_name());
                eprintln!(
                    "[{:>6.0} s] {teacher}: {stage} {} (RSS {:.2} GB, peak so far {:.2} GB)",
                    t0.elapsed().as_secs_f64(),
                    if s.started { "started" } else { "ended" },
                    rss_gb(),
                    peak_rss_gb()
                );
            }
        }
        let run = client
            .get_run(pb::GetRunRequest {
                run_id: run.id.clone(),
            })
            .await?
            .into_inner();
        anyhow::ensure!(
            run.state == pb::RunState::Succeeded as i32,
            "run {} ended {:?}: {}",
            run.id,
            run.state,
            run.error
        );
        let report = client
            .get_report(pb::GetReportRequest {
                run_id: run.id.clone(),
            })
            .await?
            .into_inner();
        print_table(teacher, &run, &report, t0.elapsed().as_secs_f64());
        let items = suite.pipeline.store().items(&run.id).await?;
        let mut editor = arf_proto::v1::editor_client::EditorClient::new(connect_lazy(
            &suite.editor_endpoints().remove(0),
            &ClientOptions::default(),
        )?);
        diagnosis::print(&mut editor, &items).await?;
        println!(
            "peak RSS of the whole suite so far: {:.2} GB",
            peak_rss_gb()
        );
        if evaluate.1 > evaluate.0 {
            let models = report
                .overall
                .iter()
                .filter(|c| c.model != "teacher")
                .count();
            let held_out = run.counts.as_ref().map_or(0, |c| c.held_out) as usize;
            evaluate_speed(
                &suite,
                teacher,
                &a,
                evaluate.1 - evaluate.0,
                models * held_out.saturating_sub(evaluated_before),
            )
            .await?;
        }
        if let Some(dir) = &a.export {
            std::fs::create_dir_all(dir)?;
            let mut chunks = client
                .export_dataset(pb::ExportDatasetRequest {
                    run_id: run.id.clone(),
                    format: pb::ExportFormat::Plain as i32,
                })
                .await?
                .into_inner();
            let mut data = Vec::new();
            while let Some(chunk) = chunks.message().await? {
                data.extend(chunk.data);
            }
            std::fs::write(dir.join(format!("{teacher}.jsonl")), data)?;
        }
    }
    println!(
        "\ntotal wall time: {:.1} min",
        started.elapsed().as_secs_f64() / 60.0
    );
    suite.shutdown().await
}

/// The process's peak resident set (every service of the suite runs in it), in GB (10^9 bytes
/// of kB as Linux counts them: the unit of the figures reported so far).
fn peak_rss_gb() -> f64 {
    arf_common::process::peak_rss_mib() * 1024.0 / 1e6
}

/// The process's resident set now, in the same GB.
fn rss_gb() -> f64 {
    arf_common::process::rss_mib() * 1024.0 / 1e6
}

/// Evaluate's seconds per summary against the editor's own: the same work (summarize a
/// held-out conversation, score its references) asked of the editor directly, one conversation
/// at a time, no pipeline around it.
async fn evaluate_speed(
    suite: &Suite,
    teacher: &str,
    a: &Args,
    evaluate_secs: f64,
    summaries: usize,
) -> anyhow::Result<()> {
    use arf_common::dataset::conversation_from_wire;
    let endpoint = suite.editor_endpoints().remove(0);
    let mut editor = arf_proto::v1::editor_client::EditorClient::new(connect_lazy(
        &endpoint,
        &ClientOptions::default(),
    )?);
    let rows: Vec<pb::DatasetRow> = dataset(teacher, a)?
        .into_iter()
        .filter(|r| r.split == pb::RowSplit::Holdout as i32)
        .take(6)
        .collect();
    let started = Instant::now();
    for row in &rows {
        let conversation = conversation_from_wire(row.conversation.clone(), "bench")?;
        let messages =
            gateway::pipeline::summarize_request(&conversation, &Default::default()).messages;
        editor
            .generate(pb::GenerateRequest {
                messages: messages.clone(),
                params: Some(pb::GenerationParams {
                    max_tokens: 96,
                    ..Default::default()
                }),
                json_schema: String::new(),
            })
            .await?;
        for reference in &row.references {
            editor
                .score(pb::ScoreRequest {
                    messages: messages.clone(),
                    reply: reference.clone(),
                })
                .await?;
        }
    }
    let alone = started.elapsed().as_secs_f64() / rows.len().max(1) as f64;
    let pipeline = evaluate_secs / summaries.max(1) as f64;
    println!(
        "\nevaluate: {summaries} summaries (held-out x models) in {evaluate_secs:.0} s = {pipeline:.2} s each, \
         analysis and ROUGE included; the editor alone, one conversation at a time (summary + \
         reference scores, {} conversations): {alone:.2} s each; ratio {:.2}",
        rows.len(),
        pipeline / alone
    );
    Ok(())
}

fn print_table(teacher: &str, run: &pb::Run, report: &pb::Report, secs: f64) {
    let c = run.counts.unwrap_or_default();
    println!(
        "\n## teacher `{teacher}` (run {}, {:.1} min): {} rows, {} generated, {} flagged, {} revisions accepted, {} rejected; ARF set {} pairs (unimproved summaries {})",
        run.id,
        secs / 60.0,
        c.rows,
        c.generated,
        c.flagged,
        c.revisions_accepted,
        c.revisions_rejected,
        c.training_examples,
        if run
            .config
            .as_ref()
            .is_some_and(|k| k.on_unimproved() == pb::UnimprovedPolicy::Exclude)
        {
            "excluded"
        } else {
            "kept"
        }
    );
    let gate = report.gate.clone().unwrap_or_default();
    println!(
        "\ngate: {} accepted, {} with references: revisions ROUGE-L {:.1} against the originals' {:.1}; {} of {} close to their original; pairs ARF {} / unrevised {}{}",
        gate.accepted,
        gate.with_references,
        gate.revised_rouge_l,
        gate.original_rouge_l,
        gate.close,
        gate.guarded,
        gate.refined_pairs,
        gate.unrevised_pairs,
        if gate.warning.is_empty() {
            String::new()
        } else {
            format!("\nWARNING: {}", gate.warning)
        }
    );
    if !gate.by_category.is_empty() {
        println!(
            "\n| category | flagged | accepted | share | of which repaired by rule |\n| --- | ---: | ---: | ---: | ---: |"
        );
        for c in &gate.by_category {
            println!(
                "| {} | {} | {} | {:.0}% | {} |",
                c.category_id,
                c.flagged,
                c.accepted,
                100.0 * f64::from(c.accepted) / f64::from(c.flagged.max(1)),
                c.repaired_by_rule
            );
        }
    }
    if !report.judge_uninformative.is_empty() {
        println!("judge uninformative: {}", report.judge_uninformative);
    }
    println!(
        "\n| model | summaries | ROUGE-1 | ROUGE-2 | ROUGE-L | reference NLL | judge | summaries with an error |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |");
    for card in &report.overall {
        let worst: Vec<String> = {
            let mut rates: Vec<(&String, &f64)> = card.error_rates.iter().collect();
            rates.sort_by(|x, y| y.1.total_cmp(x.1));
            rates
                .iter()
                .take(3)
                .map(|(k, v)| format!("{k} {:.0}%", *v * 100.0))
                .collect()
        };
        let judge = if card.judge_mean > 0.0 {
            format!("{:.2}", card.judge_mean)
        } else {
            "n/a".into()
        };
        println!(
            "| {} | {} | {:.2} | {:.2} | {:.2} | {} | {judge} | {} |",
            card.model,
            card.summaries,
            card.rouge1 * 100.0,
            card.rouge2 * 100.0,
            card.rouge_l * 100.0,
            card.reference_nll
                .map_or("n/a".into(), |n| format!("{n:.3}")),
            worst.join(", ")
        );
    }
    // The report's own tables (differences with CIs, McNemar and reading; stage times).
    if let Some(table) = report.markdown.split("## Did ARF help?").nth(1) {
        let table = table.split("\n\n").find(|p| p.starts_with("| comparison"));
        println!("\n{}", table.unwrap_or_default());
    }
    if let Some(why) = gateway::report::effect::ceiling_unseen(&report.differences) {
        println!("\n{why}");
    }
    if let Some(times) = report.markdown.split("## Time\n\n").nth(1) {
        println!("\n{}", times.split("\n\n").next().unwrap_or_default());
    }
    let cards: Vec<serde_json::Value> = report
        .overall
        .iter()
        .map(|c| serde_json::json!({"model": c.model, "rouge1": c.rouge1, "rouge2": c.rouge2, "rougeL": c.rouge_l, "reference_nll": c.reference_nll, "judge": c.judge_mean, "error_rates": c.error_rates}))
        .collect();
    println!(
        "{}",
        serde_json::json!({"teacher": teacher, "run": run.id, "seconds": secs, "report": report.path, "cards": cards,
            "gate": {"accepted": gate.accepted, "with_references": gate.with_references, "revised_rouge_l": gate.revised_rouge_l,
                     "original_rouge_l": gate.original_rouge_l, "close": gate.close, "guarded": gate.guarded,
                     "refined_pairs": gate.refined_pairs, "unrevised_pairs": gate.unrevised_pairs, "warning": gate.warning,
                     "by_category": gate.by_category.iter().map(|c| serde_json::json!({"category": c.category_id, "flagged": c.flagged, "accepted": c.accepted})).collect::<Vec<_>>()},
            "judge_uninformative": report.judge_uninformative,
            "differences": report.differences.iter().map(|d| serde_json::json!({"model": d.model, "baseline": d.baseline,
                "metric": d.metric, "n": d.conversations, "mean": d.mean, "ci_low": d.ci_low, "ci_high": d.ci_high})).collect::<Vec<_>>()})
    );
}
