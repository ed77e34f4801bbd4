//! The store's conformance suite: every case runs on SQLite (a fresh file in a temporary
//! directory) and on PostgreSQL when `XINQIAO_TEST_DATABASE_URL` names a database (a fresh schema
//! per case, dropped afterwards). Without the variable the PostgreSQL cases say so and pass; with
//! it they must reach the database.

use std::collections::BTreeSet;
use std::str::FromStr;
use std::sync::Arc;

use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc};
use sqlx::Connection;
use xinqiao_domain::Error;
use xinqiao_domain::access::{AccessApplication, AccessGrant, AccessRequest, ErrorReport, ReportState, RequestState};
use xinqiao_domain::audit::{
    AuditEvent, BrokenLink, ChainHash, ChainKey, ChainLinker, ChainedEvent, GENESIS, Keyring, verify, verify_keyed,
};
use xinqiao_domain::catalogue::{
    CatalogEntry, DataItem, EntryContent, EntryFilter, ExchangeKind, OpenAttributes, OpenType, ResourceFormat,
    ShareAttributes, ShareChannel, ShareType, UpdateCycle,
};
use xinqiao_domain::compatibility::CompatibilityMode;
use xinqiao_domain::department::DepartmentProfile;
use xinqiao_domain::exchange::{ChangeOp, Dataset, DatasetKind};
use xinqiao_domain::federation::{CatalogueChange, Exposure, FederatedEntry, PeerHub, Relation};
use xinqiao_domain::identifiers::uscc_check_char;
use xinqiao_domain::interface::{Interface, InterfaceSpec, Method, Operation};
use xinqiao_domain::lifecycle::{EntryAction, EntryState};
use xinqiao_domain::masking::MaskRule;
use xinqiao_domain::policy::EntryVisibility;
use xinqiao_domain::schema::{RegisteredSchema, SchemaRef, Subject};
use xinqiao_domain::search::{self as search_rules, SearchPosition};
use xinqiao_store::{
    AuditCheckpoint, AuditFilter, AuditStore, BatchAudit, BatchResult, CatalogStore, ConsoleSession, ConsumerCursor,
    DatasetFilter, DepartmentStore, EntryChange, EntrySchemaBinding, ExchangeStore, GrantFilter, HubNode, NewBatch,
    NewChange, NewSchema, OpenStream, OperationsStore, PgStore, Registration, ReportFilter, RequestFilter, SignInToken,
    SqliteStore, Store, StoredChange, Upload,
};

const PG_URL_VAR: &str = "XINQIAO_TEST_DATABASE_URL";

// ---------------------------------------------------------------------------------------------
// Backends

/// A SQLite store on a file in a directory that lives as long as the test.
struct SqliteBackend {
    url: String,
    store: SqliteStore,
    _dir: tempfile::TempDir,
}

impl SqliteBackend {
    async fn new() -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let url = format!("sqlite://{}", dir.path().join("hub.db").display());
        let store = SqliteStore::open(&url).await.expect("open SQLite store");
        SqliteBackend { url, store, _dir: dir }
    }

    fn store(&self) -> Arc<dyn Store> {
        Arc::new(self.store.clone())
    }

    async fn finish(self) {
        self.store.close().await;
    }
}

/// A PostgreSQL store in a schema of its own, or `None` (after saying so) without a database.
struct PgBackend {
    url: String,
    schema: String,
    store: PgStore,
}

fn pg_url(case: &str) -> Option<String> {
    match std::env::var(PG_URL_VAR) {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            eprintln!("skipping PostgreSQL case {case}: {PG_URL_VAR} is not set");
            None
        }
    }
}

fn fresh_schema() -> String {
    format!("xq_test_{}", uuid::Uuid::new_v4().simple())
}

impl PgBackend {
    async fn new(case: &str) -> Option<Self> {
        let url = pg_url(case)?;
        let schema = fresh_schema();
        let store = PgStore::open_in_schema(&url, &schema)
            .await
            .unwrap_or_else(|e| panic!("{PG_URL_VAR} is set but the store does not open: {e}"));
        Some(PgBackend { url, schema, store })
    }

    fn store(&self) -> Arc<dyn Store> {
        Arc::new(self.store.clone())
    }

    async fn finish(self) {
        self.store.close().await;
        drop_schema(&self.url, &self.schema).await;
    }
}

async fn drop_schema(url: &str, schema: &str) {
    let mut conn = sqlx::PgConnection::connect(url)
        .await
        .expect("connect to drop the test schema");
    // The name is one this suite made up (fresh_schema), never outside input.
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA \"{schema}\" CASCADE")))
        .execute(&mut conn)
        .await
        .expect("drop the test schema");
    let _ = conn.close().await;
}

/// What a case is given by the backend it runs on: the store, or (`Tampering`) the store and a
/// way around it.
trait CaseInput {
    fn sqlite(backend: &SqliteBackend) -> Self;
    fn postgres(backend: &PgBackend) -> Self;
}

impl CaseInput for Arc<dyn Store> {
    fn sqlite(backend: &SqliteBackend) -> Self {
        backend.store()
    }

    fn postgres(backend: &PgBackend) -> Self {
        backend.store()
    }
}

/// The store, and a connection of the test's own to its database for changing rows behind the
/// store's back, as someone with database access might (the audit trail must notice). The store
/// itself offers no such door.
struct Tampering {
    store: Arc<dyn Store>,
    database: RawDatabase,
}

enum RawDatabase {
    Sqlite { url: String },
    Postgres { url: String, schema: String },
}

impl CaseInput for Tampering {
    fn sqlite(backend: &SqliteBackend) -> Self {
        Tampering {
            store: backend.store(),
            database: RawDatabase::Sqlite {
                url: backend.url.clone(),
            },
        }
    }

    fn postgres(backend: &PgBackend) -> Self {
        Tampering {
            store: backend.store(),
            database: RawDatabase::Postgres {
                url: backend.url.clone(),
                schema: backend.schema.clone(),
            },
        }
    }
}

impl Tampering {
    /// Runs `statements` (this suite's own SQL, never outside input) in one transaction on a
    /// connection of its own, outside the store.
    async fn execute(&self, statements: &[&str]) {
        match &self.database {
            RawDatabase::Sqlite { url } => {
                let mut conn = sqlx::SqliteConnection::connect(url).await.expect("connect to SQLite");
                let mut tx = conn.begin().await.expect("begin");
                for sql in statements {
                    sqlx::query(sqlx::AssertSqlSafe(*sql))
                        .execute(&mut *tx)
                        .await
                        .unwrap_or_else(|e| panic!("{sql}: {e}"));
                }
                tx.commit().await.expect("commit");
                let _ = conn.close().await;
            }
            RawDatabase::Postgres { url, schema } => {
                let options = sqlx::postgres::PgConnectOptions::from_str(url)
                    .expect("PostgreSQL URL")
                    .options([("search_path", schema.as_str())]);
                let mut conn = sqlx::PgConnection::connect_with(&options)
                    .await
                    .expect("connect to PostgreSQL");
                let mut tx = conn.begin().await.expect("begin");
                for sql in statements {
                    sqlx::query(sqlx::AssertSqlSafe(*sql))
                        .execute(&mut *tx)
                        .await
                        .unwrap_or_else(|e| panic!("{sql}: {e}"));
                }
                tx.commit().await.expect("commit");
                let _ = conn.close().await;
            }
        }
    }
}

/// Runs each case on both backends, in a runtime with several threads so that concurrent cases
/// really overlap. A case takes what it needs of the backend (see `CaseInput`).
macro_rules! conformance {
    ($($case:ident),+ $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    let backend = super::SqliteBackend::new().await;
                    super::$case(super::CaseInput::sqlite(&backend)).await;
                    backend.finish().await;
                }
            )+
        }

        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    let Some(backend) = super::PgBackend::new(stringify!($case)).await else { return };
                    super::$case(super::CaseInput::postgres(&backend)).await;
                    backend.finish().await;
                }
            )+
        }
    };
}

conformance!(
    peers_are_registered_listed_and_removed,
    entries_published_before_federation_join_the_feed,
    the_catalogue_feed_follows_publications_and_withdrawals,
    aggregated_changes_apply_once_and_are_searchable,
    entries_are_read_many_at_once_and_by_change,
    a_version_a_dataset_uses_is_not_deleted_for_good,
    departments_are_registered_listed_and_paged,
    a_department_code_is_registered_once,
    unknown_departments_are_not_found,
    resource_codes_count_per_classification,
    concurrent_creates_get_distinct_codes,
    saving_a_version_records_history,
    a_stale_version_is_aborted,
    concurrent_saves_of_one_version_let_one_win,
    search_shows_published_or_own_entries,
    search_applies_each_filter,
    search_finds_chinese_keywords_in_name_summary_and_items,
    search_keywords_match_literally,
    search_orders_by_resource_code_and_pages,
    search_through_the_index_finds_what_a_scan_finds,
    search_ranks_names_first_and_pages_across_tiers,
    a_common_keyword_is_ranked_and_paged_the_same,
    the_search_index_is_built_for_entries_that_existed_before,
    schema_versions_are_numbered_from_one,
    identical_content_registers_once,
    a_stale_after_version_is_aborted,
    concurrent_registrations_let_one_win,
    references_must_name_live_versions,
    soft_deleted_versions_are_hidden,
    permanent_deletion_needs_a_soft_delete_and_no_users,
    version_numbers_are_never_reused,
    compatibility_defaults_and_subject_modes,
    subjects_are_listed_in_order_and_paged,
    entries_are_bound_to_live_schema_versions,
    datasets_are_created_listed_and_filtered,
    batches_get_consecutive_sequences_and_count_records,
    a_replayed_batch_returns_its_first_result_and_writes_nothing,
    changes_are_fetched_in_pages,
    snapshots_show_each_present_key_as_of_a_sequence,
    consumers_only_move_forward,
    uploads_resume_and_complete_as_file_versions,
    concurrent_publishers_never_reorder,
    access_requests_are_stored_listed_and_paged,
    answering_a_request_is_atomic_and_happens_once,
    overdue_requests_are_pending_past_their_due_day,
    grants_are_listed_and_revoked_once,
    error_reports_are_listed_and_resolved_once,
    datasets_are_listed_by_active_grant,
    audit_events_are_chained_listed_and_filtered,
    a_publish_and_its_audit_event_commit_together,
    audit_chains_may_switch_hash_algorithm,
    concurrent_audit_appends_never_fork_the_chain,
    pruning_keeps_the_rest_of_the_chain_verifiable,
    tampering_in_the_database_is_named_by_verification,
    a_keyed_chain_names_every_tampering_even_recomputed_without_the_key,
    a_fresh_database_is_at_this_builds_schema,
    migrations_missing_are_pending_and_unknown_ones_refused,
    hub_nodes_are_announced_listed_and_retired,
    backups_are_online_copies_on_sqlite_and_pg_dump_on_postgres,
    open_streams_are_noted_and_an_orphan_is_ended_once_with_its_event,
    interfaces_are_registered_replaced_listed_and_disabled,
    requests_and_grants_may_be_for_an_interface,
    console_sign_in_tokens_are_used_once_before_they_expire,
    console_sessions_expire_end_and_are_purged,
);

// ---------------------------------------------------------------------------------------------
// Fixtures

/// A fixed instant, plus `seconds`: tests never depend on the clock.
fn t(seconds: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, 8, 0, 0)
        .single()
        .expect("valid instant")
        + Duration::seconds(seconds)
}

/// A well-formed 统一社会信用代码 for department `n`.
fn dept_code(n: u32) -> String {
    let first17 = format!("111000000000{n:05}");
    let check = uscc_check_char(&first17).expect("code alphabet");
    format!("{first17}{check}")
}

fn profile(n: u32) -> DepartmentProfile {
    DepartmentProfile {
        code: dept_code(n),
        name: format!("测试局{n}"),
        division_code: "110000".into(),
        contact: "010-12345678".into(),
    }
}

fn item(name: &str) -> DataItem {
    DataItem {
        name: name.into(),
        data_type: "字符型".into(),
        length: 50,
        sensitive: false,
        description: String::new(),
    }
}

fn content(classification: &str, name: &str) -> EntryContent {
    EntryContent {
        name: name.into(),
        classification: classification.into(),
        summary: "测试用的信息资源".into(),
        format: ResourceFormat::Database,
        items: vec![item("编号"), item("名称")],
        share: ShareAttributes {
            share_type: ShareType::Unconditional,
            condition: String::new(),
            channel: ShareChannel::Platform,
            exchange_kind: ExchangeKind::Table,
            legal_basis: String::new(),
        },
        open: OpenAttributes {
            open_type: OpenType::NotOpen,
            condition: String::new(),
        },
        update_cycle: UpdateCycle::Daily,
        related_codes: vec![],
        maintainer: String::new(),
    }
}

fn change(action: EntryAction, actor: &str, at: DateTime<Utc>) -> EntryChange {
    EntryChange {
        action,
        actor: actor.into(),
        reason: String::new(),
        at,
    }
}

async fn register(store: &dyn Store, n: u32) -> String {
    store
        .register_department(&profile(n), t(0))
        .await
        .expect("register department");
    dept_code(n)
}

async fn create(store: &dyn Store, provider: &str, content: &EntryContent) -> CatalogEntry {
    store
        .create_entry(provider, content, &change(EntryAction::Create, provider, t(1)))
        .await
        .expect("create entry")
}

/// Saves `entry` as its next version in `state` (the store does not police the lifecycle).
async fn save_as(store: &dyn Store, entry: &CatalogEntry, state: EntryState, action: EntryAction) -> CatalogEntry {
    let mut next = entry.clone();
    next.version += 1;
    next.state = state;
    next.updated_at = entry.updated_at + Duration::seconds(1);
    if state == EntryState::Published {
        next.published_at = Some(next.updated_at);
    }
    store
        .save_entry_version(&next, &change(action, "admin:ops", next.updated_at))
        .await
        .expect("save version")
}

async fn publish(store: &dyn Store, entry: &CatalogEntry) -> CatalogEntry {
    save_as(store, entry, EntryState::Published, EntryAction::Publish).await
}

async fn search(store: &dyn Store, visibility: &EntryVisibility, filter: &EntryFilter) -> Vec<String> {
    let found = store
        .search_entries(visibility, filter, None, 1000)
        .await
        .expect("search");
    found.into_iter().map(|e| e.resource_code).collect()
}

async fn find(store: &dyn Store, keyword: &str) -> Vec<String> {
    search(
        store,
        &EntryVisibility::All,
        &EntryFilter {
            keyword: keyword.into(),
            ..EntryFilter::default()
        },
    )
    .await
}

fn codes(entries: &[&CatalogEntry]) -> Vec<String> {
    entries.iter().map(|e| e.resource_code.clone()).collect()
}

// ---------------------------------------------------------------------------------------------
// Departments

async fn departments_are_registered_listed_and_paged(store: Arc<dyn Store>) {
    // Registered out of order; the sub-microsecond part of the time is not kept.
    let at = t(0) + Duration::nanoseconds(123_456_789);
    let mut registered = Vec::new();
    for n in [3, 1, 2] {
        let d = store.register_department(&profile(n), at).await.expect("register");
        assert_eq!(d.profile, profile(n));
        assert!(d.active);
        assert_eq!(d.created_at, t(0) + Duration::microseconds(123_456));
        assert_eq!(d.updated_at, d.created_at);
        assert_eq!(
            store.get_department(&d.profile.code).await.expect("get"),
            Some(d.clone())
        );
        registered.push(d);
    }
    assert_eq!(store.get_department(&dept_code(9)).await.expect("get"), None);

    let list = |after: Option<String>, limit: u32, include_inactive: bool| {
        let store = store.clone();
        async move {
            let found = store
                .list_departments(after.as_deref(), limit, include_inactive)
                .await
                .expect("list");
            found.into_iter().map(|d| d.profile.code).collect::<Vec<_>>()
        }
    };
    let (c1, c2, c3) = (dept_code(1), dept_code(2), dept_code(3));
    assert_eq!(list(None, 10, false).await, [c1.clone(), c2.clone(), c3.clone()]);
    assert_eq!(list(None, 2, false).await, [c1.clone(), c2.clone()]);
    assert_eq!(list(Some(c2.clone()), 2, false).await, [c3.as_str()]);
    assert!(list(Some(c3.clone()), 2, false).await.is_empty());
    assert!(list(None, 0, true).await.is_empty());

    let renamed = DepartmentProfile {
        name: "改名局".into(),
        contact: "010-87654321".into(),
        ..profile(2)
    };
    let updated = store.update_department(&renamed, t(10)).await.expect("update");
    assert_eq!(updated.profile, renamed);
    assert_eq!(updated.created_at, registered[2].created_at);
    assert_eq!(updated.updated_at, t(10));
    assert_eq!(store.get_department(&c2).await.expect("get"), Some(updated));

    let inactive = store
        .set_department_active(&c2, false, t(20))
        .await
        .expect("deactivate");
    assert!(!inactive.active);
    assert_eq!(inactive.profile, renamed);
    assert_eq!(inactive.updated_at, t(20));
    assert_eq!(list(None, 10, false).await, [c1.clone(), c3.clone()]);
    assert_eq!(list(None, 10, true).await, [c1.clone(), c2.clone(), c3.clone()]);
    assert_eq!(list(Some(c1.clone()), 1, false).await, [c3.as_str()]);

    let active = store.set_department_active(&c2, true, t(30)).await.expect("activate");
    assert!(active.active);
    assert_eq!(list(None, 10, false).await, [c1, c2, c3]);
}

async fn a_department_code_is_registered_once(store: Arc<dyn Store>) {
    store.register_department(&profile(1), t(0)).await.expect("register");
    let again = DepartmentProfile {
        name: "另一个名字".into(),
        ..profile(1)
    };
    let err = store.register_department(&again, t(1)).await.expect_err("duplicate");
    assert!(matches!(err, Error::AlreadyExists(_)), "{err:?}");
    let kept = store
        .get_department(&dept_code(1))
        .await
        .expect("get")
        .expect("still there");
    assert_eq!(kept.profile.name, profile(1).name);
}

async fn unknown_departments_are_not_found(store: Arc<dyn Store>) {
    let err = store.update_department(&profile(7), t(0)).await.expect_err("unknown");
    assert!(matches!(err, Error::NotFound(_)), "{err:?}");
    let err = store
        .set_department_active(&dept_code(7), false, t(0))
        .await
        .expect_err("unknown");
    assert!(matches!(err, Error::NotFound(_)), "{err:?}");
    let err = store
        .create_entry(
            &dept_code(7),
            &content("102", "无主资源"),
            &change(EntryAction::Create, "x", t(0)),
        )
        .await
        .expect_err("unknown provider");
    assert!(matches!(err, Error::NotFound(_)), "{err:?}");
    assert_eq!(store.get_department(&dept_code(7)).await.expect("get"), None);
}

// ---------------------------------------------------------------------------------------------
// Entries and versions

async fn resource_codes_count_per_classification(store: Arc<dyn Store>) {
    let provider = register(&*store, 1).await;
    let first = content("102", "企业登记信息");
    let created = store
        .create_entry(&provider, &first, &change(EntryAction::Create, &provider, t(5)))
        .await
        .expect("create");
    assert_eq!(created.resource_code, "102/000001");
    assert_eq!(created.provider_code, provider);
    assert_eq!(created.provider_name, profile(1).name);
    assert_eq!(created.content, first);
    assert_eq!(created.state, EntryState::Draft);
    assert_eq!(created.version, 1);
    assert_eq!(created.state_reason, "");
    assert_eq!(created.published_at, None);
    assert_eq!(created.created_at, t(5));
    assert_eq!(created.updated_at, t(5));
    assert_eq!(store.get_entry("102/000001").await.expect("get"), Some(created));

    assert_eq!(
        create(&*store, &provider, &content("102", "二")).await.resource_code,
        "102/000002"
    );
    assert_eq!(
        create(&*store, &provider, &content("201001", "三")).await.resource_code,
        "201001/000001"
    );
    assert_eq!(
        create(&*store, &provider, &content("102", "四")).await.resource_code,
        "102/000003"
    );
    assert_eq!(store.get_entry("102/999999").await.expect("get"), None);
}

async fn concurrent_creates_get_distinct_codes(store: Arc<dyn Store>) {
    let a = register(&*store, 1).await;
    let b = register(&*store, 2).await;
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let store = store.clone();
            let provider = if i % 2 == 0 { a.clone() } else { b.clone() };
            tokio::spawn(async move { create(&*store, &provider, &content("102", &format!("资源{i}"))).await })
        })
        .collect();
    let mut codes = BTreeSet::new();
    for task in tasks {
        let entry = task.await.expect("task");
        assert!(
            codes.insert(entry.resource_code.clone()),
            "{} handed out twice",
            entry.resource_code
        );
    }
    let expected: BTreeSet<_> = (1..=20).map(|n| format!("102/{n:06}")).collect();
    assert_eq!(codes, expected);
}

async fn saving_a_version_records_history(store: Arc<dyn Store>) {
    let provider = register(&*store, 1).await;
    let v1 = create(&*store, &provider, &content("102", "企业登记信息")).await;

    let mut draft = v1.clone();
    draft.version = 2;
    draft.content.summary = "修订后的摘要".into();
    draft.updated_at = t(2);
    let update = EntryChange {
        action: EntryAction::Update,
        actor: provider.clone(),
        reason: String::new(),
        at: t(2),
    };
    let v2 = store.save_entry_version(&draft, &update).await.expect("save v2");
    assert_eq!(v2, draft);
    assert_eq!(store.get_entry(&v1.resource_code).await.expect("get"), Some(v2.clone()));

    let mut pending = v2.clone();
    pending.version = 3;
    pending.state = EntryState::PendingReview;
    pending.updated_at = t(3);
    let submit = EntryChange {
        action: EntryAction::Submit,
        actor: provider.clone(),
        reason: String::new(),
        at: t(3),
    };
    let v3 = store.save_entry_version(&pending, &submit).await.expect("save v3");
    assert_eq!(v3, pending);

    let mut returned = v3.clone();
    returned.version = 4;
    returned.state = EntryState::Returned;
    returned.state_reason = "缺少法律依据".into();
    returned.updated_at = t(4);
    let send_back = EntryChange {
        action: EntryAction::Return,
        actor: "admin:ops".into(),
        reason: "缺少法律依据".into(),
        at: t(4),
    };
    let v4 = store.save_entry_version(&returned, &send_back).await.expect("save v4");
    assert_eq!(v4, returned);

    let mut published = v4.clone();
    published.version = 5;
    published.state = EntryState::Published;
    published.state_reason = String::new();
    published.published_at = Some(t(5) + Duration::nanoseconds(999));
    published.updated_at = t(5);
    let approve = EntryChange {
        action: EntryAction::Publish,
        actor: "admin:ops".into(),
        reason: "同意".into(),
        at: t(5),
    };
    let v5 = store.save_entry_version(&published, &approve).await.expect("save v5");
    assert_eq!(v5.published_at, Some(t(5)), "kept to the microsecond");
    assert_eq!(v5.created_at, v1.created_at);
    assert_eq!(store.get_entry(&v1.resource_code).await.expect("get"), Some(v5.clone()));

    let history = store.list_entry_versions(&v1.resource_code).await.expect("history");
    let summary: Vec<_> = history.iter().map(|r| (r.version, r.state, r.change.action)).collect();
    assert_eq!(
        summary,
        [
            (1, EntryState::Draft, EntryAction::Create),
            (2, EntryState::Draft, EntryAction::Update),
            (3, EntryState::PendingReview, EntryAction::Submit),
            (4, EntryState::Returned, EntryAction::Return),
            (5, EntryState::Published, EntryAction::Publish),
        ]
    );
    assert_eq!(history[0].change, change(EntryAction::Create, &provider, t(1)));
    assert_eq!(history[3].change, send_back);
    assert_eq!(history[4].change, approve);

    // Each past version reads back as it was.
    for (version, expected) in [(1, &v1), (2, &v2), (3, &v3), (4, &v4), (5, &v5)] {
        let old = store
            .get_entry_version(&v1.resource_code, version)
            .await
            .expect("get version");
        assert_eq!(old.as_ref(), Some(expected), "version {version}");
    }
    assert_eq!(store.get_entry_version(&v1.resource_code, 6).await.expect("get"), None);
    assert_eq!(store.get_entry_version("102/999999", 1).await.expect("get"), None);
    assert!(
        store
            .list_entry_versions("102/999999")
            .await
            .expect("history")
            .is_empty()
    );
}

async fn a_stale_version_is_aborted(store: Arc<dyn Store>) {
    let provider = register(&*store, 1).await;
    let v1 = create(&*store, &provider, &content("102", "企业登记信息")).await;
    let v2 = save_as(&*store, &v1, EntryState::PendingReview, EntryAction::Submit).await;

    // A second writer that also read v1.
    let mut stale = v1.clone();
    stale.version = 2;
    stale.content.name = "晚到的修改".into();
    let err = store
        .save_entry_version(&stale, &change(EntryAction::Update, &provider, t(9)))
        .await
        .expect_err("stale");
    assert!(matches!(err, Error::Aborted(_)), "{err:?}");

    // Skipping a version is refused the same way.
    let mut ahead = v2.clone();
    ahead.version = 4;
    let err = store
        .save_entry_version(&ahead, &change(EntryAction::Update, &provider, t(9)))
        .await
        .expect_err("ahead");
    assert!(matches!(err, Error::Aborted(_)), "{err:?}");
    let mut zero = v2.clone();
    zero.version = 0;
    let err = store
        .save_entry_version(&zero, &change(EntryAction::Update, &provider, t(9)))
        .await
        .expect_err("zero");
    assert!(matches!(err, Error::Aborted(_)), "{err:?}");

    let mut unknown = v2.clone();
    unknown.resource_code = "102/999999".into();
    unknown.version = 2;
    let err = store
        .save_entry_version(&unknown, &change(EntryAction::Update, &provider, t(9)))
        .await
        .expect_err("unknown");
    assert!(matches!(err, Error::NotFound(_)), "{err:?}");

    assert_eq!(store.get_entry(&v1.resource_code).await.expect("get"), Some(v2));
    assert_eq!(
        store
            .list_entry_versions(&v1.resource_code)
            .await
            .expect("history")
            .len(),
        2
    );
}

async fn concurrent_saves_of_one_version_let_one_win(store: Arc<dyn Store>) {
    let provider = register(&*store, 1).await;
    let v1 = create(&*store, &provider, &content("102", "企业登记信息")).await;
    let tasks: Vec<_> = (0..10)
        .map(|i| {
            let store = store.clone();
            let mut next = v1.clone();
            next.version = 2;
            next.content.summary = format!("第{i}个修改");
            let reason = next.content.summary.clone();
            let change = EntryChange {
                action: EntryAction::Update,
                actor: provider.clone(),
                reason,
                at: t(2),
            };
            tokio::spawn(async move { store.save_entry_version(&next, &change).await })
        })
        .collect();
    let mut winners = Vec::new();
    for task in tasks {
        match task.await.expect("task") {
            Ok(saved) => winners.push(saved),
            Err(Error::Aborted(_)) => {}
            Err(other) => panic!("expected ABORTED for the losers, got {other:?}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one concurrent save wins");
    assert_eq!(
        store.get_entry(&v1.resource_code).await.expect("get").as_ref(),
        winners.first()
    );
    let history = store.list_entry_versions(&v1.resource_code).await.expect("history");
    assert_eq!(history.len(), 2);
    assert_eq!(
        history[1].change.reason, winners[0].content.summary,
        "the winner's change is recorded"
    );
}

// ---------------------------------------------------------------------------------------------
// Search

async fn search_shows_published_or_own_entries(store: Arc<dyn Store>) {
    let a = register(&*store, 1).await;
    let b = register(&*store, 2).await;
    let a_draft = create(&*store, &a, &content("102", "甲的草稿")).await;
    let a_published = publish(&*store, &create(&*store, &a, &content("102", "甲的发布")).await).await;
    let b_draft = create(&*store, &b, &content("102", "乙的草稿")).await;
    let b_pending = save_as(
        &*store,
        &create(&*store, &b, &content("102", "乙的待审")).await,
        EntryState::PendingReview,
        EntryAction::Submit,
    )
    .await;
    let b_published = publish(&*store, &create(&*store, &b, &content("102", "乙的发布")).await).await;

    let any = EntryFilter::default();
    let own_a = EntryVisibility::PublishedOrOwnedBy(a.clone());
    let own_b = EntryVisibility::PublishedOrOwnedBy(b.clone());
    let stranger = EntryVisibility::PublishedOrOwnedBy(dept_code(9));
    assert_eq!(
        search(&*store, &own_a, &any).await,
        codes(&[&a_draft, &a_published, &b_published])
    );
    assert_eq!(
        search(&*store, &own_b, &any).await,
        codes(&[&a_published, &b_draft, &b_pending, &b_published])
    );
    assert_eq!(
        search(&*store, &stranger, &any).await,
        codes(&[&a_published, &b_published])
    );
    assert_eq!(
        search(&*store, &EntryVisibility::All, &any).await,
        codes(&[&a_draft, &a_published, &b_draft, &b_pending, &b_published])
    );

    // Visibility narrows every other filter too, and results are whole current entries.
    let drafts = EntryFilter {
        state: Some(EntryState::Draft),
        ..EntryFilter::default()
    };
    assert_eq!(search(&*store, &own_a, &drafts).await, codes(&[&a_draft]));
    let found = store.search_entries(&own_a, &any, None, 10).await.expect("search");
    assert_eq!(found, [a_draft, a_published, b_published]);
}

async fn search_applies_each_filter(store: Arc<dyn Store>) {
    let a = register(&*store, 1).await;
    let b = register(&*store, 2).await;

    let e1 = create(&*store, &a, &content("102", "一")).await;

    let mut c2 = content("102003", "二");
    c2.share.share_type = ShareType::Conditional;
    c2.share.condition = "仅限办理业务使用".into();
    c2.share.legal_basis = "《政务信息资源共享管理暂行办法》".into();
    c2.open = OpenAttributes {
        open_type: OpenType::Conditional,
        condition: "依申请开放".into(),
    };
    c2.update_cycle = UpdateCycle::Monthly;
    c2.format = ResourceFormat::Spreadsheet;
    let e2 = publish(&*store, &create(&*store, &a, &c2).await).await;

    let mut c3 = content("201", "三");
    c3.share.share_type = ShareType::NotShared;
    c3.update_cycle = UpdateCycle::Yearly;
    c3.format = ResourceFormat::ElectronicFile;
    let e3 = publish(&*store, &create(&*store, &b, &c3).await).await;

    let all = EntryVisibility::All;
    let check = |filter: EntryFilter, expected: Vec<String>| {
        let store = store.clone();
        let all = all.clone();
        async move {
            assert_eq!(search(&*store, &all, &filter).await, expected, "{filter:?}");
        }
    };
    let f = EntryFilter::default;
    check(f(), codes(&[&e1, &e2, &e3])).await;
    check(
        EntryFilter {
            share_type: Some(ShareType::Conditional),
            ..f()
        },
        codes(&[&e2]),
    )
    .await;
    check(
        EntryFilter {
            share_type: Some(ShareType::NotShared),
            ..f()
        },
        codes(&[&e3]),
    )
    .await;
    check(
        EntryFilter {
            open_type: Some(OpenType::NotOpen),
            ..f()
        },
        codes(&[&e1, &e3]),
    )
    .await;
    check(
        EntryFilter {
            open_type: Some(OpenType::Unconditional),
            ..f()
        },
        vec![],
    )
    .await;
    check(
        EntryFilter {
            update_cycle: Some(UpdateCycle::Yearly),
            ..f()
        },
        codes(&[&e3]),
    )
    .await;
    check(
        EntryFilter {
            format: Some(ResourceFormat::Database),
            ..f()
        },
        codes(&[&e1]),
    )
    .await;
    check(
        EntryFilter {
            state: Some(EntryState::Published),
            ..f()
        },
        codes(&[&e2, &e3]),
    )
    .await;
    check(
        EntryFilter {
            state: Some(EntryState::Withdrawn),
            ..f()
        },
        vec![],
    )
    .await;
    check(
        EntryFilter {
            provider_code: b.clone(),
            ..f()
        },
        codes(&[&e3]),
    )
    .await;
    check(
        EntryFilter {
            provider_code: dept_code(9),
            ..f()
        },
        vec![],
    )
    .await;
    check(
        EntryFilter {
            classification_prefix: "1".into(),
            ..f()
        },
        codes(&[&e1, &e2]),
    )
    .await;
    check(
        EntryFilter {
            classification_prefix: "102".into(),
            ..f()
        },
        codes(&[&e1, &e2]),
    )
    .await;
    check(
        EntryFilter {
            classification_prefix: "1020".into(),
            ..f()
        },
        codes(&[&e2]),
    )
    .await;
    check(
        EntryFilter {
            classification_prefix: "102003".into(),
            ..f()
        },
        codes(&[&e2]),
    )
    .await;
    check(
        EntryFilter {
            classification_prefix: "2".into(),
            ..f()
        },
        codes(&[&e3]),
    )
    .await;
    check(
        EntryFilter {
            classification_prefix: "3".into(),
            ..f()
        },
        vec![],
    )
    .await;
    check(
        EntryFilter {
            classification_prefix: "1".into(),
            state: Some(EntryState::Published),
            provider_code: a,
            ..f()
        },
        codes(&[&e2]),
    )
    .await;
}

async fn search_finds_chinese_keywords_in_name_summary_and_items(store: Arc<dyn Store>) {
    let a = register(&*store, 1).await;
    let mut c1 = content("102", "企业登记信息");
    c1.summary = "本市企业的营业执照登记信息".into();
    c1.items = vec![item("统一社会信用代码"), item("法定代表人")];
    let e1 = create(&*store, &a, &c1).await;
    let mut c2 = content("101", "人口基础信息");
    c2.summary = "户籍人口信息".into();
    c2.items = vec![item("公民身份号码"), item("姓名")];
    let e2 = create(&*store, &a, &c2).await;
    let e3 = create(&*store, &a, &content("301", "GDP 统计")).await;

    assert_eq!(find(&*store, "营业执照").await, codes(&[&e1]), "in the summary");
    assert_eq!(find(&*store, "法定代表人").await, codes(&[&e1]), "a data-item name");
    assert_eq!(find(&*store, "人口基础").await, codes(&[&e2]), "in the name");
    assert_eq!(find(&*store, "公民身份号码").await, codes(&[&e2]));
    assert_eq!(find(&*store, "人口基础信息").await, codes(&[&e2]));
    assert_eq!(
        find(&*store, "信息").await,
        codes(&[&e2, &e1, &e3]),
        "names and summaries"
    );
    assert!(find(&*store, "不动产").await.is_empty());
    // Metadata outside name, summary and item names is not searched.
    assert!(find(&*store, "字符型").await.is_empty());
    assert!(find(&*store, "database").await.is_empty());
    // ASCII letters match regardless of case.
    assert_eq!(find(&*store, "gdp").await, codes(&[&e3]));
    assert_eq!(find(&*store, "Gdp 统").await, codes(&[&e3]));

    // A new version is searched by its new text only.
    let mut revised = e1.clone();
    revised.version = 2;
    revised.content.summary = "本市市场主体的不动产登记信息".into();
    store
        .save_entry_version(&revised, &change(EntryAction::Update, &a, t(3)))
        .await
        .expect("save");
    assert_eq!(find(&*store, "不动产").await, codes(&[&e1]));
    assert!(find(&*store, "营业执照").await.is_empty());
}

async fn search_keywords_match_literally(store: Arc<dyn Store>) {
    let a = register(&*store, 1).await;
    let names = [
        "增长率100%",
        "a_b字段",
        "axb字段",
        "O'Brien档案",
        "\"引号\"数据",
        r"C:\路径",
        "普通信息",
    ];
    let mut by_name = std::collections::HashMap::new();
    for name in names {
        by_name.insert(name, create(&*store, &a, &content("102", name)).await.resource_code);
    }
    let only = |name: &str| vec![by_name[name].clone()];

    assert_eq!(find(&*store, "%").await, only("增长率100%"));
    assert_eq!(find(&*store, "100%").await, only("增长率100%"));
    assert_eq!(find(&*store, "_").await, only("a_b字段"));
    assert_eq!(find(&*store, "a_b").await, only("a_b字段"));
    assert_eq!(find(&*store, "'").await, only("O'Brien档案"));
    assert_eq!(find(&*store, "o'brien").await, only("O'Brien档案"));
    assert_eq!(find(&*store, "\"").await, only("\"引号\"数据"));
    assert_eq!(find(&*store, "\\").await, only(r"C:\路径"));
    assert_eq!(find(&*store, r"C:\路").await, only(r"C:\路径"));
    assert!(find(&*store, "%%").await.is_empty());
    assert!(find(&*store, "a%b").await.is_empty());
    assert!(find(&*store, r"\%").await.is_empty());
    assert!(find(&*store, "'; DELETE FROM catalog_entries; --").await.is_empty());
    assert!(find(&*store, "' OR '1'='1").await.is_empty());
    assert_eq!(
        find(&*store, "").await.len(),
        names.len(),
        "an empty keyword matches everything"
    );
}

async fn search_orders_by_resource_code_and_pages(store: Arc<dyn Store>) {
    let a = register(&*store, 1).await;
    let b = register(&*store, 2).await;
    // Created out of code order and by two providers.
    for (provider, classification) in [
        (&a, "201001"),
        (&b, "102"),
        (&a, "101"),
        (&b, "102"),
        (&a, "102"),
        (&b, "101"),
        (&a, "102"),
        (&b, "102"),
    ] {
        create(&*store, provider, &content(classification, "资源")).await;
    }
    let expected = [
        "101/000001",
        "101/000002",
        "102/000001",
        "102/000002",
        "102/000003",
        "102/000004",
        "102/000005",
        "201001/000001",
    ];
    assert_eq!(find(&*store, "").await, expected);

    let all = EntryVisibility::All;
    let any = EntryFilter::default();
    let mut paged = Vec::new();
    let mut after: Option<SearchPosition> = None;
    loop {
        let page = store.search_entries(&all, &any, after.as_ref(), 3).await.expect("page");
        assert!(page.len() <= 3);
        let Some(last) = page.last() else { break };
        after = Some(SearchPosition::of_code(&last.resource_code));
        paged.extend(page.into_iter().map(|e| e.resource_code));
    }
    assert_eq!(paged, expected);

    let page = store
        .search_entries(&all, &any, Some(&SearchPosition::of_code("102/000003")), 2)
        .await
        .expect("page");
    assert_eq!(
        page.iter().map(|e| e.resource_code.as_str()).collect::<Vec<_>>(),
        ["102/000004", "102/000005"]
    );
    assert!(
        store
            .search_entries(&all, &any, None, 0)
            .await
            .expect("empty page")
            .is_empty()
    );

    // Paging composes with the filters.
    let own_b = EntryFilter {
        provider_code: b,
        ..EntryFilter::default()
    };
    let page = store
        .search_entries(&all, &own_b, Some(&SearchPosition::of_code("101/000002")), 2)
        .await
        .expect("page");
    assert_eq!(
        page.iter().map(|e| e.resource_code.as_str()).collect::<Vec<_>>(),
        ["102/000001", "102/000002"]
    );
}

/// Texts for the search tests: Chinese words of one, two and more characters, Latin letters in
/// mixed case, and the characters that mean something to LIKE, SQL and FTS5 query syntax.
fn search_corpus() -> Vec<(&'static str, &'static str, Vec<&'static str>)> {
    vec![
        (
            "企业登记信息",
            "本市企业的营业执照登记信息",
            vec!["统一社会信用代码", "法定代表人"],
        ),
        ("社保缴费记录", "企业和个人的社会保险缴费", vec!["社保卡号", "姓名"]),
        ("人口基础信息", "户籍人口\n含流动人口", vec!["公民身份号码", "姓名"]),
        (
            "GDP Statistics 统计",
            "Quarterly gdp by DISTRICT_CODE, 100% coverage",
            vec!["Region", "Value"],
        ),
        (
            "\"引号\" O'Brien 档案",
            "NEAR OR AND NOT * ^ : ( ) {col} 特殊字符",
            vec!["a_b", "x%y"],
        ),
        ("不动产登记", "房屋与土地 企", vec!["企业名称", "坐落"]),
        ("医保目录", "药品目录", vec!["编码"]),
    ]
}

fn search_keywords() -> Vec<String> {
    let mut keywords: Vec<String> = [
        "企",
        "业",
        "企业",
        "社保",
        "信息",
        "登记信息",
        "统一社会信用代码",
        "姓名",
        "人口\n含",
        "gdp",
        "GDP",
        "Statistics",
        "district_code",
        "100%",
        "%",
        "_",
        "a_b",
        "x%y",
        "'",
        "o'brien",
        "\"",
        "\"引号\"",
        "NEAR",
        "or",
        "AND NOT",
        "*",
        "^",
        ":",
        "(",
        "{col}",
        " ",
        "医保",
        "不存在",
        "保企",
        "企业 ",
        "",
        "%%",
        "a%b",
        "' OR '1'='1",
        "\" OR \"",
        "NEAR(企 业)",
        "企*",
        "🙂",
    ]
    .iter()
    .map(|k| k.to_string())
    .collect();
    keywords.push("企业".repeat(200));
    keywords.push("ab".repeat(300));
    keywords
}

/// What the search must answer, computed without the store: the entries whose search text holds
/// the keyword (lower-cased), by relevance tier, then by code.
fn expected_search(entries: &[(String, EntryContent)], keyword: &str) -> Vec<String> {
    let keyword = search_rules::matching_keyword(keyword);
    let mut hits: Vec<(u8, String)> = entries
        .iter()
        .filter_map(|(code, content)| {
            let text = content.search_text().to_lowercase();
            if keyword.is_empty() {
                return Some((0, code.clone()));
            }
            search_rules::relevance_tier(&text, &keyword).map(|tier| (tier, code.clone()))
        })
        .collect();
    hits.sort();
    hits.into_iter().map(|(_, code)| code).collect()
}

fn searchable_content(classification: &str, (name, summary, items): &(&str, &str, Vec<&str>)) -> EntryContent {
    let mut c = content(classification, name);
    c.summary = summary.to_string();
    c.items = items.iter().map(|name| item(name)).collect();
    c
}

async fn search_through_the_index_finds_what_a_scan_finds(store: Arc<dyn Store>) {
    let a = register(&*store, 1).await;
    let mut entries = Vec::new();
    for (i, texts) in search_corpus().iter().enumerate() {
        let c = searchable_content(if i % 2 == 0 { "102" } else { "101" }, texts);
        let e = create(&*store, &a, &c).await;
        entries.push((e.resource_code, c));
    }
    // The same entries aggregated from a child hub, searched the same way.
    store
        .add_peer(&peer_hub("330110", Relation::Child))
        .await
        .expect("add the county");
    let changes: Vec<CatalogueChange> = entries
        .iter()
        .enumerate()
        .map(|(i, (code, c))| {
            let mut change = child_change(i as u64 + 1, "330110", code, &c.name, EntryState::Published);
            change.entry.entry.content = c.clone();
            change
        })
        .collect();
    let count = changes.len() as u64;
    assert_eq!(
        store.apply_catalogue_changes("330110", 0, &changes, count).await,
        Ok(count)
    );

    for keyword in search_keywords() {
        let expected = expected_search(&entries, &keyword);
        assert_eq!(find(&*store, &keyword).await, expected, "keyword {keyword:?}");
        let aggregated: Vec<String> = federated_codes(&*store, &EntryVisibility::All, &keyword)
            .await
            .into_iter()
            .map(|c| c.trim_start_matches("330110:").to_string())
            .collect();
        assert_eq!(aggregated, expected, "aggregated, keyword {keyword:?}");
    }
    // The two-character keyword finds something only a unigram index would miss if it kept
    // words: 企 alone in a summary, beside the 企业 of the other entries.
    assert_eq!(find(&*store, "企").await.len(), 3);

    // An update is searched by its new text only, also when it came from the child.
    let (code, mut revised) = entries[6].clone();
    revised.name = "医保药品企业目录".into();
    let current = store.get_entry(&code).await.expect("get").expect("exists");
    let mut next = current.clone();
    next.version += 1;
    next.content = revised.clone();
    store
        .save_entry_version(&next, &change(EntryAction::Update, &a, t(5)))
        .await
        .expect("save");
    entries[6].1 = revised.clone();
    assert_eq!(find(&*store, "企业").await, expected_search(&entries, "企业"));
    assert!(find(&*store, "企业").await.contains(&code));
    let mut update = child_change(count + 1, "330110", &code, &revised.name, EntryState::Withdrawn);
    update.entry.entry.content = revised;
    assert_eq!(
        store
            .apply_catalogue_changes("330110", count, &[update], count + 1)
            .await,
        Ok(1)
    );
    let everyone = EntryVisibility::PublishedOrOwnedBy(String::new());
    assert!(
        !federated_codes(&*store, &everyone, "医保药品")
            .await
            .iter()
            .any(|c| c.ends_with(&code)),
        "withdrawn: only the admin sees it"
    );
    assert_eq!(
        federated_codes(&*store, &EntryVisibility::All, "医保药品").await,
        [format!("330110:{code}")]
    );
    assert!(
        federated_codes(&*store, &EntryVisibility::All, "医保目录")
            .await
            .is_empty()
    );
}

async fn search_ranks_names_first_and_pages_across_tiers(store: Arc<dyn Store>) {
    let a = register(&*store, 1).await;
    let b = register(&*store, 2).await;
    let mut entries = Vec::new();
    // Nine entries holding 社保 in the name, the summary or an item, created out of code order.
    for (i, (classification, name, summary, items)) in [
        ("102", "养老社保", "参保", vec!["编号"]),
        ("101", "失业保险", "社保的一种", vec!["编号"]),
        ("103", "工伤保险", "工伤", vec!["社保编号"]),
        ("101", "社保卡", "卡片", vec!["卡号"]),
        ("102", "医疗保险", "医疗社保", vec!["编号"]),
        ("103", "社保基金", "基金", vec!["编号"]),
        ("101", "生育保险", "生育", vec!["社保类别"]),
        ("102", "就业登记", "就业", vec!["编号"]),
        ("103", "社保 社保", "两次", vec!["社保"]),
    ]
    .into_iter()
    .enumerate()
    {
        let c = searchable_content(classification, &(name, summary, items));
        let provider = if i % 2 == 0 { &a } else { &b };
        let e = create(&*store, provider, &c).await;
        entries.push((e.resource_code, c));
    }
    let expected = expected_search(&entries, "社保");
    assert_eq!(expected.len(), 8);
    assert_eq!(find(&*store, "社保").await, expected);
    // The name tier comes first.
    let tiers: Vec<u8> = expected
        .iter()
        .map(|code| {
            let c = &entries.iter().find(|(k, _)| k == code).expect("entry").1;
            search_rules::relevance_tier(&c.search_text().to_lowercase(), "社保").expect("holds it")
        })
        .collect();
    assert_eq!(tiers, [0, 0, 0, 0, 1, 1, 1, 1]);

    // Paged by (tier, code) positions: every page size gives the whole list once, in order.
    let filter = EntryFilter {
        keyword: "社保".into(),
        ..EntryFilter::default()
    };
    for size in 1..=4 {
        let mut paged = Vec::new();
        let mut after: Option<SearchPosition> = None;
        loop {
            let page = store
                .search_entries(&EntryVisibility::All, &filter, after.as_ref(), size)
                .await
                .expect("page");
            assert!(page.len() <= size as usize);
            let Some(last) = page.last() else { break };
            after = Some(SearchPosition::of_entry("", last, "社保"));
            paged.extend(page.into_iter().map(|e| e.resource_code));
        }
        assert_eq!(paged, expected, "pages of {size}");
    }

    // Filters and visibility compose with the keyword and the ranking.
    let of_b = EntryFilter {
        keyword: "社保".into(),
        provider_code: b.clone(),
        ..EntryFilter::default()
    };
    let from_b: Vec<String> = entries
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 2 == 1)
        .map(|(_, (code, _))| code.clone())
        .collect();
    let expected_b: Vec<String> = expected.iter().filter(|c| from_b.contains(c)).cloned().collect();
    assert_eq!(search(&*store, &EntryVisibility::All, &of_b).await, expected_b);
    let classified = EntryFilter {
        keyword: "社保".into(),
        classification_prefix: "10".into(),
        state: Some(EntryState::Draft),
        ..EntryFilter::default()
    };
    assert_eq!(search(&*store, &EntryVisibility::All, &classified).await, expected);
    // Department b sees its own drafts, not a's.
    assert_eq!(
        search(&*store, &EntryVisibility::PublishedOrOwnedBy(b.clone()), &filter).await,
        expected_b
    );
    // Published, an entry of a is seen by b too; a new name moves it to the first tier.
    let moved = &expected[expected.len() - 1];
    let current = store.get_entry(moved).await.expect("get").expect("exists");
    let mut renamed = publish(&*store, &current).await;
    renamed.version += 1;
    renamed.content.name = format!("社保{}", renamed.content.name);
    let renamed = store
        .save_entry_version(&renamed, &change(EntryAction::Update, &a, t(9)))
        .await
        .expect("rename");
    let index = entries.iter().position(|(c, _)| c == moved).expect("entry");
    entries[index].1 = renamed.content.clone();
    let now_expected = expected_search(&entries, "社保");
    assert_ne!(now_expected, expected);
    assert_eq!(find(&*store, "社保").await, now_expected);
    let seen_by_b = search(&*store, &EntryVisibility::PublishedOrOwnedBy(b.clone()), &filter).await;
    assert!(seen_by_b.contains(moved));
    // Withdrawn, it is no longer seen by b.
    save_as(&*store, &renamed, EntryState::Withdrawn, EntryAction::Withdraw).await;
    let seen_by_b = search(&*store, &EntryVisibility::PublishedOrOwnedBy(b), &filter).await;
    assert!(!seen_by_b.contains(moved));
}

/// A keyword held by more entries than the store reads as candidates (it then reads each tier in
/// code order) gives the same ranking and pages, own and aggregated.
async fn a_common_keyword_is_ranked_and_paged_the_same(store: Arc<dyn Store>) {
    let a = register(&*store, 1).await;
    let mut entries = Vec::new();
    let mut changes = Vec::new();
    for i in 0..1_300_u64 {
        // One in five holds 登记 in its name, the rest in the summary or an item only; one in
        // ten not at all.
        let name = if i % 5 == 0 {
            format!("企业登记{i}")
        } else {
            format!("企业年报{i}")
        };
        let summary = if i % 10 == 3 {
            "年度报告".to_string()
        } else {
            format!("含登记日期的第{i}号目录")
        };
        let c = searchable_content(if i % 2 == 0 { "102" } else { "101" }, &(&name, &summary, vec!["编号"]));
        let c = EntryContent { name, summary, ..c };
        let e = create(&*store, &a, &c).await;
        let mut change = child_change(i + 1, "330110", &e.resource_code, &c.name, EntryState::Published);
        change.entry.entry.content = c.clone();
        changes.push(change);
        entries.push((e.resource_code, c));
    }
    store
        .add_peer(&peer_hub("330110", Relation::Child))
        .await
        .expect("add the county");
    assert_eq!(
        store.apply_catalogue_changes("330110", 0, &changes, 1_300).await,
        Ok(1_300)
    );
    // Common in names and text; in no name; in names only; in every name.
    for keyword in ["日期", "年报", "企业", "号目录"] {
        let expected = expected_search(&entries, keyword);
        assert!(
            expected.len() > 900,
            "{keyword:?}: more than the candidates read at once"
        );
        // find() reads one page of 1000.
        assert!(find(&*store, keyword).await == expected[..1_000], "{keyword:?}");
    }
    let expected = expected_search(&entries, "登记");
    assert!(expected.len() > 1_000, "more than the candidates read at once");
    assert!(find(&*store, "登记").await == expected[..1_000]);
    assert_eq!(
        federated_codes(&*store, &EntryVisibility::All, "登记").await.len(),
        100.min(expected.len())
    );
    let filter = EntryFilter {
        keyword: "登记".into(),
        ..EntryFilter::default()
    };
    let mut paged = Vec::new();
    let mut after: Option<SearchPosition> = None;
    loop {
        let page = store
            .search_entries(&EntryVisibility::All, &filter, after.as_ref(), 97)
            .await
            .expect("page");
        let Some(last) = page.last() else { break };
        after = Some(SearchPosition::of_entry("", last, "登记"));
        paged.extend(page.into_iter().map(|e| e.resource_code));
    }
    assert!(paged == expected, "own, in pages");
    let mut paged = Vec::new();
    let mut after: Option<SearchPosition> = None;
    loop {
        let page = store
            .search_federated_entries(&EntryVisibility::All, &filter, after.as_ref(), 101)
            .await
            .expect("page");
        let Some(last) = page.last() else { break };
        after = Some(SearchPosition::of_entry(&last.origin_hub, &last.entry, "登记"));
        paged.extend(page.into_iter().map(|e| e.entry.resource_code));
    }
    assert!(paged == expected, "aggregated, in pages");
}

/// Migration 0012 indexes the entries that were there before it, own and aggregated.
async fn the_search_index_is_built_for_entries_that_existed_before(t: Tampering) {
    let store = t.store.clone();
    let a = register(store.as_ref(), 1).await;
    let mut entries = Vec::new();
    for texts in search_corpus() {
        let c = searchable_content("102", &texts);
        let e = create(store.as_ref(), &a, &c).await;
        entries.push((e.resource_code, c));
    }
    // As if the database were from before migration 12: no index.
    match &t.database {
        RawDatabase::Sqlite { .. } => {
            t.execute(&[
                "DELETE FROM catalog_search_terms",
                "DELETE FROM catalog_search_name_terms",
                "DELETE FROM catalog_search_docs",
                "DELETE FROM _sqlx_migrations WHERE version = 12",
            ])
            .await;
            // The search reads the index: without it, a keyword finds nothing.
            assert!(find(store.as_ref(), "企业").await.is_empty());
        }
        RawDatabase::Postgres { .. } => {
            t.execute(&[
                "DROP INDEX catalog_entries_search_terms",
                "DROP INDEX catalogue_feed_search_terms",
                "DROP INDEX catalog_entries_search_name_terms",
                "DROP INDEX catalogue_feed_search_name_terms",
                "DROP INDEX catalogue_feed_state",
                "DROP FUNCTION xinqiao_search_terms",
                "DELETE FROM _sqlx_migrations WHERE version = 12",
            ])
            .await;
        }
    }
    store.apply_migrations().await.expect("apply migration 12");
    for keyword in ["企", "企业", "社保", "信用代码", "gdp", "%", "\"", "姓名"] {
        assert_eq!(
            find(store.as_ref(), keyword).await,
            expected_search(&entries, keyword),
            "{keyword:?}"
        );
    }
    // And entries written afterwards join it.
    let c = searchable_content("101", &("新建的企业目录", "新", vec!["编号"]));
    let e = create(store.as_ref(), &a, &c).await;
    entries.push((e.resource_code, c));
    assert_eq!(find(store.as_ref(), "企业").await, expected_search(&entries, "企业"));
}

// ---------------------------------------------------------------------------------------------
// The schema registry

/// A small JSON Schema document; `title` makes each one distinct.
fn doc(title: &str) -> String {
    format!(r#"{{"type":"object","title":"{title}","properties":{{"名称":{{"type":"string"}}}}}}"#)
}

fn fingerprint_of(content: &str) -> String {
    let value: serde_json::Value = serde_json::from_str(content).expect("schema JSON");
    xinqiao_domain::fingerprint::fingerprint(&value)
}

fn sref(subject: &str, version: u32) -> SchemaRef {
    SchemaRef {
        subject: subject.into(),
        version,
    }
}

/// Registers `content` as the version after `after_version` of `subject`.
async fn try_register_schema(
    store: &dyn Store,
    subject: &str,
    content: &str,
    after_version: u32,
    references: &[SchemaRef],
    registered_by: &str,
) -> xinqiao_domain::Result<Registration> {
    let fingerprint = fingerprint_of(content);
    store
        .register_schema(&NewSchema {
            subject,
            content,
            fingerprint: &fingerprint,
            references,
            registered_by,
            at: t(100) + Duration::nanoseconds(1_234_567),
            after_version,
        })
        .await
}

/// Registers a new version and expects it to be created.
async fn add_version(store: &dyn Store, subject: &str, content: &str, after_version: u32) -> RegisteredSchema {
    add_version_with(store, subject, content, after_version, &[]).await
}

async fn add_version_with(
    store: &dyn Store,
    subject: &str,
    content: &str,
    after_version: u32,
    references: &[SchemaRef],
) -> RegisteredSchema {
    match try_register_schema(store, subject, content, after_version, references, "admin:ops").await {
        Ok(Registration::Created(schema)) => schema,
        other => panic!("expected a new version of {subject}, got {other:?}"),
    }
}

async fn versions(store: &dyn Store, subject: &str, include_deleted: bool) -> Vec<u32> {
    let found = store
        .list_schema_versions(subject, include_deleted)
        .await
        .expect("list versions");
    found.into_iter().map(|s| s.version).collect()
}

async fn soft_delete(store: &dyn Store, subject: &str, version: u32) -> RegisteredSchema {
    store
        .set_schema_deleted(subject, version, true)
        .await
        .expect("soft delete")
}

fn mode(text: &str) -> CompatibilityMode {
    CompatibilityMode::parse(text).expect("a compatibility mode")
}

fn binding(resource_code: &str, subject: &str, version: u32, at: DateTime<Utc>) -> EntrySchemaBinding {
    EntrySchemaBinding {
        resource_code: resource_code.into(),
        schema: sref(subject, version),
        bound_by: "admin:ops".into(),
        at,
    }
}

fn assert_failed_precondition(result: xinqiao_domain::Result<()>, naming: &str) {
    match result {
        Err(Error::FailedPrecondition(message)) => {
            assert!(message.contains(naming), "{message:?} should name {naming}")
        }
        other => panic!("expected FAILED_PRECONDITION naming {naming}, got {other:?}"),
    }
}

async fn schema_versions_are_numbered_from_one(store: Arc<dyn Store>) {
    let owner = dept_code(1);
    let first = doc("法人 v1");
    let created = match try_register_schema(&*store, "legal-entity", &first, 0, &[], &owner).await {
        Ok(Registration::Created(schema)) => schema,
        other => panic!("expected version 1, got {other:?}"),
    };
    assert_eq!(
        created,
        RegisteredSchema {
            subject: "legal-entity".into(),
            version: 1,
            content: first.clone(),
            fingerprint: fingerprint_of(&first),
            references: vec![],
            registered_by: owner.clone(),
            deleted: false,
            // Kept to the microsecond.
            created_at: t(100) + Duration::microseconds(1_234),
        }
    );
    assert_eq!(
        store.get_schema("legal-entity", 1).await.expect("get"),
        Some(created.clone())
    );

    // Later versions may come from someone else (the hub checks who); the owner stays.
    let second = add_version(&*store, "legal-entity", &doc("法人 v2"), 1).await;
    let third = add_version(&*store, "legal-entity", &doc("法人 v3"), 2).await;
    assert_eq!((second.version, third.version), (2, 3));
    assert_eq!(third.registered_by, "admin:ops");
    assert_eq!(third.content, doc("法人 v3"), "content is kept as given");

    assert_eq!(
        store.latest_schema("legal-entity").await.expect("latest"),
        Some(third.clone())
    );
    assert_eq!(
        store.list_schema_versions("legal-entity", false).await.expect("list"),
        [created, second.clone(), third]
    );
    assert_eq!(store.get_schema("legal-entity", 2).await.expect("get"), Some(second));
    assert_eq!(
        store.get_subject("legal-entity").await.expect("subject"),
        Some(Subject {
            name: "legal-entity".into(),
            owner,
            compatibility: None,
            latest_version: Some(3),
            version_count: 3,
        })
    );

    assert_eq!(store.get_schema("legal-entity", 4).await.expect("get"), None);
    assert_eq!(store.get_schema("unknown", 1).await.expect("get"), None);
    assert_eq!(store.latest_schema("unknown").await.expect("latest"), None);
    assert_eq!(store.get_subject("unknown").await.expect("subject"), None);
    assert!(versions(&*store, "unknown", true).await.is_empty());
}

async fn identical_content_registers_once(store: Arc<dyn Store>) {
    let v1 = add_version(&*store, "identifiers", &doc("一"), 0).await;
    let v2 = add_version(&*store, "identifiers", &doc("二"), 1).await;

    // The same fingerprint returns the live version, whatever the caller checked against.
    for after_version in [2, 0, 1, 7] {
        let again = try_register_schema(&*store, "identifiers", &doc("一"), after_version, &[], &dept_code(2))
            .await
            .expect("register again");
        assert_eq!(again, Registration::Existing(v1.clone()), "after {after_version}");
    }
    let again = try_register_schema(&*store, "identifiers", &doc("二"), 2, &[], "admin:ops")
        .await
        .expect("register again");
    assert_eq!(again, Registration::Existing(v2));
    assert_eq!(versions(&*store, "identifiers", true).await, [1, 2]);

    // Fingerprints are per subject.
    let elsewhere = add_version(&*store, "other", &doc("一"), 0).await;
    assert_eq!(elsewhere.version, 1);

    // A deleted version does not count: the same content becomes a new version.
    soft_delete(&*store, "identifiers", 1).await;
    let v3 = add_version(&*store, "identifiers", &doc("一"), 2).await;
    assert_eq!(v3.version, 3);
    assert_eq!(v3.fingerprint, v1.fingerprint);
}

async fn a_stale_after_version_is_aborted(store: Arc<dyn Store>) {
    add_version(&*store, "legal-entity", &doc("一"), 0).await;
    add_version(&*store, "legal-entity", &doc("二"), 1).await;
    for after_version in [0, 1, 3] {
        let err = try_register_schema(&*store, "legal-entity", &doc("三"), after_version, &[], "admin:ops")
            .await
            .expect_err("stale");
        match err {
            Error::Aborted(message) => assert!(message.contains("legal-entity"), "{message}"),
            other => panic!("expected ABORTED, got {other:?}"),
        }
    }
    assert_eq!(versions(&*store, "legal-entity", true).await, [1, 2]);

    // A new subject is registered after version 0 only.
    let err = try_register_schema(&*store, "fresh", &doc("一"), 1, &[], "admin:ops")
        .await
        .expect_err("no version 1 yet");
    assert!(matches!(err, Error::Aborted(_)), "{err:?}");
    assert_eq!(store.get_subject("fresh").await.expect("subject"), None);
}

async fn concurrent_registrations_let_one_win(store: Arc<dyn Store>) {
    add_version(&*store, "legal-entity", &doc("一"), 0).await;

    let race = |subject: &'static str, after_version: u32| {
        let tasks: Vec<_> = (0..10)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move {
                    let registrant = dept_code(i + 1);
                    let content = doc(&format!("第{i}个"));
                    let result = try_register_schema(&*store, subject, &content, after_version, &[], &registrant).await;
                    (registrant, result)
                })
            })
            .collect::<Vec<_>>();
        async move {
            let mut winners = Vec::new();
            for task in tasks {
                match task.await.expect("task") {
                    (registrant, Ok(Registration::Created(schema))) => winners.push((registrant, schema)),
                    (_, Err(Error::Aborted(_))) => {}
                    (_, other) => panic!("expected ABORTED for the losers, got {other:?}"),
                }
            }
            assert_eq!(
                winners.len(),
                1,
                "exactly one concurrent registration of {subject} wins"
            );
            winners.remove(0)
        }
    };

    let (_, won) = race("legal-entity", 1).await;
    assert_eq!(won.version, 2);
    assert_eq!(versions(&*store, "legal-entity", true).await, [1, 2]);
    assert_eq!(store.latest_schema("legal-entity").await.expect("latest"), Some(won));

    // The first version of a new subject: one creator, and it owns the subject.
    let (registrant, won) = race("fresh", 0).await;
    assert_eq!(won.version, 1);
    assert_eq!(versions(&*store, "fresh", true).await, [1]);
    let subject = store.get_subject("fresh").await.expect("subject").expect("created");
    assert_eq!(subject.owner, registrant);
    assert_eq!(subject.version_count, 1);
}

async fn references_must_name_live_versions(store: Arc<dyn Store>) {
    add_version(&*store, "identifiers", &doc("一"), 0).await;
    add_version(&*store, "identifiers", &doc("二"), 1).await;
    add_version(&*store, "address", &doc("地址"), 0).await;

    // References are kept in the order given.
    let refs = [sref("identifiers", 2), sref("address", 1), sref("identifiers", 1)];
    let with_refs = add_version_with(&*store, "legal-entity", &doc("法人"), 0, &refs).await;
    assert_eq!(with_refs.references, refs);
    assert_eq!(
        store.get_schema("legal-entity", 1).await.expect("get"),
        Some(with_refs.clone())
    );
    assert_eq!(
        store.latest_schema("legal-entity").await.expect("latest"),
        Some(with_refs.clone())
    );
    assert_eq!(
        store.list_schema_versions("legal-entity", true).await.expect("list"),
        [with_refs]
    );
    // A reference within the subject itself.
    let own = add_version_with(&*store, "legal-entity", &doc("法人二"), 1, &[sref("legal-entity", 1)]).await;
    assert_eq!(own.references, [sref("legal-entity", 1)]);

    soft_delete(&*store, "identifiers", 1).await;
    for (missing, named) in [
        (sref("identifiers", 9), "identifiers version 9"),
        (sref("nowhere", 1), "nowhere version 1"),
        (sref("identifiers", 1), "identifiers version 1"),
    ] {
        let err = try_register_schema(
            &*store,
            "person",
            &doc("人"),
            0,
            &[sref("address", 1), missing],
            "admin:ops",
        )
        .await
        .expect_err("missing reference");
        match err {
            Error::NotFound(message) => assert!(message.contains(named), "{message:?} should name {named}"),
            other => panic!("expected NOT_FOUND, got {other:?}"),
        }
    }
    assert_eq!(store.get_subject("person").await.expect("subject"), None);
    let err = try_register_schema(
        &*store,
        "legal-entity",
        &doc("法人三"),
        2,
        &[sref("identifiers", 1)],
        "x",
    )
    .await
    .expect_err("deleted reference");
    assert!(matches!(err, Error::NotFound(_)), "{err:?}");
    assert_eq!(versions(&*store, "legal-entity", true).await, [1, 2]);

    // Versions that were referenced keep their references when they are deleted themselves.
    let deleted = soft_delete(&*store, "legal-entity", 1).await;
    assert_eq!(deleted.references, refs);
}

async fn soft_deleted_versions_are_hidden(store: Arc<dyn Store>) {
    let v1 = add_version(&*store, "legal-entity", &doc("一"), 0).await;
    let v2 = add_version(&*store, "legal-entity", &doc("二"), 1).await;
    let v3 = add_version(&*store, "legal-entity", &doc("三"), 2).await;

    let deleted = soft_delete(&*store, "legal-entity", 3).await;
    assert_eq!(
        deleted,
        RegisteredSchema {
            deleted: true,
            ..v3.clone()
        }
    );
    assert_eq!(
        store.get_schema("legal-entity", 3).await.expect("get"),
        Some(deleted.clone()),
        "still readable, marked deleted"
    );
    assert_eq!(
        store.latest_schema("legal-entity").await.expect("latest"),
        Some(v2.clone())
    );
    assert_eq!(
        store.list_schema_versions("legal-entity", false).await.expect("list"),
        [v1.clone(), v2.clone()]
    );
    assert_eq!(
        store.list_schema_versions("legal-entity", true).await.expect("list"),
        [v1, v2, deleted]
    );
    let subject = store.get_subject("legal-entity").await.expect("get").expect("subject");
    assert_eq!((subject.latest_version, subject.version_count), (Some(2), 2));

    // A middle version: latest does not move.
    soft_delete(&*store, "legal-entity", 1).await;
    assert_eq!(versions(&*store, "legal-entity", false).await, [2]);
    assert_eq!(
        store
            .latest_schema("legal-entity")
            .await
            .expect("latest")
            .map(|s| s.version),
        Some(2)
    );

    // Every version deleted: no latest, and left out of listings unless asked for.
    soft_delete(&*store, "legal-entity", 2).await;
    assert_eq!(store.latest_schema("legal-entity").await.expect("latest"), None);
    assert!(versions(&*store, "legal-entity", false).await.is_empty());
    assert!(store.list_subjects(None, 10, false).await.expect("list").is_empty());
    let listed = store.list_subjects(None, 10, true).await.expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (listed[0].latest_version, listed[0].version_count),
        (None, 3),
        "with include_deleted every version is counted"
    );
    let subject = store
        .get_subject("legal-entity")
        .await
        .expect("get")
        .expect("still there");
    assert_eq!((subject.latest_version, subject.version_count), (None, 0));

    // Undeleting brings a version back; a registration still counts deleted versions.
    let back = store
        .set_schema_deleted("legal-entity", 2, false)
        .await
        .expect("undelete");
    assert!(!back.deleted);
    assert_eq!(
        store
            .latest_schema("legal-entity")
            .await
            .expect("latest")
            .map(|s| s.version),
        Some(2)
    );
    let err = try_register_schema(&*store, "legal-entity", &doc("四"), 2, &[], "admin:ops")
        .await
        .expect_err("version 3 exists, deleted");
    assert!(matches!(err, Error::Aborted(_)), "{err:?}");
    assert_eq!(add_version(&*store, "legal-entity", &doc("四"), 3).await.version, 4);

    for (subject, version) in [("legal-entity", 9), ("unknown", 1)] {
        let err = store
            .set_schema_deleted(subject, version, true)
            .await
            .expect_err("unknown version");
        assert!(matches!(err, Error::NotFound(_)), "{err:?}");
    }
}

async fn permanent_deletion_needs_a_soft_delete_and_no_users(store: Arc<dyn Store>) {
    let provider = register(&*store, 1).await;
    let entry = create(&*store, &provider, &content("102", "企业登记信息")).await;
    let code = entry.resource_code.as_str();

    add_version(&*store, "identifiers", &doc("一"), 0).await;
    add_version(&*store, "identifiers", &doc("二"), 1).await;
    add_version_with(&*store, "legal-entity", &doc("法人"), 0, &[sref("identifiers", 1)]).await;
    store
        .bind_entry_schema(&binding(code, "identifiers", 2, t(200)))
        .await
        .expect("bind");

    // Live versions are soft-deleted first.
    let refused = store.delete_schema_permanently("identifiers", 2).await;
    assert_failed_precondition(refused, "identifiers version 2");
    let err = store
        .delete_schema_permanently("identifiers", 9)
        .await
        .expect_err("unknown");
    assert!(matches!(err, Error::NotFound(_)), "{err:?}");

    // While an entry is bound to it.
    soft_delete(&*store, "identifiers", 2).await;
    let refused = store.delete_schema_permanently("identifiers", 2).await;
    assert_failed_precondition(refused, code);
    assert!(store.get_schema("identifiers", 2).await.expect("get").is_some());

    // Binding the entry to another version frees it.
    store
        .bind_entry_schema(&binding(code, "identifiers", 1, t(201)))
        .await
        .expect("rebind");
    store
        .delete_schema_permanently("identifiers", 2)
        .await
        .expect("delete for good");
    assert_eq!(store.get_schema("identifiers", 2).await.expect("get"), None);
    assert_eq!(versions(&*store, "identifiers", true).await, [1]);

    // While another schema references it (and an entry is bound: the entry is named first).
    soft_delete(&*store, "identifiers", 1).await;
    let refused = store.delete_schema_permanently("identifiers", 1).await;
    assert_failed_precondition(refused, code);
    // Version 2 is gone for good; its number is not given out again.
    let v3 = add_version(&*store, "identifiers", &doc("三"), 1).await;
    assert_eq!(v3.version, 3);
    store
        .bind_entry_schema(&binding(code, "identifiers", 3, t(202)))
        .await
        .expect("rebind");
    let refused = store.delete_schema_permanently("identifiers", 1).await;
    assert_failed_precondition(refused, "legal-entity version 1");

    // A referencing version that is deleted for good takes its references with it.
    soft_delete(&*store, "legal-entity", 1).await;
    store
        .delete_schema_permanently("legal-entity", 1)
        .await
        .expect("delete the referrer");
    store
        .delete_schema_permanently("identifiers", 1)
        .await
        .expect("delete, now unused");
    assert_eq!(versions(&*store, "identifiers", true).await, [3]);
    assert!(versions(&*store, "legal-entity", true).await.is_empty());
    let err = store
        .delete_schema_permanently("identifiers", 1)
        .await
        .expect_err("already gone");
    assert!(matches!(err, Error::NotFound(_)), "{err:?}");
}

async fn version_numbers_are_never_reused(store: Arc<dyn Store>) {
    let owner = dept_code(1);
    let first = try_register_schema(&*store, "legal-entity", &doc("一"), 0, &[], &owner)
        .await
        .expect("register");
    assert!(matches!(first, Registration::Created(_)), "{first:?}");
    add_version(&*store, "legal-entity", &doc("二"), 1).await;
    add_version(&*store, "legal-entity", &doc("三"), 2).await;

    // The highest version, deleted for good: the next one is 4, checked against version 2, the
    // highest that is left.
    soft_delete(&*store, "legal-entity", 3).await;
    store
        .delete_schema_permanently("legal-entity", 3)
        .await
        .expect("delete 3");
    let err = try_register_schema(&*store, "legal-entity", &doc("四"), 3, &[], "admin:ops")
        .await
        .expect_err("version 3 is gone");
    assert!(matches!(err, Error::Aborted(_)), "{err:?}");
    let v4 = add_version(&*store, "legal-entity", &doc("四"), 2).await;
    assert_eq!(v4.version, 4);
    // The content of a version deleted for good may come back, under a new number.
    let v5 = add_version(&*store, "legal-entity", &doc("三"), 4).await;
    assert_eq!(v5.version, 5);

    // Every version deleted for good: the subject stays, with its owner, and counts on.
    for version in [1, 2, 4, 5] {
        soft_delete(&*store, "legal-entity", version).await;
        store
            .delete_schema_permanently("legal-entity", version)
            .await
            .expect("delete");
    }
    let subject = store.get_subject("legal-entity").await.expect("get").expect("kept");
    assert_eq!(
        (subject.owner.as_str(), subject.latest_version, subject.version_count),
        (owner.as_str(), None, 0)
    );
    let v6 = add_version(&*store, "legal-entity", &doc("一"), 0).await;
    assert_eq!(v6.version, 6);
    let subject = store.get_subject("legal-entity").await.expect("get").expect("kept");
    assert_eq!(subject.owner, owner, "the owner does not change");
    assert_eq!((subject.latest_version, subject.version_count), (Some(6), 1));
}

async fn compatibility_defaults_and_subject_modes(store: Arc<dyn Store>) {
    let default = store.default_compatibility().await.expect("default");
    assert_eq!(default, mode("BACKWARD"));
    assert_eq!(default.as_str(), "BACKWARD");

    for text in [
        "FULL_TRANSITIVE",
        "NONE",
        "FORWARD",
        "FULL",
        "BACKWARD_TRANSITIVE",
        "FORWARD_TRANSITIVE",
        "BACKWARD",
        "FULL",
    ] {
        store.set_default_compatibility(mode(text)).await.expect("set default");
        assert_eq!(store.default_compatibility().await.expect("default"), mode(text));
    }

    let err = store
        .set_subject_compatibility("unknown", Some(mode("NONE")))
        .await
        .expect_err("unknown subject");
    assert!(matches!(err, Error::NotFound(_)), "{err:?}");

    add_version(&*store, "legal-entity", &doc("一"), 0).await;
    add_version(&*store, "legal-entity", &doc("二"), 1).await;
    let set = store
        .set_subject_compatibility("legal-entity", Some(mode("FORWARD_TRANSITIVE")))
        .await
        .expect("set");
    assert_eq!(
        set,
        Subject {
            name: "legal-entity".into(),
            owner: "admin:ops".into(),
            compatibility: Some(mode("FORWARD_TRANSITIVE")),
            latest_version: Some(2),
            version_count: 2,
        }
    );
    assert_eq!(store.get_subject("legal-entity").await.expect("get"), Some(set.clone()));
    let listed = store.list_subjects(None, 10, false).await.expect("list");
    assert_eq!(listed, std::slice::from_ref(&set));

    let none = store
        .set_subject_compatibility("legal-entity", Some(mode("NONE")))
        .await
        .expect("set");
    assert_eq!(none.compatibility, Some(mode("NONE")));

    let cleared = store
        .set_subject_compatibility("legal-entity", None)
        .await
        .expect("clear");
    assert_eq!(
        cleared,
        Subject {
            compatibility: None,
            ..set
        }
    );
    assert_eq!(store.get_subject("legal-entity").await.expect("get"), Some(cleared));
    // The subject's mode and the default are separate.
    assert_eq!(store.default_compatibility().await.expect("default"), mode("FULL"));
}

async fn subjects_are_listed_in_order_and_paged(store: Arc<dyn Store>) {
    // Registered out of order; byte order puts digits before letters and '-' before '.'.
    for name in ["c-x", "a", "b.2", "b-1", "0num", "d-gone"] {
        add_version(&*store, name, &doc(name), 0).await;
    }
    add_version(&*store, "b-1", &doc("b-1 二"), 1).await;
    add_version(&*store, "b-1", &doc("b-1 三"), 2).await;
    soft_delete(&*store, "b-1", 3).await;
    soft_delete(&*store, "d-gone", 1).await;

    let list = |after: Option<&'static str>, limit: u32, include_deleted: bool| {
        let store = store.clone();
        async move {
            let found = store
                .list_subjects(after, limit, include_deleted)
                .await
                .expect("list subjects");
            found.into_iter().map(|s| s.name).collect::<Vec<_>>()
        }
    };
    assert_eq!(list(None, 10, false).await, ["0num", "a", "b-1", "b.2", "c-x"]);
    assert_eq!(list(None, 10, true).await, ["0num", "a", "b-1", "b.2", "c-x", "d-gone"]);
    assert_eq!(list(None, 2, false).await, ["0num", "a"]);
    assert_eq!(list(Some("a"), 2, false).await, ["b-1", "b.2"]);
    assert_eq!(list(Some("b.2"), 2, false).await, ["c-x"]);
    assert!(list(Some("c-x"), 2, false).await.is_empty());
    assert_eq!(list(Some("c-x"), 2, true).await, ["d-gone"]);
    assert_eq!(list(Some("b"), 1, false).await, ["b-1"], "after need not be a subject");
    assert!(list(None, 0, true).await.is_empty());

    // Paging through everything, a page at a time.
    let mut paged = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = store.list_subjects(after.as_deref(), 2, true).await.expect("page");
        let Some(last) = page.last() else { break };
        after = Some(last.name.clone());
        paged.extend(page.into_iter().map(|s| s.name));
    }
    assert_eq!(paged, ["0num", "a", "b-1", "b.2", "c-x", "d-gone"]);

    // Counts: live versions, or every version with include_deleted.
    let live = store.list_subjects(Some("a"), 1, false).await.expect("list");
    assert_eq!((live[0].latest_version, live[0].version_count), (Some(2), 2));
    let all = store.list_subjects(Some("a"), 1, true).await.expect("list");
    assert_eq!((all[0].latest_version, all[0].version_count), (Some(2), 3));
}

async fn entries_are_bound_to_live_schema_versions(store: Arc<dyn Store>) {
    let provider = register(&*store, 1).await;
    let entry = create(&*store, &provider, &content("102", "企业登记信息")).await;
    let code = entry.resource_code.as_str();
    add_version(&*store, "legal-entity", &doc("一"), 0).await;
    add_version(&*store, "legal-entity", &doc("二"), 1).await;
    add_version(&*store, "legal-entity", &doc("三"), 2).await;
    soft_delete(&*store, "legal-entity", 3).await;

    assert_eq!(store.entry_schema(code).await.expect("binding"), None);
    let first = EntrySchemaBinding {
        bound_by: provider.clone(),
        ..binding(code, "legal-entity", 1, t(300) + Duration::nanoseconds(5_555))
    };
    store.bind_entry_schema(&first).await.expect("bind");
    assert_eq!(
        store.entry_schema(code).await.expect("binding"),
        Some(EntrySchemaBinding {
            at: t(300) + Duration::microseconds(5),
            ..first
        })
    );

    // A new binding replaces the old one.
    let second = binding(code, "legal-entity", 2, t(301));
    store.bind_entry_schema(&second).await.expect("rebind");
    assert_eq!(store.entry_schema(code).await.expect("binding"), Some(second.clone()));

    for (bad, what) in [
        (binding("102/999999", "legal-entity", 1, t(302)), "an unknown entry"),
        (binding(code, "legal-entity", 9, t(302)), "an unknown version"),
        (binding(code, "unknown", 1, t(302)), "an unknown subject"),
        (binding(code, "legal-entity", 3, t(302)), "a deleted version"),
    ] {
        let err = store.bind_entry_schema(&bad).await.expect_err(what);
        assert!(matches!(err, Error::NotFound(_)), "{what}: {err:?}");
    }
    assert_eq!(store.entry_schema(code).await.expect("binding"), Some(second));
    assert_eq!(store.entry_schema("102/999999").await.expect("binding"), None);

    // A bound version may still be soft-deleted: readers that pinned it keep reading it.
    soft_delete(&*store, "legal-entity", 2).await;
    assert_eq!(
        store.entry_schema(code).await.expect("binding").map(|b| b.schema),
        Some(sref("legal-entity", 2))
    );
}

// ---------------------------------------------------------------------------------------------
// The exchange

/// A published entry of `provider`, named `name`, with a dataset of `kind` (table datasets follow
/// `legal-entity` version 1 and are keyed by `uscc`).
async fn open_dataset(store: &dyn Store, provider: &str, name: &str, kind: DatasetKind) -> Dataset {
    let mut entry_content = content("102", name);
    entry_content.share.exchange_kind = match kind {
        DatasetKind::Table => ExchangeKind::Table,
        DatasetKind::File => ExchangeKind::File,
    };
    let entry = publish(store, &create(store, provider, &entry_content).await).await;
    store
        .create_dataset(&new_dataset(&entry, kind))
        .await
        .expect("create dataset")
}

fn new_dataset(entry: &CatalogEntry, kind: DatasetKind) -> Dataset {
    let table = kind == DatasetKind::Table;
    Dataset {
        id: entry.resource_code.clone(),
        provider_code: entry.provider_code.clone(),
        kind,
        schema: table.then(|| sref("legal-entity", 1)),
        key: if table { vec!["uscc".into()] } else { vec![] },
        record_count: 0,
        last_sequence: 0,
        last_published_at: None,
        created_at: t(10),
    }
}

fn key(k: &str) -> String {
    serde_json::json!([k]).to_string()
}

fn upsert(k: &str, version: &str) -> NewChange {
    NewChange {
        op: ChangeOp::Upsert,
        key: key(k),
        record: Some(serde_json::json!({"uscc": k, "v": version}).to_string()),
    }
}

fn delete(k: &str) -> NewChange {
    NewChange {
        op: ChangeOp::Delete,
        key: key(k),
        record: None,
    }
}

async fn try_publish(
    store: &dyn Store,
    dataset: &str,
    idempotency_key: &str,
    changes: &[NewChange],
    at: DateTime<Utc>,
) -> xinqiao_domain::Result<BatchResult> {
    store
        .publish_batch(&NewBatch {
            dataset,
            idempotency_key,
            changes,
            rejected: "[]",
            at,
            audit: None,
        })
        .await
}

async fn publish_changes(
    store: &dyn Store,
    dataset: &str,
    idempotency_key: &str,
    changes: &[NewChange],
) -> BatchResult {
    try_publish(store, dataset, idempotency_key, changes, t(100))
        .await
        .expect("publish batch")
}

fn committed(accepted: u32, first_sequence: u64, last_sequence: u64) -> BatchResult {
    BatchResult {
        accepted,
        rejected: "[]".into(),
        first_sequence,
        last_sequence,
        replayed: false,
    }
}

/// Every change after `after`, read in pages.
async fn all_changes(store: &dyn Store, dataset: &str) -> Vec<StoredChange> {
    let mut changes = Vec::new();
    loop {
        let after = changes.last().map_or(0, |c: &StoredChange| c.sequence);
        let (page, _) = store.fetch_changes(dataset, after, 100).await.expect("fetch");
        if page.is_empty() {
            return changes;
        }
        changes.extend(page);
    }
}

/// The whole snapshot as of `as_of`, read in pages of `page`: (key, sequence, record).
async fn snapshot(store: &dyn Store, dataset: &str, as_of: u64, page: u32) -> Vec<(String, u64, String)> {
    let mut rows: Vec<(String, u64, String)> = Vec::new();
    loop {
        let after = rows.last().map(|r| r.0.clone());
        let found = store
            .snapshot_page(dataset, as_of, after.as_deref(), page)
            .await
            .expect("snapshot page");
        assert!(found.len() <= page as usize);
        let done = found.len() < page as usize;
        rows.extend(found.into_iter().map(|c| {
            assert_eq!(c.op, ChangeOp::Upsert);
            let record = c.record.expect("an upsert has a record");
            (
                c.key,
                c.sequence,
                String::from_utf8(record).expect("the record as published"),
            )
        }));
        if done {
            return rows;
        }
    }
}

/// The keys present after the log's changes: what the record count must say.
fn present_keys(changes: &[StoredChange]) -> BTreeSet<String> {
    let mut present = BTreeSet::new();
    for change in changes {
        match change.op {
            ChangeOp::Upsert => present.insert(change.key.clone()),
            ChangeOp::Delete => present.remove(&change.key),
        };
    }
    present
}

async fn datasets_are_created_listed_and_filtered(store: Arc<dyn Store>) {
    let (one, two) = (register(&*store, 1).await, register(&*store, 2).await);
    let table = open_dataset(&*store, &one, "Enterprise 企业登记信息", DatasetKind::Table).await;
    let files = open_dataset(&*store, &one, "营业执照扫描件", DatasetKind::File).await;
    let mut conditional = content("102", "许可证 Permits");
    conditional.share.share_type = ShareType::Conditional;
    let permits = publish(&*store, &create(&*store, &two, &conditional).await).await;
    let permits = store
        .create_dataset(&new_dataset(&permits, DatasetKind::Table))
        .await
        .expect("create");
    // A dataset whose entry has since been withdrawn.
    let withdrawn = open_dataset(&*store, &two, "已下线", DatasetKind::Table).await;
    let entry = store.get_entry(&withdrawn.id).await.expect("get").expect("entry");
    save_as(&*store, &entry, EntryState::Withdrawn, EntryAction::Withdraw).await;

    // Stored as given, with nothing published yet.
    assert_eq!(
        table,
        new_dataset(
            &store.get_entry(&table.id).await.expect("get").expect("entry"),
            DatasetKind::Table
        )
    );
    assert_eq!((files.schema.clone(), files.key.clone()), (None, vec![]));
    assert_eq!(store.get_dataset(&table.id).await.expect("get"), Some(table.clone()));
    assert_eq!(store.get_dataset("102/999999").await.expect("get"), None);

    let err = store.create_dataset(&table).await.expect_err("twice");
    assert!(matches!(err, Error::AlreadyExists(_)), "{err:?}");
    let mut unknown = table.clone();
    unknown.id = "102/999999".into();
    let err = store.create_dataset(&unknown).await.expect_err("no entry");
    assert!(matches!(err, Error::NotFound(_)), "{err:?}");

    let list = |filter: DatasetFilter| {
        let store = store.clone();
        async move {
            let found = store.list_datasets(&filter, None, 100).await.expect("list");
            found.into_iter().map(|l| l.dataset.id).collect::<Vec<_>>()
        }
    };
    let ids = |datasets: &[&Dataset]| datasets.iter().map(|d| d.id.clone()).collect::<Vec<_>>();
    assert_eq!(
        list(DatasetFilter::default()).await,
        ids(&[&table, &files, &permits, &withdrawn])
    );

    let listed = store
        .list_datasets(&DatasetFilter::default(), None, 1)
        .await
        .expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].dataset, table);
    assert_eq!(listed[0].name, "Enterprise 企业登记信息");
    assert_eq!(listed[0].provider_name, "测试局1");
    assert_eq!(listed[0].share_type, ShareType::Unconditional);
    assert_eq!(listed[0].entry_state, EntryState::Published);

    // Keywords: a literal, case-insensitive substring of the name or the resource code.
    let keyword = |k: &str| DatasetFilter {
        keyword: k.into(),
        ..DatasetFilter::default()
    };
    assert_eq!(list(keyword("ENTERPRISE")).await, ids(&[&table]));
    assert_eq!(list(keyword("permits")).await, ids(&[&permits]));
    assert_eq!(list(keyword("执照")).await, ids(&[&files]));
    assert_eq!(list(keyword(&withdrawn.id)).await, ids(&[&withdrawn]));
    assert!(list(keyword("%")).await.is_empty());
    assert!(list(keyword("_")).await.is_empty());

    let filter = DatasetFilter {
        provider_code: one.clone(),
        ..DatasetFilter::default()
    };
    assert_eq!(list(filter).await, ids(&[&table, &files]));
    let filter = DatasetFilter {
        kind: Some(DatasetKind::File),
        ..DatasetFilter::default()
    };
    assert_eq!(list(filter).await, ids(&[&files]));
    let filter = DatasetFilter {
        share_type: Some(ShareType::Conditional),
        ..DatasetFilter::default()
    };
    assert_eq!(list(filter).await, ids(&[&permits]));
    let filter = DatasetFilter {
        exclude_provider: Some(one.clone()),
        ..DatasetFilter::default()
    };
    assert_eq!(list(filter).await, ids(&[&permits, &withdrawn]));
    // Another department sees the published ones; the provider also its withdrawn one.
    let filter = DatasetFilter {
        published_or_provided_by: Some(one.clone()),
        ..DatasetFilter::default()
    };
    assert_eq!(list(filter).await, ids(&[&table, &files, &permits]));
    let filter = DatasetFilter {
        published_or_provided_by: Some(two.clone()),
        ..DatasetFilter::default()
    };
    assert_eq!(list(filter).await, ids(&[&table, &files, &permits, &withdrawn]));
    let filter = DatasetFilter {
        kind: Some(DatasetKind::Table),
        exclude_provider: Some(two.clone()),
        ..DatasetFilter::default()
    };
    assert_eq!(list(filter).await, ids(&[&table]));

    // Paging by id.
    let page = store
        .list_datasets(&DatasetFilter::default(), Some(&files.id), 2)
        .await
        .expect("page");
    assert_eq!(
        page.into_iter().map(|l| l.dataset.id).collect::<Vec<_>>(),
        ids(&[&permits, &withdrawn])
    );

    // A table dataset moves along its subject; a file dataset has no schema.
    let moved = store
        .set_dataset_schema(&table.id, &sref("legal-entity", 3))
        .await
        .expect("move");
    assert_eq!(moved.schema, Some(sref("legal-entity", 3)));
    assert_eq!(store.get_dataset(&table.id).await.expect("get"), Some(moved));
    for (id, schema) in [(&files.id, sref("legal-entity", 2)), (&table.id, sref("other", 4))] {
        let err = store.set_dataset_schema(id, &schema).await.expect_err("refused");
        assert!(matches!(err, Error::FailedPrecondition(_)), "{err:?}");
    }
    let err = store
        .set_dataset_schema("102/999999", &sref("legal-entity", 2))
        .await
        .expect_err("unknown");
    assert!(matches!(err, Error::NotFound(_)), "{err:?}");
}

/// Three batches with re-upserts, deletes, deletes of absent keys and keys changed twice in one
/// batch: (dataset, the changes in log order).
async fn three_batches(store: &dyn Store) -> (Dataset, Vec<NewChange>) {
    let provider = register(store, 1).await;
    let dataset = open_dataset(store, &provider, "企业登记信息", DatasetKind::Table).await;
    let batches = [
        vec![upsert("a", "1"), upsert("b", "1"), upsert("c", "1"), upsert("a", "2")],
        vec![
            delete("b"),
            upsert("d", "1"),
            delete("d"),
            delete("zz"),
            upsert("c", "2"),
        ],
        vec![upsert("b", "2"), delete("a"), upsert("a", "3"), upsert("e", "1")],
    ];
    let expected = [committed(4, 1, 4), committed(5, 5, 9), committed(4, 10, 13)];
    let counts = [3, 2, 4];
    for (i, changes) in batches.iter().enumerate() {
        let result = try_publish(store, &dataset.id, &format!("batch-{i}"), changes, t(100 + i as i64))
            .await
            .expect("publish");
        assert_eq!(result, expected[i], "batch {i}");
        let now = store.get_dataset(&dataset.id).await.expect("get").expect("dataset");
        assert_eq!(now.record_count, counts[i], "record count after batch {i}");
        assert_eq!(now.last_sequence, expected[i].last_sequence);
        assert_eq!(now.last_published_at, Some(t(100 + i as i64)));
    }
    (dataset, batches.concat())
}

async fn batches_get_consecutive_sequences_and_count_records(store: Arc<dyn Store>) {
    let (dataset, published) = three_batches(&*store).await;

    // The log holds every change as published, numbered from 1.
    let log = all_changes(&*store, &dataset.id).await;
    assert_eq!(log.len(), published.len());
    for (i, (stored, change)) in log.iter().zip(&published).enumerate() {
        assert_eq!(stored.sequence, i as u64 + 1);
        assert_eq!(
            (stored.op, &stored.key, stored.record.as_deref()),
            (change.op, &change.key, change.record.as_deref().map(str::as_bytes))
        );
    }
    assert_eq!(log[0].published_at, t(100));
    assert_eq!(log[12].published_at, t(102));
    assert_eq!(present_keys(&log).len(), 4);

    let err = try_publish(&*store, "102/999999", "x", &[upsert("a", "1")], t(1))
        .await
        .expect_err("unknown dataset");
    assert!(matches!(err, Error::NotFound(_)), "{err:?}");
    let err = try_publish(&*store, "102/999999", "x", &[], t(1))
        .await
        .expect_err("unknown dataset");
    assert!(matches!(err, Error::NotFound(_)), "{err:?}");
}

async fn a_replayed_batch_returns_its_first_result_and_writes_nothing(store: Arc<dyn Store>) {
    let provider = register(&*store, 1).await;
    let dataset = open_dataset(&*store, &provider, "企业登记信息", DatasetKind::Table).await;
    let other = open_dataset(&*store, &provider, "二", DatasetKind::Table).await;

    let rejected = r#"[{"index":2,"reason":"名称 is missing"}]"#;
    let first = store
        .publish_batch(&NewBatch {
            dataset: &dataset.id,
            idempotency_key: "k-1",
            changes: &[upsert("a", "1"), upsert("b", "1")],
            rejected,
            at: t(100),
            audit: None,
        })
        .await
        .expect("publish");
    assert_eq!(
        first,
        BatchResult {
            rejected: rejected.into(),
            ..committed(2, 1, 2)
        }
    );
    let before = store.get_dataset(&dataset.id).await.expect("get");

    // The same key again, whatever it carries now: the first result, nothing written.
    let again = store
        .publish_batch(&NewBatch {
            dataset: &dataset.id,
            idempotency_key: "k-1",
            changes: &[upsert("c", "1")],
            rejected: "[]",
            at: t(200),
            audit: None,
        })
        .await
        .expect("replay");
    assert_eq!(
        again,
        BatchResult {
            replayed: true,
            ..first.clone()
        }
    );
    assert_eq!(store.get_dataset(&dataset.id).await.expect("get"), before);
    assert_eq!(all_changes(&*store, &dataset.id).await.len(), 2);

    // Keys are per dataset.
    assert_eq!(
        publish_changes(&*store, &other.id, "k-1", &[upsert("z", "1")]).await,
        committed(1, 1, 1)
    );

    // A batch without changes records its key and moves nothing.
    assert_eq!(
        publish_changes(&*store, &dataset.id, "empty", &[]).await,
        committed(0, 0, 0)
    );
    assert_eq!(store.get_dataset(&dataset.id).await.expect("get"), before);
    let replayed = publish_changes(&*store, &dataset.id, "empty", &[upsert("q", "1")]).await;
    assert_eq!(
        replayed,
        BatchResult {
            replayed: true,
            ..committed(0, 0, 0)
        }
    );
    assert_eq!(
        publish_changes(&*store, &dataset.id, "k-2", &[delete("a")]).await,
        committed(1, 3, 3)
    );

    // The same key from many publishers at once: one commits, the others get its result.
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let (store, id) = (store.clone(), dataset.id.clone());
            tokio::spawn(async move {
                let changes = [upsert(&format!("racer-{i}"), "1"), upsert("shared", &i.to_string())];
                try_publish(&*store, &id, "race", &changes, t(300)).await
            })
        })
        .collect();
    let mut results = Vec::new();
    for task in tasks {
        match task.await.expect("task") {
            Ok(result) => results.push(result),
            Err(Error::Aborted(_)) => {}
            Err(e) => panic!("a concurrent replay failed: {e:?}"),
        }
    }
    let winners: Vec<_> = results.iter().filter(|r| !r.replayed).collect();
    assert_eq!(winners.len(), 1, "{results:?}");
    assert_eq!(*winners[0], committed(2, 4, 5));
    assert!(results.iter().all(|r| (r.first_sequence, r.last_sequence) == (4, 5)));
    let now = store.get_dataset(&dataset.id).await.expect("get").expect("dataset");
    assert_eq!((now.last_sequence, now.record_count), (5, 3));
}

async fn changes_are_fetched_in_pages(store: Arc<dyn Store>) {
    let (dataset, published) = three_batches(&*store).await;

    let (page, head) = store.fetch_changes(&dataset.id, 0, 5).await.expect("fetch");
    assert_eq!(head, 13);
    assert_eq!(page.iter().map(|c| c.sequence).collect::<Vec<_>>(), [1, 2, 3, 4, 5]);
    assert_eq!(page[4].op, ChangeOp::Delete);
    assert_eq!(page[4].record, None);
    assert_eq!(page[4].key, published[4].key);
    let (page, _) = store.fetch_changes(&dataset.id, 5, 5).await.expect("fetch");
    assert_eq!(page.iter().map(|c| c.sequence).collect::<Vec<_>>(), [6, 7, 8, 9, 10]);
    let (page, head) = store.fetch_changes(&dataset.id, 10, 5).await.expect("fetch");
    assert_eq!(
        (page.iter().map(|c| c.sequence).collect::<Vec<_>>(), head),
        (vec![11, 12, 13], 13)
    );
    for after in [13, 500, u64::MAX] {
        let (page, head) = store.fetch_changes(&dataset.id, after, 5).await.expect("fetch");
        assert!(page.is_empty());
        assert_eq!(head, 13);
    }
    let (page, head) = store.fetch_changes(&dataset.id, 0, 0).await.expect("fetch");
    assert!(page.is_empty());
    assert_eq!(head, 13);

    // A dataset without changes, and one that does not exist.
    let empty = open_dataset(&*store, &dataset.provider_code, "空", DatasetKind::Table).await;
    assert_eq!(store.fetch_changes(&empty.id, 0, 5).await.expect("fetch"), (vec![], 0));
    let err = store.fetch_changes("102/999999", 0, 5).await.expect_err("unknown");
    assert!(matches!(err, Error::NotFound(_)), "{err:?}");

    // Heads of the datasets that exist.
    let ids = [dataset.id.clone(), "102/999999".into(), empty.id.clone()];
    assert_eq!(
        store.dataset_heads(&ids).await.expect("heads"),
        [(dataset.id.clone(), 13), (empty.id.clone(), 0)]
    );
    assert!(store.dataset_heads(&[]).await.expect("heads").is_empty());
}

async fn snapshots_show_each_present_key_as_of_a_sequence(store: Arc<dyn Store>) {
    let (dataset, _) = three_batches(&*store).await;
    let record = |k: &str, v: &str| upsert(k, v).record.expect("record");
    let row = |k: &str, sequence: u64, v: &str| (key(k), sequence, record(k, v));

    // After the first batch: a (its second upsert), b and c.
    let first = vec![row("a", 4, "2"), row("b", 2, "1"), row("c", 3, "1")];
    assert_eq!(snapshot(&*store, &dataset.id, 4, 100).await, first);
    // Mid-way through the second batch, d was present.
    assert_eq!(
        snapshot(&*store, &dataset.id, 6, 100).await,
        [row("a", 4, "2"), row("c", 3, "1"), row("d", 6, "1")]
    );
    // After the second: b deleted, c re-upserted.
    let second = vec![row("a", 4, "2"), row("c", 9, "2")];
    assert_eq!(snapshot(&*store, &dataset.id, 9, 100).await, second);
    // Now: a deleted and upserted again, b back, e new.
    let latest = vec![
        row("a", 12, "3"),
        row("b", 10, "2"),
        row("c", 9, "2"),
        row("e", 13, "1"),
    ];
    for as_of in [13, 14, u64::MAX] {
        assert_eq!(snapshot(&*store, &dataset.id, as_of, 100).await, latest);
    }
    assert!(snapshot(&*store, &dataset.id, 0, 100).await.is_empty());
    let count = store
        .get_dataset(&dataset.id)
        .await
        .expect("get")
        .expect("dataset")
        .record_count;
    assert_eq!(count as usize, latest.len());

    // Pages by key, of every size.
    for page in 1..=5 {
        assert_eq!(
            snapshot(&*store, &dataset.id, 13, page).await,
            latest,
            "pages of {page}"
        );
        assert_eq!(snapshot(&*store, &dataset.id, 4, page).await, first, "pages of {page}");
    }
    let page = store
        .snapshot_page(&dataset.id, 13, Some(&key("b")), 2)
        .await
        .expect("page");
    assert_eq!(page.iter().map(|c| c.sequence).collect::<Vec<_>>(), [9, 13]);
    assert!(
        store
            .snapshot_page("102/999999", 13, None, 10)
            .await
            .expect("page")
            .is_empty()
    );

    // Keys sort byte-wise (as UTF-8), whatever the database's locale says.
    let keys = ["b", "B", "a", "Z", "中", "_", "10", "9"];
    let changes: Vec<_> = keys.iter().map(|k| upsert(k, "1")).collect();
    let other = open_dataset(&*store, &dataset.provider_code, "排序", DatasetKind::Table).await;
    publish_changes(&*store, &other.id, "keys", &changes).await;
    let mut expected: Vec<String> = keys.iter().map(|k| key(k)).collect();
    expected.sort();
    let found: Vec<String> = snapshot(&*store, &other.id, 100, 3)
        .await
        .into_iter()
        .map(|r| r.0)
        .collect();
    assert_eq!(found, expected);
}

async fn consumers_only_move_forward(store: Arc<dyn Store>) {
    let provider = register(&*store, 1).await;
    let reader = register(&*store, 2).await;
    let dataset = open_dataset(&*store, &provider, "企业登记信息", DatasetKind::Table).await;
    let cursor = |consumer: &str, acknowledged: u64, at: DateTime<Utc>| ConsumerCursor {
        dataset: dataset.id.clone(),
        department: reader.clone(),
        consumer: consumer.into(),
        acknowledged,
        updated_at: at,
    };

    assert_eq!(
        store.get_consumer(&dataset.id, &reader, "etl").await.expect("get"),
        None
    );
    let saved = store.acknowledge(&cursor("etl", 5, t(1))).await.expect("ack");
    assert_eq!(saved, cursor("etl", 5, t(1)));
    // Never back: a stale acknowledgement changes nothing.
    assert_eq!(
        store.acknowledge(&cursor("etl", 3, t(2))).await.expect("ack"),
        cursor("etl", 5, t(1))
    );
    assert_eq!(
        store.acknowledge(&cursor("etl", 5, t(3))).await.expect("ack"),
        cursor("etl", 5, t(1))
    );
    assert_eq!(
        store.acknowledge(&cursor("etl", 8, t(4))).await.expect("ack"),
        cursor("etl", 8, t(4))
    );
    assert_eq!(
        store.get_consumer(&dataset.id, &reader, "etl").await.expect("get"),
        Some(cursor("etl", 8, t(4)))
    );

    // Consumers are named per department.
    store.acknowledge(&cursor("report", 2, t(5))).await.expect("ack");
    assert_eq!(
        store.get_consumer(&dataset.id, &reader, "report").await.expect("get"),
        Some(cursor("report", 2, t(5)))
    );
    assert_eq!(
        store.get_consumer(&dataset.id, &provider, "etl").await.expect("get"),
        None
    );

    let mut unknown = cursor("etl", 1, t(6));
    unknown.dataset = "102/999999".into();
    let err = store.acknowledge(&unknown).await.expect_err("unknown dataset");
    assert!(matches!(err, Error::NotFound(_)), "{err:?}");
}

fn new_upload(id: &str, dataset: &Dataset, file_name: &str, size: u64) -> Upload {
    Upload {
        id: id.into(),
        dataset: dataset.id.clone(),
        file_name: file_name.into(),
        size,
        sha256: "ab".repeat(32),
        received: 0,
        sequence: None,
        started_by: dataset.provider_code.clone(),
        started_at: t(50),
    }
}

async fn uploads_resume_and_complete_as_file_versions(store: Arc<dyn Store>) {
    let provider = register(&*store, 1).await;
    let files = open_dataset(&*store, &provider, "营业执照扫描件", DatasetKind::File).await;
    let table = open_dataset(&*store, &provider, "企业登记信息", DatasetKind::Table).await;

    let first = new_upload("u-1", &files, "执照.pdf", 10);
    assert_eq!(store.start_upload(&first).await.expect("start"), first);
    let err = store.start_upload(&first).await.expect_err("twice");
    assert!(matches!(err, Error::AlreadyExists(_)), "{err:?}");
    let err = store
        .start_upload(&new_upload("u-x", &table, "a.pdf", 1))
        .await
        .expect_err("table");
    assert!(matches!(err, Error::FailedPrecondition(_)), "{err:?}");
    let mut unknown = new_upload("u-y", &files, "a.pdf", 1);
    unknown.dataset = "102/999999".into();
    let err = store.start_upload(&unknown).await.expect_err("unknown dataset");
    assert!(matches!(err, Error::NotFound(_)), "{err:?}");

    // Bytes arrive at the offset received so far, within the declared size.
    assert_eq!(
        store.append_upload("u-1", 0, b"abcd").await.expect("append").received,
        4
    );
    let err = store.append_upload("u-1", 0, b"abcd").await.expect_err("resent");
    assert!(
        matches!(&err, Error::FailedPrecondition(m) if m.contains("expected offset 4")),
        "{err:?}"
    );
    let err = store.append_upload("u-1", 6, b"gh").await.expect_err("ahead");
    assert!(
        matches!(&err, Error::FailedPrecondition(m) if m.contains("expected offset 4")),
        "{err:?}"
    );
    let err = store.append_upload("u-1", 4, b"efghijk").await.expect_err("too long");
    assert!(matches!(err, Error::ResourceExhausted(_)), "{err:?}");
    let err = store.complete_upload("u-1", "{}", t(60)).await.expect_err("incomplete");
    assert!(matches!(err, Error::FailedPrecondition(_)), "{err:?}");
    assert_eq!(store.append_upload("u-1", 4, b"").await.expect("nothing").received, 4);
    assert_eq!(store.append_upload("u-1", 4, b"efg").await.expect("append").received, 7);
    let err = store.append_upload("u-9", 0, b"a").await.expect_err("unknown");
    assert!(matches!(err, Error::NotFound(_)), "{err:?}");

    // Resuming: the upload says where to go on; what arrived reads back, across chunks.
    let resumed = store.get_upload("u-1").await.expect("get").expect("upload");
    assert_eq!((resumed.received, resumed.sequence), (7, None));
    assert_eq!(store.read_upload("u-1", 0, 100).await.expect("read"), b"abcdefg");
    assert_eq!(store.read_upload("u-1", 2, 3).await.expect("read"), b"cde");
    assert_eq!(store.read_upload("u-1", 5, 1).await.expect("read"), b"f");
    assert!(store.read_upload("u-1", 7, 10).await.expect("read").is_empty());
    assert!(store.read_upload("u-1", 3, 0).await.expect("read").is_empty());
    let err = store.read_upload("u-9", 0, 1).await.expect_err("unknown");
    assert!(matches!(err, Error::NotFound(_)), "{err:?}");
    assert_eq!(store.get_upload("u-9").await.expect("get"), None);

    store.append_upload("u-1", 7, b"hij").await.expect("append");
    let metadata = r#"{"file_name":"执照.pdf","size":10}"#;
    let done = store.complete_upload("u-1", metadata, t(60)).await.expect("complete");
    assert_eq!(
        done,
        Upload {
            received: 10,
            sequence: Some(1),
            ..first.clone()
        }
    );
    // Completing again (a retry) changes nothing; appending is over.
    assert_eq!(
        store.complete_upload("u-1", metadata, t(61)).await.expect("again"),
        done
    );
    let err = store.append_upload("u-1", 10, b"k").await.expect_err("complete");
    assert!(matches!(err, Error::FailedPrecondition(_)), "{err:?}");
    assert_eq!(store.read_upload("u-1", 0, 100).await.expect("read"), b"abcdefghij");

    let (log, head) = store.fetch_changes(&files.id, 0, 10).await.expect("fetch");
    assert_eq!(head, 1);
    assert_eq!(
        (
            log[0].op,
            log[0].key.as_str(),
            log[0].record.as_deref(),
            log[0].published_at
        ),
        (ChangeOp::Upsert, r#"["执照.pdf"]"#, Some(metadata.as_bytes()), t(60))
    );
    let dataset = store.get_dataset(&files.id).await.expect("get").expect("dataset");
    assert_eq!((dataset.record_count, dataset.last_sequence), (1, 1));
    assert_eq!(
        store.current_file(&files.id, "执照.pdf").await.expect("current"),
        Some(done.clone())
    );
    assert_eq!(store.current_file(&files.id, "其他.pdf").await.expect("current"), None);

    // A new version of the file supersedes the first; another file counts as a record.
    store
        .start_upload(&new_upload("u-2", &files, "执照.pdf", 3))
        .await
        .expect("start");
    store.append_upload("u-2", 0, b"xyz").await.expect("append");
    let second = store.complete_upload("u-2", "{}", t(70)).await.expect("complete");
    assert_eq!(second.sequence, Some(2));
    store
        .start_upload(&new_upload("u-3", &files, "空.txt", 0))
        .await
        .expect("start");
    assert_eq!(
        store.complete_upload("u-3", "{}", t(71)).await.expect("empty").sequence,
        Some(3)
    );
    assert!(store.read_upload("u-3", 0, 10).await.expect("read").is_empty());
    let dataset = store.get_dataset(&files.id).await.expect("get").expect("dataset");
    assert_eq!((dataset.record_count, dataset.last_sequence), (2, 3));
    assert_eq!(
        store.current_file(&files.id, "执照.pdf").await.expect("current"),
        Some(second)
    );
    assert_eq!(
        store.read_upload("u-1", 0, 100).await.expect("old bytes"),
        b"abcdefghij"
    );

    // A file deleted from the log has no current version.
    publish_changes(&*store, &files.id, "rm", &[delete("执照.pdf")]).await;
    assert_eq!(store.current_file(&files.id, "执照.pdf").await.expect("current"), None);
    let dataset = store.get_dataset(&files.id).await.expect("get").expect("dataset");
    assert_eq!((dataset.record_count, dataset.last_sequence), (1, 4));
}

/// Publishes 60 batches at once through `stores` (one store per hub node, or the same store
/// several times) while a reader follows the log: it must see every sequence number once, in
/// order, without a gap, and never a number it has passed appear later.
async fn publish_concurrently(stores: Vec<Arc<dyn Store>>) {
    const BATCHES: usize = 60;
    const PER_BATCH: usize = 10;
    const TOTAL: u64 = (BATCHES * PER_BATCH) as u64;
    let provider = register(&*stores[0], 1).await;
    let dataset = open_dataset(&*stores[0], &provider, "企业登记信息", DatasetKind::Table).await;

    let reader = {
        let (store, id) = (stores[0].clone(), dataset.id.clone());
        tokio::spawn(async move {
            let mut seen = 0;
            let mut polls = 0;
            while seen < TOTAL {
                let (page, head) = store.fetch_changes(&id, seen, 37).await.expect("fetch");
                for change in page {
                    assert!(change.sequence > seen, "{} after {seen}", change.sequence);
                    assert_eq!(change.sequence, seen + 1, "a gap after {seen}");
                    seen = change.sequence;
                }
                assert!(head >= seen, "head {head} behind {seen}");
                polls += 1;
                tokio::task::yield_now().await;
            }
            polls
        })
    };

    let publishers: Vec<_> = (0..BATCHES)
        .map(|i| {
            let (store, id) = (stores[i % stores.len()].clone(), dataset.id.clone());
            tokio::spawn(async move {
                let changes: Vec<_> = (0..PER_BATCH)
                    .map(|j| {
                        let k = format!("k{}", (i * PER_BATCH + j * 7) % 97);
                        if (i + j) % 4 == 0 {
                            delete(&k)
                        } else {
                            upsert(&k, &i.to_string())
                        }
                    })
                    .collect();
                try_publish(&*store, &id, &format!("batch-{i}"), &changes, t(i as i64))
                    .await
                    .expect("publish")
            })
        })
        .collect();
    let mut ranges = Vec::new();
    for publisher in publishers {
        let result = publisher.await.expect("publisher");
        assert_eq!(result.accepted as usize, PER_BATCH);
        ranges.push((result.first_sequence, result.last_sequence));
    }
    let polls = tokio::time::timeout(std::time::Duration::from_secs(60), reader)
        .await
        .expect("the reader saw every change in time")
        .expect("reader");
    assert!(polls > 1);

    // The batches split 1..=TOTAL into consecutive runs.
    ranges.sort_unstable();
    let mut next = 1;
    for (first, last) in ranges {
        assert_eq!((first, last), (next, next + PER_BATCH as u64 - 1));
        next = last + 1;
    }

    // The record count agrees with the log and the snapshot, whatever order the batches took.
    let log = all_changes(&*stores[0], &dataset.id).await;
    assert_eq!(log.len() as u64, TOTAL);
    let present = present_keys(&log);
    let now = stores[0].get_dataset(&dataset.id).await.expect("get").expect("dataset");
    assert_eq!((now.last_sequence, now.record_count), (TOTAL, present.len() as u64));
    let snapshot_keys: BTreeSet<String> = snapshot(&*stores[0], &dataset.id, TOTAL, 50)
        .await
        .into_iter()
        .map(|r| r.0)
        .collect();
    assert_eq!(snapshot_keys, present);
}

async fn concurrent_publishers_never_reorder(store: Arc<dyn Store>) {
    publish_concurrently(vec![store.clone(), store.clone(), store]).await;
}

// ---------------------------------------------------------------------------------------------
// Backend-specific behaviour

#[tokio::test]
async fn sqlite_creates_directories_and_keeps_data_across_restarts() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("nested").join("deeper").join("hub.db");
    let url = format!("sqlite://{}", path.display());
    assert!(url.starts_with("sqlite:///"), "an absolute path: {url}");

    let store = SqliteStore::open(&url).await.expect("open");
    let provider = register(&store, 1).await;
    let first = create(&store, &provider, &content("102", "企业登记信息")).await;
    store.close().await;
    assert!(path.exists());

    // Reopening runs the migrations again as a no-op and continues the sequence.
    let store = SqliteStore::open(&url).await.expect("reopen");
    assert_eq!(store.get_entry(&first.resource_code).await.expect("get"), Some(first));
    assert_eq!(
        create(&store, &provider, &content("102", "二")).await.resource_code,
        "102/000002"
    );
    store.close().await;
}

#[tokio::test]
async fn sqlite_in_memory_works() {
    let store = xinqiao_store::open("sqlite::memory:").await.expect("open in memory");
    let provider = register(&*store, 1).await;
    let entry = create(&*store, &provider, &content("102", "企业登记信息")).await;
    assert_eq!(
        store.get_entry(&entry.resource_code).await.expect("get"),
        Some(entry.clone())
    );
    let published = publish(&*store, &entry).await;
    assert_eq!(find(&*store, "企业").await, [published.resource_code]);
}

#[tokio::test]
async fn unknown_url_schemes_are_refused() {
    let err = xinqiao_store::open("mysql://localhost/hub")
        .await
        .err()
        .expect("refused");
    assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_hubs_can_start_together_on_a_fresh_schema() {
    let Some(url) = pg_url("postgres_hubs_can_start_together_on_a_fresh_schema") else {
        return;
    };
    let schema = fresh_schema();
    // Several hubs starting at once on an empty schema: the migration lock lets each migration
    // (and the schema itself) be created once, and every hub opens.
    let (one, two, three) = tokio::join!(
        PgStore::open_in_schema(&url, &schema),
        PgStore::open_in_schema(&url, &schema),
        PgStore::open_in_schema(&url, &schema),
    );
    let (one, two, three) = (
        one.expect("first hub"),
        two.expect("second hub"),
        three.expect("third hub"),
    );

    // They share one database.
    let provider = register(&one, 1).await;
    let first = create(&two, &provider, &content("102", "企业登记信息")).await;
    let second = create(&three, &provider, &content("102", "二")).await;
    assert_eq!(
        (first.resource_code.as_str(), second.resource_code.as_str()),
        ("102/000001", "102/000002")
    );
    assert_eq!(one.get_entry("102/000002").await.expect("get"), Some(second));

    // A hub starting later finds the schema up to date.
    let four = PgStore::open_in_schema(&url, &schema).await.expect("later hub");
    assert!(four.get_department(&provider).await.expect("get").is_some());

    for store in [one, two, three, four] {
        store.close().await;
    }
    drop_schema(&url, &schema).await;
}

#[tokio::test]
async fn postgres_schema_names_are_plain_identifiers() {
    let Some(url) = pg_url("postgres_schema_names_are_plain_identifiers") else {
        return;
    };
    for bad in ["", "Upper", "1abc", "a-b", "a;drop", "a\"b", &"x".repeat(64)] {
        let err = PgStore::open_in_schema(&url, bad).await.expect_err("refused");
        assert!(matches!(err, Error::InvalidArgument(_)), "{bad}: {err:?}");
    }
}

/// A production database may insist on TLS: the URL's `sslmode` (and `sslrootcert`) are honoured,
/// and every connection of the store is then encrypted.
#[tokio::test]
async fn postgres_connections_use_tls_when_the_url_asks() {
    let Some(url) = pg_url("postgres_connections_use_tls_when_the_url_asks") else {
        return;
    };
    let schema = fresh_schema();
    let separator = if url.contains('?') { '&' } else { '?' };
    let tls_url = format!("{url}{separator}sslmode=require&application_name={schema}");
    let store = PgStore::open_in_schema(&tls_url, &schema)
        .await
        .expect("a store over TLS");
    store.ping().await.expect("ping");
    register(&store, 1).await;
    let mut observer = sqlx::PgConnection::connect(&url).await.expect("connect");
    let (all, encrypted): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE s.ssl) FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) \
         WHERE a.application_name = $1",
    )
    .bind(&schema)
    .fetch_one(&mut observer)
    .await
    .expect("the server's view of the store's connections");
    let _ = observer.close().await;
    assert!(all >= 1, "the store holds a connection");
    assert_eq!(encrypted, all, "every connection of the store is encrypted");
    store.close().await;
    drop_schema(&url, &schema).await;
}

#[tokio::test]
async fn sqlite_has_no_other_nodes_to_listen_to() {
    let backend = SqliteBackend::new().await;
    let (sink, _heard) = tokio::sync::mpsc::channel(1);
    assert!(!backend.store.listen_changes(sink).await.expect("listen"));
    backend.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_hub_nodes_publish_in_commit_order() {
    let Some(url) = pg_url("postgres_hub_nodes_publish_in_commit_order") else {
        return;
    };
    let schema = fresh_schema();
    let mut nodes = Vec::new();
    for _ in 0..3 {
        nodes.push(PgStore::open_in_schema(&url, &schema).await.expect("open a hub node"));
    }
    publish_concurrently(nodes.iter().map(|n| Arc::new(n.clone()) as Arc<dyn Store>).collect()).await;
    for node in nodes {
        node.close().await;
    }
    drop_schema(&url, &schema).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_hub_nodes_append_to_one_audit_chain() {
    let Some(url) = pg_url("postgres_hub_nodes_append_to_one_audit_chain") else {
        return;
    };
    let schema = fresh_schema();
    let mut nodes = Vec::new();
    for _ in 0..3 {
        nodes.push(PgStore::open_in_schema(&url, &schema).await.expect("open a hub node"));
    }
    append_audit_concurrently(nodes.iter().map(|n| Arc::new(n.clone()) as Arc<dyn Store>).collect()).await;
    for node in nodes {
        node.close().await;
    }
    drop_schema(&url, &schema).await;
}

/// The next head a listener forwards, within a few seconds.
async fn next_heard(heard: &mut tokio::sync::mpsc::Receiver<(String, u64)>) -> Option<(String, u64)> {
    tokio::time::timeout(std::time::Duration::from_secs(5), heard.recv())
        .await
        .expect("heard in time")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_listeners_hear_other_nodes_of_their_schema() {
    let Some(url) = pg_url("postgres_listeners_hear_other_nodes_of_their_schema") else {
        return;
    };
    let (schema, elsewhere) = (fresh_schema(), fresh_schema());
    let listening = PgStore::open_in_schema(&url, &schema).await.expect("open");
    let publishing = PgStore::open_in_schema(&url, &schema).await.expect("open");
    let stranger = PgStore::open_in_schema(&url, &elsewhere).await.expect("open");

    // The same dataset id in both schemas.
    let provider = register(&publishing, 1).await;
    let dataset = open_dataset(&publishing, &provider, "企业登记信息", DatasetKind::Table).await;
    let provider = register(&stranger, 1).await;
    let theirs = open_dataset(&stranger, &provider, "企业登记信息", DatasetKind::Table).await;
    assert_eq!(dataset.id, theirs.id);

    let (sink, mut heard) = tokio::sync::mpsc::channel(16);
    assert!(listening.listen_changes(sink).await.expect("listen"));

    // Another schema's commits are not heard; this one's are, once committed.
    publish_changes(
        &stranger,
        &theirs.id,
        "a",
        &[upsert("a", "1"), upsert("b", "1"), upsert("c", "1")],
    )
    .await;
    publish_changes(&publishing, &dataset.id, "a", &[upsert("a", "1")]).await;
    assert_eq!(next_heard(&mut heard).await, Some((dataset.id.clone(), 1)));
    publish_changes(&publishing, &dataset.id, "b", &[upsert("b", "1"), upsert("c", "1")]).await;
    assert_eq!(next_heard(&mut heard).await, Some((dataset.id.clone(), 3)));
    // A replay and an empty batch announce nothing; an upload's completion does.
    publish_changes(&publishing, &dataset.id, "b", &[upsert("d", "1")]).await;
    publish_changes(&publishing, &dataset.id, "c", &[]).await;
    publish_changes(&publishing, &dataset.id, "d", &[delete("a")]).await;
    assert_eq!(next_heard(&mut heard).await, Some((dataset.id.clone(), 4)));
    let files = open_dataset(&publishing, &dataset.provider_code, "文件", DatasetKind::File).await;
    publishing
        .start_upload(&new_upload("u-1", &files, "a.txt", 0))
        .await
        .expect("start");
    publishing.complete_upload("u-1", "{}", t(60)).await.expect("complete");
    assert_eq!(next_heard(&mut heard).await, Some((files.id.clone(), 1)));
    assert!(
        tokio::time::timeout(std::time::Duration::from_millis(300), heard.recv())
            .await
            .is_err(),
        "nothing else"
    );

    drop(heard);
    for store in [listening, publishing, stranger] {
        store.close().await;
    }
    drop_schema(&url, &schema).await;
    drop_schema(&url, &elsewhere).await;
}

/// The next department code a listener forwards, within a few seconds.
async fn next_department(heard: &mut tokio::sync::mpsc::Receiver<String>) -> Option<String> {
    tokio::time::timeout(std::time::Duration::from_secs(5), heard.recv())
        .await
        .expect("heard in time")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_department_changes_are_heard_by_every_node_of_their_schema() {
    let Some(url) = pg_url("postgres_department_changes_are_heard_by_every_node_of_their_schema") else {
        return;
    };
    let (schema, elsewhere) = (fresh_schema(), fresh_schema());
    let listening = PgStore::open_in_schema(&url, &schema).await.expect("open");
    let changing = PgStore::open_in_schema(&url, &schema).await.expect("open");
    let stranger = PgStore::open_in_schema(&url, &elsewhere).await.expect("open");
    let (sink, mut heard) = tokio::sync::mpsc::channel(16);
    assert!(listening.listen_departments(sink).await.expect("listen"));

    // Another schema's departments are not heard; this one's registrations, changes,
    // deactivations and reactivations are.
    register(&stranger, 2).await;
    let code = register(&changing, 1).await;
    assert_eq!(next_department(&mut heard).await, Some(code.clone()));
    changing
        .set_department_active(&code, false, t(10))
        .await
        .expect("deactivate");
    assert_eq!(next_department(&mut heard).await, Some(code.clone()));
    changing.update_department(&profile(1), t(20)).await.expect("update");
    assert_eq!(next_department(&mut heard).await, Some(code.clone()));
    changing
        .set_department_active(&code, true, t(30))
        .await
        .expect("reactivate");
    assert_eq!(next_department(&mut heard).await, Some(code));
    assert!(
        tokio::time::timeout(std::time::Duration::from_millis(300), heard.recv())
            .await
            .is_err(),
        "nothing else"
    );

    drop(heard);
    for store in [listening, changing, stranger] {
        store.close().await;
    }
    drop_schema(&url, &schema).await;
    drop_schema(&url, &elsewhere).await;
}

#[tokio::test]
async fn sqlite_has_no_other_nodes_to_hear_department_changes_from() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let url = format!("sqlite://{}", dir.path().join("hub.db").display());
    let store = SqliteStore::open(&url).await.expect("open");
    let (sink, _heard) = tokio::sync::mpsc::channel(1);
    assert!(!store.listen_departments(sink).await.expect("listen"));
    store.close().await;
}

// ---------------------------------------------------------------------------------------------
// A measurement, not a check: how fast publish_batch commits, against the same rows inserted
// directly (COPY on PostgreSQL, multi-row INSERTs on SQLite). Run with `--nocapture` to read it.

const RATE_BATCHES: usize = 20;
const RATE_RECORDS: usize = 500;

/// Batches of ~1 KiB records with distinct keys.
fn rate_batches() -> Vec<Vec<NewChange>> {
    let filler = "数据".repeat(150);
    (0..RATE_BATCHES)
        .map(|b| {
            (0..RATE_RECORDS)
                .map(|r| {
                    let k = format!("9133{:014}", b * RATE_RECORDS + r);
                    let record = serde_json::json!({"uscc": k, "name": format!("企业{r}"), "notes": filler});
                    NewChange {
                        op: ChangeOp::Upsert,
                        key: key(&k),
                        record: Some(record.to_string()),
                    }
                })
                .collect()
        })
        .collect()
}

/// Records per second through publish_batch.
async fn publish_rate(store: &dyn Store) -> f64 {
    let provider = register(store, 1).await;
    let dataset = open_dataset(store, &provider, "企业登记信息", DatasetKind::Table).await;
    let batches = rate_batches();
    let bytes: usize = batches[0]
        .iter()
        .map(|c| c.record.as_ref().map_or(0, String::len))
        .sum();
    assert!(
        (900..1200).contains(&(bytes / RATE_RECORDS)),
        "~1 KiB records: {}",
        bytes / RATE_RECORDS
    );
    let started = std::time::Instant::now();
    for (i, changes) in batches.iter().enumerate() {
        publish_changes(store, &dataset.id, &format!("rate-{i}"), changes).await;
    }
    let rate = (RATE_BATCHES * RATE_RECORDS) as f64 / started.elapsed().as_secs_f64();
    let now = store.get_dataset(&dataset.id).await.expect("get").expect("dataset");
    assert_eq!(now.record_count as usize, RATE_BATCHES * RATE_RECORDS);
    rate
}

fn report_rate(backend: &str, published: f64, direct: f64) {
    println!(
        "{backend}: publish_batch {published:.0} records/s, direct insert {direct:.0} records/s, ratio {:.2} \
         ({RATE_BATCHES} batches of {RATE_RECORDS} ~1 KiB records)",
        published / direct
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_publish_rate() {
    use sqlx::sqlite::{SqliteConnectOptions, SqliteSynchronous};
    let backend = SqliteBackend::new().await;
    let published = publish_rate(&backend.store).await;

    // The same rows straight into the log, 500 a statement, one transaction a batch, with the
    // store's own settings.
    let options = SqliteConnectOptions::new()
        .filename(backend._dir.path().join("hub.db"))
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(std::time::Duration::from_secs(5));
    let mut conn = sqlx::SqliteConnection::connect_with(&options).await.expect("connect");
    let batches = rate_batches();
    let at = t(0);
    let started = std::time::Instant::now();
    let mut sequence = 0_i64;
    for changes in &batches {
        let mut tx = conn.begin().await.expect("begin");
        let mut insert = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
            "INSERT INTO changes (dataset, sequence, op, key, record, published_at) ",
        );
        insert.push_values(changes, |mut row, change| {
            sequence += 1;
            row.push_bind("direct")
                .push_bind(sequence)
                .push_bind(change.op.as_str())
                .push_bind(&change.key)
                .push_bind(change.record.as_deref())
                .push_bind(at);
        });
        insert.build().execute(&mut *tx).await.expect("insert");
        tx.commit().await.expect("commit");
    }
    let direct = (RATE_BATCHES * RATE_RECORDS) as f64 / started.elapsed().as_secs_f64();
    let _ = conn.close().await;
    report_rate("SQLite", published, direct);
    backend.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_publish_rate() {
    let Some(backend) = PgBackend::new("postgres_publish_rate").await else {
        return;
    };
    let published = publish_rate(&backend.store).await;

    // The same rows straight into the log with COPY, one transaction a batch.
    let options = sqlx::postgres::PgConnectOptions::from_str(&backend.url)
        .expect("URL")
        .options([("search_path", backend.schema.as_str())]);
    let mut conn = sqlx::PgConnection::connect_with(&options).await.expect("connect");
    let batches = rate_batches();
    let started = std::time::Instant::now();
    let mut sequence = 0;
    for changes in &batches {
        // COPY's text format: tab-separated, with \ escaped (the records hold no tab or newline).
        let mut data = String::with_capacity(changes.len() * 1200);
        for change in changes {
            sequence += 1;
            let record = change.record.as_deref().unwrap_or_default().replace('\\', "\\\\");
            data.push_str(&format!(
                "direct\t{sequence}\t{}\t{}\t{record}\t2026-03-01 08:00:00+00\n",
                change.op.as_str(),
                change.key.replace('\\', "\\\\")
            ));
        }
        let mut copy = conn
            .copy_in_raw("COPY changes (dataset, sequence, op, key, record, published_at) FROM STDIN")
            .await
            .expect("copy");
        copy.send(data.into_bytes()).await.expect("send");
        copy.finish().await.expect("finish");
    }
    let direct = (RATE_BATCHES * RATE_RECORDS) as f64 / started.elapsed().as_secs_f64();
    let _ = conn.close().await;
    report_rate("PostgreSQL", published, direct);
    backend.finish().await;
}

async fn a_version_a_dataset_uses_is_not_deleted_for_good(store: Arc<dyn Store>) {
    let store = store.as_ref();
    add_version(store, "legal-entity", r#"{"type": "object"}"#, 0).await;
    let provider = register(store, 1).await;
    let dataset = open_dataset(store, &provider, "企业登记信息", DatasetKind::Table).await;
    soft_delete(store, "legal-entity", 1).await;
    match store.delete_schema_permanently("legal-entity", 1).await {
        Err(Error::FailedPrecondition(why)) => assert!(why.contains(&dataset.id), "{why}"),
        other => panic!("expected FAILED_PRECONDITION naming the dataset, got {other:?}"),
    }
    assert_eq!(versions(store, "legal-entity", true).await, [1]);
}

// ---------------------------------------------------------------------------------------------
// Access requests, grants and error reports

/// A day of March 2026.
fn day(n: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 3, n).expect("valid day")
}

/// `t(seconds)` with microseconds, which both backends keep.
fn t_us(seconds: i64) -> DateTime<Utc> {
    t(seconds) + Duration::microseconds(123_456)
}

/// Department 1 provides a table and a file dataset; department 2 (the user) provides a table
/// of its own; department 3 is another user.
struct Parties {
    provider: String,
    user: String,
    other: String,
    table: Dataset,
    files: Dataset,
    users_table: Dataset,
}

async fn parties(store: &dyn Store) -> Parties {
    let (provider, user, other) = (
        register(store, 1).await,
        register(store, 2).await,
        register(store, 3).await,
    );
    let table = open_dataset(store, &provider, "企业登记信息", DatasetKind::Table).await;
    let files = open_dataset(store, &provider, "营业执照扫描件", DatasetKind::File).await;
    let users_table = open_dataset(store, &user, "纳税信息", DatasetKind::Table).await;
    Parties {
        provider,
        user,
        other,
        table,
        files,
        users_table,
    }
}

fn request_for(id: &str, dataset: &Dataset, applicant: &str, due_on: NaiveDate) -> AccessRequest {
    let table = dataset.kind == DatasetKind::Table;
    AccessRequest {
        id: id.into(),
        application: AccessApplication {
            dataset: dataset.id.clone(),
            purpose: "企业信用核查".into(),
            scope: "本局行政审批".into(),
            fields: if table {
                vec!["uscc".into(), "name".into()]
            } else {
                vec![]
            },
            period_from: day(1),
            period_until: day(31),
            business_system: "行政审批系统".into(),
            operations: vec![],
        },
        provider_code: dataset.provider_code.clone(),
        applicant_code: applicant.into(),
        state: RequestState::Pending,
        submitted_at: t_us(0),
        due_on,
        answered_at: None,
        answered_by: String::new(),
        reason: String::new(),
        grant_id: None,
    }
}

/// Stores a pending request due on the 10th, and checks it is stored as given.
async fn submit(store: &dyn Store, id: &str, dataset: &Dataset, applicant: &str) -> AccessRequest {
    let request = request_for(id, dataset, applicant, day(10));
    let stored = store.create_request(&request).await.expect("create request");
    assert_eq!(stored, request);
    stored
}

/// The approval of `request`: the answered request and the grant it makes.
fn approval(request: &AccessRequest, grant_id: &str, expires_at: DateTime<Utc>) -> (AccessRequest, AccessGrant) {
    let at = t_us(60);
    let mut answered = request.clone();
    answered.state = RequestState::Approved;
    answered.answered_at = Some(at);
    answered.answered_by = request.provider_code.clone();
    answered.reason = "同意".into();
    answered.grant_id = Some(grant_id.into());
    let masks = if request.application.fields.is_empty() {
        vec![]
    } else {
        vec![
            ("name".into(), MaskRule::PersonalName),
            ("uscc".into(), MaskRule::Keep { first: 2, last: 3 }),
        ]
    };
    let grant = AccessGrant {
        id: grant_id.into(),
        request_id: request.id.clone(),
        dataset: request.application.dataset.clone(),
        provider_code: request.provider_code.clone(),
        grantee_code: request.applicant_code.clone(),
        purpose: request.application.purpose.clone(),
        business_system: request.application.business_system.clone(),
        fields: request.application.fields.clone(),
        masks,
        operations: request.application.operations.clone(),
        granted_at: at,
        granted_by: request.provider_code.clone(),
        expires_at,
        revoked_at: None,
        revoked_by: String::new(),
        revoke_reason: String::new(),
    };
    (answered, grant)
}

/// `request` rejected by its provider, or withdrawn by its applicant, with `reason`.
fn refusal(request: &AccessRequest, state: RequestState, reason: &str) -> AccessRequest {
    let mut answered = request.clone();
    answered.state = state;
    answered.answered_at = Some(t_us(70));
    answered.answered_by = if state == RequestState::Withdrawn {
        request.applicant_code.clone()
    } else {
        request.provider_code.clone()
    };
    answered.reason = reason.into();
    answered
}

/// Approves `request` and returns its grant, checking both are stored as given.
async fn grant_access(
    store: &dyn Store,
    request: &AccessRequest,
    grant_id: &str,
    expires_at: DateTime<Utc>,
) -> AccessGrant {
    let (answered, grant) = approval(request, grant_id, expires_at);
    let settled = store.settle_request(&answered, Some(&grant)).await.expect("approve");
    assert_eq!(settled, answered);
    assert_eq!(store.get_grant(grant_id).await.expect("get grant"), Some(grant.clone()));
    grant
}

async fn request_ids(store: &dyn Store, filter: RequestFilter) -> Vec<String> {
    let found = store.list_requests(&filter, None, 100).await.expect("list requests");
    found.into_iter().map(|r| r.id).collect()
}

async fn grant_ids(store: &dyn Store, filter: GrantFilter) -> Vec<String> {
    let found = store.list_grants(&filter, None, 100).await.expect("list grants");
    found.into_iter().map(|g| g.id).collect()
}

async fn report_ids(store: &dyn Store, filter: ReportFilter) -> Vec<String> {
    let found = store.list_reports(&filter, None, 100).await.expect("list reports");
    found.into_iter().map(|r| r.id).collect()
}

fn failed_precondition_naming(err: Error, naming: &str) {
    match err {
        Error::FailedPrecondition(message) => assert!(message.contains(naming), "{message}"),
        err => panic!("expected FAILED_PRECONDITION naming {naming}, got {err:?}"),
    }
}

async fn access_requests_are_stored_listed_and_paged(store: Arc<dyn Store>) {
    let p = parties(&*store).await;
    let r1 = submit(&*store, "req-01", &p.table, &p.user).await;
    submit(&*store, "req-02", &p.table, &p.other).await;
    submit(&*store, "req-03", &p.files, &p.user).await;
    submit(&*store, "req-04", &p.users_table, &p.other).await;

    assert_eq!(store.get_request("req-01").await.expect("get"), Some(r1.clone()));
    assert_eq!(store.get_request("req-99").await.expect("get"), None);

    // Kept to the microsecond.
    let mut precise = request_for("req-05", &p.files, &p.other, day(12));
    precise.submitted_at = t(0) + Duration::nanoseconds(123_456_789);
    let stored = store.create_request(&precise).await.expect("create");
    assert_eq!(stored.submitted_at, t_us(0));
    assert_eq!(store.get_request("req-05").await.expect("get"), Some(stored));

    let err = store.create_request(&r1).await.expect_err("twice");
    assert!(matches!(err, Error::AlreadyExists(_)), "{err:?}");

    let all = ["req-01", "req-02", "req-03", "req-04", "req-05"];
    assert_eq!(request_ids(&*store, RequestFilter::default()).await, all);
    let some = |f: fn(&mut RequestFilter)| {
        let mut filter = RequestFilter::default();
        f(&mut filter);
        filter
    };
    let (user, provider, other) = (p.user.clone(), p.provider.clone(), p.other.clone());
    let by_applicant = RequestFilter {
        applicant: Some(user.clone()),
        ..RequestFilter::default()
    };
    assert_eq!(request_ids(&*store, by_applicant).await, ["req-01", "req-03"]);
    let by_provider = |code: &str| RequestFilter {
        provider: Some(code.into()),
        ..RequestFilter::default()
    };
    assert_eq!(request_ids(&*store, by_provider(&user)).await, ["req-04"]);
    assert_eq!(
        request_ids(&*store, by_provider(&provider)).await,
        ["req-01", "req-02", "req-03", "req-05"]
    );
    let by_party = RequestFilter {
        party: Some(user.clone()),
        ..RequestFilter::default()
    };
    assert_eq!(request_ids(&*store, by_party).await, ["req-01", "req-03", "req-04"]);
    let by_dataset = RequestFilter {
        dataset: Some(p.table.id.clone()),
        ..RequestFilter::default()
    };
    assert_eq!(request_ids(&*store, by_dataset).await, ["req-01", "req-02"]);
    assert_eq!(
        request_ids(&*store, some(|f| f.state = Some(RequestState::Pending))).await,
        all
    );
    assert!(
        request_ids(&*store, some(|f| f.state = Some(RequestState::Approved)))
            .await
            .is_empty()
    );
    let narrowed = RequestFilter {
        applicant: Some(other.clone()),
        dataset: Some(p.users_table.id.clone()),
        ..RequestFilter::default()
    };
    assert_eq!(request_ids(&*store, narrowed).await, ["req-04"]);

    // Pages by id.
    let mut paged = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = store
            .list_requests(&RequestFilter::default(), after.as_deref(), 2)
            .await
            .expect("page");
        assert!(page.len() <= 2);
        let Some(last) = page.last() else { break };
        after = Some(last.id.clone());
        paged.extend(page.into_iter().map(|r| r.id));
    }
    assert_eq!(paged, all);
}

async fn answering_a_request_is_atomic_and_happens_once(store: Arc<dyn Store>) {
    let p = parties(&*store).await;
    let r1 = submit(&*store, "req-01", &p.table, &p.user).await;
    let r2 = submit(&*store, "req-02", &p.table, &p.other).await;
    let r3 = submit(&*store, "req-03", &p.files, &p.user).await;
    let r4 = submit(&*store, "req-04", &p.table, &p.other).await;

    // An approval stores the answer and its grant.
    let grant = grant_access(&*store, &r1, "grant-01", t(86_400)).await;
    let (approved, _) = approval(&r1, "grant-01", t(86_400));
    assert_eq!(store.get_request("req-01").await.expect("get"), Some(approved.clone()));
    assert_eq!(approved.grant_id.as_deref(), Some("grant-01"));
    assert_eq!(grant.masks.len(), 2);

    // A second answer finds it answered; its grant is not stored.
    let err = store
        .settle_request(&refusal(&r1, RequestState::Rejected, "重复"), None)
        .await
        .expect_err("answered already");
    failed_precondition_naming(err, "approved");
    let (again, second) = approval(&r1, "grant-02", t(86_400));
    let err = store
        .settle_request(&again, Some(&second))
        .await
        .expect_err("approved already");
    failed_precondition_naming(err, "approved");
    assert_eq!(store.get_grant("grant-02").await.expect("get"), None);
    assert_eq!(store.get_request("req-01").await.expect("get"), Some(approved));

    // Rejections and withdrawals store no grant.
    let rejected = refusal(&r2, RequestState::Rejected, "用途与职责无关");
    assert_eq!(store.settle_request(&rejected, None).await.expect("reject"), rejected);
    let withdrawn = refusal(&r3, RequestState::Withdrawn, "不再需要");
    assert_eq!(
        store.settle_request(&withdrawn, None).await.expect("withdraw"),
        withdrawn
    );
    let err = store
        .settle_request(&refusal(&r3, RequestState::Rejected, "x"), None)
        .await
        .expect_err("withdrawn already");
    failed_precondition_naming(err, "withdrawn");

    // Unknown requests, and answers that do not fit together.
    let ghost = request_for("req-99", &p.table, &p.user, day(10));
    let err = store
        .settle_request(&refusal(&ghost, RequestState::Rejected, "x"), None)
        .await
        .expect_err("unknown");
    assert!(matches!(err, Error::NotFound(_)), "{err:?}");
    let err = store.settle_request(&r4, None).await.expect_err("still pending");
    assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");
    let (approved4, grant4) = approval(&r4, "grant-04", t(86_400));
    let err = store.settle_request(&approved4, None).await.expect_err("no grant");
    assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");
    let mut stray = grant4.clone();
    stray.request_id = "req-01".into();
    let err = store
        .settle_request(&approved4, Some(&stray))
        .await
        .expect_err("another's grant");
    assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");

    // An approval whose grant cannot be stored leaves the request pending: one transaction.
    let (clash, taken) = approval(&r4, "grant-01", t(86_400));
    let err = store
        .settle_request(&clash, Some(&taken))
        .await
        .expect_err("grant id taken");
    assert!(matches!(err, Error::AlreadyExists(_)), "{err:?}");
    assert_eq!(store.get_request("req-04").await.expect("get"), Some(r4.clone()));
    assert_eq!(store.get_grant("grant-01").await.expect("get"), Some(grant));

    let in_state = |state| RequestFilter {
        state: Some(state),
        ..RequestFilter::default()
    };
    assert_eq!(request_ids(&*store, in_state(RequestState::Approved)).await, ["req-01"]);
    assert_eq!(request_ids(&*store, in_state(RequestState::Rejected)).await, ["req-02"]);
    assert_eq!(
        request_ids(&*store, in_state(RequestState::Withdrawn)).await,
        ["req-03"]
    );
    assert_eq!(request_ids(&*store, in_state(RequestState::Pending)).await, ["req-04"]);

    // Of concurrent answers, one wins and the others find the request answered.
    let answers: Vec<_> = (0..8)
        .map(|i| {
            let (store, r4) = (store.clone(), r4.clone());
            tokio::spawn(async move {
                let (answered, grant) = approval(&r4, &format!("grant-c{i}"), t(86_400));
                store.settle_request(&answered, Some(&grant)).await
            })
        })
        .collect();
    let mut won = Vec::new();
    for answer in answers {
        match answer.await.expect("answer") {
            Ok(settled) => won.push(settled.grant_id.expect("a grant")),
            Err(err) => failed_precondition_naming(err, "approved"),
        }
    }
    assert_eq!(won.len(), 1, "{won:?}");
    let held = store.grants_of(&p.table.id, &p.other).await.expect("grants of");
    assert_eq!(held.into_iter().map(|g| g.id).collect::<Vec<_>>(), won);
}

async fn overdue_requests_are_pending_past_their_due_day(store: Arc<dyn Store>) {
    let p = parties(&*store).await;
    for (id, due, applicant) in [
        ("req-01", 5, &p.user),
        ("req-02", 10, &p.other),
        ("req-03", 4, &p.user),
        ("req-04", 20, &p.other),
    ] {
        let request = request_for(id, &p.table, applicant, day(due));
        store.create_request(&request).await.expect("create");
    }
    let answered = store.get_request("req-03").await.expect("get").expect("request");
    store
        .settle_request(&refusal(&answered, RequestState::Rejected, "不符合条件"), None)
        .await
        .expect("reject");

    let due_before = |d: u32| RequestFilter {
        due_before: Some(day(d)),
        ..RequestFilter::default()
    };
    // Due on the 10th: overdue on the 11th, not on the 10th. Answered requests are never overdue.
    assert_eq!(request_ids(&*store, due_before(10)).await, ["req-01"]);
    assert_eq!(request_ids(&*store, due_before(11)).await, ["req-01", "req-02"]);
    assert!(request_ids(&*store, due_before(5)).await.is_empty());
    assert_eq!(
        request_ids(&*store, due_before(31)).await,
        ["req-01", "req-02", "req-04"]
    );
    let theirs = RequestFilter {
        applicant: Some(p.other.clone()),
        ..due_before(31)
    };
    assert_eq!(request_ids(&*store, theirs).await, ["req-02", "req-04"]);
}

async fn grants_are_listed_and_revoked_once(store: Arc<dyn Store>) {
    let p = parties(&*store).await;
    let r1 = submit(&*store, "req-01", &p.table, &p.user).await;
    let r2 = submit(&*store, "req-02", &p.table, &p.other).await;
    let r3 = submit(&*store, "req-03", &p.files, &p.user).await;
    let r4 = submit(&*store, "req-04", &p.users_table, &p.other).await;
    let g1 = grant_access(&*store, &r1, "grant-01", t(1000)).await;
    grant_access(&*store, &r2, "grant-02", t(100)).await;
    let g3 = grant_access(&*store, &r3, "grant-03", t(1000)).await;
    assert!(g3.fields.is_empty() && g3.masks.is_empty());
    grant_access(&*store, &r4, "grant-04", t(1000)).await;

    let all = ["grant-01", "grant-02", "grant-03", "grant-04"];
    assert_eq!(grant_ids(&*store, GrantFilter::default()).await, all);
    let filter = |f: &dyn Fn(&mut GrantFilter)| {
        let mut filter = GrantFilter::default();
        f(&mut filter);
        filter
    };
    let user = p.user.clone();
    assert_eq!(
        grant_ids(&*store, filter(&|f| f.grantee = Some(user.clone()))).await,
        ["grant-01", "grant-03"]
    );
    assert_eq!(
        grant_ids(&*store, filter(&|f| f.provider = Some(user.clone()))).await,
        ["grant-04"]
    );
    assert_eq!(
        grant_ids(&*store, filter(&|f| f.party = Some(user.clone()))).await,
        ["grant-01", "grant-03", "grant-04"]
    );
    assert_eq!(
        grant_ids(&*store, filter(&|f| f.dataset = Some(p.table.id.clone()))).await,
        ["grant-01", "grant-02"]
    );
    // Active until (not at) the expiry.
    assert_eq!(grant_ids(&*store, filter(&|f| f.active_at = Some(t(99)))).await, all);
    assert_eq!(
        grant_ids(&*store, filter(&|f| f.active_at = Some(t(100)))).await,
        ["grant-01", "grant-03", "grant-04"]
    );
    let page = store
        .list_grants(&GrantFilter::default(), Some("grant-02"), 1)
        .await
        .expect("page");
    assert_eq!(page.into_iter().map(|g| g.id).collect::<Vec<_>>(), ["grant-03"]);
    assert_eq!(
        store.grants_of(&p.table.id, &p.user).await.expect("of"),
        std::slice::from_ref(&g1)
    );
    assert!(store.grants_of(&p.table.id, &p.provider).await.expect("of").is_empty());

    // Revoked once.
    let revoked = store
        .revoke_grant("grant-01", "admin:ops", "违规使用", t_us(200))
        .await
        .expect("revoke");
    let mut expected = g1.clone();
    expected.revoked_at = Some(t_us(200));
    expected.revoked_by = "admin:ops".into();
    expected.revoke_reason = "违规使用".into();
    assert_eq!(revoked, expected);
    assert_eq!(store.get_grant("grant-01").await.expect("get"), Some(expected.clone()));
    let err = store
        .revoke_grant("grant-01", &p.provider, "again", t(300))
        .await
        .expect_err("twice");
    failed_precondition_naming(err, "revoked");
    assert_eq!(store.get_grant("grant-01").await.expect("get"), Some(expected.clone()));
    let err = store
        .revoke_grant("grant-99", "admin:ops", "x", t(300))
        .await
        .expect_err("unknown");
    assert!(matches!(err, Error::NotFound(_)), "{err:?}");
    assert_eq!(store.get_grant("grant-99").await.expect("get"), None);

    // A revoked grant is inactive from its revocation on (and was active before it), and is
    // still one of the grantee's. Before they were given (at 60 s), no grant was active.
    assert_eq!(
        grant_ids(&*store, filter(&|f| f.active_at = Some(t(150)))).await,
        ["grant-01", "grant-03", "grant-04"]
    );
    assert_eq!(
        grant_ids(&*store, filter(&|f| f.active_at = Some(t(250)))).await,
        ["grant-03", "grant-04"]
    );
    assert!(
        grant_ids(&*store, filter(&|f| f.active_at = Some(t(50))))
            .await
            .is_empty()
    );
    assert_eq!(store.grants_of(&p.table.id, &p.user).await.expect("of"), [expected]);

    // Of concurrent revocations, one wins.
    let revocations: Vec<_> = (0..8)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .revoke_grant("grant-03", "admin:ops", &format!("revocation {i}"), t(400 + i))
                    .await
            })
        })
        .collect();
    let mut won = 0;
    for revocation in revocations {
        match revocation.await.expect("revocation") {
            Ok(grant) => {
                won += 1;
                assert!(grant.revoked_at.is_some());
            }
            Err(err) => failed_precondition_naming(err, "revoked"),
        }
    }
    assert_eq!(won, 1);
}

fn report_for(id: &str, dataset: &Dataset, reporter: &str, sequence: u64, key: &str) -> ErrorReport {
    ErrorReport {
        id: id.into(),
        dataset: dataset.id.clone(),
        provider_code: dataset.provider_code.clone(),
        reporter_code: reporter.into(),
        sequence,
        key: key.into(),
        description: "企业名称有误".into(),
        state: ReportState::Open,
        reported_at: t_us(30),
        resolved_at: None,
        resolved_by: String::new(),
        resolution: String::new(),
        corrected_sequence: 0,
    }
}

fn resolution(report: &ErrorReport, state: ReportState, text: &str, corrected_sequence: u64) -> ErrorReport {
    let mut resolved = report.clone();
    resolved.state = state;
    resolved.resolved_at = Some(t_us(90));
    resolved.resolved_by = report.provider_code.clone();
    resolved.resolution = text.into();
    resolved.corrected_sequence = corrected_sequence;
    resolved
}

async fn error_reports_are_listed_and_resolved_once(store: Arc<dyn Store>) {
    let p = parties(&*store).await;
    let e1 = report_for("rep-01", &p.table, &p.user, 5, "");
    let e2 = report_for("rep-02", &p.table, &p.other, 0, &key("91330100MA0000000X"));
    let e3 = report_for("rep-03", &p.users_table, &p.other, 9_000_000_000, "");
    for report in [&e1, &e2, &e3] {
        assert_eq!(&store.create_report(report).await.expect("create"), report);
    }
    assert_eq!(store.get_report("rep-02").await.expect("get"), Some(e2.clone()));
    assert_eq!(store.get_report("rep-99").await.expect("get"), None);
    let err = store.create_report(&e1).await.expect_err("twice");
    assert!(matches!(err, Error::AlreadyExists(_)), "{err:?}");
    let mut unknown = report_for("rep-09", &p.table, &p.user, 1, "");
    unknown.dataset = "102/999999".into();
    let err = store.create_report(&unknown).await.expect_err("no dataset");
    assert!(matches!(err, Error::NotFound(_)), "{err:?}");

    let all = ["rep-01", "rep-02", "rep-03"];
    assert_eq!(report_ids(&*store, ReportFilter::default()).await, all);
    let (user, other) = (p.user.clone(), p.other.clone());
    let filter = |f: &dyn Fn(&mut ReportFilter)| {
        let mut filter = ReportFilter::default();
        f(&mut filter);
        filter
    };
    assert_eq!(
        report_ids(&*store, filter(&|f| f.reporter = Some(user.clone()))).await,
        ["rep-01"]
    );
    assert_eq!(
        report_ids(&*store, filter(&|f| f.reporter = Some(other.clone()))).await,
        ["rep-02", "rep-03"]
    );
    assert_eq!(
        report_ids(&*store, filter(&|f| f.provider = Some(user.clone()))).await,
        ["rep-03"]
    );
    assert_eq!(
        report_ids(&*store, filter(&|f| f.party = Some(user.clone()))).await,
        ["rep-01", "rep-03"]
    );
    assert_eq!(
        report_ids(&*store, filter(&|f| f.dataset = Some(p.table.id.clone()))).await,
        ["rep-01", "rep-02"]
    );
    assert_eq!(
        report_ids(&*store, filter(&|f| f.state = Some(ReportState::Open))).await,
        all
    );
    let page = store
        .list_reports(&ReportFilter::default(), Some("rep-01"), 1)
        .await
        .expect("page");
    assert_eq!(page.into_iter().map(|r| r.id).collect::<Vec<_>>(), ["rep-02"]);

    // Resolved once.
    let corrected = resolution(&e1, ReportState::Corrected, "已更正", 7);
    assert_eq!(store.resolve_report(&corrected).await.expect("resolve"), corrected);
    assert_eq!(store.get_report("rep-01").await.expect("get"), Some(corrected.clone()));
    let err = store
        .resolve_report(&resolution(&e1, ReportState::Rejected, "数据无误", 0))
        .await
        .expect_err("twice");
    failed_precondition_naming(err, "corrected");
    assert_eq!(store.get_report("rep-01").await.expect("get"), Some(corrected));
    let rejected = resolution(&e2, ReportState::Rejected, "数据无误", 0);
    assert_eq!(store.resolve_report(&rejected).await.expect("resolve"), rejected);
    let err = store
        .resolve_report(&resolution(&unknown, ReportState::Rejected, "x", 0))
        .await
        .expect_err("unknown");
    assert!(matches!(err, Error::NotFound(_)), "{err:?}");
    let err = store.resolve_report(&e3).await.expect_err("still open");
    assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");

    assert_eq!(
        report_ids(&*store, filter(&|f| f.state = Some(ReportState::Corrected))).await,
        ["rep-01"]
    );
    assert_eq!(
        report_ids(&*store, filter(&|f| f.state = Some(ReportState::Rejected))).await,
        ["rep-02"]
    );
    assert_eq!(
        report_ids(&*store, filter(&|f| f.state = Some(ReportState::Open))).await,
        ["rep-03"]
    );
}

async fn datasets_are_listed_by_active_grant(store: Arc<dyn Store>) {
    let p = parties(&*store).await;
    let third = open_dataset(&*store, &p.provider, "股东信息", DatasetKind::Table).await;
    let fourth = open_dataset(&*store, &p.provider, "年报信息", DatasetKind::Table).await;
    // The user holds an active grant on the table, one that expires at 100 s on the files, a
    // revoked one on the third; the other user an active one on the fourth.
    let active = submit(&*store, "req-01", &p.table, &p.user).await;
    grant_access(&*store, &active, "grant-01", t(1000)).await;
    let expiring = submit(&*store, "req-02", &p.files, &p.user).await;
    grant_access(&*store, &expiring, "grant-02", t(100)).await;
    let revoked = submit(&*store, "req-03", &third, &p.user).await;
    grant_access(&*store, &revoked, "grant-03", t(1000)).await;
    store
        .revoke_grant("grant-03", &p.provider, "用途结束", t(20))
        .await
        .expect("revoke");
    let others = submit(&*store, "req-04", &fourth, &p.other).await;
    grant_access(&*store, &others, "grant-04", t(1000)).await;
    // A request still pending grants nothing.
    submit(&*store, "req-05", &p.users_table, &p.other).await;

    let granted = |department: &str, at: DateTime<Utc>, kind: Option<DatasetKind>| {
        let store = store.clone();
        let filter = DatasetFilter {
            granted_to: Some((department.to_string(), at)),
            kind,
            ..DatasetFilter::default()
        };
        async move {
            let found = store.list_datasets(&filter, None, 100).await.expect("list");
            found.into_iter().map(|l| l.dataset.id).collect::<Vec<_>>()
        }
    };
    assert_eq!(
        granted(&p.user, t(70), None).await,
        [p.table.id.as_str(), p.files.id.as_str()]
    );
    assert_eq!(granted(&p.user, t(100), None).await, [p.table.id.as_str()]);
    assert!(granted(&p.user, t(1000), None).await.is_empty());
    assert_eq!(granted(&p.other, t(70), None).await, [fourth.id.as_str()]);
    assert!(granted(&p.provider, t(70), None).await.is_empty());
    // Before the grants were given (at 60 s), none was held.
    assert!(granted(&p.user, t(50), None).await.is_empty());
    assert_eq!(
        granted(&p.user, t(70), Some(DatasetKind::Table)).await,
        [p.table.id.as_str()]
    );
}

// ---------------------------------------------------------------------------------------------
// The audit trail

/// Event `n`, at `t(n)`.
fn audit_event(n: i64, actor: &str, action: &str, target: &str, about: &str) -> AuditEvent {
    AuditEvent {
        sequence: 0,
        at: t(n),
        actor: actor.into(),
        action: action.into(),
        target: target.into(),
        about: about.into(),
        outcome: "ok".into(),
        request_id: format!("req-{n}"),
        detail: format!(r#"{{"records":{n}}}"#),
    }
}

/// `n` events from `t(first)` on, by department 1 about itself.
fn audit_events(first: i64, n: i64) -> Vec<AuditEvent> {
    let code = dept_code(1);
    (first..first + n)
        .map(|i| audit_event(i, &code, "publish", "102/000001", &code))
        .collect()
}

async fn append(store: &dyn Store, events: &[AuditEvent], linker: impl Into<ChainLinker>) -> u64 {
    store
        .append_audit(events, &linker.into())
        .await
        .expect("append audit events")
}

/// Every stored event matching `filter`, read in pages of 7.
async fn all_audit(store: &dyn Store, filter: &AuditFilter) -> Vec<ChainedEvent> {
    let mut rows: Vec<ChainedEvent> = Vec::new();
    loop {
        let after = rows.last().map_or(0, |r| r.event.sequence);
        let page = store.list_audit(filter, after, 7).await.expect("list audit");
        assert!(page.len() <= 7);
        if page.is_empty() {
            return rows;
        }
        rows.extend(page);
    }
}

fn sequences_of(rows: &[ChainedEvent]) -> Vec<u64> {
    rows.iter().map(|r| r.event.sequence).collect()
}

/// Verifies the stored chain from its checkpoint, as `audit verify` does.
async fn verify_stored(store: &dyn Store) -> Result<u64, BrokenLink> {
    let checkpoint = store.audit_checkpoint().await.expect("checkpoint");
    verify(
        &checkpoint.hash,
        checkpoint.sequence + 1,
        all_audit(store, &AuditFilter::default()).await,
    )
}

async fn audit_events_are_chained_listed_and_filtered(store: Arc<dyn Store>) {
    let (a, b, c) = (dept_code(1), dept_code(2), dept_code(3));
    assert_eq!(
        store.audit_checkpoint().await.expect("checkpoint"),
        AuditCheckpoint {
            sequence: 0,
            hash: GENESIS.into(),
            pruned_at: None,
        }
    );
    assert_eq!(append(&*store, &[], ChainHash::Sha256).await, 0);
    assert!(all_audit(&*store, &AuditFilter::default()).await.is_empty());

    let mut denied = audit_event(4, &c, "denied", "102/000002", &b);
    denied.outcome = "PERMISSION_DENIED".into();
    denied.detail = r#"{"reason":"未获授权"}"#.into();
    // Nanoseconds are dropped before hashing: the event verifies as it is read back.
    let mut precise = audit_event(9, &b, "fetch", "102/000002", &b);
    precise.at += Duration::nanoseconds(654_321_987);
    let calls = [
        vec![
            audit_event(1, &a, "publish", "102/000001", &a),
            audit_event(2, &b, "fetch", "102/000001", &a),
            audit_event(3, "admin:ops", "register_department", &c, &c),
        ],
        vec![denied],
        vec![
            audit_event(5, &a, "publish", "102/000001", &a),
            audit_event(6, "admin:ops", "publish_entry", "102/000002", &b),
            audit_event(7, &c, "fetch", "102/000001", &a),
            audit_event(8, "127.0.0.1:50000", "handshake", "", ""),
            precise,
        ],
    ];
    let mut given = Vec::new();
    for (events, last) in calls.iter().zip([3, 4, 9]) {
        assert_eq!(append(&*store, events, ChainHash::Sha256).await, last);
        given.extend(events.iter().cloned());
    }
    assert_eq!(append(&*store, &[], ChainHash::Sha256).await, 9);

    // Stored as given, numbered from 1 in order, and linked.
    let rows = all_audit(&*store, &AuditFilter::default()).await;
    assert_eq!(sequences_of(&rows), (1..=9).collect::<Vec<_>>());
    for (row, (mut event, n)) in rows.iter().zip(given.into_iter().zip(1..)) {
        event.sequence = n;
        if n == 9 {
            event.at = t(9) + Duration::microseconds(654_321);
        }
        assert_eq!(row.event, event);
        assert_eq!(row.algorithm, ChainHash::Sha256);
        assert_eq!(row.hash.len(), 64);
    }
    assert_eq!(verify_stored(&*store).await, Ok(9));

    let listed = |f: &dyn Fn(&mut AuditFilter)| {
        let mut filter = AuditFilter::default();
        f(&mut filter);
        let store = store.clone();
        async move { sequences_of(&all_audit(&*store, &filter).await) }
    };
    assert_eq!(listed(&|f| f.actor = Some(a.clone())).await, [1, 5]);
    assert_eq!(listed(&|f| f.actor = Some("admin:ops".into())).await, [3, 6]);
    assert_eq!(listed(&|f| f.target = Some("102/000002".into())).await, [4, 6, 9]);
    assert_eq!(listed(&|f| f.action = Some("fetch".into())).await, [2, 7, 9]);
    // From (inclusive) to (exclusive).
    assert_eq!(
        listed(&|f| {
            f.from = Some(t(3));
            f.to = Some(t(6));
        })
        .await,
        [3, 4, 5]
    );
    assert_eq!(
        listed(&|f| f.from = Some(t(9) + Duration::seconds(1))).await,
        Vec::<u64>::new()
    );
    assert_eq!(listed(&|f| f.to = Some(t(2))).await, [1]);
    // What a department did or what concerns it.
    assert_eq!(listed(&|f| f.involving = Some(a.clone())).await, [1, 2, 5, 7]);
    assert_eq!(listed(&|f| f.involving = Some(b.clone())).await, [2, 4, 6, 9]);
    assert_eq!(listed(&|f| f.involving = Some(c.clone())).await, [3, 4, 7]);
    assert_eq!(
        listed(&|f| {
            f.involving = Some(b.clone());
            f.action = Some("fetch".into());
        })
        .await,
        [2, 9]
    );

    let page = store.list_audit(&AuditFilter::default(), 4, 2).await.expect("page");
    assert_eq!(sequences_of(&page), [5, 6]);
    assert!(
        store
            .list_audit(&AuditFilter::default(), 9, 10)
            .await
            .expect("page")
            .is_empty()
    );
}

async fn audit_chains_may_switch_hash_algorithm(store: Arc<dyn Store>) {
    append(&*store, &audit_events(1, 3), ChainHash::Sha256).await;
    append(&*store, &audit_events(4, 2), ChainHash::Sm3).await;
    append(&*store, &audit_events(6, 2), ChainHash::Sha256).await;
    let rows = all_audit(&*store, &AuditFilter::default()).await;
    let algorithms: Vec<_> = rows.iter().map(|r| r.algorithm).collect();
    use ChainHash::{Sha256, Sm3};
    assert_eq!(algorithms, [Sha256, Sha256, Sha256, Sm3, Sm3, Sha256, Sha256]);
    assert_eq!(verify_stored(&*store).await, Ok(7));
}

/// 8 tasks append 50 events each, in calls of 5, over `stores` (one store, or several hub nodes
/// over one database): the chain has every event once, each call's events consecutive, and
/// verifies.
async fn append_audit_concurrently(stores: Vec<Arc<dyn Store>>) {
    const TASKS: usize = 8;
    const CALLS: usize = 10;
    const PER_CALL: usize = 5;
    const TOTAL: u64 = (TASKS * CALLS * PER_CALL) as u64;
    let appenders: Vec<_> = (0..TASKS)
        .map(|task| {
            let store = stores[task % stores.len()].clone();
            tokio::spawn(async move {
                let hash = if task % 2 == 0 {
                    ChainHash::Sha256
                } else {
                    ChainHash::Sm3
                };
                let mut lasts = Vec::new();
                for call in 0..CALLS {
                    let events: Vec<_> = (0..PER_CALL)
                        .map(|i| {
                            let mut event = audit_event(i as i64, &dept_code(task as u32), "fetch", "102/000001", "");
                            event.request_id = format!("{task}-{call}-{i}");
                            event
                        })
                        .collect();
                    lasts.push((
                        format!("{task}-{call}-{}", PER_CALL - 1),
                        append(&*store, &events, hash).await,
                    ));
                }
                lasts
            })
        })
        .collect();
    let mut lasts = Vec::new();
    for appender in appenders {
        lasts.extend(appender.await.expect("appender"));
    }

    let rows = all_audit(&*stores[0], &AuditFilter::default()).await;
    assert_eq!(sequences_of(&rows), (1..=TOTAL).collect::<Vec<_>>());
    assert_eq!(verify_stored(&*stores[0]).await, Ok(TOTAL));
    // Each call's events are consecutive, and the call returned its last one's number.
    let by_request: std::collections::HashMap<&str, u64> = rows
        .iter()
        .map(|r| (r.event.request_id.as_str(), r.event.sequence))
        .collect();
    assert_eq!(by_request.len() as u64, TOTAL);
    for (last_request, last) in &lasts {
        assert_eq!(by_request[last_request.as_str()], *last, "{last_request}");
        let (call, _) = last_request.rsplit_once('-').expect("task-call-i");
        for i in 0..PER_CALL {
            assert_eq!(
                by_request[format!("{call}-{i}").as_str()],
                last - (PER_CALL - 1 - i) as u64
            );
        }
    }
}

async fn concurrent_audit_appends_never_fork_the_chain(store: Arc<dyn Store>) {
    append_audit_concurrently(vec![store.clone(), store.clone(), store]).await;
}

async fn pruning_keeps_the_rest_of_the_chain_verifiable(store: Arc<dyn Store>) {
    assert_eq!(store.prune_audit(t(100), t(100)).await.expect("prune nothing"), 0);
    // Event 7 was recorded by a hub whose clock lags: it stays with its neighbours.
    let mut events = audit_events(1, 10);
    events[6].at = t(2);
    append(&*store, &events[..6], ChainHash::Sha256).await;
    append(&*store, &events[6..], ChainHash::Sm3).await;
    let before = all_audit(&*store, &AuditFilter::default()).await;

    // Removes 1 to 4: event 5 is the first at or after t(5).
    assert_eq!(store.prune_audit(t(5), t_us(1000)).await.expect("prune"), 4);
    let checkpoint = store.audit_checkpoint().await.expect("checkpoint");
    assert_eq!(
        checkpoint,
        AuditCheckpoint {
            sequence: 4,
            hash: before[3].hash.clone(),
            pruned_at: Some(t_us(1000)),
        }
    );
    let rest = all_audit(&*store, &AuditFilter::default()).await;
    assert_eq!(rest, before[4..]);
    assert_eq!(verify(&checkpoint.hash, 5, rest.clone()), Ok(6));
    assert_eq!(verify_stored(&*store).await, Ok(6));
    // From a wrong checkpoint, the first stored event does not verify.
    assert_eq!(verify(GENESIS, 5, rest.clone()).map_err(|b| b.sequence), Err(5));
    assert_eq!(verify(&before[2].hash, 5, rest.clone()).map_err(|b| b.sequence), Err(5));
    assert_eq!(verify(&checkpoint.hash, 1, rest).map_err(|b| b.sequence), Err(5));

    // Nothing more before t(5); the checkpoint stays.
    assert_eq!(store.prune_audit(t(5), t(2000)).await.expect("prune"), 0);
    assert_eq!(store.audit_checkpoint().await.expect("checkpoint"), checkpoint);

    // The chain goes on after the head, not after the checkpoint.
    assert_eq!(append(&*store, &audit_events(11, 2), ChainHash::Sha256).await, 12);
    assert_eq!(verify_stored(&*store).await, Ok(8));

    // Everything before a moment after the last event: all of it, and the chain still goes on.
    let last = all_audit(&*store, &AuditFilter::default()).await.pop().expect("events");
    assert_eq!(store.prune_audit(t(10_000), t(3000)).await.expect("prune"), 8);
    assert_eq!(
        store.audit_checkpoint().await.expect("checkpoint"),
        AuditCheckpoint {
            sequence: 12,
            hash: last.hash,
            pruned_at: Some(t(3000)),
        }
    );
    assert_eq!(verify_stored(&*store).await, Ok(0));
    assert_eq!(append(&*store, &audit_events(13, 1), ChainHash::Sm3).await, 13);
    assert_eq!(verify_stored(&*store).await, Ok(1));
}

/// Where verification of the stored chain breaks.
async fn broken_at(store: &dyn Store) -> (u64, String) {
    let broken = verify_stored(store).await.expect_err("the chain is broken");
    (broken.sequence, broken.reason)
}

async fn tampering_in_the_database_is_named_by_verification(db: Tampering) {
    let store = &*db.store;
    let mut events = audit_events(1, 10);
    events[5].outcome = "PERMISSION_DENIED".into();
    append(store, &events[..4], ChainHash::Sha256).await;
    append(store, &events[4..], ChainHash::Sha256).await;
    assert_eq!(verify_stored(store).await, Ok(10));
    let rows = all_audit(store, &AuditFilter::default()).await;

    // Reordered: rows 3 and 4 swap places (their numbers, through a spare one).
    let swap = [
        "UPDATE audit_events SET sequence = -4 WHERE sequence = 4",
        "UPDATE audit_events SET sequence = 4 WHERE sequence = 3",
        "UPDATE audit_events SET sequence = 3 WHERE sequence = -4",
    ];
    db.execute(&swap).await;
    assert_eq!(broken_at(store).await.0, 3);
    db.execute(&swap).await;
    assert_eq!(verify_stored(store).await, Ok(10));

    // Changed: a row's detail, or its outcome.
    db.execute(&[r#"UPDATE audit_events SET detail = '{"records":5000}' WHERE sequence = 5"#])
        .await;
    let (sequence, reason) = broken_at(store).await;
    assert_eq!(sequence, 5);
    assert!(reason.contains("changed"), "{reason}");
    db.execute(&[r#"UPDATE audit_events SET detail = '{"records":5}' WHERE sequence = 5"#])
        .await;
    db.execute(&["UPDATE audit_events SET outcome = 'ok' WHERE sequence = 6"])
        .await;
    assert_eq!(broken_at(store).await.0, 6);
    db.execute(&["UPDATE audit_events SET outcome = 'PERMISSION_DENIED' WHERE sequence = 6"])
        .await;
    assert_eq!(verify_stored(store).await, Ok(10));

    // Changed with its own hash recomputed: the next row's link breaks.
    let mut forged = rows[6].event.clone();
    forged.detail = r#"{"records":0}"#.into();
    let forged_hash = xinqiao_domain::audit::link(ChainHash::Sha256, &rows[5].hash, &forged);
    db.execute(&[&format!(
        r#"UPDATE audit_events SET detail = '{{"records":0}}', hash = '{forged_hash}' WHERE sequence = 7"#
    )])
    .await;
    assert_eq!(broken_at(store).await.0, 8);
    db.execute(&[&format!(
        r#"UPDATE audit_events SET detail = '{{"records":7}}', hash = '{}' WHERE sequence = 7"#,
        rows[6].hash
    )])
    .await;
    assert_eq!(verify_stored(store).await, Ok(10));

    // An algorithm the hub does not know: listing still works, and verification names the row.
    db.execute(&["UPDATE audit_events SET algorithm = 'md5' WHERE sequence = 2"])
        .await;
    assert_eq!(all_audit(store, &AuditFilter::default()).await.len(), 10);
    assert_eq!(broken_at(store).await.0, 2);
    db.execute(&["UPDATE audit_events SET algorithm = 'sha256' WHERE sequence = 2"])
        .await;
    assert_eq!(verify_stored(store).await, Ok(10));

    // Removed: a row in the middle; the one after the gap is named.
    db.execute(&["DELETE FROM audit_events WHERE sequence = 8"]).await;
    let (sequence, reason) = broken_at(store).await;
    assert_eq!(sequence, 9);
    assert!(reason.contains("removed"), "{reason}");
}

async fn a_publish_and_its_audit_event_commit_together(store: Arc<dyn Store>) {
    let provider = register(&*store, 1).await;
    let dataset = open_dataset(&*store, &provider, "企业登记信息", DatasetKind::Table).await;
    store
        .append_audit(
            &[audit_event(1, &provider, "CreateDataset", &dataset.id, &provider)],
            &ChainHash::Sha256.into(),
        )
        .await
        .expect("append");
    let mut event = audit_event(2, &provider, "Publish", &dataset.id, &provider);
    event.detail = r#"{"idempotency_key":"k-1","rejected":1}"#.into();
    let publish = |key: &'static str, event: &AuditEvent| {
        let store = store.clone();
        let dataset = dataset.id.clone();
        let event = event.clone();
        async move {
            store
                .publish_batch(&NewBatch {
                    dataset: &dataset,
                    idempotency_key: key,
                    changes: &[upsert("a", "1"), upsert("b", "1")],
                    rejected: "[]",
                    at: t(100),
                    audit: Some(BatchAudit {
                        event: &event,
                        linker: ChainHash::Sm3.into(),
                    }),
                })
                .await
        }
    };
    publish("k-1", &event).await.expect("publish");
    let rows = store.list_audit(&AuditFilter::default(), 0, 10).await.expect("list");
    assert_eq!(rows.len(), 2, "the batch's event is in the chain");
    let stored = &rows[1];
    assert_eq!((stored.event.sequence, stored.event.action.as_str()), (2, "Publish"));
    assert_eq!(stored.algorithm, ChainHash::Sm3);
    let detail: serde_json::Value = serde_json::from_str(&stored.event.detail).expect("JSON detail");
    assert_eq!(
        detail,
        serde_json::json!({
            "idempotency_key": "k-1", "rejected": 1, "accepted": 2,
            "first_sequence": 1, "last_sequence": 2, "replayed": false,
        })
    );
    assert_eq!(xinqiao_domain::audit::verify(GENESIS, 1, rows), Ok(2));

    // A replay writes nothing, its event included.
    let replay = publish("k-1", &event).await.expect("replay");
    assert!(replay.replayed);
    assert_eq!(
        store
            .list_audit(&AuditFilter::default(), 0, 10)
            .await
            .expect("list")
            .len(),
        2
    );

    // A batch that fails (a key already in it twice is fine; an unknown dataset is not) leaves
    // no event behind.
    let failed = store
        .publish_batch(&NewBatch {
            dataset: "999999/000001",
            idempotency_key: "k-2",
            changes: &[upsert("a", "1")],
            rejected: "[]",
            at: t(100),
            audit: Some(BatchAudit {
                event: &event,
                linker: ChainHash::Sha256.into(),
            }),
        })
        .await;
    assert!(failed.is_err());
    assert_eq!(
        store
            .list_audit(&AuditFilter::default(), 0, 10)
            .await
            .expect("list")
            .len(),
        2
    );
}

// ---------------------------------------------------------------------------------------------
// Operations: schema state, hub nodes, backups

async fn a_fresh_database_is_at_this_builds_schema(store: Arc<dyn Store>) {
    let status = store.schema_status().await.expect("schema status");
    assert!(status.up_to_date(), "{status:?}");
    // Both backends number their migrations alike, from 1 without gaps.
    assert_eq!(status.known, (1..=status.target()).collect::<BTreeSet<i64>>());
    assert!(status.target() >= 6, "{status:?}");
    store.ping().await.expect("ping");
    // Applying again changes nothing.
    store.apply_migrations().await.expect("migrate an up-to-date database");
    assert_eq!(store.schema_status().await.expect("status"), status);

    assert_eq!(store.audit_head().await.expect("head"), (0, GENESIS.to_string()));
    let last = append(&*store, &audit_events(1, 3), ChainHash::Sha256).await;
    let rows = all_audit(&*store, &AuditFilter::default()).await;
    let tail = rows.last().expect("three events");
    assert_eq!(store.audit_head().await.expect("head"), (last, tail.hash.clone()));
}

async fn migrations_missing_are_pending_and_unknown_ones_refused(t: Tampering) {
    let store = t.store.clone();
    let target = store.schema_status().await.expect("status").target();
    // As if the last migration had not run yet (its statements are idempotent).
    t.execute(&[&format!("DELETE FROM _sqlx_migrations WHERE version = {target}")])
        .await;
    let status = store.schema_status().await.expect("status");
    assert_eq!(status.pending(), vec![target]);
    assert_eq!(status.current(), target - 1);
    store.apply_migrations().await.expect("apply the pending migration");
    assert!(store.schema_status().await.expect("status").up_to_date());

    // A newer hub's migration: this build knows nothing of it and refuses to migrate.
    let newer = match &t.database {
        RawDatabase::Sqlite { .. } => {
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
             VALUES (999, 'from a newer hub', 1, x'00', 0)"
        }
        RawDatabase::Postgres { .. } => {
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
             VALUES (999, 'from a newer hub', true, '\\x00'::bytea, 0)"
        }
    };
    t.execute(&[newer]).await;
    let status = store.schema_status().await.expect("status");
    assert_eq!((status.current(), status.unknown()), (999, vec![999]));
    let refused = store.apply_migrations().await.expect_err("a newer database is refused");
    assert!(
        matches!(&refused, Error::FailedPrecondition(m) if m.contains("999")),
        "{refused:?}"
    );
}

fn hub_node(id: &str, host: &str, seen: i64) -> HubNode {
    HubNode {
        id: id.into(),
        host: host.into(),
        pid: 4242,
        listen: "10.0.0.1:7443".into(),
        version: "0.1.0".into(),
        schema_known: 6,
        started_at: t(0),
        seen_at: t(seen),
    }
}

async fn hub_nodes_are_announced_listed_and_retired(store: Arc<dyn Store>) {
    assert!(store.list_nodes(t(0)).await.expect("list").is_empty());
    let a = hub_node("node-a", "host-a", 10);
    let b = hub_node("node-b", "host-b", 20);
    store.announce_node(&a).await.expect("announce a");
    store.announce_node(&b).await.expect("announce b");
    assert_eq!(store.list_nodes(t(0)).await.expect("list"), vec![a.clone(), b.clone()]);
    // Seen since: a was last seen before, b after.
    assert_eq!(store.list_nodes(t(15)).await.expect("list"), vec![b.clone()]);

    // Announcing again moves only the time it was seen.
    let a_later = HubNode {
        seen_at: t(30),
        listen: "ignored:1".into(),
        ..a.clone()
    };
    store.announce_node(&a_later).await.expect("announce a again");
    let listed = store.list_nodes(t(25)).await.expect("list");
    assert_eq!(
        listed,
        vec![HubNode {
            seen_at: t(30),
            ..a.clone()
        }]
    );

    store.retire_node("node-a").await.expect("retire");
    store
        .retire_node("node-unknown")
        .await
        .expect("retiring an unknown node is no error");
    assert_eq!(store.list_nodes(t(0)).await.expect("list"), vec![b]);
}

async fn backups_are_online_copies_on_sqlite_and_pg_dump_on_postgres(t: Tampering) {
    let store = t.store.clone();
    append(&*store, &audit_events(1, 5), ChainHash::Sha256).await;
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("copy.db");
    match &t.database {
        RawDatabase::Sqlite { .. } => {
            store.backup_to(&path).await.expect("backup");
            // Never over an existing file.
            let again = store.backup_to(&path).await.expect_err("the file exists");
            assert!(matches!(again, Error::AlreadyExists(_)), "{again:?}");
            let copy = SqliteStore::connect(&format!("sqlite://{}", path.display()))
                .await
                .expect("open the copy");
            assert!(copy.schema_status().await.expect("status").up_to_date());
            assert_eq!(
                copy.audit_head().await.expect("head"),
                store.audit_head().await.expect("head")
            );
            assert_eq!(verify_stored(&copy).await, Ok(5));
            copy.close().await;
        }
        RawDatabase::Postgres { .. } => {
            let refused = store
                .backup_to(&path)
                .await
                .expect_err("PostgreSQL is backed up with pg_dump");
            assert!(
                matches!(&refused, Error::FailedPrecondition(m) if m.contains("pg_dump")),
                "{refused:?}"
            );
            assert!(!path.exists());
        }
    }
}

fn audit_key(id: &str, byte: u8) -> ChainKey {
    ChainKey::new(id, &[byte; 32]).expect("a valid key")
}

/// The keyed chain as a verifier holding the key sees it: the first broken sequence and reason.
async fn keyed_break(store: &dyn Store, keys: &Keyring) -> Result<u64, (u64, String)> {
    let checkpoint = store.audit_checkpoint().await.expect("checkpoint");
    verify_keyed(
        &checkpoint.hash,
        checkpoint.sequence + 1,
        all_audit(store, &AuditFilter::default()).await,
        keys,
    )
    .map_err(|b| (b.sequence, b.reason))
}

async fn a_keyed_chain_names_every_tampering_even_recomputed_without_the_key(db: Tampering) {
    let store = &*db.store;
    let keys = Keyring::new(vec![audit_key("k1", 7)], 0);
    let linker = keys.linker(ChainHash::Sha256);
    append(store, &audit_events(1, 4), linker.clone()).await;
    append(store, &audit_events(5, 6), linker.clone()).await;
    assert_eq!(keyed_break(store, &keys).await, Ok(10));
    let rows = all_audit(store, &AuditFilter::default()).await;
    assert!(rows.iter().all(|r| r.key_id.as_deref() == Some("k1")));
    // Without the key, the keyed links cannot be checked at all.
    assert_eq!(verify_stored(store).await.map_err(|b| b.sequence), Err(1));

    // Every column of a row, changed alone, is named at that row.
    let original = &rows[4];
    let e = &original.event;
    let columns: [(&str, &str); 9] = [
        ("actor", &e.actor),
        ("action", &e.action),
        ("target", &e.target),
        ("about", &e.about),
        ("outcome", &e.outcome),
        ("request_id", &e.request_id),
        ("detail", &e.detail),
        ("hash", &original.hash),
        ("algorithm", "hmac-sha256:k1"),
    ];
    for (column, value) in columns {
        let forged = if column == "algorithm" {
            "hmac-sm3:k1".to_string()
        } else {
            format!("{value}x")
        };
        db.execute(&[&format!(
            "UPDATE audit_events SET {column} = '{forged}' WHERE sequence = 5"
        )])
        .await;
        let broken = keyed_break(store, &keys).await;
        assert_eq!(broken.as_ref().map_err(|b| b.0), Err(5), "{column}: {broken:?}");
        db.execute(&[&format!(
            "UPDATE audit_events SET {column} = '{value}' WHERE sequence = 5"
        )])
        .await;
        assert_eq!(keyed_break(store, &keys).await, Ok(10), "{column} restored");
    }
    // The time, in each backend's own type.
    let shift = match &db.database {
        RawDatabase::Sqlite { .. } => "UPDATE audit_events SET at = '2001-01-01T00:00:00Z' WHERE sequence = 5",
        RawDatabase::Postgres { .. } => "UPDATE audit_events SET at = at - interval '1 second' WHERE sequence = 5",
    };
    let unshift = match &db.database {
        RawDatabase::Sqlite { .. } => format!(
            "UPDATE audit_events SET at = '{}' WHERE sequence = 5",
            e.at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
        ),
        RawDatabase::Postgres { .. } => {
            "UPDATE audit_events SET at = at + interval '1 second' WHERE sequence = 5".into()
        }
    };
    db.execute(&[shift]).await;
    assert_eq!(keyed_break(store, &keys).await.map_err(|b| b.0), Err(5));
    db.execute(&[&unshift]).await;
    assert_eq!(keyed_break(store, &keys).await, Ok(10));

    // Reordered, removed, inserted.
    let swap = [
        "UPDATE audit_events SET sequence = -4 WHERE sequence = 4",
        "UPDATE audit_events SET sequence = 4 WHERE sequence = 3",
        "UPDATE audit_events SET sequence = 3 WHERE sequence = -4",
    ];
    db.execute(&swap).await;
    assert_eq!(keyed_break(store, &keys).await.map_err(|b| b.0), Err(3));
    db.execute(&swap).await;
    assert_eq!(keyed_break(store, &keys).await, Ok(10));
    let mut inserted = rows[9].event.clone();
    inserted.sequence = 11;
    inserted.action = "forged".into();
    // The best an intruder without the key can do: a link under a key of their own making.
    let guessed = xinqiao_domain::audit::keyed_link(ChainHash::Sha256, &audit_key("k1", 8), &rows[9].hash, &inserted);
    let at = match &db.database {
        RawDatabase::Sqlite { .. } => format!("'{}'", inserted.at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)),
        RawDatabase::Postgres { .. } => format!(
            "'{}'::timestamptz",
            inserted.at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
        ),
    };
    db.execute(&[&format!(
        "INSERT INTO audit_events (sequence, at, actor, action, target, about, outcome, request_id, detail, hash, algorithm) \
         VALUES (11, {at}, '{}', 'forged', '{}', '{}', 'ok', 'req-x', '{{}}', '{guessed}', 'hmac-sha256:k1')",
        inserted.actor, inserted.target, inserted.about
    )])
    .await;
    assert_eq!(keyed_break(store, &keys).await.map_err(|b| b.0), Err(11));
    db.execute(&["DELETE FROM audit_events WHERE sequence = 11"]).await;
    db.execute(&["DELETE FROM audit_events WHERE sequence = 6"]).await;
    let (sequence, reason) = keyed_break(store, &keys).await.expect_err("a row is gone");
    assert_eq!(sequence, 7);
    assert!(reason.contains("removed"), "{reason}");

    // A full recomputation by someone who can write the database but does not hold the key: row
    // 2 changed, every later row renumbered and relinked with the plain hash, the head moved.
    // Consistent as a plain chain; not as the keyed chain it must be.
    let rest: Vec<AuditEvent> = all_audit(store, &AuditFilter::default())
        .await
        .into_iter()
        .map(|r| r.event)
        .collect();
    let mut previous = GENESIS.to_string();
    let mut statements = vec!["DELETE FROM audit_events".to_string()];
    for (n, mut event) in rest.into_iter().enumerate() {
        event.sequence = n as u64 + 1;
        if event.sequence == 2 {
            event.outcome = "ok-rewritten".into();
        }
        let hash = xinqiao_domain::audit::link(ChainHash::Sha256, &previous, &event);
        let at = match &db.database {
            RawDatabase::Sqlite { .. } => {
                format!("'{}'", event.at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
            }
            RawDatabase::Postgres { .. } => format!(
                "'{}'::timestamptz",
                event.at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
            ),
        };
        statements.push(format!(
            "INSERT INTO audit_events (sequence, at, actor, action, target, about, outcome, request_id, detail, hash, algorithm) \
             VALUES ({}, {at}, '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{hash}', 'sha256')",
            event.sequence, event.actor, event.action, event.target, event.about, event.outcome, event.request_id, event.detail
        ));
        previous = hash;
    }
    statements.push(format!(
        "UPDATE audit_head SET last_sequence = 9, last_hash = '{previous}' WHERE id = 1"
    ));
    let statements: Vec<&str> = statements.iter().map(String::as_str).collect();
    db.execute(&statements).await;
    assert_eq!(verify_stored(store).await, Ok(9), "a consistent plain chain");
    let (sequence, reason) = keyed_break(store, &keys).await.expect_err("not the keyed chain");
    assert_eq!(sequence, 1);
    assert!(reason.contains("not keyed"), "{reason}");
}

async fn open_streams_are_noted_and_an_orphan_is_ended_once_with_its_event(store: Arc<dyn Store>) {
    let stream = |id: &str, at: i64| OpenStream {
        request_id: id.into(),
        node_id: "node-a".into(),
        actor: dept_code(2),
        action: "Subscribe".into(),
        target: "102001/000001".into(),
        about: dept_code(1),
        consumer: Some("etl".into()),
        opened_at: t(at),
    };
    assert!(store.list_open_streams().await.expect("list").is_empty());
    store.record_open_stream(&stream("r1", 5)).await.expect("open r1");
    store.record_open_stream(&stream("r2", 3)).await.expect("open r2");
    let refused = store
        .record_open_stream(&stream("r1", 9))
        .await
        .expect_err("one row per request");
    assert!(matches!(refused, Error::AlreadyExists(_)), "{refused:?}");
    assert_eq!(
        store.list_open_streams().await.expect("list"),
        vec![stream("r2", 3), stream("r1", 5)]
    );
    store.forget_open_stream("r2").await.expect("forget");
    store
        .forget_open_stream("r2")
        .await
        .expect("forgetting twice is no error");

    let mut end = audit_event(20, &dept_code(2), "Subscribe", "102001/000001", &dept_code(1));
    end.request_id = "r1".into();
    let linker = ChainLinker::from(ChainHash::Sha256);
    assert!(store.end_orphaned_stream("r1", &end, &linker).await.expect("end"));
    // A second node doing the same finds nothing to end, and appends nothing.
    assert!(!store.end_orphaned_stream("r1", &end, &linker).await.expect("end again"));
    assert!(store.list_open_streams().await.expect("list").is_empty());
    let rows = all_audit(&*store, &AuditFilter::default()).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(
        (rows[0].event.request_id.as_str(), rows[0].event.action.as_str()),
        ("r1", "Subscribe")
    );
    assert_eq!(verify_stored(&*store).await, Ok(1));
}

fn interface_spec(upstream: &str, operations: &[&str]) -> InterfaceSpec {
    InterfaceSpec {
        upstream: upstream.into(),
        upstream_ca_pem: "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n".into(),
        operations: operations
            .iter()
            .map(|name| Operation {
                name: (*name).into(),
                method: Method::Post,
                path: format!("/{name}"),
                request_schema: SchemaRef {
                    subject: "req".into(),
                    version: 1,
                },
                response_schema: SchemaRef {
                    subject: "resp".into(),
                    version: 2,
                },
                idempotent: *name == "verify",
            })
            .collect(),
        timeout_ms: 1500,
        rate_per_minute: 120,
        max_concurrency: 8,
        descriptor_set: Vec::new(),
    }
}

async fn interfaces_are_registered_replaced_listed_and_disabled(store: Arc<dyn Store>) {
    assert_eq!(store.get_interface("102/000001").await.expect("get"), None);
    let first = interface_spec("https://a.example:8443/api", &["verify"]);
    let a = store
        .put_interface("102/000001", &dept_code(1), &first, t(10))
        .await
        .expect("register");
    assert_eq!((a.enabled, a.registered_at, a.updated_at), (true, t(10), t(10)));
    assert_eq!(a.spec, first);
    assert_eq!(store.get_interface("102/000001").await.expect("get"), Some(a.clone()));

    // Disabled with its reason, then registered again: enabled, the reason gone, the first
    // registration time kept.
    let disabled = store
        .disable_interface("102/000001", "上游系统迁移 upstream moving", t(20))
        .await
        .expect("disable");
    assert!(!disabled.enabled);
    assert_eq!(disabled.disabled_reason, "上游系统迁移 upstream moving");
    assert_eq!(disabled.spec, first);
    let second = interface_spec("https://b.example/v2", &["verify", "lookup"]);
    let b = store
        .put_interface("102/000001", &dept_code(1), &second, t(30))
        .await
        .expect("replace");
    assert_eq!((b.enabled, b.disabled_reason.as_str()), (true, ""));
    assert_eq!((b.registered_at, b.updated_at), (t(10), t(30)));
    assert_eq!(b.spec, second);

    let c = store
        .put_interface("101/000002", &dept_code(2), &first, t(40))
        .await
        .expect("another provider's");
    let codes = |list: Vec<Interface>| list.into_iter().map(|i| i.code).collect::<Vec<_>>();
    assert_eq!(
        codes(store.list_interfaces(None, None, 10).await.expect("list")),
        ["101/000002", "102/000001"]
    );
    assert_eq!(
        codes(store.list_interfaces(None, Some("101/000002"), 10).await.expect("page")),
        ["102/000001"]
    );
    assert_eq!(
        codes(store.list_interfaces(None, None, 1).await.expect("limit")),
        ["101/000002"]
    );
    assert_eq!(
        store
            .list_interfaces(Some(&dept_code(2)), None, 10)
            .await
            .expect("one provider's"),
        vec![c]
    );
    let missing = store
        .disable_interface("999/000001", "x", t(50))
        .await
        .expect_err("unknown");
    assert!(matches!(missing, Error::NotFound(_)), "{missing:?}");
}

/// A request and its grant name what an entry shares by its resource code: a dataset, or an
/// interface, which has no dataset behind it (migration 9). The hub checks the entry.
async fn requests_and_grants_may_be_for_an_interface(store: Arc<dyn Store>) {
    let p = parties(&*store).await;
    let mut on_interface = request_for("req-09", &p.table, &p.user, day(10));
    on_interface.application.dataset = "101/000009".into();
    on_interface.application.operations = vec!["verify".into(), "lookup".into()];
    let stored = store
        .create_request(&on_interface)
        .await
        .expect("a request on an interface's entry");
    assert_eq!(store.get_request("req-09").await.expect("get"), Some(stored.clone()));
    let by_code = RequestFilter {
        dataset: Some("101/000009".into()),
        ..RequestFilter::default()
    };
    assert_eq!(request_ids(&*store, by_code).await, ["req-09"]);

    // Approved for one of the operations: the grant keeps which.
    let (answered, mut grant) = approval(&stored, "grant-09", t(86_400 * 20));
    grant.operations = vec!["verify".into()];
    let settled = store.settle_request(&answered, Some(&grant)).await.expect("settle");
    assert_eq!(settled.application.operations, ["verify", "lookup"]);
    assert_eq!(store.get_grant("grant-09").await.expect("get"), Some(grant));
}

// ---------------------------------------------------------------------------------------------
// The web console's sign-ins

async fn console_sign_in_tokens_are_used_once_before_they_expire(store: Arc<dyn Store>) {
    let token = |hash: &str, expires: i64| SignInToken {
        token_hash: hash.into(),
        principal: "urn:xinqiao:admin:ops".into(),
        created_at: t(0),
        expires_at: t(expires),
    };
    store
        .create_sign_in_token(&token("a", 600))
        .await
        .expect("store a token");
    store
        .create_sign_in_token(&token("b", 600))
        .await
        .expect("store a token");
    store
        .create_sign_in_token(&token("late", 60))
        .await
        .expect("store a token");
    assert!(
        store.create_sign_in_token(&token("a", 600)).await.is_err(),
        "a token hash is stored once"
    );
    assert_eq!(store.redeem_sign_in_token("unknown", t(1)).await.expect("redeem"), None);
    assert_eq!(
        store.redeem_sign_in_token("a", t(1)).await.expect("redeem"),
        Some("urn:xinqiao:admin:ops".into())
    );
    assert_eq!(
        store.redeem_sign_in_token("a", t(2)).await.expect("redeem"),
        None,
        "a token signs in once"
    );
    assert_eq!(
        store.redeem_sign_in_token("late", t(60)).await.expect("redeem"),
        None,
        "an expired token signs nobody in"
    );
    assert_eq!(
        store.redeem_sign_in_token("late", t(1)).await.expect("redeem"),
        None,
        "nor is it usable after a try"
    );

    // Two hub nodes racing for one token: exactly one wins.
    let racers: Vec<_> = (0..8)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.redeem_sign_in_token("b", t(3)).await.expect("redeem") })
        })
        .collect();
    let mut winners = 0;
    for racer in racers {
        winners += usize::from(racer.await.expect("racer").is_some());
    }
    assert_eq!(winners, 1);

    assert_eq!(store.purge_console(t(601)).await.expect("purge"), 3);
    assert_eq!(store.purge_console(t(601)).await.expect("purge"), 0);
}

async fn console_sessions_expire_end_and_are_purged(store: Arc<dyn Store>) {
    let session = |hash: &str, expires: i64| ConsoleSession {
        session_hash: hash.into(),
        principal: format!("urn:xinqiao:dept:{}", dept_code(1)),
        created_at: t(0) + Duration::nanoseconds(123_456_789),
        expires_at: t(expires),
    };
    store
        .create_console_session(&session("s1", 3600))
        .await
        .expect("session");
    store
        .create_console_session(&session("s2", 100))
        .await
        .expect("session");
    let mut stored = session("s1", 3600);
    stored.created_at = t(0) + Duration::nanoseconds(123_456_000);
    assert_eq!(
        store.get_console_session("s1", t(10)).await.expect("get"),
        Some(stored),
        "times are kept to the microsecond"
    );
    assert_eq!(store.get_console_session("nope", t(10)).await.expect("get"), None);
    assert_eq!(
        store.get_console_session("s2", t(100)).await.expect("get"),
        None,
        "an expired session is gone"
    );
    store.end_console_session("s1").await.expect("sign out");
    store
        .end_console_session("s1")
        .await
        .expect("signing out twice is fine");
    assert_eq!(store.get_console_session("s1", t(10)).await.expect("get"), None);
    assert_eq!(store.purge_console(t(101)).await.expect("purge"), 1);
}

// ---------------------------------------------------------------------------------------------
// Federation

fn peer_hub(code: &str, relation: Relation) -> PeerHub {
    PeerHub {
        division_code: code.into(),
        name: format!("平台 {code}"),
        address: format!("https://hub-{code}.example:7443"),
        ca_pem: "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n".into(),
        relation,
        exposure: Exposure {
            catalogue: relation == Relation::Parent,
            classifications: vec![],
        },
        catalogue_cursor: 0,
        added_by: "admin:ops".into(),
        added_at: t(5),
    }
}

/// A change as a child's feed would send it: an entry of `origin`, at `position`.
fn child_change(position: u64, origin: &str, code: &str, name: &str, state: EntryState) -> CatalogueChange {
    CatalogueChange {
        position,
        entry: FederatedEntry {
            origin_hub: origin.into(),
            via_hub: String::new(),
            entry: CatalogEntry {
                resource_code: code.into(),
                provider_code: "11330110MB0001001X".into(),
                provider_name: "区市场监督管理局".into(),
                content: content("102", name),
                state,
                version: position,
                state_reason: String::new(),
                published_at: Some(t(10)),
                created_at: t(1),
                updated_at: t(10 + i64::try_from(position).unwrap_or(0)),
            },
        },
    }
}

async fn feed(store: &dyn Store, after: u64) -> Vec<(u64, String, String, EntryState)> {
    let (changes, _) = store.catalogue_changes(after, 1000).await.expect("catalogue changes");
    changes
        .into_iter()
        .map(|c| {
            (
                c.position,
                c.entry.origin_hub,
                c.entry.entry.resource_code,
                c.entry.entry.state,
            )
        })
        .collect()
}

async fn federated_codes(store: &dyn Store, visibility: &EntryVisibility, keyword: &str) -> Vec<String> {
    let filter = EntryFilter {
        keyword: keyword.into(),
        ..EntryFilter::default()
    };
    store
        .search_federated_entries(visibility, &filter, None, 100)
        .await
        .expect("search aggregated entries")
        .into_iter()
        .map(|e| format!("{}:{}", e.origin_hub, e.entry.resource_code))
        .collect()
}

async fn peers_are_registered_listed_and_removed(store: Arc<dyn Store>) {
    let store = store.as_ref();
    assert_eq!(store.list_peers().await.expect("list"), vec![]);
    let county = store
        .add_peer(&peer_hub("330110", Relation::Child))
        .await
        .expect("add the county");
    assert_eq!(county, peer_hub("330110", Relation::Child));
    store
        .add_peer(&peer_hub("330000", Relation::Parent))
        .await
        .expect("add the province");
    assert!(matches!(
        store.add_peer(&peer_hub("330110", Relation::Peer)).await,
        Err(Error::AlreadyExists(_))
    ));
    let listed: Vec<_> = store
        .list_peers()
        .await
        .expect("list")
        .into_iter()
        .map(|p| (p.division_code, p.relation))
        .collect();
    assert_eq!(
        listed,
        [
            ("330000".to_string(), Relation::Parent),
            ("330110".to_string(), Relation::Child)
        ]
    );
    assert_eq!(
        store
            .get_peer("330000")
            .await
            .expect("get")
            .map(|p| p.exposure.catalogue),
        Some(true)
    );
    assert_eq!(store.remove_peer("330110", t(6)).await, Ok(0));
    assert!(matches!(
        store.remove_peer("330110", t(6)).await,
        Err(Error::NotFound(_))
    ));
    assert_eq!(store.get_peer("330110").await.expect("get"), None);
}

async fn the_catalogue_feed_follows_publications_and_withdrawals(store: Arc<dyn Store>) {
    let store = store.as_ref();
    let provider = register(store, 1).await;
    let a = create(store, &provider, &content("102", "企业登记信息")).await;
    let b = create(store, &provider, &content("102", "个体工商户信息")).await;
    assert_eq!(feed(store, 0).await, vec![], "drafts are not offered");
    let pending = save_as(store, &a, EntryState::PendingReview, EntryAction::Submit).await;
    assert_eq!(feed(store, 0).await, vec![]);
    let published = publish(store, &pending).await;
    publish(store, &b).await;
    assert_eq!(
        feed(store, 0).await,
        vec![
            (1, String::new(), a.resource_code.clone(), EntryState::Published),
            (2, String::new(), b.resource_code.clone(), EntryState::Published),
        ]
    );
    let (changes, head) = store.catalogue_changes(0, 1).await.expect("a page");
    assert_eq!((changes.len(), head), (1, 2));
    let offered = &changes[0].entry.entry;
    assert_eq!(offered.content, published.content);
    assert_eq!(offered.version, published.version);
    assert_eq!(offered.provider_name, profile(1).name);

    // A withdrawal moves the entry to the end of the feed; nothing is offered twice.
    save_as(store, &published, EntryState::Withdrawn, EntryAction::Withdraw).await;
    assert_eq!(
        feed(store, 1).await,
        vec![
            (2, String::new(), b.resource_code.clone(), EntryState::Published),
            (3, String::new(), a.resource_code.clone(), EntryState::Withdrawn),
        ]
    );
    assert_eq!(feed(store, 3).await, vec![]);
    // Withdrawing an entry never published offers nothing.
    let c = create(store, &provider, &content("201", "从未发布")).await;
    save_as(store, &c, EntryState::Withdrawn, EntryAction::Withdraw).await;
    assert_eq!(feed(store, 3).await, vec![]);
}

/// What the hub's in-memory search reads: a page's entries in one call, own and aggregated, and
/// the entries changed since a time, paged by (time, code).
async fn entries_are_read_many_at_once_and_by_change(store: Arc<dyn Store>) {
    let store = store.as_ref();
    let provider = register(store, 1).await;
    let a = create(store, &provider, &content("102", "甲")).await;
    let b = create(store, &provider, &content("101", "乙")).await;
    let c = create(store, &provider, &content("102", "丙")).await;
    let b = publish(store, &b).await;
    let wanted = vec![
        c.resource_code.clone(),
        "999/000001".to_string(),
        b.resource_code.clone(),
    ];
    let got = store.get_entries(&wanted).await.expect("get many");
    assert_eq!(got, vec![b.clone(), c.clone()], "in code order, the unknown left out");
    assert_eq!(store.get_entries(&[]).await, Ok(Vec::new()));

    // a and c at t(1), b at t(2): since t(1) all three, by (time, code); paged two at a time.
    let changed = |after: Option<(DateTime<Utc>, String)>, since: i64| async move {
        store
            .entries_changed_since(t(since), after, 2)
            .await
            .expect("changed since")
            .into_iter()
            .map(|e| e.resource_code)
            .collect::<Vec<_>>()
    };
    let mut first_two = vec![a.resource_code.clone(), c.resource_code.clone()];
    first_two.sort();
    assert_eq!(changed(None, 1).await, first_two);
    let last = (t(1), first_two[1].clone());
    assert_eq!(changed(Some(last), 1).await, std::slice::from_ref(&b.resource_code));
    assert_eq!(changed(None, 2).await, std::slice::from_ref(&b.resource_code));
    assert!(changed(None, 3).await.is_empty());

    store
        .add_peer(&peer_hub("330110", Relation::Child))
        .await
        .expect("add the county");
    let batch = [
        child_change(4, "330110", "102/000001", "企业登记信息", EntryState::Published),
        child_change(7, "330110", "102/000002", "个体工商户信息", EntryState::Published),
    ];
    assert_eq!(store.apply_catalogue_changes("330110", 0, &batch, 7).await, Ok(2));
    let keys = vec![
        ("330110".to_string(), "102/000002".to_string()),
        ("330110".to_string(), "102/000009".to_string()),
        ("330100".to_string(), "102/000001".to_string()),
        ("330110".to_string(), "102/000001".to_string()),
    ];
    let got = store.get_federated_entries(&keys).await.expect("get aggregated");
    assert_eq!(
        got.iter()
            .map(|f| (
                f.origin_hub.as_str(),
                f.entry.resource_code.as_str(),
                f.entry.content.name.as_str()
            ))
            .collect::<Vec<_>>(),
        [
            ("330110", "102/000001", "企业登记信息"),
            ("330110", "102/000002", "个体工商户信息")
        ]
    );
    assert_eq!(store.get_federated_entries(&[]).await, Ok(Vec::new()));
}

async fn aggregated_changes_apply_once_and_are_searchable(store: Arc<dyn Store>) {
    let store = store.as_ref();
    store
        .add_peer(&peer_hub("330110", Relation::Child))
        .await
        .expect("add the county");
    let batch = [
        child_change(4, "330110", "102/000001", "企业登记信息", EntryState::Published),
        child_change(7, "330110", "102/000002", "个体工商户信息", EntryState::Published),
        child_change(8, "330110", "102/000009", "从未见过", EntryState::Withdrawn),
    ];
    assert_eq!(store.apply_catalogue_changes("330110", 0, &batch, 9).await, Ok(2));
    assert_eq!(
        store.get_peer("330110").await.expect("get").map(|p| p.catalogue_cursor),
        Some(9)
    );
    // Applied again from the old cursor (another node got there first): nothing changes.
    assert!(matches!(
        store.apply_catalogue_changes("330110", 0, &batch, 9).await,
        Err(Error::Aborted(_))
    ));
    let everyone = EntryVisibility::PublishedOrOwnedBy(String::new());
    assert_eq!(
        federated_codes(store, &everyone, "").await,
        ["330110:102/000001", "330110:102/000002"]
    );
    assert_eq!(
        federated_codes(store, &everyone, "企业登记").await,
        ["330110:102/000001"]
    );
    // Where a read of a code held on another hub is relayed: by the entries holding it.
    let holders = store.federated_entries("102/000001").await.expect("holders");
    assert_eq!(
        holders
            .iter()
            .map(|f| (f.origin_hub.as_str(), f.via_hub.as_str(), f.entry.state))
            .collect::<Vec<_>>(),
        [("330110", "330110", EntryState::Published)]
    );
    assert_eq!(
        store.federated_entries("102/000009").await,
        Ok(Vec::new()),
        "never published"
    );
    assert_eq!(store.federated_entries("999/000001").await, Ok(Vec::new()));
    // They are this hub's feed's changes too, via the county: its parent gets them in turn.
    let offered: Vec<_> = store
        .catalogue_changes(0, 100)
        .await
        .expect("feed")
        .0
        .into_iter()
        .map(|c| (c.position, c.entry.origin_hub, c.entry.via_hub))
        .collect();
    assert_eq!(
        offered,
        [
            (1, "330110".to_string(), "330110".to_string()),
            (2, "330110".to_string(), "330110".to_string())
        ]
    );

    // A withdrawal and an update.
    let next = [
        child_change(10, "330110", "102/000001", "企业登记信息", EntryState::Withdrawn),
        child_change(11, "330110", "102/000002", "个体工商户登记信息", EntryState::Published),
    ];
    assert_eq!(store.apply_catalogue_changes("330110", 9, &next, 11).await, Ok(2));
    assert_eq!(federated_codes(store, &everyone, "").await, ["330110:102/000002"]);
    // In their latest state: the withdrawn one is known as withdrawn, the other as updated.
    let holders = store.federated_entries("102/000001").await.expect("holders");
    assert_eq!(holders.len(), 1);
    assert_eq!(holders[0].entry.state, EntryState::Withdrawn);
    let holders = store.federated_entries("102/000002").await.expect("holders");
    assert_eq!(holders[0].entry.content.name, "个体工商户登记信息");
    assert_eq!(
        federated_codes(store, &everyone, "个体工商户登记").await,
        ["330110:102/000002"]
    );
    assert_eq!(
        federated_codes(store, &EntryVisibility::All, "").await,
        ["330110:102/000001", "330110:102/000002"],
        "the admin sees the withdrawn one too"
    );
    let filter = EntryFilter {
        state: Some(EntryState::Withdrawn),
        ..EntryFilter::default()
    };
    let withdrawn = store
        .search_federated_entries(&EntryVisibility::All, &filter, None, 10)
        .await
        .expect("search");
    assert_eq!(withdrawn.len(), 1);
    assert_eq!(withdrawn[0].via_hub, "330110");
    // Paged by origin and resource code.
    let after = store
        .search_federated_entries(
            &EntryVisibility::All,
            &EntryFilter::default(),
            Some(&SearchPosition {
                tier: 0,
                origin_hub: "330110".into(),
                resource_code: "102/000001".into(),
            }),
            10,
        )
        .await
        .expect("search");
    assert_eq!(after.len(), 1);
    assert_eq!(after[0].entry.resource_code, "102/000002");

    // Removing the county withdraws what came through it, as new changes of the feed.
    assert_eq!(store.remove_peer("330110", t(20)).await, Ok(1));
    assert_eq!(federated_codes(store, &everyone, "").await, Vec::<String>::new());
    let (tail, head) = store.catalogue_changes(4, 100).await.expect("feed");
    assert_eq!(head, 5);
    assert_eq!(tail.len(), 1);
    assert_eq!(tail[0].entry.entry.state, EntryState::Withdrawn);
    assert_eq!(tail[0].entry.entry.resource_code, "102/000002");
}

/// A hub upgraded to federation (migration 11) offers the entries it had already published.
async fn entries_published_before_federation_join_the_feed(t: Tampering) {
    let store = t.store.clone();
    let provider = register(store.as_ref(), 1).await;
    let a = create(store.as_ref(), &provider, &content("102", "企业登记信息")).await;
    let a = publish(store.as_ref(), &a).await;
    let draft = create(store.as_ref(), &provider, &content("102", "草稿")).await;
    // As if the database were from before migration 11 (its statements may run again).
    t.execute(&[
        "DELETE FROM catalogue_feed",
        "UPDATE catalogue_feed_head SET last_position = 0 WHERE id = 1",
        "DELETE FROM _sqlx_migrations WHERE version = 11",
    ])
    .await;
    assert_eq!(feed(store.as_ref(), 0).await, vec![]);
    store.apply_migrations().await.expect("apply migration 11");
    assert_eq!(
        feed(store.as_ref(), 0).await,
        vec![(1, String::new(), a.resource_code.clone(), EntryState::Published)]
    );
    // Applied again, it adds nothing; what is published afterwards follows.
    t.execute(&["DELETE FROM _sqlx_migrations WHERE version = 11"]).await;
    store.apply_migrations().await.expect("apply migration 11 again");
    publish(store.as_ref(), &draft).await;
    assert_eq!(
        feed(store.as_ref(), 0).await,
        vec![
            (1, String::new(), a.resource_code.clone(), EntryState::Published),
            (2, String::new(), draft.resource_code.clone(), EntryState::Published),
        ]
    );
}
