//! `xinqiao audit`: the audit trail (等保 2.0 security audit), a hash chain of security-relevant
//! events: list them, and verify that no event was changed, removed or reordered.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Duration, NaiveDate, Utc};
use clap::{Args, Subcommand};
use serde_json::{Value, json};
use xinqiao_domain::access::end_of_china_day;
use xinqiao_hub::convert;
use xinqiao_proto::v1 as pb;

use crate::client::{ClientArgs, explain};
use crate::{CliResult, out, output};

#[derive(Args)]
pub struct AuditArgs {
    #[command(flatten)]
    client: ClientArgs,
    #[command(subcommand)]
    command: AuditCommand,
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Walk the whole chain (admin); exits non-zero, naming the first broken link, if it is broken
    /// (or if the anchor given does not hold).
    Verify {
        /// An anchor written by `audit anchor`: also prove that nothing at or before it was
        /// rewritten, removed or reordered.
        #[arg(long, value_name = "FILE")]
        anchor: Option<PathBuf>,
    },
    /// Verify the chain and have the hub sign its head (admin): an anchor to keep outside the
    /// database, for `audit verify --anchor`.
    Anchor {
        /// Write the anchor to this file (refused if it exists) instead of standard output.
        #[arg(long, short = 'o', value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Audit events in chain order (the admin: all; a department: its own actions and the events
    /// about its data).
    List {
        /// A department code, `admin:<name>`, or `peer:<address>` (refused handshakes).
        #[arg(long)]
        actor: Option<String>,
        /// A dataset, entry, department, request, grant or subject.
        #[arg(long)]
        target: Option<String>,
        /// The action, e.g. Fetch, ApproveRequest, authenticate.
        #[arg(long)]
        action: Option<String>,
        /// From this time on: RFC 3339, or YYYY-MM-DD for the start of that day (China Standard Time).
        #[arg(long, value_name = "TIME", value_parser = parse_from)]
        from: Option<DateTime<Utc>>,
        /// Up to this time: RFC 3339 (exclusive), or YYYY-MM-DD for the end of that day.
        #[arg(long, value_name = "TIME", value_parser = parse_to)]
        to: Option<DateTime<Utc>>,
        /// At most this many events, the earliest first (narrow with --from to see later ones).
        #[arg(long, value_name = "N", default_value_t = 100)]
        limit: usize,
    },
}

fn parse_time(text: &str, day_end: bool) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text.trim()) {
        return Ok(t.with_timezone(&Utc));
    }
    let day = NaiveDate::parse_from_str(text.trim(), "%Y-%m-%d").map_err(|_| {
        format!("'{text}' is neither an RFC 3339 time (2027-01-31T18:00:00+08:00) nor a date (2027-01-31)")
    })?;
    let end = end_of_china_day(day);
    Ok(if day_end { end } else { end - Duration::days(1) })
}

fn parse_from(text: &str) -> Result<DateTime<Utc>, String> {
    parse_time(text, false)
}

fn parse_to(text: &str) -> Result<DateTime<Utc>, String> {
    parse_time(text, true)
}

pub fn event_json(e: &pb::AuditEvent) -> Value {
    let detail: Value = serde_json::from_str(&e.detail).unwrap_or_else(|_| Value::String(e.detail.clone()));
    json!({
        "sequence": e.sequence, "at": output::time(&e.at), "actor": e.actor, "action": e.action,
        "target": e.target, "about": e.about, "outcome": e.outcome, "request_id": e.request_id,
        "detail": detail, "hash": e.hash, "algorithm": e.algorithm,
    })
}

/// The detail without JSON's braces and quotes, for a table cell.
fn detail_text(detail: &str) -> String {
    match serde_json::from_str::<Value>(detail) {
        Ok(Value::Object(fields)) => fields
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => format!("{k}={s}"),
                other => format!("{k}={other}"),
            })
            .collect::<Vec<_>>()
            .join(" "),
        _ => detail.to_string(),
    }
}

pub fn events(as_json: bool, list: &[pb::AuditEvent]) {
    output::emit(as_json, Value::Array(list.iter().map(event_json).collect()), || {
        let rows: Vec<Vec<String>> = list
            .iter()
            .map(|e| {
                vec![
                    e.sequence.to_string(),
                    output::time(&e.at),
                    e.actor.clone(),
                    e.action.clone(),
                    e.target.clone(),
                    e.outcome.clone(),
                    detail_text(&e.detail),
                ]
            })
            .collect();
        output::table(
            &["seq", "time", "actor", "action", "target", "outcome", "detail"],
            &rows,
        );
    });
}

fn verification_json(v: &pb::VerifyChainResponse) -> Value {
    json!({
        "intact": v.intact, "verified": v.verified, "keyed": v.keyed, "unkeyed": v.unkeyed,
        "checkpoint_sequence": v.checkpoint_sequence, "checkpoint_hash": v.checkpoint_hash,
        "head_sequence": v.head_sequence, "head_hash": v.head_hash,
        "broken_sequence": v.broken_sequence, "broken_reason": v.broken_reason,
        "anchor_holds": v.anchor_holds, "anchor_reason": v.anchor_reason,
    })
}

/// An anchor as its file holds it: JSON, the signature in base64.
fn anchor_json(a: &pb::ChainAnchor) -> Value {
    use base64::Engine as _;
    json!({
        "sequence": a.sequence,
        "hash": a.hash,
        "at": a.at.and_then(|t| convert::time("at", Some(t)).ok().flatten()).map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)),
        "hub_certificate": a.hub_certificate,
        "signature_scheme": a.signature_scheme,
        "signature": base64::engine::general_purpose::STANDARD.encode(&a.signature),
    })
}

fn read_anchor(path: &Path) -> CliResult<pb::ChainAnchor> {
    use base64::Engine as _;
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let bad = |what: &str| {
        format!(
            "{}: not an anchor written by `xinqiao audit anchor` ({what})",
            path.display()
        )
    };
    let v: Value = serde_json::from_str(&text).map_err(|_| bad("not JSON"))?;
    let field = |name: &str| v.get(name).and_then(Value::as_str).ok_or_else(|| bad(name));
    let at = DateTime::parse_from_rfc3339(field("at")?)
        .map_err(|_| bad("at"))?
        .with_timezone(&Utc);
    Ok(pb::ChainAnchor {
        sequence: v
            .get("sequence")
            .and_then(Value::as_u64)
            .ok_or_else(|| bad("sequence"))?,
        hash: field("hash")?.to_string(),
        at: Some(convert::timestamp(at)),
        hub_certificate: field("hub_certificate")?.to_string(),
        signature_scheme: field("signature_scheme")?.to_string(),
        signature: base64::engine::general_purpose::STANDARD
            .decode(field("signature")?)
            .map_err(|_| bad("signature"))?,
    })
}

/// Writes a new file whole, or not at all, and never over an existing one.
fn write_new(path: &Path, text: &str) -> CliResult {
    use std::io::Write as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// The verdict as a person reads it.
pub fn print_verification(v: &pb::VerifyChainResponse) {
    if v.intact {
        out!("audit chain intact: {} events verified", v.verified);
    } else {
        out!(
            "audit chain BROKEN at sequence {}: {}",
            v.broken_sequence,
            v.broken_reason
        );
        out!("  verified before the break: {} events", v.verified);
    }
    out!("  links: {} keyed (HMAC), {} plain hashes", v.keyed, v.unkeyed);
    let checkpoint = if v.checkpoint_sequence == 0 {
        "the genesis (nothing pruned)".to_string()
    } else {
        format!("#{} {}", v.checkpoint_sequence, v.checkpoint_hash)
    };
    out!("  from:  {checkpoint}");
    out!("  head:  #{} {}", v.head_sequence, v.head_hash);
    if v.anchor_holds {
        out!("  anchor holds: nothing at or before it was rewritten, removed or reordered");
    } else if !v.anchor_reason.is_empty() {
        out!("  anchor does NOT hold: {}", v.anchor_reason);
    }
}

/// Verifies the chain; an error naming the first broken link when it is broken.
pub fn verdict(v: &pb::VerifyChainResponse) -> CliResult {
    if v.intact {
        Ok(())
    } else {
        Err(format!(
            "the audit chain is broken at sequence {}: {}",
            v.broken_sequence, v.broken_reason
        ))
    }
}

pub async fn run(args: AuditArgs) -> CliResult {
    let json = args.client.json;
    let mut client = args.client.audit().await?;
    match args.command {
        AuditCommand::Verify { anchor } => {
            let anchor = anchor.as_deref().map(read_anchor).transpose()?;
            let anchored = anchor.is_some();
            let v = client
                .verify_chain(pb::VerifyChainRequest { anchor })
                .await
                .map_err(explain)?
                .into_inner();
            output::emit(json, verification_json(&v), || print_verification(&v));
            verdict(&v)?;
            if anchored && !v.anchor_holds {
                return Err(format!("the anchor does not hold: {}", v.anchor_reason));
            }
            Ok(())
        }
        AuditCommand::Anchor { output: file } => {
            let anchor = client
                .anchor_chain(pb::AnchorChainRequest {})
                .await
                .map_err(explain)?
                .into_inner();
            let text = format!("{:#}\n", anchor_json(&anchor));
            match file {
                None => out!("{}", text.trim_end()),
                Some(path) => {
                    write_new(&path, &text)?;
                    out!(
                        "anchored event {} ({}) in {}; keep it outside the hub's database",
                        anchor.sequence,
                        anchor.hash,
                        path.display()
                    );
                }
            }
            Ok(())
        }
        AuditCommand::List {
            actor,
            target,
            action,
            from,
            to,
            limit,
        } => {
            let mut request = pb::ListEventsRequest {
                actor: actor.unwrap_or_default(),
                target: target.unwrap_or_default(),
                action: action.unwrap_or_default(),
                from: from.map(convert::timestamp),
                to: to.map(convert::timestamp),
                page_size: limit.clamp(1, 1000) as u32,
                page_token: String::new(),
            };
            let mut found = Vec::new();
            loop {
                let page = client.list_events(request.clone()).await.map_err(explain)?.into_inner();
                found.extend(page.events);
                if page.next_page_token.is_empty() || found.len() >= limit {
                    break;
                }
                request.page_token = page.next_page_token;
            }
            found.truncate(limit);
            events(json, &found);
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_are_china_standard_time() {
        let from = parse_from("2027-01-31").expect("a date");
        assert_eq!(from.to_rfc3339(), "2027-01-30T16:00:00+00:00");
        let to = parse_to("2027-01-31").expect("a date");
        assert_eq!(to.to_rfc3339(), "2027-01-31T16:00:00+00:00");
        assert_eq!(
            parse_from("2027-01-31T08:00:00Z").expect("RFC 3339").to_rfc3339(),
            "2027-01-31T08:00:00+00:00"
        );
        assert!(parse_to("yesterday").is_err());
    }

    #[test]
    fn details_read_as_key_value_pairs() {
        assert_eq!(
            detail_text(r#"{"purpose":"核验","records":3}"#),
            "purpose=核验 records=3"
        );
        assert_eq!(detail_text("plain"), "plain");
    }
}
