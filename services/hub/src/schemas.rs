//! SchemaService: the shared schema registry and record validation over gRPC.

use std::sync::Arc;

use tonic::{Request, Response, Status};
use xinqiao_domain::schema::{RegisteredSchema, SchemaRef, draft_from_entry, uncovered_items};
use xinqiao_domain::{Error, Result, paging, policy, schema as rules};
use xinqiao_proto::v1 as pb;
use xinqiao_proto::v1::schema_service_server::SchemaService;
use xinqiao_schema::FormatMode;
use xinqiao_store::{EntrySchemaBinding, Store};

use crate::audit::CallNote;
use crate::auth::Authenticator;
use crate::convert::{self, timestamp};
use crate::paging::{decode, next_token};
use crate::registry::Registry;
use crate::status::answer;

const SUBJECTS: &str = "subjects";

/// At most this many records in one ValidateRecords call.
pub const MAX_RECORDS_PER_CALL: usize = 10_000;
/// At most this many records with problems reported by one call.
pub const MAX_REPORTS_PER_CALL: usize = 1_000;
/// At most this many errors reported for one record.
pub const MAX_ERRORS_PER_RECORD: usize = 20;

pub struct SchemaApi {
    store: Arc<dyn Store>,
    auth: Authenticator,
    registry: Registry,
}

impl SchemaApi {
    pub fn new(store: Arc<dyn Store>, auth: Authenticator, registry: Registry) -> Self {
        Self { auth, store, registry }
    }
}

fn version(s: RegisteredSchema) -> pb::SchemaVersion {
    pb::SchemaVersion {
        subject: s.subject,
        version: s.version,
        schema_json: s.content,
        fingerprint: s.fingerprint,
        references: s
            .references
            .into_iter()
            .map(|r| pb::SchemaReference {
                subject: r.subject,
                version: r.version,
            })
            .collect(),
        registered_by: s.registered_by,
        deleted: s.deleted,
        created_at: Some(timestamp(s.created_at)),
    }
}

/// A subject named in a request: a name that breaks the naming rule names no subject, and is
/// refused before a lookup whose NOT_FOUND would echo all of it.
fn check_subject(subject: &str) -> Result<()> {
    rules::validate_subject(subject).map_err(|e| Error::invalid("subject", e))
}

fn binding(b: EntrySchemaBinding) -> pb::EntrySchemaBinding {
    pb::EntrySchemaBinding {
        resource_code: b.resource_code,
        subject: b.schema.subject,
        version: b.schema.version,
        bound_by: b.bound_by,
        bound_at: Some(timestamp(b.at)),
    }
}

fn violation(v: xinqiao_schema::Violation) -> pb::RecordViolation {
    pb::RecordViolation {
        instance_pointer: v.instance_pointer,
        keyword: v.keyword,
        message: v.message,
    }
}

impl SchemaApi {
    async fn visible_entry(
        &self,
        caller: &xinqiao_domain::identity::Caller,
        code: &str,
    ) -> Result<xinqiao_domain::catalogue::CatalogEntry> {
        crate::directory::visible_entry(self.store.as_ref(), caller, code).await
    }
}

#[tonic::async_trait]
impl SchemaService for SchemaApi {
    async fn register_schema(
        &self,
        request: Request<pb::RegisterSchemaRequest>,
    ) -> Result<Response<pb::RegisterSchemaResponse>, Status> {
        let note = CallNote::of(&request);
        answer(async {
            let caller = self.auth.caller(&request).await?;
            let r = request.get_ref();
            note.about(&r.subject, caller.department().unwrap_or_default());
            let (schema, created) = self.registry.register(&caller, &r.subject, &r.schema_json).await?;
            note.detail("version", schema.version);
            note.detail("created", created);
            Ok(pb::RegisterSchemaResponse {
                schema: Some(version(schema)),
                created,
            })
        })
        .await
    }

    async fn check_compatibility(
        &self,
        request: Request<pb::CheckCompatibilityRequest>,
    ) -> Result<Response<pb::CheckCompatibilityResponse>, Status> {
        answer(async {
            self.auth.caller(&request).await?;
            let r = request.get_ref();
            let candidate = self.registry.candidate(&r.subject, &r.schema_json).await?;
            let mode = match convert::filter_enum("mode", r.mode, convert::compatibility_mode)? {
                Some(mode) => mode,
                None => self.registry.mode_of(&r.subject).await?.0,
            };
            let problems = self.registry.incompatibilities(&candidate, mode).await?;
            Ok(pb::CheckCompatibilityResponse {
                compatible: problems.is_empty(),
                mode: convert::compatibility_mode_api(mode),
                incompatibilities: problems
                    .into_iter()
                    .map(|p| pb::Incompatibility {
                        pointer: p.pointer,
                        reason: p.reason,
                    })
                    .collect(),
            })
        })
        .await
    }

    async fn get_schema(&self, request: Request<pb::GetSchemaRequest>) -> Result<Response<pb::SchemaVersion>, Status> {
        answer(async {
            self.auth.caller(&request).await?;
            let r = request.get_ref();
            check_subject(&r.subject)?;
            Ok(version(
                self.registry.resolve(&r.subject, r.version, r.include_deleted).await?,
            ))
        })
        .await
    }

    async fn list_subjects(
        &self,
        request: Request<pb::ListSubjectsRequest>,
    ) -> Result<Response<pb::ListSubjectsResponse>, Status> {
        answer(async {
            self.auth.caller(&request).await?;
            let r = request.get_ref();
            let limit = paging::page_size(r.page_size)?;
            let after = decode(SUBJECTS, &r.page_token)?;
            let mut page = self
                .store
                .list_subjects(after.as_deref(), limit + 1, r.include_deleted)
                .await?;
            let next_page_token = next_token(SUBJECTS, &mut page, limit, |s| &s.name);
            let default = self.store.default_compatibility().await?;
            let subjects = page
                .into_iter()
                .map(|s| pb::SubjectSummary {
                    subject: s.name,
                    owner: s.owner,
                    latest_version: s.latest_version.unwrap_or(0),
                    version_count: s.version_count,
                    compatibility: convert::compatibility_mode_api(s.compatibility.unwrap_or(default)),
                })
                .collect();
            Ok(pb::ListSubjectsResponse {
                subjects,
                next_page_token,
            })
        })
        .await
    }

    async fn list_schema_versions(
        &self,
        request: Request<pb::ListSchemaVersionsRequest>,
    ) -> Result<Response<pb::ListSchemaVersionsResponse>, Status> {
        answer(async {
            self.auth.caller(&request).await?;
            let r = request.get_ref();
            check_subject(&r.subject)?;
            if self.store.get_subject(&r.subject).await?.is_none() {
                return Err(Error::NotFound(format!("schema subject '{}'", r.subject)));
            }
            let versions = self.store.list_schema_versions(&r.subject, r.include_deleted).await?;
            Ok(pb::ListSchemaVersionsResponse {
                versions: versions.into_iter().map(version).collect(),
            })
        })
        .await
    }

    async fn delete_schema_version(
        &self,
        request: Request<pb::DeleteSchemaVersionRequest>,
    ) -> Result<Response<pb::DeleteSchemaVersionResponse>, Status> {
        let note = CallNote::of(&request);
        answer(async {
            let caller = self.auth.caller(&request).await?;
            let r = request.get_ref();
            note.about(&r.subject, "");
            note.detail("version", r.version);
            note.detail("permanent", r.permanent);
            check_subject(&r.subject)?;
            let subject = self.store.get_subject(&r.subject).await?;
            let subject = subject.ok_or_else(|| Error::NotFound(format!("schema subject '{}'", r.subject)))?;
            rules::change_subject(&caller, Some(&subject))?;
            if r.permanent {
                self.store.delete_schema_permanently(&r.subject, r.version).await?;
            } else {
                self.store.set_schema_deleted(&r.subject, r.version, true).await?;
            }
            Ok(pb::DeleteSchemaVersionResponse {})
        })
        .await
    }

    async fn get_compatibility(
        &self,
        request: Request<pb::GetCompatibilityRequest>,
    ) -> Result<Response<pb::CompatibilitySetting>, Status> {
        answer(async {
            self.auth.caller(&request).await?;
            let subject = request.get_ref().subject.clone();
            if subject.is_empty() {
                let mode = self.store.default_compatibility().await?;
                return Ok(pb::CompatibilitySetting {
                    subject,
                    mode: convert::compatibility_mode_api(mode),
                    inherited: false,
                });
            }
            check_subject(&subject)?;
            if self.store.get_subject(&subject).await?.is_none() {
                return Err(Error::NotFound(format!("schema subject '{subject}'")));
            }
            let (mode, inherited) = self.registry.mode_of(&subject).await?;
            Ok(pb::CompatibilitySetting {
                subject,
                mode: convert::compatibility_mode_api(mode),
                inherited,
            })
        })
        .await
    }

    async fn set_compatibility(
        &self,
        request: Request<pb::SetCompatibilityRequest>,
    ) -> Result<Response<pb::CompatibilitySetting>, Status> {
        let note = CallNote::of(&request);
        answer(async {
            let caller = self.auth.caller(&request).await?;
            let r = request.get_ref();
            note.about(&r.subject, "");
            note.detail("mode", r.mode);
            let mode = convert::filter_enum("mode", r.mode, convert::compatibility_mode)?;
            if r.subject.is_empty() {
                rules::change_default_compatibility(&caller)?;
                let mode = mode.ok_or_else(|| Error::invalid("mode", "the registry default needs a mode"))?;
                self.store.set_default_compatibility(mode).await?;
                return Ok(pb::CompatibilitySetting {
                    subject: String::new(),
                    mode: convert::compatibility_mode_api(mode),
                    inherited: false,
                });
            }
            check_subject(&r.subject)?;
            let subject = self.store.get_subject(&r.subject).await?;
            let subject = subject.ok_or_else(|| Error::NotFound(format!("schema subject '{}'", r.subject)))?;
            rules::change_subject(&caller, Some(&subject))?;
            self.store.set_subject_compatibility(&r.subject, mode).await?;
            let (mode, inherited) = self.registry.mode_of(&r.subject).await?;
            Ok(pb::CompatibilitySetting {
                subject: r.subject.clone(),
                mode: convert::compatibility_mode_api(mode),
                inherited,
            })
        })
        .await
    }

    async fn validate_records(
        &self,
        request: Request<pb::ValidateRecordsRequest>,
    ) -> Result<Response<pb::ValidateRecordsResponse>, Status> {
        answer(async {
            self.auth.caller(&request).await?;
            let r = request.get_ref();
            if r.records.len() > MAX_RECORDS_PER_CALL {
                return Err(Error::ResourceExhausted(format!(
                    "{} records in one call; at most {MAX_RECORDS_PER_CALL}",
                    r.records.len()
                )));
            }
            // A pinned version stays usable after a soft delete; "latest" means a live one.
            check_subject(&r.subject)?;
            let schema = self.registry.resolve(&r.subject, r.version, r.version != 0).await?;
            let mode = if r.lenient {
                FormatMode::Lenient
            } else {
                FormatMode::Strict
            };
            let validator = self.registry.validator(&schema, mode).await?;
            let mut response = pb::ValidateRecordsResponse {
                checked: r.records.len() as u32,
                schema_version: schema.version,
                ..Default::default()
            };
            for (index, text) in r.records.iter().enumerate() {
                let (errors, warnings) = match serde_json::from_str::<serde_json::Value>(text) {
                    Ok(record) => {
                        let outcome = validator.validate_bounded(&record, MAX_ERRORS_PER_RECORD);
                        (outcome.errors, outcome.warnings)
                    }
                    Err(e) => (
                        vec![xinqiao_schema::Violation {
                            instance_pointer: String::new(),
                            keyword: "parse".into(),
                            message: format!("not a JSON document: {e}"),
                        }],
                        Vec::new(),
                    ),
                };
                if !errors.is_empty() {
                    response.invalid += 1;
                }
                if errors.is_empty() && warnings.is_empty() {
                    continue;
                }
                if response.reports.len() == MAX_REPORTS_PER_CALL {
                    response.truncated = true;
                    continue;
                }
                response.reports.push(pb::RecordReport {
                    index: index as u32,
                    errors: errors.into_iter().map(violation).collect(),
                    warnings: warnings.into_iter().map(violation).collect(),
                });
            }
            Ok(response)
        })
        .await
    }

    async fn bind_entry_schema(
        &self,
        request: Request<pb::BindEntrySchemaRequest>,
    ) -> Result<Response<pb::EntrySchemaBinding>, Status> {
        let note = CallNote::of(&request);
        answer(async {
            let caller = self.auth.caller(&request).await?;
            let r = request.get_ref();
            let entry = self.visible_entry(&caller, &r.resource_code).await?;
            note.about(&entry.resource_code, &entry.provider_code);
            note.detail("schema", format!("{}/{}", r.subject, r.version));
            policy::bind_schema(&caller, &entry)?;
            check_subject(&r.subject)?;
            let schema = self.registry.resolve(&r.subject, r.version, false).await?;
            let document: serde_json::Value =
                serde_json::from_str(&schema.content).map_err(|e| Error::Internal(e.to_string()))?;
            let missing = uncovered_items(&entry.content, &document);
            if !missing.is_empty() {
                return Err(Error::FailedPrecondition(format!(
                    "schema '{}' version {} does not cover these data items (信息项) of {}: {}",
                    schema.subject,
                    schema.version,
                    entry.resource_code,
                    missing.join(", ")
                )));
            }
            let b = EntrySchemaBinding {
                resource_code: entry.resource_code,
                schema: SchemaRef {
                    subject: schema.subject,
                    version: schema.version,
                },
                bound_by: caller.actor(),
                at: crate::clock::now(),
            };
            self.store.bind_entry_schema(&b).await?;
            Ok(binding(b))
        })
        .await
    }

    async fn get_entry_schema(
        &self,
        request: Request<pb::GetEntrySchemaRequest>,
    ) -> Result<Response<pb::EntrySchemaBinding>, Status> {
        answer(async {
            let caller = self.auth.caller(&request).await?;
            let code = &request.get_ref().resource_code;
            self.visible_entry(&caller, code).await?;
            let found = self.store.entry_schema(code).await?;
            Ok(binding(
                found.ok_or_else(|| Error::NotFound(format!("a schema bound to {code}")))?,
            ))
        })
        .await
    }

    async fn draft_schema_from_entry(
        &self,
        request: Request<pb::DraftSchemaFromEntryRequest>,
    ) -> Result<Response<pb::DraftSchemaFromEntryResponse>, Status> {
        answer(async {
            let caller = self.auth.caller(&request).await?;
            let entry = self.visible_entry(&caller, &request.get_ref().resource_code).await?;
            let draft = draft_from_entry(&entry.content);
            let schema_json = serde_json::to_string_pretty(&draft).map_err(|e| Error::Internal(e.to_string()))?;
            Ok(pb::DraftSchemaFromEntryResponse { schema_json })
        })
        .await
    }
}
