//! Property tests: no record, cell or identifier text makes validation panic.

use proptest::prelude::*;
use serde_json::{Map, Value, json};
use xinqiao_domain::identifiers::{IdentifierProblem, check_resident_id, resident_id_check_char};
use xinqiao_schema::{FormatMode, IdentifierFormat, NoReferences, compile, records};

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        ".*".prop_map(Value::String),
        "[0-9A-Z]{18}".prop_map(Value::String),
        "[0-9]{17}[0-9Xx]".prop_map(Value::String),
        "1[0-9]{10}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 64, 6, |inner| {
        let key = prop_oneof![
            Just("uscc".to_string()),
            Just("id".to_string()),
            Just("ids".to_string()),
            Just("mobile".to_string()),
            Just("division".to_string()),
            Just("holder".to_string()),
            ".{0,8}",
        ];
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((key, inner), 0..6)
                .prop_map(|pairs| Value::Object(pairs.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

fn schema() -> Value {
    json!({
        "type": "object",
        "required": ["uscc"],
        "properties": {
            "uscc": {"type": "string", "format": "uscc"},
            "id": {"format": "cn-resident-id"},
            "ids": {"type": "array", "items": {"format": "cn-resident-id"}, "maxItems": 3},
            "mobile": {"format": "cn-mobile"},
            "division": {"format": "cn-division-code", "pattern": "^[0-9]+$"},
            "holder": {"oneOf": [{"format": "uscc"}, {"format": "cn-resident-id"}]},
            "date": {"format": "date"}
        },
        "additionalProperties": {"not": {"type": "null"}}
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_records_never_panic(record in json_value()) {
        for mode in [FormatMode::Strict, FormatMode::Lenient] {
            let compiled = compile(&schema(), &NoReferences, mode).expect("schema compiles");
            let outcome = compiled.validate_bounded(&record, 5);
            prop_assert!(outcome.errors.len() <= 5 && outcome.warnings.len() <= 5);
            prop_assert_eq!(outcome.is_valid(), compiled.is_valid(&record));
            if mode == FormatMode::Strict {
                prop_assert!(outcome.warnings.is_empty());
            }
        }
    }

    #[test]
    fn arbitrary_text_never_panics_a_format(text in ".*", digits in "[0-9Xx]{0,20}") {
        for format in IdentifierFormat::ALL {
            let _ = format.check(&text);
            let _ = format.explain(&digits);
        }
    }

    #[test]
    fn the_check_character_decides_a_well_formed_resident_id(
        division in "(11|31|44|65|82)[0-9]{4}",
        year in 1900u32..2030,
        month in 1u32..=12,
        day in 1u32..=28,
        sequence in "[0-9]{3}",
        other in "[0-9X]",
    ) {
        let first17 = format!("{division}{year}{month:02}{day:02}{sequence}");
        let check = resident_id_check_char(&first17).expect("17 digits");
        prop_assert_eq!(check_resident_id(&format!("{first17}{check}")), Ok(()));
        let other = other.chars().next().expect("one char");
        if other != check {
            let is_check_problem = matches!(
                check_resident_id(&format!("{first17}{other}")),
                Err(IdentifierProblem::CheckCharacter(_))
            );
            prop_assert!(is_check_problem);
        }
    }

    #[test]
    fn arbitrary_input_files_never_panic(text in ".{0,400}", bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        let schema = schema();
        for input in [text.as_bytes(), bytes.as_slice()] {
            for (line, _) in records::ndjson(input) {
                prop_assert!(line >= 1);
            }
            if let Ok(rows) = records::csv(input, &schema) {
                for (line, _) in rows {
                    prop_assert!(line >= 1);
                }
            }
        }
    }
}
