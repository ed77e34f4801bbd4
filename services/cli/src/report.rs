//! `xinqiao report`: error reports (纠错). A department that may read a dataset flags a record it
//! believes wrong; the provider checks it and resolves the report.

use clap::{ArgGroup, Args, Subcommand, ValueEnum};
use serde_json::{Value, json};
use xinqiao_proto::v1 as pb;

use crate::client::{ClientArgs, explain};
use crate::{CliResult, out, output};

#[derive(Args)]
pub struct ReportArgs {
    #[command(flatten)]
    client: ClientArgs,
    #[command(subcommand)]
    command: ReportCommand,
}

/// Which side of a report to list.
#[derive(Clone, Copy, ValueEnum)]
enum PartyArg {
    /// The reports you made.
    Reporter,
    /// The reports you must resolve.
    Provider,
}

#[derive(Clone, Copy, ValueEnum)]
enum StateArg {
    /// 待处理
    Open,
    /// 已更正
    Corrected,
    /// 不予更正
    Rejected,
}

#[derive(Subcommand)]
enum ReportCommand {
    /// Flag a record you believe wrong, by its sequence number or its key (or both).
    #[command(group(ArgGroup::new("record").required(true).multiple(true).args(["sequence", "record_key"])))]
    Create {
        /// The dataset (its catalogue entry's resource code).
        #[arg(long)]
        dataset: String,
        /// The sequence number of the change you saw (as `xinqiao pull` prints it).
        #[arg(long, value_name = "N")]
        sequence: Option<u64>,
        /// The record's key as a JSON array, as `xinqiao pull` prints it, e.g.
        /// '["330106199001011234"]'. (`--key` is taken: it names this client's TLS private key.)
        #[arg(long, value_name = "JSON", value_parser = parse_key)]
        record_key: Option<String>,
        /// What is wrong with the record.
        #[arg(long)]
        description: String,
    },
    /// Resolve an open report (provider): corrected, or rejected with a reason.
    #[command(group(ArgGroup::new("resolution").required(true).args(["corrected", "rejected"])))]
    Resolve {
        /// The report id.
        id: String,
        /// The record was corrected (by a new publish).
        #[arg(long)]
        corrected: bool,
        /// The record is right as it is; give the --reason.
        #[arg(long, requires = "reason")]
        rejected: bool,
        /// The sequence number of the change that corrected the record.
        #[arg(long, value_name = "N", requires = "corrected")]
        sequence: Option<u64>,
        /// Why the report is rejected (or a note on the correction).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Reports you made or must resolve (the admin: all).
    List {
        /// Only the ones you made (reporter) or must resolve (provider) [default: both].
        #[arg(long)]
        party: Option<PartyArg>,
        #[arg(long)]
        state: Option<StateArg>,
        #[arg(long)]
        dataset: Option<String>,
        /// Those held on this hub below yours (跨级交换: what you reported there through
        /// your own hub); their ids name it, as `330110:<id>`.
        // Not `--hub` (nor the id `hub`): that is every command's address of the hub to call.
        #[arg(long, value_name = "DIVISION")]
        on_hub: Option<String>,
        /// At most this many reports.
        #[arg(long, default_value_t = 200)]
        limit: usize,
    },
    /// Show a report.
    Show { id: String },
}

/// A key must be a JSON array; it is sent in compact form, as the hub compares keys as text.
fn parse_key(text: &str) -> Result<String, String> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Array(values)) if !values.is_empty() => Ok(Value::Array(values).to_string()),
        _ => Err(format!(
            "'{text}' is not a record key: give a JSON array of the key properties' values, e.g. '[\"330106199001011234\"]'"
        )),
    }
}

fn state_code(state: i32) -> &'static str {
    match pb::ReportState::try_from(state) {
        Ok(pb::ReportState::Open) => "open",
        Ok(pb::ReportState::Corrected) => "corrected",
        Ok(pb::ReportState::Rejected) => "rejected",
        _ => "?",
    }
}

fn state_text(state: i32) -> String {
    let label = match pb::ReportState::try_from(state) {
        Ok(pb::ReportState::Open) => "待处理",
        Ok(pb::ReportState::Corrected) => "已更正",
        Ok(pb::ReportState::Rejected) => "不予更正",
        _ => return "?".into(),
    };
    format!("{} ({label})", state_code(state))
}

/// What the report names: its sequence number, its key, or both.
fn record_text(r: &pb::ErrorReport) -> String {
    let key = String::from_utf8_lossy(&r.key);
    match (r.sequence, key.is_empty()) {
        (0, _) => key.into_owned(),
        (n, true) => format!("#{n}"),
        (n, false) => format!("#{n} {key}"),
    }
}

pub fn report_json(r: &pb::ErrorReport) -> Value {
    let key: Value = serde_json::from_slice(&r.key).unwrap_or(Value::Null);
    json!({
        "report_id": r.report_id, "dataset": r.dataset, "provider_code": r.provider_code,
        "reporter_code": r.reporter_code, "sequence": r.sequence, "key": key,
        "description": r.description, "state": state_code(r.state),
        "reported_at": output::time(&r.reported_at), "resolved_at": output::time(&r.resolved_at),
        "resolved_by": r.resolved_by, "resolution": r.resolution, "corrected_sequence": r.corrected_sequence,
    })
}

pub fn print_report(r: &pb::ErrorReport) {
    out!("error report {}  {}", r.report_id, state_text(r.state));
    out!("  dataset:         {}", r.dataset);
    out!("  record:          {}", record_text(r));
    out!("  reporter:        {}", r.reporter_code);
    out!("  provider:        {}", r.provider_code);
    out!("  description:     {}", r.description);
    out!("  reported:        {}", output::time(&r.reported_at));
    if r.resolved_at.is_some() {
        out!(
            "  resolved:        {} by {}",
            output::time(&r.resolved_at),
            r.resolved_by
        );
    }
    if !r.resolution.is_empty() {
        out!("  resolution:      {}", r.resolution);
    }
    if r.corrected_sequence != 0 {
        out!("  corrected by:    #{}", r.corrected_sequence);
    }
}

fn reports(as_json: bool, list: &[pb::ErrorReport]) {
    output::emit(as_json, Value::Array(list.iter().map(report_json).collect()), || {
        let rows: Vec<Vec<String>> = list
            .iter()
            .map(|r| {
                vec![
                    r.report_id.clone(),
                    r.dataset.clone(),
                    record_text(r),
                    r.reporter_code.clone(),
                    r.provider_code.clone(),
                    state_text(r.state),
                    output::time(&r.reported_at),
                    r.description.clone(),
                ]
            })
            .collect();
        output::table(
            &[
                "report",
                "dataset",
                "record",
                "reporter",
                "provider",
                "state",
                "reported",
                "description",
            ],
            &rows,
        );
    });
}

pub async fn run(args: ReportArgs) -> CliResult {
    let json = args.client.json;
    let mut client = args.client.access().await?;
    let show = |r: &pb::ErrorReport| output::emit(json, report_json(r), || print_report(r));
    match args.command {
        ReportCommand::Create {
            dataset,
            sequence,
            record_key,
            description,
        } => {
            let request = pb::ReportErrorRequest {
                dataset,
                sequence: sequence.unwrap_or(0),
                key: record_key.unwrap_or_default().into_bytes(),
                description,
            };
            show(&client.report_error(request).await.map_err(explain)?.into_inner());
        }
        ReportCommand::Resolve {
            id,
            corrected,
            rejected: _,
            sequence,
            reason,
        } => {
            let resolution = if corrected {
                pb::ReportState::Corrected
            } else {
                pb::ReportState::Rejected
            };
            let request = pb::ResolveReportRequest {
                report_id: id,
                resolution: resolution as i32,
                reason: reason.unwrap_or_default(),
                corrected_sequence: sequence.unwrap_or(0),
            };
            show(&client.resolve_report(request).await.map_err(explain)?.into_inner());
        }
        ReportCommand::List {
            party,
            state,
            dataset,
            on_hub,
            limit,
        } => {
            let mut request = pb::ListReportsRequest {
                party: (match party {
                    None => pb::Party::Unspecified,
                    Some(PartyArg::Reporter) => pb::Party::Applicant,
                    Some(PartyArg::Provider) => pb::Party::Provider,
                }) as i32,
                dataset: dataset.unwrap_or_default(),
                state: (match state {
                    None => pb::ReportState::Unspecified,
                    Some(StateArg::Open) => pb::ReportState::Open,
                    Some(StateArg::Corrected) => pb::ReportState::Corrected,
                    Some(StateArg::Rejected) => pb::ReportState::Rejected,
                }) as i32,
                page_size: limit.clamp(1, 1000) as u32,
                page_token: String::new(),
                hub: on_hub.unwrap_or_default(),
            };
            let mut found = Vec::new();
            loop {
                let page = client
                    .list_reports(request.clone())
                    .await
                    .map_err(explain)?
                    .into_inner();
                found.extend(page.reports);
                if page.next_page_token.is_empty() || found.len() >= limit {
                    break;
                }
                request.page_token = page.next_page_token;
            }
            found.truncate(limit);
            reports(json, &found);
        }
        ReportCommand::Show { id } => {
            let request = pb::GetReportRequest { report_id: id };
            show(&client.get_report(request).await.map_err(explain)?.into_inner());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_key_is_a_json_array() {
        assert_eq!(parse_key(r#"[ "a", 1 ]"#).expect("a key"), r#"["a",1]"#);
        assert!(parse_key("330106199001011234").is_err());
        assert!(parse_key(r#""a""#).is_err());
        assert!(parse_key("[]").is_err());
        assert!(parse_key("[").is_err());
    }
}
