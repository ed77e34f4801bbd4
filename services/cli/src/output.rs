//! Readable tables by default, JSON for scripts.

use crate::out;
use serde_json::{Value, json};
use xinqiao_domain::catalogue as d;
use xinqiao_domain::lifecycle::EntryState;
use xinqiao_hub::convert;
use xinqiao_proto::v1 as pb;

pub fn write_line(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    if let Err(e) = writeln!(std::io::stdout().lock(), "{args}")
        && e.kind() == std::io::ErrorKind::BrokenPipe
    {
        std::process::exit(0);
    }
}

/// Prints `value` as JSON when asked, else runs the human-readable printer.
pub fn emit(as_json: bool, value: Value, human: impl FnOnce()) {
    if as_json {
        out!("{}", serde_json::to_string_pretty(&value).unwrap_or_default());
    } else {
        human();
    }
}

/// Display width in a terminal: CJK and full-width characters take two columns.
fn width(s: &str) -> usize {
    s.chars()
        .map(|c| match c as u32 {
            0x1100..=0x115F
            | 0x2E80..=0xA4CF
            | 0xAC00..=0xD7A3
            | 0xF900..=0xFAFF
            | 0xFE30..=0xFE4F
            | 0xFF00..=0xFF60
            | 0xFFE0..=0xFFE6
            | 0x20000..=0x3FFFD => 2,
            _ => 1,
        })
        .sum()
}

fn truncate(s: &str, max: usize) -> String {
    if width(s) <= max {
        return s.to_string();
    }
    let mut out = String::new();
    for c in s.chars() {
        if width(&out) + width(&c.to_string()) + 1 > max {
            break;
        }
        out.push(c);
    }
    out.push('…');
    out
}

/// Prints rows under a header, columns aligned by display width.
pub fn table(header: &[&str], rows: &[Vec<String>]) {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| r.iter().map(|c| truncate(&c.replace('\n', " "), 40)).collect())
        .collect();
    let mut widths: Vec<usize> = header.iter().map(|h| width(h)).collect();
    for row in &rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(width(cell));
        }
    }
    let line = |cells: Vec<&str>| {
        let mut text = String::new();
        for (i, cell) in cells.iter().enumerate() {
            text.push_str(cell);
            if i + 1 < cells.len() {
                text.push_str(&" ".repeat(widths[i] - width(cell) + 2));
            }
        }
        out!("{}", text.trim_end());
    };
    line(header.to_vec());
    line(
        widths
            .iter()
            .map(|w| "─".repeat(*w))
            .collect::<Vec<_>>()
            .iter()
            .map(String::as_str)
            .collect(),
    );
    for row in &rows {
        line(row.iter().map(String::as_str).collect());
    }
}

pub fn time(t: &Option<convert::Timestamp>) -> String {
    t.as_ref()
        .and_then(|t| chrono::DateTime::from_timestamp(t.seconds, t.nanos.max(0) as u32))
        .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_default()
}

pub fn state_label(state: i32) -> String {
    convert::entry_state(state)
        .map(EntryState::label)
        .unwrap_or("?")
        .to_string()
}

fn state_code(state: i32) -> &'static str {
    convert::entry_state(state)
        .map(EntryState::as_str)
        .unwrap_or("unspecified")
}

pub fn department_json(d: &pb::Department) -> Value {
    json!({
        "code": d.code, "name": d.name, "division_code": d.division_code, "contact": d.contact,
        "active": d.active, "created_at": time(&d.created_at), "updated_at": time(&d.updated_at),
    })
}

pub fn departments(as_json: bool, list: &[pb::Department]) {
    emit(
        as_json,
        Value::Array(list.iter().map(department_json).collect()),
        || {
            let rows: Vec<Vec<String>> = list
                .iter()
                .map(|d| {
                    vec![
                        d.code.clone(),
                        d.name.clone(),
                        d.division_code.clone(),
                        if d.active { "active" } else { "deactivated" }.into(),
                        d.contact.clone(),
                    ]
                })
                .collect();
            table(
                &["code (统一社会信用代码)", "name", "division", "status", "contact"],
                &rows,
            );
        },
    );
}

fn code_of<T: Copy>(value: i32, map: fn(i32) -> Option<T>, text: fn(T) -> &'static str) -> &'static str {
    map(value).map(text).unwrap_or("")
}

pub fn entry_json(e: &pb::CatalogEntry) -> Value {
    let c = e.content.clone().unwrap_or_default();
    let share = c.share.clone().unwrap_or_default();
    let open = c.open.clone().unwrap_or_default();
    let mut entry = json!({
        "resource_code": e.resource_code,
        "provider_code": e.provider_code,
        "provider_name": e.provider_name,
        "state": state_code(e.state),
        "version": e.version,
        "state_reason": e.state_reason,
        "published_at": time(&e.published_at),
        "updated_at": time(&e.updated_at),
        "created_at": time(&e.created_at),
        "content": {
            "name": c.name,
            "classification": c.classification,
            "summary": c.summary,
            "format": code_of(c.format, convert::resource_format, d::ResourceFormat::as_str),
            "update_cycle": code_of(c.update_cycle, convert::update_cycle, d::UpdateCycle::as_str),
            "maintainer": c.maintainer,
            "related_codes": c.related_codes,
            "share": {
                "type": code_of(share.share_type, convert::share_type, d::ShareType::as_str),
                "condition": share.condition,
                "channel": code_of(share.channel, convert::share_channel, d::ShareChannel::as_str),
                "exchange_kind": code_of(share.exchange_kind, convert::exchange_kind, d::ExchangeKind::as_str),
                "legal_basis": share.legal_basis,
            },
            "open": {
                "type": code_of(open.open_type, convert::open_type, d::OpenType::as_str),
                "condition": open.condition,
            },
            "items": c.items.iter().map(|i| json!({
                "name": i.name, "data_type": i.data_type, "length": i.length,
                "sensitive": i.sensitive, "description": i.description,
            })).collect::<Vec<_>>(),
        },
    });
    if !e.origin_hub.is_empty() {
        // 目录汇聚: aggregated from a child hub.
        entry["origin_hub"] = e.origin_hub.clone().into();
        entry["via_hub"] = e.via_hub.clone().into();
    }
    entry
}

pub fn entries(as_json: bool, list: &[pb::CatalogEntry]) {
    emit(as_json, Value::Array(list.iter().map(entry_json).collect()), || {
        let rows: Vec<Vec<String>> = list
            .iter()
            .map(|e| {
                let c = e.content.clone().unwrap_or_default();
                let share = c.share.unwrap_or_default();
                // 目录汇聚: an entry aggregated from a child hub names the hub that holds it.
                let provider = if e.origin_hub.is_empty() {
                    e.provider_name.clone()
                } else {
                    format!("{} @hub {}", e.provider_name, e.origin_hub)
                };
                vec![
                    e.resource_code.clone(),
                    c.name,
                    provider,
                    code_of(share.share_type, convert::share_type, d::ShareType::label).into(),
                    code_of(c.update_cycle, convert::update_cycle, d::UpdateCycle::label).into(),
                    state_label(e.state),
                    format!("v{}", e.version),
                ]
            })
            .collect();
        table(
            &[
                "resource code",
                "name",
                "provider",
                "sharing",
                "update",
                "state",
                "version",
            ],
            &rows,
        );
    });
}

pub fn entry(as_json: bool, e: &pb::CatalogEntry) {
    emit(as_json, entry_json(e), || {
        let c = e.content.clone().unwrap_or_default();
        let share = c.share.clone().unwrap_or_default();
        let open = c.open.clone().unwrap_or_default();
        out!(
            "{}  {}  (v{}, {})",
            e.resource_code,
            c.name,
            e.version,
            state_label(e.state)
        );
        out!("  provider:      {} {}", e.provider_code, e.provider_name);
        out!(
            "  classification {}   format {}   update cycle {}",
            c.classification,
            code_of(c.format, convert::resource_format, d::ResourceFormat::label),
            code_of(c.update_cycle, convert::update_cycle, d::UpdateCycle::label)
        );
        out!("  summary:       {}", c.summary);
        out!(
            "  sharing:       {} via {} ({})",
            code_of(share.share_type, convert::share_type, d::ShareType::label),
            code_of(share.channel, convert::share_channel, d::ShareChannel::label),
            code_of(share.exchange_kind, convert::exchange_kind, d::ExchangeKind::label)
        );
        if !share.condition.is_empty() {
            out!("  condition:     {}", share.condition);
        }
        if !share.legal_basis.is_empty() {
            out!("  legal basis:   {}", share.legal_basis);
        }
        out!(
            "  open:          {} {}",
            code_of(open.open_type, convert::open_type, d::OpenType::label),
            open.condition
        );
        if !e.state_reason.is_empty() {
            out!("  reason:        {}", e.state_reason);
        }
        out!(
            "  published:     {}   updated: {}",
            time(&e.published_at),
            time(&e.updated_at)
        );
        out!("  data items (信息项):");
        let rows: Vec<Vec<String>> = c
            .items
            .iter()
            .map(|i| {
                vec![
                    i.name.clone(),
                    i.data_type.clone(),
                    i.length.to_string(),
                    if i.sensitive { "yes" } else { "" }.into(),
                ]
            })
            .collect();
        table(
            &["  name", "type", "length", "sensitive"],
            &rows
                .into_iter()
                .map(|mut r| {
                    r[0] = format!("  {}", r[0]);
                    r
                })
                .collect::<Vec<_>>(),
        );
    });
}

pub fn versions(as_json: bool, list: &[pb::EntryVersion]) {
    let value = Value::Array(
        list.iter()
            .map(|v| json!({"version": v.version, "state": state_code(v.state), "action": v.action, "actor": v.actor, "reason": v.reason, "changed_at": time(&v.changed_at)}))
            .collect(),
    );
    emit(as_json, value, || {
        let rows: Vec<Vec<String>> = list
            .iter()
            .map(|v| {
                vec![
                    format!("v{}", v.version),
                    v.action.clone(),
                    state_label(v.state),
                    v.actor.clone(),
                    time(&v.changed_at),
                    v.reason.clone(),
                ]
            })
            .collect();
        table(&["version", "action", "state", "by", "at", "reason"], &rows);
    });
}
