//! Catalogue entries of the government resource directory (政务信息资源目录, GB/T 21063.3 core
//! metadata as compiled per 发改高技〔2017〕1272号).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Result, Violations};
use crate::lifecycle::EntryState;
use crate::text;

/// Declares a closed set of codes with a stable text form for storage.
macro_rules! codes {
    ($(#[$meta:meta])* $name:ident { $($variant:ident = $text:literal / $label:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $(#[doc = $label] $variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The stable code used in storage and files.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            /// The Chinese term of the standard.
            pub fn label(self) -> &'static str {
                match self { $($name::$variant => $label),+ }
            }

            /// Reads the code or the Chinese term.
            pub fn parse(text: &str) -> Option<Self> {
                match text { $($text | $label => Some($name::$variant),)+ _ => None }
            }
        }
    };
}

codes! {
    /// 共享类型.
    ShareType {
        Unconditional = "unconditional" / "无条件共享",
        Conditional = "conditional" / "有条件共享",
        NotShared = "not_shared" / "不予共享",
    }
}

codes! {
    /// 开放类型.
    OpenType {
        Unconditional = "unconditional" / "无条件开放",
        Conditional = "conditional" / "有条件开放",
        NotOpen = "not_open" / "不予开放",
    }
}

codes! {
    /// 更新周期.
    UpdateCycle {
        Realtime = "realtime" / "实时",
        Daily = "daily" / "每日",
        Weekly = "weekly" / "每周",
        Monthly = "monthly" / "每月",
        Quarterly = "quarterly" / "每季度",
        HalfYearly = "half_yearly" / "每半年",
        Yearly = "yearly" / "每年",
        Other = "other" / "其他",
    }
}

codes! {
    /// 信息资源格式.
    ResourceFormat {
        ElectronicFile = "electronic_file" / "电子文件",
        Spreadsheet = "spreadsheet" / "电子表格",
        Database = "database" / "数据库",
        Image = "image" / "图形图像",
        StreamingMedia = "streaming_media" / "流媒体",
        SelfDescribing = "self_describing" / "自描述格式",
        ServiceInterface = "service_interface" / "服务接口",
    }
}

codes! {
    /// 共享方式: the channel.
    ShareChannel {
        Platform = "platform" / "共享平台",
        Mail = "mail" / "邮件",
        Media = "media" / "介质",
    }
}

codes! {
    /// 共享方式类型: how records move through the exchange.
    ExchangeKind {
        Table = "table" / "库表",
        Interface = "interface" / "接口",
        File = "file" / "文件",
    }
}

/// 信息项: one data item of a resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataItem {
    pub name: String,
    pub data_type: String,
    pub length: u32,
    pub sensitive: bool,
    #[serde(default)]
    pub description: String,
}

/// 共享属性.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShareAttributes {
    pub share_type: ShareType,
    pub condition: String,
    pub channel: ShareChannel,
    pub exchange_kind: ExchangeKind,
    pub legal_basis: String,
}

/// 开放属性.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenAttributes {
    pub open_type: OpenType,
    pub condition: String,
}

/// The metadata of an entry, valid by construction (see [`EntryDraft::validate`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryContent {
    pub name: String,
    pub classification: String,
    pub summary: String,
    pub format: ResourceFormat,
    pub items: Vec<DataItem>,
    pub share: ShareAttributes,
    pub open: OpenAttributes,
    pub update_cycle: UpdateCycle,
    pub related_codes: Vec<String>,
    pub maintainer: String,
}

impl EntryContent {
    /// The text that keyword search looks in: name, summary and data-item names.
    pub fn search_text(&self) -> String {
        let mut text = format!("{}\n{}", self.name, self.summary);
        for item in &self.items {
            text.push('\n');
            text.push_str(&item.name);
        }
        text
    }
}

/// Share attributes as a caller sent them, before validation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShareDraft {
    pub share_type: Option<ShareType>,
    pub condition: String,
    pub channel: Option<ShareChannel>,
    pub exchange_kind: Option<ExchangeKind>,
    pub legal_basis: String,
}

/// Open attributes as a caller sent them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OpenDraft {
    pub open_type: Option<OpenType>,
    pub condition: String,
}

/// Entry metadata as a caller sent it: enumerations may be missing or unknown (`None`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EntryDraft {
    pub name: String,
    pub classification: String,
    pub summary: String,
    pub format: Option<ResourceFormat>,
    pub items: Vec<DataItem>,
    pub share: Option<ShareDraft>,
    pub open: Option<OpenDraft>,
    pub update_cycle: Option<UpdateCycle>,
    pub related_codes: Vec<String>,
    pub maintainer: String,
}

pub const MAX_NAME_CHARS: usize = 200;
pub const MAX_SUMMARY_CHARS: usize = 4000;
pub const MAX_CONDITION_CHARS: usize = 2000;
pub const MAX_ITEMS: usize = 1000;
pub const MAX_ITEM_NAME_CHARS: usize = 100;
pub const MAX_ITEM_TYPE_CHARS: usize = 32;
pub const MAX_ITEM_LENGTH: u32 = 1_000_000;
pub const MAX_RELATED_CODES: usize = 100;

fn required<T: Copy>(v: &mut Violations, field: &str, value: Option<T>) -> Option<T> {
    if value.is_none() {
        v.add(field, "is required (missing or unknown value)");
    }
    value
}

impl EntryDraft {
    /// Checks the metadata rules and returns the content, or every violation at once. Field
    /// names follow the API (`content.share.legal_basis`).
    pub fn validate(self) -> Result<EntryContent> {
        let mut v = Violations::new();
        v.check("content.name", text::check(&self.name, true, MAX_NAME_CHARS, false));
        v.check("content.classification", validate_classification(&self.classification));
        v.check(
            "content.summary",
            text::check(&self.summary, true, MAX_SUMMARY_CHARS, true),
        );
        v.check(
            "content.maintainer",
            text::check(&self.maintainer, false, MAX_NAME_CHARS, false),
        );
        let format = required(&mut v, "content.format", self.format);
        let update_cycle = required(&mut v, "content.update_cycle", self.update_cycle);

        if self.items.is_empty() {
            v.add("content.items", "at least one data item (信息项) is required");
        } else if self.items.len() > MAX_ITEMS {
            v.add(
                "content.items",
                format!("has {} items; at most {MAX_ITEMS} are allowed", self.items.len()),
            );
        } else {
            let mut seen = std::collections::HashSet::new();
            for (i, item) in self.items.iter().enumerate() {
                let field = |f: &str| format!("content.items[{i}].{f}");
                v.check(field("name"), text::check(&item.name, true, MAX_ITEM_NAME_CHARS, false));
                v.check(
                    field("data_type"),
                    text::check(&item.data_type, true, MAX_ITEM_TYPE_CHARS, false),
                );
                v.check(
                    field("description"),
                    text::check(&item.description, false, MAX_CONDITION_CHARS, true),
                );
                if item.length > MAX_ITEM_LENGTH {
                    v.add(
                        field("length"),
                        format!("is {}; at most {MAX_ITEM_LENGTH}", item.length),
                    );
                }
                if !seen.insert(item.name.trim()) {
                    v.add(field("name"), format!("'{}' appears more than once", item.name));
                }
            }
        }

        let share = match self.share {
            None => {
                v.add("content.share", "share attributes (共享属性) are required");
                None
            }
            Some(s) => {
                let share_type = required(&mut v, "content.share.share_type", s.share_type);
                let channel = required(&mut v, "content.share.channel", s.channel);
                let exchange_kind = required(&mut v, "content.share.exchange_kind", s.exchange_kind);
                v.check(
                    "content.share.condition",
                    text::check(&s.condition, false, MAX_CONDITION_CHARS, true),
                );
                v.check(
                    "content.share.legal_basis",
                    text::check(&s.legal_basis, false, MAX_CONDITION_CHARS, true),
                );
                if let Some(t) = share_type {
                    if t != ShareType::Unconditional && s.condition.trim().is_empty() {
                        v.add(
                            "content.share.condition",
                            "共享条件 is required unless the share type is unconditional",
                        );
                    }
                    if t != ShareType::Unconditional && s.legal_basis.trim().is_empty() {
                        v.add(
                            "content.share.legal_basis",
                            "conditional and not-shared resources need a legal basis (法律、行政法规或政策依据)",
                        );
                    }
                }
                match (share_type, channel, exchange_kind) {
                    (Some(share_type), Some(channel), Some(exchange_kind)) => Some(ShareAttributes {
                        share_type,
                        condition: s.condition,
                        channel,
                        exchange_kind,
                        legal_basis: s.legal_basis,
                    }),
                    _ => None,
                }
            }
        };

        let open = match self.open {
            None => {
                v.add("content.open", "open attributes (开放属性) are required");
                None
            }
            Some(o) => {
                let open_type = required(&mut v, "content.open.open_type", o.open_type);
                v.check(
                    "content.open.condition",
                    text::check(&o.condition, false, MAX_CONDITION_CHARS, true),
                );
                if open_type == Some(OpenType::Conditional) && o.condition.trim().is_empty() {
                    v.add(
                        "content.open.condition",
                        "开放条件 is required when the open type is conditional",
                    );
                }
                open_type.map(|open_type| OpenAttributes {
                    open_type,
                    condition: o.condition,
                })
            }
        };

        if self.related_codes.len() > MAX_RELATED_CODES {
            v.add(
                "content.related_codes",
                format!("at most {MAX_RELATED_CODES} related codes"),
            );
        } else {
            for (i, code) in self.related_codes.iter().enumerate() {
                v.check(format!("content.related_codes[{i}]"), validate_resource_code(code));
            }
        }

        v.into_result()?;
        // Every `None` above added a violation, so into_result returned early.
        let (Some(format), Some(update_cycle), Some(share), Some(open)) = (format, update_cycle, share, open) else {
            return Err(crate::Error::Internal("validated draft has missing parts".into()));
        };
        Ok(EntryContent {
            name: self.name.trim().to_string(),
            classification: self.classification,
            summary: self.summary,
            format,
            items: self.items,
            share,
            open,
            update_cycle,
            related_codes: self.related_codes,
            maintainer: self.maintainer,
        })
    }
}

/// Checks a 信息资源分类 code: 类 (one digit, 1 基础 / 2 主题 / 3 部门), then 项 (2 digits),
/// 目 (3 digits) and optionally 细目 (up to 6 more digits).
pub fn validate_classification(code: &str) -> Result<(), String> {
    if code.is_empty() {
        return Err("is required".into());
    }
    if !code.bytes().all(|b| b.is_ascii_digit()) {
        return Err("must be digits: 类 (1) + 项 (2) + 目 (3) + 细目".into());
    }
    if !matches!(code.as_bytes()[0], b'1' | b'2' | b'3') {
        return Err("类 must be 1 (基础), 2 (主题) or 3 (部门)".into());
    }
    match code.len() {
        1 | 3 | 6..=12 => Ok(()),
        n => Err(format!(
            "has {n} digits; a path is 1, 3, 6 or up to 12 digits (类/项/目/细目)"
        )),
    }
}

/// The 信息资源代码 of the `sequence`-th entry in a classification: 前段码 "/" 后段码.
pub fn resource_code(classification: &str, sequence: u64) -> String {
    format!("{classification}/{sequence:06}")
}

/// Checks that a text has the shape of a resource code (classification "/" sequence).
pub fn validate_resource_code(code: &str) -> Result<(), String> {
    let Some((classification, sequence)) = code.split_once('/') else {
        return Err("must be a resource code: classification/sequence".into());
    };
    validate_classification(classification)?;
    if sequence.is_empty() || sequence.len() > 12 || !sequence.bytes().all(|b| b.is_ascii_digit()) {
        return Err("the sequence after '/' must be 1 to 12 digits".into());
    }
    Ok(())
}

/// A catalogue entry at one version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogEntry {
    pub resource_code: String,
    pub provider_code: String,
    pub provider_name: String,
    pub content: EntryContent,
    pub state: EntryState,
    pub version: u64,
    /// Why it was returned or withdrawn, when it was.
    pub state_reason: String,
    pub published_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Search filters; empty means "any".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EntryFilter {
    pub keyword: String,
    pub classification_prefix: String,
    pub provider_code: String,
    pub share_type: Option<ShareType>,
    pub open_type: Option<OpenType>,
    pub update_cycle: Option<UpdateCycle>,
    pub format: Option<ResourceFormat>,
    pub state: Option<EntryState>,
}

impl EntryFilter {
    pub fn validate(&self) -> Result<()> {
        let mut v = Violations::new();
        v.check("keyword", text::check(&self.keyword, false, MAX_NAME_CHARS, false));
        if !self.classification_prefix.is_empty()
            && (self.classification_prefix.len() > 12
                || !self.classification_prefix.bytes().all(|b| b.is_ascii_digit()))
        {
            v.add("classification_prefix", "must be up to 12 digits");
        }
        v.check("provider_code", text::check(&self.provider_code, false, 18, false));
        v.into_result()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::Error;

    pub fn draft() -> EntryDraft {
        EntryDraft {
            name: "企业登记信息".into(),
            classification: "102".into(),
            summary: "本市企业的营业执照登记信息".into(),
            format: Some(ResourceFormat::Database),
            items: vec![
                DataItem {
                    name: "统一社会信用代码".into(),
                    data_type: "字符型".into(),
                    length: 18,
                    sensitive: false,
                    description: String::new(),
                },
                DataItem {
                    name: "法定代表人".into(),
                    data_type: "字符型".into(),
                    length: 50,
                    sensitive: true,
                    description: String::new(),
                },
            ],
            share: Some(ShareDraft {
                share_type: Some(ShareType::Unconditional),
                condition: String::new(),
                channel: Some(ShareChannel::Platform),
                exchange_kind: Some(ExchangeKind::Table),
                legal_basis: String::new(),
            }),
            open: Some(OpenDraft {
                open_type: Some(OpenType::NotOpen),
                condition: String::new(),
            }),
            update_cycle: Some(UpdateCycle::Daily),
            related_codes: vec![],
            maintainer: String::new(),
        }
    }

    fn violated_fields(d: EntryDraft) -> Vec<String> {
        match d.validate() {
            Err(Error::InvalidArgument(v)) => v.into_iter().map(|v| v.field).collect(),
            other => panic!("expected violations, got {other:?}"),
        }
    }

    #[test]
    fn a_complete_draft_is_valid() {
        let c = draft().validate().expect("valid");
        assert_eq!(c.share.share_type, ShareType::Unconditional);
        assert!(c.search_text().contains("营业执照"));
        assert!(c.search_text().contains("法定代表人"));
    }

    #[test]
    fn conditional_sharing_needs_condition_and_legal_basis() {
        let mut d = draft();
        d.share.as_mut().unwrap().share_type = Some(ShareType::Conditional);
        assert_eq!(
            violated_fields(d),
            ["content.share.condition", "content.share.legal_basis"]
        );
    }

    #[test]
    fn not_shared_needs_legal_basis() {
        let mut d = draft();
        let s = d.share.as_mut().unwrap();
        s.share_type = Some(ShareType::NotShared);
        s.condition = "涉及国家秘密".into();
        assert_eq!(violated_fields(d.clone()), ["content.share.legal_basis"]);
        d.share.as_mut().unwrap().legal_basis = "《中华人民共和国保守国家秘密法》".into();
        assert!(d.validate().is_ok());
    }

    #[test]
    fn missing_metadata_is_named() {
        let d = EntryDraft::default();
        let fields = violated_fields(d);
        for f in [
            "content.name",
            "content.classification",
            "content.summary",
            "content.format",
            "content.update_cycle",
            "content.items",
            "content.share",
            "content.open",
        ] {
            assert!(fields.iter().any(|x| x == f), "{f} missing from {fields:?}");
        }
    }

    #[test]
    fn duplicate_and_oversized_items_are_refused() {
        let mut d = draft();
        d.items.push(d.items[0].clone());
        d.items[1].name = "长".repeat(MAX_ITEM_NAME_CHARS + 1);
        assert_eq!(violated_fields(d), ["content.items[1].name", "content.items[2].name"]);
    }

    #[test]
    fn conditional_open_needs_condition() {
        let mut d = draft();
        d.open = Some(OpenDraft {
            open_type: Some(OpenType::Conditional),
            condition: String::new(),
        });
        assert_eq!(violated_fields(d), ["content.open.condition"]);
    }

    #[test]
    fn classification_codes() {
        for ok in ["1", "102", "102003", "1020030001"] {
            assert_eq!(validate_classification(ok), Ok(()), "{ok}");
        }
        for bad in ["", "4", "10", "1020", "10200", "1a2", "1020030001234", "１"] {
            assert!(validate_classification(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn resource_codes() {
        assert_eq!(resource_code("102", 7), "102/000007");
        assert_eq!(validate_resource_code("102/000007"), Ok(()));
        assert!(validate_resource_code("102").is_err());
        assert!(validate_resource_code("102/").is_err());
        assert!(validate_resource_code("102/x1").is_err());
    }

    #[test]
    fn codes_round_trip_through_text() {
        for t in ShareType::ALL {
            assert_eq!(ShareType::parse(t.as_str()), Some(*t));
        }
        for c in UpdateCycle::ALL {
            assert_eq!(UpdateCycle::parse(c.as_str()), Some(*c));
        }
        assert_eq!(ResourceFormat::parse("nonsense"), None);
        assert_eq!(ShareType::parse("有条件共享"), Some(ShareType::Conditional));
        assert_eq!(UpdateCycle::Yearly.label(), "每年");
    }
}
