//! `xinqiao catalog`: compile, review and search catalogue entries.

use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};
use xinqiao_domain::catalogue as d;
use xinqiao_domain::lifecycle::EntryState;
use xinqiao_hub::convert;
use xinqiao_proto::v1 as pb;

use crate::client::{ClientArgs, explain};
use crate::{CliResult, entry_file, out, output};

#[derive(Args)]
pub struct CatalogArgs {
    #[command(flatten)]
    client: ClientArgs,
    #[command(subcommand)]
    command: CatalogCommand,
}

#[derive(Subcommand)]
enum CatalogCommand {
    /// Compile a new entry from a TOML or JSON file; it starts as a draft (待提交).
    Create { file: PathBuf },
    /// Revise a draft, returned or withdrawn entry from a file.
    Update {
        code: String,
        file: PathBuf,
        /// Refuse the change unless the entry is still at this version.
        #[arg(long, default_value_t = 0)]
        expected_version: u64,
    },
    /// Submit an entry for review (待审核).
    Submit { code: String },
    /// Publish an entry pending review (admin).
    Publish { code: String },
    /// Return an entry pending review to its provider (admin).
    Return {
        code: String,
        #[arg(long)]
        reason: String,
    },
    /// Take an entry off line (下线).
    Withdraw {
        code: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Show an entry, or one of its past versions.
    Show {
        code: String,
        #[arg(long, default_value_t = 0)]
        version: u64,
    },
    /// Every version of an entry.
    History { code: String },
    /// Search the entries you may see.
    Search {
        /// Matched in names, summaries and data-item names.
        keyword: Option<String>,
        #[arg(long)]
        classification: Option<String>,
        #[arg(long)]
        provider: Option<String>,
        /// unconditional|conditional|not_shared (or 无条件共享…)
        #[arg(long)]
        share_type: Option<String>,
        #[arg(long)]
        open_type: Option<String>,
        #[arg(long)]
        update_cycle: Option<String>,
        #[arg(long)]
        format: Option<String>,
        /// draft|pending_review|published|returned|withdrawn (or 待提交…)
        #[arg(long)]
        state: Option<String>,
        /// At most this many entries.
        #[arg(long, default_value_t = 200)]
        limit: usize,
    },
    /// The published catalogue as one document for other catalogue tools (CKAN's DCAT
    /// harvester, RDF libraries), to standard output or a file.
    Export {
        #[arg(long, value_enum, default_value_t = ExportFormat::Dcat)]
        format: ExportFormat,
        /// Write the document to this file instead of standard output.
        #[arg(long, short = 'o', value_name = "FILE")]
        output: Option<PathBuf>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum ExportFormat {
    /// DCAT-AP as JSON-LD (application/ld+json).
    Dcat,
}

impl ExportFormat {
    fn api(self) -> pb::CatalogFormat {
        match self {
            ExportFormat::Dcat => pb::CatalogFormat::DcatJsonld,
        }
    }
}

fn filter<T: Copy>(
    field: &str,
    value: Option<String>,
    parse: fn(&str) -> Option<T>,
    api: fn(T) -> i32,
) -> CliResult<i32> {
    match value {
        None => Ok(0),
        Some(v) => parse(&v)
            .map(api)
            .ok_or_else(|| format!("--{field}: unknown value '{v}'")),
    }
}

pub async fn run(args: CatalogArgs) -> CliResult {
    let json = args.client.json;
    let mut client = args.client.directory().await?;
    let show = |e: pb::CatalogEntry| output::entry(json, &e);
    match args.command {
        CatalogCommand::Create { file } => {
            let content = entry_file::read(&file)?;
            let e = client
                .create_entry(pb::CreateEntryRequest { content: Some(content) })
                .await
                .map_err(explain)?;
            show(e.into_inner());
        }
        CatalogCommand::Update {
            code,
            file,
            expected_version,
        } => {
            let content = entry_file::read(&file)?;
            let request = pb::UpdateEntryRequest {
                resource_code: code,
                content: Some(content),
                expected_version,
            };
            show(client.update_entry(request).await.map_err(explain)?.into_inner());
        }
        CatalogCommand::Submit { code } => {
            let request = pb::SubmitEntryRequest {
                resource_code: code,
                expected_version: 0,
            };
            show(client.submit_entry(request).await.map_err(explain)?.into_inner());
        }
        CatalogCommand::Publish { code } => {
            let request = pb::PublishEntryRequest {
                resource_code: code,
                expected_version: 0,
            };
            show(client.publish_entry(request).await.map_err(explain)?.into_inner());
        }
        CatalogCommand::Return { code, reason } => {
            let request = pb::ReturnEntryRequest {
                resource_code: code,
                reason,
                expected_version: 0,
            };
            show(client.return_entry(request).await.map_err(explain)?.into_inner());
        }
        CatalogCommand::Withdraw { code, reason } => {
            let request = pb::WithdrawEntryRequest {
                resource_code: code,
                reason,
                expected_version: 0,
            };
            show(client.withdraw_entry(request).await.map_err(explain)?.into_inner());
        }
        CatalogCommand::Show { code, version } => {
            let request = pb::GetEntryRequest {
                resource_code: code,
                version,
            };
            show(client.get_entry(request).await.map_err(explain)?.into_inner());
        }
        CatalogCommand::History { code } => {
            let request = pb::ListEntryVersionsRequest { resource_code: code };
            let versions = client
                .list_entry_versions(request)
                .await
                .map_err(explain)?
                .into_inner()
                .versions;
            output::versions(json, &versions);
        }
        CatalogCommand::Search {
            keyword,
            classification,
            provider,
            share_type,
            open_type,
            update_cycle,
            format,
            state,
            limit,
        } => {
            let mut request = pb::SearchEntriesRequest {
                keyword: keyword.unwrap_or_default(),
                classification_prefix: classification.unwrap_or_default(),
                provider_code: provider.unwrap_or_default(),
                share_type: filter("share-type", share_type, d::ShareType::parse, convert::share_type_api)?,
                open_type: filter("open-type", open_type, d::OpenType::parse, convert::open_type_api)?,
                update_cycle: filter(
                    "update-cycle",
                    update_cycle,
                    d::UpdateCycle::parse,
                    convert::update_cycle_api,
                )?,
                format: filter("format", format, d::ResourceFormat::parse, convert::resource_format_api)?,
                state: filter("state", state, EntryState::parse, convert::entry_state_api)?,
                page_size: limit.clamp(1, 1000) as u32,
                page_token: String::new(),
                local_only: false,
            };
            let mut found = Vec::new();
            loop {
                let page = client
                    .search_entries(request.clone())
                    .await
                    .map_err(explain)?
                    .into_inner();
                found.extend(page.entries);
                if page.next_page_token.is_empty() || found.len() >= limit {
                    break;
                }
                request.page_token = page.next_page_token;
            }
            found.truncate(limit);
            output::entries(json, &found);
        }
        CatalogCommand::Export { format, output: file } => {
            let request = pb::ExportCatalogRequest {
                format: format.api() as i32,
            };
            let export = client.export_catalog(request).await.map_err(explain)?.into_inner();
            // The hub sends it compact; people read it indented.
            let document = serde_json::from_str::<serde_json::Value>(&export.document)
                .and_then(|d| serde_json::to_string_pretty(&d))
                .unwrap_or(export.document);
            match file {
                None => out!("{document}"),
                Some(path) => {
                    std::fs::write(&path, format!("{document}\n"))
                        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
                    out!("wrote {} ({})", path.display(), export.media_type);
                }
            }
        }
    }
    Ok(())
}
