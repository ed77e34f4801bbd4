//! `xinqiao schema`: the shared schema registry on a hub.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use xinqiao_domain::compatibility::CompatibilityMode;
use xinqiao_proto::v1 as pb;
use xinqiao_proto::v1::schema_service_client::SchemaServiceClient;
use xinqiao_schema::records::{RecordReport, Summary, UNREADABLE};
use xinqiao_schema::{RecordOutcome, Violation};

use crate::client::{ClientArgs, explain};
use crate::validate::{RecordFormat, finish, open_records, print_report, read_json};
use crate::{CliResult, out, output};

#[derive(Args)]
pub struct SchemaArgs {
    #[command(flatten)]
    client: ClientArgs,
    #[command(subcommand)]
    command: SchemaCommand,
}

#[derive(Subcommand)]
enum SchemaCommand {
    /// Register a JSON Schema file as the next version of a subject.
    Register { subject: String, file: PathBuf },
    /// Print a version of a subject (the latest by default).
    Show {
        subject: String,
        #[arg(long, default_value_t = 0)]
        version: u32,
        #[arg(long)]
        deleted: bool,
    },
    /// List subjects, or the versions of one subject.
    List {
        subject: Option<String>,
        #[arg(long)]
        deleted: bool,
    },
    /// Check a schema file against a subject without registering it; exits non-zero if incompatible.
    Check {
        subject: String,
        file: PathBuf,
        /// BACKWARD, FORWARD, FULL, BACKWARD_TRANSITIVE, FORWARD_TRANSITIVE, FULL_TRANSITIVE or NONE
        /// [default: the subject's mode].
        #[arg(long)]
        mode: Option<String>,
    },
    /// Register every <subject>.json in a directory, referenced subjects first.
    Import { dir: PathBuf },
    /// Draft a schema from a catalogue entry's data items (信息项).
    FromEntry {
        code: String,
        /// Write the draft here instead of printing it.
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Bind a catalogue entry to the schema of its records.
    Bind {
        code: String,
        subject: String,
        #[arg(long, default_value_t = 0)]
        version: u32,
    },
    /// Soft-delete a version, or with --permanent remove a soft-deleted one for good.
    Delete {
        subject: String,
        version: u32,
        #[arg(long)]
        permanent: bool,
    },
    /// Show or set the compatibility mode of a subject (or, without a subject, the registry default).
    Compat {
        subject: Option<String>,
        /// Set this mode.
        #[arg(long)]
        set: Option<String>,
        /// Let the subject follow the registry default again.
        #[arg(long, conflicts_with = "set")]
        clear: bool,
    },
    /// Validate a file of records on the hub (a dry run; nothing is stored).
    Validate {
        subject: String,
        records: PathBuf,
        #[arg(long, default_value_t = 0)]
        version: u32,
        #[arg(long)]
        lenient: bool,
        #[arg(long)]
        format: Option<RecordFormat>,
    },
}

fn mode_number(text: &str) -> CliResult<i32> {
    let mode = CompatibilityMode::parse(&text.to_ascii_uppercase())?;
    let api = pb::CompatibilityMode::from_str_name(&format!("COMPATIBILITY_MODE_{}", mode.as_str()));
    api.map(|m| m as i32).ok_or_else(|| format!("unknown mode {text}"))
}

fn mode_name(number: i32) -> String {
    pb::CompatibilityMode::try_from(number)
        .map(|m| m.as_str_name().trim_start_matches("COMPATIBILITY_MODE_").to_string())
        .unwrap_or_else(|_| number.to_string())
}

fn read(path: &Path) -> CliResult<String> {
    std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

fn print_version(json: bool, v: &pb::SchemaVersion) {
    let document: serde_json::Value = serde_json::from_str(&v.schema_json).unwrap_or(serde_json::Value::Null);
    let value = serde_json::json!({
        "subject": v.subject, "version": v.version, "fingerprint": v.fingerprint, "deleted": v.deleted,
        "registered_by": v.registered_by, "created_at": output::time(&v.created_at),
        "references": v.references.iter().map(|r| format!("{}/{}", r.subject, r.version)).collect::<Vec<_>>(),
        "schema": document,
    });
    output::emit(json, value, || {
        out!(
            "{} version {}{}  registered by {} at {}",
            v.subject,
            v.version,
            if v.deleted { " (deleted)" } else { "" },
            v.registered_by,
            output::time(&v.created_at)
        );
        out!("{}", serde_json::to_string_pretty(&document).unwrap_or_default());
    });
}

/// The subjects a schema file references, for ordering an import.
fn referenced_subjects(document: &serde_json::Value) -> BTreeSet<String> {
    xinqiao_schema::references(document)
        .into_iter()
        .map(|(s, _)| s)
        .collect()
}

pub async fn run(args: SchemaArgs) -> CliResult {
    let json = args.client.json;
    let mut client = SchemaServiceClient::new(args.client.channel().await?);
    match args.command {
        SchemaCommand::Register { subject, file } => {
            let request = pb::RegisterSchemaRequest {
                subject,
                schema_json: read(&file)?,
            };
            let r = client.register_schema(request).await.map_err(explain)?.into_inner();
            let v = r.schema.ok_or("the hub returned no schema")?;
            let what = if r.created {
                "registered"
            } else {
                "already registered (identical content)"
            };
            output::emit(
                json,
                serde_json::json!({"subject": v.subject, "version": v.version, "created": r.created}),
                || out!("{} version {}: {what}", v.subject, v.version),
            );
        }
        SchemaCommand::Show {
            subject,
            version,
            deleted,
        } => {
            let request = pb::GetSchemaRequest {
                subject,
                version,
                include_deleted: deleted,
            };
            print_version(json, &client.get_schema(request).await.map_err(explain)?.into_inner());
        }
        SchemaCommand::List { subject: None, deleted } => {
            let mut subjects = Vec::new();
            let mut page_token = String::new();
            loop {
                let request = pb::ListSubjectsRequest {
                    page_size: 500,
                    page_token,
                    include_deleted: deleted,
                };
                let page = client.list_subjects(request).await.map_err(explain)?.into_inner();
                subjects.extend(page.subjects);
                if page.next_page_token.is_empty() {
                    break;
                }
                page_token = page.next_page_token;
            }
            let value = serde_json::Value::Array(
                subjects
                    .iter()
                    .map(|s| serde_json::json!({"subject": s.subject, "owner": s.owner, "latest_version": s.latest_version, "versions": s.version_count, "compatibility": mode_name(s.compatibility)}))
                    .collect(),
            );
            output::emit(json, value, || {
                let rows: Vec<Vec<String>> = subjects
                    .iter()
                    .map(|s| {
                        vec![
                            s.subject.clone(),
                            s.latest_version.to_string(),
                            s.version_count.to_string(),
                            mode_name(s.compatibility),
                            s.owner.clone(),
                        ]
                    })
                    .collect();
                output::table(&["subject", "latest", "versions", "compatibility", "owner"], &rows);
            });
        }
        SchemaCommand::List {
            subject: Some(subject),
            deleted,
        } => {
            let request = pb::ListSchemaVersionsRequest {
                subject,
                include_deleted: deleted,
            };
            let versions = client
                .list_schema_versions(request)
                .await
                .map_err(explain)?
                .into_inner()
                .versions;
            let value = serde_json::Value::Array(
                versions
                    .iter()
                    .map(|v| serde_json::json!({"version": v.version, "deleted": v.deleted, "fingerprint": v.fingerprint, "registered_by": v.registered_by, "created_at": output::time(&v.created_at)}))
                    .collect(),
            );
            output::emit(json, value, || {
                let rows: Vec<Vec<String>> = versions
                    .iter()
                    .map(|v| {
                        vec![
                            v.version.to_string(),
                            if v.deleted { "deleted" } else { "live" }.into(),
                            v.registered_by.clone(),
                            output::time(&v.created_at),
                            v.fingerprint.chars().take(16).collect(),
                        ]
                    })
                    .collect();
                output::table(&["version", "status", "registered by", "at", "fingerprint"], &rows);
            });
        }
        SchemaCommand::Check { subject, file, mode } => {
            let mode = mode.as_deref().map(mode_number).transpose()?.unwrap_or(0);
            let request = pb::CheckCompatibilityRequest {
                subject: subject.clone(),
                schema_json: read(&file)?,
                mode,
            };
            let r = client.check_compatibility(request).await.map_err(explain)?.into_inner();
            let value = serde_json::json!({
                "compatible": r.compatible, "mode": mode_name(r.mode),
                "incompatibilities": r.incompatibilities.iter().map(|i| serde_json::json!({"pointer": i.pointer, "reason": i.reason})).collect::<Vec<_>>(),
            });
            output::emit(json, value, || {
                if r.compatible {
                    out!("compatible with {subject} under {}", mode_name(r.mode));
                } else {
                    out!("NOT compatible with {subject} under {}:", mode_name(r.mode));
                    for i in &r.incompatibilities {
                        out!(
                            "  {}  {}",
                            if i.pointer.is_empty() { "(root)" } else { &i.pointer },
                            i.reason
                        );
                    }
                }
            });
            if !r.compatible {
                return Err(format!("{} incompatibilities", r.incompatibilities.len()));
            }
        }
        SchemaCommand::Import { dir } => {
            let mut files = BTreeMap::new();
            let entries = std::fs::read_dir(&dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
            for entry in entries {
                let path = entry.map_err(|e| e.to_string())?.path();
                if path.extension().is_some_and(|e| e == "json") {
                    let subject = path
                        .file_stem()
                        .and_then(|s| s.to_str())
                        .ok_or("bad file name")?
                        .to_string();
                    let document = read_json(&path)?;
                    files.insert(subject, (path, document));
                }
            }
            // Referenced subjects first; what is left when nothing more can go is a cycle.
            let mut done = BTreeSet::new();
            while done.len() < files.len() {
                let ready: Vec<String> = files
                    .iter()
                    .filter(|(s, (_, d))| {
                        !done.contains(*s)
                            && referenced_subjects(d)
                                .iter()
                                .all(|r| done.contains(r) || !files.contains_key(r))
                    })
                    .map(|(s, _)| s.clone())
                    .collect();
                if ready.is_empty() {
                    return Err("the schemas reference each other in a cycle".into());
                }
                for subject in ready {
                    let (path, _) = &files[&subject];
                    let request = pb::RegisterSchemaRequest {
                        subject: subject.clone(),
                        schema_json: read(path)?,
                    };
                    let r = client
                        .register_schema(request)
                        .await
                        .map_err(|s| format!("{}: {}", path.display(), explain(s)))?
                        .into_inner();
                    let version = r.schema.map(|s| s.version).unwrap_or(0);
                    out!(
                        "{subject:<16} version {version}  {}",
                        if r.created { "registered" } else { "unchanged" }
                    );
                    done.insert(subject);
                }
            }
        }
        SchemaCommand::FromEntry { code, output: path } => {
            let r = client
                .draft_schema_from_entry(pb::DraftSchemaFromEntryRequest { resource_code: code })
                .await;
            let draft = r.map_err(explain)?.into_inner().schema_json;
            match path {
                Some(path) => {
                    std::fs::write(&path, format!("{draft}\n"))
                        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
                    out!("wrote {}", path.display());
                }
                None => out!("{draft}"),
            }
        }
        SchemaCommand::Bind { code, subject, version } => {
            let request = pb::BindEntrySchemaRequest {
                resource_code: code,
                subject,
                version,
            };
            let b = client.bind_entry_schema(request).await.map_err(explain)?.into_inner();
            output::emit(
                json,
                serde_json::json!({"resource_code": b.resource_code, "subject": b.subject, "version": b.version}),
                || {
                    out!(
                        "{} is described by {} version {}",
                        b.resource_code,
                        b.subject,
                        b.version
                    )
                },
            );
        }
        SchemaCommand::Delete {
            subject,
            version,
            permanent,
        } => {
            let request = pb::DeleteSchemaVersionRequest {
                subject: subject.clone(),
                version,
                permanent,
            };
            client.delete_schema_version(request).await.map_err(explain)?;
            out!(
                "{subject} version {version} {}",
                if permanent {
                    "removed for good"
                } else {
                    "deleted (soft)"
                }
            );
        }
        SchemaCommand::Compat { subject, set, clear } => {
            let subject = subject.unwrap_or_default();
            let setting = if set.is_some() || clear {
                let mode = set.as_deref().map(mode_number).transpose()?.unwrap_or(0);
                client
                    .set_compatibility(pb::SetCompatibilityRequest { subject, mode })
                    .await
                    .map_err(explain)?
            } else {
                client
                    .get_compatibility(pb::GetCompatibilityRequest { subject })
                    .await
                    .map_err(explain)?
            }
            .into_inner();
            let scope = if setting.subject.is_empty() {
                "registry default".to_string()
            } else {
                setting.subject.clone()
            };
            out!(
                "{scope}: {}{}",
                mode_name(setting.mode),
                if setting.inherited {
                    " (the registry default)"
                } else {
                    ""
                }
            );
        }
        SchemaCommand::Validate {
            subject,
            records,
            version,
            lenient,
            format,
        } => {
            let schema = client
                .get_schema(pb::GetSchemaRequest {
                    subject: subject.clone(),
                    version,
                    include_deleted: false,
                })
                .await
                .map_err(explain)?
                .into_inner();
            let document: serde_json::Value = serde_json::from_str(&schema.schema_json).map_err(|e| e.to_string())?;
            let stream = open_records(&records, RecordFormat::of(&records, format), &document)?;
            let mut summary = Summary::default();
            let mut batch: Vec<(u64, String)> = Vec::new();
            let mut stream = stream.peekable();
            while stream.peek().is_some() {
                batch.clear();
                // Records this side could not read are reported with the hub's, in line order.
                let mut reports = Vec::new();
                for (line, record) in stream.by_ref().take(500) {
                    summary.records += 1;
                    match record {
                        Ok(value) => batch.push((line, value.to_string())),
                        Err(message) => {
                            let error = Violation {
                                instance_pointer: String::new(),
                                keyword: UNREADABLE.into(),
                                message,
                            };
                            reports.push(RecordReport {
                                line,
                                outcome: RecordOutcome {
                                    errors: vec![error],
                                    ..Default::default()
                                },
                            });
                        }
                    }
                }
                let request = pb::ValidateRecordsRequest {
                    subject: subject.clone(),
                    version: schema.version,
                    records: batch.iter().map(|(_, r)| r.clone()).collect(),
                    lenient,
                };
                let response = client.validate_records(request).await.map_err(explain)?.into_inner();
                let convert = |v: pb::RecordViolation| Violation {
                    instance_pointer: v.instance_pointer,
                    keyword: v.keyword,
                    message: v.message,
                };
                for report in response.reports {
                    let line = batch.get(report.index as usize).map(|(line, _)| *line).unwrap_or(0);
                    let outcome = RecordOutcome {
                        errors: report.errors.into_iter().map(convert).collect(),
                        warnings: report.warnings.into_iter().map(convert).collect(),
                        ..Default::default()
                    };
                    reports.push(RecordReport { line, outcome });
                }
                reports.sort_by_key(|r| r.line);
                for report in &reports {
                    if report.outcome.errors.is_empty() {
                        summary.warned += 1;
                    } else {
                        summary.invalid += 1;
                    }
                    print_report(report);
                }
            }
            out!("validated on the hub against {subject} version {}", schema.version);
            finish(&summary)?;
        }
    }
    Ok(())
}
