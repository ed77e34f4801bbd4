//! Catalogue entries written as TOML or JSON files (see deploy/examples/). Enumerations take
//! the code (`conditional`) or the Chinese term of the standard (`有条件共享`).

use std::path::Path;

use serde::Deserialize;
use xinqiao_domain::catalogue as d;
use xinqiao_hub::convert;
use xinqiao_proto::v1 as pb;

use crate::CliResult;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EntryFile {
    name: String,
    classification: String,
    summary: String,
    format: Option<String>,
    update_cycle: Option<String>,
    #[serde(default)]
    maintainer: String,
    #[serde(default)]
    related_codes: Vec<String>,
    share: Option<ShareFile>,
    open: Option<OpenFile>,
    #[serde(default)]
    items: Vec<ItemFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ShareFile {
    #[serde(rename = "type")]
    share_type: Option<String>,
    #[serde(default)]
    condition: String,
    channel: Option<String>,
    exchange_kind: Option<String>,
    #[serde(default)]
    legal_basis: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OpenFile {
    #[serde(rename = "type")]
    open_type: Option<String>,
    #[serde(default)]
    condition: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ItemFile {
    name: String,
    data_type: String,
    #[serde(default)]
    length: u32,
    #[serde(default)]
    sensitive: bool,
    #[serde(default)]
    description: String,
}

/// Reads a code or Chinese term into the API's number; a missing value stays unspecified (0) so
/// the hub names it.
fn code<T: Copy>(
    field: &str,
    value: &Option<String>,
    parse: fn(&str) -> Option<T>,
    all: &[T],
    text: fn(T) -> &'static str,
    label: fn(T) -> &'static str,
    api: fn(T) -> i32,
) -> CliResult<i32> {
    let Some(value) = value else { return Ok(0) };
    match parse(value.trim()) {
        Some(v) => Ok(api(v)),
        None => {
            let allowed: Vec<String> = all.iter().map(|&v| format!("{} ({})", text(v), label(v))).collect();
            Err(format!("{field}: '{value}' is not one of: {}", allowed.join(", ")))
        }
    }
}

/// Reads an entry file; `.json` files are JSON, anything else TOML.
pub fn read(path: &Path) -> CliResult<pb::EntryContent> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let json = path.extension().is_some_and(|e| e == "json");
    parse(&text, json).map_err(|e| format!("{}: {e}", path.display()))
}

pub fn parse(text: &str, json: bool) -> CliResult<pb::EntryContent> {
    let file: EntryFile = if json {
        serde_json::from_str(text).map_err(|e| e.to_string())?
    } else {
        toml::from_str(text).map_err(|e| e.to_string())?
    };
    let share = match &file.share {
        None => None,
        Some(s) => Some(pb::ShareAttributes {
            share_type: code(
                "share.type",
                &s.share_type,
                d::ShareType::parse,
                d::ShareType::ALL,
                d::ShareType::as_str,
                d::ShareType::label,
                convert::share_type_api,
            )?,
            condition: s.condition.clone(),
            channel: code(
                "share.channel",
                &s.channel,
                d::ShareChannel::parse,
                d::ShareChannel::ALL,
                d::ShareChannel::as_str,
                d::ShareChannel::label,
                convert::share_channel_api,
            )?,
            exchange_kind: code(
                "share.exchange_kind",
                &s.exchange_kind,
                d::ExchangeKind::parse,
                d::ExchangeKind::ALL,
                d::ExchangeKind::as_str,
                d::ExchangeKind::label,
                convert::exchange_kind_api,
            )?,
            legal_basis: s.legal_basis.clone(),
        }),
    };
    let open = match &file.open {
        None => None,
        Some(o) => Some(pb::OpenAttributes {
            open_type: code(
                "open.type",
                &o.open_type,
                d::OpenType::parse,
                d::OpenType::ALL,
                d::OpenType::as_str,
                d::OpenType::label,
                convert::open_type_api,
            )?,
            condition: o.condition.clone(),
        }),
    };
    Ok(pb::EntryContent {
        format: code(
            "format",
            &file.format,
            d::ResourceFormat::parse,
            d::ResourceFormat::ALL,
            d::ResourceFormat::as_str,
            d::ResourceFormat::label,
            convert::resource_format_api,
        )?,
        update_cycle: code(
            "update_cycle",
            &file.update_cycle,
            d::UpdateCycle::parse,
            d::UpdateCycle::ALL,
            d::UpdateCycle::as_str,
            d::UpdateCycle::label,
            convert::update_cycle_api,
        )?,
        name: file.name,
        classification: file.classification,
        summary: file.summary,
        items: file
            .items
            .into_iter()
            .map(|i| pb::DataItem {
                name: i.name,
                data_type: i.data_type,
                length: i.length,
                sensitive: i.sensitive,
                description: i.description,
            })
            .collect(),
        share,
        open,
        related_codes: file.related_codes,
        maintainer: file.maintainer,
    })
}
