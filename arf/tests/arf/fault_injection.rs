//! The fault-injection suite: full runs (Analyze, Revise, Finetune, Evaluate on tiny models)
//! over the four services as separate processes (`arf analyzer|editor|trainer|gateway`), with
//! the gateway, the trainer or the editor SIGKILLed or SIGTERMed at seeded random points of
//! every stage, then restarted. Each run must end SUCCEEDED with the same items, outcomes,
//! export and report as an uninterrupted run, no item lost and none done twice.
//!
//! The gateway's PostgreSQL server is restarted (`pg_ctl stop -m fast`, 8 s down, start) during
//! Revise and during Finetune, with the same demands: a database that blinks fails no run.
//!
//! `ARF_FAULT_SEED` picks the points (default 1); the test prints a table of what it did. The
//! longer soak runs more seeds in one go and prints one table: `ARF_FAULT_SEEDS=20 cargo test
//! -p arf --test arf fault_injection:: -- --nocapture` (seeds 1 to 20, about 25 s each here).

use std::path::Path;

use arf_common::client::{ClientOptions, GrpcChannel, connect_lazy};
use arf_proto::v1 as pb;
use arf_proto::v1::pipeline_client::PipelineClient;

use crate::support::follow;

use crate::support::processes::{
    Process, Services, Signal, ended, full_spec, lost_and_duplicated, result,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Target {
    Gateway,
    Trainer,
    Editor,
}

/// One fault: which process, how, and when (after `after` item events of `stage`, or training
/// steps for Finetune).
#[derive(Debug, Clone, Copy)]
struct Fault {
    target: Target,
    signal: Signal,
    stage: pb::Stage,
    after: usize,
}

/// A small deterministic generator (splitmix64): the same seed gives the same faults.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)) % n
    }
}

/// Every stage is hit; the trainer only where it works (Finetune), the editor where it is
/// called (Revise; Evaluate asks the students the gateway hosts).
fn plan(seed: u64) -> Vec<Fault> {
    use pb::Stage::*;
    let mut rng = Rng(seed);
    let mut signal = || {
        if rng.below(2) == 0 {
            Signal::Kill
        } else {
            Signal::Term
        }
    };
    let shape = [
        (Target::Gateway, Analyze),
        (Target::Gateway, Revise),
        (Target::Editor, Revise),
        (Target::Trainer, Finetune),
        (Target::Gateway, Finetune),
        (Target::Gateway, Evaluate),
    ];
    let signals: Vec<Signal> = shape.iter().map(|_| signal()).collect();
    let mut rng = Rng(seed ^ 0x5eed);
    shape
        .into_iter()
        .zip(signals)
        .map(|((target, stage), signal)| Fault {
            target,
            signal,
            stage,
            after: 1 + rng.below(3) as usize,
        })
        .collect()
}

/// The four services over one folder.
struct Deployment {
    services: Services,
    gateway: Process,
}

impl Deployment {
    async fn start(dir: &Path, tiny: &Path) -> Self {
        let services = Services::start(dir, tiny).await;
        let gateway = services
            .gateway(&dir.join("gateway"), tiny, None, vec![])
            .await;
        Self { services, gateway }
    }

    fn client(&self) -> PipelineClient<GrpcChannel> {
        PipelineClient::new(
            connect_lazy(&self.gateway.endpoint(), &ClientOptions::default()).unwrap(),
        )
    }

    fn process(&mut self, target: Target) -> &mut Process {
        match target {
            Target::Gateway => &mut self.gateway,
            Target::Trainer => &mut self.services.trainer,
            Target::Editor => &mut self.services.editor,
        }
    }
}

/// Whether `events` have reached the fault's point.
fn reached(events: &[pb::RunEvent], fault: &Fault) -> bool {
    let n = match fault.stage {
        pb::Stage::Finetune => events
            .iter()
            .filter(|e| {
                matches!(&e.kind, Some(pb::run_event::Kind::Training(j))
                    if matches!(j.kind, Some(pb::job_event::Kind::Step(_))))
            })
            .count(),
        stage => crate::support::items(events, stage).len(),
    };
    n >= fault.after
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_survive_kills_and_restarts_of_every_service_at_every_stage() {
    let env = |name: &str| std::env::var(name).ok().and_then(|s| s.parse::<u64>().ok());
    let seeds: Vec<u64> = match (env("ARF_FAULT_SEEDS"), env("ARF_FAULT_SEED")) {
        (Some(n), _) => (1..=n).collect(),
        (None, seed) => vec![seed.unwrap_or(1)],
    };
    let models = tempfile::tempdir().unwrap();
    let tiny = arf::suite::tiny_model(models.path()).unwrap();
    let rows = crate::support::sample_rows();

    // The uninterrupted run of the same spec.
    let dir = tempfile::tempdir().unwrap();
    let deployment = Deployment::start(dir.path(), &tiny).await;
    let mut client = deployment.client();
    let run = crate::support::create(&mut client, full_spec(), rows.clone())
        .await
        .unwrap();
    let baseline = result(&mut client, &run.id).await;
    drop(deployment);
    assert!(
        baseline.outcomes.values().all(|o| o.len() == 1),
        "{baseline:?}"
    );

    let mut table = Vec::new();
    for fault in seeds.iter().flat_map(|&seed| plan(seed)) {
        let dir = tempfile::tempdir().unwrap();
        let mut deployment = Deployment::start(dir.path(), &tiny).await;
        let mut client = deployment.client();
        let run = crate::support::create(&mut client, full_spec(), rows.clone())
            .await
            .unwrap();
        let seen = follow(&mut client, &run.id, |e| reached(e, &fault) || ended(e)).await;
        let injected = !ended(&seen);
        if injected {
            let process = deployment.process(fault.target);
            process.stop(fault.signal);
            process.start().await;
        }
        let mut client = deployment.client();
        let got = result(&mut client, &run.id).await;
        let (lost, duplicated) = lost_and_duplicated(&baseline, &got);
        assert_eq!(
            (lost, duplicated),
            (0, 0),
            "{fault:?}: items lost or done twice"
        );
        assert_eq!(got.outcomes, baseline.outcomes, "{fault:?}: outcomes");
        assert_eq!(
            String::from_utf8_lossy(&got.export),
            String::from_utf8_lossy(&baseline.export),
            "{fault:?}: export"
        );
        // Every model's scores: the students too, trained on the same data with the same seed
        // (through a trainer restart: resumed from its checkpoint) and decoded greedily.
        assert_eq!(got.overall, baseline.overall, "{fault:?}: report");
        table.push((fault, injected, lost, duplicated));
    }

    println!("\nfault injection, seeds {seeds:?}");
    println!(
        "| stage | process | signal | after (items or steps) | injected | run succeeded | items lost | items duplicated | outcomes, export, report |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    for (f, injected, lost, duplicated) in &table {
        println!(
            "| {:?} | {:?} | {:?} | {} | {injected} | yes | {lost} | {duplicated} | equal |",
            f.stage, f.target, f.signal, f.after
        );
    }
    assert!(
        table.iter().all(|(_, injected, ..)| *injected),
        "every fault landed before its run ended: {table:?}"
    );
}

/// How long the server stays down: past the gateway's wait for a connection (5 s), so the
/// runs meet the outage rather than the pool absorbing it, as it does a quick restart.
const SERVER_DOWN: std::time::Duration = std::time::Duration::from_secs(8);

/// The gateway on PostgreSQL, whose server restarts (every connection ended, refused while it
/// starts again) after 2 revisions, and again in another run after 2 training steps: both runs
/// wait the store out, end SUCCEEDED like an uninterrupted run, with nothing done twice, and
/// their events say they waited for the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_survive_a_restart_of_their_postgresql_server() {
    let Some(server) = crate::support::postgres::PrivatePostgres::start() else {
        return;
    };
    let models = tempfile::tempdir().unwrap();
    let tiny = arf::suite::tiny_model(models.path()).unwrap();
    let rows = crate::support::sample_rows();
    let dir = tempfile::tempdir().unwrap();
    let services = Services::start(dir.path(), &tiny).await;
    let gateway = |name: &str, store: String| {
        let data = dir.path().join(name);
        let (services, tiny) = (&services, &tiny);
        async move {
            services
                .gateway(&data, tiny, None, vec!["--store".into(), store])
                .await
        }
    };
    let client = |gateway: &Process| {
        PipelineClient::new(connect_lazy(&gateway.endpoint(), &ClientOptions::default()).unwrap())
    };

    let baseline = {
        let store = gateway::store::fresh_database(&server.url()).await.unwrap();
        let gateway = gateway("baseline", store).await;
        let mut client = client(&gateway);
        let run = crate::support::create(&mut client, full_spec(), rows.clone())
            .await
            .unwrap();
        result(&mut client, &run.id).await
    };

    let mut table = Vec::new();
    for stage in [pb::Stage::Revise, pb::Stage::Finetune] {
        let fault = Fault {
            target: Target::Gateway,
            signal: Signal::Term,
            stage,
            after: 2,
        };
        let store = gateway::store::fresh_database(&server.url()).await.unwrap();
        let gateway = gateway(&format!("{stage:?}"), store).await;
        let mut client = client(&gateway);
        let run = crate::support::create(&mut client, full_spec(), rows.clone())
            .await
            .unwrap();
        let seen = follow(&mut client, &run.id, |e| reached(e, &fault) || ended(e)).await;
        assert!(!ended(&seen), "{stage:?}: the run ended before the restart");
        tokio::task::block_in_place(|| server.restart(SERVER_DOWN));
        let got = result(&mut client, &run.id).await;
        let (lost, duplicated) = lost_and_duplicated(&baseline, &got);
        assert_eq!(
            (lost, duplicated),
            (0, 0),
            "{stage:?}: items lost or done twice"
        );
        assert_eq!(got.outcomes, baseline.outcomes, "{stage:?}: outcomes");
        assert_eq!(got.overall, baseline.overall, "{stage:?}: report");
        let events = follow(&mut client, &run.id, |_| false).await;
        let waited: Vec<&pb::Waiting> = events
            .iter()
            .filter_map(|e| match &e.kind {
                Some(pb::run_event::Kind::Waiting(w)) if w.service == "the store" => Some(w),
                _ => None,
            })
            .collect();
        assert!(
            waited.iter().any(|w| w.recovered),
            "{stage:?}: the events say the store was waited for: {waited:?}"
        );
        table.push((stage, waited.len()));
    }
    println!("\nPostgreSQL restarts (pg_ctl stop -m fast, 8 s down, start)");
    println!(
        "| stage | run succeeded | items lost | items duplicated | outcomes, report | store waits announced |"
    );
    println!("| --- | --- | --- | --- | --- | --- |");
    for (stage, waits) in table {
        println!("| {stage:?} | yes | 0 | 0 | equal | {waits} |");
    }
}
