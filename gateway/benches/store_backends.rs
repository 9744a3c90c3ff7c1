//! The run store's cost, side by side in one run: the Analyze stage of one large run (the
//! bundled sample repeated under fresh ids, rules only, an in-process analyzer) through
//! 1. one gateway on the embedded SQLite file (the default);
//! 2. two gateways on one PostgreSQL database, one run (a run is leased by one gateway, so one
//!    does the work and the other serves its watchers);
//! 3. two gateways on one PostgreSQL database, the same rows split into two runs, one created
//!    on each (how several gateways add throughput).
//!
//!   scripts/with-postgres.sh cargo bench --profile dev -p gateway --bench store_backends -- [--rows N]
//!
//! Prints items/s of the Analyze stage (from the run's stage events) and the ratios to SQLite.

use arf_common::client::{ClientOptions, GrpcChannel, connect_lazy};
use arf_common::config::ServerArgs;
use arf_common::server::{RunningServer, serve_loopback};
use arf_proto::service_names::PIPELINE;
use arf_proto::v1 as pb;
use arf_proto::v1::pipeline_client::PipelineClient;
use gateway::clients::Endpoints;
use gateway::config::GatewayConfig;
use gateway::store::StoreLocation;
use tokio_util::sync::CancellationToken;

const SAMPLE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../arf/data/sample_conversations.jsonl"
);

/// `n` rows: the sample again and again under fresh conversation ids.
fn rows(n: usize) -> anyhow::Result<Vec<pb::DatasetRow>> {
    let sample = arf_common::upload::rows_from_jsonl(&std::fs::read(SAMPLE)?, SAMPLE)?;
    Ok((0..n)
        .map(|i| {
            let mut row = sample[i % sample.len()].clone();
            let c = row.conversation.as_mut().expect("a conversation");
            c.id = format!("{}-{i}", c.id);
            row.line = i as u32 + 1;
            row
        })
        .collect())
}

/// A gateway on `store` (a --store value) over `analyzer`, served on loopback.
async fn gateway(
    data_dir: &std::path::Path,
    store: &str,
    id: &str,
    analyzer: &str,
) -> anyhow::Result<RunningServer> {
    let nowhere = "http://127.0.0.1:9".to_string();
    let data_dir = data_dir.join(id);
    let config = GatewayConfig {
        store: StoreLocation::parse(store, &data_dir.join(gateway::store::STORE_FILE))?,
        gateway_id: id.to_string(),
        ..GatewayConfig::local(
            data_dir,
            Endpoints {
                analyzer: analyzer.to_string(),
                editors: vec![nowhere.clone()],
                teachers: Vec::new(),
                trainer: nowhere,
            },
        )
    };
    let (_, routes) =
        gateway::server::build(&config, 16 << 20, None, CancellationToken::new()).await?;
    serve_loopback(&ServerArgs::local(), PIPELINE, true, routes).await
}

fn client(server: &RunningServer) -> anyhow::Result<PipelineClient<GrpcChannel>> {
    Ok(PipelineClient::new(connect_lazy(
        &server.endpoint(),
        &ClientOptions::default(),
    )?))
}

/// Creates an analyze-only run of `rows` and returns its id once it has ended.
async fn analyze(
    client: &mut PipelineClient<GrpcChannel>,
    rows: Vec<pb::DatasetRow>,
) -> anyhow::Result<String> {
    let spec = pb::RunSpec {
        display_name: "store bench".into(),
        config: Some(pb::RunConfig {
            stages: vec![pb::Stage::Analyze as i32],
            ..Default::default()
        }),
        ..Default::default()
    };
    let run =
        arf_common::upload::create_run(client, spec, arf_common::upload::rows_in_memory(rows))
            .await?;
    let mut events = client
        .watch_run(pb::WatchRunRequest {
            run_id: run.id.clone(),
            after_sequence: 0,
        })
        .await?
        .into_inner();
    while events.message().await?.is_some() {}
    Ok(run.id)
}

/// (first Analyze start, last Analyze end) in ms, and the items analyzed, of a finished run.
async fn analyze_span(
    client: &mut PipelineClient<GrpcChannel>,
    run_id: &str,
) -> anyhow::Result<(i64, i64, u32)> {
    let run = client
        .get_run(pb::GetRunRequest {
            run_id: run_id.into(),
        })
        .await?
        .into_inner();
    anyhow::ensure!(
        run.state == pb::RunState::Succeeded as i32,
        "run {run_id} ended {:?}: {}",
        run.state,
        run.error
    );
    let mut events = client
        .watch_run(pb::WatchRunRequest {
            run_id: run_id.into(),
            after_sequence: 0,
        })
        .await?
        .into_inner();
    let (mut start, mut end) = (i64::MAX, 0);
    while let Some(e) = events.message().await? {
        if let (Some(pb::run_event::Kind::Stage(s)), Some(t)) = (&e.kind, &e.time)
            && s.stage == pb::Stage::Analyze as i32
        {
            let ms = t.seconds * 1000 + i64::from(t.nanos) / 1_000_000;
            if s.started {
                start = start.min(ms);
            } else {
                end = end.max(ms);
            }
        }
    }
    let analyzed = run.counts.map_or(0, |c| c.analyzed);
    Ok((start, end, analyzed))
}

/// Items per second over one or more runs' Analyze stages (from the earliest start to the
/// latest end).
fn rate(spans: &[(i64, i64, u32)]) -> f64 {
    let start = spans.iter().map(|s| s.0).min().unwrap_or(0);
    let end = spans.iter().map(|s| s.1).max().unwrap_or(0);
    let items: u32 = spans.iter().map(|s| s.2).sum();
    f64::from(items) / ((end - start).max(1) as f64 / 1000.0)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let mut n = 2000usize;
    let mut argv = std::env::args().skip(1);
    while let Some(a) = argv.next() {
        if a == "--rows" {
            n = argv.next().and_then(|v| v.parse().ok()).unwrap_or(n);
        }
    }
    let server = std::env::var("ARF_TEST_POSTGRES").map_err(|_| {
        anyhow::anyhow!("needs a PostgreSQL server: run under scripts/with-postgres.sh")
    })?;
    let dir = tempfile::tempdir()?;
    let analyzer = analyzer_svc::serve::serve_on(
        &ServerArgs::local(),
        "http://127.0.0.1:9",
        tokio::net::TcpListener::bind("127.0.0.1:0").await?,
        CancellationToken::new(),
    )
    .await?;
    let analyzer = analyzer.endpoint();
    let rows = rows(n)?;

    // 1. SQLite, one gateway.
    let sqlite = gateway(dir.path(), "sqlite", "sqlite", &analyzer).await?;
    let mut c = client(&sqlite)?;
    let id = analyze(&mut c, rows.clone()).await?;
    let one_sqlite = rate(&[analyze_span(&mut c, &id).await?]);

    // 2. PostgreSQL, two gateways, one run.
    let db = gateway::store::fresh_database(&server).await?;
    let g1 = gateway(dir.path(), &db, "pg-1", &analyzer).await?;
    let g2 = gateway(dir.path(), &db, "pg-2", &analyzer).await?;
    let (mut c1, mut c2) = (client(&g1)?, client(&g2)?);
    let id = analyze(&mut c1, rows.clone()).await?;
    let one_pg = rate(&[analyze_span(&mut c2, &id).await?]);

    // 3. PostgreSQL, two gateways, two runs of half the rows each, at once.
    let (left, right) = rows.split_at(n / 2);
    let (a, b) = tokio::join!(
        analyze(&mut c1, left.to_vec()),
        analyze(&mut c2, right.to_vec())
    );
    let (a, b) = (a?, b?);
    let two_pg = rate(&[
        analyze_span(&mut c1, &a).await?,
        analyze_span(&mut c1, &b).await?,
    ]);

    println!("\nAnalyze stage, {n} conversations (rules only, in-process analyzer), one run each:");
    println!("| store | gateways | runs | items/s | vs SQLite |");
    println!("| --- | ---: | ---: | ---: | ---: |");
    println!("| SQLite (embedded) | 1 | 1 | {one_sqlite:.0} | 1.00x |");
    println!(
        "| PostgreSQL | 2 | 1 | {one_pg:.0} | {:.2}x |",
        one_pg / one_sqlite
    );
    println!(
        "| PostgreSQL | 2 | 2 (half each) | {two_pg:.0} | {:.2}x |",
        two_pg / one_sqlite
    );
    drop((sqlite, g1, g2));
    Ok(())
}
