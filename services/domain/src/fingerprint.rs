//! Canonical schema fingerprints (指纹): the same schema, however its keys are ordered or its text
//! is spaced, registers once.
//!
//! The canonical form is compact JSON with every object's keys sorted by Unicode code point (the
//! byte order of their UTF-8), recursively. Strings are escaped and numbers printed exactly as
//! `serde_json` prints them, so `1` and `1.0` stay different documents. Keys are sorted here rather
//! than trusting `serde_json::Map` to be a sorted map: another crate in the build may switch on
//! serde_json's `preserve_order` feature, which makes the map keep insertion order instead.

use serde_json::Value;
use sha2::{Digest, Sha256};
use std::fmt::Write as _;

/// The canonical JSON text of a document: sorted keys, no insignificant whitespace.
pub fn canonical_json(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

/// The lower-case hexadecimal SHA-256 of the canonical JSON text (64 characters).
pub fn fingerprint(value: &Value) -> String {
    to_hex(&Sha256::digest(canonical_json(value).as_bytes()))
}

/// Bytes as lower-case hexadecimal, as digests are written.
pub fn to_hex(bytes: &[u8]) -> String {
    let mut hex = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        // Writing to a String cannot fail.
        let _ = write!(hex, "{byte:02x}");
    }
    hex
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::String(s) => write_string(s, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (key, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_string(key, out);
                out.push(':');
                write_canonical(item, out);
            }
            out.push('}');
        }
    }
}

/// Escapes a string the way serde_json does: `"` and `\`, the short forms `\b \f \n \r \t`, and
/// `\u00xx` for the other control characters; everything else, including non-ASCII, as is.
fn write_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::{canonical_json, fingerprint};
    use serde_json::{Value, json};

    fn parse(text: &str) -> Value {
        serde_json::from_str(text).expect("test JSON parses")
    }

    #[test]
    fn sorts_keys_recursively_and_drops_whitespace() {
        let value = parse(r#"{ "b": 1, "a": { "z": [ {"y": 2, "x": 1} ], "c": null } }"#);
        assert_eq!(canonical_json(&value), r#"{"a":{"c":null,"z":[{"x":1,"y":2}]},"b":1}"#);
    }

    #[test]
    fn key_order_and_whitespace_do_not_change_the_fingerprint() {
        let a = parse(
            r#"{"type":"object","properties":{"name":{"type":"string"},"age":{"type":"integer"}},"required":["name"]}"#,
        );
        let b = parse(
            "{\n  \"required\": [\"name\"],\n  \"properties\": {\n    \"age\": {\"type\": \"integer\"},\n    \"name\": {\"type\": \"string\"}\n  },\n  \"type\": \"object\"\n}",
        );
        assert_eq!(fingerprint(&a), fingerprint(&b));
    }

    #[test]
    fn different_content_gives_a_different_fingerprint() {
        let a = json!({"type": "object", "required": ["name", "age"]});
        // Array order is significant in JSON.
        let b = json!({"type": "object", "required": ["age", "name"]});
        assert_ne!(fingerprint(&a), fingerprint(&b));
        assert_ne!(
            fingerprint(&json!({"maximum": 1})),
            fingerprint(&json!({"maximum": 1.0}))
        );
        assert_ne!(fingerprint(&json!("1")), fingerprint(&json!(1)));
    }

    #[test]
    fn fingerprint_is_lowercase_hex_sha256() {
        // SHA-256 of the two bytes `{}`.
        assert_eq!(
            fingerprint(&json!({})),
            "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
        );
        let f = fingerprint(&json!({"type": "string"}));
        assert_eq!(f.len(), 64);
        assert!(f.chars().all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)));
    }

    #[test]
    fn strings_and_numbers_print_as_serde_json_prints_them() {
        let value = json!({
            "text": "引号\"反斜杠\\\n\t\u{1}\u{7f}😀 </script>",
            "numbers": [0, -1, 1.5, 1e100, 12345678901234567890u64, -9223372036854775808i64],
            "flags": [true, false, null]
        });
        // serde_json's own compact output sorts keys too while preserve_order is off; either way
        // the escaping and number forms must match it, value for value.
        let Value::Object(map) = &value else { unreachable!() };
        for item in map.values() {
            assert_eq!(canonical_json(item), serde_json::to_string(item).expect("serialises"));
        }
        let text = canonical_json(&value);
        assert_eq!(
            parse(&text),
            value,
            "the canonical text parses back to the same document"
        );
    }

    #[test]
    fn non_ascii_keys_sort_by_code_point() {
        let value = json!({"名称": 1, "b": 2, "A": 3, "é": 4});
        assert_eq!(canonical_json(&value), r#"{"A":3,"b":2,"é":4,"名称":1}"#);
    }
}
