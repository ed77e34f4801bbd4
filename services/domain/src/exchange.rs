//! The exchange (GB/T 21062): datasets of published catalogue entries, record keys, and who may
//! publish and read.

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::catalogue::{CatalogEntry, ExchangeKind, ShareType};
use crate::identity::Caller;
use crate::lifecycle::EntryState;
use crate::schema::SchemaRef;
use crate::{Error, Result};

/// At most this many key properties.
pub const MAX_KEY_PROPERTIES: usize = 8;
/// A key value is at most this long once written as JSON.
pub const MAX_KEY_BYTES: usize = 1024;

/// 库表 (records by key) or 文件 (files by name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DatasetKind {
    Table,
    File,
}

impl DatasetKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DatasetKind::Table => "table",
            DatasetKind::File => "file",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "table" => Some(DatasetKind::Table),
            "file" => Some(DatasetKind::File),
            _ => None,
        }
    }

    /// The dataset kind an entry's 共享方式类型 calls for.
    pub fn of_entry(entry: &CatalogEntry) -> Result<DatasetKind> {
        match entry.content.share.exchange_kind {
            ExchangeKind::Table => Ok(DatasetKind::Table),
            ExchangeKind::File => Ok(DatasetKind::File),
            ExchangeKind::Interface => Err(Error::FailedPrecondition(format!(
                "{} is shared through a service interface (接口), not exchanged as a dataset",
                entry.resource_code
            ))),
        }
    }
}

/// A dataset: the exchange side of a published catalogue entry, named by its resource code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dataset {
    pub id: String,
    pub provider_code: String,
    pub kind: DatasetKind,
    /// Table datasets: the schema their records follow, and the key properties.
    pub schema: Option<SchemaRef>,
    pub key: Vec<String>,
    /// Keys (or file names) currently present.
    pub record_count: u64,
    pub last_sequence: u64,
    pub last_published_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

/// How one change of a batch is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChangeOp {
    Upsert,
    Delete,
}

impl ChangeOp {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeOp::Upsert => "upsert",
            ChangeOp::Delete => "delete",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "upsert" => Some(ChangeOp::Upsert),
            "delete" => Some(ChangeOp::Delete),
            _ => None,
        }
    }
}

/// Checks the key properties of a new table dataset against its schema: each must be a
/// top-level property that the schema requires, so that every valid record has a key.
pub fn validate_key(key: &[String], schema: &Value) -> Result<()> {
    if key.is_empty() {
        return Err(Error::invalid(
            "key",
            "a table dataset needs one or more key properties",
        ));
    }
    if key.len() > MAX_KEY_PROPERTIES {
        return Err(Error::invalid(
            "key",
            format!("at most {MAX_KEY_PROPERTIES} key properties"),
        ));
    }
    let required: Vec<&str> = schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let declared = schema.get("properties").and_then(Value::as_object);
    let mut seen = std::collections::HashSet::new();
    for (i, name) in key.iter().enumerate() {
        if !seen.insert(name) {
            return Err(Error::invalid(format!("key[{i}]"), format!("'{name}' appears twice")));
        }
        if !declared.is_some_and(|p| p.contains_key(name)) {
            return Err(Error::invalid(
                format!("key[{i}]"),
                format!("'{name}' is not a property of the schema"),
            ));
        }
        if !required.contains(&name.as_str()) {
            return Err(Error::invalid(
                format!("key[{i}]"),
                format!("'{name}' must be required by the schema, so that every record has it"),
            ));
        }
    }
    Ok(())
}

/// The key of a record (or of a delete request): the key properties' values as a JSON array, in
/// key order. Values must be strings, numbers or booleans.
pub fn record_key(record: &Value, key: &[String]) -> std::result::Result<String, String> {
    let mut values = Vec::with_capacity(key.len());
    for name in key {
        match record.get(name) {
            Some(v @ (Value::String(_) | Value::Number(_) | Value::Bool(_))) => values.push(v),
            Some(_) => return Err(format!("key property '{name}' must be a string, number or boolean")),
            None => return Err(format!("key property '{name}' is missing")),
        }
    }
    let text = serde_json::to_string(&values).map_err(|e| e.to_string())?;
    if text.len() > MAX_KEY_BYTES {
        return Err(format!(
            "the key is {} bytes as JSON; at most {MAX_KEY_BYTES}",
            text.len()
        ));
    }
    Ok(text)
}

/// The caller's standing toward a dataset's entry (交换目录).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Standing {
    Owner,
    /// 无条件共享.
    Open,
    /// 有条件共享 with an active grant.
    Granted,
    /// 有条件共享: the caller may apply.
    Requestable,
    /// 不予共享.
    NotShared,
}

pub fn standing(caller: &Caller, provider_code: &str, share_type: ShareType) -> Standing {
    if caller.department() == Some(provider_code) {
        return Standing::Owner;
    }
    match share_type {
        ShareType::Unconditional => Standing::Open,
        ShareType::Conditional => Standing::Requestable,
        ShareType::NotShared => Standing::NotShared,
    }
}

/// Only the provider opens a dataset for its entry, and only once the entry is published.
pub fn create_dataset(caller: &Caller, entry: &CatalogEntry) -> Result<()> {
    if caller.department() != Some(entry.provider_code.as_str()) {
        return Err(Error::PermissionDenied(
            "only the providing department opens a dataset for its entry".into(),
        ));
    }
    if entry.state != EntryState::Published {
        return Err(Error::FailedPrecondition(format!(
            "{} is {}; only a published entry (已发布) is exchanged",
            entry.resource_code,
            entry.state.label()
        )));
    }
    Ok(())
}

/// Only the provider publishes, and only while its entry is published.
pub fn publish(caller: &Caller, entry: &CatalogEntry) -> Result<()> {
    if caller.department() != Some(entry.provider_code.as_str()) {
        return Err(Error::PermissionDenied(
            "only the providing department publishes to its dataset".into(),
        ));
    }
    if entry.state != EntryState::Published {
        return Err(Error::FailedPrecondition(format!(
            "{} is {}; records are published only while the entry is published",
            entry.resource_code,
            entry.state.label()
        )));
    }
    Ok(())
}

/// Who may read a dataset's records: its provider always; another department while the entry is
/// published and shared unconditionally (无条件共享). Conditional sharing needs a grant, which the
/// access workflow adds.
pub fn read(caller: &Caller, entry: &CatalogEntry) -> Result<()> {
    if caller.department() == Some(entry.provider_code.as_str()) {
        return Ok(());
    }
    if entry.state != EntryState::Published {
        return Err(Error::PermissionDenied(format!(
            "{} is not published",
            entry.resource_code
        )));
    }
    match (caller, entry.content.share.share_type) {
        (Caller::Department(_), ShareType::Unconditional) => Ok(()),
        (Caller::Admin(_), _) => Err(Error::PermissionDenied(
            "the platform admin manages the exchange but does not read its records".into(),
        )),
        (_, ShareType::Conditional) => Err(Error::PermissionDenied(format!(
            "{} is shared on condition (有条件共享); apply for access first",
            entry.resource_code
        ))),
        (_, _) => Err(Error::PermissionDenied(format!(
            "{} is not shared (不予共享)",
            entry.resource_code
        ))),
    }
}

/// A consumer name: 1 to 100 characters of letters, digits, '.', '_' and '-'.
pub fn validate_consumer(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 100
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            "consumer",
            "must be 1 to 100 characters of letters, digits, '.', '_' and '-'",
        ))
    }
}

/// A file name in a file dataset: no path separators, no control characters, at most 255 bytes.
pub fn validate_file_name(name: &str) -> Result<()> {
    let bad = name.is_empty()
        || name.len() > 255
        || name == "."
        || name == ".."
        || name.chars().any(|c| c == '/' || c == '\\' || c.is_control());
    if bad {
        Err(Error::invalid(
            "file_name",
            "must be a plain file name (no '/', '\\' or control characters), at most 255 bytes",
        ))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalogue::tests::draft;
    use serde_json::json;

    fn entry(share: ShareType, state: EntryState) -> CatalogEntry {
        let mut content = draft().validate().unwrap();
        content.share.share_type = share;
        CatalogEntry {
            resource_code: "102/000001".into(),
            provider_code: "11330100MB00010011".into(),
            provider_name: "局".into(),
            content,
            state,
            version: 3,
            state_reason: String::new(),
            published_at: None,
            created_at: Utc::now(),
            updated_at: Utc::now(),
        }
    }

    #[test]
    fn keys_are_json_arrays_in_key_order() {
        let record = json!({"b": 2, "a": "x", "c": true});
        assert_eq!(record_key(&record, &["a".into(), "b".into()]).unwrap(), r#"["x",2]"#);
        assert!(record_key(&record, &["z".into()]).unwrap_err().contains("missing"));
        assert!(record_key(&json!({"a": null}), &["a".into()]).is_err());
        assert!(record_key(&json!({"a": {"x": 1}}), &["a".into()]).is_err());
        assert!(record_key(&json!({"a": "x".repeat(2000)}), &["a".into()]).is_err());
    }

    #[test]
    fn key_properties_must_be_required_properties() {
        let schema = json!({"properties": {"uscc": {}, "name": {}}, "required": ["uscc"]});
        assert!(validate_key(&["uscc".into()], &schema).is_ok());
        assert!(validate_key(&[], &schema).is_err());
        assert!(validate_key(&["name".into()], &schema).is_err());
        assert!(validate_key(&["nope".into()], &schema).is_err());
        assert!(validate_key(&["uscc".into(), "uscc".into()], &schema).is_err());
    }

    #[test]
    fn who_reads() {
        let owner = Caller::Department("11330100MB00010011".into());
        let other = Caller::Department("11330100MB0002002B".into());
        let admin = Caller::Admin("ops".into());
        let open = entry(ShareType::Unconditional, EntryState::Published);
        assert!(read(&owner, &open).is_ok());
        assert!(read(&other, &open).is_ok());
        assert!(read(&admin, &open).is_err());
        assert!(read(&other, &entry(ShareType::Conditional, EntryState::Published)).is_err());
        assert!(read(&other, &entry(ShareType::NotShared, EntryState::Published)).is_err());
        assert!(read(&other, &entry(ShareType::Unconditional, EntryState::Withdrawn)).is_err());
        assert!(read(&owner, &entry(ShareType::NotShared, EntryState::Withdrawn)).is_ok());
    }

    #[test]
    fn only_the_provider_publishes_while_published() {
        let owner = Caller::Department("11330100MB00010011".into());
        let other = Caller::Department("11330100MB0002002B".into());
        assert!(publish(&owner, &entry(ShareType::Unconditional, EntryState::Published)).is_ok());
        assert!(matches!(
            publish(&other, &entry(ShareType::Unconditional, EntryState::Published)),
            Err(Error::PermissionDenied(_))
        ));
        assert!(matches!(
            publish(&owner, &entry(ShareType::Unconditional, EntryState::Withdrawn)),
            Err(Error::FailedPrecondition(_))
        ));
    }

    #[test]
    fn standings() {
        let other = Caller::Department("11330100MB0002002B".into());
        assert_eq!(
            standing(&other, "11330100MB00010011", ShareType::Unconditional),
            Standing::Open
        );
        assert_eq!(
            standing(&other, "11330100MB00010011", ShareType::Conditional),
            Standing::Requestable
        );
        let owner = Caller::Department("11330100MB00010011".into());
        assert_eq!(
            standing(&owner, "11330100MB00010011", ShareType::NotShared),
            Standing::Owner
        );
    }

    #[test]
    fn names() {
        assert!(validate_consumer("etl-1.prod_a").is_ok());
        assert!(validate_consumer("").is_err());
        assert!(validate_consumer("a b").is_err());
        assert!(validate_file_name("营业执照扫描件.pdf").is_ok());
        for bad in ["", "..", "a/b", "a\\b", "a\0b"] {
            assert!(validate_file_name(bad).is_err(), "{bad}");
        }
    }
}
