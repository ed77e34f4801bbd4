//! Every SchemaService RPC doing its job: registration and compatibility, references, deletion,
//! record validation, and the binding of catalogue entries to the schema of their records.

use tonic::{Code, Status};
use tonic_types::StatusExt;
use xinqiao_domain::identifiers::resident_id_check_char;
use xinqiao_hub::registry::SHARED_SCHEMAS;
use xinqiao_tests::v1 as pb;
use xinqiao_tests::v1::CompatibilityMode as Mode;
use xinqiao_tests::*;

on_each_backend!(
    shared_schemas_register_once_in_dependency_order,
    subjects_are_listed_in_pages,
    backward_compatibility_guards_new_versions,
    check_compatibility_answers_without_registering,
    subject_modes_are_set_cleared_and_transitive,
    only_the_admin_sets_the_default_mode,
    departments_own_the_subjects_they_create,
    references_resolve_through_the_registry,
    malformed_schemas_and_subject_names_are_refused,
    deleted_versions_are_hidden_and_numbers_never_reused,
    permanent_deletion_spares_referenced_and_bound_versions,
    schemas_keep_working_when_their_reference_is_soft_deleted,
    records_are_validated_against_legal_entity,
    lenient_validation_turns_check_characters_into_warnings,
    person_records_check_resident_ids_and_dates,
    validation_is_bounded,
    entries_bind_to_schemas_that_cover_their_data_items,
    a_draft_from_an_entry_registers_and_binds,
    a_binding_reads_back_as_it_was_answered,
);

/// A 统一社会信用代码 with the right check character, and the same with a wrong one.
const USCC_OK: &str = "11100000000013127D";
const USCC_WRONG_CHECK: &str = "11100000000013127E";

/// A subject of SAMR's own in several tests: it covers the items of [`content`] by title.
const PERMIT_V1: &str = r#"{
  "title": "许可",
  "type": "object",
  "properties": {
    "code": { "title": "统一社会信用代码", "type": "string", "format": "uscc" },
    "name": { "title": "名称", "type": "string", "maxLength": 200 }
  },
  "required": ["code"]
}"#;

fn shared(subject: &str) -> &'static str {
    SHARED_SCHEMAS
        .iter()
        .find(|(s, _)| *s == subject)
        .map(|(_, text)| *text)
        .unwrap_or_else(|| panic!("no shared schema {subject}"))
}

/// `doc` with `edit` applied.
fn edited(doc: &Json, edit: impl FnOnce(&mut Json)) -> Json {
    let mut copy = doc.clone();
    edit(&mut copy);
    assert_ne!(&copy, doc, "the edit changed nothing");
    copy
}

fn array(value: &mut Json) -> &mut Vec<Json> {
    value.as_array_mut().expect("a JSON array")
}

/// The same document with every object's keys in reverse order and odd whitespace.
fn reordered(value: &Json) -> String {
    match value {
        Json::Object(map) => {
            let fields: Vec<String> = map
                .iter()
                .rev()
                .map(|(key, item)| format!("\n\t {} :  {}", Json::String(key.clone()), reordered(item)))
                .collect();
            format!("{{ {}\n}}", fields.join(" ,"))
        }
        Json::Array(items) => format!("[ {} ]", items.iter().map(reordered).collect::<Vec<_>>().join(" , ")),
        other => other.to_string(),
    }
}

// ---------------------------------------------------------------------------------------------
// Requests

fn register(subject: &str, schema: impl ToString) -> pb::RegisterSchemaRequest {
    pb::RegisterSchemaRequest {
        subject: subject.into(),
        schema_json: schema.to_string(),
    }
}

fn check(subject: &str, schema: impl ToString, mode: Mode) -> pb::CheckCompatibilityRequest {
    pb::CheckCompatibilityRequest {
        subject: subject.into(),
        schema_json: schema.to_string(),
        mode: mode as i32,
    }
}

fn get_schema(subject: &str, version: u32, include_deleted: bool) -> pb::GetSchemaRequest {
    pb::GetSchemaRequest {
        subject: subject.into(),
        version,
        include_deleted,
    }
}

fn mode_of(subject: &str) -> pb::GetCompatibilityRequest {
    pb::GetCompatibilityRequest {
        subject: subject.into(),
    }
}

fn set_mode(subject: &str, mode: Mode) -> pb::SetCompatibilityRequest {
    pb::SetCompatibilityRequest {
        subject: subject.into(),
        mode: mode as i32,
    }
}

fn setting(subject: &str, mode: Mode, inherited: bool) -> pb::CompatibilitySetting {
    pb::CompatibilitySetting {
        subject: subject.into(),
        mode: mode as i32,
        inherited,
    }
}

fn delete(subject: &str, version: u32, permanent: bool) -> pb::DeleteSchemaVersionRequest {
    pb::DeleteSchemaVersionRequest {
        subject: subject.into(),
        version,
        permanent,
    }
}

fn validate(subject: &str, version: u32, records: &[String], lenient: bool) -> pb::ValidateRecordsRequest {
    pb::ValidateRecordsRequest {
        subject: subject.into(),
        version,
        records: records.to_vec(),
        lenient,
    }
}

fn bind(code: &str, subject: &str, version: u32) -> pb::BindEntrySchemaRequest {
    pb::BindEntrySchemaRequest {
        resource_code: code.into(),
        subject: subject.into(),
        version,
    }
}

fn entry_schema(code: &str) -> pb::GetEntrySchemaRequest {
    pb::GetEntrySchemaRequest {
        resource_code: code.into(),
    }
}

/// A complete 法人 record with this 统一社会信用代码.
fn entity(uscc: &str) -> String {
    format!(
        r#"{{"uscc": "{uscc}", "name": "某某科技有限公司", "legal_representative": "张三",
            "registered_capital": 100, "established_on": "2020-01-01", "status": "存续"}}"#
    )
}

/// A 人口 record.
fn person(resident_id: &str, birth_date: &str) -> String {
    format!(r#"{{"resident_id": "{resident_id}", "name": "李四", "gender": "男", "birth_date": "{birth_date}"}}"#)
}

// ---------------------------------------------------------------------------------------------
// Calls

/// Registers the shipped schemas in order, each as a new version 1.
async fn import_shared(admin: &mut Schemas) -> Vec<pb::SchemaVersion> {
    let mut registered = Vec::new();
    for (subject, text) in SHARED_SCHEMAS {
        let answer = ok(admin.register_schema(register(subject, text)).await);
        assert!(answer.created, "{subject} was registered before");
        registered.push(answer.schema.expect("the registered version"));
    }
    registered
}

/// Registers a new version, which must be created; its number.
async fn registered(client: &mut Schemas, subject: &str, schema: impl ToString) -> u32 {
    let answer = ok(client.register_schema(register(subject, schema)).await);
    assert!(answer.created, "{subject}: the content was registered before");
    answer.schema.expect("the registered version").version
}

/// The versions of a subject and whether each is soft-deleted.
async fn listed_versions(client: &mut Schemas, subject: &str, include_deleted: bool) -> Vec<(u32, bool)> {
    let request = pb::ListSchemaVersionsRequest {
        subject: subject.into(),
        include_deleted,
    };
    ok(client.list_schema_versions(request).await)
        .versions
        .into_iter()
        .map(|v| (v.version, v.deleted))
        .collect()
}

/// Every subject, following page tokens until they run out.
async fn all_subjects(client: &mut Schemas, include_deleted: bool) -> Vec<pb::SubjectSummary> {
    let mut request = pb::ListSubjectsRequest {
        page_size: 0,
        page_token: String::new(),
        include_deleted,
    };
    let mut found = Vec::new();
    loop {
        let page = ok(client.list_subjects(request.clone()).await);
        found.extend(page.subjects);
        if page.next_page_token.is_empty() {
            return found;
        }
        request.page_token = page.next_page_token;
    }
}

async fn subject_names(client: &mut Schemas, include_deleted: bool) -> Vec<String> {
    all_subjects(client, include_deleted)
        .await
        .into_iter()
        .map(|s| s.subject)
        .collect()
}

async fn summary(client: &mut Schemas, subject: &str, include_deleted: bool) -> Option<pb::SubjectSummary> {
    all_subjects(client, include_deleted)
        .await
        .into_iter()
        .find(|s| s.subject == subject)
}

/// The (pointer, reason) of each google.rpc.PreconditionFailure violation of a refused
/// registration, each of type COMPATIBILITY.
#[track_caller]
fn incompatibilities(status: &Status) -> Vec<(String, String)> {
    let details = status.get_details_precondition_failure().unwrap_or_else(|| {
        panic!(
            "no PreconditionFailure details in {:?}: {}",
            status.code(),
            status.message()
        )
    });
    assert!(!details.violations.is_empty(), "{}", status.message());
    details
        .violations
        .into_iter()
        .map(|v| {
            assert_eq!(v.r#type, "COMPATIBILITY", "{v:?}");
            assert!(!v.description.is_empty(), "{v:?}");
            (v.subject, v.description)
        })
        .collect()
}

/// (index, error keywords, warning keywords) of each report.
fn report_keywords(answer: &pb::ValidateRecordsResponse) -> Vec<(u32, Vec<String>, Vec<String>)> {
    answer
        .reports
        .iter()
        .map(|r| {
            let keywords = |vs: &[pb::RecordViolation]| vs.iter().map(|v| v.keyword.clone()).collect::<Vec<_>>();
            (r.index, keywords(&r.errors), keywords(&r.warnings))
        })
        .collect()
}

/// The same binding, its time compared to the microsecond (what the stores keep); see
/// [`a_binding_reads_back_as_it_was_answered`] for the exact comparison.
#[track_caller]
fn assert_same_binding(read: pb::EntrySchemaBinding, answered: &pb::EntrySchemaBinding) {
    let micros = |b: &pb::EntrySchemaBinding| b.bound_at.as_ref().map(|t| (t.seconds, t.nanos / 1_000));
    assert_eq!(micros(&read), micros(answered), "{read:?} / {answered:?}");
    let without_time = |b: &pb::EntrySchemaBinding| pb::EntrySchemaBinding {
        bound_at: None,
        ..b.clone()
    };
    assert_eq!(without_time(&read), without_time(answered));
}

/// Like [`report_keywords`], each record's keywords sorted.
fn sorted_keywords(answer: &pb::ValidateRecordsResponse) -> Vec<(u32, Vec<String>, Vec<String>)> {
    report_keywords(answer)
        .into_iter()
        .map(|(i, mut errors, mut warnings)| {
            errors.sort();
            warnings.sort();
            (i, errors, warnings)
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Registration and reading

async fn shared_schemas_register_once_in_dependency_order(backend: Backend) {
    let hub = TestHub::start_on(backend).await;
    let mut admin = hub.schemas_admin().await;
    let mut samr = hub.schemas(SAMR).await;

    let first = import_shared(&mut admin).await;
    for (s, (subject, text)) in first.iter().zip(SHARED_SCHEMAS) {
        assert_eq!((s.subject.as_str(), s.version, s.deleted), (*subject, 1, false));
        assert_eq!(s.registered_by, admin_actor());
        assert_eq!(s.fingerprint.len(), 64, "{}", s.fingerprint);
        assert!(
            s.fingerprint
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        );
        assert!(s.created_at.is_some());
        assert_eq!(json(&s.schema_json), json(text), "{subject}: the content as registered");
        let references = if *subject == "identifiers" {
            vec![]
        } else {
            vec![pb::SchemaReference {
                subject: "identifiers".into(),
                version: 1,
            }]
        };
        assert_eq!(s.references, references, "{subject}");
    }
    let prints: std::collections::HashSet<&str> = first.iter().map(|s| s.fingerprint.as_str()).collect();
    assert_eq!(prints.len(), first.len(), "different content, different fingerprints");

    // The same content again, with other key order or whitespace: the version it already has.
    for (s, (subject, text)) in first.iter().zip(SHARED_SCHEMAS) {
        let shuffled = reordered(&json(text));
        let squeezed: String = text.lines().map(str::trim).collect();
        for variant in [text.to_string(), shuffled, squeezed] {
            let again = ok(admin.register_schema(register(subject, &variant)).await);
            assert!(!again.created, "{subject}: {variant}");
            let again = again.schema.expect("the existing version");
            assert_eq!((again.version, &again.fingerprint), (1, &s.fingerprint), "{subject}");
            assert_eq!(again.created_at, s.created_at, "{subject}");
        }
        assert_eq!(listed_versions(&mut admin, subject, true).await, [(1, false)]);
    }

    // Read back, latest and by number, by any department.
    for s in &first {
        let latest = ok(samr.get_schema(get_schema(&s.subject, 0, false)).await);
        let pinned = ok(samr.get_schema(get_schema(&s.subject, 1, false)).await);
        assert_eq!(latest, *s);
        assert_eq!(pinned, *s);
        let request = pb::ListSchemaVersionsRequest {
            subject: s.subject.clone(),
            include_deleted: false,
        };
        assert_eq!(
            ok(samr.list_schema_versions(request).await).versions,
            std::slice::from_ref(s)
        );
    }
    refused(
        samr.get_schema(get_schema("legal-entity", 2, false)).await,
        Code::NotFound,
    );
    refused(samr.get_schema(get_schema("nobody", 0, false)).await, Code::NotFound);
    let request = pb::ListSchemaVersionsRequest {
        subject: "nobody".into(),
        include_deleted: true,
    };
    refused(samr.list_schema_versions(request).await, Code::NotFound);
    hub.finish().await;
}

async fn subjects_are_listed_in_pages(backend: Backend) {
    let hub = TestHub::start_on(backend).await;
    let mut admin = hub.schemas_admin().await;
    let mut samr = hub.schemas(SAMR).await;
    import_shared(&mut admin).await;
    assert_eq!(registered(&mut samr, "samr-permit", PERMIT_V1).await, 1);

    let mut request = pb::ListSubjectsRequest {
        page_size: 2,
        page_token: String::new(),
        include_deleted: false,
    };
    let mut pages = Vec::new();
    loop {
        let page = ok(hub.schemas(POLICE).await.list_subjects(request.clone()).await);
        pages.push(page.subjects);
        if page.next_page_token.is_empty() {
            break;
        }
        assert!(pages.len() < 10, "the listing does not end");
        request.page_token = page.next_page_token;
    }
    let names: Vec<Vec<&str>> = pages
        .iter()
        .map(|p| p.iter().map(|s| s.subject.as_str()).collect())
        .collect();
    assert_eq!(
        names,
        [
            vec!["e-licence", "identifiers"],
            vec!["legal-entity", "person"],
            vec!["samr-permit"]
        ]
    );
    for s in pages.concat() {
        let owner = if s.subject == "samr-permit" {
            SAMR.to_string()
        } else {
            admin_actor()
        };
        assert_eq!(
            s,
            pb::SubjectSummary {
                subject: s.subject.clone(),
                owner,
                latest_version: 1,
                version_count: 1,
                compatibility: Mode::Backward as i32,
            }
        );
    }
    // One page when it fits; a token that is not this listing's is refused.
    let whole = ok(samr.list_subjects(pb::ListSubjectsRequest::default()).await);
    assert_eq!(whole.subjects.len(), 5);
    assert!(whole.next_page_token.is_empty());
    let forged = pb::ListSubjectsRequest {
        page_size: 2,
        page_token: "bm90IGEgdG9rZW4".into(),
        include_deleted: false,
    };
    invalid(samr.list_subjects(forged).await, &["page_token"]);
    hub.finish().await;
}

// ---------------------------------------------------------------------------------------------
// Compatibility

async fn backward_compatibility_guards_new_versions(backend: Backend) {
    let hub = TestHub::start_on(backend).await;
    let mut admin = hub.schemas_admin().await;
    import_shared(&mut admin).await;

    assert_eq!(
        ok(admin.get_compatibility(mode_of("")).await),
        setting("", Mode::Backward, false)
    );
    assert_eq!(
        ok(admin.get_compatibility(mode_of("legal-entity")).await),
        setting("legal-entity", Mode::Backward, true)
    );

    // A new optional property: version 2.
    let v1 = json(shared("legal-entity"));
    let v2 = edited(&v1, |d| {
        d["properties"]["phone"] =
            json(r#"{"$ref": "xinqiao://schemas/identifiers/1#/$defs/mobile", "title": "联系电话"}"#)
    });
    let answer = ok(admin.register_schema(register("legal-entity", &v2)).await);
    assert!(answer.created);
    let schema = answer.schema.expect("version 2");
    assert_eq!((schema.version, json(&schema.schema_json)), (2, v2.clone()));
    assert_eq!(
        listed_versions(&mut admin, "legal-entity", true).await,
        [(1, false), (2, false)]
    );

    // Narrowing changes are refused, each located by a JSON pointer into the new schema.
    let required = edited(&v2, |d| array(&mut d["required"]).push("address".into()));
    let shorter = edited(&v2, |d| d["properties"]["name"]["maxLength"] = 100.into());
    let fewer = edited(&v2, |d| {
        array(&mut d["properties"]["status"]["enum"]).retain(|v| *v != "清算")
    });
    for (doc, pointer, mentioned) in [
        (&required, "/required", "'address'"),
        (&shorter, "/properties/name/maxLength", "maxLength"),
        (&fewer, "/properties/status/enum", "清算"),
    ] {
        let status = refused(
            admin.register_schema(register("legal-entity", doc)).await,
            Code::FailedPrecondition,
        );
        let found = incompatibilities(&status);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].0, pointer, "{found:?}");
        assert!(found[0].1.contains(mentioned), "{found:?}");
        assert!(
            found[0].1.contains("version 2"),
            "the reason names the version: {found:?}"
        );
        assert!(status.message().contains(pointer), "{}", status.message());
        // Nothing was stored.
        assert_eq!(
            listed_versions(&mut admin, "legal-entity", true).await,
            [(1, false), (2, false)]
        );
        assert_eq!(
            ok(admin.get_schema(get_schema("legal-entity", 0, false)).await).version,
            2
        );
    }
    hub.finish().await;
}

async fn check_compatibility_answers_without_registering(backend: Backend) {
    let hub = TestHub::start_on(backend).await;
    let mut admin = hub.schemas_admin().await;
    let mut samr = hub.schemas(SAMR).await;
    import_shared(&mut admin).await;
    let v1 = json(shared("legal-entity"));

    let wider = edited(&v1, |d| {
        d["properties"]["website"] = json(r#"{"title": "网址", "type": "string", "maxLength": 200}"#)
    });
    let required = edited(&v1, |d| array(&mut d["required"]).push("address".into()));
    let shorter = edited(&v1, |d| d["properties"]["name"]["maxLength"] = 100.into());

    // Any department may ask, about a subject it does not own.
    let answer = ok(samr
        .check_compatibility(check("legal-entity", &wider, Mode::Unspecified))
        .await);
    assert_eq!(
        answer,
        pb::CheckCompatibilityResponse {
            compatible: true,
            mode: Mode::Backward as i32,
            incompatibilities: vec![],
        }
    );
    let answer = ok(samr
        .check_compatibility(check("legal-entity", &shorter, Mode::Unspecified))
        .await);
    assert!(!answer.compatible);
    assert_eq!(answer.mode, Mode::Backward as i32);
    let pointers: Vec<&str> = answer.incompatibilities.iter().map(|i| i.pointer.as_str()).collect();
    assert_eq!(pointers, ["/properties/name/maxLength"]);
    assert!(answer.incompatibilities[0].reason.contains("version 1"));

    // An explicit mode overrides the subject's.
    let answer = ok(samr
        .check_compatibility(check("legal-entity", &shorter, Mode::None))
        .await);
    assert_eq!((answer.compatible, answer.mode), (true, Mode::None as i32));
    assert!(answer.incompatibilities.is_empty());
    // A new required property: old readers still read new records, new readers not old ones.
    let answer = ok(samr
        .check_compatibility(check("legal-entity", &required, Mode::Forward))
        .await);
    assert_eq!((answer.compatible, answer.mode), (true, Mode::Forward as i32));
    let answer = ok(samr
        .check_compatibility(check("legal-entity", &required, Mode::Full))
        .await);
    assert_eq!((answer.compatible, answer.mode), (false, Mode::Full as i32));
    assert_eq!(answer.incompatibilities[0].pointer, "/required");
    // A subject with no versions yet accepts anything.
    let answer = ok(samr
        .check_compatibility(check("samr-new", PERMIT_V1, Mode::Unspecified))
        .await);
    assert!(answer.compatible);

    // Nothing was registered by any of this.
    assert_eq!(listed_versions(&mut admin, "legal-entity", true).await, [(1, false)]);
    assert!(!subject_names(&mut admin, true).await.contains(&"samr-new".to_string()));
    hub.finish().await;
}

async fn subject_modes_are_set_cleared_and_transitive(backend: Backend) {
    let hub = TestHub::start_on(backend).await;
    let mut admin = hub.schemas_admin().await;
    import_shared(&mut admin).await;
    let legal = json(shared("legal-entity"));
    let shorter = edited(&legal, |d| d["properties"]["name"]["maxLength"] = 100.into());

    refused(
        admin.register_schema(register("legal-entity", &shorter)).await,
        Code::FailedPrecondition,
    );
    let set = ok(admin.set_compatibility(set_mode("legal-entity", Mode::None)).await);
    assert_eq!(set, setting("legal-entity", Mode::None, false));
    assert_eq!(ok(admin.get_compatibility(mode_of("legal-entity")).await), set);
    assert_eq!(
        summary(&mut admin, "legal-entity", false)
            .await
            .map(|s| s.compatibility),
        Some(Mode::None as i32)
    );
    // The change refused before now registers.
    assert_eq!(registered(&mut admin, "legal-entity", &shorter).await, 2);

    // FULL_TRANSITIVE on another subject checks every earlier version, not only the latest.
    let person = json(shared("person"));
    let person_v2 = edited(&person, |d| d["properties"]["name"]["maxLength"] = 20.into());
    ok(admin.set_compatibility(set_mode("person", Mode::None)).await);
    assert_eq!(registered(&mut admin, "person", &person_v2).await, 2);
    let set = ok(admin.set_compatibility(set_mode("person", Mode::FullTransitive)).await);
    assert_eq!(set, setting("person", Mode::FullTransitive, false));
    assert_eq!(ok(admin.get_compatibility(mode_of("person")).await), set);
    let person_v3 = edited(&person_v2, |d| {
        d["properties"]["mobile"] =
            json(r#"{"$ref": "xinqiao://schemas/identifiers/1#/$defs/mobile", "title": "手机号码"}"#)
    });
    let answer = ok(admin
        .check_compatibility(check("person", &person_v3, Mode::Unspecified))
        .await);
    assert_eq!((answer.compatible, answer.mode), (false, Mode::FullTransitive as i32));
    assert_eq!(answer.incompatibilities.len(), 1, "{:?}", answer.incompatibilities);
    assert_eq!(answer.incompatibilities[0].pointer, "/properties/name/maxLength");
    assert!(
        answer.incompatibilities[0].reason.contains("version 1"),
        "{:?}",
        answer.incompatibilities
    );
    let answer = ok(admin.check_compatibility(check("person", &person_v3, Mode::Full)).await);
    assert!(answer.compatible, "{:?}", answer.incompatibilities);
    let status = refused(
        admin.register_schema(register("person", &person_v3)).await,
        Code::FailedPrecondition,
    );
    let found = incompatibilities(&status);
    assert_eq!(found[0].0, "/properties/name/maxLength");
    assert_eq!(
        listed_versions(&mut admin, "person", true).await,
        [(1, false), (2, false)]
    );

    // Clearing the mode: the subject follows the default again.
    let cleared = ok(admin
        .set_compatibility(set_mode("legal-entity", Mode::Unspecified))
        .await);
    assert_eq!(cleared, setting("legal-entity", Mode::Backward, true));
    assert_eq!(ok(admin.get_compatibility(mode_of("legal-entity")).await), cleared);
    let shortest = edited(&shorter, |d| d["properties"]["name"]["maxLength"] = 50.into());
    let status = refused(
        admin.register_schema(register("legal-entity", &shortest)).await,
        Code::FailedPrecondition,
    );
    assert_eq!(incompatibilities(&status)[0].0, "/properties/name/maxLength");
    // Subjects that do not exist have no mode to read or set.
    refused(admin.get_compatibility(mode_of("nobody")).await, Code::NotFound);
    refused(
        admin.set_compatibility(set_mode("nobody", Mode::None)).await,
        Code::NotFound,
    );
    let unknown_mode = pb::SetCompatibilityRequest {
        subject: "person".into(),
        mode: 99,
    };
    invalid(admin.set_compatibility(unknown_mode).await, &["mode"]);
    assert_eq!(
        ok(admin.get_compatibility(mode_of("person")).await),
        setting("person", Mode::FullTransitive, false)
    );
    hub.finish().await;
}

async fn only_the_admin_sets_the_default_mode(backend: Backend) {
    let hub = TestHub::start_on(backend).await;
    let mut admin = hub.schemas_admin().await;
    let mut samr = hub.schemas(SAMR).await;
    import_shared(&mut admin).await;

    refused(
        samr.set_compatibility(set_mode("", Mode::None)).await,
        Code::PermissionDenied,
    );
    assert_eq!(
        ok(samr.get_compatibility(mode_of("")).await),
        setting("", Mode::Backward, false)
    );
    invalid(
        admin.set_compatibility(set_mode("", Mode::Unspecified)).await,
        &["mode"],
    );
    assert_eq!(
        ok(samr.get_compatibility(mode_of("")).await),
        setting("", Mode::Backward, false)
    );

    let set = ok(admin.set_compatibility(set_mode("", Mode::Full)).await);
    assert_eq!(set, setting("", Mode::Full, false));
    assert_eq!(ok(samr.get_compatibility(mode_of("")).await), set);
    // Subjects without a mode of their own follow it.
    assert_eq!(
        ok(samr.get_compatibility(mode_of("legal-entity")).await),
        setting("legal-entity", Mode::Full, true)
    );
    for s in all_subjects(&mut samr, false).await {
        assert_eq!(s.compatibility, Mode::Full as i32, "{}", s.subject);
    }
    let required = edited(&json(shared("legal-entity")), |d| {
        array(&mut d["required"]).push("address".into())
    });
    let answer = ok(samr
        .check_compatibility(check("legal-entity", &required, Mode::Unspecified))
        .await);
    assert_eq!((answer.compatible, answer.mode), (false, Mode::Full as i32));
    hub.finish().await;
}

async fn departments_own_the_subjects_they_create(backend: Backend) {
    let hub = TestHub::start_on(backend).await;
    let mut admin = hub.schemas_admin().await;
    let mut samr = hub.schemas(SAMR).await;
    let mut police = hub.schemas(POLICE).await;
    import_shared(&mut admin).await;

    // The admin's subjects are the admin's.
    let wider = edited(&json(shared("legal-entity")), |d| {
        d["properties"]["website"] = json(r#"{"type": "string"}"#)
    });
    refused(
        samr.register_schema(register("legal-entity", &wider)).await,
        Code::PermissionDenied,
    );
    refused(
        samr.set_compatibility(set_mode("legal-entity", Mode::None)).await,
        Code::PermissionDenied,
    );
    refused(
        samr.delete_schema_version(delete("legal-entity", 1, false)).await,
        Code::PermissionDenied,
    );
    assert_eq!(listed_versions(&mut samr, "legal-entity", true).await, [(1, false)]);
    assert_eq!(
        ok(samr.get_compatibility(mode_of("legal-entity")).await),
        setting("legal-entity", Mode::Backward, true)
    );

    // A department's new subject is its own.
    let answer = ok(samr.register_schema(register("samr-permit", PERMIT_V1)).await);
    assert!(answer.created);
    let v1 = answer.schema.expect("version 1");
    assert_eq!((v1.version, v1.registered_by.as_str()), (1, SAMR));
    assert_eq!(
        summary(&mut police, "samr-permit", false).await.map(|s| s.owner),
        Some(SAMR.to_string())
    );
    let permit = json(PERMIT_V1);
    let permit_v2 = edited(&permit, |d| {
        d["properties"]["issued_on"] = json(r#"{"type": "string", "format": "date"}"#)
    });
    assert_eq!(registered(&mut samr, "samr-permit", &permit_v2).await, 2);
    assert_eq!(
        ok(samr.set_compatibility(set_mode("samr-permit", Mode::None)).await),
        setting("samr-permit", Mode::None, false)
    );

    // Another department reads it but does not change it.
    let permit_v3 = edited(&permit_v2, |d| d["properties"]["note"] = json(r#"{"type": "string"}"#));
    refused(
        police.register_schema(register("samr-permit", &permit_v3)).await,
        Code::PermissionDenied,
    );
    refused(
        police.set_compatibility(set_mode("samr-permit", Mode::Full)).await,
        Code::PermissionDenied,
    );
    refused(
        police.delete_schema_version(delete("samr-permit", 1, false)).await,
        Code::PermissionDenied,
    );
    assert_eq!(ok(police.get_schema(get_schema("samr-permit", 1, false)).await), v1);
    assert_eq!(
        listed_versions(&mut police, "samr-permit", true).await,
        [(1, false), (2, false)]
    );
    assert_eq!(
        ok(police.get_compatibility(mode_of("samr-permit")).await),
        setting("samr-permit", Mode::None, false)
    );
    // The admin changes any subject.
    assert_eq!(
        ok(admin.set_compatibility(set_mode("samr-permit", Mode::Full)).await),
        setting("samr-permit", Mode::Full, false)
    );
    assert_eq!(
        summary(&mut admin, "samr-permit", false).await.map(|s| s.owner),
        Some(SAMR.to_string())
    );
    hub.finish().await;
}

// ---------------------------------------------------------------------------------------------
// References and malformed schemas

async fn references_resolve_through_the_registry(backend: Backend) {
    let hub = TestHub::start_on(backend).await;
    let mut admin = hub.schemas_admin().await;
    let mut police = hub.schemas(POLICE).await;
    import_shared(&mut admin).await;

    let licence = r#"{
        "type": "object",
        "properties": {
            "holder": { "$ref": "xinqiao://schemas/identifiers/1#/$defs/uscc", "title": "持证单位" },
            "licence_no": { "type": "string" }
        },
        "required": ["holder"]
    }"#;
    let answer = ok(police.register_schema(register("police-licence", licence)).await);
    assert!(answer.created);
    let schema = answer.schema.expect("version 1");
    assert_eq!((schema.version, schema.registered_by.as_str()), (1, POLICE));
    assert_eq!(
        schema.references,
        [pb::SchemaReference {
            subject: "identifiers".into(),
            version: 1,
        }]
    );

    // The referenced format is enforced, check character and shape.
    let records = [USCC_OK, USCC_WRONG_CHECK, "1110000000001312"].map(|code| format!(r#"{{"holder": "{code}"}}"#));
    let answer = ok(police
        .validate_records(validate("police-licence", 0, &records, false))
        .await);
    assert_eq!((answer.checked, answer.invalid, answer.schema_version), (3, 2, 1));
    let reports: Vec<(u32, &str, &str)> = answer
        .reports
        .iter()
        .flat_map(|r| {
            r.errors
                .iter()
                .map(move |e| (r.index, e.instance_pointer.as_str(), e.keyword.as_str()))
        })
        .collect();
    assert_eq!(reports, [(1, "/holder", "format"), (2, "/holder", "format")]);
    assert!(
        answer.reports[0].errors[0].message.contains("expected 'D'"),
        "{:?}",
        answer.reports[0]
    );

    // References the registry cannot resolve.
    let referring = |target: &str| format!(r#"{{"type": "object", "properties": {{"code": {{"$ref": "{target}"}}}}}}"#);
    for missing in [
        "xinqiao://schemas/nothing/1#/$defs/uscc",
        "xinqiao://schemas/identifiers/7#/$defs/uscc",
    ] {
        let status = refused(
            police
                .register_schema(register("police-other", referring(missing)))
                .await,
            Code::NotFound,
        );
        assert!(status.message().contains("version"), "{}", status.message());
        refused(
            police
                .check_compatibility(check("police-other", referring(missing), Mode::Unspecified))
                .await,
            Code::NotFound,
        );
    }
    for elsewhere in ["https://example.com/x.json", "other.json", "file:///etc/passwd"] {
        let status = invalid(
            police
                .register_schema(register("police-other", referring(elsewhere)))
                .await,
            &["schema_json"],
        );
        assert!(status.message().contains("xinqiao://schemas/"), "{}", status.message());
    }
    // A schema cannot refer to its own subject, even registered by its owner.
    invalid(
        admin
            .register_schema(register(
                "identifiers",
                referring("xinqiao://schemas/identifiers/1#/$defs/uscc"),
            ))
            .await,
        &["schema_json"],
    );
    let mut names = SHARED_SCHEMAS.iter().map(|(s, _)| s.to_string()).collect::<Vec<_>>();
    names.push("police-licence".into());
    names.sort();
    assert_eq!(subject_names(&mut admin, true).await, names);
    hub.finish().await;
}

async fn malformed_schemas_and_subject_names_are_refused(backend: Backend) {
    let hub = TestHub::start_on(backend).await;
    let mut samr = hub.schemas(SAMR).await;

    for (schema, mentioned) in [
        (r#"{"type": 5}"#.to_string(), "type"),
        ("{not json".to_string(), "JSON"),
        ("[]".to_string(), "object"),
        (r#"{"type": "string", "format": "usc"}"#.to_string(), "'usc'"),
        (
            r#"{"$schema": "http://json-schema.org/draft-04/schema#"}"#.to_string(),
            "draft",
        ),
    ] {
        let status = invalid(
            samr.register_schema(register("samr-bad", &schema)).await,
            &["schema_json"],
        );
        assert!(status.message().contains(mentioned), "{schema}: {}", status.message());
        invalid(
            samr.check_compatibility(check("samr-bad", &schema, Mode::Unspecified))
                .await,
            &["schema_json"],
        );
    }
    // The unknown format is named with the ones that exist.
    let status = refused(
        samr.register_schema(register("samr-bad", r#"{"format": "usc"}"#)).await,
        Code::InvalidArgument,
    );
    assert!(status.message().contains("uscc"), "{}", status.message());

    let long = "x".repeat(101);
    for name in ["Legal", "a/b", "", "-x", "法人", long.as_str()] {
        invalid(samr.register_schema(register(name, PERMIT_V1)).await, &["subject"]);
        invalid(
            samr.check_compatibility(check(name, PERMIT_V1, Mode::Unspecified))
                .await,
            &["subject"],
        );
        let list = pb::ListSchemaVersionsRequest {
            subject: name.into(),
            include_deleted: true,
        };
        invalid(samr.list_schema_versions(list).await, &["subject"]);
    }

    // More than 256 KiB: refused before it is parsed.
    let large = format!(r#"{{"type": "string", "description": "{}"}}"#, "长".repeat(90 * 1024));
    assert!(large.len() > 256 * 1024 && large.len() < 1024 * 1024);
    let status = refused(
        samr.register_schema(register("samr-large", &large)).await,
        Code::ResourceExhausted,
    );
    assert!(
        status.message().contains(&(256 * 1024).to_string()),
        "{}",
        status.message()
    );
    refused(
        samr.check_compatibility(check("samr-large", &large, Mode::Unspecified))
            .await,
        Code::ResourceExhausted,
    );

    assert!(subject_names(&mut samr, true).await.is_empty());
    hub.finish().await;
}

// ---------------------------------------------------------------------------------------------
// Deletion

async fn deleted_versions_are_hidden_and_numbers_never_reused(backend: Backend) {
    let hub = TestHub::start_on(backend).await;
    let mut samr = hub.schemas(SAMR).await;
    let permit_v2 = edited(&json(PERMIT_V1), |d| {
        d["properties"]["issued_on"] = json(r#"{"type": "string", "format": "date"}"#)
    });
    assert_eq!(registered(&mut samr, "samr-permit", PERMIT_V1).await, 1);
    assert_eq!(registered(&mut samr, "samr-permit", &permit_v2).await, 2);
    let v2 = ok(samr.get_schema(get_schema("samr-permit", 2, false)).await);

    // For good only after a soft delete.
    let status = refused(
        samr.delete_schema_version(delete("samr-permit", 2, true)).await,
        Code::FailedPrecondition,
    );
    assert!(status.message().contains("not deleted"), "{}", status.message());
    assert_eq!(
        listed_versions(&mut samr, "samr-permit", true).await,
        [(1, false), (2, false)]
    );

    ok(samr.delete_schema_version(delete("samr-permit", 2, false)).await);
    assert_eq!(
        ok(samr.get_schema(get_schema("samr-permit", 0, false)).await).version,
        1
    );
    refused(
        samr.get_schema(get_schema("samr-permit", 2, false)).await,
        Code::NotFound,
    );
    let kept = ok(samr.get_schema(get_schema("samr-permit", 2, true)).await);
    assert!(kept.deleted);
    assert_eq!(
        (kept.schema_json.as_str(), &kept.fingerprint, &kept.created_at),
        (v2.schema_json.as_str(), &v2.fingerprint, &v2.created_at)
    );
    assert_eq!(listed_versions(&mut samr, "samr-permit", false).await, [(1, false)]);
    assert_eq!(
        listed_versions(&mut samr, "samr-permit", true).await,
        [(1, false), (2, true)]
    );
    let listed = summary(&mut samr, "samr-permit", false).await.expect("listed");
    assert_eq!((listed.latest_version, listed.version_count), (1, 1));
    let listed = summary(&mut samr, "samr-permit", true).await.expect("listed");
    assert_eq!((listed.latest_version, listed.version_count), (1, 2));
    let record = [format!(r#"{{"code": "{USCC_OK}"}}"#)];
    assert_eq!(
        ok(samr.validate_records(validate("samr-permit", 0, &record, false)).await).schema_version,
        1
    );

    // Every version soft-deleted: the subject leaves the listing, and has no latest version.
    ok(samr.delete_schema_version(delete("samr-permit", 1, false)).await);
    refused(
        samr.get_schema(get_schema("samr-permit", 0, false)).await,
        Code::NotFound,
    );
    assert!(summary(&mut samr, "samr-permit", false).await.is_none());
    let listed = summary(&mut samr, "samr-permit", true)
        .await
        .expect("listed with deleted ones");
    assert_eq!((listed.latest_version, listed.version_count), (0, 2));
    refused(
        samr.validate_records(validate("samr-permit", 0, &record, false)).await,
        Code::NotFound,
    );

    // Gone for good, and its number is not handed out again.
    ok(samr.delete_schema_version(delete("samr-permit", 2, true)).await);
    refused(
        samr.get_schema(get_schema("samr-permit", 2, true)).await,
        Code::NotFound,
    );
    assert_eq!(listed_versions(&mut samr, "samr-permit", true).await, [(1, true)]);
    assert_eq!(registered(&mut samr, "samr-permit", &permit_v2).await, 3);
    ok(samr.delete_schema_version(delete("samr-permit", 1, true)).await);
    assert_eq!(registered(&mut samr, "samr-permit", PERMIT_V1).await, 4);
    assert_eq!(
        listed_versions(&mut samr, "samr-permit", true).await,
        [(3, false), (4, false)]
    );

    refused(
        samr.delete_schema_version(delete("samr-permit", 9, false)).await,
        Code::NotFound,
    );
    refused(
        samr.delete_schema_version(delete("samr-permit", 2, true)).await,
        Code::NotFound,
    );
    refused(
        samr.delete_schema_version(delete("nobody", 1, false)).await,
        Code::NotFound,
    );
    hub.finish().await;
}

async fn permanent_deletion_spares_referenced_and_bound_versions(backend: Backend) {
    let hub = TestHub::start_on(backend).await;
    let mut admin = hub.schemas_admin().await;
    let mut samr = hub.schemas(SAMR).await;
    import_shared(&mut admin).await;

    // identifiers v1 is referenced by the other shared schemas.
    ok(admin.delete_schema_version(delete("identifiers", 1, false)).await);
    let status = refused(
        admin.delete_schema_version(delete("identifiers", 1, true)).await,
        Code::FailedPrecondition,
    );
    assert!(status.message().contains("referenced by"), "{}", status.message());
    assert_eq!(listed_versions(&mut admin, "identifiers", true).await, [(1, true)]);
    // A new reference to the soft-deleted version is not accepted.
    let referring = r#"{"properties": {"code": {"$ref": "xinqiao://schemas/identifiers/1#/$defs/uscc"}}}"#;
    refused(
        samr.register_schema(register("samr-ref", referring)).await,
        Code::NotFound,
    );

    // A version that describes a catalogue entry stays until the entry is bound to another.
    let code = ok(hub
        .dept(SAMR)
        .await
        .create_entry(create(content("企业登记信息", "102001", "营业执照登记信息")))
        .await)
    .resource_code;
    assert_eq!(registered(&mut samr, "samr-permit", PERMIT_V1).await, 1);
    ok(samr.bind_entry_schema(bind(&code, "samr-permit", 1)).await);
    let permit_v2 = edited(&json(PERMIT_V1), |d| {
        d["properties"]["issued_on"] = json(r#"{"type": "string", "format": "date"}"#)
    });
    assert_eq!(registered(&mut samr, "samr-permit", &permit_v2).await, 2);
    ok(samr.delete_schema_version(delete("samr-permit", 1, false)).await);
    let status = refused(
        samr.delete_schema_version(delete("samr-permit", 1, true)).await,
        Code::FailedPrecondition,
    );
    assert!(status.message().contains(&code), "{}", status.message());
    assert_eq!(
        listed_versions(&mut samr, "samr-permit", true).await,
        [(1, true), (2, false)]
    );
    // The binding still names it.
    assert_eq!(ok(samr.get_entry_schema(entry_schema(&code)).await).version, 1);

    ok(samr.bind_entry_schema(bind(&code, "samr-permit", 0)).await);
    assert_eq!(ok(samr.get_entry_schema(entry_schema(&code)).await).version, 2);
    ok(samr.delete_schema_version(delete("samr-permit", 1, true)).await);
    assert_eq!(listed_versions(&mut samr, "samr-permit", true).await, [(2, false)]);
    hub.finish().await;
}

/// A schema pins the version it references: soft-deleting that version ("kept for pinned
/// readers") must not stop records being validated against the referring schema, in either mode,
/// whether or not its validator was compiled before the deletion.
async fn schemas_keep_working_when_their_reference_is_soft_deleted(backend: Backend) {
    let hub = TestHub::start_on(backend).await;
    let mut admin = hub.schemas_admin().await;
    let mut samr = hub.schemas(SAMR).await;
    import_shared(&mut admin).await;
    let records = [entity(USCC_OK), entity(USCC_WRONG_CHECK)];

    let before = ok(samr
        .validate_records(validate("legal-entity", 0, &records, false))
        .await);
    assert_eq!((before.checked, before.invalid), (2, 1));
    ok(admin.delete_schema_version(delete("identifiers", 1, false)).await);

    // Compiled before the deletion (strict) and after it (lenient), the same answers.
    let strict = ok(samr
        .validate_records(validate("legal-entity", 0, &records, false))
        .await);
    assert_eq!(strict, before);
    let lenient = ok(samr.validate_records(validate("legal-entity", 0, &records, true)).await);
    assert_eq!((lenient.checked, lenient.invalid), (2, 0));
    assert_eq!(report_keywords(&lenient), [(1, vec![], vec!["format".to_string()])]);
    let person = ok(samr
        .validate_records(validate("person", 0, &[person("x", "2000-01-01")], false))
        .await);
    assert_eq!(person.invalid, 1);
    hub.finish().await;
}

// ---------------------------------------------------------------------------------------------
// Validating records

async fn records_are_validated_against_legal_entity(backend: Backend) {
    let hub = TestHub::start_on(backend).await;
    let mut admin = hub.schemas_admin().await;
    let mut police = hub.schemas(POLICE).await;
    import_shared(&mut admin).await;

    let records = [
        entity(USCC_OK),
        entity(USCC_WRONG_CHECK),
        format!(
            r#"{{"uscc": "{USCC_OK}", "legal_representative": "张三", "established_on": "2020-01-01", "status": "存续"}}"#
        ),
        "{not json".to_string(),
        entity(USCC_OK)
            .replace("存续", "倒闭")
            .replace(r#""registered_capital": 100"#, r#""registered_capital": -1"#),
    ];
    let answer = ok(police
        .validate_records(validate("legal-entity", 0, &records, false))
        .await);
    assert_eq!(
        (answer.checked, answer.invalid, answer.schema_version, answer.truncated),
        (5, 4, 1, false)
    );
    // The order of several errors in one record is the validator's: compared sorted.
    assert_eq!(
        sorted_keywords(&answer),
        [
            (1, vec!["format".to_string()], vec![]),
            (2, vec!["required".to_string()], vec![]),
            (3, vec!["parse".to_string()], vec![]),
            (4, vec!["enum".to_string(), "minimum".to_string()], vec![]),
        ]
    );
    let check_char = &answer.reports[0].errors[0];
    assert_eq!(
        (check_char.instance_pointer.as_str(), check_char.keyword.as_str()),
        ("/uscc", "format")
    );
    assert!(check_char.message.contains("expected 'D'"), "{check_char:?}");
    assert!(check_char.message.contains("统一社会信用代码"), "{check_char:?}");
    assert!(
        !check_char.message.contains(USCC_WRONG_CHECK),
        "the value is not repeated: {check_char:?}"
    );
    let missing = &answer.reports[1].errors[0];
    assert_eq!(missing.instance_pointer, "");
    assert!(missing.message.contains("name"), "{missing:?}");
    let parse = &answer.reports[2].errors[0];
    assert_eq!(parse.instance_pointer, "");
    let mut pointers: Vec<&str> = answer.reports[3]
        .errors
        .iter()
        .map(|e| e.instance_pointer.as_str())
        .collect();
    pointers.sort();
    assert_eq!(pointers, ["/registered_capital", "/status"]);
    assert!(answer.reports.iter().all(|r| r.warnings.is_empty()));

    // The same against version 1 by number; versions and subjects that do not exist.
    let pinned = ok(police
        .validate_records(validate("legal-entity", 1, &records, false))
        .await);
    assert_eq!(pinned, answer);
    refused(
        police
            .validate_records(validate("legal-entity", 2, &records, false))
            .await,
        Code::NotFound,
    );
    refused(
        police.validate_records(validate("nobody", 0, &records, false)).await,
        Code::NotFound,
    );
    // No records: nothing checked.
    let empty = ok(police.validate_records(validate("legal-entity", 0, &[], false)).await);
    assert_eq!((empty.checked, empty.invalid, empty.reports.len()), (0, 0, 0));
    hub.finish().await;
}

async fn lenient_validation_turns_check_characters_into_warnings(backend: Backend) {
    let hub = TestHub::start_on(backend).await;
    let mut admin = hub.schemas_admin().await;
    let mut samr = hub.schemas(SAMR).await;
    import_shared(&mut admin).await;

    let records = [
        entity(USCC_WRONG_CHECK),
        entity(USCC_WRONG_CHECK).replace(r#""name": "某某科技有限公司", "#, ""),
        entity(USCC_OK),
        entity("1110000000001312"),
    ];
    assert!(!records[1].contains("\"name\""));
    let lenient = ok(samr.validate_records(validate("legal-entity", 0, &records, true)).await);
    assert_eq!((lenient.checked, lenient.invalid), (4, 2));
    assert_eq!(
        report_keywords(&lenient),
        [
            (0, vec![], vec!["format".to_string()]),
            (1, vec!["required".to_string()], vec!["format".to_string()]),
            (3, vec!["format".to_string()], vec![]),
        ]
    );
    let warning = &lenient.reports[0].warnings[0];
    assert_eq!(warning.instance_pointer, "/uscc");
    assert!(warning.message.contains("expected 'D'"), "{warning:?}");
    // A code of the wrong shape is an error in either mode.
    assert_eq!(lenient.reports[2].errors[0].instance_pointer, "/uscc");

    let strict = ok(samr
        .validate_records(validate("legal-entity", 0, &records, false))
        .await);
    assert_eq!((strict.checked, strict.invalid), (4, 3));
    assert_eq!(
        sorted_keywords(&strict),
        [
            (0, vec!["format".to_string()], vec![]),
            (1, vec!["format".to_string(), "required".to_string()], vec![]),
            (3, vec!["format".to_string()], vec![]),
        ]
    );
    hub.finish().await;
}

async fn person_records_check_resident_ids_and_dates(backend: Backend) {
    let hub = TestHub::start_on(backend).await;
    let mut admin = hub.schemas_admin().await;
    let mut police = hub.schemas(POLICE).await;
    import_shared(&mut admin).await;

    let first17 = "11010519900307123";
    let check = resident_id_check_char(first17).expect("17 digits");
    let valid = format!("{first17}{check}");
    let other = if check == '0' { '1' } else { '0' };
    let wrong_check = format!("{first17}{other}");
    // Born on 29 February of a year that has none.
    let leap_first17 = "11010520230229123";
    let unborn = format!(
        "{leap_first17}{}",
        resident_id_check_char(leap_first17).expect("17 digits")
    );

    let records = [
        person(&valid, "1990-03-07"),
        person(&wrong_check, "1990-03-07"),
        person(&valid, "2023-02-29"),
        person(&unborn, "1990-03-07"),
        person(&valid, "2024-02-29"),
    ];
    let strict = ok(police.validate_records(validate("person", 0, &records, false)).await);
    assert_eq!((strict.checked, strict.invalid), (5, 3));
    let errors: Vec<(u32, &str, &str)> = strict
        .reports
        .iter()
        .flat_map(|r| {
            r.errors
                .iter()
                .map(move |e| (r.index, e.instance_pointer.as_str(), e.keyword.as_str()))
        })
        .collect();
    assert_eq!(
        errors,
        [
            (1, "/resident_id", "format"),
            (2, "/birth_date", "format"),
            (3, "/resident_id", "format"),
        ]
    );
    let message = &strict.reports[0].errors[0].message;
    assert!(message.contains(&format!("expected '{check}'")), "{message}");
    assert!(message.contains("公民身份号码"), "{message}");
    assert!(
        strict.reports[2].errors[0].message.contains("birth date"),
        "{:?}",
        strict.reports[2]
    );

    // Leniency forgives only the check character.
    let lenient = ok(police.validate_records(validate("person", 0, &records, true)).await);
    assert_eq!((lenient.checked, lenient.invalid), (5, 2));
    assert_eq!(
        report_keywords(&lenient),
        [
            (1, vec![], vec!["format".to_string()]),
            (2, vec!["format".to_string()], vec![]),
            (3, vec!["format".to_string()], vec![]),
        ]
    );
    hub.finish().await;
}

async fn validation_is_bounded(backend: Backend) {
    let hub = TestHub::start_on(backend).await;
    let mut admin = hub.schemas_admin().await;
    let mut samr = hub.schemas(SAMR).await;
    import_shared(&mut admin).await;

    // At most 10,000 records a call.
    let valid = vec![entity(USCC_OK); 10_000];
    let answer = ok(samr.validate_records(validate("legal-entity", 0, &valid, false)).await);
    assert_eq!((answer.checked, answer.invalid, answer.reports.len()), (10_000, 0, 0));
    assert!(!answer.truncated);
    let too_many = vec!["{}".to_string(); 10_001];
    let status = refused(
        samr.validate_records(validate("legal-entity", 0, &too_many, false))
            .await,
        Code::ResourceExhausted,
    );
    assert!(status.message().contains("10000"), "{}", status.message());

    // At most 1,000 reports; every invalid record is counted.
    let empty = vec!["{}".to_string(); 1_500];
    let answer = ok(samr.validate_records(validate("legal-entity", 0, &empty, false)).await);
    assert_eq!((answer.checked, answer.invalid), (1_500, 1_500));
    assert_eq!(answer.reports.len(), 1_000);
    assert!(answer.truncated);
    let indices: Vec<u32> = answer.reports.iter().map(|r| r.index).collect();
    assert_eq!(indices, (0..1_000).collect::<Vec<u32>>());
    // Each lacks the five required properties.
    assert!(
        answer
            .reports
            .iter()
            .all(|r| r.errors.len() == 5 && r.errors.iter().all(|e| e.keyword == "required"))
    );
    let few = vec!["{}".to_string(); 1_000];
    let answer = ok(samr.validate_records(validate("legal-entity", 0, &few, false)).await);
    assert_eq!((answer.reports.len(), answer.truncated), (1_000, false));

    // At most 20 errors a record.
    assert_eq!(
        registered(
            &mut samr,
            "samr-numbers",
            r#"{"type": "array", "items": {"type": "integer"}}"#
        )
        .await,
        1
    );
    let record = format!("[{}]", vec!["\"x\""; 50].join(","));
    let answer = ok(samr
        .validate_records(validate("samr-numbers", 0, &[record], false))
        .await);
    assert_eq!(answer.invalid, 1);
    assert_eq!(answer.reports[0].errors.len(), 20);
    assert_eq!(answer.reports[0].errors[19].instance_pointer, "/19");
    hub.finish().await;
}

// ---------------------------------------------------------------------------------------------
// Catalogue entries and their schemas

async fn entries_bind_to_schemas_that_cover_their_data_items(backend: Backend) {
    let hub = TestHub::start_on(backend).await;
    let mut admin = hub.schemas_admin().await;
    let mut samr = hub.schemas(SAMR).await;
    let mut police = hub.schemas(POLICE).await;
    let mut samr_dir = hub.dept(SAMR).await;
    import_shared(&mut admin).await;

    let published = ok(samr_dir
        .create_entry(create(content("企业登记信息", "102001", "营业执照登记信息")))
        .await)
    .resource_code;
    ok(samr_dir.submit_entry(submit(&published)).await);
    ok(hub.admin().await.publish_entry(publish(&published)).await);
    refused(samr.get_entry_schema(entry_schema(&published)).await, Code::NotFound);

    // 统一社会信用代码 and 名称 are the titles of legal-entity's uscc and name.
    let binding = ok(samr.bind_entry_schema(bind(&published, "legal-entity", 0)).await);
    assert_eq!(
        (
            binding.resource_code.as_str(),
            binding.subject.as_str(),
            binding.version,
            binding.bound_by.as_str()
        ),
        (published.as_str(), "legal-entity", 1, SAMR)
    );
    assert!(binding.bound_at.is_some());
    assert_same_binding(ok(samr.get_entry_schema(entry_schema(&published)).await), &binding);
    assert_same_binding(ok(police.get_entry_schema(entry_schema(&published)).await), &binding);

    // An item the schema lacks is named.
    let mut wider = content("企业联系信息", "102001", "企业联系方式");
    wider.items.push(item("联系电话", "字符型", 20));
    let draft = ok(samr_dir.create_entry(create(wider)).await).resource_code;
    let status = refused(
        samr.bind_entry_schema(bind(&draft, "legal-entity", 1)).await,
        Code::FailedPrecondition,
    );
    assert!(status.message().contains("联系电话"), "{}", status.message());
    assert!(!status.message().contains("名称"), "{}", status.message());
    refused(samr.get_entry_schema(entry_schema(&draft)).await, Code::NotFound);

    // Other departments do not bind: a published entry they see, a draft they do not.
    refused(
        police.bind_entry_schema(bind(&published, "person", 0)).await,
        Code::PermissionDenied,
    );
    refused(
        police.bind_entry_schema(bind(&draft, "legal-entity", 0)).await,
        Code::NotFound,
    );
    refused(police.get_entry_schema(entry_schema(&draft)).await, Code::NotFound);
    assert_same_binding(ok(samr.get_entry_schema(entry_schema(&published)).await), &binding);

    // What does not exist.
    refused(
        samr.bind_entry_schema(bind("102001/999999", "legal-entity", 0)).await,
        Code::NotFound,
    );
    refused(
        samr.bind_entry_schema(bind(&published, "nobody", 0)).await,
        Code::NotFound,
    );
    refused(
        samr.bind_entry_schema(bind(&published, "legal-entity", 5)).await,
        Code::NotFound,
    );
    assert_same_binding(ok(samr.get_entry_schema(entry_schema(&published)).await), &binding);

    // The admin binds too.
    let by_admin = ok(admin.bind_entry_schema(bind(&published, "legal-entity", 1)).await);
    assert_eq!(by_admin.bound_by, admin_actor());
    hub.finish().await;
}

async fn a_draft_from_an_entry_registers_and_binds(backend: Backend) {
    let hub = TestHub::start_on(backend).await;
    let mut samr = hub.schemas(SAMR).await;
    let mut police = hub.schemas(POLICE).await;
    let mut samr_dir = hub.dept(SAMR).await;

    let mut entry = content("企业登记信息", "102001", "营业执照登记信息");
    entry.items.push(item("成立日期", "日期型", 0));
    entry.items.push(item("注册资本", "数值型", 0));
    let code = ok(samr_dir.create_entry(create(entry)).await).resource_code;
    ok(samr_dir.submit_entry(submit(&code)).await);
    ok(hub.admin().await.publish_entry(publish(&code)).await);
    let unpublished = ok(samr_dir
        .create_entry(create(content("企业年报信息", "102001", "企业年度报告")))
        .await)
    .resource_code;

    let draft = ok(samr
        .draft_schema_from_entry(pb::DraftSchemaFromEntryRequest {
            resource_code: code.clone(),
        })
        .await)
    .schema_json;
    let doc = json(&draft);
    assert_eq!(doc["title"], "企业登记信息");
    assert_eq!(doc["type"], "object");
    let uscc = &doc["properties"]["统一社会信用代码"];
    assert_eq!(
        (&uscc["type"], &uscc["format"]),
        (&json(r#""string""#), &json(r#""uscc""#))
    );
    assert_eq!(doc["properties"]["名称"]["maxLength"], 200);
    assert_eq!(doc["properties"]["成立日期"]["format"], "date");
    assert_eq!(doc["properties"]["注册资本"]["type"], "number");

    // Registered under a new subject, it binds to the entry it came from.
    assert_eq!(registered(&mut samr, "samr-enterprise", &draft).await, 1);
    let binding = ok(samr.bind_entry_schema(bind(&code, "samr-enterprise", 1)).await);
    assert_eq!((binding.subject.as_str(), binding.version), ("samr-enterprise", 1));
    assert_same_binding(ok(police.get_entry_schema(entry_schema(&code)).await), &binding);
    let records = [
        format!(r#"{{"统一社会信用代码": "{USCC_OK}", "名称": "某某公司", "成立日期": "2020-01-01", "注册资本": 10}}"#),
        format!(r#"{{"统一社会信用代码": "{USCC_WRONG_CHECK}"}}"#),
    ];
    let answer = ok(samr
        .validate_records(validate("samr-enterprise", 0, &records, false))
        .await);
    assert_eq!(answer.invalid, 1);
    assert_eq!(answer.reports[0].errors[0].instance_pointer, "/统一社会信用代码");

    // Whoever sees the entry may draft from it.
    let by_police = ok(police
        .draft_schema_from_entry(pb::DraftSchemaFromEntryRequest {
            resource_code: code.clone(),
        })
        .await);
    assert_eq!(json(&by_police.schema_json), doc);
    refused(
        police
            .draft_schema_from_entry(pb::DraftSchemaFromEntryRequest {
                resource_code: unpublished.clone(),
            })
            .await,
        Code::NotFound,
    );
    ok(samr
        .draft_schema_from_entry(pb::DraftSchemaFromEntryRequest {
            resource_code: unpublished,
        })
        .await);
    hub.finish().await;
}

/// BindEntrySchema answers the binding as it is stored: GetEntrySchema reads back exactly the
/// same, `bound_at` included (as RegisterSchema's answer equals what GetSchema reads).
async fn a_binding_reads_back_as_it_was_answered(backend: Backend) {
    let hub = TestHub::start_on(backend).await;
    let mut admin = hub.schemas_admin().await;
    let mut samr = hub.schemas(SAMR).await;
    import_shared(&mut admin).await;
    let code = ok(hub
        .dept(SAMR)
        .await
        .create_entry(create(content("企业登记信息", "102001", "营业执照登记信息")))
        .await)
    .resource_code;
    // Several tries: a clock reading that happens to fall on a whole microsecond hides the
    // difference.
    for _ in 0..5 {
        let answered = ok(samr.bind_entry_schema(bind(&code, "legal-entity", 1)).await);
        let read = ok(samr.get_entry_schema(entry_schema(&code)).await);
        assert_eq!(
            read, answered,
            "GetEntrySchema reads another binding than BindEntrySchema answered"
        );
    }
    hub.finish().await;
}
