//! `xinqiao validate`: check a file of records against a schema offline, streaming, with the same
//! formats and messages as the hub.

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use clap::Args;
use serde_json::Value;
use xinqiao_schema::records::{self, Record, RecordReport, Summary};
use xinqiao_schema::{FormatMode, SchemaSource};

use crate::{CliResult, out};

#[derive(Args)]
pub struct ValidateArgs {
    /// The JSON Schema file.
    #[arg(long)]
    schema: PathBuf,
    /// Where `xinqiao://schemas/<subject>/<version>` references are read from, as <subject>.json
    /// [default: the schema's directory]. Offline, the version in a reference is not checked.
    #[arg(long)]
    schemas: Option<PathBuf>,
    /// Accept a wrong check character in an identifier, reporting it as a warning.
    #[arg(long)]
    lenient: bool,
    /// ndjson or csv (with a header row) [default: by the file's extension, else ndjson].
    #[arg(long)]
    format: Option<RecordFormat>,
    /// The records: NDJSON (one JSON document per line) or CSV.
    records: PathBuf,
}

#[derive(Clone, Copy, clap::ValueEnum, PartialEq, Eq)]
pub enum RecordFormat {
    Ndjson,
    Csv,
}

impl RecordFormat {
    pub fn of(path: &Path, chosen: Option<RecordFormat>) -> RecordFormat {
        chosen.unwrap_or(if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("csv")) {
            RecordFormat::Csv
        } else {
            RecordFormat::Ndjson
        })
    }
}

/// Reads `<subject>.json` from a directory for each reference.
struct DirectorySource(PathBuf);

impl SchemaSource for DirectorySource {
    fn schema(&self, subject: &str, _version: u32) -> Option<Value> {
        let text = std::fs::read_to_string(self.0.join(format!("{subject}.json"))).ok()?;
        serde_json::from_str(&text).ok()
    }
}

pub fn read_json(path: &Path) -> CliResult<Value> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{} is not JSON: {e}", path.display()))
}

/// Streams the records of a file, whatever its format.
pub fn open_records(path: &Path, format: RecordFormat, schema: &Value) -> CliResult<Box<dyn Iterator<Item = Record>>> {
    let file = File::open(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    Ok(match format {
        RecordFormat::Ndjson => Box::new(records::ndjson(BufReader::with_capacity(1 << 16, file))),
        RecordFormat::Csv => Box::new(
            records::csv(BufReader::with_capacity(1 << 16, file), schema)
                .map_err(|e| format!("{}: {e}", path.display()))?,
        ),
    })
}

/// Prints one record's problems: the same layout offline and from the hub.
pub fn print_report(report: &RecordReport) {
    let verdict = if report.outcome.errors.is_empty() {
        "warning"
    } else {
        "invalid"
    };
    out!("line {}: {verdict}", report.line);
    for v in &report.outcome.errors {
        out!(
            "  error    {}  [{}]  {}",
            pointer(&v.instance_pointer),
            v.keyword,
            v.message
        );
    }
    for v in &report.outcome.warnings {
        out!(
            "  warning  {}  [{}]  {}",
            pointer(&v.instance_pointer),
            v.keyword,
            v.message
        );
    }
}

fn pointer(p: &str) -> &str {
    if p.is_empty() { "(record)" } else { p }
}

/// Prints the closing summary; an error when any record is invalid.
pub fn finish(summary: &Summary) -> CliResult {
    let valid = summary.records - summary.invalid;
    out!(
        "checked {} records: {valid} valid, {} invalid, {} with warnings",
        summary.records,
        summary.invalid,
        summary.warned
    );
    if summary.invalid > 0 {
        Err(format!("{} invalid records", summary.invalid))
    } else {
        Ok(())
    }
}

pub fn run(args: ValidateArgs) -> CliResult {
    let schema = read_json(&args.schema)?;
    let dir = args.schemas.clone().unwrap_or_else(|| {
        args.schema
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."))
    });
    let mode = if args.lenient {
        FormatMode::Lenient
    } else {
        FormatMode::Strict
    };
    let compiled = xinqiao_schema::compile(&schema, &DirectorySource(dir), mode).map_err(|e| e.to_string())?;
    let format = RecordFormat::of(&args.records, args.format);
    let records = open_records(&args.records, format, &schema)?;
    let summary = records::validate_each(records, &compiled, xinqiao_schema::DEFAULT_MAX_ERRORS, |r| {
        print_report(&r)
    });
    finish(&summary)
}
