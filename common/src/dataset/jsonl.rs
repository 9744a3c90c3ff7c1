use std::fmt;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

use super::Record;

/// What a reader does when a row does not parse or validate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnBadRow {
    /// Report the row and go on with the next one.
    Skip,
    /// Report the row and end the stream.
    Stop,
}

/// A row that could not be read: where it is and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadRow {
    /// The file (or stream) name, for the message.
    pub source: String,
    /// 1-based line number.
    pub line: usize,
    /// Path of the offending field (`turns[2].role`), empty when the line is not JSON at all.
    pub field: String,
    pub message: String,
}

impl fmt::Display for BadRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            write!(f, "{}:{}: {}", self.source, self.line, self.message)
        } else {
            write!(
                f,
                "{}:{}: field `{}`: {}",
                self.source, self.line, self.field, self.message
            )
        }
    }
}

impl std::error::Error for BadRow {}

/// Streams records from JSONL, one line at a time (files can be larger than memory).
/// Blank lines are skipped. Yields `(line_number, record)` or a [`BadRow`].
pub struct JsonlReader<R> {
    // Bytes, not `lines()`: a line that is not UTF-8 is one bad row, not the end of the file.
    lines: std::io::Split<R>,
    source: String,
    line: usize,
    policy: OnBadRow,
    stopped: bool,
}

impl<R: BufRead> JsonlReader<R> {
    pub fn new(reader: R, source: impl Into<String>, policy: OnBadRow) -> Self {
        Self {
            lines: reader.split(b'\n'),
            source: source.into(),
            line: 0,
            policy,
            stopped: false,
        }
    }

    fn bad(&self, field: String, message: String) -> BadRow {
        BadRow {
            source: self.source.clone(),
            line: self.line,
            field,
            message,
        }
    }

    fn parse(&self, text: &str) -> Result<Record, BadRow> {
        let de = &mut serde_json::Deserializer::from_str(text);
        let record: Record = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let field = if path == "." { String::new() } else { path };
            let inner = e.into_inner();
            // serde names a missing field only in its message; lift it into `field`.
            let field = if field.is_empty() {
                missing_field(&inner.to_string()).unwrap_or_default()
            } else {
                field
            };
            self.bad(field, strip_position(&inner.to_string()))
        })?;
        record
            .validate()
            .map_err(|(field, message)| self.bad(field, message))?;
        Ok(record)
    }
}

impl<R: BufRead> Iterator for JsonlReader<R> {
    type Item = Result<(usize, Record), BadRow>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.stopped {
            return None;
        }
        loop {
            let bytes = match self.lines.next()? {
                Ok(bytes) => bytes,
                Err(e) => {
                    self.line += 1;
                    self.stopped = true;
                    return Some(Err(
                        self.bad(String::new(), format!("cannot read line: {e}"))
                    ));
                }
            };
            self.line += 1;
            let item = match std::str::from_utf8(&bytes) {
                Ok(text) if text.trim().is_empty() => continue,
                Ok(text) => self.parse(text).map(|r| (self.line, r)),
                Err(e) => Err(self.bad(
                    String::new(),
                    format!(
                        "the line is not UTF-8 text (invalid byte at column {})",
                        e.valid_up_to() + 1
                    ),
                )),
            };
            if item.is_err() && self.policy == OnBadRow::Stop {
                self.stopped = true;
            }
            return Some(item);
        }
    }
}

/// Opens a JSONL file for streaming; the error names the file when it cannot be opened.
pub fn read_jsonl_file(
    path: &Path,
    policy: OnBadRow,
) -> std::io::Result<JsonlReader<BufReader<File>>> {
    let file = File::open(path).map_err(|e| {
        std::io::Error::new(e.kind(), format!("cannot open {}: {e}", path.display()))
    })?;
    Ok(JsonlReader::new(
        BufReader::new(file),
        path.display().to_string(),
        policy,
    ))
}

/// A JSONL file's rows read on a blocking thread, as an async stream that holds at most
/// `read_ahead` rows (the reader waits while the consumer is behind). The consumer dropping the
/// stream stops the reading.
pub fn stream_jsonl_file(
    path: &Path,
    policy: OnBadRow,
    read_ahead: usize,
) -> std::io::Result<tokio_stream::wrappers::ReceiverStream<Result<(usize, Record), BadRow>>> {
    let reader = read_jsonl_file(path, policy)?;
    let (tx, rx) = tokio::sync::mpsc::channel(read_ahead.max(1));
    tokio::task::spawn_blocking(move || {
        for row in reader {
            if tx.blocking_send(row).is_err() {
                return;
            }
        }
    });
    Ok(tokio_stream::wrappers::ReceiverStream::new(rx))
}

fn missing_field(message: &str) -> Option<String> {
    let rest = message.strip_prefix("missing field `")?;
    Some(rest[..rest.find('`')?].to_string())
}

/// serde_json appends " at line 1 column 57": the column is useful, the "line 1" is misleading
/// (it is the line within the row), so keep only the column.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => {
            let column = message[i..].split(" column ").nth(1).unwrap_or("");
            format!("{} (column {column})", &message[..i])
        }
        None => message.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str =
        r#"{"id":"a","channel":"chat","turns":[{"role":"customer","text":"hi"}],"summary":"s"}"#;

    fn read(text: &str, policy: OnBadRow) -> Vec<Result<(usize, Record), BadRow>> {
        JsonlReader::new(text.as_bytes(), "rows.jsonl", policy).collect()
    }

    #[test]
    fn a_line_that_is_not_utf8_is_one_bad_row() {
        let mut bytes = format!("{GOOD}\n").into_bytes();
        bytes.extend_from_slice(b"{\"id\":\"\xff\xfe\"}\r\n");
        bytes.extend_from_slice(format!("{GOOD}\r\n").as_bytes());
        let rows: Vec<_> = JsonlReader::new(&bytes[..], "rows.jsonl", OnBadRow::Skip).collect();
        assert_eq!(rows.len(), 3, "{rows:?}");
        let err = rows[1].as_ref().unwrap_err();
        assert_eq!(err.line, 2);
        assert!(err.message.contains("not UTF-8"), "{err}");
        assert_eq!(rows[2].as_ref().unwrap().0, 3, "the file goes on");
    }

    #[test]
    fn reports_the_line_and_field_of_a_bad_role_and_goes_on() {
        let bad = r#"{"id":"b","channel":"chat","turns":[{"role":"customer","text":"x"},{"role":"robot","text":"y"}]}"#;
        let rows = read(&format!("{GOOD}\n\n{bad}\n{GOOD}\n"), OnBadRow::Skip);
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0].as_ref().unwrap().0, 1);
        let err = rows[1].as_ref().unwrap_err();
        assert_eq!((err.line, err.field.as_str()), (3, "turns[1].role"));
        assert!(
            err.to_string()
                .starts_with("rows.jsonl:3: field `turns[1].role`"),
            "{err}"
        );
        assert_eq!(rows[2].as_ref().unwrap().0, 4);
    }

    #[test]
    fn stops_after_the_first_bad_row_when_asked() {
        let rows = read(&format!("{GOOD}\nnot json\n{GOOD}\n"), OnBadRow::Stop);
        assert_eq!(rows.len(), 2);
        let err = rows[1].as_ref().unwrap_err();
        assert_eq!((err.line, err.field.as_str()), (2, ""));
    }

    #[test]
    fn names_missing_and_empty_fields() {
        let rows = read(
            "{\"id\":\"a\",\"turns\":[]}\n{\"id\":\"a\",\"channel\":\"c\",\"turns\":[]}\n{\"id\":\"a\",\"channel\":\"c\",\"turns\":[{\"role\":\"agent\",\"text\":\" \"}]}",
            OnBadRow::Skip,
        );
        let fields: Vec<_> = rows
            .iter()
            .map(|r| r.as_ref().unwrap_err().field.clone())
            .collect();
        assert_eq!(fields, ["channel", "turns", "turns[0].text"]);
    }

    #[test]
    fn reads_the_tweetsumm_files() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../shared/data/tweetsumm/analyzer_bench_dev.jsonl");
        if !path.exists() {
            eprintln!("skipped: {} is not here", path.display());
            return;
        }
        let rows: Vec<_> = read_jsonl_file(&path, OnBadRow::Stop)
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(rows.len(), 110);
        assert!(
            rows.iter()
                .all(|(_, r)| r.summary.is_some() && !r.references.is_empty())
        );
        assert!(
            rows.iter()
                .any(|(_, r)| r.labels.contains(&"pii_exposure".to_string()))
        );
    }
}
