//! The lifecycle of a catalogue entry over the API: 待提交 → 待审核 → 已发布 or 已退回 → 下线,
//! every transition allowed and refused, its history, and optimistic concurrency.

use tonic::Code;
use xinqiao_tests::v1 as pb;
use xinqiao_tests::*;

on_each_backend!(
    a_draft_is_submitted_and_published,
    a_returned_entry_is_revised_resubmitted_and_published,
    history_lists_every_change_oldest_first,
    an_entry_is_withdrawn_from_each_live_state,
    a_withdrawn_entry_is_revised_into_a_new_draft,
    every_other_transition_is_refused_and_changes_nothing,
    a_return_needs_a_reason,
    a_stale_expected_version_is_aborted,
    concurrent_changes_lose_no_update,
);

const STATE_DRAFT: i32 = pb::EntryState::Draft as i32;
const STATE_PENDING: i32 = pb::EntryState::PendingReview as i32;
const STATE_PUBLISHED: i32 = pb::EntryState::Published as i32;
const STATE_RETURNED: i32 = pb::EntryState::Returned as i32;
const STATE_WITHDRAWN: i32 = pb::EntryState::Withdrawn as i32;

fn enterprise() -> pb::EntryContent {
    content("企业登记信息", "102001", "本市企业的营业执照登记信息")
}

async fn a_draft_is_submitted_and_published(backend: Backend) {
    let hub = TestHub::start_on(backend).await;
    let mut samr = hub.dept(SAMR).await;
    let mut admin = hub.admin().await;

    let draft = ok(samr.create_entry(create(enterprise())).await);
    let code = draft.resource_code.clone();
    let pending = ok(samr.submit_entry(submit(&code)).await);
    assert_eq!((pending.state, pending.version), (STATE_PENDING, 2));
    assert!(pending.published_at.is_none());
    assert_eq!(pending.content, draft.content, "submitting does not change the content");

    let published = ok(admin.publish_entry(publish(&code)).await);
    assert_eq!((published.state, published.version), (STATE_PUBLISHED, 3));
    assert!(published.published_at.is_some(), "publishing sets the publication date");
    assert_eq!(published.published_at, published.updated_at);
    assert_eq!(published.created_at, draft.created_at);
    assert_eq!(ok(samr.get_entry(get(&code, 0)).await), published);
    hub.finish().await;
}

async fn a_returned_entry_is_revised_resubmitted_and_published(backend: Backend) {
    let hub = TestHub::start_on(backend).await;
    let mut samr = hub.dept(SAMR).await;
    let mut admin = hub.admin().await;
    let code = ok(samr.create_entry(create(enterprise())).await).resource_code;
    ok(samr.submit_entry(submit(&code)).await);

    let returned = ok(admin.return_entry(return_with(&code, "请补充\"成立日期\"信息项")).await);
    assert_eq!((returned.state, returned.version), (STATE_RETURNED, 3));
    assert_eq!(returned.state_reason, "请补充\"成立日期\"信息项");
    // The provider sees why.
    assert_eq!(
        ok(samr.get_entry(get(&code, 0)).await).state_reason,
        returned.state_reason
    );

    let mut revised = enterprise();
    revised.items.push(item("成立日期", "日期型", 8));
    let draft = ok(samr.update_entry(update(&code, revised.clone())).await);
    assert_eq!((draft.state, draft.version), (STATE_DRAFT, 4));
    assert_eq!(draft.content.as_ref(), Some(&revised));

    ok(samr.submit_entry(submit(&code)).await);
    let published = ok(admin.publish_entry(publish(&code)).await);
    assert_eq!((published.state, published.version), (STATE_PUBLISHED, 6));
    assert_eq!(published.content.as_ref(), Some(&revised));

    // A returned entry may also be resubmitted as it is.
    let again = ok(samr
        .create_entry(create(content("企业年报信息", "102001", "年度报告")))
        .await)
    .resource_code;
    ok(samr.submit_entry(submit(&again)).await);
    ok(admin.return_entry(return_with(&again, "请核对")).await);
    assert_eq!(ok(samr.submit_entry(submit(&again)).await).state, STATE_PENDING);
    hub.finish().await;
}

async fn history_lists_every_change_oldest_first(backend: Backend) {
    let hub = TestHub::start_on(backend).await;
    let mut samr = hub.dept(SAMR).await;
    let mut admin = hub.admin().await;
    let code = ok(samr.create_entry(create(enterprise())).await).resource_code;
    ok(samr.submit_entry(submit(&code)).await);
    ok(admin.return_entry(return_with(&code, "摘要不完整")).await);
    ok(samr
        .update_entry(update(&code, content("企业登记信息", "102001", "补充后的摘要")))
        .await);
    ok(samr.submit_entry(submit(&code)).await);
    ok(admin.publish_entry(publish(&code)).await);
    ok(admin.withdraw_entry(withdraw(&code, "数据源调整")).await);

    let history = ok(samr.list_entry_versions(versions(&code)).await).versions;
    let admin_actor = format!("admin:{ADMIN}");
    let expected = [
        (1, "create", STATE_DRAFT, SAMR, ""),
        (2, "submit", STATE_PENDING, SAMR, ""),
        (3, "return", STATE_RETURNED, admin_actor.as_str(), "摘要不完整"),
        (4, "update", STATE_DRAFT, SAMR, ""),
        (5, "submit", STATE_PENDING, SAMR, ""),
        (6, "publish", STATE_PUBLISHED, admin_actor.as_str(), ""),
        (7, "withdraw", STATE_WITHDRAWN, admin_actor.as_str(), "数据源调整"),
    ];
    let got: Vec<_> = history
        .iter()
        .map(|v| {
            (
                v.version,
                v.action.as_str(),
                v.state,
                v.actor.as_str(),
                v.reason.as_str(),
            )
        })
        .collect();
    assert_eq!(got, expected);
    let times: Vec<_> = history
        .iter()
        .map(|v| v.changed_at.as_ref().map(|t| (t.seconds, t.nanos)))
        .collect();
    assert!(times.iter().all(Option::is_some));
    assert!(
        times.windows(2).all(|w| w[0] <= w[1]),
        "changed_at runs forward: {times:?}"
    );

    // Each version can be read back in the state the history gives it.
    for v in &history {
        let past = ok(samr.get_entry(get(&code, v.version)).await);
        assert_eq!((past.version, past.state), (v.version, v.state));
    }
    assert_eq!(ok(admin.list_entry_versions(versions(&code)).await).versions, history);
    hub.finish().await;
}

/// Puts a new entry of 市市场监督管理局 into `state` and returns its resource code.
async fn entry_in(hub: &TestHub, state: i32, name: &str) -> String {
    let mut samr = hub.dept(SAMR).await;
    let mut admin = hub.admin().await;
    let code = ok(samr.create_entry(create(content(name, "102001", "状态测试"))).await).resource_code;
    match state {
        STATE_DRAFT => {}
        STATE_PENDING => {
            ok(samr.submit_entry(submit(&code)).await);
        }
        STATE_PUBLISHED => {
            ok(samr.submit_entry(submit(&code)).await);
            ok(admin.publish_entry(publish(&code)).await);
        }
        STATE_RETURNED => {
            ok(samr.submit_entry(submit(&code)).await);
            ok(admin.return_entry(return_with(&code, "退回")).await);
        }
        STATE_WITHDRAWN => {
            ok(samr.withdraw_entry(withdraw(&code, "下线")).await);
        }
        other => panic!("no such state {other}"),
    }
    assert_eq!(ok(samr.get_entry(get(&code, 0)).await).state, state);
    code
}

async fn an_entry_is_withdrawn_from_each_live_state(backend: Backend) {
    let hub = TestHub::start_on(backend).await;
    let mut samr = hub.dept(SAMR).await;
    let mut admin = hub.admin().await;
    for (i, state) in [STATE_DRAFT, STATE_PENDING, STATE_PUBLISHED, STATE_RETURNED]
        .into_iter()
        .enumerate()
    {
        let code = entry_in(&hub, state, &format!("下线测试{i}")).await;
        let before = ok(samr.get_entry(get(&code, 0)).await);
        let withdrawn = ok(samr.withdraw_entry(withdraw(&code, "停止提供")).await);
        assert_eq!(withdrawn.state, STATE_WITHDRAWN, "from state {state}");
        assert_eq!(withdrawn.version, before.version + 1);
        assert_eq!(withdrawn.state_reason, "停止提供");
    }
    // The admin takes a published entry off line too, without giving a reason.
    let code = entry_in(&hub, STATE_PUBLISHED, "管理员下线").await;
    let withdrawn = ok(admin.withdraw_entry(withdraw(&code, "")).await);
    assert_eq!(withdrawn.state, STATE_WITHDRAWN);
    hub.finish().await;
}

async fn a_withdrawn_entry_is_revised_into_a_new_draft(backend: Backend) {
    let hub = TestHub::start_on(backend).await;
    let mut samr = hub.dept(SAMR).await;
    let mut admin = hub.admin().await;
    let code = entry_in(&hub, STATE_PUBLISHED, "重新上线").await;
    let withdrawn = ok(samr.withdraw_entry(withdraw(&code, "数据更新中")).await);
    let draft = ok(samr
        .update_entry(update(&code, content("重新上线", "102001", "更新后的摘要")))
        .await);
    assert_eq!((draft.state, draft.version), (STATE_DRAFT, withdrawn.version + 1));
    assert_eq!(draft.state_reason, "");
    // The earlier publication date stays until the entry is published again.
    assert_eq!(draft.published_at, withdrawn.published_at);
    ok(samr.submit_entry(submit(&code)).await);
    let republished = ok(admin.publish_entry(publish(&code)).await);
    assert_eq!(republished.state, STATE_PUBLISHED);
    assert!(published_at(&republished) > published_at(&withdrawn));
    hub.finish().await;
}

fn published_at(e: &pb::CatalogEntry) -> (i64, i32) {
    let t = e.published_at.as_ref().expect("published_at is set");
    (t.seconds, t.nanos)
}

async fn every_other_transition_is_refused_and_changes_nothing(backend: Backend) {
    let hub = TestHub::start_on(backend).await;
    let mut samr = hub.dept(SAMR).await;
    let mut admin = hub.admin().await;

    // Each action by the caller allowed to take it, so only the state refuses it.
    let refusals: &[(i32, &[&str])] = &[
        (STATE_DRAFT, &["publish", "return"]),
        (STATE_PENDING, &["update", "submit"]),
        (STATE_PUBLISHED, &["update", "submit", "publish", "return"]),
        (STATE_RETURNED, &["publish", "return"]),
        (STATE_WITHDRAWN, &["submit", "publish", "return", "withdraw"]),
    ];
    for (i, &(state, actions)) in refusals.iter().enumerate() {
        let code = entry_in(&hub, state, &format!("拒绝测试{i}")).await;
        let before = hub.snapshot().await;
        for &action in actions {
            let status = match action {
                "update" => samr
                    .update_entry(update(&code, content(&format!("拒绝测试{i}"), "102001", "改")))
                    .await
                    .err(),
                "submit" => samr.submit_entry(submit(&code)).await.err(),
                "publish" => admin.publish_entry(publish(&code)).await.err(),
                "return" => admin.return_entry(return_with(&code, "退回")).await.err(),
                "withdraw" => samr.withdraw_entry(withdraw(&code, "")).await.err(),
                _ => unreachable!(),
            };
            let status = status.unwrap_or_else(|| panic!("{action} was allowed in state {state}"));
            assert_eq!(
                status.code(),
                Code::FailedPrecondition,
                "{action} in state {state}: {}",
                status.message()
            );
        }
        assert_eq!(
            hub.snapshot().await,
            before,
            "refused transitions changed the catalogue"
        );
    }
    hub.finish().await;
}

async fn a_return_needs_a_reason(backend: Backend) {
    let hub = TestHub::start_on(backend).await;
    let mut admin = hub.admin().await;
    let code = entry_in(&hub, STATE_PENDING, "退回原因").await;
    let before = hub.snapshot().await;
    invalid(admin.return_entry(return_with(&code, "")).await, &["reason"]);
    invalid(admin.return_entry(return_with(&code, "  \n ")).await, &["reason"]);
    assert_eq!(hub.snapshot().await, before);
    assert_eq!(
        ok(admin.return_entry(return_with(&code, "请补充")).await).state,
        STATE_RETURNED
    );
    hub.finish().await;
}

async fn a_stale_expected_version_is_aborted(backend: Backend) {
    let hub = TestHub::start_on(backend).await;
    let mut samr = hub.dept(SAMR).await;
    let mut admin = hub.admin().await;
    let v1 = ok(samr.create_entry(create(enterprise())).await);
    let code = v1.resource_code.clone();
    let before = hub.snapshot().await;

    let stale_update = pb::UpdateEntryRequest {
        expected_version: 2,
        ..update(&code, enterprise())
    };
    refused(samr.update_entry(stale_update).await, Code::Aborted);
    refused(
        samr.submit_entry(pb::SubmitEntryRequest {
            resource_code: code.clone(),
            expected_version: 7,
        })
        .await,
        Code::Aborted,
    );
    refused(
        samr.withdraw_entry(pb::WithdrawEntryRequest {
            expected_version: 9,
            ..withdraw(&code, "")
        })
        .await,
        Code::Aborted,
    );
    assert_eq!(hub.snapshot().await, before);

    // The current version is accepted, and the next caller still holding 1 loses.
    let current = pb::SubmitEntryRequest {
        resource_code: code.clone(),
        expected_version: 1,
    };
    assert_eq!(ok(samr.submit_entry(current).await).version, 2);
    refused(
        samr.update_entry(pb::UpdateEntryRequest {
            expected_version: 1,
            ..update(&code, enterprise())
        })
        .await,
        Code::Aborted,
    );
    refused(
        admin
            .publish_entry(pb::PublishEntryRequest {
                resource_code: code.clone(),
                expected_version: 1,
            })
            .await,
        Code::Aborted,
    );
    refused(
        admin
            .return_entry(pb::ReturnEntryRequest {
                expected_version: 1,
                ..return_with(&code, "过期版本")
            })
            .await,
        Code::Aborted,
    );
    let published = ok(admin
        .publish_entry(pb::PublishEntryRequest {
            resource_code: code.clone(),
            expected_version: 2,
        })
        .await);
    assert_eq!((published.state, published.version), (STATE_PUBLISHED, 3));
    hub.finish().await;
}

async fn concurrent_changes_lose_no_update(backend: Backend) {
    let hub = TestHub::start_on(backend).await;
    let samr = hub.dept(SAMR).await;
    let code = ok(samr.clone().create_entry(create(enterprise())).await).resource_code;

    // Ten revisions at once, none naming a version: each is applied on top of the one before it,
    // or refused as ABORTED because another got there first; none is silently lost.
    let mut tasks = Vec::new();
    for i in 0..10 {
        let mut client = samr.clone();
        let code = code.clone();
        tasks.push(tokio::spawn(async move {
            let summary = format!("并发修改{i}");
            (
                summary.clone(),
                client
                    .update_entry(update(&code, content("企业登记信息", "102001", &summary)))
                    .await,
            )
        }));
    }
    let mut applied = Vec::new();
    for task in tasks {
        match task.await.expect("task") {
            (summary, Ok(response)) => applied.push((response.into_inner().version, summary)),
            (_, Err(status)) => assert_eq!(status.code(), Code::Aborted, "{}", status.message()),
        }
    }
    assert!(!applied.is_empty(), "at least one revision wins");
    applied.sort();
    let expected_versions: Vec<u64> = (2..2 + applied.len() as u64).collect();
    assert_eq!(
        applied.iter().map(|(v, _)| *v).collect::<Vec<_>>(),
        expected_versions,
        "one version per applied change"
    );

    let mut samr = samr;
    let current = ok(samr.get_entry(get(&code, 0)).await);
    let (last_version, last_summary) = applied.last().expect("not empty");
    assert_eq!(current.version, *last_version);
    assert_eq!(
        current.content.map(|c| c.summary).as_deref(),
        Some(last_summary.as_str())
    );
    let history = ok(samr.list_entry_versions(versions(&code)).await).versions;
    assert_eq!(
        history.iter().map(|v| v.version).collect::<Vec<_>>(),
        (1..=*last_version).collect::<Vec<_>>()
    );
    for (version, summary) in &applied {
        let past = ok(samr.get_entry(get(&code, *version)).await);
        assert_eq!(past.content.map(|c| c.summary).as_deref(), Some(summary.as_str()));
    }
    hub.finish().await;
}
