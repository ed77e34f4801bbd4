//! Shared record schemas: subjects, versions and who may change them.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

use crate::catalogue::{DataItem, EntryContent};

use crate::compatibility::CompatibilityMode;
use crate::identity::Caller;
use crate::{Error, Result};

/// The largest schema document the registry accepts, in bytes.
pub const MAX_SCHEMA_BYTES: usize = 256 * 1024;

/// A reference from one schema to a version of another subject (`xinqiao://schemas/<subject>/<version>`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SchemaRef {
    pub subject: String,
    pub version: u32,
}

/// One registered version of a subject.
#[derive(Debug, Clone, PartialEq)]
pub struct RegisteredSchema {
    pub subject: String,
    /// 1, 2, … per subject; never reused, also after a deletion.
    pub version: u32,
    /// The schema document as registered (JSON text).
    pub content: String,
    /// SHA-256 of the canonical JSON: identical content registers once.
    pub fingerprint: String,
    pub references: Vec<SchemaRef>,
    /// The department code or `admin:<name>` that registered it.
    pub registered_by: String,
    /// Soft-deleted: hidden from "latest" and listings, kept for readers that pinned it.
    pub deleted: bool,
    pub created_at: DateTime<Utc>,
}

/// A subject and its owner: the department that registered its first version (or the admin).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    pub name: String,
    pub owner: String,
    /// The subject's own compatibility mode; `None` follows the registry default.
    pub compatibility: Option<CompatibilityMode>,
    pub latest_version: Option<u32>,
    pub version_count: u32,
}

/// A subject name: lower-case ASCII letters, digits, `.`, `_` and `-`, starting with a letter or
/// digit, at most 100 characters (`legal-entity`, `identifiers`).
pub fn validate_subject(name: &str) -> std::result::Result<(), String> {
    if name.is_empty() || name.len() > 100 {
        return Err("must be 1 to 100 characters".into());
    }
    let first_ok = name.as_bytes()[0].is_ascii_lowercase() || name.as_bytes()[0].is_ascii_digit();
    let rest_ok = name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-'));
    if !first_ok || !rest_ok {
        return Err("may hold only a-z, 0-9, '.', '_' and '-', and starts with a letter or digit".into());
    }
    Ok(())
}

/// Who may add versions to a subject, change its compatibility mode or delete its versions: its
/// owner and the admin. A new subject belongs to whoever registers its first version.
pub fn change_subject(caller: &Caller, subject: Option<&Subject>) -> Result<()> {
    match subject {
        None => Ok(()),
        Some(_) if caller.is_admin() => Ok(()),
        Some(s) if caller.actor() == s.owner => Ok(()),
        Some(s) => Err(Error::PermissionDenied(format!(
            "subject '{}' belongs to {}; only its owner or the admin changes it",
            s.name, s.owner
        ))),
    }
}

/// Only the admin sets the registry-wide default compatibility mode.
pub fn change_default_compatibility(caller: &Caller) -> Result<()> {
    if caller.is_admin() {
        Ok(())
    } else {
        Err(Error::PermissionDenied(
            "only the platform admin sets the registry's default compatibility".into(),
        ))
    }
}

/// The JSON Schema type (and format or pattern) a data item's 数据类型 suggests, by the terms
/// catalogues use. Well-known identifier items get their enforced format.
fn item_schema(item: &DataItem) -> Value {
    let mut schema = Map::new();
    schema.insert("title".into(), json!(item.name));
    if !item.description.is_empty() {
        schema.insert("description".into(), json!(item.description));
    }
    let data_type = item.data_type.trim().to_lowercase();
    let known_format = match item.name.trim() {
        "统一社会信用代码" => Some("uscc"),
        "公民身份号码" | "身份证号" | "身份证号码" => Some("cn-resident-id"),
        "行政区划代码" => Some("cn-division-code"),
        "手机号码" | "手机号" => Some("cn-mobile"),
        _ => None,
    };
    match data_type.as_str() {
        _ if known_format.is_some() => {
            schema.insert("type".into(), json!("string"));
            schema.insert("format".into(), json!(known_format));
        }
        "数值型" | "数值" | "number" | "decimal" | "float" => {
            schema.insert("type".into(), json!("number"));
        }
        "整数型" | "整型" | "整数" | "integer" | "int" => {
            schema.insert("type".into(), json!("integer"));
        }
        "布尔型" | "布尔" | "boolean" | "bool" => {
            schema.insert("type".into(), json!("boolean"));
        }
        "日期型" | "日期" | "date" => {
            schema.insert("type".into(), json!("string"));
            schema.insert("format".into(), json!("date"));
        }
        "日期时间型" | "日期时间" | "datetime" | "timestamp" => {
            schema.insert("type".into(), json!("string"));
            schema.insert("format".into(), json!("date-time"));
        }
        _ => {
            schema.insert("type".into(), json!("string"));
            if item.length > 0 {
                schema.insert("maxLength".into(), json!(item.length));
            }
        }
    }
    Value::Object(schema)
}

/// A first JSON Schema for an entry's records, drawn from its data items (信息项): one property
/// per item, keyed by the item's name. The provider refines it (required fields, enums) before
/// registering it.
pub fn draft_from_entry(content: &EntryContent) -> Value {
    let properties: Map<String, Value> = content
        .items
        .iter()
        .map(|item| (item.name.trim().to_string(), item_schema(item)))
        .collect();
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": content.name,
        "description": content.summary,
        "type": "object",
        "properties": properties,
    })
}

/// The entry's data items that a schema does not describe: an item is covered by a top-level
/// property whose key or `title` is the item's name.
pub fn uncovered_items(content: &EntryContent, schema: &Value) -> Vec<String> {
    let properties = schema.get("properties").and_then(Value::as_object);
    let covered = |name: &str| {
        properties.is_some_and(|props| {
            props
                .iter()
                .any(|(key, prop)| key == name || prop.get("title").and_then(Value::as_str) == Some(name))
        })
    };
    content
        .items
        .iter()
        .map(|i| i.name.trim())
        .filter(|n| !covered(n))
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalogue::tests::draft;

    fn subject(owner: &str) -> Subject {
        Subject {
            name: "legal-entity".into(),
            owner: owner.into(),
            compatibility: None,
            latest_version: Some(1),
            version_count: 1,
        }
    }

    #[test]
    fn subject_names() {
        for ok in ["legal-entity", "identifiers", "e-licence.v2", "person_1", "0abc"] {
            assert_eq!(validate_subject(ok), Ok(()), "{ok}");
        }
        for bad in ["", "Legal", "-x", "a/b", "a b", "法人", &"x".repeat(101), "a%", "a'"] {
            assert!(validate_subject(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn owners_and_the_admin_change_a_subject() {
        let owner = Caller::Department("11330100MB00010011".into());
        let other = Caller::Department("11330100MB0002002B".into());
        let s = subject("11330100MB00010011");
        assert!(change_subject(&owner, Some(&s)).is_ok());
        assert!(change_subject(&Caller::Admin("ops".into()), Some(&s)).is_ok());
        assert!(matches!(
            change_subject(&other, Some(&s)),
            Err(Error::PermissionDenied(_))
        ));
        assert!(change_subject(&other, None).is_ok());
    }

    #[test]
    fn only_the_admin_sets_the_default() {
        assert!(change_default_compatibility(&Caller::Admin("ops".into())).is_ok());
        assert!(change_default_compatibility(&Caller::Department("x".into())).is_err());
    }

    #[test]
    fn a_draft_has_a_property_per_item_and_covers_them() {
        let content = draft().validate().unwrap();
        let schema = draft_from_entry(&content);
        assert_eq!(schema["properties"]["统一社会信用代码"]["format"], "uscc");
        assert_eq!(schema["properties"]["法定代表人"]["maxLength"], 50);
        assert!(uncovered_items(&content, &schema).is_empty());
    }

    #[test]
    fn items_are_matched_by_key_or_title() {
        let content = draft().validate().unwrap();
        let schema = json!({"properties": {"uscc": {"title": "统一社会信用代码"}}});
        assert_eq!(uncovered_items(&content, &schema), ["法定代表人"]);
        assert_eq!(
            uncovered_items(&content, &json!({})),
            ["统一社会信用代码", "法定代表人"]
        );
    }
}
