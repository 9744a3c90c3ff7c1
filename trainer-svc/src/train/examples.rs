//! Where a training run finds its examples. A job's set can be larger than memory (a gateway
//! run of 200,000 conversations), so the trainer does not hold it: it reads the file once to
//! check every row and note where each one lies, then reads back the few rows each batch needs.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::FileExt as _;
use std::path::Path;

use arf_common::dataset::{JsonlReader, OnBadRow, Record, read_jsonl_file};

use super::TrainError;
use super::data::Example;

/// A training set, read one example at a time in any order.
pub trait ExampleSource {
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    fn get(&self, index: usize) -> Result<Example, TrainError>;
}

impl ExampleSource for Vec<Example> {
    fn len(&self) -> usize {
        self.as_slice().len()
    }

    fn get(&self, index: usize) -> Result<Example, TrainError> {
        Ok(self[index].clone())
    }
}

/// A JSONL file of dataset records, checked whole when opened, read back a row at a time.
/// It holds 16 bytes per row, and its descriptor: a file renamed over it while training does
/// not change what is read.
pub struct ExampleFile {
    file: File,
    source: String,
    rows: Vec<RowSpan>,
}

/// Where one row lies in the file: from the end of the row before it (blank lines included)
/// to the end of its own line.
#[derive(Clone, Copy)]
struct RowSpan {
    start: u64,
    len: u32,
    line: u32,
}

impl ExampleFile {
    /// Opens `path` and checks every row: a row without a summary, or one that does not parse,
    /// fails with its file, line and field.
    pub fn open(path: &Path) -> Result<Self, TrainError> {
        let file = File::open(path).map_err(|e| TrainError::io(path, e))?;
        Self::from_opened(file, path)
    }

    /// [`ExampleFile::open`] for a file already open (checked as it was opened; `path` names
    /// it in errors).
    pub fn from_opened(file: File, path: &Path) -> Result<Self, TrainError> {
        let source = path.display().to_string();
        let scan = file.try_clone().map_err(|e| TrainError::io(path, e))?;
        let mut reader = JsonlReader::new(
            Counting::new(BufReader::new(scan)),
            source.clone(),
            OnBadRow::Stop,
        );
        let mut rows = Vec::new();
        loop {
            let start = reader.get_ref().position;
            let Some(row) = reader.next() else { break };
            let (line, record) = row.map_err(|e| TrainError::Data(e.to_string()))?;
            example(&source, line, record)?;
            let end = reader.get_ref().position;
            rows.push(RowSpan {
                start,
                len: u32::try_from(end - start).map_err(|_| {
                    TrainError::Data(format!("{source}:{line}: the row is larger than 4 GiB"))
                })?,
                line: line as u32,
            });
        }
        Ok(Self { file, source, rows })
    }
}

impl ExampleSource for ExampleFile {
    fn len(&self) -> usize {
        self.rows.len()
    }

    fn get(&self, index: usize) -> Result<Example, TrainError> {
        let row = self.rows[index];
        let changed = |why: String| {
            TrainError::Data(format!(
                "{}:{}: the file changed while training ({why}); train from a file no one writes to",
                self.source, row.line
            ))
        };
        let mut bytes = vec![0u8; row.len as usize];
        self.file
            .read_exact_at(&mut bytes, row.start)
            .map_err(|e| changed(e.to_string()))?;
        // The first row starts at the file's start, where a byte-order mark may be: the reader
        // strips one on its first line, as the scan's reader did.
        let mut reader = JsonlReader::new(&bytes[..], self.source.clone(), OnBadRow::Stop);
        match reader.next() {
            Some(Ok((_, record))) => example(&self.source, row.line as usize, record),
            Some(Err(e)) => Err(changed(e.to_string())),
            None => Err(changed("the row is gone".into())),
        }
    }
}

/// A reader that counts the bytes taken from it.
struct Counting<R> {
    inner: R,
    position: u64,
}

impl<R> Counting<R> {
    fn new(inner: R) -> Self {
        Self { inner, position: 0 }
    }
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.position += n as u64;
        Ok(n)
    }
}

impl<R: BufRead> BufRead for Counting<R> {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        self.inner.fill_buf()
    }

    fn consume(&mut self, amount: usize) {
        self.position += amount as u64;
        self.inner.consume(amount);
    }
}

/// Reads every training example of a JSONL file into memory (the command line's small sets
/// and the tests); errs with the first bad row (file, line and field).
pub fn read_examples(path: &Path) -> Result<Vec<Example>, TrainError> {
    let source = path.display().to_string();
    read_jsonl_file(path, OnBadRow::Stop)
        .map_err(|e| TrainError::Data(e.to_string()))?
        .map(|row| {
            let (line, record) = row.map_err(|e| TrainError::Data(e.to_string()))?;
            example(&source, line, record)
        })
        .collect()
}

/// A dataset record as an example: it needs a summary to learn.
fn example(source: &str, line: usize, record: Record) -> Result<Example, TrainError> {
    let summary = record.summary.ok_or_else(|| {
        TrainError::Data(format!(
            "{source}:{line}: field `summary`: a training row needs a summary"
        ))
    })?;
    Ok(Example {
        conversation: record.conversation,
        summary,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, summary: &str) -> String {
        format!(
            r#"{{"id":"{id}","channel":"chat","turns":[{{"role":"customer","text":"hello {id}"}}],"summary":"{summary}"}}"#
        )
    }

    #[test]
    fn rows_read_back_in_any_order_are_the_rows_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("train.jsonl");
        // A byte-order mark, blank lines and a multi-byte character between the rows.
        let text = format!(
            "\u{feff}{}\n\n{}\n   \n{}",
            row("a", "first"),
            row("b", "zweite — ü"),
            row("c", "third, no newline at the end")
        );
        std::fs::write(&path, text).unwrap();
        let file = ExampleFile::open(&path).unwrap();
        let whole = read_examples(&path).unwrap();
        assert_eq!(file.len(), 3);
        for i in [2, 0, 1, 2] {
            assert_eq!(file.get(i).unwrap(), whole[i]);
        }
        assert_eq!(file.get(1).unwrap().summary, "zweite — ü");
    }

    #[test]
    fn a_row_without_a_summary_is_refused_with_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("train.jsonl");
        let no_summary = r#"{"id":"x","channel":"chat","turns":[{"role":"customer","text":"hi"}]}"#;
        std::fs::write(&path, format!("{}\n\n{no_summary}\n", row("a", "s"))).unwrap();
        let err = ExampleFile::open(&path).err().unwrap().to_string();
        assert!(err.contains("train.jsonl:3: field `summary`"), "{err}");
    }

    #[test]
    fn a_file_rewritten_in_place_while_training_fails_with_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("train.jsonl");
        std::fs::write(&path, format!("{}\n{}\n", row("a", "s"), row("b", "t"))).unwrap();
        let file = ExampleFile::open(&path).unwrap();
        std::fs::write(&path, "{}").unwrap();
        let err = file.get(1).err().unwrap().to_string();
        assert!(
            err.contains("train.jsonl:2: the file changed while training"),
            "{err}"
        );
    }
}
