//! Fuzzing the pure rules a hostile caller reaches: identifier checks, masking and the schema
//! compatibility checker (issue 15, item 2).
//!
//! Each property runs `PROPTEST_CASES` generated cases (256 unless set; `.ci/fuzz` sets more),
//! and each target also runs the checked-in seed corpus under `fuzz/corpus/<target>/`.

use std::path::PathBuf;
use std::sync::mpsc;
use std::time::Duration;

use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{FileFailurePersistence, RngAlgorithm};
use serde_json::{Map, Value, json};
use xinqiao_domain::compatibility::{CompatibilityMode, Incompatibility, check, check_versions};
use xinqiao_domain::identifiers::{
    IdentifierProblem, check_resident_id, check_uscc, resident_id_check_char, uscc_check_char, validate_division_code,
    validate_mobile, validate_resident_id, validate_uscc,
};
use xinqiao_domain::masking::{MASK, MaskRule, mask_record};

/// The default configuration (which reads `PROPTEST_CASES`), with failures kept in
/// `tests/proptest-regressions/` and replayed first on every later run. XorShift instead of
/// ChaCha: unoptimised in a debug build, ChaCha took most of the run's time.
fn config() -> ProptestConfig {
    ProptestConfig {
        rng_algorithm: RngAlgorithm::XorShift,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "tests/proptest-regressions/fuzz.txt",
        ))),
        // A failing case is shrunk for at most a minute: a hang costs CHECK_LIMIT per attempt.
        max_shrink_time: 60_000,
        ..ProptestConfig::default()
    }
}

// ---------------------------------------------------------------------------------------------
// The seed corpus

/// The files of `fuzz/corpus/<target>/`, name and bytes, sorted by name. An empty or missing
/// directory fails: a corpus that silently vanished would make the test pass on nothing.
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

/// A file's text as a caller would send it (invalid UTF-8 cannot arrive in a protobuf string,
/// so it becomes replacement characters), and each of its lines.
fn texts(bytes: &[u8]) -> Vec<String> {
    let whole = String::from_utf8_lossy(bytes).into_owned();
    let mut all: Vec<String> = whole.split('\n').map(str::to_string).collect();
    all.push(whole);
    all
}

/// Runs `work` on its own thread and gives up after `limit`: a property that must terminate
/// fails instead of hanging the run.
fn within<T: Send + 'static>(limit: Duration, work: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = sender.send(work());
    });
    receiver.recv_timeout(limit).ok()
}

// ---------------------------------------------------------------------------------------------
// Identifiers

const USCC_ALPHABET: &str = "0123456789ABCDEFGHJKLMNPQRTUWXY";
const RESIDENT_CHECK: &str = "0123456789X";

/// What every accepted 统一社会信用代码 is, whatever the checker's inner workings.
fn uscc_shape_holds(code: &str) -> bool {
    code.len() == 18
        && code.chars().all(|c| USCC_ALPHABET.contains(c))
        && code[2..8].bytes().all(|b| b.is_ascii_digit())
        && uscc_check_char(&code[..17]) == code[17..].chars().next()
}

fn resident_id_shape_holds(id: &str) -> bool {
    id.len() == 18
        && id.is_ascii()
        && id[..17].bytes().all(|b| b.is_ascii_digit())
        && validate_division_code(&id[..6]).is_ok()
        && resident_id_check_char(&id[..17]) == id[17..].chars().next()
}

/// The mobile rule restated: `1`, then `3`-`9`, then nine digits, nothing else.
fn is_mobile(number: &str) -> bool {
    let b = number.as_bytes();
    b.len() == 11 && b.iter().all(u8::is_ascii_digit) && b[0] == b'1' && (b'3'..=b'9').contains(&b[1])
}

fn is_division_code(code: &str) -> bool {
    code.len() == 6
        && code.bytes().all(|b| b.is_ascii_digit())
        && (11..=82).contains(&code[..2].parse::<u32>().expect("digits"))
}

/// Every identifier check on one text: never a panic, the two spellings of each check agree,
/// an acceptance means the text really has the shape, and a refusal says why.
fn all_identifier_checks(text: &str) -> Result<(), TestCaseError> {
    let uscc = check_uscc(text);
    prop_assert_eq!(uscc.is_ok(), validate_uscc(text).is_ok());
    prop_assert_eq!(uscc.is_ok(), uscc_shape_holds(text), "uscc {:?}: {:?}", text, uscc);
    if let Err(problem) = &uscc {
        prop_assert!(!problem.message().is_empty());
    }
    let resident = check_resident_id(text);
    prop_assert_eq!(resident.is_ok(), validate_resident_id(text).is_ok());
    if resident.is_ok() {
        prop_assert!(resident_id_shape_holds(text), "accepted resident id {:?}", text);
    }
    if let Err(problem) = &resident {
        prop_assert!(!problem.message().is_empty());
    }
    let mobile = validate_mobile(text);
    prop_assert_eq!(mobile.is_ok(), is_mobile(text), "mobile {:?}: {:?}", text, mobile);
    let division = validate_division_code(text);
    prop_assert_eq!(
        division.is_ok(),
        is_division_code(text),
        "division {:?}: {:?}",
        text,
        division
    );
    if let Some(c) = uscc_check_char(text) {
        prop_assert!(USCC_ALPHABET.contains(c));
    }
    if let Some(c) = resident_id_check_char(text) {
        prop_assert!(RESIDENT_CHECK.contains(c));
    }
    Ok(())
}

/// Text near the identifiers' shapes (so the checks get past their length test) as well as any
/// text at all: digits, the code alphabet, lower case, full-width digits, look-alikes, combining
/// marks, emoji, NUL.
fn identifier_text() -> impl Strategy<Value = String> {
    let near = "[0-9A-Za-z１Ｘ\u{0141}\u{0301}\u{0000}\u{FEFF}😀 +\\-xX]{0,20}";
    prop_oneof![
        any::<String>(),
        near,
        "[0-9]{17}[0-9Xx]",
        "[0-9A-Y]{18}",
        "[0-9]{5,13}",
        "\\+?(86)?1[0-9]{10}",
        (uscc_strategy(), any::<Index>(), any::<char>()).prop_map(|(code, i, c)| replace_char(&code, i.index(18), c)),
        (resident_id_strategy(), any::<Index>(), any::<char>()).prop_map(|(id, i, c)| replace_char(
            &id,
            i.index(18),
            c
        )),
    ]
}

fn replace_char(text: &str, at: usize, with: char) -> String {
    text.chars()
        .enumerate()
        .map(|(i, c)| if i == at { with } else { c })
        .collect()
}

/// A valid 统一社会信用代码 built the way GB 32100 builds one.
fn uscc_strategy() -> impl Strategy<Value = String> {
    ("[0-9A-HJ-NP-RTUW-Y]{2}", "[0-9]{6}", "[0-9A-HJ-NP-RTUW-Y]{9}").prop_map(|(head, division, rest)| {
        let first17 = format!("{head}{division}{rest}");
        let check = uscc_check_char(&first17).expect("alphabet");
        format!("{first17}{check}")
    })
}

fn days_in(year: u32, month: u32) -> u32 {
    match month {
        2 if (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// A valid 公民身份号码: a province 11-82, any real date from 1800 on, any sequence.
fn resident_id_strategy() -> impl Strategy<Value = String> {
    (
        11u32..=82,
        0u32..10_000,
        1800u32..=9999,
        1u32..=12,
        any::<Index>(),
        0u32..1000,
    )
        .prop_map(|(province, rest, year, month, day, sequence)| {
            let day = day.index(days_in(year, month) as usize) as u32 + 1;
            let first17 = format!("{province:02}{rest:04}{year:04}{month:02}{day:02}{sequence:03}");
            let check = resident_id_check_char(&first17).expect("digits");
            format!("{first17}{check}")
        })
}

#[test]
fn identifier_corpus() {
    for (name, bytes) in corpus("identifiers") {
        for text in texts(&bytes) {
            all_identifier_checks(&text).unwrap_or_else(|e| panic!("{name}: {text:?}: {e}"));
        }
        let content = String::from_utf8_lossy(&bytes);
        let accepted = check_uscc(&content).is_ok()
            || check_resident_id(&content).is_ok()
            || validate_mobile(&content).is_ok()
            || validate_division_code(&content).is_ok();
        // Seeds named `valid-*` are well-formed identifiers; every other seed is hostile and must
        // be refused whole (a BOM, a CRLF or a full-width digit makes a code another text).
        assert_eq!(accepted, name.starts_with("valid-"), "{name}: {content:?}");
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn identifier_checks_never_panic_and_accept_only_their_shape(text in identifier_text()) {
        all_identifier_checks(&text)?;
    }

    /// GB 32100's weights are all non-zero modulo the prime 31, and pairwise different, so every
    /// single substitution and every swap of two adjacent different characters is caught.
    #[test]
    fn uscc_check_character_catches_every_substitution_and_adjacent_swap(
        code in uscc_strategy(),
        at in 0usize..18,
        with in prop::sample::select(USCC_ALPHABET.chars().collect::<Vec<_>>()),
        swap in 0usize..17,
    ) {
        prop_assert_eq!(check_uscc(&code), Ok(()));
        prop_assert_eq!(validate_uscc(&code), Ok(()));
        let original = code.as_bytes()[at] as char;
        if with != original {
            let mutated = replace_char(&code, at, with);
            let problem = check_uscc(&mutated);
            prop_assert!(problem.is_err(), "{} accepted", mutated);
            // Inside the division code a letter is a shape problem; elsewhere only the check
            // character can tell.
            let shape = (2..8).contains(&at) && !with.is_ascii_digit();
            if !shape {
                let is_check = matches!(problem, Err(IdentifierProblem::CheckCharacter(_)));
                prop_assert!(is_check, "{}: {:?}", mutated, problem);
            }
        }
        let mut swapped: Vec<char> = code.chars().collect();
        if swapped[swap] != swapped[swap + 1] && swap + 1 < 17 {
            swapped.swap(swap, swap + 1);
            let swapped: String = swapped.into_iter().collect();
            prop_assert!(check_uscc(&swapped).is_err(), "{} accepted", swapped);
        }
        // The check character in lower case, or outside the alphabet, is a shape problem.
        for bad in ['I', 'O', 'Z', 'S', 'V', 'a', 'z', '０', '\0'] {
            let is_shape = matches!(check_uscc(&replace_char(&code, 17, bad)), Err(IdentifierProblem::Shape(_)));
            prop_assert!(is_shape);
        }
    }

    /// MOD 11-2 weights are powers of two modulo the prime 11, never 0: every single changed
    /// digit is caught, and every other check character is a check-character problem.
    #[test]
    fn resident_id_check_character_catches_every_substitution(
        id in resident_id_strategy(),
        at in 0usize..18,
        with in prop::sample::select(RESIDENT_CHECK.chars().collect::<Vec<_>>()),
    ) {
        prop_assert_eq!(check_resident_id(&id), Ok(()));
        prop_assert_eq!(validate_resident_id(&id), Ok(()));
        let original = id.as_bytes()[at] as char;
        if with != original {
            let mutated = replace_char(&id, at, with);
            let problem = check_resident_id(&mutated);
            prop_assert!(problem.is_err(), "{} accepted", mutated);
            if at == 17 {
                prop_assert_eq!(
                    problem,
                    Err(IdentifierProblem::CheckCharacter(format!(
                        "check character is '{with}', expected '{original}' (GB 11643)"
                    )))
                );
            }
        }
        let lower = id.replace('X', "x");
        if lower != id {
            let is_shape = matches!(check_resident_id(&lower), Err(IdentifierProblem::Shape(_)));
            prop_assert!(is_shape);
        }
    }

    /// The birth date is accepted exactly when the calendar has that day (from 1800 on).
    #[test]
    fn resident_id_birth_dates_follow_the_calendar(year in 1000u32..=9999, month in 0u32..=99, day in 0u32..=99) {
        let first17 = format!("110105{year:04}{month:02}{day:02}001");
        let id = format!("{first17}{}", resident_id_check_char(&first17).expect("digits"));
        let real = chrono::NaiveDate::from_ymd_opt(year as i32, month, day).is_some() && year >= 1800;
        let outcome = check_resident_id(&id);
        prop_assert_eq!(outcome.is_ok(), real, "{}: {:?}", id, outcome);
    }
}

// ---------------------------------------------------------------------------------------------
// Masking

/// Text with what breaks naive masking: multi-byte Chinese, combining marks, emoji with
/// zero-width joiners and variation selectors, control characters, NUL.
fn unicode_text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "\\PC{0,40}",
        "[a-z0-9张王李欧阳\u{0300}-\u{036F}\u{1F468}\u{1F469}\u{1F467}\u{200D}\u{FE0F}\u{1F1E8}\u{1F1F3}\u{0000}\r\n]{0,40}",
        "[0-9]{17}[0-9X]",
        "1[3-9][0-9]{9}",
    ]
}

fn mask_rule() -> impl Strategy<Value = MaskRule> {
    let count = prop_oneof![
        4 => 0usize..24,
        1 => Just(usize::MAX),
        1 => Just(usize::MAX / 2 + 1),
        1 => any::<usize>(),
    ];
    prop_oneof![
        Just(MaskRule::ResidentId),
        Just(MaskRule::Mobile),
        Just(MaskRule::PersonalName),
        (count.clone(), count).prop_map(|(first, last)| MaskRule::Keep { first, last }),
    ]
}

fn kept(rule: MaskRule) -> (usize, usize) {
    match rule {
        MaskRule::ResidentId => (6, 4),
        MaskRule::Mobile => (3, 4),
        MaskRule::PersonalName => (1, 0),
        MaskRule::Keep { first, last } => (first, last),
    }
}

/// The masking promise: as many characters as the value (at least one), the rule's prefix and
/// suffix kept only when something is left to mask between them, masks everywhere else.
fn masking_holds(rule: MaskRule, value: &str) -> Result<(), TestCaseError> {
    let masked = rule.apply(value);
    let input: Vec<char> = value.chars().collect();
    let output: Vec<char> = masked.chars().collect();
    let n = input.len();
    prop_assert_eq!(output.len(), n.max(1), "{:?} on {:?} gave {:?}", rule, value, masked);
    let (first, last) = kept(rule);
    if first.checked_add(last).is_some_and(|both| both < n) {
        prop_assert_eq!(&output[..first], &input[..first]);
        prop_assert_eq!(&output[n - last..], &input[n - last..]);
        prop_assert!(output[first..n - last].iter().all(|&c| c == MASK));
    } else {
        prop_assert!(
            output.iter().all(|&c| c == MASK),
            "{:?} on {:?} gave {:?}",
            rule,
            value,
            masked
        );
    }
    Ok(())
}

#[test]
fn masking_corpus() {
    let rules = [
        MaskRule::ResidentId,
        MaskRule::Mobile,
        MaskRule::PersonalName,
        MaskRule::Keep { first: 0, last: 0 },
        MaskRule::Keep { first: 2, last: 1 },
        MaskRule::Keep {
            first: usize::MAX,
            last: 1,
        },
        MaskRule::Keep {
            first: 1,
            last: usize::MAX,
        },
    ];
    for (name, bytes) in corpus("masking") {
        for text in texts(&bytes) {
            for rule in rules {
                masking_holds(rule, &text).unwrap_or_else(|e| panic!("{name}: {rule:?} on {text:?}: {e}"));
            }
            // The corpus doubles as rule texts: none may panic, and what parses prints back.
            if let Some(rule) = MaskRule::parse(&text) {
                assert_eq!(MaskRule::parse(&rule.as_text()), Some(rule), "{name}");
            }
        }
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn masking_keeps_only_what_the_rule_says(rule in mask_rule(), value in unicode_text()) {
        masking_holds(rule, &value)?;
    }

    #[test]
    fn mask_rules_read_back_and_arbitrary_rule_text_never_panics(rule in mask_rule(), text in unicode_text(), first in any::<u128>()) {
        prop_assert_eq!(MaskRule::parse(&rule.as_text()), Some(rule));
        let _ = MaskRule::parse(&text);
        let _ = MaskRule::parse(&format!("keep:{text}"));
        // Counts past usize are refused, not wrapped.
        if first > usize::MAX as u128 {
            prop_assert_eq!(MaskRule::parse(&format!("keep:{first}:1")), None);
        }
    }

    /// A masked field becomes its masked text (a number as its JSON text); null and the fields
    /// without a rule are left as they were.
    #[test]
    fn records_are_masked_only_where_a_rule_says(
        record in json_value(),
        rules in prop::collection::vec(("[a-c]|.{0,4}", mask_rule()), 0..4),
    ) {
        let mut masked = record.clone();
        mask_record(&mut masked, &rules);
        let (Some(before), Some(after)) = (record.as_object(), masked.as_object()) else {
            prop_assert_eq!(masked, record);
            return Ok(());
        };
        prop_assert_eq!(before.len(), after.len());
        for (field, value) in before {
            let rule = rules.iter().find(|(f, _)| f == field).map(|(_, r)| *r);
            let expected = match (rule, value) {
                (None, _) | (_, Value::Null) => value.clone(),
                // Later rules for the same field apply to the result of earlier ones.
                (Some(_), _) => {
                    let mut text = match value {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    for (_, rule) in rules.iter().filter(|(f, _)| f == field) {
                        text = rule.apply(&text);
                    }
                    Value::String(text)
                }
            };
            prop_assert_eq!(&after[field], &expected);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Schema compatibility

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        unicode_text().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec(("[a-c]|.{0,6}", inner), 0..6)
                .prop_map(|pairs| Value::Object(pairs.into_iter().collect())),
        ]
    })
}

fn object(pairs: impl IntoIterator<Item = (&'static str, Value)>) -> Value {
    Value::Object(pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
}

fn small_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        (-3i64..=3).prop_map(Value::from),
        Just(json!(0.5)),
        Just(json!(2.0)),
        prop::sample::select(vec!["", "a", "ab", "张三", "😀"]).prop_map(Value::from),
        Just(json!([])),
        Just(json!([1, "a"])),
        Just(json!({})),
        Just(json!({"a": 1})),
    ]
}

const TYPES: [&str; 8] = [
    "null", "boolean", "object", "array", "string", "integer", "number", "nonsense",
];

/// One keyword (or a few) of a schema, without subschemas.
fn schema_leaf() -> impl Strategy<Value = Value> {
    let type_name = prop::sample::select(TYPES.to_vec());
    let bound = prop::sample::select(vec![
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "multipleOf",
        "minLength",
        "maxLength",
        "minItems",
        "maxItems",
        "minProperties",
        "maxProperties",
        "minContains",
        "maxContains",
    ]);
    let number = prop_oneof![
        (-3i64..=5).prop_map(Value::from),
        Just(json!(0.5)),
        Just(json!(0)),
        Just(json!(-0.0)),
        Just(json!(1e308)),
        Just(json!(u64::MAX)),
        Just(json!(i64::MIN)),
        Just(json!(5e-324)),
        Just(json!("3")),
        Just(json!(true)),
    ];
    let reference = prop_oneof![
        Just("#".to_string()),
        Just("#/$defs/a".to_string()),
        Just("#/$defs/b".to_string()),
        Just("#/properties/a".to_string()),
        Just("#/$defs/%61".to_string()),
        Just("#/%ZZ".to_string()),
        Just("#/$defs/a~1b".to_string()),
        Just("#%".to_string()),
        Just("xinqiao://schemas/a/1".to_string()),
        Just("https://example.com/s.json".to_string()),
        ".{0,8}",
    ];
    prop_oneof![
        Just(json!(true)),
        Just(json!(false)),
        Just(json!({})),
        type_name.clone().prop_map(|t| object([("type", json!(t))])),
        prop::collection::vec(type_name, 0..4).prop_map(|ts| object([("type", json!(ts))])),
        small_value().prop_map(|v| object([("const", v)])),
        prop::collection::vec(small_value(), 0..4).prop_map(|vs| object([("enum", Value::Array(vs))])),
        (bound, number).prop_map(|(k, n)| object([(k, n)])),
        prop::sample::select(vec!["^a", "^[0-9]+$", "(", ""]).prop_map(|p| object([("pattern", json!(p))])),
        prop::sample::select(vec!["uscc", "date", "email", "cn-mobile"]).prop_map(|f| object([("format", json!(f))])),
        reference.prop_map(|r| object([("$ref", json!(r))])),
        any::<bool>().prop_map(|b| object([("uniqueItems", json!(b))])),
        prop::collection::vec(prop::sample::select(vec!["a", "b", "c", "d"]), 0..3)
            .prop_map(|names| object([("required", json!(names))])),
        prop::sample::select(vec!["exclusiveMinimum", "exclusiveMaximum"]).prop_map(|k| object([(k, json!(true))])),
        Just(json!({"title": "名称", "description": "x", "x-unknown": [1, 2]})),
        // Not schemas at all.
        small_value(),
    ]
}

/// A JSON Schema, nested, built from the keywords the checker reasons about, those it only
/// compares for equality, references (resolvable or not) and values that are no schema at all.
fn schema_strategy() -> impl Strategy<Value = Value> {
    schema_leaf().prop_recursive(4, 40, 4, |inner| {
        let name = prop::sample::select(vec!["a", "b", "c", "d", "a/b", "~"]);
        prop_oneof![
            // A conjunction of keywords on one object.
            prop::collection::vec(inner.clone(), 1..4).prop_map(|parts| merge(&parts)),
            (
                prop::collection::btree_map(name, inner.clone(), 0..4),
                prop::option::of(inner.clone()),
                inner.clone()
            )
                .prop_map(|(props, extra, rest)| {
                    let mut schema = Map::new();
                    schema.insert(
                        "properties".into(),
                        Value::Object(props.into_iter().map(|(k, v)| (k.to_string(), v)).collect()),
                    );
                    if let Some(extra) = extra {
                        schema.insert("additionalProperties".into(), extra);
                    }
                    merge(&[Value::Object(schema), rest])
                }),
            (
                prop::sample::select(vec![
                    "items",
                    "additionalProperties",
                    "unevaluatedProperties",
                    "unevaluatedItems",
                    "additionalItems",
                    "not",
                    "contains",
                    "propertyNames",
                    "if",
                    "then",
                    "else",
                ]),
                inner.clone()
            )
                .prop_map(|(k, s)| object([(k, s)])),
            (
                prop::sample::select(vec!["allOf", "anyOf", "oneOf", "prefixItems", "items"]),
                prop::collection::vec(inner.clone(), 0..4)
            )
                .prop_map(|(k, v)| object([(k, Value::Array(v))])),
            (inner.clone(), inner.clone(), inner.clone())
                .prop_map(|(a, b, rest)| { merge(&[object([("$defs", object([("a", a), ("b", b)]))]), rest]) }),
            (inner.clone(), inner).prop_map(|(a, b)| object([
                ("dependentSchemas", object([("a", a)])),
                ("patternProperties", object([("^x", b)]))
            ])),
        ]
    })
}

/// The union of the keywords of several schema objects (the first one wins a clash).
fn merge(parts: &[Value]) -> Value {
    let mut merged = Map::new();
    for part in parts {
        if let Value::Object(m) = part {
            for (k, v) in m {
                merged.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
    }
    Value::Object(merged)
}

/// Every object inside a value, by JSON pointer.
fn object_pointers(value: &Value, at: String, out: &mut Vec<String>) {
    match value {
        Value::Object(m) => {
            out.push(at.clone());
            for (k, v) in m {
                object_pointers(v, format!("{at}/{}", k.replace('~', "~0").replace('/', "~1")), out);
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                object_pointers(v, format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
}

/// A schema and a small edit of it (a keyword added, replaced or removed somewhere inside), so
/// that pairs are often compatible and the checker's verdict matters.
fn schema_pair() -> impl Strategy<Value = (Value, Value)> {
    (
        schema_strategy(),
        any::<Index>(),
        schema_leaf(),
        any::<bool>(),
        schema_strategy(),
        0u8..8,
    )
        .prop_map(|(old, at, edit, remove, other, kind)| {
            let new = match kind {
                0 => other,
                1 => old.clone(),
                _ => {
                    let mut new = old.clone();
                    let mut pointers = Vec::new();
                    object_pointers(&new, String::new(), &mut pointers);
                    if !pointers.is_empty() {
                        let pointer = &pointers[at.index(pointers.len())];
                        if let Some(Value::Object(target)) = new.pointer_mut(pointer) {
                            match (remove, edit) {
                                (true, _) if !target.is_empty() => {
                                    let key = target.keys().nth(at.index(target.len())).cloned().expect("a key");
                                    target.remove(&key);
                                }
                                (_, Value::Object(keywords)) => target.extend(keywords),
                                _ => {}
                            }
                        }
                    }
                    new
                }
            };
            (old, new)
        })
}

/// Time a check may take in a debug build on a busy machine before it counts as a hang.
const CHECK_LIMIT: Duration = Duration::from_secs(15);

fn run_check(mode: CompatibilityMode, previous: &[Value], new: &Value) -> Result<Vec<Incompatibility>, TestCaseError> {
    let (previous_owned, new_owned) = (previous.to_vec(), new.clone());
    let found = within(CHECK_LIMIT, move || {
        let refs: Vec<&Value> = previous_owned.iter().collect();
        check(mode, &refs, &new_owned)
    });
    let Some(found) = found else {
        return Err(TestCaseError::fail(format!(
            "{mode} check did not finish within {CHECK_LIMIT:?}: previous {previous:?}, new {new}"
        )));
    };
    for finding in &found {
        prop_assert!(!finding.reason.is_empty());
        prop_assert!(
            well_formed_pointer(&finding.pointer),
            "bad pointer {:?} ({})",
            finding.pointer,
            finding.reason
        );
    }
    Ok(found)
}

/// `""` or `/`-separated tokens in which `~` only starts `~0` or `~1`.
fn well_formed_pointer(pointer: &str) -> bool {
    (pointer.is_empty() || pointer.starts_with('/'))
        && pointer
            .split('~')
            .skip(1)
            .all(|rest| rest.starts_with('0') || rest.starts_with('1'))
}

/// The relations between the modes that hold whatever the schemas.
fn modes_agree(old: &Value, new: &Value) -> Result<(), TestCaseError> {
    let previous = std::slice::from_ref(old);
    let backward = run_check(CompatibilityMode::Backward, previous, new)?;
    let forward = run_check(CompatibilityMode::Forward, previous, new)?;
    let full = run_check(CompatibilityMode::Full, previous, new)?;
    prop_assert_eq!(&full, &[backward.clone(), forward.clone()].concat());
    prop_assert_eq!(
        &run_check(CompatibilityMode::BackwardTransitive, previous, new)?,
        &backward
    );
    prop_assert_eq!(
        &run_check(CompatibilityMode::ForwardTransitive, previous, new)?,
        &forward
    );
    prop_assert_eq!(&run_check(CompatibilityMode::FullTransitive, previous, new)?, &full);
    prop_assert!(run_check(CompatibilityMode::None, previous, new)?.is_empty());
    // FORWARD is BACKWARD with the roles swapped.
    let swapped = run_check(CompatibilityMode::Backward, std::slice::from_ref(new), old)?;
    prop_assert_eq!(
        forward.is_empty(),
        swapped.is_empty(),
        "forward {:?}, swapped {:?}",
        forward,
        swapped
    );
    Ok(())
}

/// An unchanged schema can always be registered again, except past the checker's documented
/// bound (64 levels, 20 000 comparisons).
fn compatible_with_itself(schema: &Value) -> Result<(), TestCaseError> {
    let mut same = run_check(CompatibilityMode::Full, std::slice::from_ref(schema), schema)?;
    same.retain(|f| !f.reason.contains("too deeply nested or too large"));
    prop_assert!(same.is_empty(), "{} is not compatible with itself: {:?}", schema, same);
    Ok(())
}

fn compatibility_holds(old: &Value, new: &Value) -> Result<(), TestCaseError> {
    modes_agree(old, new)?;
    compatible_with_itself(old)?;
    compatible_with_itself(new)
}

/// Found by the fuzz run: `arrays()` compares the reader's `unevaluatedItems` with the writer's
/// `items` (absent, so `true`), so a schema with `unevaluatedItems` is refused as incompatible
/// with itself, and cannot be registered again unchanged.
#[test]
fn an_unchanged_schema_with_unevaluated_items_is_compatible_with_itself() {
    let schema = json!({"type": "array", "unevaluatedItems": {"type": "string"}});
    for mode in CompatibilityMode::ALL {
        assert_eq!(check(mode, &[&schema], &schema), vec![], "{mode}");
    }
}

/// Found by the fuzz run: for a writer with finitely many values (`enum`, `const`), `compare()`
/// drops only some of the reader keywords the writer repeats (`pattern`, `format`, the
/// combinators), comparing them with the *flattened* writer, from which `allOf` is gone; every
/// value is then checked against the rest, and a keyword the checker cannot evaluate (a `pattern`
/// or `format` inside `allOf`, `unevaluatedProperties`) makes the schema incompatible with itself.
#[test]
fn an_unchanged_enumeration_is_compatible_with_itself() {
    for schema in [
        json!({"allOf": [{"enum": ["a", "b"]}, {"pattern": "^a"}]}),
        json!({"type": "string", "allOf": [{"enum": ["a", "b"]}, {"format": "uscc"}]}),
        json!({"type": "object", "enum": [{"a": 1}], "unevaluatedProperties": false}),
    ] {
        for mode in CompatibilityMode::ALL {
            assert_eq!(check(mode, &[&schema], &schema), vec![], "{mode}: {schema}");
        }
    }
}

/// Found by the fuzz run: the writer's `allOf` and `anyOf` branches are merged into it, the
/// reader's are not, so a closed object whose `patternProperties` sit in a branch is refused as
/// incompatible with itself (`objects()` compares the reader's top-level `patternProperties`,
/// absent, with the merged writer's).
#[test]
fn an_unchanged_closed_object_with_branches_is_compatible_with_itself() {
    for schema in [
        json!({"additionalProperties": false, "allOf": [{"patternProperties": {"^x": true}}]}),
        json!({"additionalProperties": false, "anyOf": [{"patternProperties": {"^x": true}}]}),
    ] {
        for mode in CompatibilityMode::ALL {
            assert_eq!(check(mode, &[&schema], &schema), vec![], "{mode}: {schema}");
        }
    }
}

/// Found by the fuzz run: checking a finite writer (`const`, `enum`) against a schema whose
/// `anyOf`/`allOf` branches refer back to it (`$ref: "#"`) evaluates 2^64 paths: the
/// checker's `validate` has a depth bound but no step budget, so one registration pins a core.
#[test]
fn self_referencing_alternatives_end() {
    let checks: Vec<Value> = [
        (json!({"const": 1}), json!({"anyOf": [{"$ref": "#"}, {"$ref": "#"}]})),
        (
            json!({"enum": [1, "a"]}),
            json!({"allOf": [{"$ref": "#"}, {"$ref": "#"}]}),
        ),
        (
            json!({"const": 1, "allOf": [{"$ref": "#"}, {"$ref": "#"}]}),
            json!({"const": 1, "allOf": [{"$ref": "#"}, {"$ref": "#"}]}),
        ),
    ]
    .into_iter()
    .flat_map(|(old, new)| {
        [CompatibilityMode::Backward, CompatibilityMode::Forward].map(|mode| check_job(mode, &[&old], &new))
    })
    .collect();
    in_child(&json!({"checks": checks})).unwrap_or_else(|e| panic!("{e}"));
}

// A hang cannot be stopped inside the process: the thread of a check that timed out keeps a core
// busy until the process ends. The corpus and the known hangs above therefore run their checks
// in a child process of this test binary (the `child` test below), which exits at the first
// failure and takes any hung check with it.

/// Set in the environment of a child process: the file that holds the checks it runs.
const JOB: &str = "XINQIAO_FUZZ_COMPATIBILITY_JOB";

fn check_job(mode: CompatibilityMode, previous: &[&Value], new: &Value) -> Value {
    json!({"mode": mode.as_str(), "previous": previous, "new": new})
}

/// Runs a job (`{"pairs": [[old, new], ...], "checks": [check_job, ...]}`) in a child process:
/// `Ok` if every pair holds ([`compatibility_holds`]) and every check ends cleanly.
fn in_child(job: &Value) -> Result<(), String> {
    static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let run = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let base = std::env::temp_dir().join(format!("xinqiao-fuzz-{}-{run}", std::process::id()));
    let (job_path, log_path) = (base.with_extension("json"), base.with_extension("log"));
    std::fs::write(&job_path, job.to_string()).expect("child job");
    let log = std::fs::File::create(&log_path).expect("child log");
    let mut child = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args(["child", "--exact", "--nocapture", "--test-threads", "1"])
        .env(JOB, &job_path)
        .stdout(log.try_clone().expect("child log"))
        .stderr(log)
        .spawn()
        .expect("child process");
    // The child gives up on a check after CHECK_LIMIT; this only guards against the child itself.
    let deadline = std::time::Instant::now() + CHECK_LIMIT * 20;
    let status = loop {
        if let Some(status) = child.try_wait().expect("child status") {
            break Some(status);
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let output = std::fs::read_to_string(&log_path).unwrap_or_default();
    let _ = std::fs::remove_file(&log_path);
    let _ = std::fs::remove_file(&job_path);
    match status {
        Some(status) if status.success() => Ok(()),
        Some(_) => Err(output
            .split_once(FAILED)
            .map_or(output.as_str(), |(_, why)| why)
            .trim()
            .to_string()),
        None => Err(format!("the child process did not end: {job}")),
    }
}

const FAILED: &str = "CHILD FAILED: ";

/// The child process's side of [`in_child`]; without a job in the environment it does nothing.
#[test]
fn child() {
    let Ok(path) = std::env::var(JOB) else { return };
    let job: Value = serde_json::from_slice(&std::fs::read(path).expect("the job file")).expect("a job");
    let run = || -> Result<(), String> {
        for pair in job["pairs"].as_array().into_iter().flatten() {
            compatibility_holds(&pair[0], &pair[1]).map_err(|e| format!("{} -> {}: {e}", pair[0], pair[1]))?;
        }
        for check in job["checks"].as_array().into_iter().flatten() {
            let mode = CompatibilityMode::parse(check["mode"].as_str().unwrap_or_default())?;
            let previous = check["previous"].as_array().cloned().unwrap_or_default();
            run_check(mode, &previous, &check["new"]).map_err(|e| e.to_string())?;
        }
        Ok(())
    };
    if let Err(why) = run() {
        eprintln!("{FAILED}{why}");
        // Exiting ends the thread of a check that did not finish, too.
        std::process::exit(1);
    }
}

#[test]
fn compatibility_corpus() {
    let seeds: Vec<(String, Value)> = corpus("compatibility")
        .into_iter()
        .map(|(name, bytes)| {
            // What the registry would be given: JSON if it parses, else the text as a value.
            let value = serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
            (name, value)
        })
        .collect();
    // First each seed against simple schemas both ways (every relation between the modes, and
    // each compatible with itself); a seed that fails there is left out of the rest, so that one
    // run names every failing seed without paying for a hang more than once.
    let simple = [
        json!({}),
        json!(true),
        json!({"type": "object", "properties": {"a": {"type": "string"}}}),
        json!({"enum": [1, "a", null]}),
    ];
    let mut failures = Vec::new();
    let mut good: Vec<&(String, Value)> = Vec::new();
    for seed in &seeds {
        let pairs: Vec<Value> = simple
            .iter()
            .flat_map(|other| [json!([seed.1, other]), json!([other, seed.1])])
            .collect();
        match in_child(&json!({ "pairs": pairs })) {
            Ok(()) => good.push(seed),
            Err(e) => failures.push(format!("{}: {e}", seed.0)),
        }
    }
    // Then every remaining seed against every other, both ways, and against all of them at once.
    let all: Vec<&Value> = good.iter().map(|(_, v)| v).collect();
    for (name, seed) in &good {
        let mut checks: Vec<Value> = all
            .iter()
            .flat_map(|other| {
                [CompatibilityMode::Backward, CompatibilityMode::Forward].map(|mode| check_job(mode, &[other], seed))
            })
            .collect();
        checks.push(check_job(CompatibilityMode::FullTransitive, &all, seed));
        if let Err(e) = in_child(&json!({ "checks": checks })) {
            failures.push(format!("{name} against the other seeds: {e}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} seeds failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Schemas nested as deep as serde_json lets a request carry them (128 levels), in every
/// keyword that nests.
#[test]
fn deeply_nested_schemas_end() {
    for keyword in [
        "properties",
        "items",
        "allOf",
        "anyOf",
        "not",
        "$defs",
        "additionalProperties",
    ] {
        let mut schema = json!({"type": "string"});
        loop {
            let deeper = match keyword {
                "properties" => json!({"type": "object", "properties": {"a": schema}, "required": ["a"]}),
                "allOf" | "anyOf" => json!({ keyword: [schema, {"type": "object"}] }),
                "$defs" => json!({"$defs": {"a": schema}, "$ref": "#/$defs/a"}),
                _ => json!({ keyword: schema }),
            };
            let text = serde_json::to_string(&deeper).expect("serialise");
            if serde_json::from_str::<Value>(&text).is_err() {
                break;
            }
            schema = deeper;
        }
        let parsed = schema;
        compatibility_holds(&parsed, &json!({})).unwrap_or_else(|e| panic!("{keyword}: {e}"));
        compatibility_holds(&parsed, &parsed).unwrap_or_else(|e| panic!("{keyword}: {e}"));
    }
}

proptest! {
    #![proptest_config(config())]


    #[test]
    fn compatibility_checks_end_and_agree_across_modes((old, new) in schema_pair()) {
        modes_agree(&old, &new)?;
    }

    #[test]
    fn a_schema_is_compatible_with_itself(schema in schema_strategy()) {
        compatible_with_itself(&schema)?;
    }

    #[test]
    fn transitive_modes_check_every_version(
        versions in prop::collection::vec(schema_strategy(), 1..3),
        new in schema_strategy(),
    ) {
        for mode in CompatibilityMode::ALL {
            let all = run_check(mode, &versions, &new)?;
            let numbered: Vec<(u32, &Value)> = versions.iter().enumerate().map(|(i, v)| (i as u32 + 1, v)).collect();
            let per_version: Vec<Incompatibility> = if mode.is_transitive() {
                numbered.iter().flat_map(|one| check_versions(mode, std::slice::from_ref(one), &new)).collect()
            } else {
                check_versions(mode, &numbered[numbered.len() - 1..], &new)
            };
            prop_assert_eq!(all, per_version);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Compatibility against a real validator: when the checker says "compatible", no record valid
// under the writer schema may be refused by the reader schema.

/// Schemas of the keywords the checker claims to reason about (no `$ref`, `format` or
/// `pattern`, which it compares as text), over a small vocabulary so that records hit them.
fn sound_schema() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(json!(true)),
        Just(json!(false)),
        Just(json!({})),
        prop::sample::select(TYPES[..7].to_vec()).prop_map(|t| object([("type", json!(t))])),
        prop::collection::vec(prop::sample::select(TYPES[..7].to_vec()), 1..3)
            .prop_map(|ts| object([("type", json!(ts))])),
        small_value().prop_map(|v| object([("const", v)])),
        prop::collection::vec(small_value(), 1..4).prop_map(|vs| object([("enum", Value::Array(vs))])),
        (
            prop::sample::select(vec![
                "minimum",
                "maximum",
                "exclusiveMinimum",
                "exclusiveMaximum",
                "minLength",
                "maxLength",
                "minItems",
                "maxItems",
                "minProperties",
                "maxProperties"
            ]),
            -1i64..=3
        )
            .prop_map(|(k, n)| object([(k, json!(n))])),
        prop::sample::select(vec![1, 2, 3]).prop_map(|n| object([("multipleOf", json!(n))])),
        Just(json!({"uniqueItems": true})),
        prop::collection::vec(prop::sample::select(vec!["a", "b"]), 1..3)
            .prop_map(|r| object([("required", json!(r))])),
    ];
    leaf.prop_recursive(3, 24, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 1..3).prop_map(|parts| merge(&parts)),
            (
                prop::collection::btree_map(prop::sample::select(vec!["a", "b", "c"]), inner.clone(), 0..3),
                prop::option::of(inner.clone()),
                inner.clone()
            )
                .prop_map(|(props, extra, rest)| {
                    let mut schema = Map::new();
                    schema.insert(
                        "properties".into(),
                        Value::Object(props.into_iter().map(|(k, v)| (k.to_string(), v)).collect()),
                    );
                    if let Some(extra) = extra {
                        schema.insert("additionalProperties".into(), extra);
                    }
                    merge(&[Value::Object(schema), rest])
                }),
            (inner.clone(), inner.clone()).prop_map(|(items, rest)| merge(&[object([("items", items)]), rest])),
            (
                prop::sample::select(vec!["allOf", "anyOf"]),
                prop::collection::vec(inner, 1..3)
            )
                .prop_map(|(k, v)| object([(k, Value::Array(v))])),
        ]
    })
}

fn sound_pair() -> impl Strategy<Value = (Value, Value)> {
    (
        sound_schema(),
        any::<Index>(),
        sound_schema(),
        any::<bool>(),
        sound_schema(),
        0u8..6,
    )
        .prop_map(|(old, at, edit, remove, other, kind)| {
            let mut new = if kind == 0 { other } else { old.clone() };
            if kind > 1 {
                let mut pointers = Vec::new();
                object_pointers(&new, String::new(), &mut pointers);
                // Only schema positions: not inside `const`/`enum` values.
                pointers.retain(|p| !p.contains("/const") && !p.contains("/enum"));
                if !pointers.is_empty() {
                    let pointer = &pointers[at.index(pointers.len())];
                    if let Some(Value::Object(target)) = new.pointer_mut(pointer) {
                        match (remove, edit) {
                            (true, _) if !target.is_empty() => {
                                let key = target.keys().nth(at.index(target.len())).cloned().expect("a key");
                                target.remove(&key);
                            }
                            (_, Value::Object(keywords)) => target.extend(keywords),
                            _ => {}
                        }
                    }
                }
            }
            (old, new)
        })
}

fn record_strategy() -> impl Strategy<Value = Value> {
    small_value().prop_recursive(3, 16, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(prop::sample::select(vec!["a", "b", "c"]), inner, 0..3)
                .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k.to_string(), v)).collect())),
        ]
    })
}

/// The schemas that constrain a value at one place: the schema and its `allOf` branches.
fn conjuncts(schema: &Value, out: &mut Vec<Value>) {
    out.push(schema.clone());
    if let Some(branches) = schema.get("allOf").and_then(Value::as_array) {
        for branch in branches {
            conjuncts(branch, out);
        }
    }
}

/// Whether a writer schema declares every property name in `value` (the checker's documented
/// reading: a writer produces no property it does not declare, unless it sets
/// `additionalProperties` explicitly). Through an `anyOf`, the value must be declared by one
/// alternative that it is valid under.
fn declared_only(schema: &Value, value: &Value) -> bool {
    let mut views = Vec::new();
    conjuncts(schema, &mut views);
    declared_in(&views, value)
}

fn declared_in(views: &[Value], value: &Value) -> bool {
    if let Some(at) = views.iter().position(|v| v.get("anyOf").is_some_and(Value::is_array)) {
        let mut rest = views.to_vec();
        let mut without = rest[at].clone();
        let branches = without
            .as_object_mut()
            .and_then(|m| m.remove("anyOf"))
            .and_then(|b| b.as_array().cloned())
            .unwrap_or_default();
        rest[at] = without;
        return branches.iter().any(|branch| {
            let mut with = rest.clone();
            conjuncts(branch, &mut with);
            valid(branch, value) && declared_in(&with, value)
        });
    }
    match value {
        Value::Object(fields) => fields.iter().all(|(name, field)| {
            let declared: Vec<&Value> = views
                .iter()
                .filter_map(|v| v.get("properties").and_then(|p| p.get(name)))
                .collect();
            if !declared.is_empty() {
                return declared.iter().all(|s| declared_only(s, field));
            }
            let extra: Vec<&Value> = views
                .iter()
                .filter_map(|v| v.get("additionalProperties"))
                .filter(|e| **e != Value::Bool(false))
                .collect();
            !extra.is_empty() && extra.iter().all(|s| declared_only(s, field))
        }),
        Value::Array(items) => {
            let schemas: Vec<&Value> = views.iter().filter_map(|v| v.get("items")).collect();
            items.iter().all(|item| {
                if schemas.is_empty() {
                    declared_only(&json!(true), item)
                } else {
                    schemas.iter().all(|s| declared_only(s, item))
                }
            })
        }
        _ => true,
    }
}

fn valid(schema: &Value, value: &Value) -> bool {
    jsonschema::validator_for(schema).is_ok_and(|v| v.is_valid(value))
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn compatible_means_every_writer_record_is_read(
        (old, new) in sound_pair(),
        records in prop::collection::vec(record_strategy(), 1..8),
    ) {
        let (Ok(old_validator), Ok(new_validator)) = (jsonschema::validator_for(&old), jsonschema::validator_for(&new)) else {
            return Ok(());
        };
        for (mode, writer, writer_validator, reader_validator) in [
            (CompatibilityMode::Backward, &old, &old_validator, &new_validator),
            (CompatibilityMode::Forward, &new, &new_validator, &old_validator),
        ] {
            if !run_check(mode, std::slice::from_ref(&old), &new)?.is_empty() {
                continue;
            }
            for record in &records {
                if writer_validator.is_valid(record) && declared_only(writer, record) {
                    prop_assert!(
                        reader_validator.is_valid(record),
                        "{} says compatible, but {} is valid under the writer and refused by the reader\nold: {}\nnew: {}",
                        mode, record, old, new
                    );
                }
            }
        }
    }
}
