//! References between registered schemas: `xinqiao://schemas/<subject>/<version>`.
//!
//! A `$ref` resolves only through the caller's [`SchemaSource`], never over the network or from
//! the filesystem. jsonschema asks for a referenced document while it compiles, through a
//! [`jsonschema::Retrieve`] that must own its data, so [`Preloaded`] copies every schema reachable
//! from the root out of the source first.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use jsonschema::{Retrieve, Uri};
use serde_json::Value;

/// The scheme and authority of every reference Xinqiao resolves.
pub const REFERENCE_PREFIX: &str = "xinqiao://schemas/";

/// Why any other `$ref` is refused.
pub const ONLY_REGISTRY_REFERENCES: &str =
    "only xinqiao://schemas/<subject>/<version> references (and local '#...' ones) are allowed";

/// Where registered schemas come from: the hub's store (pre-loaded, since this is synchronous) or
/// the offline command's files.
pub trait SchemaSource {
    /// The schema document of `subject` at `version`, or `None` when there is none.
    fn schema(&self, subject: &str, version: u32) -> Option<Value>;
}

impl SchemaSource for HashMap<(String, u32), Value> {
    fn schema(&self, subject: &str, version: u32) -> Option<Value> {
        self.get(&(subject.to_string(), version)).cloned()
    }
}

/// A source for schemas that reference no other subject.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoReferences;

impl SchemaSource for NoReferences {
    fn schema(&self, _subject: &str, _version: u32) -> Option<Value> {
        None
    }
}

/// The URI that names a registered schema version.
pub fn reference_uri(subject: &str, version: u32) -> String {
    format!("{REFERENCE_PREFIX}{subject}/{version}")
}

/// The subject and version named by `xinqiao://schemas/<subject>/<version>`, with or without a
/// `#fragment`; `None` for any other URI.
pub fn parse_reference(uri: &str) -> Option<(String, u32)> {
    let rest = uri.strip_prefix(REFERENCE_PREFIX)?;
    let document = rest.split_once('#').map_or(rest, |(document, _)| document);
    let (subject, version) = document.split_once('/')?;
    let subject_ok = !subject.is_empty() && !subject.contains(['?', '#']) && !subject.contains(char::is_whitespace);
    let version_ok = !version.is_empty() && version.bytes().all(|b| b.is_ascii_digit());
    if !subject_ok || !version_ok {
        return None;
    }
    Some((subject.to_string(), version.parse().ok()?))
}

/// The registered schemas a schema refers to with `$ref` or `$dynamicRef`, anywhere in it, each
/// once, in order of first appearance. Other references (`#/$defs/…`) are not listed; only this
/// document is read, so references of the referenced schemas are not included.
pub fn references(schema: &Value) -> Vec<(String, u32)> {
    let mut found = Vec::new();
    collect_references(schema, &mut found);
    found
}

fn collect_references(value: &Value, found: &mut Vec<(String, u32)>) {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                if let ("$ref" | "$dynamicRef", Value::String(uri)) = (key.as_str(), child)
                    && let Some(reference) = parse_reference(uri)
                    && !found.contains(&reference)
                {
                    found.push(reference);
                }
                collect_references(child, found);
            }
        }
        Value::Array(items) => items.iter().for_each(|item| collect_references(item, found)),
        _ => {}
    }
}

/// The registered schemas reachable from a root schema, copied out of a [`SchemaSource`], and the
/// only documents jsonschema may retrieve.
#[derive(Debug, Clone, Default)]
pub(crate) struct Preloaded {
    schemas: Arc<HashMap<(String, u32), Value>>,
}

impl Preloaded {
    /// Follows references from `root` transitively. A reference the source lacks is left out
    /// here and reported by [`Retrieve::retrieve`] if the schema really uses it.
    pub(crate) fn load(root: &Value, source: &dyn SchemaSource) -> Self {
        let mut schemas = HashMap::new();
        let mut seen: HashSet<(String, u32)> = HashSet::new();
        let mut queue: VecDeque<(String, u32)> = references(root).into();
        while let Some(reference) = queue.pop_front() {
            if !seen.insert(reference.clone()) {
                continue;
            }
            if let Some(schema) = source.schema(&reference.0, reference.1) {
                queue.extend(references(&schema));
                schemas.insert(reference, schema);
            }
        }
        Preloaded {
            schemas: Arc::new(schemas),
        }
    }

    /// The subject versions this schema depends on, directly or through another one.
    pub(crate) fn subjects(&self) -> Vec<(String, u32)> {
        let mut subjects: Vec<_> = self.schemas.keys().cloned().collect();
        subjects.sort();
        subjects
    }
}

impl Retrieve for Preloaded {
    fn retrieve(&self, uri: &Uri<String>) -> Result<Value, Box<dyn std::error::Error + Send + Sync>> {
        let Some((subject, version)) = parse_reference(uri.as_str()) else {
            return Err(ONLY_REGISTRY_REFERENCES.into());
        };
        match self.schemas.get(&(subject.clone(), version)) {
            Some(schema) => Ok(schema.clone()),
            None => Err(format!("schema '{subject}' version {version} is not registered").into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_registry_uris() {
        assert_eq!(
            parse_reference("xinqiao://schemas/identifiers/1"),
            Some(("identifiers".into(), 1))
        );
        assert_eq!(
            parse_reference("xinqiao://schemas/legal-entity/12#/$defs/uscc"),
            Some(("legal-entity".into(), 12))
        );
        assert_eq!(parse_reference(&reference_uri("person", 3)), Some(("person".into(), 3)));
        for bad in [
            "https://example.com/schema",
            "xinqiao://schemas/identifiers",
            "xinqiao://schemas//1",
            "xinqiao://schemas/identifiers/v1",
            "xinqiao://schemas/identifiers/1/extra",
            "xinqiao://schemas/identifiers/1?x=1",
            "xinqiao://schemas/identifiers/99999999999",
            "xinqiao://other/identifiers/1",
            "#/$defs/uscc",
        ] {
            assert_eq!(parse_reference(bad), None, "{bad}");
        }
    }

    #[test]
    fn lists_references_once_in_order() {
        let schema = json!({
            "properties": {
                "code": {"$ref": "xinqiao://schemas/identifiers/1#/$defs/uscc"},
                "person": {"$ref": "xinqiao://schemas/person/2"},
                "items": {"type": "array", "items": [{"$ref": "xinqiao://schemas/identifiers/1#/$defs/mobile"}]},
                "local": {"$ref": "#/$defs/x"},
                "elsewhere": {"$ref": "https://example.com/x.json"},
                "$ref": {"type": "string"}
            }
        });
        assert_eq!(
            references(&schema),
            vec![("identifiers".to_string(), 1), ("person".to_string(), 2)]
        );
        assert!(references(&json!(true)).is_empty());
    }

    #[test]
    fn preloads_transitively_and_survives_cycles() {
        let mut source = HashMap::new();
        source.insert(("a".to_string(), 1), json!({"$ref": "xinqiao://schemas/b/1"}));
        source.insert(("b".to_string(), 1), json!({"$ref": "xinqiao://schemas/a/1"}));
        let root = json!({"$ref": "xinqiao://schemas/a/1"});
        let preloaded = Preloaded::load(&root, &source);
        assert_eq!(preloaded.subjects(), vec![("a".to_string(), 1), ("b".to_string(), 1)]);
    }
}
