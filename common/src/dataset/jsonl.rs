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
    reader: R,
    source: String,
    line: usize,
    policy: OnBadRow,
    stopped: bool,
}

impl<R: BufRead> JsonlReader<R> {
    pub fn new(reader: R, source: impl Into<String>, policy: OnBadRow) -> Self {
        Self {
            reader,
            source: source.into(),
            line: 0,
            policy,
            stopped: false,
        }
    }

    /// The reader underneath, e.g. to ask how far into its file it has read.
    pub fn get_ref(&self) -> &R {
        &self.reader
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
            let bytes = match read_line(&mut self.reader, MAX_LINE_BYTES)? {
                Ok(Line::Text(bytes)) => bytes,
                Ok(Line::TooLong(len)) => {
                    self.line += 1;
                    let item = Err(self.bad(
                        String::new(),
                        format!(
                            "the line is {len} bytes, more than a row may be ({} MiB): skipped unread",
                            MAX_LINE_BYTES >> 20
                        ),
                    ));
                    if self.policy == OnBadRow::Stop {
                        self.stopped = true;
                    }
                    return Some(item);
                }
                Err(e) => {
                    self.line += 1;
                    self.stopped = true;
                    return Some(Err(
                        self.bad(String::new(), format!("cannot read line: {e}"))
                    ));
                }
            };
            self.line += 1;
            // A file saved by some Windows editors starts with a byte-order mark.
            let bytes = match bytes.strip_prefix(b"\xef\xbb\xbf") {
                Some(rest) if self.line == 1 => rest,
                _ => &bytes[..],
            };
            let item = match std::str::from_utf8(bytes) {
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

/// The longest line read as a row: one conversation is far smaller; a longer line (a file
/// without newlines, a binary file) is one bad row, skipped without being held in memory.
pub const MAX_LINE_BYTES: usize = 8 << 20;

enum Line {
    Text(Vec<u8>),
    /// A line over the limit, skipped; its length in bytes.
    TooLong(usize),
}

/// The next line without its `\n`, or `None` at the end. A line over `max` bytes is read
/// through to its end but not kept.
fn read_line(reader: &mut impl BufRead, max: usize) -> Option<std::io::Result<Line>> {
    let mut line = Vec::new();
    let mut len = 0usize;
    let mut any = false;
    loop {
        let buf = match reader.fill_buf() {
            Ok(buf) => buf,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Some(Err(e)),
        };
        if buf.is_empty() {
            break; // end of input
        }
        any = true;
        let (chunk, found) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (&buf[..i], true),
            None => (buf, false),
        };
        len += chunk.len();
        if len <= max {
            line.extend_from_slice(chunk);
        } else {
            line = Vec::new();
        }
        let used = chunk.len() + usize::from(found);
        reader.consume(used);
        if found {
            break;
        }
    }
    if !any {
        return None;
    }
    Some(Ok(if len > max {
        Line::TooLong(len)
    } else {
        Line::Text(line)
    }))
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

/// A JSONL file already open (one a server checked as it opened it), for streaming; `source`
/// names it in bad rows.
pub fn read_jsonl_opened(
    file: File,
    source: impl Into<String>,
    policy: OnBadRow,
) -> JsonlReader<BufReader<File>> {
    JsonlReader::new(BufReader::new(file), source, policy)
}

/// A JSONL file's rows read on a blocking thread, as an async stream that holds at most
/// `read_ahead` rows (the reader waits while the consumer is behind). The consumer dropping the
/// stream stops the reading.
pub fn stream_jsonl_file(
    path: &Path,
    policy: OnBadRow,
    read_ahead: usize,
) -> std::io::Result<tokio_stream::wrappers::ReceiverStream<Result<(usize, Record), BadRow>>> {
    Ok(stream_jsonl(read_jsonl_file(path, policy)?, read_ahead))
}

/// [`stream_jsonl_file`] over a reader already made (a file opened and checked elsewhere).
pub fn stream_jsonl(
    reader: JsonlReader<BufReader<File>>,
    read_ahead: usize,
) -> tokio_stream::wrappers::ReceiverStream<Result<(usize, Record), BadRow>> {
    let (tx, rx) = tokio::sync::mpsc::channel(read_ahead.max(1));
    tokio::task::spawn_blocking(move || {
        for row in reader {
            if tx.blocking_send(row).is_err() {
                return;
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
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

    /// A line longer than a row may be (a file with no newlines) is one bad row, read through
    /// without being kept, and the rows after it are read.
    #[test]
    fn an_overlong_line_is_one_bad_row_and_the_next_rows_are_read() {
        let long = "x".repeat(MAX_LINE_BYTES + 10);
        let text = format!("{GOOD}\n{long}\n{GOOD}");
        // A small buffer, so the long line arrives in many pieces.
        let reader = std::io::BufReader::with_capacity(4096, text.as_bytes());
        let rows: Vec<_> = JsonlReader::new(reader, "t", OnBadRow::Skip).collect();
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0].as_ref().unwrap().0, 1);
        let bad = rows[1].as_ref().unwrap_err();
        assert_eq!(bad.line, 2);
        assert!(bad.message.contains("more than a row may be"), "{bad}");
        assert_eq!(
            rows[2].as_ref().unwrap().0,
            3,
            "the last line has no newline"
        );
    }

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
