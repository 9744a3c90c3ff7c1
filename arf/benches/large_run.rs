//! A run far larger than any test's, in bounded memory (issue 35 item 5): by default 200,000
//! rows streamed into CreateRun, analyzed, revised where flagged and fine-tuned for a few steps,
//! by the in-process suite (gateway, analyzer, editor and trainer in this one process, on tiny
//! random-weight models), and the process's peak RSS held to a ceiling.
//!
//! The rows are TweetSumm conversations of train.jsonl (../shared/data/tweetsumm) under new ids,
//! each with its first human reference as the teacher summary; they are made as they are sent,
//! so the client holds none of them. Two rule detectors (format, truncation) analyze them: human
//! summaries rarely trip those, which keeps Revise (one tiny-model call per flagged summary)
//! short while every row still goes through every stage it can.
//!
//!   cargo bench --profile dev -p arf --bench large_run -- [--rows N] [--ceiling-mib M]
//!       [--data-dir DIR]
//!
//! Prints each stage's time and RSS, the run's counts, GetReport's cost and the peak RSS; exits
//! non-zero when the run does not succeed or the peak passes the ceiling (default 256 MiB; the
//! run of 200,000 rows peaked at 84 MiB, README "Running a service").

use std::path::PathBuf;
use std::time::Instant;

use arf::suite::{Suite, SuiteConfig};
use arf_common::client::{ClientOptions, connect_lazy};
use arf_common::config::ServerArgs;
use arf_common::process::{peak_rss_mib, rss_mib};
use arf_proto::v1 as pb;
use arf_proto::v1::pipeline_client::PipelineClient;

struct Args {
    rows: usize,
    ceiling_mib: f64,
    data_dir: Option<PathBuf>,
}

fn args() -> anyhow::Result<Args> {
    let mut a = Args {
        rows: 200_000,
        ceiling_mib: 256.0,
        data_dir: None,
    };
    let mut it = std::env::args().skip(1).filter(|s| s != "--bench");
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .ok_or_else(|| anyhow::anyhow!("{flag} needs a value"))
        };
        match flag.as_str() {
            "--rows" => a.rows = value()?.parse()?,
            "--ceiling-mib" => a.ceiling_mib = value()?.parse()?,
            "--data-dir" => a.data_dir = Some(value()?.into()),
            other => anyhow::bail!("unknown flag {other} (--rows, --ceiling-mib, --data-dir)"),
        }
    }
    Ok(a)
}

/// `n` rows cycling over the corpus, each made when the upload asks for it.
fn rows(n: usize) -> anyhow::Result<arf::upload::UploadRows> {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/tweetsumm/train.jsonl");
    let text = std::fs::read(&path).map_err(|e| {
        anyhow::anyhow!(
            "{}: {e} (the corpus lives beside the checkout)",
            path.display()
        )
    })?;
    let base: Vec<pb::DatasetRow> =
        arf::upload::rows_from_jsonl(&text, &path.display().to_string())?
            .into_iter()
            .filter(|r| !r.references.is_empty())
            .collect();
    anyhow::ensure!(
        !base.is_empty(),
        "{}: no row with a reference",
        path.display()
    );
    Ok(Box::pin(futures::stream::iter((0..n).map(move |i| {
        let mut row = base[i % base.len()].clone();
        let conversation = row.conversation.get_or_insert_with(Default::default);
        conversation.id = format!("{}-{i}", conversation.id);
        row.teacher_summary = row.references[0].clone();
        row.line = i as u32 + 1;
        Ok(row)
    }))))
}

fn config() -> pb::RunConfig {
    pb::RunConfig {
        stages: vec![
            pb::Stage::Analyze as i32,
            pb::Stage::Revise as i32,
            pb::Stage::Finetune as i32,
        ],
        analyzer: Some(pb::AnalyzeOptions {
            detectors: vec!["format".into(), "truncation".into()],
            ..Default::default()
        }),
        revision_rounds: 1,
        revision_candidates: 1,
        training: Some(pb::Hyperparameters {
            max_steps: 2,
            max_seq_len: 128,
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let a = args()?;
    let scratch = tempfile::tempdir()?;
    let data_dir = a
        .data_dir
        .clone()
        .unwrap_or_else(|| scratch.path().to_path_buf());
    let suite = Suite::start(SuiteConfig {
        server: ServerArgs::local(),
        data_dir,
        editor_model: None,
        student_base: None,
        editor_replicas: 1,
    })
    .await?;
    let mut client = PipelineClient::new(connect_lazy(
        &suite.gateway_endpoint(),
        &ClientOptions::default(),
    )?);
    println!(
        "large run: {} rows (TweetSumm train.jsonl under new ids), tiny random-weight models, \
         RSS ceiling {:.0} MiB; suite started at {:.0} MiB",
        a.rows,
        a.ceiling_mib,
        rss_mib()
    );
    let t0 = Instant::now();
    let spec = pb::RunSpec {
        display_name: format!("large run, {} rows", a.rows),
        config: Some(config()),
        ..Default::default()
    };
    let run = arf::upload::create_run(&mut client, spec, rows(a.rows)?).await?;
    println!(
        "[{:>6.0} s] ingested {} rows; RSS {:.0} MiB, peak {:.0} MiB",
        t0.elapsed().as_secs_f64(),
        run.counts.as_ref().map_or(0, |c| c.rows),
        rss_mib(),
        peak_rss_mib()
    );
    let mut events = client
        .watch_run(pb::WatchRunRequest {
            run_id: run.id.clone(),
            after_sequence: 0,
        })
        .await?
        .into_inner();
    while let Some(e) = events.message().await? {
        if let Some(pb::run_event::Kind::Stage(s)) = &e.kind {
            let stage = pb::Stage::try_from(s.stage).map_or("?", |s| s.as_str_name());
            println!(
                "[{:>6.0} s] {stage} {}; RSS {:.0} MiB, peak {:.0} MiB",
                t0.elapsed().as_secs_f64(),
                if s.started { "started" } else { "ended" },
                rss_mib(),
                peak_rss_mib()
            );
        }
    }
    let run = client
        .get_run(pb::GetRunRequest {
            run_id: run.id.clone(),
        })
        .await?
        .into_inner();
    let before_report = peak_rss_mib();
    let started = Instant::now();
    let report = client
        .get_report(pb::GetReportRequest {
            run_id: run.id.clone(),
        })
        .await?
        .into_inner();
    println!(
        "GetReport: {} bytes of markdown in {:.1} s; RSS {:.0} MiB, peak {:.0} MiB (before it {:.0})",
        report.markdown.len(),
        started.elapsed().as_secs_f64(),
        rss_mib(),
        peak_rss_mib(),
        before_report
    );
    let peak = peak_rss_mib();
    let counts = run.counts.unwrap_or_default();
    println!(
        "run {}: {:?} in {:.0} s; rows {}, analyzed {}, flagged {}, revisions accepted {}, \
         rejected {}; peak RSS {:.0} MiB (ceiling {:.0})",
        run.id,
        pb::RunState::try_from(run.state).unwrap_or_default(),
        t0.elapsed().as_secs_f64(),
        counts.rows,
        counts.analyzed,
        counts.flagged,
        counts.revisions_accepted,
        counts.revisions_rejected,
        peak,
        a.ceiling_mib
    );
    suite.shutdown().await?;
    anyhow::ensure!(
        run.state == pb::RunState::Succeeded as i32,
        "the run ended {:?}: {}",
        run.state,
        run.error
    );
    anyhow::ensure!(
        peak <= a.ceiling_mib,
        "peak RSS {peak:.0} MiB is over the ceiling of {:.0} MiB",
        a.ceiling_mib
    );
    Ok(())
}
