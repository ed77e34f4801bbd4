//! Federation (平台级联) across three hubs on loopback, each with its own CA and database:
//! county (330110) → city (330100) → province (330000). The province's catalogue answers "who in
//! the province has 企业登记信息?" with the county's entry, marked with its origin; updates and
//! withdrawals follow; the city, stopped and restarted, catches up from its cursor; strangers,
//! untrusted CAs and a child reading its parent are refused, and the trail shows it on both sides.

use std::time::{Duration, Instant};

use tonic::Code;
use tonic::transport::Channel;
use xinqiao_domain::identity::Principal;
use xinqiao_hub::pki::{self};
use xinqiao_proto::v1::directory_service_client::DirectoryServiceClient;
use xinqiao_proto::v1::federation_service_client::FederationServiceClient;
use xinqiao_store::AuditFilter;
use xinqiao_tests::federation::*;
use xinqiao_tests::*;

/// How long a change may take to travel county → city → province.
const PROPAGATION: Duration = Duration::from_secs(20);

/// Creates, submits and publishes an entry of SAMR on `level`: its resource code.
async fn published(level: &Level, content: v1::EntryContent) -> String {
    let mut dept = level.dept(SAMR).await;
    let code = ok(dept.create_entry(create(content)).await).resource_code;
    ok(dept.submit_entry(submit(&code)).await);
    ok(level.admin().await.publish_entry(publish(&code)).await);
    code
}

/// What a department of `level` finds for `keyword` among the entries aggregated from children.
async fn aggregated(level: &Level, keyword_text: &str) -> Vec<v1::CatalogEntry> {
    let mut dept = level.dept(POLICE).await;
    search_all(&mut dept, keyword(keyword_text))
        .await
        .into_iter()
        .filter(|e| !e.origin_hub.is_empty())
        .collect()
}

/// Waits until `check` holds for what `level` finds for `keyword`, or fails with what it found.
async fn until_found(
    level: &Level,
    keyword_text: &str,
    what: &str,
    check: impl Fn(&[v1::CatalogEntry]) -> bool,
) -> Vec<v1::CatalogEntry> {
    let started = Instant::now();
    loop {
        let found = aggregated(level, keyword_text).await;
        if check(&found) {
            return found;
        }
        assert!(
            started.elapsed() < PROPAGATION,
            "{what}: after {PROPAGATION:?} hub {} finds {:?}",
            level.division,
            found
                .iter()
                .map(|e| (&e.origin_hub, &e.resource_code, e.content.as_ref().map(|c| &c.name)))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

on_each_backend!(
    the_province_finds_county_entries_and_follows_their_changes,
    the_city_restarted_catches_up_from_its_cursor,
    strangers_untrusted_cas_and_children_are_refused_and_audited,
    only_the_exposed_classes_go_up,
);

async fn the_province_finds_county_entries_and_follows_their_changes(backend: Backend) {
    let (county, city, province) = chain(&backend).await;
    let code = published(&county, content("企业登记信息", "102", "余杭区企业的营业执照登记信息")).await;

    // 省里谁有企业登记信息？The province answers with the county's entry, marked with its origin.
    let found = until_found(
        &province,
        "企业登记信息",
        "the county entry reaches the province",
        |f| f.len() == 1,
    )
    .await;
    let entry = &found[0];
    assert_eq!(entry.origin_hub, COUNTY);
    assert_eq!(entry.via_hub, CITY);
    assert_eq!(entry.resource_code, code);
    assert_eq!(entry.provider_code, SAMR);
    assert_eq!(entry.provider_name, "市市场监督管理局");
    assert_eq!(entry.state, v1::EntryState::Published as i32);
    // The city shows it too, as having come straight from the county.
    let at_city = aggregated(&city, "企业登记信息").await;
    assert_eq!(
        at_city
            .iter()
            .map(|e| (&*e.origin_hub, &*e.via_hub))
            .collect::<Vec<_>>(),
        [(COUNTY, COUNTY)]
    );
    // Searched like the province's own entries: by classification too, and after them.
    let mut province_dept = province.dept(SAMR).await;
    let own = published(&province, content("企业登记信息（省级汇总）", "101", "省市场监管局")).await;
    let both = search_all(&mut province_dept, keyword("企业登记信息")).await;
    assert_eq!(
        both.iter()
            .map(|e| (e.origin_hub.as_str(), e.resource_code.as_str()))
            .collect::<Vec<_>>(),
        [("", own.as_str()), (COUNTY, code.as_str())],
        "own entries first, then aggregated ones"
    );
    let paged = search_all(
        &mut province_dept,
        v1::SearchEntriesRequest {
            classification_prefix: "10".into(),
            page_size: 1,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(paged.len(), 2, "pages run on from own entries into aggregated ones");
    let local = search_all(
        &mut province_dept,
        v1::SearchEntriesRequest {
            keyword: "企业登记信息".into(),
            local_only: true,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(local.len(), 1);
    assert_eq!(local[0].resource_code, own);

    // Never editable there: the province knows no entry of its own by that code.
    let mut province_admin = province.admin().await;
    refused(
        province_admin.withdraw_entry(withdraw(&code, "不是本级的")).await,
        Code::NotFound,
    );

    // An update (withdrawn, revised, published again) reaches the province.
    let mut county_dept = county.dept(SAMR).await;
    ok(county_dept.withdraw_entry(withdraw(&code, "修订")).await);
    ok(county_dept
        .update_entry(update(
            &code,
            content("企业登记信息（含变更记录）", "102", "余杭区企业的登记与变更信息"),
        ))
        .await);
    ok(county_dept.submit_entry(submit(&code)).await);
    ok(county.admin().await.publish_entry(publish(&code)).await);
    until_found(&province, "含变更记录", "the update reaches the province", |f| {
        f.len() == 1 && f[0].version >= 5
    })
    .await;

    // A withdrawal does too: the entry is no longer found there.
    let other = published(&county, content("个体工商户登记信息", "102", "余杭区个体工商户")).await;
    until_found(
        &province,
        "个体工商户",
        "a second entry reaches the province",
        |f| f.len() == 1,
    )
    .await;
    ok(county_dept.withdraw_entry(withdraw(&other, "停止共享")).await);
    until_found(
        &province,
        "个体工商户",
        "the withdrawal reaches the province",
        |f| f.is_empty(),
    )
    .await;
    // The admin still sees it there, withdrawn.
    let withdrawn: Vec<_> = search_all(&mut province_admin, keyword("个体工商户"))
        .await
        .into_iter()
        .filter(|e| e.origin_hub == COUNTY)
        .collect();
    assert_eq!(withdrawn.len(), 1);
    assert_eq!(withdrawn[0].state, v1::EntryState::Withdrawn as i32);

    // Audited on both sides: the county served the city's reads, the city recorded its pulls.
    let served = county.events("CatalogueChanges").await;
    assert!(
        served
            .iter()
            .any(|e| e.event.actor == "hub:330100" && e.event.outcome == "OK"),
        "the county's trail records the city's reads"
    );
    let pulled = city.events("PullCatalogueChanges").await;
    assert!(
        pulled
            .iter()
            .any(|e| e.event.actor == "hub:330100" && e.event.about == "hub:330110" && e.event.outcome == "OK"),
        "the city's trail records its pulls from the county"
    );

    // Removing the child withdraws what came through it, here and upward.
    let removed = ok(city
        .federation()
        .await
        .remove_peer(v1::RemovePeerRequest {
            division_code: COUNTY.into(),
        })
        .await);
    assert_eq!(removed.withdrawn_entries, 1);
    until_found(
        &province,
        "企业登记信息",
        "the removal reaches the province",
        |f| f.is_empty(),
    )
    .await;

    county.finish().await;
    city.finish().await;
    province.finish().await;
}

async fn the_city_restarted_catches_up_from_its_cursor(backend: Backend) {
    let (county, mut city, province) = chain(&backend).await;
    let first = published(&county, content("企业登记信息", "102", "余杭区企业登记")).await;
    let second = published(&county, content("社会组织登记信息", "102", "余杭区社会组织")).await;
    until_found(&province, "登记信息", "both entries reach the province", |f| {
        f.len() == 2
    })
    .await;
    let cursor_before = city
        .store()
        .get_peer(COUNTY)
        .await
        .expect("read the county")
        .expect("registered")
        .catalogue_cursor;
    assert!(cursor_before >= 2);

    city.stop().await;
    let stopped_at = chrono::Utc::now();
    // While the city is down, the county publishes one entry and withdraws another.
    let third = published(&county, content("个体工商户登记信息", "102", "余杭区个体工商户")).await;
    ok(county
        .dept(SAMR)
        .await
        .withdraw_entry(withdraw(&second, "停止共享"))
        .await);
    tokio::time::sleep(Duration::from_millis(500)).await;
    // The province still shows what it had: nothing was lost or changed without the city.
    assert_eq!(aggregated(&province, "登记信息").await.len(), 2);

    city.run().await;
    let found = until_found(
        &province,
        "登记信息",
        "the city catches up after its restart",
        |f| {
            let codes: Vec<_> = f.iter().map(|e| e.resource_code.as_str()).collect();
            codes == [first.as_str(), third.as_str()]
        },
    )
    .await;
    assert!(found.iter().all(|e| e.origin_hub == COUNTY && e.via_hub == CITY));

    // From its cursor: the first pull after the restart asked after the cursor it had, and
    // nothing was applied twice (each change of the county's feed applied once).
    let after_restart: Vec<serde_json::Value> = city
        .events("PullCatalogueChanges")
        .await
        .into_iter()
        .filter(|e| e.event.at > stopped_at && e.event.about == "hub:330110")
        .map(|e| serde_json::from_str(&e.event.detail).expect("detail is JSON"))
        .collect();
    assert_eq!(
        after_restart.first().and_then(|d| d["after"].as_u64()),
        Some(cursor_before),
        "the restarted city asked from its cursor: {after_restart:?}"
    );
    let applied: u64 = after_restart.iter().filter_map(|d| d["applied"].as_u64()).sum();
    assert_eq!(
        applied, 2,
        "the two changes made meanwhile, each once: {after_restart:?}"
    );
    let (county_feed, county_head) = county.store().catalogue_changes(0, 1000).await.expect("county feed");
    assert_eq!(county_feed.len(), 3);
    let cursor_after = city
        .store()
        .get_peer(COUNTY)
        .await
        .expect("read the county")
        .expect("registered")
        .catalogue_cursor;
    assert_eq!(cursor_after, county_head);

    county.finish().await;
    city.finish().await;
    province.finish().await;
}

async fn strangers_untrusted_cas_and_children_are_refused_and_audited(backend: Backend) {
    let (county, city, province) = chain(&backend).await;
    let read_changes = |channel: Channel| async move {
        FederationServiceClient::new(channel)
            .catalogue_changes(v1::CatalogueChangesRequest {
                after: 0,
                limit: 10,
                wait_ms: 0,
            })
            .await
    };

    // A hub the county's own CA vouches for, but not registered with the county.
    let stranger = pki::issue(&county.pki_dir(), &Principal::Hub("330122".into())).expect("issue");
    let status = refused(read_changes(county.channel_as(&stranger)).await, Code::PermissionDenied);
    assert!(status.message().contains("not registered"), "{status:?}");

    // The city's identity from a CA the county does not trust: the handshake fails.
    let foreign = tempfile::tempdir().expect("temporary directory");
    pki::init(foreign.path(), &[]).expect("a foreign PKI");
    let impostor = pki::issue(foreign.path(), &Principal::Hub(CITY.into())).expect("issue");
    let failed = read_changes(county.channel_as(&impostor))
        .await
        .expect_err("an untrusted CA is refused");
    assert!(
        matches!(failed.code(), Code::Unavailable | Code::Unknown | Code::Cancelled),
        "{failed:?}"
    );

    // The county's CA is trusted by the city for the county's hub identity only: a county
    // department's certificate is refused at the handshake.
    let county_dept = pki::department_files(&county.pki_dir(), SAMR);
    let failed = DirectoryServiceClient::new(city.channel_as(&county_dept))
        .search_entries(keyword("企业"))
        .await
        .expect_err("a department of another platform is refused");
    assert!(
        matches!(failed.code(), Code::Unavailable | Code::Unknown | Code::Cancelled),
        "{failed:?}"
    );

    // A child reading its parent's catalogue.
    let county_identity = pki::hub_files(&county.pki_dir(), COUNTY);
    let status = refused(
        read_changes(city.channel_as(&county_identity)).await,
        Code::PermissionDenied,
    );
    assert!(status.message().contains("not a parent"), "{status:?}");

    // A hub identity on any other service, even of a registered peer.
    let city_identity = pki::hub_files(&city.pki_dir(), CITY);
    let status = refused(
        DirectoryServiceClient::new(county.channel_as(&city_identity))
            .search_entries(keyword("企业"))
            .await,
        Code::PermissionDenied,
    );
    assert!(status.message().contains("federation service only"), "{status:?}");
    // Every other service refuses it too, before looking at the request.
    let as_city = county.channel_as(&city_identity);
    let denied = |result: Result<(), tonic::Status>, what: &str| match result {
        Err(status) => assert_eq!(status.code(), Code::PermissionDenied, "{what}: {status:?}"),
        Ok(()) => panic!("{what} let a peer hub in"),
    };
    denied(
        DirectoryServiceClient::new(as_city.clone())
            .who_am_i(v1::WhoAmIRequest {})
            .await
            .map(drop),
        "WhoAmI",
    );
    denied(
        v1::schema_service_client::SchemaServiceClient::new(as_city.clone())
            .list_subjects(v1::ListSubjectsRequest::default())
            .await
            .map(drop),
        "ListSubjects",
    );
    denied(
        v1::exchange_service_client::ExchangeServiceClient::new(as_city.clone())
            .list_datasets(v1::ListDatasetsRequest::default())
            .await
            .map(drop),
        "ListDatasets",
    );
    denied(
        v1::access_service_client::AccessServiceClient::new(as_city.clone())
            .list_requests(v1::ListRequestsRequest::default())
            .await
            .map(drop),
        "ListRequests",
    );
    denied(
        v1::audit_service_client::AuditServiceClient::new(as_city.clone())
            .list_events(v1::ListEventsRequest::default())
            .await
            .map(drop),
        "ListEvents",
    );
    denied(
        v1::evaluation_service_client::EvaluationServiceClient::new(as_city.clone())
            .get_ranking(v1::GetRankingRequest::default())
            .await
            .map(drop),
        "GetRanking",
    );
    denied(
        v1::interface_service_client::InterfaceServiceClient::new(as_city.clone())
            .list_interfaces(v1::ListInterfacesRequest::default())
            .await
            .map(drop),
        "ListInterfaces",
    );
    // Nor may a registered peer hub manage the registry.
    let status = refused(
        FederationServiceClient::new(as_city)
            .list_peers(v1::ListPeersRequest {})
            .await,
        Code::PermissionDenied,
    );
    assert!(status.message().contains("platform admin"), "{status:?}");

    // The admin pulls from a child now; a parent is not pulled from.
    let mut city_admin = city.federation().await;
    let synced = ok(city_admin
        .sync_peer(v1::SyncPeerRequest {
            division_code: COUNTY.into(),
        })
        .await);
    let (_, county_head) = county.store().catalogue_changes(0, 1).await.expect("county feed");
    assert_eq!(synced.catalogue_cursor, county_head);
    refused(
        city_admin
            .sync_peer(v1::SyncPeerRequest {
                division_code: PROVINCE.into(),
            })
            .await,
        Code::FailedPrecondition,
    );
    refused(
        city_admin
            .sync_peer(v1::SyncPeerRequest {
                division_code: "330199".into(),
            })
            .await,
        Code::NotFound,
    );

    // Peers are the admin's: a department may not list or add them.
    let mut as_dept =
        FederationServiceClient::new(county.channel(pki::department_files(&county.pki_dir(), SAMR)).await);
    refused(
        as_dept.list_peers(v1::ListPeersRequest {}).await,
        Code::PermissionDenied,
    );
    // Bad input names every bad field and stores nothing.
    let mut admin = county.federation().await;
    invalid(
        admin
            .add_peer(v1::AddPeerRequest {
                division_code: "33011".into(),
                name: String::new(),
                address: "http://city:1".into(),
                ca_pem: "not a certificate".into(),
                relation: 0,
                exposure: None,
            })
            .await,
        &["division_code", "name", "address", "ca_pem", "relation"],
    );
    refused(
        admin
            .add_peer(v1::AddPeerRequest {
                division_code: CITY.into(),
                name: "again".into(),
                address: city.url(),
                ca_pem: city.ca_pem(),
                relation: v1::PeerRelation::Parent.into(),
                exposure: None,
            })
            .await,
        Code::AlreadyExists,
    );
    let listed = ok(admin.list_peers(v1::ListPeersRequest {}).await);
    assert_eq!(
        listed
            .peers
            .iter()
            .map(|p| p.division_code.as_str())
            .collect::<Vec<_>>(),
        [CITY]
    );

    // Every refusal is in the trail of the hub that refused it.
    let wait_for = |level: &Level, action: &'static str, actor: &'static str, outcome: &'static str| {
        let store = level.store.clone().expect("the hub has started");
        async move {
            let started = Instant::now();
            loop {
                let filter = AuditFilter {
                    action: Some(action.into()),
                    ..AuditFilter::default()
                };
                let events = store.list_audit(&filter, 0, 10_000).await.expect("list the trail");
                if events
                    .iter()
                    .any(|e| e.event.actor.starts_with(actor) && e.event.outcome == outcome)
                {
                    return;
                }
                assert!(
                    started.elapsed() < Duration::from_secs(10),
                    "no {action} {outcome} event by {actor}: {events:?}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    wait_for(&county, "CatalogueChanges", "hub:330122", "PERMISSION_DENIED").await;
    wait_for(&county, "authenticate", "peer:", "UNAUTHENTICATED").await;
    wait_for(&city, "authenticate", "peer:", "UNAUTHENTICATED").await;
    wait_for(&city, "CatalogueChanges", "hub:330110", "PERMISSION_DENIED").await;
    wait_for(&county, "SearchEntries", "hub:330100", "PERMISSION_DENIED").await;

    county.finish().await;
    city.finish().await;
    province.finish().await;
}

async fn only_the_exposed_classes_go_up(backend: Backend) {
    let (county, city, province) = chain(&backend).await;
    // The county exposes only 基础信息资源 of class 101 (人口) to the city from now on.
    let mut county_admin = county.federation().await;
    ok(county_admin
        .remove_peer(v1::RemovePeerRequest {
            division_code: CITY.into(),
        })
        .await);
    let narrowed = ok(county_admin
        .add_peer(v1::AddPeerRequest {
            division_code: CITY.into(),
            name: "杭州市数据共享平台".into(),
            address: city.url(),
            ca_pem: city.ca_pem(),
            relation: v1::PeerRelation::Parent.into(),
            exposure: Some(v1::PeerExposure {
                catalogue: true,
                classifications: vec!["101".into()],
            }),
        })
        .await);
    assert_eq!(
        narrowed.exposure.map(|e| e.classifications),
        Some(vec!["101".to_string()])
    );
    // Published in this order: once the second is at the province, the first was passed over.
    published(&county, content("企业登记信息", "102", "余杭区企业登记")).await;
    let people = published(&county, content("户籍人口登记信息", "101", "余杭区户籍人口")).await;
    let found = until_found(
        &province,
        "登记信息",
        "the exposed entry reaches the province",
        |f| !f.is_empty(),
    )
    .await;
    assert_eq!(
        found.iter().map(|e| e.resource_code.as_str()).collect::<Vec<_>>(),
        [people.as_str()]
    );
    assert!(aggregated(&city, "企业登记").await.is_empty());

    county.finish().await;
    city.finish().await;
    province.finish().await;
}
