//! The hub's in-memory catalogue search (`xinqiao_hub::search_index`) against the store's search,
//! on each backend: many keywords, filters, visibilities and page walks, own entries and those
//! aggregated from child hubs, before and after changes made behind the index's back (as another
//! hub node would make them). Every page must be the store's, entry for entry.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use prost::Message;
use xinqiao_domain::catalogue::{
    CatalogEntry, DataItem, EntryContent, EntryFilter, ExchangeKind, OpenAttributes, OpenType, ResourceFormat,
    ShareAttributes, ShareChannel, ShareType, UpdateCycle,
};
use xinqiao_domain::federation::{CatalogueChange, Exposure, FederatedEntry, PeerHub, Relation};
use xinqiao_domain::lifecycle::{EntryAction, EntryState};
use xinqiao_domain::policy::EntryVisibility;
use xinqiao_domain::search::{self, SearchPosition};
use xinqiao_hub::cache::{Cache, FRESH_FOR};
use xinqiao_hub::convert;
use xinqiao_hub::search_index::CatalogueSearch;
use xinqiao_proto::v1 as pb;
use xinqiao_store::{EntryChange, Store};
use xinqiao_tests::*;

const NAMES: &[&str] = &[
    "企业登记",
    "社保缴费",
    "企业年报",
    "户籍人口",
    "不动产登记",
    "旅行社名录",
    "信息企业",
    "a%b_c",
];
const SUMMARIES: &[&str] = &[
    "全市企业的信息",
    "社保 卡的发放",
    "人口登记信息",
    "西湖区的记录",
    "企业社保",
];
const ITEMS: &[&str] = &["统一社会信用代码", "名称", "姓名", "企业名称", "登记日期", "许可证编号"];
const KEYWORDS: &[&str] = &[
    "企业",
    "企",
    "信息",
    "社保",
    "登记",
    "不动产登记",
    "统一社会信用代码",
    "旅行社",
    "海关",
    "%b_",
    "保 卡",
    "名称",
    "业的",
    "A%B",
];

fn content(i: usize) -> EntryContent {
    let items = (0..1 + i % 3)
        .map(|k| DataItem {
            name: ITEMS[(i + k * 5) % ITEMS.len()].into(),
            data_type: "字符型".into(),
            length: 16,
            sensitive: false,
            description: String::new(),
        })
        .collect();
    EntryContent {
        name: format!("{}{}", NAMES[i % NAMES.len()], i % 7),
        classification: format!("{}", 101 + i % 3),
        summary: SUMMARIES[(i / 3) % SUMMARIES.len()].into(),
        format: ResourceFormat::Database,
        items,
        share: ShareAttributes {
            share_type: if i.is_multiple_of(4) {
                ShareType::Conditional
            } else {
                ShareType::Unconditional
            },
            condition: if i.is_multiple_of(4) {
                "经审批".into()
            } else {
                String::new()
            },
            channel: ShareChannel::Platform,
            exchange_kind: ExchangeKind::Table,
            legal_basis: String::new(),
        },
        open: OpenAttributes {
            open_type: OpenType::NotOpen,
            condition: String::new(),
        },
        update_cycle: if i.is_multiple_of(2) {
            UpdateCycle::Daily
        } else {
            UpdateCycle::Monthly
        },
        related_codes: vec![],
        maintainer: String::new(),
    }
}

fn change(action: EntryAction) -> EntryChange {
    EntryChange {
        action,
        actor: "admin:test".into(),
        reason: String::new(),
        at: Utc::now(),
    }
}

async fn save(
    store: &dyn Store,
    entry: &CatalogEntry,
    state: EntryState,
    content: Option<EntryContent>,
) -> CatalogEntry {
    let mut next = entry.clone();
    next.version += 1;
    next.state = state;
    next.updated_at = xinqiao_hub::clock::now();
    if let Some(content) = content {
        next.content = content;
    }
    store
        .save_entry_version(&next, &change(EntryAction::Update))
        .await
        .expect("save")
}

fn aggregated(position: u64, origin: &str, i: usize, state: EntryState) -> CatalogueChange {
    let now = xinqiao_hub::clock::now();
    CatalogueChange {
        position,
        entry: FederatedEntry {
            origin_hub: origin.into(),
            via_hub: String::new(),
            entry: CatalogEntry {
                resource_code: format!("{}/{:06}", 101 + i % 3, i),
                provider_code: "11330110MB0001001X".into(),
                provider_name: "区市场监督管理局".into(),
                content: content(i + 3),
                state,
                version: 1,
                state_reason: String::new(),
                published_at: Some(now),
                created_at: now,
                updated_at: now,
            },
        },
    }
}

fn filters(keyword: &str) -> Vec<EntryFilter> {
    let base = EntryFilter {
        keyword: keyword.into(),
        ..EntryFilter::default()
    };
    vec![
        base.clone(),
        EntryFilter {
            provider_code: POLICE.into(),
            ..base.clone()
        },
        EntryFilter {
            classification_prefix: "102".into(),
            ..base.clone()
        },
        EntryFilter {
            share_type: Some(ShareType::Conditional),
            update_cycle: Some(UpdateCycle::Daily),
            ..base.clone()
        },
        EntryFilter {
            state: Some(EntryState::Draft),
            ..base
        },
    ]
}

/// Every page of the walk, own entries and aggregated ones, by the index and by the store.
async fn compare(search: &CatalogueSearch, store: &dyn Store) {
    let visibilities = [
        EntryVisibility::All,
        EntryVisibility::PublishedOrOwnedBy(SAMR.into()),
        EntryVisibility::PublishedOrOwnedBy(String::new()),
    ];
    for keyword in KEYWORDS {
        let matching = search::matching_keyword(keyword);
        for filter in filters(keyword) {
            for visibility in &visibilities {
                for page in [3u32, 20] {
                    let mut after: Option<SearchPosition> = None;
                    loop {
                        let shared = search
                            .own_entries(visibility, &filter, after.as_ref(), page)
                            .await
                            .expect("index");
                        // Each entry's encoded form is the API message of that very entry.
                        for cached in &shared {
                            let wire = pb::CatalogEntry::decode(cached.wire.clone()).expect("wire");
                            assert_eq!(wire, convert::entry(cached.entry.clone()), "{keyword:?}");
                        }
                        let ours: Vec<CatalogEntry> = shared.iter().map(|c| c.entry.clone()).collect();
                        let theirs = store
                            .search_entries(visibility, &filter, after.as_ref(), page)
                            .await
                            .expect("store");
                        assert_eq!(
                            ours, theirs,
                            "{keyword:?} {filter:?} {visibility:?} page {page} after {after:?}"
                        );
                        match ours.last() {
                            Some(last) if ours.len() == page as usize => {
                                after = Some(SearchPosition::of_entry("", last, &matching));
                            }
                            _ => break,
                        }
                    }
                    let mut after: Option<SearchPosition> = None;
                    loop {
                        let ours = search
                            .aggregated_entries(visibility, &filter, after.as_ref(), page)
                            .await
                            .expect("index");
                        let theirs = store
                            .search_federated_entries(visibility, &filter, after.as_ref(), page)
                            .await
                            .expect("store");
                        assert_eq!(
                            ours, theirs,
                            "aggregated {keyword:?} {filter:?} {visibility:?} page {page}"
                        );
                        match ours.last() {
                            Some(last) if ours.len() == page as usize => {
                                after = Some(SearchPosition::of_entry(&last.origin_hub, &last.entry, &matching));
                            }
                            _ => break,
                        }
                    }
                }
            }
        }
    }
}

async fn the_index_answers_as_the_store_does(backend: Backend) {
    let hub = TestHub::start_on(backend).await;
    let store = hub.store_handle();
    let providers = [SAMR, POLICE, HRSS];
    let states = [
        EntryState::Published,
        EntryState::Draft,
        EntryState::Withdrawn,
        EntryState::Published,
    ];
    let mut entries = Vec::new();
    for i in 0..150 {
        let provider = providers[i % providers.len()];
        let entry = store
            .create_entry(provider, &content(i), &change(EntryAction::Create))
            .await
            .expect("create");
        let state = states[i % states.len()];
        let entry = if state == EntryState::Draft {
            entry
        } else {
            save(store.as_ref(), &entry, state, None).await
        };
        entries.push(entry);
    }
    for child in ["330110", "330122"] {
        store
            .add_peer(&PeerHub {
                division_code: child.into(),
                name: format!("平台 {child}"),
                address: format!("https://hub-{child}.example:7443"),
                ca_pem: "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n".into(),
                relation: Relation::Child,
                exposure: Exposure {
                    catalogue: false,
                    classifications: vec![],
                },
                catalogue_cursor: 0,
                added_by: "admin:ops".into(),
                added_at: Utc::now(),
            })
            .await
            .expect("add child");
        let batch: Vec<CatalogueChange> = (0..40)
            .map(|i| aggregated(i as u64 + 1, child, i, states[i % 4].min_published()))
            .collect();
        store
            .apply_catalogue_changes(child, 0, &batch, 40)
            .await
            .expect("aggregate");
    }

    let search = Arc::new(CatalogueSearch::new(store.clone(), Arc::new(Cache::new(FRESH_FOR))));
    let (stop, stopping) = tokio::sync::watch::channel(false);
    search.start(stopping);
    for _ in 0..200 {
        if search.is_ready() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(search.is_ready(), "the index is built");
    compare(&search, store.as_ref()).await;
    let answered = search.answered_from_index();
    assert!(answered > 1000, "the index answered ({answered}), not only the store");

    // Changes behind the index's back, as another hub node makes them, are seen within a second
    // or two; one made through it (`saved`) at once.
    for (i, entry) in entries.iter().enumerate().step_by(9) {
        let state = if entry.state == EntryState::Published {
            EntryState::Withdrawn
        } else {
            EntryState::Published
        };
        let renamed = content(i + 1);
        let saved = save(store.as_ref(), entry, state, Some(renamed)).await;
        if i.is_multiple_of(2) {
            search.saved(&saved);
        }
    }
    let more = store
        .create_entry(HRSS, &content(5), &change(EntryAction::Create))
        .await
        .expect("create");
    save(store.as_ref(), &more, EntryState::Published, None).await;
    store
        .apply_catalogue_changes("330110", 40, &[aggregated(41, "330110", 3, EntryState::Withdrawn)], 41)
        .await
        .expect("a withdrawal aggregated");
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    compare(&search, store.as_ref()).await;
    let (count, bytes) = search.size();
    // A withdrawal of an entry never aggregated is passed over: 30 of each child's 40.
    assert_eq!(count, 151 + 60, "every entry, own and aggregated, once");
    assert!(bytes > 0);
    let _ = stop.send(true);
    hub.finish().await;
}

/// Aggregated entries here are published or withdrawn, never drafts.
trait MinPublished {
    fn min_published(self) -> EntryState;
}

impl MinPublished for EntryState {
    fn min_published(self) -> EntryState {
        if self == EntryState::Withdrawn {
            self
        } else {
            EntryState::Published
        }
    }
}

on_each_backend!(the_index_answers_as_the_store_does);
