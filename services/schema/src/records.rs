//! Streaming record readers for the offline `xinqiao validate` command.
//!
//! Each reader yields `(line, record)` one at a time: the memory used does not grow with the
//! number of records. A record that cannot be read (a line that is not JSON, a CSV row with the
//! wrong number of cells) is yielded as an `Err` with its line number, and reading goes on.

use std::collections::VecDeque;
use std::io::{self, BufRead, Read};

use serde_json::{Map, Number, Value};

use crate::compiled::{CompiledSchema, RecordOutcome, Violation};

/// A record and the line it starts on (from 1), or why it could not be read.
pub type Record = (u64, Result<Value, String>);

/// The longest NDJSON line read; a longer one is reported and skipped without being buffered.
pub const MAX_LINE_BYTES: usize = 16 * 1024 * 1024;

/// Reads newline-delimited JSON: one JSON value per line; blank lines are skipped.
pub fn ndjson<R: BufRead>(reader: R) -> Ndjson<R> {
    Ndjson {
        reader,
        line: 0,
        buffer: Vec::new(),
        done: false,
    }
}

/// The iterator returned by [`ndjson`].
#[derive(Debug)]
pub struct Ndjson<R> {
    reader: R,
    line: u64,
    buffer: Vec<u8>,
    done: bool,
}

impl<R: BufRead> Iterator for Ndjson<R> {
    type Item = Record;

    fn next(&mut self) -> Option<Record> {
        while !self.done {
            self.buffer.clear();
            self.line += 1;
            let text = match read_line(&mut self.reader, &mut self.buffer, MAX_LINE_BYTES) {
                Ok(Line::End) => {
                    self.done = true;
                    return None;
                }
                Ok(Line::TooLong) => {
                    return Some((self.line, Err(format!("line is longer than {MAX_LINE_BYTES} bytes"))));
                }
                Ok(Line::Read) => self.buffer.trim_ascii(),
                Err(e) => {
                    // An I/O error may repeat forever; stop after reporting it once.
                    self.done = true;
                    return Some((self.line, Err(format!("cannot read: {e}"))));
                }
            };
            if text.is_empty() {
                continue;
            }
            return Some((self.line, serde_json::from_slice(text).map_err(|e| json_error(&e))));
        }
        None
    }
}

fn json_error(error: &serde_json::Error) -> String {
    // serde_json counts lines inside the one-line document; only the column is news.
    let text = error.to_string();
    let reason = text.split(" at line ").next().unwrap_or(&text);
    format!("not valid JSON at column {}: {reason}", error.column())
}

enum Line {
    Read,
    TooLong,
    End,
}

fn read_line<R: BufRead>(reader: &mut R, buffer: &mut Vec<u8>, limit: usize) -> io::Result<Line> {
    let read = reader.by_ref().take(limit as u64 + 1).read_until(b'\n', buffer)?;
    if read == 0 {
        return Ok(Line::End);
    }
    if buffer.len() <= limit || buffer.last() == Some(&b'\n') {
        return Ok(Line::Read);
    }
    loop {
        let available = reader.fill_buf()?;
        if available.is_empty() {
            break;
        }
        match available.iter().position(|&b| b == b'\n') {
            Some(end) => {
                reader.consume(end + 1);
                break;
            }
            None => {
                let len = available.len();
                reader.consume(len);
            }
        }
    }
    Ok(Line::TooLong)
}

/// Reads CSV with a header row naming the properties, one record per row, incrementally.
///
/// Cells are text; each is given the type the schema declares for its column under the root's
/// `properties` (following local `#/…` references): see [`coerce`]. An empty cell leaves the
/// property out. Fails when the header row is missing, unreadable, or names a column twice.
pub fn csv<R: Read>(reader: R, schema: &Value) -> Result<CsvRecords<R>, String> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_reader(LineStarts::new(reader));
    let headers = reader.headers().map_err(|e| csv_error(&e))?.clone();
    if headers.is_empty() || (headers.len() == 1 && headers[0].trim().is_empty()) {
        return Err("the CSV has no header row naming the columns".into());
    }
    let mut columns: Vec<Column> = Vec::with_capacity(headers.len());
    for (index, name) in headers.iter().enumerate() {
        let name = name.trim();
        if name.is_empty() {
            return Err(format!("column {} has no name in the header row", index + 1));
        }
        if columns.iter().any(|c| c.name == name) {
            return Err(format!("column '{name}' appears twice in the header row"));
        }
        columns.push(Column {
            name: name.to_string(),
            types: declared_types(schema, name),
        });
    }
    Ok(CsvRecords {
        reader,
        columns,
        row: csv::StringRecord::new(),
        last_line: 1,
        done: false,
    })
}

/// The iterator returned by [`csv`].
#[derive(Debug)]
pub struct CsvRecords<R> {
    reader: csv::Reader<LineStarts<R>>,
    columns: Vec<Column>,
    row: csv::StringRecord,
    last_line: u64,
    done: bool,
}

#[derive(Debug)]
struct Column {
    name: String,
    types: Vec<String>,
}

impl<R: Read> CsvRecords<R> {
    /// The column names from the header row.
    pub fn columns(&self) -> impl Iterator<Item = &str> {
        self.columns.iter().map(|c| c.name.as_str())
    }

    /// The line a record starts on, from the byte where the parser began reading it.
    fn line_at(&mut self, start: Option<u64>) -> u64 {
        start
            .and_then(|byte| self.reader.get_mut().line_from(byte))
            .unwrap_or(self.last_line + 1)
    }
}

/// Notes where each non-empty line starts as the CSV parser reads, so that a record's line is
/// right whatever the line endings. The csv crate's own line count is not: it puts the rows of a
/// CRLF file (what Excel writes) one line early, those of a CR file all on line 1, and rows after
/// blank lines too early. Its byte position, where it began reading a record, is exact; the record
/// starts at the first non-empty line from there. Only the lines the parser has read ahead are
/// kept.
#[derive(Debug)]
struct LineStarts<R> {
    inner: R,
    /// The offset of the next byte read.
    offset: u64,
    /// The number of the line that byte is on.
    line: u64,
    /// The next byte starts a line.
    at_start: bool,
    /// The last byte was a CR, so an LF now ends no further line.
    after_cr: bool,
    /// (offset, line) of each non-empty line read and not yet passed.
    starts: VecDeque<(u64, u64)>,
}

impl<R> LineStarts<R> {
    fn new(inner: R) -> Self {
        LineStarts {
            inner,
            offset: 0,
            line: 1,
            at_start: true,
            after_cr: false,
            starts: VecDeque::new(),
        }
    }

    /// The line of the first non-empty line at or after `byte`; lines before it are forgotten.
    fn line_from(&mut self, byte: u64) -> Option<u64> {
        while self.starts.front().is_some_and(|&(offset, _)| offset < byte) {
            self.starts.pop_front();
        }
        self.starts.front().map(|&(_, line)| line)
    }
}

impl<R: Read> Read for LineStarts<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        for &b in &buf[..n] {
            match b {
                b'\n' if self.after_cr => self.after_cr = false,
                b'\r' | b'\n' => {
                    self.line += 1;
                    self.at_start = true;
                    self.after_cr = b == b'\r';
                }
                _ => {
                    if self.at_start {
                        self.starts.push_back((self.offset, self.line));
                        self.at_start = false;
                    }
                    self.after_cr = false;
                }
            }
            self.offset += 1;
        }
        Ok(n)
    }
}

impl<R: Read> Iterator for CsvRecords<R> {
    type Item = Record;

    fn next(&mut self) -> Option<Record> {
        if self.done {
            return None;
        }
        match self.reader.read_record(&mut self.row) {
            Ok(false) => {
                self.done = true;
                None
            }
            Ok(true) => {
                let start = self.row.position().map(csv::Position::byte);
                self.last_line = self.line_at(start);
                let mut record = Map::new();
                for (column, cell) in self.columns.iter().zip(self.row.iter()) {
                    if let Some(value) = coerce(cell, &column.types) {
                        record.insert(column.name.clone(), value);
                    }
                }
                Some((self.last_line, Ok(Value::Object(record))))
            }
            Err(e) => {
                self.last_line = self.line_at(e.position().map(csv::Position::byte));
                self.done = matches!(e.kind(), csv::ErrorKind::Io(_));
                Some((self.last_line, Err(csv_error(&e))))
            }
        }
    }
}

fn csv_error(error: &csv::Error) -> String {
    match error.kind() {
        csv::ErrorKind::Utf8 { .. } => {
            "is not UTF-8 text; save the file as UTF-8 (in Excel: \"CSV UTF-8\"), not GBK".into()
        }
        csv::ErrorKind::UnequalLengths { expected_len, len, .. } => {
            format!("has {len} cells, but the header row names {expected_len} columns")
        }
        csv::ErrorKind::Io(e) => format!("cannot read: {e}"),
        _ => error.to_string(),
    }
}

/// The JSON types the schema declares for a top-level property, if any.
fn declared_types(schema: &Value, property: &str) -> Vec<String> {
    let Some(mut node) = schema.get("properties").and_then(|p| p.get(property)) else {
        return Vec::new();
    };
    // A few hops of local references (`#/$defs/amount`); a cycle just stops.
    for _ in 0..8 {
        if node.get("type").is_some() {
            break;
        }
        match node
            .get("$ref")
            .and_then(Value::as_str)
            .and_then(|r| r.strip_prefix('#'))
        {
            Some(pointer) => match schema.pointer(pointer) {
                Some(target) => node = target,
                None => break,
            },
            None => break,
        }
    }
    match node.get("type") {
        Some(Value::String(t)) => vec![t.clone()],
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).map(str::to_string).collect(),
        _ => Vec::new(),
    }
}

/// Turns a CSV cell into the JSON value of a property declared with `types`.
///
/// - An empty (or all-blank) cell is `None`: the property is absent, so `required` catches it.
/// - `integer` or `number`: a cell that reads as a number becomes a number.
/// - `boolean`: `true` or `false` (any case) becomes a boolean.
/// - `object` or `array`: a cell holding such a JSON document becomes it.
/// - Anything else stays the cell's text, unchanged, so an identifier like `007` keeps its zeros
///   and a cell that does not fit its type is reported by the schema's `type` keyword.
pub fn coerce(cell: &str, types: &[String]) -> Option<Value> {
    let text = cell.trim();
    if text.is_empty() {
        return None;
    }
    let declares = |name: &str| types.iter().any(|t| t == name);
    if declares("integer") || declares("number") {
        if let Ok(n) = text.parse::<i64>() {
            return Some(n.into());
        }
        if let Ok(n) = text.parse::<u64>() {
            return Some(n.into());
        }
        if let Some(n) = text.parse::<f64>().ok().and_then(Number::from_f64) {
            return Some(Value::Number(n));
        }
    }
    if declares("boolean") {
        if text.eq_ignore_ascii_case("true") {
            return Some(Value::Bool(true));
        }
        if text.eq_ignore_ascii_case("false") {
            return Some(Value::Bool(false));
        }
    }
    let structured = (declares("object") && text.starts_with('{')) || (declares("array") && text.starts_with('['));
    if structured && let Ok(value) = serde_json::from_str::<Value>(text) {
        return Some(value);
    }
    Some(Value::String(cell.to_string()))
}

/// One record with errors or warnings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordReport {
    pub line: u64,
    pub outcome: RecordOutcome,
}

/// What validating a stream of records found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Records read, unreadable ones included.
    pub records: u64,
    /// Records with at least one error, unreadable ones included.
    pub invalid: u64,
    /// Valid records that carry warnings.
    pub warned: u64,
    /// The first records with errors or warnings, in order.
    pub reports: Vec<RecordReport>,
    /// More records had problems than `reports` holds.
    pub truncated: bool,
}

/// The keyword of the error given to a record that could not be read.
pub const UNREADABLE: &str = "parse";

/// Validates each record as it is read, calling `report` for each one with errors or warnings.
pub fn validate_each(
    records: impl IntoIterator<Item = Record>,
    schema: &CompiledSchema,
    max_errors_per_record: usize,
    mut report: impl FnMut(RecordReport),
) -> Summary {
    let mut summary = Summary::default();
    for (line, record) in records {
        summary.records += 1;
        let outcome = match record {
            Ok(value) => schema.validate_bounded(&value, max_errors_per_record),
            Err(message) => RecordOutcome {
                errors: vec![Violation {
                    instance_pointer: String::new(),
                    keyword: UNREADABLE.into(),
                    message,
                }],
                ..RecordOutcome::default()
            },
        };
        if !outcome.is_valid() {
            summary.invalid += 1;
        } else if !outcome.warnings.is_empty() {
            summary.warned += 1;
        }
        if !outcome.errors.is_empty() || !outcome.warnings.is_empty() {
            report(RecordReport { line, outcome });
        }
    }
    summary
}

/// Validates a stream of records, keeping the first `max_reported` reports in the summary.
pub fn validate_stream(
    records: impl IntoIterator<Item = Record>,
    schema: &CompiledSchema,
    max_errors_per_record: usize,
    max_reported: usize,
) -> Summary {
    let mut reports = Vec::new();
    let mut truncated = false;
    let mut summary = validate_each(records, schema, max_errors_per_record, |report| {
        if reports.len() < max_reported {
            reports.push(report);
        } else {
            truncated = true;
        }
    });
    summary.reports = reports;
    summary.truncated = truncated;
    summary
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn types(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn cells_take_the_declared_type() {
        assert_eq!(coerce("42", &types(&["integer"])), Some(json!(42)));
        assert_eq!(coerce(" 42 ", &types(&["integer"])), Some(json!(42)));
        assert_eq!(coerce("1.5", &types(&["number"])), Some(json!(1.5)));
        assert_eq!(
            coerce("18446744073709551615", &types(&["integer"])),
            Some(json!(u64::MAX))
        );
        assert_eq!(coerce("1.5", &types(&["integer"])), Some(json!(1.5)));
        assert_eq!(coerce("TRUE", &types(&["boolean"])), Some(json!(true)));
        assert_eq!(coerce("false", &types(&["boolean", "null"])), Some(json!(false)));
        assert_eq!(coerce("[1,2]", &types(&["array"])), Some(json!([1, 2])));
        assert_eq!(coerce("{\"a\":1}", &types(&["object"])), Some(json!({"a": 1})));
        assert_eq!(coerce("", &types(&["integer"])), None);
        assert_eq!(coerce("   ", &types(&["string"])), None);
    }

    #[test]
    fn cells_that_do_not_fit_stay_text() {
        assert_eq!(coerce("007", &types(&["string"])), Some(json!("007")));
        assert_eq!(coerce("007", &[]), Some(json!("007")));
        assert_eq!(coerce("abc", &types(&["integer"])), Some(json!("abc")));
        assert_eq!(coerce("NaN", &types(&["number"])), Some(json!("NaN")));
        assert_eq!(coerce("inf", &types(&["number"])), Some(json!("inf")));
        assert_eq!(coerce("yes", &types(&["boolean"])), Some(json!("yes")));
        assert_eq!(coerce("[1,", &types(&["array"])), Some(json!("[1,")));
        assert_eq!(coerce(" padded ", &types(&["string"])), Some(json!(" padded ")));
    }

    #[test]
    fn declared_types_follow_local_references() {
        let schema = json!({
            "properties": {
                "count": {"type": "integer"},
                "amount": {"$ref": "#/$defs/amount"},
                "flag": {"type": ["boolean", "null"]},
                "loop": {"$ref": "#/properties/loop"},
                "any": {}
            },
            "$defs": {"amount": {"type": "number"}}
        });
        assert_eq!(declared_types(&schema, "count"), types(&["integer"]));
        assert_eq!(declared_types(&schema, "amount"), types(&["number"]));
        assert_eq!(declared_types(&schema, "flag"), types(&["boolean", "null"]));
        assert!(declared_types(&schema, "loop").is_empty());
        assert!(declared_types(&schema, "any").is_empty());
        assert!(declared_types(&schema, "missing").is_empty());
    }

    #[test]
    fn ndjson_skips_blank_lines_and_reports_broken_ones() {
        let input = "{\"a\":1}\n\n  \r\n{\"a\":\n[1,2]\r\n";
        let records: Vec<_> = ndjson(input.as_bytes()).collect();
        assert_eq!(records.len(), 3);
        assert_eq!(records[0], (1, Ok(json!({"a": 1}))));
        assert_eq!(records[1].0, 4);
        assert!(
            records[1].1.as_ref().expect_err("refused").contains("not valid JSON"),
            "{:?}",
            records[1]
        );
        assert_eq!(records[2], (5, Ok(json!([1, 2]))));
    }

    #[test]
    fn overlong_lines_are_skipped_without_buffering_them() {
        let mut input = Vec::new();
        input.extend_from_slice(b"1\n");
        input.extend(std::iter::repeat_n(b'7', 100));
        input.extend_from_slice(b"\n2");
        let mut reader = io::BufReader::with_capacity(8, input.as_slice());
        let mut buffer = Vec::new();
        assert!(matches!(read_line(&mut reader, &mut buffer, 10), Ok(Line::Read)));
        buffer.clear();
        assert!(matches!(read_line(&mut reader, &mut buffer, 10), Ok(Line::TooLong)));
        assert!(buffer.len() <= 11);
        buffer.clear();
        assert!(matches!(read_line(&mut reader, &mut buffer, 10), Ok(Line::Read)));
        assert_eq!(buffer, b"2");
        buffer.clear();
        assert!(matches!(read_line(&mut reader, &mut buffer, 10), Ok(Line::End)));
    }

    #[test]
    fn ndjson_stops_after_an_io_error() {
        struct Failing;
        impl Read for Failing {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::other("disk on fire"))
            }
        }
        let records: Vec<_> = ndjson(io::BufReader::new(Failing)).collect();
        assert_eq!(records.len(), 1);
        assert!(records[0].1.as_ref().expect_err("refused").contains("disk on fire"));
    }

    #[test]
    fn csv_goes_on_after_a_bad_row_and_counts_lines_of_quoted_cells() {
        let input = "a,b,c\n1,2\n\"multi\nline\",x,y\n4,5,6\n";
        let rows: Vec<_> = csv(input.as_bytes(), &json!({})).expect("header").collect();
        assert_eq!(rows.len(), 3, "{rows:?}");
        assert_eq!(rows[0].0, 2);
        assert!(rows[0].1.is_err());
        assert_eq!(rows[1], (3, Ok(json!({"a": "multi\nline", "b": "x", "c": "y"}))));
        assert_eq!(rows[2], (5, Ok(json!({"a": "4", "b": "5", "c": "6"}))));
    }

    #[test]
    fn csv_lines_are_counted_whatever_the_line_endings() {
        let lines = |input: &str| -> Vec<u64> {
            csv(input.as_bytes(), &json!({}))
                .expect("header")
                .map(|(line, _)| line)
                .collect()
        };
        assert_eq!(lines("a,b\r\n1,2\r\n3,4\r\n"), [2, 3]);
        assert_eq!(lines("a,b\r1,2\r3,4\r"), [2, 3]);
        assert_eq!(lines("a\n1\n\n\n2\n"), [2, 5]);
        assert_eq!(lines("\n\na\r\n\r\n1\r\n"), [5]);
        assert_eq!(lines("a,b\r\n1,\"x\r\ny\"\r\n3,4\r\n"), [2, 4]);
        assert_eq!(lines("\u{feff}a,b\r\n1,2,3\r\n4,5\r\n"), [2, 3]);
    }

    #[test]
    fn csv_that_is_not_utf8_is_reported_per_row() {
        // "名称" in GBK.
        let input = b"name\n\xc3\xfb\xb3\xc6\nok\n";
        let rows: Vec<_> = csv(&input[..], &json!({})).expect("header").collect();
        assert_eq!(rows.len(), 2);
        assert!(rows[0].1.as_ref().expect_err("refused").contains("UTF-8"));
        assert_eq!(rows[1], (3, Ok(json!({"name": "ok"}))));
    }

    #[test]
    fn csv_header_problems() {
        assert!(csv("".as_bytes(), &json!({})).is_err());
        assert!(
            csv("a,b,a\n1,2,3\n".as_bytes(), &json!({}))
                .expect_err("refused")
                .contains("twice")
        );
        assert!(
            csv("a,,b\n".as_bytes(), &json!({}))
                .expect_err("refused")
                .contains("column 2")
        );
        let with_bom = csv("\u{feff}name\nx\n".as_bytes(), &json!({})).expect("header");
        assert_eq!(with_bom.columns().collect::<Vec<_>>(), vec!["name"]);
    }
}
