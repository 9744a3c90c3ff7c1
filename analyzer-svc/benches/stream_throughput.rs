//! The gRPC AnalyzeStream path against in-process analysis, rule detectors only, over the
//! TweetSumm teacher summaries. Both run on one thread (the gRPC client and server share a
//! current-thread runtime), so the ratio is what the wire costs. Target: >= 50%.
//!
//! `cargo bench --profile dev -p analyzer-svc --bench stream_throughput` (or without
//! `--profile dev` for a release build).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use analyzer_svc::grpc::AnalyzerService;
use analyzer_svc::{AnalyzeOptions, Analyzer};
use arf_common::client::{ClientOptions, connect_lazy};
use arf_common::config::ServerArgs;
use arf_common::dataset::{OnBadRow, Record, conversation_to_wire, read_jsonl_file};
use arf_common::server::serve_loopback;
use arf_proto::service_names::ANALYZER;
use arf_proto::v1 as pb;
use arf_proto::v1::analyzer_client::AnalyzerClient;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;

const MIN_TIME: Duration = Duration::from_secs(3);

fn main() -> anyhow::Result<()> {
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
        return Ok(());
    }
    let rows: Vec<Record> = read_jsonl_file(&path, OnBadRow::Stop)?
        .map(|r| r.map(|(_, r)| r))
        .collect::<Result<_, _>>()?;
    let rows: Vec<Record> = rows.into_iter().filter(|r| r.summary.is_some()).collect();

    let in_process = in_process_rate(&rows);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let grpc = runtime.block_on(grpc_rate(&rows))?;
    println!("in-process: {in_process:>8.0} summaries/s (one thread)");
    println!("gRPC stream:{grpc:>8.0} summaries/s (client and server on one thread)");
    println!(
        "gRPC / in-process: {:.0}% (target >= 50%)",
        100.0 * grpc / in_process
    );
    Ok(())
}

fn in_process_rate(rows: &[Record]) -> f64 {
    let analyzer = Analyzer::default();
    let options = AnalyzeOptions::default();
    let pass = || {
        for r in rows {
            std::hint::black_box(
                analyzer
                    .analyze(
                        &r.conversation,
                        r.summary.as_deref().unwrap_or_default(),
                        &options,
                    )
                    .ok(),
            );
        }
    };
    pass(); // warm-up: lazily compiled patterns
    let (mut passes, start) = (0, Instant::now());
    while start.elapsed() < MIN_TIME {
        pass();
        passes += 1;
    }
    (rows.len() * passes) as f64 / start.elapsed().as_secs_f64()
}

async fn grpc_rate(rows: &[Record]) -> anyhow::Result<f64> {
    let args = ServerArgs::local();
    let service = AnalyzerService::new(
        Analyzer::default(),
        None,
        args.max_message_bytes,
        CancellationToken::new(),
    );
    let server = serve_loopback(
        &args,
        ANALYZER,
        true,
        Routes::new(service.into_server(args.max_message_bytes)),
    )
    .await?;
    let mut client =
        AnalyzerClient::new(connect_lazy(&server.endpoint(), &ClientOptions::default())?);
    let requests: Vec<pb::AnalyzeRequest> = rows
        .iter()
        .map(|r| pb::AnalyzeRequest {
            request_id: r.conversation.id.clone(),
            conversation: Some(conversation_to_wire(&r.conversation)),
            summary: r.summary.clone().unwrap_or_default(),
            options: None,
            revision_of: None,
        })
        .collect();
    let mut pass = async || -> anyhow::Result<usize> {
        let mut responses = client
            .analyze_stream(futures::stream::iter(requests.clone()))
            .await?
            .into_inner();
        let mut n = 0;
        while responses.message().await?.is_some() {
            n += 1;
        }
        Ok(n)
    };
    pass().await?;
    let (mut analyzed, start) = (0, Instant::now());
    while start.elapsed() < MIN_TIME {
        analyzed += pass().await?;
    }
    let rate = analyzed as f64 / start.elapsed().as_secs_f64();
    server.shutdown().await?;
    Ok(rate)
}
