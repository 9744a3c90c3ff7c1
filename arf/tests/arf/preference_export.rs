//! Issue 39: the preference pairs that revision makes, out for DPO. Each accepted revision
//! (here the ones repaired by rule: the tiny random-weight editor writes none the gate takes)
//! is one (chosen: the revision, rejected: the teacher's summary) pair with the prompt the
//! student is trained with, in TRL's conversational layout and in OpenAI's preference
//! fine-tuning JSONL; Hugging Face `datasets`' own JSON loader reads both back (Python:
//! `ARF_DATASETS_PYTHON`, or a virtual environment made from clients/dpo-datasets on first use).

use std::process::Command;

use crate::support::*;
use arf_common::dataset::summarize_user_prompt;
use arf_proto::v1 as pb;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_accepted_revision_is_a_preference_pair_that_datasets_loads() {
    let dir = tempfile::tempdir().unwrap();
    let (suite, mut client) = suite(dir.path()).await;
    let run = crate::pipeline::run_with_rule_repairs(&mut client).await;
    let items = suite.pipeline.store().items(&run.id).await.unwrap();
    let revised: Vec<_> = items
        .iter()
        .filter(|i| i.revision_outcome.is_some_and(|o| o.is_revised()))
        .collect();
    assert!(!revised.is_empty(), "the rules repaired some summaries");

    let dpo = export_lines(&mut client, &run.id, pb::ExportFormat::Dpo).await;
    assert_eq!(dpo.len(), revised.len(), "one pair per accepted revision");
    for (pair, item) in dpo.iter().zip(&revised) {
        assert_eq!(pair["id"], item.conversation.id.as_str());
        assert_eq!(
            pair["chosen"][0]["content"],
            item.final_summary.as_deref().unwrap()
        );
        assert_eq!(
            pair["rejected"][0]["content"],
            item.teacher_summary.as_str()
        );
        assert_ne!(pair["chosen"], pair["rejected"]);
        // Repaired by rule: no candidates beaten, only the teacher's summary.
        assert_eq!(pair["rejected_source"], "teacher");
        assert_eq!(
            pair["prompt"][1]["content"],
            summarize_user_prompt(&item.conversation),
            "the prompt the student is trained with"
        );
    }
    let openai = export_lines(&mut client, &run.id, pb::ExportFormat::OpenaiPreference).await;
    assert_eq!(openai.len(), dpo.len());
    assert_eq!(openai[0]["input"]["messages"], dpo[0]["prompt"]);
    assert_eq!(openai[0]["preferred_output"], dpo[0]["chosen"]);
    assert_eq!(openai[0]["non_preferred_output"], dpo[0]["rejected"]);
    suite.shutdown().await.unwrap();

    // What a DPO trainer is given: the files, read by `datasets`.
    let write = |name: &str, lines: &[serde_json::Value]| {
        let path = dir.path().join(name);
        let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
        std::fs::write(&path, text).unwrap();
        path
    };
    let (dpo_file, openai_file) = (write("dpo.jsonl", &dpo), write("openai.jsonl", &openai));
    let python = python::python_with(
        "datasets",
        "ARF_DATASETS_PYTHON",
        "dpo-datasets-venv",
        Some("dpo-datasets/requirements.txt"),
    );
    let output = Command::new(python)
        .arg(
            std::path::Path::new(python::CLIENTS_DIR)
                .join("dpo-datasets/check_preference_export.py"),
        )
        .arg(&dpo_file)
        .arg(&openai_file)
        .arg(dpo.len().to_string())
        // Its cache in the test's folder, and nothing fetched from the Hub.
        .env("HF_DATASETS_CACHE", dir.path().join("hf-cache"))
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.ends_with("ok\n"),
        "datasets' check failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
