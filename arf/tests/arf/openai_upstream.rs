//! A whole run whose teacher, judge and one of two editor replicas are a model the team already
//! serves behind an OpenAI-compatible API. Here that server is an editor process serving the
//! tiny model over `--http-listen` with room for one generation at a time; a second editor
//! process forwards to it (`--backend openai`), beside an ordinary in-process replica. The
//! upstream starts busy (the test holds its only slot): the run waits it out and finishes. Then
//! the same with llama.cpp's `llama-server` as the upstream, and a finished run's student served
//! over the OpenAI API (`arf serve-student`).

use std::time::Duration;

use arf_proto::v1 as pb;

use crate::support::processes::{self, Process, Services, free_port};
use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_uses_an_openai_upstream_as_teacher_judge_and_replica_and_waits_out_its_429s() {
    let dir = tempfile::tempdir().unwrap();
    let tiny = arf::suite::tiny_model(dir.path()).unwrap();
    let tiny_path = tiny.display().to_string();

    let http_port = free_port();
    let mut upstream = Process::new(
        "editor",
        vec![
            "--model".into(),
            tiny_path.clone(),
            "--http-listen".into(),
            format!("127.0.0.1:{http_port}"),
            "--max-in-flight".into(),
            "1".into(),
        ],
    );
    upstream.start().await;
    let base_url = format!("http://127.0.0.1:{http_port}/v1");
    let mut behind = Behind::start(dir.path(), &tiny, &base_url, &tiny_path).await;

    // Hold the upstream's only slot: every teacher call is answered 429 until it is let go. One
    // long generation after another, since on a fast machine one can end before the run starts.
    let holder = tokio::spawn({
        let url = format!("{base_url}/chat/completions");
        async move {
            let body = serde_json::json!({"messages": [{"role": "user", "content": "Tell a long story."}],
                                          "max_tokens": 6000});
            loop {
                let _ = reqwest::Client::new().post(&url).json(&body).send().await;
            }
        }
    });
    let busy = async {
        loop {
            let answer = reqwest::Client::new()
                .post(format!("{base_url}/chat/completions"))
                .json(&serde_json::json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}))
                .send()
                .await
                .unwrap();
            if answer.status() == 429 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(60), busy)
        .await
        .expect("the upstream answers 429 while its slot is held");

    let client = &mut behind.client;
    let (spec, rows) = teacherless_run();
    let run = create(client, spec, rows.clone()).await.unwrap();

    // The run says it waits for the teacher, busy; then the upstream is let go.
    let is_waiting = |e: &pb::RunEvent| matches!(&e.kind, Some(pb::run_event::Kind::Waiting(_)));
    let waiting = tokio::time::timeout(Duration::from_secs(120), async {
        let events = follow(client, &run.id, |events| {
            events.last().is_some_and(is_waiting)
        })
        .await;
        match events.into_iter().last().and_then(|e| e.kind) {
            Some(pb::run_event::Kind::Waiting(w)) => w,
            _ => panic!("the run's events ended without a waiting event"),
        }
    })
    .await
    .expect("a waiting event within two minutes");
    assert_eq!(waiting.service, "the teacher", "{waiting:?}");
    assert_eq!(waiting.code, "RESOURCE_EXHAUSTED", "{waiting:?}");
    holder.abort();

    let events = succeeded(client, &run.id, rows.len()).await;
    assert!(
        events.iter().any(|e| matches!(&e.kind,
            Some(pb::run_event::Kind::Waiting(w)) if w.service == "the teacher" && w.recovered)),
        "the teacher's recovery is an event"
    );
    drop(upstream);
}

/// `arf serve-student RUN_ID`: the run's merged student answers an app's chat completion.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_student_serves_a_finished_runs_student_over_the_openai_api() {
    let dir = tempfile::tempdir().unwrap();
    let (suite, mut client) = suite(dir.path()).await;
    let run = create(&mut client, analyze_revise_finetune(2), sample_rows())
        .await
        .unwrap();
    let events = watch(&mut client, &run.id, 0).await;
    assert_eq!(final_state(&events), Some(pb::RunState::Succeeded));
    let merged = get_run(&mut client, &run.id).await.student_model_dir;
    assert!(!merged.is_empty(), "GetRun names the merged student");

    let http_port = free_port();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_arf"))
        .args([
            "serve-student",
            &run.id,
            "--gateway",
            &suite.gateway_endpoint(),
        ])
        .args(["--http-listen", &format!("127.0.0.1:{http_port}")])
        .args(["--listen", &format!("127.0.0.1:{}", free_port())])
        .env("RUST_LOG", "error")
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let _child = processes::KillOnDrop(child);
    let base = format!("http://127.0.0.1:{http_port}");
    let http = reqwest::Client::new();
    let ready = async {
        loop {
            if let Ok(r) = http.get(format!("{base}/health")).send().await
                && r.status() == 200
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(120), ready)
        .await
        .expect("the student's HTTP API is healthy within two minutes");
    let models: serde_json::Value = http
        .get(format!("{base}/v1/models"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(models["data"][0]["id"], merged, "{models}");
    let answer: serde_json::Value = http
        .post(format!("{base}/v1/chat/completions"))
        .json(&serde_json::json!({"messages": [{"role": "user", "content": "Summarize: the order was late."}],
                                  "max_tokens": 8}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        answer["choices"][0]["message"]["content"].is_string(),
        "{answer}"
    );

    // A run without a student yet is refused with a reason.
    let early = create(&mut client, analyze_and_revise(), sample_rows())
        .await
        .unwrap();
    watch(&mut client, &early.id, 0).await;
    let refused = std::process::Command::new(env!("CARGO_BIN_EXE_arf"))
        .args([
            "serve-student",
            &early.id,
            "--gateway",
            &suite.gateway_endpoint(),
        ])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("no merged student"), "{stderr}");
}

/// The same run with llama.cpp's `llama-server` serving SmolLM2 as the upstream: the model a
/// team already runs is the teacher, the judge and one of the two replicas.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_uses_llama_server_as_teacher_judge_and_replica() {
    use arf_common::llama_cpp::{ALIAS, LlamaServer};
    let dir = tempfile::tempdir().unwrap();
    let tiny = arf::suite::tiny_model(dir.path()).unwrap();
    let gguf = arf_common::models::resolve("smollm2").expect("scripts/fetch-model.sh smollm2");
    let upstream = LlamaServer::start(&gguf, 2).await.unwrap();
    let mut behind = Behind::start(dir.path(), &tiny, &upstream.base_url(), ALIAS).await;
    let (spec, mut rows) = teacherless_run();
    rows.truncate(8);
    let run = create(&mut behind.client, spec, rows.clone())
        .await
        .unwrap();
    succeeded(&mut behind.client, &run.id, rows.len()).await;
}

/// An editor forwarding to `base_url`, beside the usual processes: the analyzer judges through
/// it, the gateway's teacher is it, and its editor pool is an in-process replica and it.
struct Behind {
    _forwarder: Process,
    _services: Services,
    _gateway: Process,
    client: pb::pipeline_client::PipelineClient<arf_common::client::GrpcChannel>,
}

impl Behind {
    async fn start(
        dir: &std::path::Path,
        tiny: &std::path::Path,
        base_url: &str,
        model: &str,
    ) -> Self {
        let mut forwarder = Process::new(
            "editor",
            vec![
                "--backend".into(),
                "openai".into(),
                "--upstream".into(),
                base_url.into(),
                "--upstream-model".into(),
                model.into(),
            ],
        );
        forwarder.start().await;
        let mut services = Services::start(dir, tiny).await;
        services.analyzer.stop(processes::Signal::Term);
        services.analyzer = Process::new(
            "analyzer",
            vec!["--judge-endpoint".into(), forwarder.endpoint()],
        );
        services.analyzer.start().await;
        let gateway = services
            .gateway(
                &dir.join("gateway"),
                tiny,
                Some(format!(
                    "{},{}",
                    services.editor.endpoint(),
                    forwarder.endpoint()
                )),
                vec!["--teacher".into(), forwarder.endpoint()],
            )
            .await;
        let client = pb::pipeline_client::PipelineClient::new(
            arf_common::client::connect_lazy(&gateway.endpoint(), &Default::default()).unwrap(),
        );
        Self {
            _forwarder: forwarder,
            _services: services,
            _gateway: gateway,
            client,
        }
    }
}

/// Every stage from Generate on, over the sample without its summaries: the teacher writes them.
fn teacherless_run() -> (pb::RunSpec, Vec<pb::DatasetRow>) {
    let mut spec = processes::full_spec();
    spec.config
        .as_mut()
        .unwrap()
        .stages
        .insert(0, pb::Stage::Generate as i32);
    let mut rows = sample_rows();
    for row in &mut rows {
        row.teacher_summary.clear();
    }
    (spec, rows)
}

/// Follows the run to its end: it succeeded, the teacher summarized every row, and the
/// replicas revised. Returns its events.
async fn succeeded(
    client: &mut pb::pipeline_client::PipelineClient<arf_common::client::GrpcChannel>,
    run_id: &str,
    rows: usize,
) -> Vec<pb::RunEvent> {
    let events = watch(client, run_id, 0).await;
    let error = get_run(client, run_id).await.error;
    assert_eq!(
        final_state(&events),
        Some(pb::RunState::Succeeded),
        "{error}"
    );
    let generated = items(&events, pb::Stage::Generate);
    assert_eq!(generated.len(), rows, "the teacher summarized every row");
    assert!(
        generated.iter().all(|i| i.outcome != "failed"),
        "{generated:?}"
    );
    assert!(
        !revise_outcomes(&events).is_empty(),
        "the replicas revised the flagged summaries"
    );
    events
}

/// A student served behind an OpenAI-compatible API without prompt logprobs (llama.cpp's
/// `llama-server`) cannot be scored: Evaluate summarizes with it and reports its reference NLL
/// as not available, and the run succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_student_behind_an_openai_api_is_evaluated_without_reference_nll() {
    use arf_common::llama_cpp::{ALIAS, LlamaServer};
    use editor_svc::backend::openai::UpstreamConfig;
    let dir = tempfile::tempdir().unwrap();
    let (suite, mut client) = suite(dir.path()).await;

    // The model server, and an editor that forwards to it (the student endpoint).
    let gguf = arf_common::models::resolve("smollm2").expect("scripts/fetch-model.sh smollm2");
    let upstream = LlamaServer::start(&gguf, 2).await.unwrap();
    let forwarding = editor_svc::load_editor(&editor_svc::EditorConfig::upstream(
        UpstreamConfig::new(upstream.base_url(), ALIAS),
    ))
    .await
    .unwrap();
    let args = arf_common::config::ServerArgs::local();
    let student = arf_common::server::serve_loopback(
        &args,
        arf_proto::service_names::EDITOR,
        true,
        tonic::service::Routes::new(forwarding.into_server(args.max_message_bytes)),
    )
    .await
    .unwrap();

    let mut spec = spec(&[pb::Stage::Evaluate]);
    spec.config.as_mut().unwrap().evaluation = Some(pb::EvaluationConfig {
        holdout_fraction: 0.99,
        student_endpoint: student.endpoint(),
        max_summary_tokens: 12,
        ..Default::default()
    });
    let run = create(&mut client, spec, sample_rows()).await.unwrap();
    let events = watch(&mut client, &run.id, 0).await;
    assert_eq!(final_state(&events), Some(pb::RunState::Succeeded));
    let evaluations: Vec<_> = suite
        .pipeline
        .store()
        .items(&run.id)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|i| i.evaluation)
        .collect();
    assert!(evaluations.len() > 1);
    for e in &evaluations {
        assert!(!e.student.failed, "{:?}", e.student);
        assert_eq!(e.student.reference_nll, None, "no logprobs, no NLL");
    }
}
