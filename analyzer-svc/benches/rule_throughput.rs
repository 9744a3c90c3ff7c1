//! Rule-only analysis throughput on one thread, in summaries per second, over the TweetSumm
//! teacher summaries (`shared/data/tweetsumm/teacher_train.jsonl`, or the file named by
//! `ARF_BENCH_FILE`). Target: >= 5,000 summaries/s.
//!
//! `cargo bench -p analyzer-svc --bench rule_throughput`

use std::hint::black_box;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use analyzer_svc::{AnalyzeOptions, Analyzer};
use arf_common::dataset::{OnBadRow, read_jsonl_file};

fn main() {
    let path = std::env::var_os("ARF_BENCH_FILE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../../shared/data/tweetsumm/teacher_train.jsonl")
        });
    if !path.exists() {
        eprintln!(
            "skipped: {} is not here (set ARF_BENCH_FILE)",
            path.display()
        );
        return;
    }
    let rows: Vec<_> = read_jsonl_file(&path, OnBadRow::Stop)
        .expect("open benchmark file")
        .map(|r| r.expect("valid row").1)
        .filter(|r| r.summary.is_some())
        .collect();
    let analyzer = Analyzer::default();
    let options = AnalyzeOptions::default();
    let run = || {
        let mut findings = 0;
        for r in &rows {
            let a = analyzer
                .analyze(
                    &r.conversation,
                    r.summary.as_deref().unwrap_or_default(),
                    &options,
                )
                .expect("analyzable");
            findings += black_box(a).findings.len();
        }
        findings
    };
    // Warm-up: compiles every lazily built regex once.
    let findings = run();
    let mut passes = 0;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(3) || passes < 3 {
        black_box(run());
        passes += 1;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let per_second = (rows.len() * passes) as f64 / elapsed;
    println!(
        "rule_throughput: {} summaries x {passes} passes in {elapsed:.2} s on one thread: {per_second:.0} summaries/s ({:.1} us each, {findings} findings per pass)",
        rows.len(),
        1e6 / per_second
    );
    // Where the time goes: each detector alone (includes the shared per-summary setup).
    for name in analyzer.detector_names() {
        let only = AnalyzeOptions {
            detectors: vec![name.to_string()],
            ..AnalyzeOptions::default()
        };
        let start = Instant::now();
        for r in &rows {
            black_box(
                analyzer
                    .analyze(
                        &r.conversation,
                        r.summary.as_deref().unwrap_or_default(),
                        &only,
                    )
                    .expect("analyzable"),
            );
        }
        println!(
            "  {name:<12} alone: {:6.1} us per summary",
            start.elapsed().as_secs_f64() * 1e6 / rows.len() as f64
        );
    }
    if per_second < 5_000.0 {
        println!("rule_throughput: below the 5,000 summaries/s target");
    }
}
