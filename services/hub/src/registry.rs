//! The schema registry's rules, shared by the gRPC service and `serve --dev`: registration with
//! compatibility, reference loading, and compiled validators kept once per version.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use serde_json::Value;
use xinqiao_domain::compatibility::{self, CompatibilityMode};
use xinqiao_domain::fingerprint::fingerprint;
use xinqiao_domain::identity::Caller;
use xinqiao_domain::schema::{self as rules, MAX_SCHEMA_BYTES, RegisteredSchema, SchemaRef};
use xinqiao_domain::{Error, Result};
use xinqiao_schema::{CompiledSchema, FormatMode, SchemaError, ValidatorCache};
use xinqiao_store::{NewSchema, Registration, Store};

/// The base datasets' schemas, in the order they must be registered (references first).
pub const SHARED_SCHEMAS: &[(&str, &str)] = &[
    ("identifiers", include_str!("../../../schemas/identifiers.json")),
    ("legal-entity", include_str!("../../../schemas/legal-entity.json")),
    ("person", include_str!("../../../schemas/person.json")),
    ("e-licence", include_str!("../../../schemas/e-licence.json")),
];

/// A schema document checked for registration or a compatibility check.
pub struct Candidate {
    pub subject: String,
    pub document: Value,
    pub references: Vec<SchemaRef>,
}

#[derive(Clone)]
pub struct Registry {
    store: Arc<dyn Store>,
    validators: Arc<ValidatorCache>,
}

fn schema_error(e: SchemaError) -> Error {
    match e {
        SchemaError::NotFound { subject, version } => Error::NotFound(format!("schema '{subject}' version {version}")),
        other => Error::invalid("schema_json", other.to_string()),
    }
}

fn parse(content: &str) -> Result<Value> {
    serde_json::from_str(content).map_err(|e| Error::Internal(format!("stored schema is not JSON: {e}")))
}

impl Registry {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self {
            store,
            validators: Arc::new(ValidatorCache::new()),
        }
    }

    /// Parses and compiles a schema document, loading the registered schemas it references.
    pub async fn candidate(&self, subject: &str, schema_json: &str) -> Result<Candidate> {
        rules::validate_subject(subject).map_err(|e| Error::invalid("subject", e))?;
        if schema_json.len() > MAX_SCHEMA_BYTES {
            return Err(Error::ResourceExhausted(format!(
                "the schema is {} bytes; at most {MAX_SCHEMA_BYTES} are accepted",
                schema_json.len()
            )));
        }
        let document: Value = serde_json::from_str(schema_json)
            .map_err(|e| Error::invalid("schema_json", format!("is not JSON: {e}")))?;
        if !document.is_object() {
            return Err(Error::invalid("schema_json", "must be a JSON object"));
        }
        let references: Vec<SchemaRef> = xinqiao_schema::references(&document)
            .into_iter()
            .map(|(subject, version)| SchemaRef { subject, version })
            .collect();
        if references.iter().any(|r| r.subject == subject) {
            return Err(Error::invalid(
                "schema_json",
                "a schema cannot reference its own subject",
            ));
        }
        // A new schema may reference live versions only.
        let sources = self.load_sources(&references, false).await?;
        xinqiao_schema::compile(&document, &sources, FormatMode::Strict).map_err(schema_error)?;
        Ok(Candidate {
            subject: subject.to_string(),
            document,
            references,
        })
    }

    /// Loads every schema reachable from `roots`, for compiling without I/O. Soft-deleted versions
    /// count only for schemas registered before the deletion: a reference pins its version.
    async fn load_sources(&self, roots: &[SchemaRef], include_deleted: bool) -> Result<HashMap<(String, u32), Value>> {
        let mut sources = HashMap::new();
        let mut queue: VecDeque<SchemaRef> = roots.iter().cloned().collect();
        while let Some(r) = queue.pop_front() {
            if sources.contains_key(&(r.subject.clone(), r.version)) {
                continue;
            }
            let found = self.store.get_schema(&r.subject, r.version).await?;
            let schema = found
                .filter(|s| include_deleted || !s.deleted)
                .ok_or_else(|| Error::NotFound(format!("referenced schema '{}' version {}", r.subject, r.version)))?;
            let document = parse(&schema.content)?;
            queue.extend(schema.references.iter().cloned());
            sources.insert((r.subject, r.version), document);
        }
        Ok(sources)
    }

    /// The mode that governs a subject: its own, or the registry default.
    pub async fn mode_of(&self, subject: &str) -> Result<(CompatibilityMode, bool)> {
        let own = self.store.get_subject(subject).await?.and_then(|s| s.compatibility);
        match own {
            Some(mode) => Ok((mode, false)),
            None => Ok((self.store.default_compatibility().await?, true)),
        }
    }

    /// Why `candidate` may not follow the subject's live versions under `mode` (empty: it may).
    pub async fn incompatibilities(
        &self,
        candidate: &Candidate,
        mode: CompatibilityMode,
    ) -> Result<Vec<compatibility::Incompatibility>> {
        let live = self.store.list_schema_versions(&candidate.subject, false).await?;
        let documents: Vec<(u32, Value)> = live
            .iter()
            .map(|s| Ok((s.version, parse(&s.content)?)))
            .collect::<Result<_>>()?;
        let previous: Vec<(u32, &Value)> = documents.iter().map(|(v, d)| (*v, d)).collect();
        Ok(compatibility::check_versions(mode, &previous, &candidate.document))
    }

    /// Registers a schema as the next version of its subject: the caller must own the subject
    /// (or be the admin, or be first), the document must compile, and it must be compatible.
    /// Identical content returns the version that has it.
    pub async fn register(
        &self,
        caller: &Caller,
        subject: &str,
        schema_json: &str,
    ) -> Result<(RegisteredSchema, bool)> {
        rules::validate_subject(subject).map_err(|e| Error::invalid("subject", e))?;
        rules::change_subject(caller, self.store.get_subject(subject).await?.as_ref())?;
        let candidate = self.candidate(subject, schema_json).await?;
        let print = fingerprint(&candidate.document);
        let all = self.store.list_schema_versions(subject, true).await?;
        if let Some(same) = all.iter().find(|s| !s.deleted && s.fingerprint == print) {
            return Ok((same.clone(), false));
        }
        let (mode, _) = self.mode_of(subject).await?;
        let problems = self.incompatibilities(&candidate, mode).await?;
        if !problems.is_empty() {
            return Err(Error::Incompatible(problems));
        }
        let new = NewSchema {
            subject,
            // Kept as registered; the fingerprint covers its canonical form.
            content: schema_json,
            fingerprint: &print,
            references: &candidate.references,
            registered_by: &caller.actor(),
            at: crate::clock::now(),
            after_version: all.last().map_or(0, |s| s.version),
        };
        match self.store.register_schema(&new).await? {
            Registration::Created(s) => Ok((s, true)),
            Registration::Existing(s) => Ok((s, false)),
        }
    }

    /// The version a request names: `0` is the latest live one. Deleted versions are found only
    /// when asked for.
    pub async fn resolve(&self, subject: &str, version: u32, include_deleted: bool) -> Result<RegisteredSchema> {
        let not_found = || {
            if version == 0 {
                Error::NotFound(format!("schema subject '{subject}'"))
            } else {
                Error::NotFound(format!("schema '{subject}' version {version}"))
            }
        };
        let found = if version == 0 {
            self.store.latest_schema(subject).await?
        } else {
            self.store.get_schema(subject, version).await?
        };
        found.filter(|s| include_deleted || !s.deleted).ok_or_else(not_found)
    }

    /// The compiled validator of a version, compiled on first use and kept.
    pub async fn validator(&self, schema: &RegisteredSchema, mode: FormatMode) -> Result<Arc<CompiledSchema>> {
        if let Some(found) = self.validators.cached(&schema.subject, schema.version, mode) {
            return Ok(found);
        }
        let root = SchemaRef {
            subject: schema.subject.clone(),
            version: schema.version,
        };
        let mut sources = self.load_sources(&schema.references, true).await?;
        sources.insert((root.subject.clone(), root.version), parse(&schema.content)?);
        self.validators
            .get(&root.subject, root.version, mode, &sources)
            .map_err(schema_error)
    }

    /// Registers the shipped base-dataset schemas as the platform admin; already registered
    /// content is left as it is.
    pub async fn import_shared(&self, admin: &Caller) -> Result<Vec<(RegisteredSchema, bool)>> {
        let mut done = Vec::new();
        for (subject, json) in SHARED_SCHEMAS {
            done.push(self.register(admin, subject, json).await?);
        }
        Ok(done)
    }
}
