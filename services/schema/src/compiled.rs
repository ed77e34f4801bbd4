//! A schema compiled once and shared, and the outcome of validating one record against it.

use jsonschema::{Draft, ValidationError, Validator, error::ValidationErrorKind};
use serde_json::Value;
use xinqiao_domain::identifiers::IdentifierProblem;

use crate::error::SchemaError;
use crate::formats::{self, FormatMode, IdentifierFormat};
use crate::references::{Preloaded, SchemaSource};

/// How many errors (and, separately, warnings) one record reports unless asked otherwise.
pub const DEFAULT_MAX_ERRORS: usize = 20;

/// Messages longer than this are cut: a large `const` would otherwise be quoted in full for each
/// record.
const MAX_MESSAGE_CHARS: usize = 300;

/// Stands in for the record's value in messages, so that personal data (a 身份证号, a mobile
/// number) is not copied into reports and logs.
const VALUE_PLACEHOLDER: &str = "value";

/// One failed rule in a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// JSON pointer into the record (`""` for the record itself, `/members/0/code`).
    pub instance_pointer: String,
    /// The schema keyword that failed: `required`, `type`, `format`, `pattern`, …
    pub keyword: String,
    /// What is wrong, in plain words.
    pub message: String,
}

/// The result of validating one record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecordOutcome {
    /// The record is invalid when there is at least one.
    pub errors: Vec<Violation>,
    /// Accepted problems (in [`FormatMode::Lenient`], wrong check characters).
    pub warnings: Vec<Violation>,
    /// More errors or warnings were found than the limit allowed to report.
    pub truncated: bool,
}

impl RecordOutcome {
    pub fn is_valid(&self) -> bool {
        self.errors.is_empty()
    }
}

/// A schema ready to validate records. Immutable, `Send + Sync`: share it behind an `Arc`.
pub struct CompiledSchema {
    validator: Validator,
    /// In lenient mode, the same schema compiled strictly: its check-character failures are the
    /// record's warnings.
    strict: Option<Validator>,
    mode: FormatMode,
    dependencies: Vec<(String, u32)>,
}

impl std::fmt::Debug for CompiledSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompiledSchema")
            .field("draft", &self.validator.draft())
            .field("mode", &self.mode)
            .field("dependencies", &self.dependencies)
            .finish_non_exhaustive()
    }
}

/// Compiles a schema (draft 2020-12 unless `$schema` says draft-07) with Xinqiao's identifier
/// formats, resolving `xinqiao://schemas/<subject>/<version>` references through `source`.
pub fn compile(schema: &Value, source: &dyn SchemaSource, mode: FormatMode) -> Result<CompiledSchema, SchemaError> {
    check_dialect(schema)?;
    let preloaded = Preloaded::load(schema, source);
    let build = |mode| {
        formats::register(jsonschema::options(), mode)
            .with_retriever(preloaded.clone())
            .build(schema)
            .map_err(|e| SchemaError::from_build(&e, schema))
    };
    let validator = build(mode)?;
    let strict = match mode {
        FormatMode::Strict => None,
        FormatMode::Lenient => Some(build(FormatMode::Strict)?),
    };
    Ok(CompiledSchema {
        validator,
        strict,
        mode,
        dependencies: preloaded.subjects(),
    })
}

/// Only the two dialects the registry promises; anything else (including a custom meta-schema,
/// which jsonschema would try to retrieve) is refused before compiling.
fn check_dialect(schema: &Value) -> Result<(), SchemaError> {
    match schema.get("$schema") {
        None => Ok(()),
        Some(Value::String(uri)) if matches!(Draft::from_schema_uri(uri), Draft::Draft202012 | Draft::Draft7) => Ok(()),
        Some(other) => Err(SchemaError::UnsupportedDraft(other.to_string())),
    }
}

impl CompiledSchema {
    pub fn mode(&self) -> FormatMode {
        self.mode
    }

    /// `"2020-12"` or `"7"`.
    pub fn draft(&self) -> &'static str {
        match self.validator.draft() {
            Draft::Draft7 => "7",
            _ => "2020-12",
        }
    }

    /// Every registered schema this one uses, directly or through another, sorted.
    pub fn dependencies(&self) -> &[(String, u32)] {
        &self.dependencies
    }

    /// Validates a record, reporting at most [`DEFAULT_MAX_ERRORS`] errors and as many warnings.
    pub fn validate(&self, record: &Value) -> RecordOutcome {
        self.validate_bounded(record, DEFAULT_MAX_ERRORS)
    }

    /// Validates a record, reporting at most `max` errors and at most `max` warnings.
    pub fn validate_bounded(&self, record: &Value, max: usize) -> RecordOutcome {
        let mut outcome = RecordOutcome::default();
        for error in self.validator.iter_errors(record) {
            if outcome.errors.len() == max {
                outcome.truncated = true;
                break;
            }
            outcome.errors.push(violation(&error));
        }
        if let Some(strict) = &self.strict
            && !strict.is_valid(record)
        {
            let mut warnings = Vec::new();
            for error in strict.iter_errors(record) {
                collect_check_character_failures(&error, &mut warnings);
                if warnings.len() > max {
                    break;
                }
            }
            if warnings.len() > max {
                warnings.truncate(max);
                outcome.truncated = true;
            }
            outcome.warnings = warnings;
        }
        outcome
    }

    /// Whether the record has no errors; cheaper than [`CompiledSchema::validate`].
    pub fn is_valid(&self, record: &Value) -> bool {
        self.validator.is_valid(record)
    }
}

fn violation(error: &ValidationError<'_>) -> Violation {
    let message = match error.kind() {
        ValidationErrorKind::Format { format } => identifier_failure(format, error.instance()).map(|(_, m)| m),
        _ => None,
    };
    Violation {
        instance_pointer: error.instance_path().as_str().to_string(),
        keyword: error.kind().keyword().to_string(),
        message: message.unwrap_or_else(|| shortened(error.masked_with(VALUE_PLACEHOLDER).to_string())),
    }
}

fn shortened(mut message: String) -> String {
    if let Some((cut, _)) = message.char_indices().nth(MAX_MESSAGE_CHARS) {
        message.truncate(cut);
        message.push('…');
    }
    message
}

/// For a value that failed one of Xinqiao's formats: whether only its check character is wrong,
/// and the reason in plain words (jsonschema's own message names only the format).
fn identifier_failure(format: &str, value: &Value) -> Option<(bool, String)> {
    let format = IdentifierFormat::from_name(format)?;
    let problem = format.check(value.as_str()?).err()?;
    let only_check_character = matches!(problem, IdentifierProblem::CheckCharacter(_));
    Some((only_check_character, format!("{} {problem}", format.label())))
}

/// Finds the wrong check characters in a strict validation error, also those inside the
/// branches of `anyOf`, `oneOf` and `propertyNames`, where jsonschema reports them as context.
fn collect_check_character_failures(error: &ValidationError<'_>, out: &mut Vec<Violation>) {
    match error.kind() {
        ValidationErrorKind::Format { format } => {
            if let Some((true, message)) = identifier_failure(format, error.instance()) {
                let warning = Violation {
                    instance_pointer: error.instance_path().as_str().to_string(),
                    keyword: "format".into(),
                    message,
                };
                if !out.contains(&warning) {
                    out.push(warning);
                }
            }
        }
        ValidationErrorKind::AnyOf { context }
        | ValidationErrorKind::OneOfNotValid { context }
        | ValidationErrorKind::OneOfMultipleValid { context } => {
            for branch in context {
                for error in branch {
                    collect_check_character_failures(error, out);
                }
            }
        }
        ValidationErrorKind::PropertyNames { error } => collect_check_character_failures(error, out),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::references::NoReferences;
    use serde_json::json;

    fn compiled(schema: Value, mode: FormatMode) -> CompiledSchema {
        compile(&schema, &NoReferences, mode).expect("schema compiles")
    }

    #[test]
    fn compiled_schemas_are_shareable() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<CompiledSchema>();
    }

    #[test]
    fn standard_formats_are_asserted_in_2020_12() {
        let schema = compiled(
            json!({"properties": {"d": {"type": "string", "format": "date"}}}),
            FormatMode::Strict,
        );
        assert!(schema.is_valid(&json!({"d": "2024-02-29"})));
        let outcome = schema.validate(&json!({"d": "2023-02-29"}));
        assert_eq!(outcome.errors.len(), 1, "{outcome:?}");
        assert_eq!(outcome.errors[0].keyword, "format");
        assert_eq!(outcome.errors[0].instance_pointer, "/d");
    }

    #[test]
    fn messages_do_not_repeat_the_value() {
        let schema = compiled(json!({"properties": {"id": {"type": "integer"}}}), FormatMode::Strict);
        let outcome = schema.validate(&json!({"id": "110105194912310021"}));
        assert_eq!(outcome.errors[0].keyword, "type");
        assert!(!outcome.errors[0].message.contains("1101"), "{:?}", outcome.errors[0]);
    }

    #[test]
    fn long_messages_are_cut() {
        let schema = compiled(json!({"const": "长".repeat(1000)}), FormatMode::Strict);
        let outcome = schema.validate(&json!("短"));
        assert_eq!(outcome.errors[0].keyword, "const");
        assert_eq!(outcome.errors[0].message.chars().count(), MAX_MESSAGE_CHARS + 1);
        assert!(outcome.errors[0].message.ends_with('…'));
    }

    #[test]
    fn errors_are_bounded() {
        let schema = compiled(json!({"items": {"type": "integer"}}), FormatMode::Strict);
        let record = Value::Array((0..50).map(|i| json!(format!("{i}"))).collect());
        let outcome = schema.validate(&record);
        assert_eq!(outcome.errors.len(), DEFAULT_MAX_ERRORS);
        assert!(outcome.truncated);
        let outcome = schema.validate_bounded(&record, 3);
        assert_eq!(outcome.errors.len(), 3);
        let outcome = schema.validate_bounded(&json!(["x"]), 3);
        assert_eq!(outcome.errors.len(), 1);
        assert!(!outcome.truncated);
    }

    #[test]
    fn unknown_formats_and_dialects_are_refused() {
        let err = compile(&json!({"format": "usc"}), &NoReferences, FormatMode::Strict).expect_err("refused");
        assert!(matches!(err, SchemaError::Invalid { .. }), "{err}");
        assert!(err.to_string().contains("usc"), "{err}");
        let err = compile(
            &json!({"$schema": "http://json-schema.org/draft-04/schema#"}),
            &NoReferences,
            FormatMode::Strict,
        )
        .expect_err("refused");
        assert!(matches!(err, SchemaError::UnsupportedDraft(_)), "{err}");
        let err = compile(
            &json!({"$schema": "https://example.com/my-dialect"}),
            &NoReferences,
            FormatMode::Strict,
        )
        .expect_err("refused");
        assert!(matches!(err, SchemaError::UnsupportedDraft(_)), "{err}");
    }

    #[test]
    fn warnings_are_found_inside_any_of() {
        let schema = json!({"properties": {"holder": {"anyOf": [{"format": "uscc"}, {"format": "cn-resident-id"}]}}});
        let lenient = compiled(schema.clone(), FormatMode::Lenient);
        let outcome = lenient.validate(&json!({"holder": "11100000000013127E"}));
        assert!(outcome.errors.is_empty(), "{outcome:?}");
        assert_eq!(outcome.warnings.len(), 1, "{outcome:?}");
        assert_eq!(outcome.warnings[0].instance_pointer, "/holder");
        assert!(outcome.warnings[0].message.contains("expected 'D'"));
        let strict = compiled(schema, FormatMode::Strict);
        let outcome = strict.validate(&json!({"holder": "11100000000013127E"}));
        assert_eq!(outcome.errors[0].keyword, "anyOf");
    }
}
