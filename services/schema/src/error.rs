//! Why a schema could not be compiled.

use jsonschema::{ReferencingError, ValidationError, error::ValidationErrorKind};
use serde_json::Value;

use crate::formats::IdentifierFormat;
use crate::references::{ONLY_REGISTRY_REFERENCES, parse_reference};

/// A schema that cannot be used to validate records, with a message for the person who wrote it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchemaError {
    /// `$schema` names a dialect other than draft 2020-12 or draft-07.
    #[error("unsupported $schema {0}: use draft 2020-12 (the default) or draft-07")]
    UnsupportedDraft(String),
    /// The schema breaks its draft's rules, or uses a `format` that is not known.
    #[error("invalid schema{}: {message}", at(.pointer))]
    Invalid {
        /// JSON pointer into the schema; empty for the whole schema.
        pointer: String,
        message: String,
    },
    /// A `$ref` that is not a registered `xinqiao://schemas/<subject>/<version>`, or points to
    /// nothing.
    #[error("{0}")]
    Reference(String),
    /// The schema to compile is not in the source.
    #[error("schema '{subject}' version {version} is not registered")]
    NotFound { subject: String, version: u32 },
}

fn at(pointer: &str) -> String {
    if pointer.is_empty() {
        String::new()
    } else {
        format!(" at {pointer}")
    }
}

impl SchemaError {
    pub(crate) fn from_build(error: &ValidationError<'_>, schema: &Value) -> Self {
        match error.kind() {
            ValidationErrorKind::Referencing(ReferencingError::Unretrievable { uri, source }) => {
                SchemaError::Reference(if parse_reference(uri).is_some() {
                    format!("cannot resolve $ref '{uri}': {source}")
                } else {
                    // Also for relative references, which jsonschema refuses before retrieving.
                    format!("cannot resolve $ref '{uri}': {ONLY_REGISTRY_REFERENCES}")
                })
            }
            ValidationErrorKind::Referencing(ReferencingError::InvalidUri(e)) => {
                SchemaError::Reference(format!("cannot resolve $ref ({e}): {ONLY_REGISTRY_REFERENCES}"))
            }
            ValidationErrorKind::Referencing(other) => SchemaError::Reference(format!("cannot resolve $ref: {other}")),
            // Errors raised while compiling a keyword locate it in the schema; errors from the
            // meta-schema locate the offending part of the schema as their instance.
            ValidationErrorKind::Custom { keyword, message } if keyword.is_empty() => {
                let pointer = error.schema_path().as_str().to_string();
                let message = match schema.pointer(&pointer).and_then(Value::as_str) {
                    Some(format) if pointer.ends_with("/format") => format!(
                        "unknown format '{format}'; known are {} and the standard formats \
                         (date, date-time, email, uri, uuid, ...) except idn-email and idn-hostname",
                        IdentifierFormat::ALL.map(IdentifierFormat::name).join(", ")
                    ),
                    _ => message.clone(),
                };
                SchemaError::Invalid { pointer, message }
            }
            _ => SchemaError::Invalid {
                pointer: error.instance_path().as_str().to_string(),
                message: error.to_string(),
            },
        }
    }
}
