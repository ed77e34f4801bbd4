//! Fuzzing what a hostile schema or input file reaches in the schema crate: `$ref` references
//! (`xinqiao://schemas/<subject>/<version>`) and the NDJSON and CSV record readers (issue 15,
//! item 2).
//!
//! Each property runs `PROPTEST_CASES` generated cases (256 unless set; `.ci/fuzz` sets more),
//! and each target also runs the checked-in seed corpus under `fuzz/corpus/<target>/`.

use std::collections::HashMap;
use std::io::BufReader;
use std::path::PathBuf;
use std::sync::{OnceLock, mpsc};
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{FileFailurePersistence, RngAlgorithm};
use serde_json::{Map, Value, json};
use xinqiao_domain::schema::validate_subject;
use xinqiao_schema::references::REFERENCE_PREFIX;
use xinqiao_schema::{
    CompiledSchema, FormatMode, NoReferences, compile, parse_reference, records, reference_uri, references,
};

/// The default configuration (which reads `PROPTEST_CASES`), with failures kept in
/// `tests/proptest-regressions/` and replayed first on every later run. XorShift instead of
/// ChaCha: unoptimised in a debug build, ChaCha took most of the run's time.
fn config() -> ProptestConfig {
    ProptestConfig {
        rng_algorithm: RngAlgorithm::XorShift,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "tests/proptest-regressions/fuzz.txt",
        ))),
        max_shrink_time: 60_000,
        ..ProptestConfig::default()
    }
}

/// The files of `fuzz/corpus/<target>/`, name and bytes, sorted by name.
fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.expect("directory entry").path();
            let name = path.file_name().expect("file name").to_string_lossy().into_owned();
            (name, std::fs::read(&path).expect("corpus file"))
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{} holds no seed", dir.display());
    files
}

/// Runs `work` on its own thread and gives up after `limit`, so that a hang fails the property.
fn within<T: Send + 'static>(limit: Duration, work: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = sender.send(work());
    });
    receiver.recv_timeout(limit).ok()
}

const LIMIT: Duration = Duration::from_secs(15);

// ---------------------------------------------------------------------------------------------
// References

/// The registered schemas the generated ones refer to: plain, chained, a cycle of two, a
/// recursive one and one with local definitions.
fn registry() -> HashMap<(String, u32), Value> {
    let mut source = HashMap::new();
    for (subject, schema) in [
        ("a", json!({"type": "string"})),
        ("b", json!({"$ref": "xinqiao://schemas/a/1"})),
        ("c", json!({"$ref": "xinqiao://schemas/d/1"})),
        ("d", json!({"$ref": "xinqiao://schemas/c/1"})),
        (
            "e",
            json!({"type": "object", "properties": {"next": {"$ref": "xinqiao://schemas/e/1"}}}),
        ),
        (
            "f",
            json!({"$defs": {"x": {"type": "integer"}}, "anyOf": [{"$ref": "#/$defs/x"}, {"$ref": "xinqiao://schemas/a/1#"}]}),
        ),
    ] {
        source.insert((subject.to_string(), 1), schema);
    }
    source
}

/// `$ref` values: well-formed registry URIs (registered or not, with fragments), near misses,
/// local pointers, remote and file URLs, relative paths and arbitrary text.
fn reference_text() -> impl Strategy<Value = String> {
    let subject = prop_oneof![
        4 => prop::sample::select(vec!["a", "b", "c", "d", "e", "f", "g"]).prop_map(str::to_string),
        1 => "[a-z0-9][a-z0-9._-]{0,12}",
    ];
    let fragment = prop_oneof![
        Just(String::new()),
        Just("#".to_string()),
        Just("#/$defs/x".to_string()),
        Just("#/$defs/%ZZ".to_string()),
        Just("#anchor".to_string()),
        "#.{0,8}",
    ];
    prop_oneof![
        4 => (subject, 0u32..3, fragment).prop_map(|(s, v, f)| format!("{}{f}", reference_uri(&s, v))),
        2 => ".{0,24}".prop_map(|rest| format!("{REFERENCE_PREFIX}{rest}")),
        1 => "xinqiao://schemas/[a-z]{1,3}/(0[0-9]|[0-9]{10,12}|-1|\\+1|1\\.0|１|[0-9] )",
        1 => prop::sample::select(vec![
            "#",
            "#/$defs/x",
            "#/definitions/x",
            "#/%ZZ",
            "#/$defs/x~2",
            "#/properties/next",
            "https://example.com/schema.json",
            "http://169.254.169.254/latest/meta-data/",
            "file:///etc/passwd",
            "//evil.example/x",
            "../a/1",
            "a/1",
            "XINQIAO://SCHEMAS/a/1",
            "xinqiao://schemas/../../etc/passwd/1",
            "xinqiao:schemas/a/1",
            "",
        ])
        .prop_map(str::to_string),
        1 => any::<String>(),
    ]
}

/// A schema with references at any depth, sometimes with its own `$id`.
fn referencing_schema() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        reference_text().prop_map(|r| json!({ "$ref": r })),
        reference_text().prop_map(|r| json!({ "$dynamicRef": r })),
        Just(json!({"type": "string"})),
        Just(json!(true)),
        Just(json!({"$defs": {"x": {"type": "integer"}}})),
    ];
    let schema = leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::btree_map("[a-z]{1,3}", inner.clone(), 0..4)
                .prop_map(|props| json!({"type": "object", "properties": props})),
            prop::collection::vec(inner.clone(), 1..4).prop_map(|v| json!({ "anyOf": v })),
            (inner.clone(), inner).prop_map(|(items, x)| json!({"items": items, "$defs": {"x": x}})),
        ]
    });
    let id = prop_oneof![
        4 => Just(None),
        1 => prop::sample::select(vec!["xinqiao://schemas/g/1", "https://example.com/root.json", "urn:x", "not a uri"])
            .prop_map(Some),
    ];
    (schema, id).prop_map(|(mut schema, id)| {
        if let (Some(id), Some(m)) = (id, schema.as_object_mut()) {
            m.insert("$id".into(), json!(id));
        }
        schema
    })
}

/// Every registry reference in a schema, in order of first appearance, found independently of
/// the crate's own walk.
fn registry_references(value: &Value, found: &mut Vec<(String, u32)>) {
    match value {
        Value::Object(m) => {
            for (k, v) in m {
                if (k == "$ref" || k == "$dynamicRef")
                    && let Some(reference) = v.as_str().and_then(parse_reference)
                    && !found.contains(&reference)
                {
                    found.push(reference);
                }
                registry_references(v, found);
            }
        }
        Value::Array(items) => items.iter().for_each(|v| registry_references(v, found)),
        _ => {}
    }
}

/// What a parsed reference must be: exactly the prefix, the subject, `/`, the version's digits,
/// and nothing but a fragment after them.
fn reference_parse_holds(uri: &str) -> Result<(), TestCaseError> {
    if let Some((subject, version)) = parse_reference(uri) {
        let rest = uri.strip_prefix(REFERENCE_PREFIX).expect("prefix");
        let document = rest.split('#').next().expect("split");
        let (s, digits) = document.split_once('/').expect("a slash");
        prop_assert_eq!(s, subject.as_str());
        prop_assert!(!subject.is_empty() && !subject.contains(['/', '?', '#']));
        prop_assert!(!subject.contains(char::is_whitespace));
        prop_assert!(digits.bytes().all(|b| b.is_ascii_digit()));
        prop_assert_eq!(digits.parse::<u32>().ok(), Some(version));
    }
    Ok(())
}

/// Compiling a schema with hostile references ends, never panics, resolves only through the
/// registry, and names as dependencies exactly the registered schemas reachable from it.
fn compile_holds(schema: &Value, modes: &[FormatMode]) -> Result<(), TestCaseError> {
    let source = registry();
    let shown = schema.to_string();
    for &mode in modes {
        let (owned, source) = (schema.clone(), source.clone());
        let outcome = within(LIMIT, move || {
            compile(&owned, &source, mode).map(|compiled| {
                let dependencies = compiled.dependencies().to_vec();
                // Validating a record must end too, through cycles of references.
                let record = json!({"a": "x", "next": {"next": {"next": 1}}, "b": [1, "x", null]});
                let outcome = compiled.validate_bounded(&record, 5);
                (dependencies, outcome.errors.len())
            })
        });
        let Some(outcome) = outcome else {
            return Err(TestCaseError::fail(format!(
                "compiling or validating did not end: {shown}"
            )));
        };
        let Ok((dependencies, errors)) = outcome else { continue };
        prop_assert!(errors <= 5);
        let mut sorted = dependencies.clone();
        sorted.sort();
        sorted.dedup();
        prop_assert_eq!(&sorted, &dependencies);
        let registry = registry();
        for dependency in &dependencies {
            prop_assert!(registry.contains_key(dependency), "{:?} is not registered", dependency);
        }
        // The references of the schema itself that are registered are among its dependencies.
        let mut direct = Vec::new();
        registry_references(schema, &mut direct);
        for reference in direct.iter().filter(|r| registry.contains_key(*r)) {
            prop_assert!(
                dependencies.contains(reference),
                "{:?} missing from {:?}",
                reference,
                dependencies
            );
        }
    }
    Ok(())
}

const BOTH_MODES: [FormatMode; 2] = [FormatMode::Strict, FormatMode::Lenient];

/// A `$ref` that the registry cannot serve (not local, not `xinqiao://schemas/…`) is refused at
/// compile time: nothing is fetched from the network or the filesystem.
#[test]
fn remote_references_are_refused() {
    for uri in [
        "https://example.com/schema.json",
        "http://169.254.169.254/latest/meta-data/",
        "file:///etc/passwd",
        "xinqiao://schemas/unregistered/1",
        "xinqiao://schemas/a/99999999999",
    ] {
        let schema = json!({"properties": {"x": {"$ref": uri}}});
        assert!(compile(&schema, &registry(), FormatMode::Strict).is_err(), "{uri}");
    }
}

#[test]
fn reference_corpus() {
    for (name, bytes) in corpus("references") {
        let text = String::from_utf8_lossy(&bytes).into_owned();
        for uri in [text.as_str(), text.trim()] {
            reference_parse_holds(uri).unwrap_or_else(|e| panic!("{name}: {e}"));
            for key in ["$ref", "$dynamicRef"] {
                let schema = json!({ "properties": { "x": { key: uri } } });
                compile_holds(&schema, &BOTH_MODES).unwrap_or_else(|e| panic!("{name}: {e}"));
            }
        }
        // A seed that is a schema document is compiled as one.
        if let Ok(schema) = serde_json::from_slice::<Value>(&bytes) {
            let mut expected = Vec::new();
            registry_references(&schema, &mut expected);
            assert_eq!(references(&schema), expected, "{name}");
            compile_holds(&schema, &BOTH_MODES).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn registry_uris_round_trip(subject in "[a-z0-9][a-z0-9._-]{0,99}", version in any::<u32>(), fragment in "(#.{0,10})?") {
        prop_assert_eq!(validate_subject(&subject), Ok(()));
        let uri = reference_uri(&subject, version);
        prop_assert_eq!(parse_reference(&uri), Some((subject.clone(), version)));
        prop_assert_eq!(parse_reference(&format!("{uri}{fragment}")), Some((subject, version)));
    }

    #[test]
    fn parsed_references_name_exactly_the_uri(uri in reference_text()) {
        reference_parse_holds(&uri)?;
    }

    #[test]
    fn references_are_listed_once_in_order(schema in referencing_schema()) {
        let mut expected = Vec::new();
        registry_references(&schema, &mut expected);
        prop_assert_eq!(references(&schema), expected);
    }

    #[test]
    fn compiling_hostile_references_ends_and_resolves_only_through_the_registry(
        schema in referencing_schema(),
        mode in prop::sample::select(BOTH_MODES.to_vec()),
    ) {
        compile_holds(&schema, &[mode])?;
    }
}

// ---------------------------------------------------------------------------------------------
// Records

/// A schema declaring a type for the columns the generated files use.
fn typed_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "count": {"type": "integer"},
            "amount": {"$ref": "#/$defs/amount"},
            "flag": {"type": ["boolean", "null"]},
            "tags": {"type": "array"},
            "extra": {"type": "object"},
            "name": {"type": "string", "maxLength": 5},
            "loop": {"$ref": "#/properties/loop"}
        },
        "$defs": {"amount": {"type": "number"}}
    })
}

/// Bytes as an input file can hold them: text with quotes, separators, CR/LF, BOM, NUL,
/// Chinese and emoji; raw bytes (invalid UTF-8, GBK); and long lines.
fn input_bytes() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        Just(b",".to_vec()),
        Just(b"\"".to_vec()),
        Just(b"\"\"".to_vec()),
        Just(b"\n".to_vec()),
        Just(b"\r\n".to_vec()),
        Just(b"\r".to_vec()),
        Just("\u{feff}".as_bytes().to_vec()),
        Just(b"\0".to_vec()),
        Just(b"{\"a\":[1,{\"b\":null}]}".to_vec()),
        Just(b"[[[[[[[[[[".to_vec()),
        Just(b"count,amount,flag,tags,extra,name".to_vec()),
        Just(b"1e400".to_vec()),
        Just(b"-9223372036854775809".to_vec()),
        Just(b"18446744073709551616".to_vec()),
        Just(b"TRUE".to_vec()),
        Just("名称,😀,'; DROP TABLE records;--,../../etc/passwd".as_bytes().to_vec()),
        Just(b"\xc3\xfb\xb3\xc6".to_vec()),
        Just(b"\xff\xfe\xfd".to_vec()),
        "[ -~]{0,12}".prop_map(String::into_bytes),
        prop::collection::vec(any::<u8>(), 0..12),
        (1usize..20_000).prop_map(|n| vec![b'x'; n]),
    ];
    prop::collection::vec(piece, 0..16).prop_map(|pieces| pieces.concat())
}

/// Reading any bytes with either reader never panics, ends, counts lines forward and reads
/// each record once; validating them counts every record, unreadable ones as invalid.
fn readers_hold(input: &[u8]) -> Result<(), TestCaseError> {
    static COMPILED: OnceLock<CompiledSchema> = OnceLock::new();
    let compiled =
        COMPILED.get_or_init(|| compile(&typed_schema(), &NoReferences, FormatMode::Strict).expect("schema compiles"));
    let schema = typed_schema();

    let rows: Vec<records::Record> = records::ndjson(input).collect();
    let mut last = 0;
    for (line, record) in &rows {
        prop_assert!(*line > last, "line {} after {}", line, last);
        last = *line;
        if let Err(message) = record {
            prop_assert!(!message.is_empty());
        }
    }
    // One record per line that is not blank; lines split at \n only.
    let lines = input
        .split(|&b| b == b'\n')
        .filter(|l| !l.trim_ascii().is_empty())
        .count();
    prop_assert_eq!(rows.len(), lines);
    // Through a tiny buffer, the reader sees the same records.
    if input.len() < 4096 {
        let small: Vec<records::Record> = records::ndjson(BufReader::with_capacity(3, input)).collect();
        prop_assert_eq!(&small, &rows);
    }
    let unreadable = rows.iter().filter(|(_, r)| r.is_err()).count() as u64;
    let summary = records::validate_stream(rows, compiled, 3, 4);
    prop_assert_eq!(summary.records as usize, lines);
    prop_assert!(summary.invalid >= unreadable && summary.invalid <= summary.records);
    prop_assert!(summary.reports.len() <= 4);

    match records::csv(input, &schema) {
        Err(message) => prop_assert!(!message.is_empty()),
        Ok(reader) => {
            let columns: Vec<String> = reader.columns().map(str::to_string).collect();
            prop_assert!(!columns.is_empty());
            let rows: Vec<records::Record> = reader.collect();
            let mut last = 1;
            for (line, record) in &rows {
                prop_assert!(*line > last, "line {} after {}", line, last);
                last = *line;
                match record {
                    Ok(Value::Object(fields)) => {
                        prop_assert!(fields.keys().all(|k| columns.contains(k)));
                    }
                    Ok(other) => prop_assert!(false, "a CSV row read as {}", other),
                    Err(message) => prop_assert!(!message.is_empty()),
                }
            }
            let count = rows.len() as u64;
            let summary = records::validate_stream(rows, compiled, 3, 4);
            prop_assert_eq!(summary.records, count);
        }
    }
    Ok(())
}

/// Lines past the 16 MiB bound are reported and skipped, and reading goes on after them.
#[test]
fn an_overlong_ndjson_line_is_skipped() {
    let mut input = b"{\"a\":1}\n".to_vec();
    input.resize(input.len() + records::MAX_LINE_BYTES + 10, b'7');
    input.extend_from_slice(b"\n\r\n{\"a\":2}");
    let rows: Vec<records::Record> = records::ndjson(input.as_slice()).collect();
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[0], (1, Ok(json!({"a": 1}))));
    assert_eq!(rows[1].0, 2);
    assert!(rows[1].1.as_ref().expect_err("too long").contains("longer than"));
    assert_eq!(rows[2], (4, Ok(json!({"a": 2}))));
}

#[test]
fn record_corpus() {
    for (name, bytes) in corpus("records") {
        readers_hold(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        // Seeds named `valid-*` read without an unreadable record in their own format.
        if name.starts_with("valid-") && name.ends_with(".ndjson") {
            assert!(records::ndjson(bytes.as_slice()).all(|(_, r)| r.is_ok()), "{name}");
        }
        if name.starts_with("valid-") && name.ends_with(".csv") {
            let rows = records::csv(bytes.as_slice(), &typed_schema()).expect("a header");
            assert!(rows.into_iter().all(|(_, r)| r.is_ok()), "{name}");
        }
    }
}

/// Line breaks as an editor counts them: LF, CRLF and a lone CR each end a line.
fn line_breaks(bytes: &[u8]) -> u64 {
    let crlf = bytes.windows(2).filter(|w| w == b"\r\n").count();
    (bytes.iter().filter(|&&b| b == b'\r' || b == b'\n').count() - crlf) as u64
}

/// Values that survive a JSON text round trip exactly (floats with short binary fractions).
fn exact_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (-1_000_000i64..1_000_000).prop_map(|n| json!(n as f64 / 8.0)),
        any::<String>().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("\\PC{0,6}|.{0,3}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arbitrary_input_files_are_read_without_panic(input in input_bytes()) {
        readers_hold(&input)?;
    }

    /// Values written one per line (LF or CRLF, blank lines between) are read back exactly,
    /// each with the line it is on.
    #[test]
    fn ndjson_round_trips(
        values in prop::collection::vec((exact_value(), 0usize..3, any::<bool>()), 0..8),
        final_newline in any::<bool>(),
    ) {
        let mut text = String::new();
        let mut expected = Vec::new();
        let mut line = 0u64;
        for (i, (value, blanks, crlf)) in values.iter().enumerate() {
            let end = if *crlf { "\r\n" } else { "\n" };
            for _ in 0..*blanks {
                text.push_str(" \t");
                text.push_str(end);
                line += 1;
            }
            text.push_str(&value.to_string());
            line += 1;
            expected.push((line, Ok(value.clone())));
            if i + 1 < values.len() || final_newline {
                text.push_str(end);
            }
        }
        let rows: Vec<records::Record> = records::ndjson(text.as_bytes()).collect();
        prop_assert_eq!(rows, expected);
    }

    /// Cells written by a CSV writer (quotes, separators, line breaks in cells, Chinese, emoji;
    /// LF, CRLF or CR line endings; with or without a BOM) are read back as text, each row with
    /// the line it starts on; blank cells leave the property out.
    #[test]
    fn csv_round_trips(
        header in prop::collection::btree_set("[a-z_]{1,6}|名称|😀", 1..5),
        rows in prop::collection::vec(prop::collection::vec("\\PC{0,6}|[,\"\r\n ]{0,3}|x\ny", 5), 0..6),
        bom in any::<bool>(),
        ending in prop::sample::select(vec![csv::Terminator::Any(b'\n'), csv::Terminator::CRLF, csv::Terminator::Any(b'\r')]),
    ) {
        let header: Vec<String> = header.into_iter().collect();
        let mut writer = csv::WriterBuilder::new().terminator(ending).from_writer(Vec::new());
        writer.write_record(&header).expect("header");
        let mut expected = Vec::new();
        for row in &rows {
            let cells = &row[..header.len()];
            writer.flush().expect("flush");
            // A row starts on the line after every line break written before it.
            let line = 1 + line_breaks(writer.get_ref());
            writer.write_record(cells).expect("row");
            let record: Map<String, Value> = header
                .iter()
                .zip(cells)
                .filter(|(_, cell)| !cell.trim().is_empty())
                .map(|(name, cell)| (name.clone(), Value::String(cell.clone())))
                .collect();
            expected.push((line, Ok(Value::Object(record))));
        }
        let mut bytes = if bom { "\u{feff}".as_bytes().to_vec() } else { Vec::new() };
        bytes.extend(writer.into_inner().expect("flush"));
        let reader = records::csv(bytes.as_slice(), &json!({})).expect("a header");
        prop_assert_eq!(reader.columns().collect::<Vec<_>>(), header.iter().map(String::as_str).collect::<Vec<_>>());
        let read: Vec<records::Record> = reader.collect();
        prop_assert_eq!(read, expected);
    }

    /// A cell of a typed column takes the type when it reads as one, and otherwise stays the
    /// cell's text unchanged: nothing is lost or invented.
    #[test]
    fn cells_are_coerced_without_loss(
        cell in "\\PC{0,12}|[-+]?[0-9]{1,25}(\\.[0-9]{0,5})?(e[-+]?[0-9]{1,4})?|(?i:true|false)|\\{.{0,8}\\}|\\[.{0,8}\\]",
        types in prop::collection::vec(prop::sample::select(vec!["integer", "number", "boolean", "object", "array", "string", "null"]), 0..3),
    ) {
        let types: Vec<String> = types.into_iter().map(str::to_string).collect();
        let declares = |t: &str| types.iter().any(|d| d == t);
        match records::coerce(&cell, &types) {
            None => prop_assert!(cell.trim().is_empty()),
            Some(Value::String(text)) => prop_assert_eq!(text, cell),
            Some(Value::Number(n)) => {
                prop_assert!(declares("integer") || declares("number"));
                let parsed: f64 = cell.trim().parse().expect("a number cell");
                prop_assert_eq!(n.as_f64(), Some(parsed));
            }
            Some(Value::Bool(b)) => {
                prop_assert!(declares("boolean"));
                let word = if b { "true" } else { "false" };
                prop_assert!(cell.trim().eq_ignore_ascii_case(word));
            }
            Some(structured) => {
                prop_assert!(declares("object") || declares("array"));
                prop_assert_eq!(serde_json::from_str::<Value>(cell.trim()).ok(), Some(structured));
            }
        }
    }
}
