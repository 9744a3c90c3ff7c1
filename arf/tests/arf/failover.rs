//! Two gateways on one PostgreSQL database, as separate processes over the same analyzer,
//! editor and trainer: the gateway driving a run is SIGKILLed partway through Revise, and the
//! other takes the run over once the lease expires and finishes it with the same items,
//! outcomes, export and report as an uninterrupted run; no item lost, none done twice, and
//! the run's events one gap-free sequence. The client watches through the surviving gateway
//! from the start (WatchRun works on any gateway, for any run).
//!
//! The gateways find the editor by discovery (`dns:///localhost:port`, the system's resolver).
//!
//! And the gateway driving a run is frozen (SIGSTOP) past its lease while the other takes the run
//! over and cancels or finishes it: when it goes on (SIGCONT), its fencing token is stale and
//! nothing it does reaches the run. Frozen during Finetune, it comes back to a job the other
//! gateway follows now, and leaves it training.
//!
//! Prints the lease, and the time from the kill to the first event the new holder wrote.
//! Needs a PostgreSQL server (`scripts/with-postgres.sh`; skipped without one unless
//! `ARF_REQUIRE_POSTGRES` is set, as in CI).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use arf_common::client::{ClientOptions, GrpcChannel, connect_lazy};
use arf_proto::v1 as pb;
use arf_proto::v1::pipeline_client::PipelineClient;
use arf_proto::v1::trainer_client::TrainerClient;

use crate::support::{follow, get_run};

use crate::support::processes::{
    Process, Services, Signal, full_spec, lost_and_duplicated, result,
};

const LEASE_SECS: &str = "2";

/// Two gateways on a fresh database, a run created on the first and watched through the second
/// (which does not drive it) until 2 items are revised ([`Setup::mid_revise`]).
struct MidRevise {
    first: Process,
    /// Bind it (`_second`, not `..`): dropping it stops the gateway the test watches through.
    _second: Process,
    run: pb::Run,
    watcher: PipelineClient<GrpcChannel>,
    /// The last event seen.
    last_before: u64,
}

fn client(gateway: &Process) -> PipelineClient<GrpcChannel> {
    PipelineClient::new(connect_lazy(&gateway.endpoint(), &ClientOptions::default()).unwrap())
}

/// What every test here starts from: the shared PostgreSQL server, a tiny model, and the
/// analyzer, editor and trainer as processes (dropped in this order: the processes first).
struct Setup {
    services: Services,
    dir: tempfile::TempDir,
    tiny: PathBuf,
    server: String,
    _models: tempfile::TempDir,
}

impl Setup {
    /// `None` (the test is skipped) without a PostgreSQL server.
    async fn start() -> Option<Self> {
        let server = postgres_server()?;
        let models = tempfile::tempdir().unwrap();
        let tiny = arf::suite::tiny_model(models.path()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let services = Services::start(dir.path(), &tiny).await;
        Some(Self {
            services,
            dir,
            tiny,
            server,
            _models: models,
        })
    }

    /// A fresh database on the shared server.
    async fn fresh_database(&self) -> String {
        gateway::store::fresh_database(&self.server).await.unwrap()
    }

    /// A gateway named `id` on the PostgreSQL database `store`, with short leases.
    async fn gateway(&self, store: &str, id: &str) -> Process {
        let shared = [
            "--store",
            store,
            "--gateway-id",
            id,
            "--lease-secs",
            LEASE_SECS,
        ];
        // The editor through discovery (the system's resolver: localhost's records), as a
        // headless Service would be named.
        let editor = format!("dns:///localhost:{}", self.services.editor.port);
        self.services
            .gateway(
                &self.dir.path().join(id),
                &self.tiny,
                Some(editor),
                shared.map(String::from).to_vec(),
            )
            .await
    }

    /// A run of `spec` in the middle of Revise ([`MidRevise`]).
    async fn mid_revise(&self, spec: pb::RunSpec) -> MidRevise {
        let shared = self.fresh_database().await;
        let first = self.gateway(&shared, "first").await;
        let second = self.gateway(&shared, "second").await;
        let run = crate::support::create(&mut client(&first), spec, crate::support::sample_rows())
            .await
            .unwrap();
        let mut watcher = client(&second);
        let seen = follow(&mut watcher, &run.id, |events| {
            crate::support::items(events, pb::Stage::Revise).len() >= 2
        })
        .await;
        MidRevise {
            first,
            _second: second,
            run,
            watcher,
            last_before: seen.last().map_or(0, |e| e.sequence),
        }
    }

    /// The trainer's jobs for the run: id and state.
    async fn jobs_of(&self, run_id: &str) -> Vec<(String, pb::JobState)> {
        let channel =
            connect_lazy(&self.services.trainer.endpoint(), &ClientOptions::default()).unwrap();
        let jobs = TrainerClient::new(channel)
            .list_jobs(pb::ListJobsRequest {
                page_size: 1000,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .jobs;
        jobs.iter()
            .filter(|j| j.labels.get("arf.run_id").map(String::as_str) == Some(run_id))
            .map(|j| {
                (
                    j.id.clone(),
                    pb::JobState::try_from(j.state).unwrap_or_default(),
                )
            })
            .collect()
    }
}

/// The PostgreSQL server the tests share, if there is one.
fn postgres_server() -> Option<String> {
    let server = std::env::var("ARF_TEST_POSTGRES").ok();
    if server.is_none() {
        assert!(
            std::env::var_os("ARF_REQUIRE_POSTGRES").is_none(),
            "ARF_REQUIRE_POSTGRES is set but ARF_TEST_POSTGRES names no server"
        );
        eprintln!("NOTE: skipped: no ARF_TEST_POSTGRES (run under scripts/with-postgres.sh)");
    }
    server
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_other_gateway_finishes_a_run_whose_gateway_was_killed() {
    let Some(setup) = Setup::start().await else {
        return;
    };
    let rows = crate::support::sample_rows();

    // The uninterrupted run, through one gateway on a database of its own.
    let alone = setup.fresh_database().await;
    let baseline = {
        let gateway = setup.gateway(&alone, "alone").await;
        let mut client = client(&gateway);
        let run = crate::support::create(&mut client, full_spec(), rows.clone())
            .await
            .unwrap();
        result(&mut client, &run.id).await
    };

    let MidRevise {
        mut first,
        run,
        mut watcher,
        last_before,
        _second,
    } = setup.mid_revise(full_spec()).await;
    first.stop(Signal::Kill);
    let killed = Instant::now();

    let next = follow(&mut watcher, &run.id, |events| {
        events.iter().any(|e| e.sequence > last_before)
    })
    .await;
    let takeover = killed.elapsed();
    assert!(
        next.iter().any(|e| e.sequence > last_before),
        "the run went on"
    );
    let got = result(&mut watcher, &run.id).await;
    let (lost, duplicated) = lost_and_duplicated(&baseline, &got);
    assert_eq!((lost, duplicated), (0, 0), "items lost or done twice");
    assert_eq!(got.outcomes, baseline.outcomes, "outcomes");
    assert_eq!(
        String::from_utf8_lossy(&got.export),
        String::from_utf8_lossy(&baseline.export),
        "export"
    );
    assert_eq!(got.overall, baseline.overall, "report");

    let all = follow(&mut watcher, &run.id, |_| false).await;
    let sequences: Vec<u64> = all.iter().map(|e| e.sequence).collect();
    assert_eq!(
        sequences,
        (1..=all.len() as u64).collect::<Vec<_>>(),
        "one gap-free sequence of events"
    );
    println!(
        "\nfailover: lease {LEASE_SECS} s (heartbeat a third of it); SIGKILL of the holder -> \
         first event by the other gateway: {:.2} s; {} events, gap-free; outcomes, export, \
         report equal to the uninterrupted run",
        takeover.as_secs_f64(),
        all.len()
    );
    assert!(
        takeover < Duration::from_secs(10),
        "taken over in {takeover:?}, the lease is {LEASE_SECS} s"
    );
}

/// How the other gateway ends the run while its first holder is paused.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Ending {
    Cancelled,
    Finished,
}

/// The gateway driving a run freezes (SIGSTOP: a VM pause, a partition from PostgreSQL) past its
/// lease; the other takes the run over and cancels it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_gateway_that_comes_back_after_a_cancel_writes_nothing() {
    a_paused_gateway_comes_back_after(Ending::Cancelled).await;
}

/// The same with the run finished by the other gateway instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_gateway_that_comes_back_after_the_run_finished_writes_nothing() {
    a_paused_gateway_comes_back_after(Ending::Finished).await;
}

/// When the frozen gateway goes on (SIGCONT), with revisions still in flight, its claim is no
/// longer the run's latest: the run keeps the state the other gateway gave it, no event follows
/// the terminal one, and no training job is left running for it.
async fn a_paused_gateway_comes_back_after(ending: Ending) {
    let Some(setup) = Setup::start().await else {
        return;
    };
    let mut spec = full_spec();
    if ending == Ending::Cancelled {
        // Training long enough (tens of seconds on the tiny model) that the cancel lands
        // before the run can end: on a fast CPU the default run finished first (the other
        // gateway took over and went through Finetune and Evaluate before the cancel came).
        let training = spec.config.as_mut().unwrap().training.as_mut().unwrap();
        (training.max_steps, training.checkpoint_every_steps) = (1000, 250);
    }
    let MidRevise {
        first,
        run,
        mut watcher,
        last_before,
        _second,
    } = setup.mid_revise(spec).await;
    first.pause();
    // The other gateway's first event: it has taken the run over.
    follow(&mut watcher, &run.id, |events| {
        events.iter().any(|e| e.sequence > last_before)
    })
    .await;
    if ending == Ending::Cancelled {
        watcher
            .cancel_run(pb::CancelRunRequest {
                run_id: run.id.clone(),
            })
            .await
            .unwrap();
    }
    let ended = follow(&mut watcher, &run.id, |_| false).await;
    let state = match ending {
        Ending::Cancelled => pb::RunState::Cancelled,
        Ending::Finished => pb::RunState::Succeeded,
    };
    assert_eq!(
        crate::support::final_state(&ended),
        Some(state),
        "{ending:?}"
    );

    first.resume();
    // Time for what it had in flight to come back, and for two of its heartbeats.
    let lease: u64 = LEASE_SECS.parse().unwrap();
    tokio::time::sleep(Duration::from_secs(3 * lease)).await;
    let after = follow(&mut watcher, &run.id, |_| false).await;
    assert_eq!(
        after.len(),
        ended.len(),
        "{ending:?}: events written after the terminal one: {:?}",
        &after[ended.len().min(after.len())..]
    );
    assert!(
        matches!(after.last().and_then(|e| e.kind.as_ref()), Some(pb::run_event::Kind::State(s)) if *s == state as i32),
        "{ending:?}: the terminal event is the last"
    );
    let stored = get_run(&mut watcher, &run.id).await;
    assert_eq!(stored.state, state as i32, "{ending:?}");

    let jobs = setup.jobs_of(&run.id).await;
    assert!(
        jobs.iter()
            .all(|(_, s)| matches!(s, pb::JobState::Succeeded | pb::JobState::Cancelled)),
        "{ending:?}: a training job left running: {jobs:?}"
    );
    if ending == Ending::Cancelled {
        // A tiny student can train to the end before the cancel arrives (the run is then in
        // Evaluate); what must not happen is a job that trains on unwatched: every job that
        // succeeded had its end relayed into the run's log before the run was cancelled.
        let relayed = succeeded_jobs_relayed(&ended);
        for (id, state) in &jobs {
            assert!(
                *state != pb::JobState::Succeeded || relayed.contains(id),
                "job {id} trained to the end for a cancelled run, unwatched: {jobs:?}"
            );
        }
    }
}

/// The gateway driving a run freezes while the run's student trains; the other takes the run
/// over and follows the same job. When the frozen one goes on, its drive stops (its lease is
/// gone) without cancelling the job: the run still finishes, on that job's student.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_gateway_that_comes_back_during_finetune_leaves_the_job_training() {
    let Some(setup) = Setup::start().await else {
        return;
    };
    let shared = setup.fresh_database().await;
    let first = setup.gateway(&shared, "first").await;
    let _second = setup.gateway(&shared, "second").await;
    let mut spec = full_spec();
    // Long enough (tens of seconds on the tiny model) to outlast the pause and the takeover.
    let training = spec.config.as_mut().unwrap().training.as_mut().unwrap();
    (training.max_steps, training.checkpoint_every_steps) = (1000, 250);
    let run = crate::support::create(&mut client(&first), spec, crate::support::sample_rows())
        .await
        .unwrap();
    let mut watcher = client(&_second);
    let is_step = |e: &pb::RunEvent| matches!(&e.kind, Some(pb::run_event::Kind::Training(j)) if matches!(j.kind, Some(pb::job_event::Kind::Step(_))));
    let training = follow(&mut watcher, &run.id, |events| events.iter().any(is_step)).await;
    let last_before = training.last().map_or(0, |e| e.sequence);

    // The trainer freezes too, so that the first gateway, when it goes on, finds no job event
    // waiting (a write of one would fail on its stale lease first) and learns from its
    // heartbeat that the run is no longer its own: the path a slow step takes on a real model.
    setup.services.trainer.pause();
    first.pause();
    // The first gateway writes only the job's events until the job ends; a stage change after
    // them is the other gateway's takeover, which goes through the stages done.
    follow(&mut watcher, &run.id, |events| {
        events.iter().any(|e| {
            e.sequence > last_before && matches!(e.kind, Some(pb::run_event::Kind::Stage(_)))
        })
    })
    .await;
    first.resume();
    let lease: u64 = LEASE_SECS.parse().unwrap();
    tokio::time::sleep(Duration::from_secs(2 * lease)).await;
    setup.services.trainer.resume();

    let ended = follow(&mut watcher, &run.id, |_| false).await;
    assert_eq!(
        crate::support::final_state(&ended),
        Some(pb::RunState::Succeeded),
        "the run ended otherwise: {:?}",
        ended.last()
    );
    let jobs = setup.jobs_of(&run.id).await;
    assert_eq!(
        jobs.len(),
        1,
        "one job, followed by both gateways: {jobs:?}"
    );
    assert_eq!(jobs[0].1, pb::JobState::Succeeded, "{jobs:?}");
    assert_eq!(succeeded_jobs_relayed(&ended), vec![jobs[0].0.clone()]);
}

/// The training jobs whose successful end the run's log relays.
fn succeeded_jobs_relayed(events: &[pb::RunEvent]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            Some(pb::run_event::Kind::Training(job)) => match &job.kind {
                Some(pb::job_event::Kind::Ended(end))
                    if end.state == pb::JobState::Succeeded as i32 =>
                {
                    Some(job.job_id.clone())
                }
                _ => None,
            },
            _ => None,
        })
        .collect()
}
