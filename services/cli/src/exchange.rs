//! `xinqiao dataset`: the exchange catalogue (交换目录), and what the exchange commands share:
//! the client, retrying transient failures, progress bars.

use std::io::IsTerminal;
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};
use serde_json::{Value, json};
use tonic::transport::Channel;
use tonic::{Code, Status};
use tonic_types::StatusExt;
use xinqiao_proto::v1 as pb;
use xinqiao_proto::v1::exchange_service_client::ExchangeServiceClient;

use crate::client::{ClientArgs, explain};
use crate::{CliResult, out, output};

/// Largest message this client accepts from the hub. Pages are bounded by count, not bytes, so a
/// page of large records can be big.
pub const MAX_DECODED_MESSAGE: usize = 256 * 1024 * 1024;

pub type Client = ExchangeServiceClient<Channel>;

pub async fn connect(args: &ClientArgs) -> CliResult<Client> {
    Ok(ExchangeServiceClient::new(args.channel().await?).max_decoding_message_size(MAX_DECODED_MESSAGE))
}

/// Whether a failed call may succeed when made again: the hub was unreachable, restarting or
/// overloaded, or the connection broke under the call.
pub fn is_transient(status: &Status) -> bool {
    match status.code() {
        Code::Unavailable | Code::DeadlineExceeded | Code::Aborted | Code::Unknown => true,
        // A broken connection surfaces as an HTTP/2 error (INTERNAL or CANCELLED) carrying its
        // transport error as the source; the hub's own INTERNAL and CANCELLED answers have none.
        Code::Internal | Code::Cancelled => {
            std::error::Error::source(status).is_some() || status.message().starts_with("h2 protocol error")
        }
        _ => false,
    }
}

/// On what basis a department reads another's records or files: why (用途), and under which grant.
#[derive(Args, Clone, Debug, Default)]
pub struct ReadArgs {
    /// Why you read the data (用途). Required for another department's unconditionally shared
    /// (无条件共享) dataset; recorded in the audit trail.
    #[arg(long, value_name = "TEXT")]
    pub purpose: Option<String>,
    /// The grant to read under (有条件共享); needed only when you hold several active grants for
    /// the dataset (`xinqiao access grants --active` lists them).
    #[arg(long = "grant", value_name = "ID")]
    pub grant: Option<String>,
}

impl ReadArgs {
    pub fn purpose(&self) -> String {
        self.purpose.as_deref().unwrap_or_default().trim().to_string()
    }

    pub fn grant_id(&self) -> String {
        self.grant.as_deref().unwrap_or_default().trim().to_string()
    }
}

/// A refused read, with what would make it go through.
pub fn explain_read(status: Status) -> String {
    let fields: Vec<String> = status
        .get_details_bad_request()
        .map(|bad| bad.field_violations.into_iter().map(|v| v.field).collect())
        .unwrap_or_default();
    let hint = if fields.iter().any(|f| f == "purpose") {
        Some("give it with --purpose TEXT")
    } else if fields.iter().any(|f| f == "grant_id") {
        Some("choose one with --grant ID (`xinqiao access grants --active` lists yours)")
    } else if status.code() == Code::PermissionDenied && status.message().contains("no active grant") {
        Some("`xinqiao access request --dataset …` applies for access; the provider answers it")
    } else {
        None
    };
    match hint {
        Some(hint) => format!("{}\nhint: {hint}", explain(status)),
        None => explain(status),
    }
}

/// Bounded retries with exponential backoff: 30 attempts over about two minutes.
pub struct Retry {
    attempt: u32,
}

impl Retry {
    pub const ATTEMPTS: u32 = 30;

    pub fn new() -> Self {
        Self { attempt: 0 }
    }

    /// Progress was made: the next failure starts a fresh round of attempts.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// Waits before trying again after `error`; an error when the attempts are used up.
    pub async fn wait(&mut self, error: &str, progress: &ProgressBar) -> CliResult {
        self.attempt += 1;
        if self.attempt > Self::ATTEMPTS {
            return Err(format!("gave up after {} attempts: {error}", Self::ATTEMPTS));
        }
        let delay = Duration::from_millis(250u64.saturating_mul(1 << self.attempt.min(5)).min(5000));
        let line = format!(
            "retrying in {:.1}s (attempt {} of {}): {}",
            delay.as_secs_f64(),
            self.attempt,
            Self::ATTEMPTS,
            first_line(error)
        );
        progress.suspend(|| eprintln!("{line}"));
        tokio::time::sleep(delay).await;
        Ok(())
    }

    /// Reconnects, waiting and retrying while the hub cannot be reached.
    pub async fn reconnect(&mut self, args: &ClientArgs, progress: &ProgressBar) -> CliResult<Client> {
        loop {
            match connect(args).await {
                Ok(client) => return Ok(client),
                Err(e) => self.wait(&e, progress).await?,
            }
        }
    }
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or(text)
}

/// A progress display on stderr; hidden with --quiet or when stderr is not a terminal. Templates
/// may use `{rate}` for a whole-number rate.
pub fn progress(quiet: bool, length: Option<u64>, template: &str) -> ProgressBar {
    if quiet || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(length, ProgressDrawTarget::stderr_with_hz(8));
    if let Ok(style) = ProgressStyle::with_template(template) {
        // `{rate}`: a whole number per second (indicatif's `{per_sec}` prints fractions).
        let rate = |state: &ProgressState, w: &mut dyn std::fmt::Write| {
            let _ = write!(w, "{:.0}/s", state.per_sec());
        };
        bar.set_style(style.with_key("rate", rate).progress_chars("=> "));
    }
    bar.enable_steady_tick(Duration::from_millis(250));
    bar
}

/// A rate for a summary line.
pub fn per_second(count: u64, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs > 0.0 { count as f64 / secs } else { 0.0 }
}

#[derive(Args)]
pub struct DatasetArgs {
    #[command(flatten)]
    client: ClientArgs,
    #[command(subcommand)]
    command: DatasetCommand,
}

#[derive(Clone, Copy, ValueEnum)]
enum StandingFilter {
    /// Datasets you provide.
    Owner,
    /// 无条件共享: open to every department.
    Open,
    /// 有条件共享 with an active grant.
    Granted,
    /// 有条件共享: you may apply.
    Requestable,
    /// 不予共享.
    NotShared,
}

#[derive(Clone, Copy, ValueEnum)]
enum KindFilter {
    Table,
    File,
}

#[derive(Subcommand)]
enum DatasetCommand {
    /// Open the exchange for one of your published catalogue entries.
    Create {
        /// The entry's resource code.
        dataset: String,
        /// Table datasets: the schema subject of the records [default: the schema bound to the entry].
        #[arg(long)]
        schema: Option<String>,
        /// The schema version [default: the latest].
        #[arg(long, default_value_t = 0)]
        version: u32,
        /// A key property of the records (repeat for a composite key), e.g. -k uscc. (`--key` is
        /// taken: it names this client's TLS private key.)
        #[arg(short = 'k', long, value_name = "PROP")]
        key_property: Vec<String>,
    },
    /// Show a dataset.
    Show { dataset: String },
    /// The exchange catalogue (交换目录): the datasets you can exchange, with your standing.
    List {
        /// Part of the dataset's name or resource code.
        #[arg(long)]
        keyword: Option<String>,
        /// The provider's 统一社会信用代码.
        #[arg(long, value_name = "USCC")]
        provider: Option<String>,
        #[arg(long)]
        standing: Option<StandingFilter>,
        #[arg(long)]
        kind: Option<KindFilter>,
        /// At most this many datasets.
        #[arg(long, default_value_t = 500)]
        limit: usize,
    },
    /// Move a table dataset to a newer version of its schema subject.
    Upgrade { dataset: String, version: u32 },
}

pub fn kind_label(kind: i32) -> &'static str {
    match pb::DatasetKind::try_from(kind) {
        Ok(pb::DatasetKind::Table) => "table",
        Ok(pb::DatasetKind::File) => "file",
        _ => "?",
    }
}

pub fn standing_label(standing: i32) -> &'static str {
    match pb::Standing::try_from(standing) {
        Ok(pb::Standing::Owner) => "owner",
        Ok(pb::Standing::Open) => "open",
        Ok(pb::Standing::Granted) => "granted",
        Ok(pb::Standing::Requestable) => "requestable",
        Ok(pb::Standing::NotShared) => "not-shared",
        _ => "?",
    }
}

fn schema_label(d: &pb::Dataset) -> String {
    if d.schema_subject.is_empty() {
        String::new()
    } else {
        format!("{}@{}", d.schema_subject, d.schema_version)
    }
}

fn dataset_json(d: &pb::Dataset) -> Value {
    json!({
        "dataset": d.dataset, "name": d.name, "provider_code": d.provider_code, "provider_name": d.provider_name,
        "kind": kind_label(d.kind), "schema_subject": d.schema_subject, "schema_version": d.schema_version,
        "key": d.key, "record_count": d.record_count, "last_sequence": d.last_sequence,
        "last_published_at": output::time(&d.last_published_at), "standing": standing_label(d.standing),
        "created_at": output::time(&d.created_at),
    })
}

fn show_dataset(as_json: bool, d: &pb::Dataset) {
    output::emit(as_json, dataset_json(d), || {
        out!("{}  {}  ({})", d.dataset, d.name, kind_label(d.kind));
        out!("  provider:        {} {}", d.provider_code, d.provider_name);
        if !d.schema_subject.is_empty() {
            out!("  schema:          {} version {}", d.schema_subject, d.schema_version);
            out!("  key:             {}", d.key.join(", "));
        }
        let what = if d.kind == pb::DatasetKind::File as i32 {
            "files"
        } else {
            "records"
        };
        out!("  {what}:{}{}", " ".repeat(16 - what.len()), d.record_count);
        out!("  last sequence:   {}", d.last_sequence);
        let last = output::time(&d.last_published_at);
        out!("  last published:  {}", if last.is_empty() { "never" } else { &last });
        out!("  your standing:   {}", standing_label(d.standing));
        out!("  created:         {}", output::time(&d.created_at));
    });
}

fn datasets(as_json: bool, list: &[pb::Dataset]) {
    output::emit(as_json, Value::Array(list.iter().map(dataset_json).collect()), || {
        let rows: Vec<Vec<String>> = list
            .iter()
            .map(|d| {
                vec![
                    d.dataset.clone(),
                    d.name.clone(),
                    d.provider_name.clone(),
                    kind_label(d.kind).into(),
                    schema_label(d),
                    d.key.join(","),
                    d.record_count.to_string(),
                    d.last_sequence.to_string(),
                    output::time(&d.last_published_at),
                    standing_label(d.standing).into(),
                ]
            })
            .collect();
        output::table(
            &[
                "dataset",
                "name",
                "provider",
                "kind",
                "schema",
                "key",
                "records",
                "last seq",
                "last published",
                "standing",
            ],
            &rows,
        );
    });
}

pub async fn run(args: DatasetArgs) -> CliResult {
    let json = args.client.json;
    let mut client = connect(&args.client).await?;
    match args.command {
        DatasetCommand::Create {
            dataset,
            schema,
            version,
            key_property,
        } => {
            let request = pb::CreateDatasetRequest {
                dataset,
                schema_subject: schema.unwrap_or_default(),
                schema_version: version,
                key: key_property,
            };
            show_dataset(
                json,
                &client.create_dataset(request).await.map_err(explain)?.into_inner(),
            );
        }
        DatasetCommand::Show { dataset } => {
            let d = client
                .get_dataset(pb::GetDatasetRequest { dataset })
                .await
                .map_err(explain)?;
            show_dataset(json, &d.into_inner());
        }
        DatasetCommand::List {
            keyword,
            provider,
            standing,
            kind,
            limit,
        } => {
            let mut request = pb::ListDatasetsRequest {
                keyword: keyword.unwrap_or_default(),
                provider_code: provider.unwrap_or_default(),
                kind: match kind {
                    None => pb::DatasetKind::Unspecified,
                    Some(KindFilter::Table) => pb::DatasetKind::Table,
                    Some(KindFilter::File) => pb::DatasetKind::File,
                } as i32,
                standing: match standing {
                    None => pb::Standing::Unspecified,
                    Some(StandingFilter::Owner) => pb::Standing::Owner,
                    Some(StandingFilter::Open) => pb::Standing::Open,
                    Some(StandingFilter::Granted) => pb::Standing::Granted,
                    Some(StandingFilter::Requestable) => pb::Standing::Requestable,
                    Some(StandingFilter::NotShared) => pb::Standing::NotShared,
                } as i32,
                page_size: limit.clamp(1, 1000) as u32,
                page_token: String::new(),
            };
            let mut found = Vec::new();
            loop {
                let page = client
                    .list_datasets(request.clone())
                    .await
                    .map_err(explain)?
                    .into_inner();
                found.extend(page.datasets);
                if page.next_page_token.is_empty() || found.len() >= limit {
                    break;
                }
                request.page_token = page.next_page_token;
            }
            found.truncate(limit);
            datasets(json, &found);
        }
        DatasetCommand::Upgrade { dataset, version } => {
            let request = pb::UpgradeDatasetSchemaRequest {
                dataset,
                schema_version: version,
            };
            let d = client.upgrade_dataset_schema(request).await.map_err(explain)?;
            show_dataset(json, &d.into_inner());
        }
    }
    Ok(())
}
