//! The Trainer gRPC API end to end: a real server on 127.0.0.1:0, the generated client.

use std::path::Path;
use std::time::Duration;

use crate::common::*;
use arf_common::config::ServerArgs;
use arf_common::server::{Health, RunningServer, serve_on};
use arf_common::status::field_violations;
use arf_proto::service_names::TRAINER;
use arf_proto::v1::trainer_client::TrainerClient;
use arf_proto::v1::*;
use candle_core::Device;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use tonic::Code;
use tonic::service::Routes;
use tonic::transport::Channel;
use trainer_svc::grpc::TrainerService;
use trainer_svc::jobs::JobManager;

async fn start(jobs: JobManager) -> (RunningServer, TrainerClient<Channel>) {
    start_with(jobs, |service| service).await
}

/// [`start`], the service made as `make` says (confined paths).
async fn start_with(
    jobs: JobManager,
    make: impl FnOnce(TrainerService) -> TrainerService,
) -> (RunningServer, TrainerClient<Channel>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let health = Health::new(&[TRAINER]).await;
    health.set_serving(TRAINER, true).await;
    let shutdown = CancellationToken::new();
    let service = make(TrainerService::new(jobs, shutdown.clone()));
    let routes = Routes::new(service.into_server(16 << 20));
    let server = serve_on(listener, &ServerArgs::local(), health, routes, shutdown)
        .await
        .unwrap();
    let client = TrainerClient::connect(server.endpoint()).await.unwrap();
    (server, client)
}

fn examples() -> Vec<TrainingExample> {
    trainer_svc::train::examples::read_examples(&fixtures().join("train.jsonl"))
        .unwrap()
        .into_iter()
        .map(|e| TrainingExample {
            conversation: Some(Conversation {
                id: e.conversation.id,
                channel: e.conversation.channel,
                turns: e
                    .conversation
                    .turns
                    .iter()
                    .map(|t| Turn {
                        role: match t.role.as_str() {
                            "customer" => Role::Customer,
                            "agent" => Role::Agent,
                            "bot" => Role::Bot,
                            _ => Role::System,
                        } as i32,
                        text: t.text.clone(),
                    })
                    .collect(),
                metadata: Default::default(),
            }),
            summary: e.summary,
        })
        .collect()
}

fn request(steps: u32, checkpoint_every: u32) -> CreateJobRequest {
    CreateJobRequest {
        base_model_dir: tiny_llama().display().to_string(),
        data: Some(create_job_request::Data::Inline(InlineExamples {
            examples: examples(),
        })),
        hyperparameters: Some(Hyperparameters {
            lora: Some(LoraConfig {
                rank: 4,
                ..Default::default()
            }),
            learning_rate: 0.01,
            epochs: 50,
            max_steps: steps,
            batch_size: 2,
            checkpoint_every_steps: checkpoint_every,
            eval_every_steps: 2,
            eval_fraction: 0.2,
            ..Default::default()
        }),
        display_name: "test".into(),
        export_merged: true,
        labels: [("arf.run_id".to_string(), "r1".to_string())].into(),
        request_id: String::new(),
        validate_only: false,
    }
}

async fn watch(client: &mut TrainerClient<Channel>, id: &str, after: u64) -> Vec<JobEvent> {
    let req = WatchJobRequest {
        job_id: id.into(),
        after_sequence: after,
    };
    let stream = client.watch_job(req).await.unwrap().into_inner();
    tokio::time::timeout(
        Duration::from_secs(60),
        stream.map(|e| e.unwrap()).collect::<Vec<_>>(),
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_name_their_field() {
    let state = tempfile::tempdir().unwrap();
    let (_server, mut client) = start(JobManager::open(state.path(), Device::Cpu).unwrap()).await;
    let cases: Vec<(Box<dyn Fn(&mut CreateJobRequest)>, &str)> = vec![
        (
            Box::new(|r| r.base_model_dir = "/no/such/model".into()),
            "base_model_dir",
        ),
        (
            Box::new(|r| {
                r.hyperparameters
                    .as_mut()
                    .unwrap()
                    .lora
                    .as_mut()
                    .unwrap()
                    .target_modules = vec!["w_pack".into()]
            }),
            "hyperparameters.lora.target_modules[0]",
        ),
        (
            Box::new(|r| r.hyperparameters.as_mut().unwrap().learning_rate = -1.0),
            "hyperparameters.learning_rate",
        ),
        (
            Box::new(|r| {
                r.hyperparameters
                    .as_mut()
                    .unwrap()
                    .lora
                    .as_mut()
                    .unwrap()
                    .alpha = -2.0
            }),
            "hyperparameters.lora.alpha",
        ),
        (
            Box::new(|r| {
                r.data = Some(create_job_request::Data::JsonlPath("/no/such.jsonl".into()))
            }),
            "jsonl_path",
        ),
        (Box::new(|r| r.data = None), "data"),
        (
            Box::new(|r| r.hyperparameters.as_mut().unwrap().base_dtype = "f8".into()),
            "hyperparameters.base_dtype",
        ),
        // A rank of 2^32-1 was an allocation of terabytes that aborted the process.
        (
            Box::new(|r| {
                r.hyperparameters
                    .as_mut()
                    .unwrap()
                    .lora
                    .as_mut()
                    .unwrap()
                    .rank = u32::MAX
            }),
            "hyperparameters.lora.rank",
        ),
        (
            Box::new(|r| r.hyperparameters.as_mut().unwrap().learning_rate = f64::NAN),
            "hyperparameters.learning_rate",
        ),
        (
            Box::new(|r| r.hyperparameters.as_mut().unwrap().epochs = u32::MAX),
            "hyperparameters.epochs",
        ),
        (
            Box::new(|r| r.hyperparameters.as_mut().unwrap().max_seq_len = u32::MAX),
            "hyperparameters.max_seq_len",
        ),
        (
            Box::new(|r| r.hyperparameters.as_mut().unwrap().checkpoint_every_steps = u32::MAX),
            "hyperparameters.checkpoint_every_steps",
        ),
    ];
    for (edit, field) in cases {
        let mut r = request(2, 0);
        edit(&mut r);
        let status = client.create_job(r).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{field}: {status:?}");
        assert_eq!(field_violations(&status)[0].0, field, "{status:?}");
    }
    let status = client
        .get_job(GetJobRequest {
            job_id: "job-nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
}

/// `validate_only` checks the base and the hyperparameters and creates nothing; an
/// architecture the trainer does not know is refused naming it and the ones it knows, with or
/// without it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_only_checks_the_base_and_creates_nothing() {
    let state = tempfile::tempdir().unwrap();
    let (_server, mut client) = start(JobManager::open(state.path(), Device::Cpu).unwrap()).await;
    for base in [tiny_llama(), fixtures().join("tiny-qwen3")] {
        let mut r = request(2, 0);
        (r.validate_only, r.data) = (true, None);
        r.base_model_dir = base.display().to_string();
        let job = client.create_job(r).await.unwrap().into_inner();
        assert!(job.id.is_empty(), "{job:?}");
    }
    let models = tempfile::tempdir().unwrap();
    let mistral = models.path().join("tiny-mistral");
    std::fs::create_dir(&mistral).unwrap();
    for f in std::fs::read_dir(tiny_llama()).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, mistral.join(f.file_name().unwrap())).unwrap();
    }
    let config = std::fs::read_to_string(mistral.join("config.json")).unwrap();
    std::fs::write(
        mistral.join("config.json"),
        config.replace("LlamaForCausalLM", "MistralForCausalLM"),
    )
    .unwrap();
    for validate_only in [true, false] {
        let mut r = request(2, 0);
        r.validate_only = validate_only;
        r.base_model_dir = mistral.display().to_string();
        let status = client.create_job(r).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        let (field, why) = &field_violations(&status)[0];
        assert_eq!(field, "base_model_dir");
        assert!(
            why.contains("MistralForCausalLM") && why.contains("Qwen3ForCausalLM"),
            "{why}"
        );
    }
    let jobs = client
        .list_jobs(ListJobsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(jobs.jobs.is_empty(), "{jobs:?}");
}

/// A client that died before storing a job's id asks again with the same key: one job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_job_with_a_key_is_idempotent() {
    let state = tempfile::tempdir().unwrap();
    let (_server, mut client) = start(JobManager::open(state.path(), Device::Cpu).unwrap()).await;
    let keyed = || CreateJobRequest {
        request_id: "run-1/arf".into(),
        ..request(2, 0)
    };
    let first = client.create_job(keyed()).await.unwrap().into_inner();
    let again = client.create_job(keyed()).await.unwrap().into_inner();
    assert_eq!(first.id, again.id);
    let other = client.create_job(request(2, 0)).await.unwrap().into_inner();
    assert_ne!(other.id, first.id, "no key: a new job");
    let listed = client
        .list_jobs(ListJobsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .jobs;
    assert_eq!(listed.len(), 2, "{listed:?}");
    // The key survives a restart of the trainer (once both jobs are done: one worker per dir).
    for id in [&first.id, &other.id] {
        watch(&mut client, id, 0).await;
    }
    drop((_server, client));
    let (_server, mut client) = start(JobManager::open(state.path(), Device::Cpu).unwrap()).await;
    let after_restart = client.create_job(keyed()).await.unwrap().into_inner();
    assert_eq!(after_restart.id, first.id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_trains_streams_resumable_events_and_serves_its_adapter() {
    let state = tempfile::tempdir().unwrap();
    let (_server, mut client) = start(JobManager::open(state.path(), Device::Cpu).unwrap()).await;
    let job = client.create_job(request(4, 2)).await.unwrap().into_inner();
    assert_eq!(job.labels["arf.run_id"], "r1");
    let events = watch(&mut client, &job.id, 0).await;
    let seqs: Vec<u64> = events.iter().map(|e| e.sequence).collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
    use job_event::Kind;
    assert!(matches!(events[0].kind, Some(Kind::Queued(_))));
    assert!(matches!(
        events[1].kind,
        Some(Kind::Started(JobStarted {
            total_steps: 4,
            resumed: false,
            ..
        }))
    ));
    let steps = events
        .iter()
        .filter(|e| matches!(e.kind, Some(Kind::Step(_))))
        .count();
    assert_eq!(steps, 4);
    assert!(
        events
            .iter()
            .any(|e| matches!(&e.kind, Some(Kind::Eval(ev)) if ev.eval_loss > 0.0))
    );
    assert!(
        events
            .iter()
            .any(|e| matches!(&e.kind, Some(Kind::Checkpoint(c)) if c.step == 2))
    );
    let Some(Kind::Ended(end)) = &events.last().unwrap().kind else {
        panic!("last event is not Ended")
    };
    assert_eq!(end.state, JobState::Succeeded as i32, "{}", end.error);
    assert!(!end.outputs.as_ref().unwrap().merged_model_dir.is_empty());

    // A reconnecting client with the last sequence it saw gets exactly the rest.
    let rest = watch(&mut client, &job.id, 3).await;
    assert_eq!(rest, events[3..].to_vec());
    // One that reconnects after the Ended event gets a finished, empty stream at once (the
    // `watch` helper times out after 60 s: a stream that waits forever fails here).
    let last = events.last().unwrap().sequence;
    assert!(watch(&mut client, &job.id, last).await.is_empty());

    let got = client
        .get_job(GetJobRequest {
            job_id: job.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (got.state, got.step, got.last_event_sequence),
        (JobState::Succeeded as i32, 4, events.len() as u64)
    );
    let cps = client
        .list_checkpoints(ListCheckpointsRequest {
            job_id: job.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        cps.checkpoints.iter().map(|c| c.step).collect::<Vec<_>>(),
        [2]
    );

    // The downloaded adapter is byte for byte the file on disk.
    let chunks: Vec<FileChunk> = client
        .download_adapter(DownloadAdapterRequest {
            job_id: job.id.clone(),
            checkpoint_step: None,
        })
        .await
        .unwrap()
        .into_inner()
        .map(|c| c.unwrap())
        .collect()
        .await;
    let weights: Vec<u8> = chunks
        .iter()
        .filter(|c| c.file_name == "adapter_model.safetensors")
        .flat_map(|c| c.data.clone())
        .collect();
    let adapter_dir = std::path::PathBuf::from(&got.outputs.unwrap().adapter_dir);
    assert_eq!(
        weights,
        std::fs::read(adapter_dir.join("adapter_model.safetensors")).unwrap()
    );
    assert!(
        chunks
            .iter()
            .any(|c| c.file_name == "adapter_config.json" && c.last_chunk_of_file)
    );

    // Pagination.
    let second = client.create_job(request(1, 0)).await.unwrap().into_inner();
    let page = client
        .list_jobs(ListJobsRequest {
            page_size: 1,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.jobs[0].id, job.id);
    let page2 = client
        .list_jobs(ListJobsRequest {
            page_size: 1,
            page_token: page.next_page_token,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page2.jobs[0].id, second.id);
    assert!(page2.next_page_token.is_empty());
    // A queued or running job can be cancelled; a finished one stays as it was.
    let _ = client
        .cancel_job(CancelJobRequest {
            job_id: second.id.clone(),
        })
        .await
        .unwrap();
    let end = watch(&mut client, &second.id, 0).await;
    assert!(
        matches!(&end.last().unwrap().kind, Some(Kind::Ended(e)) if e.state == JobState::Cancelled as i32 || e.state == JobState::Succeeded as i32)
    );
}

/// A job of 8 steps (checkpoints every 2, no merged export) created in `state`, run to its first
/// checkpoint, then "restarted": the worker stops and the server goes, the job stays RUNNING (to
/// resume from that checkpoint at the next open). Returns the job and the request that made it.
async fn a_job_stopped_after_its_first_checkpoint(state: &Path) -> (Job, CreateJobRequest) {
    let jobs = JobManager::open(state, Device::Cpu).unwrap();
    let mut req = request(8, 2);
    req.export_merged = false;
    let (server, mut client) = start(jobs.clone()).await;
    let job = client.create_job(req.clone()).await.unwrap().into_inner();
    let mut stream = client
        .watch_job(WatchJobRequest {
            job_id: job.id.clone(),
            after_sequence: 0,
        })
        .await
        .unwrap()
        .into_inner();
    while let Some(e) = stream.next().await {
        if matches!(e.unwrap().kind, Some(job_event::Kind::Checkpoint(_))) {
            break;
        }
    }
    jobs.shutdown();
    drop(stream);
    server.shutdown().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    (job, req)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_job_resumes_after_a_trainer_restart_and_matches_an_uninterrupted_run() {
    let state = tempfile::tempdir().unwrap();
    let (job, spec_req) = a_job_stopped_after_its_first_checkpoint(state.path()).await;

    let (_server, mut client) = start(JobManager::open(state.path(), Device::Cpu).unwrap()).await;
    let events = watch(&mut client, &job.id, 0).await;
    let started: Vec<&JobStarted> = events
        .iter()
        .filter_map(|e| {
            if let Some(job_event::Kind::Started(s)) = &e.kind {
                Some(s)
            } else {
                None
            }
        })
        .collect();
    assert_eq!(started.len(), 2);
    assert!(
        started[1].resumed && started[1].from_step >= 2,
        "{:?}",
        started[1]
    );
    let Some(job_event::Kind::Ended(end)) = &events.last().unwrap().kind else {
        panic!()
    };
    assert_eq!(end.state, JobState::Succeeded as i32, "{}", end.error);

    // Same job, uninterrupted, in a fresh state directory.
    let other = tempfile::tempdir().unwrap();
    let (_s2, mut c2) = start(JobManager::open(other.path(), Device::Cpu).unwrap()).await;
    let straight = c2.create_job(spec_req).await.unwrap().into_inner();
    let events2 = watch(&mut c2, &straight.id, 0).await;
    let Some(job_event::Kind::Ended(end2)) = &events2.last().unwrap().kind else {
        panic!()
    };
    let a = trainer_svc::lora::peft::load_adapter(
        std::path::Path::new(&end.outputs.as_ref().unwrap().adapter_dir),
        &Device::Cpu,
    )
    .unwrap()
    .1;
    let b = trainer_svc::lora::peft::load_adapter(
        std::path::Path::new(&end2.outputs.as_ref().unwrap().adapter_dir),
        &Device::Cpu,
    )
    .unwrap()
    .1;
    for (name, t) in &a {
        assert!(max_abs_diff(t, &b[name]) <= 1e-6, "{name}");
    }
}

/// Issue 35 item 6: what a crash can leave of a job's event log (its last whole line lost, a
/// half-written line after it) neither reuses a number the gateway's relay already holds nor
/// glues the next event onto the torn line. The relay reads on from the last number it stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_torn_event_log_never_reuses_a_sequence_number() {
    let state = tempfile::tempdir().unwrap();
    let (job, _) = a_job_stopped_after_its_first_checkpoint(state.path()).await;

    // Everything logged so far was told to watchers: the relay holds up to `relayed`.
    let log_path = state.path().join("jobs").join(&job.id).join("events.jsonl");
    let log = std::fs::read_to_string(&log_path).unwrap();
    let lines: Vec<&str> = log.lines().collect();
    let sequence = |line: &str| -> u64 {
        serde_json::from_str::<serde_json::Value>(line).unwrap()["sequence"]
            .as_u64()
            .unwrap()
    };
    let relayed = sequence(lines.last().unwrap());
    let last = lines[lines.len() - 1];
    let mut crashed = lines[..lines.len() - 1].join("\n") + "\n";
    crashed.push_str(&last[..last.len() / 2]);
    std::fs::write(&log_path, crashed).unwrap();

    let (server, mut client) = start(JobManager::open(state.path(), Device::Cpu).unwrap()).await;
    let after = watch(&mut client, &job.id, relayed).await;
    assert!(after.iter().all(|e| e.sequence > relayed), "{after:?}");
    assert!(
        matches!(&after.first().and_then(|e| e.kind.as_ref()), Some(job_event::Kind::Started(s)) if s.resumed),
        "the relay sees the resumed start: {after:?}"
    );
    let Some(job_event::Kind::Ended(end)) = &after.last().unwrap().kind else {
        panic!("{after:?}")
    };
    assert_eq!(end.state, JobState::Succeeded as i32, "{}", end.error);
    drop((server, client));

    // The log reads back whole, numbered strictly upwards, and a third start serves the same.
    let log = std::fs::read_to_string(&log_path).unwrap();
    let numbers: Vec<u64> = log.lines().map(sequence).collect();
    assert!(numbers.windows(2).all(|w| w[0] < w[1]), "{numbers:?}");
    let (_server, mut client) = start(JobManager::open(state.path(), Device::Cpu).unwrap()).await;
    let again = watch(&mut client, &job.id, relayed).await;
    assert_eq!(
        again.iter().map(|e| e.sequence).collect::<Vec<_>>(),
        after.iter().map(|e| e.sequence).collect::<Vec<_>>()
    );
}

/// Issue 35 item 7: a client-named dataset and base model are checked at CreateJob and judged
/// again when the job trains; a file swapped for a link to outside the roots meanwhile (while
/// the job waited in the queue) fails the job, naming the flag, and nothing outside is read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_swapped_for_links_after_create_job_are_refused_when_the_job_trains() {
    let state = tempfile::tempdir().unwrap();
    let roots = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let (models, datasets) = (roots.path().join("models"), roots.path().join("data"));
    for dir in ["busy", "swapped"] {
        let copy = models.join(dir);
        std::fs::create_dir_all(&copy).unwrap();
        for f in std::fs::read_dir(tiny_llama()).unwrap().flatten() {
            std::fs::copy(f.path(), copy.join(f.file_name())).unwrap();
        }
    }
    std::fs::create_dir_all(&datasets).unwrap();
    let data = datasets.join("train.jsonl");
    std::fs::copy(fixtures().join("train.jsonl"), &data).unwrap();
    let secret = outside.path().join("secret.jsonl");
    std::fs::copy(fixtures().join("train.jsonl"), &secret).unwrap();

    let jobs = JobManager::open(state.path(), Device::Cpu).unwrap();
    let (roots_m, roots_d) = (models.clone(), datasets.clone());
    let (_server, mut client) = start_with(jobs, move |service| {
        service.confined_to(&[roots_m], &[roots_d])
    })
    .await;
    let in_root = |r: &mut CreateJobRequest, model: &str| {
        r.base_model_dir = models.join(model).display().to_string();
        r.export_merged = false;
    };
    // The worker is busy while the other two wait, and their files are swapped.
    let mut busy = request(20_000, 0);
    in_root(&mut busy, "busy");
    let busy = client.create_job(busy).await.unwrap().into_inner();
    let mut by_data = request(2, 0);
    in_root(&mut by_data, "busy");
    by_data.data = Some(create_job_request::Data::JsonlPath(
        data.display().to_string(),
    ));
    let by_data = client.create_job(by_data).await.unwrap().into_inner();
    let mut by_model = request(2, 0);
    in_root(&mut by_model, "swapped");
    let by_model = client.create_job(by_model).await.unwrap().into_inner();

    std::fs::remove_file(&data).unwrap();
    std::os::unix::fs::symlink(&secret, &data).unwrap();
    let weights = models.join("swapped").join("model.safetensors");
    std::fs::remove_file(&weights).unwrap();
    std::os::unix::fs::symlink(tiny_llama().join("model.safetensors"), &weights).unwrap();
    client
        .cancel_job(CancelJobRequest {
            job_id: busy.id.clone(),
        })
        .await
        .unwrap();

    for (job, flag, file) in [
        (&by_data, "--dataset-root", "train.jsonl"),
        (&by_model, "--model-root", "model.safetensors"),
    ] {
        let events = watch(&mut client, &job.id, 0).await;
        let Some(job_event::Kind::Ended(end)) = &events.last().unwrap().kind else {
            panic!("{events:?}")
        };
        assert_eq!(end.state, JobState::Failed as i32, "{end:?}");
        assert!(
            end.error.contains(flag) && end.error.contains(file),
            "{}",
            end.error
        );
        assert!(
            !events
                .iter()
                .any(|e| matches!(e.kind, Some(job_event::Kind::Step(_)))),
            "nothing was trained on files outside the roots"
        );
    }
}

/// A trainer killed after logging a job's `Ended` but before rewriting job.json: on restart the
/// job is finished (from its log), not trained a second time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_whose_end_was_logged_but_not_saved_is_not_retrained() {
    let state = tempfile::tempdir().unwrap();
    let (server, mut client) = start(JobManager::open(state.path(), Device::Cpu).unwrap()).await;
    let job = client.create_job(request(2, 0)).await.unwrap().into_inner();
    let events = watch(&mut client, &job.id, 0).await;
    drop((server, client));

    let path = state.path().join("jobs").join(&job.id).join("job.json");
    let mut stored: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    stored["state"] = "running".into();
    stored["end_time_ms"] = serde_json::Value::Null;
    std::fs::write(&path, stored.to_string()).unwrap();

    let (_server, mut client) = start(JobManager::open(state.path(), Device::Cpu).unwrap()).await;
    let reopened = client
        .get_job(GetJobRequest {
            job_id: job.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reopened.state, JobState::Succeeded as i32, "{reopened:?}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = watch(&mut client, &job.id, 0).await;
    assert_eq!(
        after.len(),
        events.len(),
        "no event was added: not retrained"
    );
}

/// A job over a JSONL file on the trainer's machine is created and trains (it failed with
/// INTERNAL and left a QUEUED job behind: its folder did not exist yet).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_over_a_server_side_jsonl_file_trains() {
    let state = tempfile::tempdir().unwrap();
    let (_server, mut client) = start(JobManager::open(state.path(), Device::Cpu).unwrap()).await;
    let mut r = request(2, 0);
    r.data = Some(create_job_request::Data::JsonlPath(
        fixtures().join("train.jsonl").display().to_string(),
    ));
    let job = client.create_job(r).await.unwrap().into_inner();
    let events = watch(&mut client, &job.id, 0).await;
    let done = client
        .get_job(GetJobRequest { job_id: job.id })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(done.state, JobState::Succeeded as i32, "{events:?}");
}

/// A job whose worker died every time it ran (OOM, abort) is failed after a few starts instead
/// of being re-queued on every start of the trainer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_that_keeps_killing_the_trainer_is_failed() {
    let state = tempfile::tempdir().unwrap();
    let (server, mut client) = start(JobManager::open(state.path(), Device::Cpu).unwrap()).await;
    let job = client.create_job(request(2, 0)).await.unwrap().into_inner();
    watch(&mut client, &job.id, 0).await;
    drop((server, client));

    // As a worker that died mid-training leaves it: running, its attempts used up, no end.
    let dir = state.path().join("jobs").join(&job.id);
    let mut stored: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("job.json")).unwrap()).unwrap();
    stored["state"] = "running".into();
    stored["attempts"] = trainer_svc::jobs::MAX_ATTEMPTS.into();
    std::fs::write(dir.join("job.json"), stored.to_string()).unwrap();
    let log = std::fs::read_to_string(dir.join("events.jsonl")).unwrap();
    let kept: Vec<&str> = log.lines().filter(|l| !l.contains("\"ended\"")).collect();
    assert!(
        kept.len() < log.lines().count(),
        "the log had an end to drop"
    );
    std::fs::write(dir.join("events.jsonl"), kept.join("\n") + "\n").unwrap();

    let (_server, mut client) = start(JobManager::open(state.path(), Device::Cpu).unwrap()).await;
    let failed = client
        .get_job(GetJobRequest {
            job_id: job.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(failed.state, JobState::Failed as i32, "{failed:?}");
    assert!(failed.error.contains("stopped 3 times"), "{}", failed.error);
    let events = watch(&mut client, &job.id, 0).await;
    assert!(
        matches!(
            events.last().and_then(|e| e.kind.as_ref()),
            Some(job_event::Kind::Ended(_))
        ),
        "watchers see the end: {events:?}"
    );
}

/// One damaged job folder (a torn or hand-edited job.json) no longer keeps the trainer from
/// starting: that job is listed as failed, saying why, its folder is left as it was, and the
/// other jobs are served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_job_is_quarantined_and_the_trainer_serves_the_rest() {
    let state = tempfile::tempdir().unwrap();
    let (server, mut client) = start(JobManager::open(state.path(), Device::Cpu).unwrap()).await;
    let good = client.create_job(request(2, 0)).await.unwrap().into_inner();
    watch(&mut client, &good.id, 0).await;
    drop((server, client));

    let damaged = state.path().join("jobs").join("job-0000000000001-0001");
    std::fs::create_dir_all(&damaged).unwrap();
    std::fs::write(damaged.join("job.json"), "{\"id\": \"job-00").unwrap();

    let jobs = JobManager::open(state.path(), Device::Cpu).expect("the trainer starts");
    let (_server, mut client) = start(jobs).await;
    let listed = client
        .list_jobs(ListJobsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .jobs;
    assert_eq!(listed.len(), 2, "{listed:?}");
    let quarantined = listed
        .iter()
        .find(|j| j.id == "job-0000000000001-0001")
        .unwrap();
    assert_eq!(quarantined.state, JobState::Failed as i32);
    assert!(
        quarantined
            .error
            .contains("cannot read this job's job.json"),
        "{}",
        quarantined.error
    );
    let events = watch(&mut client, &quarantined.id, 0).await;
    assert!(
        matches!(
            events.last().and_then(|e| e.kind.as_ref()),
            Some(job_event::Kind::Ended(_))
        ),
        "a watch of it ends: {events:?}"
    );
    assert_eq!(
        std::fs::read_to_string(damaged.join("job.json")).unwrap(),
        "{\"id\": \"job-00",
        "left as it was"
    );
    let served = client
        .get_job(GetJobRequest { job_id: good.id })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(served.state, JobState::Succeeded as i32);
}

/// More examples than one 16 MiB message can carry reach a job through UploadExamples, in
/// chunks; the job trains on every one of them. A bad example is refused with its place in
/// the whole upload, and an upload serves one job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn examples_larger_than_a_message_are_uploaded_in_chunks() {
    let state = tempfile::tempdir().unwrap();
    let (_server, mut client) = start(JobManager::open(state.path(), Device::Cpu).unwrap()).await;
    let base = examples();
    // ~20 MiB: each example padded with a long agent turn.
    let padding = "Thank you for your patience while I check the order. ".repeat(400);
    let many: Vec<TrainingExample> = (0..1000)
        .map(|i| {
            let mut e = base[i % base.len()].clone();
            let c = e.conversation.as_mut().unwrap();
            c.id = format!("{}-{i}", c.id);
            c.turns[0].text = format!("{}{padding}", c.turns[0].text);
            e
        })
        .collect();
    let total: usize = many.iter().map(prost::Message::encoded_len).sum();
    assert!(total > 16 << 20, "{total} bytes");
    let chunks: Vec<UploadExamplesRequest> = many
        .chunks(50)
        .map(|c| UploadExamplesRequest {
            examples: c.to_vec(),
        })
        .collect();
    let upload = client
        .upload_examples(futures::stream::iter(chunks))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(upload.examples, 1000);

    let mut r = request(1, 0);
    r.hyperparameters.as_mut().unwrap().max_seq_len = 64;
    r.hyperparameters.as_mut().unwrap().eval_fraction = 0.0;
    r.data = Some(create_job_request::Data::UploadId(upload.upload_id.clone()));
    let job = client.create_job(r.clone()).await.unwrap().into_inner();
    let events = watch(&mut client, &job.id, 0).await;
    let started = events
        .iter()
        .find_map(|e| match &e.kind {
            Some(job_event::Kind::Started(s)) => Some(*s),
            _ => None,
        })
        .unwrap();
    assert_eq!(started.train_examples, 1000, "{started:?}");

    let again = client.create_job(r).await.unwrap_err();
    assert_eq!(again.code(), Code::InvalidArgument);
    assert_eq!(field_violations(&again)[0].0, "upload_id", "{again:?}");

    let mut bad = base.clone();
    bad.push(TrainingExample {
        summary: " ".into(),
        ..base[0].clone()
    });
    let refused = client
        .upload_examples(futures::stream::iter([UploadExamplesRequest {
            examples: bad,
        }]))
        .await
        .unwrap_err();
    assert_eq!(
        field_violations(&refused)[0].0,
        format!("examples[{}].summary", base.len()),
        "{refused:?}"
    );
    let path = client
        .create_job(CreateJobRequest {
            data: Some(create_job_request::Data::UploadId(
                "../../etc/passwd".into(),
            )),
            ..request(1, 0)
        })
        .await
        .unwrap_err();
    assert_eq!(field_violations(&path)[0].0, "upload_id", "{path:?}");
}

/// Issue 35 item 5: what uploads hold on disk is bounded, each upload and all the unclaimed ones
/// together; past a bound the answer names the flag (one upload too large: INVALID_ARGUMENT; too
/// much unclaimed: RESOURCE_EXHAUSTED, which a caller waits out), nothing partial is
/// left behind, and a job claiming its upload makes room for the next.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_flood_is_bounded_in_bytes() {
    let upload = |copies: usize| {
        let chunks: Vec<UploadExamplesRequest> = (0..copies)
            .map(|_| UploadExamplesRequest {
                examples: examples(),
            })
            .collect();
        futures::stream::iter(chunks)
    };
    // One upload's size on disk, under the default limits.
    let probe = tempfile::tempdir().unwrap();
    let (_probe_server, mut probe_client) =
        start(JobManager::open(probe.path(), Device::Cpu).unwrap()).await;
    let id = probe_client
        .upload_examples(upload(1))
        .await
        .unwrap()
        .into_inner()
        .upload_id;
    let size = std::fs::metadata(probe.path().join("uploads").join(format!("{id}.jsonl")))
        .unwrap()
        .len();

    let state = tempfile::tempdir().unwrap();
    let limits = trainer_svc::jobs::UploadLimits {
        per_upload: size * 3 / 2,
        pending: size * 5 / 2,
    };
    let jobs = JobManager::open_with(state.path(), Device::Cpu, limits).unwrap();
    let (_server, mut client) = start(jobs).await;
    let too_big = client.upload_examples(upload(2)).await.unwrap_err();
    assert_eq!(too_big.code(), Code::InvalidArgument, "{too_big:?}");
    assert!(
        too_big.message().contains("--max-upload-bytes"),
        "{too_big:?}"
    );
    let first = client
        .upload_examples(upload(1))
        .await
        .unwrap()
        .into_inner();
    client.upload_examples(upload(1)).await.unwrap();
    let flood = client.upload_examples(upload(1)).await.unwrap_err();
    assert_eq!(flood.code(), Code::ResourceExhausted, "{flood:?}");
    assert!(
        flood.message().contains("--max-pending-upload-bytes"),
        "{flood:?}"
    );
    let left: Vec<_> = std::fs::read_dir(state.path().join("uploads"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left.len(), 2, "the refused uploads left nothing: {left:?}");
    assert!(left.iter().all(|f| f.ends_with(".jsonl")), "{left:?}");

    let mut r = request(1, 0);
    r.data = Some(create_job_request::Data::UploadId(first.upload_id));
    client.create_job(r).await.unwrap();
    client
        .upload_examples(upload(1))
        .await
        .expect("a claimed upload no longer counts");
}
