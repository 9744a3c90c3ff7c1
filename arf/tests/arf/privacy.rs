//! Issue 39: `privacy: SCRUB_PII`. Planted personal data (a customer's name, email, phone,
//! card, account number and street address, in the turns, the teacher summary and a
//! reference) goes through a full run on tiny models, every service a process of its own
//! logging at debug level; none of the values is anywhere afterwards: not in the gateway's
//! store, the trainer's state folder (its training upload, checkpoints, adapter, merged
//! student), any export, the report, or any service's log. The report counts what was
//! replaced, and the texts carry the typed placeholders.

use std::path::Path;

use crate::support::processes::{Services, full_spec};
use crate::support::*;
use arf_common::client::{ClientOptions, connect_lazy};
use arf_proto::v1 as pb;
use arf_proto::v1::pipeline_client::PipelineClient;

/// The planted values, as written, and in the forms a leak might take (digits alone).
const NEEDLES: &[&str] = &[
    "Rosalind",
    "rosalind.kettering@example.org",
    "+44 (20) 7946 0958",
    "2079460958",
    "4111 1111 1111 1111",
    "4111111111111111",
    "987654321",
    "12 Juniper Lane",
];

fn planted(mut row: pb::DatasetRow) -> pb::DatasetRow {
    let conversation = row.conversation.as_mut().unwrap();
    conversation.turns.insert(
        0,
        pb::Turn {
            role: pb::Role::Customer as i32,
            text: "My name is Rosalind, write to rosalind.kettering@example.org or call \
                   +44 (20) 7946 0958. Card 4111 1111 1111 1111, Account number 987654321, \
                   I live at 12 Juniper Lane."
                .into(),
        },
    );
    conversation.turns.insert(
        1,
        pb::Turn {
            role: pb::Role::Agent as i32,
            text: "Hi Rosalind, thanks, I have your details.".into(),
        },
    );
    row.teacher_summary = format!(
        "Rosalind (rosalind.kettering@example.org, +44 (20) 7946 0958) wrote in. {}",
        row.teacher_summary
    );
    row.references
        .push("Rosalind gave card 4111 1111 1111 1111 and asked for help.".into());
    row
}

/// Every file under `dir` holding one of the needles: (file, needle).
fn leaks(dir: &Path) -> Vec<(String, &'static str)> {
    let mut found = Vec::new();
    for entry in walk(dir) {
        let bytes = std::fs::read(&entry).unwrap_or_default();
        for needle in NEEDLES {
            if bytes.windows(needle.len()).any(|w| w == needle.as_bytes()) {
                found.push((entry.display().to_string(), *needle));
            }
        }
    }
    found
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scrubbed_personal_data_is_nowhere_after_a_full_run() {
    let models = tempfile::tempdir().unwrap();
    let tiny = arf::suite::tiny_model(models.path()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let rows: Vec<pb::DatasetRow> = sample_rows().into_iter().map(planted).collect();

    // The search finds the values where they are: in the rows as uploaded.
    let uploaded = tempfile::tempdir().unwrap();
    std::fs::write(uploaded.path().join("rows.txt"), format!("{rows:?}")).unwrap();
    assert_eq!(
        leaks(uploaded.path()).len(),
        NEEDLES.len() - 2,
        "digits-only forms aside"
    );

    let services = Services::start_logged(dir.path(), &tiny, Some(&logs)).await;
    let mut gateway = services.gateway_process(&dir.path().join("gateway"), &tiny, None, vec![]);
    gateway.log = Some(logs.join("gateway.log"));
    gateway.start().await;
    let mut client =
        PipelineClient::new(connect_lazy(&gateway.endpoint(), &ClientOptions::default()).unwrap());
    let mut spec = full_spec();
    spec.config
        .as_mut()
        .unwrap()
        .set_privacy(pb::Privacy::ScrubPii);
    let run = create(&mut client, spec, rows.clone()).await.unwrap();
    let result = processes::result(&mut client, &run.id).await;

    // What leaves through the API, kept beside the services' files to be searched with them.
    let out = dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("export.plain.jsonl"), &result.export).unwrap();
    for format in [pb::ExportFormat::OpenaiChat, pb::ExportFormat::Dpo] {
        let lines = export_lines(&mut client, &run.id, format).await;
        std::fs::write(
            out.join(format!("export.{format:?}.json")),
            format!("{lines:?}"),
        )
        .unwrap();
    }
    let report = get_report(&mut client, &run.id).await;
    std::fs::write(out.join("report.md"), &report.markdown).unwrap();
    let events = follow(&mut client, &run.id, |_| false).await;
    std::fs::write(out.join("events.txt"), format!("{events:?}")).unwrap();
    gateway.stop(processes::Signal::Term);
    drop(services);

    // The logs were written, at debug level, and name the run.
    let gateway_log = std::fs::read_to_string(logs.join("gateway.log")).unwrap();
    assert!(gateway_log.contains(&run.id), "{gateway_log:.2000}");
    assert_eq!(
        leaks(dir.path()),
        Vec::<(String, &str)>::new(),
        "personal data left the scrub"
    );

    // Counted per kind (every planted value in every row; the sample has its own too), and
    // replaced by placeholders the student learns from.
    let n = rows.len() as u32;
    let counts = &report.pii_scrubbed;
    for (kind, at_least) in [
        ("name", 4 * n),
        ("email", 2 * n),
        ("phone", 2 * n),
        ("card", 2 * n),
        ("account", n),
        ("address", n),
    ] {
        assert!(
            counts.get(kind).copied().unwrap_or(0) >= at_least,
            "{kind}: {counts:?}"
        );
    }
    assert!(report.markdown.contains("Personal data was replaced"));
    let export = String::from_utf8(result.export).unwrap();
    for placeholder in [
        "[NAME]",
        "[EMAIL]",
        "[PHONE]",
        "[CARD]",
        "[ACCOUNT]",
        "[ADDRESS]",
    ] {
        assert!(
            export.contains(placeholder),
            "{placeholder}: {export:.1500}"
        );
    }
}
