//! The real model, through the real code paths: SmolLM2-135M-Instruct (Q4_1 GGUF, fetched once
//! by `scripts/fetch-model.sh smollm2`, which this test runs when the file is missing) as the
//! editor that revises two flagged summaries of the bundled sample best-of-4, and as the GGUF
//! base the trainer fine-tunes for a few steps; the merged student is then served by the editor,
//! writes a summary and scores a human reference (Editor.Score). Random weights prove plumbing; this proves the plumbing carries a model.

use std::path::PathBuf;

use crate::support::*;
use arf::suite::{Suite, SuiteConfig};
use arf_common::client::{ClientOptions, connect_lazy};
use arf_common::config::ServerArgs;
use arf_proto::v1 as pb;
use arf_proto::v1::editor_client::EditorClient;

/// The cached model, fetched through the users' own command when it is not there yet.
fn smollm2() -> PathBuf {
    if let Ok(path) = arf::cli::models::resolve("smollm2") {
        return path;
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/fetch-model.sh");
    let out = std::process::Command::new("bash")
        .args([script, "smollm2"])
        .output()
        .expect("running scripts/fetch-model.sh");
    assert!(
        out.status.success(),
        "fetching SmolLM2 failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let path = PathBuf::from(
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .last()
            .unwrap()
            .trim(),
    );
    assert!(path.is_file(), "{}", path.display());
    path
}

/// Two rows of the sample whose teacher summaries the rule detectors flag surely (a chatty
/// preamble; a refund the agent never gave), both for training.
fn two_flagged_rows() -> Vec<pb::DatasetRow> {
    let wanted = ["chat-001", "chat-003"];
    let rows: Vec<pb::DatasetRow> = sample_rows()
        .into_iter()
        .filter(|r| wanted.contains(&r.conversation.as_ref().unwrap().id.as_str()))
        .collect();
    assert_eq!(rows.len(), 2);
    rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smollm2_revises_best_of_4_trains_from_its_gguf_and_the_student_summarizes_and_scores() {
    let gguf = smollm2();
    let dir = tempfile::tempdir().unwrap();
    let config = SuiteConfig {
        server: ServerArgs::local(),
        data_dir: dir.path().to_path_buf(),
        editor_model: Some(gguf.clone()),
        student_base: Some(gguf.clone()),
        editor_replicas: 1,
    };
    let suite = Suite::start(config).await.unwrap();
    let mut client = arf_proto::v1::pipeline_client::PipelineClient::new(
        connect_lazy(&suite.gateway_endpoint(), &ClientOptions::default()).unwrap(),
    );

    let rows = two_flagged_rows();
    let mut spec = spec(&[pb::Stage::Analyze, pb::Stage::Revise, pb::Stage::Finetune]);
    let c = spec.config.as_mut().unwrap();
    c.revision_rounds = 1;
    c.revision_candidates = 4;
    c.revision_max_tokens = 128;
    c.on_unimproved = pb::UnimprovedPolicy::KeepOriginal as i32;
    c.training = Some(pb::Hyperparameters {
        max_steps: 2,
        learning_rate: 1e-4,
        max_seq_len: 384,
        ..Default::default()
    });
    let run = create(&mut client, spec, rows.clone()).await.unwrap();
    let events = watch(&mut client, &run.id, 0).await;
    let got = get_run(&mut client, &run.id).await;
    assert_eq!(
        final_state(&events),
        Some(pb::RunState::Succeeded),
        "{}",
        got.error
    );
    let counts = got.counts.unwrap();
    let analyses: Vec<String> = items(&events, pb::Stage::Analyze)
        .iter()
        .map(|i| format!("{} {} {}", i.conversation_id, i.outcome, i.findings))
        .collect();
    assert_eq!(
        counts.flagged, 2,
        "both summaries are flagged: {analyses:?}"
    );
    assert_eq!(
        revise_outcomes(&events).values().sum::<usize>(),
        2,
        "both were revised"
    );

    // The analyzer's rating judge on the real model (the suite's judge endpoint is the SmolLM2
    // editor): constrained to {"rating": n}, it answers with a rating in range.
    let mut analyzer = arf_proto::v1::analyzer_client::AnalyzerClient::new(
        connect_lazy(&suite.analyzer_endpoint(), &ClientOptions::default()).unwrap(),
    );
    let rated = analyzer
        .rate(pb::RateRequest {
            request_id: "rate".into(),
            conversation: rows[0].conversation.clone(),
            summary: rows[0].teacher_summary.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        rated.failure.is_none() && (1..=5).contains(&rated.rating),
        "{rated:?}"
    );

    // A constrained generation ends when its JSON closes. SmolLM2's grammar ends with
    // `<|endoftext|>`, its chat with `<|im_end|>`: mistral.rs 0.8.1 kept generating the grammar's
    // end token, which is no stop token, to the budget (patches/README.md).
    let mut suite_editor = EditorClient::new(
        connect_lazy(&suite.editor_endpoints()[0], &ClientOptions::default()).unwrap(),
    );
    let constrained = suite_editor
        .generate(pb::GenerateRequest {
            messages: vec![pb::ChatMessage {
                role: "user".into(),
                content: "Name one fruit, as JSON.".into(),
            }],
            params: Some(pb::GenerationParams {
                max_tokens: 200,
                ..Default::default()
            }),
            json_schema: r#"{"type": "object", "properties": {"fruit": {"type": "string", "maxLength": 20}}, "required": ["fruit"], "additionalProperties": false}"#.into(),
        })
        .await
        .unwrap()
        .into_inner();
    let usage = constrained.usage.unwrap_or_default();
    assert!(
        constrained.finish_reason == "stop" && usage.output_tokens < 40,
        "{} after {} tokens: {:?}",
        constrained.finish_reason,
        usage.output_tokens,
        constrained.text
    );
    let fruit: serde_json::Value = serde_json::from_str(&constrained.text)
        .unwrap_or_else(|e| panic!("{e}: {:?}", constrained.text));
    assert!(fruit["fruit"].is_string(), "{fruit}");

    // The editor's revisions are real text, not the teacher's summary back.
    let items = suite.pipeline.store().items(&run.id).await.unwrap();
    for item in &items {
        if item.revision_outcome == Some(gateway::store::RevisionOutcome::Accepted) {
            let revised = item.final_summary.as_deref().unwrap();
            assert!(
                revised.split_whitespace().count() >= 5 && revised != item.teacher_summary,
                "{revised:?}"
            );
        }
    }

    // A pretrained model starts training far below a random one's ln(49152) = 10.8.
    let losses: Vec<f64> = events
        .iter()
        .filter_map(|e| match &e.kind {
            Some(pb::run_event::Kind::Training(j)) => match &j.kind {
                Some(pb::job_event::Kind::Step(s)) => Some(s.loss),
                _ => None,
            },
            _ => None,
        })
        .collect();
    assert_eq!(losses.len(), 2);
    assert!(
        losses.iter().all(|l| l.is_finite() && *l < 6.0),
        "the dequantized GGUF is a working model: {losses:?}"
    );

    // The merged student (a Hugging Face directory) serves and summarizes.
    let record = suite.pipeline.store().run(&run.id).await.unwrap().unwrap();
    let merged = PathBuf::from(&record.student_model_dir);
    for f in [
        "config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "model.safetensors",
    ] {
        assert!(
            merged.join(f).is_file(),
            "{f} missing from {}",
            merged.display()
        );
    }
    let student =
        arf::student_host::LocalStudentHost::new(ServerArgs::local().max_message_bytes, dir.path());
    let channel = gateway::pipeline::StudentHost::serve(&student, &merged)
        .await
        .unwrap();
    let mut editor = EditorClient::new(channel);
    let conversation = rows[0].conversation.clone().unwrap();
    let prompt = arf_common::dataset::summarize_user_prompt(
        &arf_common::dataset::conversation_from_wire(Some(conversation), "c").unwrap(),
    );
    let request = pb::GenerateRequest {
        messages: vec![
            pb::ChatMessage {
                role: "system".into(),
                content: arf_common::dataset::SUMMARIZE_SYSTEM_PROMPT.into(),
            },
            pb::ChatMessage {
                role: "user".into(),
                content: prompt,
            },
        ],
        params: Some(pb::GenerationParams {
            max_tokens: 48,
            temperature: Some(0.0),
            top_p: None,
            stop: vec![],
        }),
        json_schema: String::new(),
    };
    let summary = editor
        .generate(request.clone())
        .await
        .unwrap()
        .into_inner()
        .text;
    let words = summary
        .split_whitespace()
        .filter(|w| w.chars().any(char::is_alphabetic))
        .count();
    assert!(words >= 5, "the student writes words: {summary:?}");
    eprintln!("student summary: {summary}");

    // It gives the human reference a likelihood: every token scored, and a pretrained model
    // far more sure of a good summary than a random one (ln(49152) = 10.8 nats a token).
    let reference = rows[0].references[0].clone();
    let scored = editor
        .score(pb::ScoreRequest {
            messages: request.messages.clone(),
            reply: reference.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        scored.tokens.len() > reference.split_whitespace().count()
            && scored.tokens.iter().all(|t| t.logprob <= 0.0),
        "{scored:?}"
    );
    assert!(
        scored.mean_nll > 0.1 && scored.mean_nll < 5.0,
        "reference NLL {}",
        scored.mean_nll
    );
    eprintln!("reference NLL: {:.3} nats/token", scored.mean_nll);

    // Issue 39: the student as one GGUF file, through the users' command; llama.cpp serves it
    // and writes, greedy, what the editor wrote from the merged folder.
    let student_gguf = dir.path().join("student-f16.gguf");
    run_to_success(
        std::process::Command::new(env!("CARGO_BIN_EXE_arf"))
            .args([
                "export-model",
                &run.id,
                "--gateway",
                &suite.gateway_endpoint(),
            ])
            .args(["--format", "gguf", "--quant", "f16", "-o"])
            .arg(&student_gguf),
    );
    suite.shutdown().await.unwrap();
    let llama = llama_cpp_greedy(&student_gguf, &request).await;
    eprintln!("llama.cpp on the exported GGUF: {llama}");
    assert_eq!(llama, summary, "the same greedy text from llama.cpp");
    // Read back by llama.cpp's own Python reader: the base's tokenizer and template, every
    // tensor, norms in f32; and a 4-bit file the same way.
    check_student_gguf(&student_gguf, &gguf, 1, "F16");
    let q4 = dir.path().join("student-q4_k.gguf");
    trainer_svc::model::gguf::write_gguf(
        &merged,
        &gguf,
        trainer_svc::model::gguf::GgufQuant::Q4K,
        &q4,
    )
    .unwrap();
    check_student_gguf(&q4, &gguf, 15, "Q4_K");
}

/// `request`'s greedy reply from llama.cpp's `llama-server` serving `gguf`.
async fn llama_cpp_greedy(gguf: &std::path::Path, request: &pb::GenerateRequest) -> String {
    use arf_common::llama_cpp::{ALIAS, LlamaServer};
    let server = LlamaServer::start(gguf, 1).await.unwrap();
    let messages: Vec<serde_json::Value> = request
        .messages
        .iter()
        .map(|m| serde_json::json!({"role": m.role, "content": m.content}))
        .collect();
    let max_tokens = request.params.as_ref().unwrap().max_tokens;
    let reply: serde_json::Value = reqwest::Client::new()
        .post(format!("{}/chat/completions", server.base_url()))
        .json(&serde_json::json!({
            "model": ALIAS, "messages": messages, "max_tokens": max_tokens, "temperature": 0.0,
        }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    reply["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_else(|| panic!("{reply}"))
        .to_string()
}

/// clients/gguf-python/check_student_gguf.py on `student` against its `base` (Python:
/// `ARF_GGUF_PYTHON`, or a virtual environment made from that folder on first use).
fn check_student_gguf(
    student: &std::path::Path,
    base: &std::path::Path,
    file_type: u32,
    matrix: &str,
) {
    let python = python::python_with(
        "gguf",
        "ARF_GGUF_PYTHON",
        "gguf-python-venv",
        Some("gguf-python/requirements.txt"),
    );
    let output = std::process::Command::new(python)
        .arg(std::path::Path::new(python::CLIENTS_DIR).join("gguf-python/check_student_gguf.py"))
        .args([student, base])
        .args([file_type.to_string(), matrix.to_string()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.ends_with("ok\n"),
        "the gguf reader's check of {} failed:\n{stdout}\n{}",
        student.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    eprint!("{stdout}");
}

/// The trainer rebuilds the GGUF's tokenizer as mistral.rs does: the same text gives the same
/// ids in both, special tokens and the chat template's markers included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_trainer_tokenizes_the_gguf_as_the_editor_does() {
    let gguf = smollm2();
    let format = trainer_svc::train::data::ChatFormat::for_base(&gguf).unwrap();
    let service = editor_svc::load_editor(&editor_svc::EditorConfig::new(&gguf))
        .await
        .unwrap();
    let editor = service.editor().unwrap();
    let texts = [
        "Customer: my order #48213 hasn't arrived!\nAgent: I'm sorry, it ships tomorrow.",
        "<|im_start|>user\nSummarize this, please.<|im_end|>\n<|im_start|>assistant\n",
        "  Ünïcödé, emoji 🙂 and   spaces\t\ttabs.",
    ];
    for text in texts {
        let ours = format.encode_text(text).unwrap();
        let theirs = editor_svc::MistralBackend::of(editor.backend().as_ref())
            .expect("a mistral.rs editor")
            .model()
            .tokenize(
                either::Either::Right(text.to_string()),
                None,
                false,
                false,
                None,
            )
            .await
            .unwrap();
        assert_eq!(ours, theirs, "{text:?}");
    }
}
