//! Who may do what, and who gets in at all: authorisation by role and ownership, and mutual TLS
//! refusing callers without a certificate of the platform CA or without a registration.

use tonic::Code;
use tonic::transport::Channel;
use xinqiao_tests::v1 as pb;
use xinqiao_tests::v1::directory_service_client::DirectoryServiceClient;
use xinqiao_tests::*;

on_each_backend!(
    another_departments_unpublished_entries_are_not_disclosed,
    another_departments_published_entry_is_read_but_not_changed,
    only_the_admin_manages_departments,
    only_the_admin_reviews_and_the_admin_compiles_nothing,
    a_provider_sees_its_own_entries_in_every_state,
    a_client_without_a_certificate_is_refused,
    a_certificate_from_another_ca_is_refused,
    an_unregistered_department_is_denied_until_registered,
    a_deactivated_department_is_denied_on_its_open_connection,
    silent_and_garbage_connections_do_not_hold_up_others,
    a_flood_of_refused_handshakes_is_summarised_not_recorded_one_by_one,
);

const STATES: [pb::EntryState; 5] = [
    pb::EntryState::Draft,
    pb::EntryState::PendingReview,
    pb::EntryState::Published,
    pb::EntryState::Returned,
    pb::EntryState::Withdrawn,
];

/// One entry of 市市场监督管理局 in each state, in the order of [`STATES`].
async fn one_entry_per_state(hub: &TestHub) -> Vec<String> {
    let mut samr = hub.dept(SAMR).await;
    let mut admin = hub.admin().await;
    let mut codes = Vec::new();
    for state in STATES {
        let name = format!("状态{}", state.as_str_name());
        let code = ok(samr.create_entry(create(content(&name, "102001", "可见性测试"))).await).resource_code;
        match state {
            pb::EntryState::Draft => {}
            pb::EntryState::PendingReview => {
                ok(samr.submit_entry(submit(&code)).await);
            }
            pb::EntryState::Published => {
                ok(samr.submit_entry(submit(&code)).await);
                ok(admin.publish_entry(publish(&code)).await);
            }
            pb::EntryState::Returned => {
                ok(samr.submit_entry(submit(&code)).await);
                ok(admin.return_entry(return_with(&code, "退回")).await);
            }
            pb::EntryState::Withdrawn => {
                ok(samr.withdraw_entry(withdraw(&code, "")).await);
            }
            pb::EntryState::Unspecified => unreachable!(),
        }
        codes.push(code);
    }
    codes
}

async fn another_departments_unpublished_entries_are_not_disclosed(backend: Backend) {
    let hub = TestHub::start_on(backend).await;
    let codes = one_entry_per_state(&hub).await;
    let mut police = hub.dept(POLICE).await;
    let before = hub.snapshot().await;

    for (state, code) in STATES.iter().zip(&codes) {
        if *state == pb::EntryState::Published {
            continue;
        }
        let what = format!("{code} ({})", state.as_str_name());
        // As if it did not exist: NOT_FOUND, not PERMISSION_DENIED.
        assert_eq!(
            police.get_entry(get(code, 0)).await.err().map(|s| s.code()),
            Some(Code::NotFound),
            "get {what}"
        );
        assert_eq!(
            police.get_entry(get(code, 1)).await.err().map(|s| s.code()),
            Some(Code::NotFound),
            "get v1 {what}"
        );
        assert_eq!(
            police.list_entry_versions(versions(code)).await.err().map(|s| s.code()),
            Some(Code::NotFound),
            "history {what}"
        );
        let edit = update(code, content("篡改", "102001", "篡改"));
        assert_eq!(
            police.update_entry(edit).await.err().map(|s| s.code()),
            Some(Code::NotFound),
            "update {what}"
        );
        assert_eq!(
            police.submit_entry(submit(code)).await.err().map(|s| s.code()),
            Some(Code::NotFound),
            "submit {what}"
        );
        assert_eq!(
            police.withdraw_entry(withdraw(code, "")).await.err().map(|s| s.code()),
            Some(Code::NotFound),
            "withdraw {what}"
        );
    }
    assert_eq!(hub.snapshot().await, before);

    // Search shows only the published one, however it is asked.
    let published = vec![codes[2].clone()];
    assert_eq!(
        search_codes(&mut police, pb::SearchEntriesRequest::default()).await,
        published
    );
    let by_provider = pb::SearchEntriesRequest {
        provider_code: SAMR.into(),
        ..Default::default()
    };
    assert_eq!(search_codes(&mut police, by_provider).await, published);
    assert_eq!(search_codes(&mut police, keyword("可见性测试")).await, published);
    for state in STATES {
        let by_state = pb::SearchEntriesRequest {
            state: state as i32,
            ..Default::default()
        };
        let expected = if state == pb::EntryState::Published {
            published.clone()
        } else {
            vec![]
        };
        assert_eq!(
            search_codes(&mut police, by_state).await,
            expected,
            "{}",
            state.as_str_name()
        );
    }
    hub.finish().await;
}

async fn another_departments_published_entry_is_read_but_not_changed(backend: Backend) {
    let hub = TestHub::start_on(backend).await;
    let codes = one_entry_per_state(&hub).await;
    let code = &codes[2];
    let mut police = hub.dept(POLICE).await;
    let before = hub.snapshot().await;

    let seen = ok(police.get_entry(get(code, 0)).await);
    assert_eq!(
        (seen.state, seen.provider_code.as_str()),
        (pb::EntryState::Published as i32, SAMR)
    );
    let history = ok(police.list_entry_versions(versions(code)).await).versions;
    assert_eq!(history.len(), 3);

    refused(
        police
            .update_entry(update(code, content("篡改", "102001", "篡改")))
            .await,
        Code::PermissionDenied,
    );
    refused(police.submit_entry(submit(code)).await, Code::PermissionDenied);
    refused(police.withdraw_entry(withdraw(code, "")).await, Code::PermissionDenied);
    refused(police.publish_entry(publish(code)).await, Code::PermissionDenied);
    refused(
        police.return_entry(return_with(code, "越权")).await,
        Code::PermissionDenied,
    );
    assert_eq!(hub.snapshot().await, before);
    hub.finish().await;
}

async fn only_the_admin_manages_departments(backend: Backend) {
    let hub = TestHub::start_on(backend).await;
    let mut samr = hub.dept(SAMR).await;
    let before = hub.snapshot().await;

    refused(
        samr.register_department(register_request(HEALTH, "市卫生健康委员会"))
            .await,
        Code::PermissionDenied,
    );
    let rename = pb::UpdateDepartmentRequest {
        code: SAMR.into(),
        name: "自封的名称".into(),
        division_code: "330100".into(),
        contact: String::new(),
    };
    refused(samr.update_department(rename).await, Code::PermissionDenied);
    let deactivate = pb::DeactivateDepartmentRequest {
        code: POLICE.into(),
        reason: String::new(),
    };
    refused(samr.deactivate_department(deactivate).await, Code::PermissionDenied);
    refused(
        samr.reactivate_department(pb::ReactivateDepartmentRequest { code: POLICE.into() })
            .await,
        Code::PermissionDenied,
    );
    assert_eq!(hub.snapshot().await, before);

    // Reading the directory is open to every registered department.
    ok(samr
        .get_department(pb::GetDepartmentRequest { code: POLICE.into() })
        .await);
    assert_eq!(
        ok(samr.list_departments(pb::ListDepartmentsRequest::default()).await)
            .departments
            .len(),
        3
    );
    hub.finish().await;
}

async fn only_the_admin_reviews_and_the_admin_compiles_nothing(backend: Backend) {
    let hub = TestHub::start_on(backend).await;
    let mut samr = hub.dept(SAMR).await;
    let mut admin = hub.admin().await;
    let code = ok(samr
        .create_entry(create(content("企业登记信息", "102001", "营业执照")))
        .await)
    .resource_code;
    ok(samr.submit_entry(submit(&code)).await);
    let before = hub.snapshot().await;

    // Not even the provider reviews its own entry.
    refused(samr.publish_entry(publish(&code)).await, Code::PermissionDenied);
    refused(
        samr.return_entry(return_with(&code, "自己退回")).await,
        Code::PermissionDenied,
    );
    // The admin reviews but does not write entries.
    refused(
        admin
            .create_entry(create(content("管理员条目", "102001", "不应创建")))
            .await,
        Code::PermissionDenied,
    );
    refused(
        admin
            .update_entry(update(&code, content("管理员修改", "102001", "不应修改")))
            .await,
        Code::PermissionDenied,
    );
    refused(admin.submit_entry(submit(&code)).await, Code::PermissionDenied);
    assert_eq!(hub.snapshot().await, before);

    assert_eq!(
        ok(admin.publish_entry(publish(&code)).await).state,
        pb::EntryState::Published as i32
    );
    hub.finish().await;
}

async fn a_provider_sees_its_own_entries_in_every_state(backend: Backend) {
    let hub = TestHub::start_on(backend).await;
    let codes = one_entry_per_state(&hub).await;
    let mut samr = hub.dept(SAMR).await;
    let mut admin = hub.admin().await;

    assert_eq!(
        search_codes(&mut samr, pb::SearchEntriesRequest::default()).await,
        codes
    );
    assert_eq!(
        search_codes(&mut admin, pb::SearchEntriesRequest::default()).await,
        codes
    );
    for (state, code) in STATES.iter().zip(&codes) {
        let entry = ok(samr.get_entry(get(code, 0)).await);
        assert_eq!(entry.state, *state as i32);
        ok(samr.list_entry_versions(versions(code)).await);
        ok(samr.get_entry(get(code, 1)).await);
        let by_state = pb::SearchEntriesRequest {
            state: *state as i32,
            ..Default::default()
        };
        assert_eq!(
            search_codes(&mut samr, by_state).await,
            vec![code.clone()],
            "{}",
            state.as_str_name()
        );
    }
    hub.finish().await;
}

fn directory(channel: Channel) -> Directory {
    DirectoryServiceClient::new(channel)
}

/// The hub goes on serving registered callers after refusing a handshake.
async fn still_serving(hub: &TestHub) {
    let me = ok(hub.admin().await.who_am_i(pb::WhoAmIRequest {}).await);
    assert_eq!(me.identity, Some(pb::who_am_i_response::Identity::Admin(ADMIN.into())));
    ok(hub
        .dept(SAMR)
        .await
        .search_entries(pb::SearchEntriesRequest::default())
        .await);
}

/// A call refused by the TLS handshake. tonic reports the broken connection as UNAVAILABLE,
/// UNKNOWN or CANCELLED depending on when it notices (with TLS 1.3 the client learns of the
/// refusal only after sending its request); either way it is not an answer from the service.
#[track_caller]
fn handshake_refused<T: std::fmt::Debug>(result: Result<tonic::Response<T>, tonic::Status>) {
    match result {
        Ok(response) => panic!(
            "the hub answered a caller it should have refused: {:?}",
            response.get_ref()
        ),
        Err(status) => assert!(
            matches!(status.code(), Code::Unavailable | Code::Unknown | Code::Cancelled),
            "expected a transport failure, got {:?}: {}",
            status.code(),
            status.message()
        ),
    }
}

async fn a_client_without_a_certificate_is_refused(backend: Backend) {
    let hub = TestHub::start_on(backend).await;
    let mut anonymous = directory(hub.channel_without_certificate());
    handshake_refused(anonymous.who_am_i(pb::WhoAmIRequest {}).await);
    handshake_refused(anonymous.search_entries(pb::SearchEntriesRequest::default()).await);
    let before = hub.snapshot().await;
    handshake_refused(
        anonymous
            .register_department(register_request(HEALTH, "匿名注册"))
            .await,
    );
    assert_eq!(hub.snapshot().await, before);
    still_serving(&hub).await;
    hub.finish().await;
}

async fn a_certificate_from_another_ca_is_refused(backend: Backend) {
    let hub = TestHub::start_on(backend).await;
    // An admin certificate, but of a CA the hub does not trust.
    let mut stranger = directory(hub.channel_from_foreign_ca());
    handshake_refused(stranger.who_am_i(pb::WhoAmIRequest {}).await);
    let before = hub.snapshot().await;
    handshake_refused(stranger.register_department(register_request(HEALTH, "冒名注册")).await);
    assert_eq!(hub.snapshot().await, before);
    still_serving(&hub).await;
    hub.finish().await;
}

async fn an_unregistered_department_is_denied_until_registered(backend: Backend) {
    let hub = TestHub::start_on(backend).await;
    let mut health = hub.issue_dept(HEALTH).await;
    let before = hub.snapshot().await;
    refused(health.who_am_i(pb::WhoAmIRequest {}).await, Code::PermissionDenied);
    refused(
        health.search_entries(pb::SearchEntriesRequest::default()).await,
        Code::PermissionDenied,
    );
    refused(
        health.list_departments(pb::ListDepartmentsRequest::default()).await,
        Code::PermissionDenied,
    );
    refused(
        health
            .create_entry(create(content("卫生机构信息", "102004", "医疗机构名录")))
            .await,
        Code::PermissionDenied,
    );
    assert_eq!(hub.snapshot().await, before);

    ok(hub
        .admin()
        .await
        .register_department(register_request(HEALTH, "市卫生健康委员会"))
        .await);
    // The same connection works from now on.
    let me = ok(health.who_am_i(pb::WhoAmIRequest {}).await);
    assert!(matches!(me.identity, Some(pb::who_am_i_response::Identity::Department(d)) if d.code == HEALTH));
    ok(health
        .create_entry(create(content("卫生机构信息", "102004", "医疗机构名录")))
        .await);
    hub.finish().await;
}

async fn a_deactivated_department_is_denied_on_its_open_connection(backend: Backend) {
    let hub = TestHub::start_on(backend).await;
    let mut admin = hub.admin().await;
    let mut hrss = hub.dept(HRSS).await;
    let code = ok(hrss
        .create_entry(create(content("社会保险参保信息", "201", "参保情况")))
        .await)
    .resource_code;

    ok(admin
        .deactivate_department(pb::DeactivateDepartmentRequest {
            code: HRSS.into(),
            reason: "证书泄露".into(),
        })
        .await);
    let before = hub.snapshot().await;
    refused(hrss.who_am_i(pb::WhoAmIRequest {}).await, Code::PermissionDenied);
    refused(hrss.get_entry(get(&code, 0)).await, Code::PermissionDenied);
    refused(hrss.submit_entry(submit(&code)).await, Code::PermissionDenied);
    refused(
        hrss.create_entry(create(content("另一条目", "201", "停用后创建")))
            .await,
        Code::PermissionDenied,
    );
    // A new connection fares no better.
    refused(
        hub.dept(HRSS)
            .await
            .search_entries(pb::SearchEntriesRequest::default())
            .await,
        Code::PermissionDenied,
    );
    assert_eq!(hub.snapshot().await, before);
    // The others are unaffected.
    ok(hub.dept(SAMR).await.who_am_i(pb::WhoAmIRequest {}).await);

    ok(admin
        .reactivate_department(pb::ReactivateDepartmentRequest { code: HRSS.into() })
        .await);
    ok(hrss.who_am_i(pb::WhoAmIRequest {}).await);
    assert_eq!(
        ok(hrss.submit_entry(submit(&code)).await).state,
        pb::EntryState::PendingReview as i32
    );
    hub.finish().await;
}

async fn silent_and_garbage_connections_do_not_hold_up_others(backend: Backend) {
    use tokio::io::AsyncWriteExt;

    let hub = TestHub::start_on(backend).await;
    // Connections that never complete a handshake: five say nothing, one speaks cleartext HTTP/2.
    let mut silent = Vec::new();
    for _ in 0..5 {
        silent.push(tokio::net::TcpStream::connect(hub.addr).await.expect("connect"));
    }
    let mut garbage = tokio::net::TcpStream::connect(hub.addr).await.expect("connect");
    garbage
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .expect("write");

    let served = tokio::time::timeout(std::time::Duration::from_secs(5), still_serving(&hub)).await;
    assert!(served.is_ok(), "pending handshakes held up a registered caller");
    drop(silent);
    drop(garbage);
    hub.finish().await;
}

async fn a_flood_of_refused_handshakes_is_summarised_not_recorded_one_by_one(backend: Backend) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use xinqiao_store::AuditFilter;

    let hub = TestHub::start_on(backend).await;
    // A second node over the same store, with the default limit of 20 events a minute per
    // address; flooded with 60 connections that are not TLS at all.
    let node = hub.second_node().await;
    for _ in 0..60 {
        let mut garbage = tokio::net::TcpStream::connect(node.addr).await.expect("connect");
        garbage.write_all(b"GET / HTTP/1.1\r\n\r\n").await.expect("write");
        // Until the hub hangs up: the refusal has then been decided.
        let mut rest = Vec::new();
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), garbage.read_to_end(&mut rest)).await;
    }
    // Stopping summarises what the minute counted.
    node.stop().await.expect("the node stops");
    let count = |events: &[xinqiao_domain::audit::ChainedEvent], action: &str| {
        events.iter().filter(|e| e.event.action == action).count()
    };
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    let events = loop {
        let events = hub
            .store()
            .list_audit(&AuditFilter::default(), 0, 1000)
            .await
            .expect("the trail");
        if count(&events, "authenticate") >= 20 && count(&events, "authenticate_summary") >= 1 {
            break events;
        }
        assert!(tokio::time::Instant::now() < deadline, "the refusals were not recorded");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(count(&events, "authenticate"), 20, "one event each up to the limit");
    let summaries: Vec<_> = events
        .iter()
        .filter(|e| e.event.action == "authenticate_summary")
        .collect();
    assert_eq!(summaries.len(), 1);
    let summary = &summaries[0].event;
    assert_eq!(summary.actor, "peer:127.0.0.1");
    assert_eq!(summary.outcome, "UNAUTHENTICATED");
    assert_eq!(json(&summary.detail)["refusals"], 40, "{}", summary.detail);
    still_serving(&hub).await;
    hub.finish().await;
}
