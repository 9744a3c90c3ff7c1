//! The hostile corpus (`tests/fixtures/hostile.jsonl`, made by scripts/make-hostile-corpus.py)
//! through CreateRun, from a file and as a stream: every bad line is one bad row with its line
//! number, the good ones are stored, nothing panics, hangs or holds an 8 MiB line in memory;
//! and a dataset of nothing but bad rows is stopped after `MAX_BAD_ROWS`.

use arf_proto::v1 as pb;
use arf_proto::v1::pipeline_client::PipelineClient;

const CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/hostile.jsonl");

/// The corpus's lines that must be bad rows (see the script's comments), and its good rows.
const BAD_LINES: [u32; 15] = [2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 13, 14, 15, 16, 21];
const GOOD_ROWS: u32 = 5;

async fn gateway(
    dir: &std::path::Path,
) -> (
    arf_common::server::RunningServer,
    PipelineClient<arf_common::client::GrpcChannel>,
) {
    // A run that gets past ingest waits for its (absent) analyzer.
    crate::support::serve(&crate::support::local_config(dir)).await
}

fn spec(dataset_path: &str) -> pb::CreateRunRequest {
    pb::CreateRunRequest {
        part: Some(pb::create_run_request::Part::Spec(pb::RunSpec {
            dataset_path: dataset_path.into(),
            config: Some(pb::RunConfig {
                stages: vec![pb::Stage::Analyze as i32],
                ..Default::default()
            }),
            ..Default::default()
        })),
    }
}

/// Every bad row of a run, from its events.
async fn bad_lines(
    client: &mut PipelineClient<arf_common::client::GrpcChannel>,
    run_id: &str,
) -> Vec<pb::BadRow> {
    let mut stream = client
        .watch_run(pb::WatchRunRequest {
            run_id: run_id.into(),
            after_sequence: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let mut rows = Vec::new();
    // The run waits for its (absent) analyzer after ingest: read until the first stage event.
    while let Some(e) = stream.message().await.unwrap() {
        match e.kind {
            Some(pb::run_event::Kind::BadRow(b)) => rows.push(b),
            Some(pb::run_event::Kind::Stage(_)) => break,
            _ => {}
        }
    }
    rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hostile_corpus_gives_one_bad_row_per_bad_line_and_keeps_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let (server, mut client) = gateway(dir.path()).await;

    // The committed corpus, then a line longer than a row may be, then one more good row.
    let mut corpus = std::fs::read(CORPUS).unwrap();
    let lines = corpus.iter().filter(|&&b| b == b'\n').count() as u32;
    corpus.extend(std::iter::repeat_n(
        b'x',
        arf_common::dataset::MAX_LINE_BYTES + 1,
    ));
    corpus.push(b'\n');
    corpus.extend(
        br#"{"id":"after-the-long-line","channel":"chat","turns":[{"role":"agent","text":"Fixed."}],"summary":"Fixed."}"#,
    );
    let path = dir.path().join("hostile.jsonl");
    std::fs::write(&path, &corpus).unwrap();

    let run = client
        .create_run(futures::stream::iter([spec(&path.display().to_string())]))
        .await
        .unwrap()
        .into_inner();
    let counts = run.counts.unwrap();
    let mut expected: Vec<u32> = BAD_LINES.to_vec();
    expected.push(lines + 1);
    let bad = bad_lines(&mut client, &run.id).await;
    // Duplicates are found when their batch is stored, so they come later in the events.
    let mut got: Vec<u32> = bad.iter().map(|b| b.line).collect();
    got.sort_unstable();
    assert_eq!(got, expected, "{bad:#?}");
    assert_eq!(counts.rows, GOOD_ROWS + 1, "{counts:?}");
    assert_eq!(counts.bad_rows, expected.len() as u32);
    for b in &bad {
        assert!(!b.message.is_empty(), "{b:?}");
    }
    let message = |line: u32| &bad.iter().find(|b| b.line == line).unwrap().message;
    assert!(message(2).contains("not UTF-8"), "{}", message(2));
    assert!(
        message(lines + 1).contains("more than a row may be"),
        "{}",
        message(lines + 1)
    );
    assert!(message(11).contains("duplicate"), "{}", message(11));
    server.shutdown().await.unwrap();
}

/// A file that is all bad rows (the wrong file) stops after MAX_BAD_ROWS with a clear error,
/// rather than filling the run's events with millions of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_of_nothing_but_bad_rows_is_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let (server, mut client) = gateway(dir.path()).await;
    let path = dir.path().join("not-a-dataset.csv");
    let mut text = String::from("id,channel,text\n");
    for i in 0..arf_common::bounds::MAX_BAD_ROWS + 50 {
        text.push_str(&format!("{i},chat,hello\n"));
    }
    std::fs::write(&path, text).unwrap();
    let refused = client
        .create_run(futures::stream::iter([spec(&path.display().to_string())]))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
    assert!(
        refused.message().contains("is this the right file"),
        "{}",
        refused.message()
    );
    server.shutdown().await.unwrap();
}
