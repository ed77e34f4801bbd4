//! The audit trail over gRPC (等保 2.0 security audit): what is recorded for changes, reads and
//! refusals, who may read which events, and the hash chain that finds a changed row.

use std::time::Duration;

use tokio::time::Instant;
use tonic::Code;
use xinqiao_tests::chrono::Utc;
use xinqiao_tests::v1 as pb;
use xinqiao_tests::*;

on_each_backend!(
    changes_reads_and_refusals_are_recorded,
    departments_see_only_events_that_involve_them,
    the_chain_verifies_and_a_changed_row_breaks_it,
    an_anchor_finds_what_a_keyed_verification_cannot,
    a_stream_left_open_by_a_stopped_node_is_ended_in_the_trail,
);

/// How long an event recorded when a stream ends (after the client has seen its end) may take.
const SETTLE: Duration = Duration::from_secs(10);

fn detail(event: &pb::AuditEvent) -> Json {
    json(&event.detail)
}

/// One line per event, for failure messages.
fn listing(events: &[pb::AuditEvent]) -> String {
    events
        .iter()
        .map(|e| {
            format!(
                "#{} {} {} target={} about={} {} {}",
                e.sequence, e.actor, e.action, e.target, e.about, e.outcome, e.detail
            )
        })
        .collect::<Vec<_>>()
        .join("\n  ")
}

/// The one event `matches` picks out.
#[track_caller]
fn the_event<'a>(
    events: &'a [pb::AuditEvent],
    what: &str,
    matches: impl Fn(&pb::AuditEvent) -> bool,
) -> &'a pb::AuditEvent {
    let found: Vec<&pb::AuditEvent> = events.iter().filter(|e| matches(e)).collect();
    match found.as_slice() {
        [one] => one,
        _ => panic!(
            "expected one event for {what}, found {}; the trail:\n  {}",
            found.len(),
            listing(events)
        ),
    }
}

/// The whole trail as the admin reads it, once `ready` holds for it (events of streams are
/// recorded when the stream ends, which the client may see first).
async fn trail_when(hub: &TestHub, what: &str, ready: impl Fn(&[pb::AuditEvent]) -> bool) -> Vec<pb::AuditEvent> {
    let mut admin = hub.audit_admin().await;
    let deadline = Instant::now() + SETTLE;
    loop {
        let events = audit_events(&mut admin, pb::ListEventsRequest::default()).await;
        if ready(&events) {
            return events;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not in the trail within {SETTLE:?}:\n  {}",
            listing(&events)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn is(event: &pb::AuditEvent, actor: &str, action: &str, target: &str, outcome: &str) -> bool {
    event.actor == actor && event.action == action && event.target == target && event.outcome == outcome
}

/// A stream's closing event: it carries what was delivered.
fn stream_end(event: &pb::AuditEvent, actor: &str, action: &str, target: &str) -> bool {
    event.actor == actor && event.action == action && event.target == target && detail(event).get("records").is_some()
}

async fn read_stream<T>(call: Result<tonic::Response<tonic::Streaming<T>>, tonic::Status>) -> Vec<T> {
    let mut stream = ok(call);
    let (messages, error) = drain(&mut stream).await;
    assert!(error.is_none(), "the stream failed: {error:?}");
    messages
}

async fn changes_reads_and_refusals_are_recorded(backend: Backend) {
    let hub = TestHub::start_on(backend).await;
    hub.import_resident_schema().await;
    let newcomer = uscc(4242);
    ok(hub
        .admin()
        .await
        .register_department(register_request(&newcomer, "市民政局"))
        .await);
    let open = hub
        .open_residents(SAMR, "公示低保对象信息", pb::ShareType::Unconditional)
        .await
        .dataset;
    let conditional = hub
        .open_residents(SAMR, "低保对象联系信息", pb::ShareType::Conditional)
        .await
        .dataset;
    let files = hub
        .open_files_shared(SAMR, "低保名单文件", pb::ShareType::Unconditional)
        .await
        .dataset;
    let file = "名单.csv".as_bytes().repeat(1000);
    hub.upload_file(SAMR, &files, "名单.csv", &file).await;
    let mut samr = hub.exchange(SAMR).await;
    for dataset in [&open, &conditional] {
        ok(samr
            .publish(batch(
                dataset,
                "residents",
                (1..=3).map(|s| upsert_resident(s, "张三丰")).collect(),
            ))
            .await);
    }

    let mut police = hub.exchange(POLICE).await;
    let mut hrss = hub.exchange(HRSS).await;
    let mut admin = hub.exchange_admin().await;
    assert_eq!(ok(police.fetch(fetch(&open, 0, 0)).await).changes.len(), 3);
    refused(hrss.fetch(fetch(&conditional, 0, 0)).await, Code::PermissionDenied);
    refused(admin.fetch(fetch(&open, 0, 0)).await, Code::PermissionDenied);
    let (request, grant) = hub
        .grant(SAMR, POLICE, &conditional, &["resident_id", "name"], approval(&[], &[]))
        .await;
    let chunks = read_stream(police.snapshot(snapshot_as(&conditional, "", "")).await).await;
    assert_eq!(chunks.iter().map(|c| c.records.len()).sum::<usize>(), 3);
    let downloaded = read_stream(police.download_file(download_as(&files, "名单.csv", PURPOSE, "")).await).await;
    assert_eq!(downloaded.iter().map(|m| m.data.len()).sum::<usize>(), file.len());
    let mut live = ok(police.subscribe(subscribe_as(&open, 0, PURPOSE, "")).await);
    let first = live.message().await.expect("a first batch").expect("a first batch");
    assert_eq!(first.changes.len(), 3);
    drop(live);
    let mut granted_live = ok(police.subscribe(subscribe_as(&conditional, 0, "", "")).await);
    let first = granted_live
        .message()
        .await
        .expect("a first batch")
        .expect("a first batch");
    assert_eq!(first.changes.len(), 3);
    let before_revoking = Utc::now();
    ok(hub
        .access(SAMR)
        .await
        .revoke_grant(revoke_grant(&grant.grant_id, "核验事项已办结"))
        .await);
    let (_, ended) = drain(&mut granted_live).await;
    assert_eq!(ended.map(|s| s.code()), Some(Code::PermissionDenied));
    refused(police.fetch(fetch(&conditional, 0, 0)).await, Code::PermissionDenied);

    let events = trail_when(&hub, "the ends of the subscriptions", |events| {
        events.iter().any(|e| stream_end(e, POLICE, "Subscribe", &open))
            && events.iter().any(|e| stream_end(e, POLICE, "Subscribe", &conditional))
    })
    .await;

    // Every event is chained, in one gap-free sequence.
    let numbers: Vec<u64> = events.iter().map(|e| e.sequence).collect();
    let first_number = numbers[0];
    assert_eq!(
        numbers,
        (first_number..first_number + numbers.len() as u64).collect::<Vec<_>>(),
        "the admin reads the whole trail in order"
    );
    for e in &events {
        // The test hubs keep their audit key in the development PKI, as `serve --dev` does.
        assert!(!e.hash.is_empty() && e.algorithm == "hmac-sha256:dev-1", "{e:?}");
        assert!(
            e.at.is_some() && !e.request_id.is_empty() && !e.outcome.is_empty(),
            "{e:?}"
        );
        assert!(!e.action.is_empty() && !e.actor.is_empty(), "{e:?}");
    }

    // Changes.
    let registered = the_event(&events, "RegisterDepartment", |e| {
        is(e, &admin_actor(), "RegisterDepartment", &newcomer, "OK")
    });
    assert_eq!(registered.about, newcomer);
    let published = the_event(&events, "Publish to the open dataset", |e| {
        is(e, SAMR, "Publish", &open, "OK")
    });
    assert_eq!(published.about, SAMR);
    let counted = detail(published);
    assert!(
        counted["accepted"] == 3 || counted["records"] == 3,
        "a publish event counts its records: {counted}"
    );
    let requested = the_event(&events, "RequestAccess", |e| {
        e.actor == POLICE && e.action == "RequestAccess"
    });
    assert_eq!((requested.outcome.as_str(), requested.about.as_str()), ("OK", SAMR));
    assert!(
        requested.target == conditional || requested.target == request.request_id,
        "RequestAccess is about the dataset or the request: {requested:?}"
    );
    assert_eq!(detail(requested)["request"], request.request_id.as_str());
    let approved = the_event(&events, "ApproveRequest", |e| {
        is(e, SAMR, "ApproveRequest", &request.request_id, "OK")
    });
    assert_eq!(detail(approved)["grant"], grant.grant_id.as_str());
    let revoked = the_event(&events, "RevokeGrant", |e| {
        is(e, SAMR, "RevokeGrant", &grant.grant_id, "OK")
    });
    assert_eq!(revoked.about, SAMR);
    assert_eq!(detail(revoked)["reason"], "核验事项已办结");

    // Reads, with what they delivered and why.
    let fetched = the_event(&events, "POLICE's Fetch", |e| is(e, POLICE, "Fetch", &open, "OK"));
    assert_eq!(fetched.about, SAMR);
    let d = detail(fetched);
    assert_eq!(
        (d["records"].clone(), d["purpose"].clone()),
        (3.into(), PURPOSE.into()),
        "{d}"
    );
    let snapshot = the_event(&events, "the end of the snapshot", |e| {
        stream_end(e, POLICE, "Snapshot", &conditional)
    });
    assert_eq!(snapshot.outcome, "OK");
    let d = detail(snapshot);
    assert_eq!(
        (d["records"].clone(), d["grant"].clone()),
        (3.into(), grant.grant_id.as_str().into()),
        "{d}"
    );
    let download = the_event(&events, "the end of the download", |e| {
        e.actor == POLICE && e.action == "DownloadFile" && e.target == files && detail(e).get("bytes").is_some()
    });
    assert_eq!(detail(download)["bytes"], file.len());
    let subscription = the_event(&events, "the end of the subscription", |e| {
        stream_end(e, POLICE, "Subscribe", &open)
    });
    assert_eq!(detail(subscription)["records"], 3);
    assert_eq!(detail(subscription)["purpose"], PURPOSE);
    // A subscription ended by the revocation of its grant: refused, after what it delivered.
    let cut_off = the_event(&events, "the end of the revoked subscription", |e| {
        stream_end(e, POLICE, "Subscribe", &conditional)
    });
    assert_eq!(cut_off.outcome, "PERMISSION_DENIED");
    let d = detail(cut_off);
    assert_eq!(
        (d["records"].clone(), d["grant"].clone()),
        (3.into(), grant.grant_id.as_str().into()),
        "{d}"
    );

    // Refusals.
    let denied = the_event(&events, "HRSS's refused Fetch", |e| {
        e.actor == HRSS && e.action == "Fetch" && e.outcome == "PERMISSION_DENIED"
    });
    assert_eq!(
        (denied.target.as_str(), denied.about.as_str()),
        (conditional.as_str(), SAMR)
    );
    the_event(&events, "the admin's refused Fetch", |e| {
        e.actor == admin_actor() && e.action == "Fetch" && e.outcome == "PERMISSION_DENIED"
    });
    the_event(&events, "the Fetch after the revocation", |e| {
        is(e, POLICE, "Fetch", &conditional, "PERMISSION_DENIED")
    });

    // Filters: by action, actor, target and time.
    let mut audit = hub.audit_admin().await;
    let fetches = audit_events(
        &mut audit,
        pb::ListEventsRequest {
            action: "Fetch".into(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(fetches.len(), 4, "four fetches:\n  {}", listing(&fetches));
    let by_police = audit_events(
        &mut audit,
        pb::ListEventsRequest {
            actor: POLICE.into(),
            ..Default::default()
        },
    )
    .await;
    assert!(by_police.iter().all(|e| e.actor == POLICE) && by_police.len() >= 6);
    let on_conditional = audit_events(
        &mut audit,
        pb::ListEventsRequest {
            target: conditional.clone(),
            ..Default::default()
        },
    )
    .await;
    assert!(!on_conditional.is_empty() && on_conditional.iter().all(|e| e.target == conditional));
    let lately = audit_events(
        &mut audit,
        pb::ListEventsRequest {
            from: Some(timestamp(before_revoking)),
            ..Default::default()
        },
    )
    .await;
    assert!(lately.iter().any(|e| e.action == "RevokeGrant"));
    assert!(!lately.iter().any(|e| e.action == "RegisterDepartment"));
    let since = timestamp(before_revoking);
    assert!(
        lately.iter().all(|e| e
            .at
            .as_ref()
            .is_some_and(|t| (t.seconds, t.nanos) >= (since.seconds, since.nanos))),
        "{}",
        listing(&lately)
    );
    hub.finish().await;
}

async fn departments_see_only_events_that_involve_them(backend: Backend) {
    let hub = TestHub::start_on(backend).await;
    hub.import_resident_schema().await;
    let open = hub
        .open_residents(SAMR, "公示低保对象信息", pb::ShareType::Unconditional)
        .await
        .dataset;
    let closed = hub
        .open_residents(SAMR, "低保对象家庭收入", pb::ShareType::NotShared)
        .await
        .dataset;
    let mut samr = hub.exchange(SAMR).await;
    ok(samr
        .publish(batch(&open, "one", vec![upsert_resident(1, "张三丰")]))
        .await);
    ok(hub.exchange(POLICE).await.fetch(fetch(&open, 0, 0)).await);
    refused(
        hub.exchange(HRSS).await.fetch(fetch(&closed, 0, 0)).await,
        Code::PermissionDenied,
    );
    refused(
        hub.exchange(HRSS)
            .await
            .get_consumer(pb::GetConsumerRequest {
                dataset: closed.clone(),
                consumer: "etl".into(),
            })
            .await,
        Code::PermissionDenied,
    );
    refused(
        hub.audit(POLICE)
            .await
            .verify_chain(pb::VerifyChainRequest::default())
            .await,
        Code::PermissionDenied,
    );
    // Refusals of callers the hub does not know are recorded too: an unregistered department,
    // and a peer without a client certificate.
    let mut stranger = hub.issue_dept(HEALTH).await;
    refused(stranger.who_am_i(pb::WhoAmIRequest {}).await, Code::PermissionDenied);
    let mut anonymous =
        xinqiao_tests::v1::directory_service_client::DirectoryServiceClient::new(hub.channel_without_certificate());
    assert!(anonymous.who_am_i(pb::WhoAmIRequest {}).await.is_err());

    let everything = trail_when(&hub, "the refused handshake", |events| {
        events
            .iter()
            .any(|e| e.action == "authenticate" && e.outcome == "UNAUTHENTICATED")
    })
    .await;
    the_event(&everything, "the refused VerifyChain", |e| {
        e.actor == POLICE && e.action == "VerifyChain" && e.outcome == "PERMISSION_DENIED"
    });
    // Refusals of look-ups, which are otherwise not recorded, are.
    the_event(&everything, "the refused GetConsumer", |e| {
        is(e, HRSS, "GetConsumer", &closed, "PERMISSION_DENIED")
    });
    the_event(&everything, "the unregistered department's call", |e| {
        e.actor == HEALTH && e.action == "WhoAmI" && e.outcome == "PERMISSION_DENIED"
    });
    let handshake = the_event(&everything, "the refused handshake", |e| {
        e.action == "authenticate" && e.outcome == "UNAUTHENTICATED"
    });
    assert!(handshake.actor.starts_with("peer:"), "{handshake:?}");

    for code in [SAMR, POLICE, HRSS] {
        let mine = audit_events(&mut hub.audit(code).await, pb::ListEventsRequest::default()).await;
        assert!(!mine.is_empty(), "{code} sees its own events");
        let strangers: Vec<pb::AuditEvent> = mine
            .iter()
            .filter(|e| e.actor != code && e.about != code)
            .cloned()
            .collect();
        assert!(
            strangers.is_empty(),
            "{code} sees events that are neither its own nor about it:\n  {}",
            listing(&strangers)
        );
        // And it sees every event that is.
        let expected: Vec<u64> = everything
            .iter()
            .filter(|e| e.actor == code || e.about == code)
            .map(|e| e.sequence)
            .collect();
        let seen: Vec<u64> = mine.iter().map(|e| e.sequence).collect();
        assert!(
            expected.iter().all(|s| seen.contains(s)),
            "{code} misses events of its own: expected at least {expected:?}, saw {seen:?}"
        );
    }
    let samr_view = audit_events(&mut hub.audit(SAMR).await, pb::ListEventsRequest::default()).await;
    // The provider sees who read its data and who was refused.
    the_event(&samr_view, "POLICE's Fetch, seen by SAMR", |e| {
        is(e, POLICE, "Fetch", &open, "OK")
    });
    the_event(&samr_view, "HRSS's refusal, seen by SAMR", |e| {
        is(e, HRSS, "Fetch", &closed, "PERMISSION_DENIED")
    });
    let police_view = audit_events(&mut hub.audit(POLICE).await, pb::ListEventsRequest::default()).await;
    assert!(!police_view.iter().any(|e| e.actor == HRSS || e.action == "Publish"));
    // A filter on another actor does not widen what a department sees.
    let others = audit_events(
        &mut hub.audit(POLICE).await,
        pb::ListEventsRequest {
            actor: HRSS.into(),
            ..Default::default()
        },
    )
    .await;
    assert!(others.is_empty(), "{}", listing(&others));
    hub.finish().await;
}

async fn the_chain_verifies_and_a_changed_row_breaks_it(backend: Backend) {
    let hub = TestHub::start_on(backend).await;
    hub.import_resident_schema().await;
    let open = hub
        .open_residents(SAMR, "公示低保对象信息", pb::ShareType::Unconditional)
        .await
        .dataset;
    ok(hub
        .exchange(SAMR)
        .await
        .publish(batch(&open, "one", vec![upsert_resident(1, "张三丰")]))
        .await);
    let mut police = hub.exchange(POLICE).await;
    ok(police.fetch(fetch(&open, 0, 0)).await);
    ok(police.fetch(fetch(&open, 1, 0)).await);

    refused(
        hub.audit(SAMR)
            .await
            .verify_chain(pb::VerifyChainRequest::default())
            .await,
        Code::PermissionDenied,
    );
    let mut audit = hub.audit_admin().await;
    let intact = ok(audit.verify_chain(pb::VerifyChainRequest::default()).await);
    assert!(intact.intact, "{intact:?}");
    assert_eq!(
        (intact.checkpoint_sequence, intact.checkpoint_hash.as_str()),
        (0, "genesis")
    );
    assert_eq!(intact.verified, intact.head_sequence, "from the genesis to the head");
    assert_eq!(intact.broken_sequence, 0);
    let events = audit_events(&mut audit, pb::ListEventsRequest::default()).await;
    let head = the_event(&events, "the head", |e| e.sequence == intact.head_sequence);
    assert_eq!(head.hash, intact.head_hash);

    // Change one row behind the hub's back: verification names it.
    let fetches: Vec<&pb::AuditEvent> = events
        .iter()
        .filter(|e| e.actor == POLICE && e.action == "Fetch")
        .collect();
    assert_eq!(fetches.len(), 2, "{}", listing(&events));
    let fetched = fetches[0];
    let original = fetched.detail.clone();
    let changed = hub
        .execute_sql(&format!(
            "UPDATE audit_events SET detail = '{{\"records\":0}}' WHERE sequence = {}",
            fetched.sequence
        ))
        .await;
    assert_eq!(changed, 1);
    let broken = ok(audit.verify_chain(pb::VerifyChainRequest::default()).await);
    assert!(!broken.intact, "a changed row goes unnoticed: {broken:?}");
    assert_eq!(broken.broken_sequence, fetched.sequence, "{broken:?}");
    assert!(!broken.broken_reason.is_empty());

    // Put back, it verifies again (events appended meanwhile link on from the head).
    let restored = hub
        .execute_sql(&format!(
            "UPDATE audit_events SET detail = '{}' WHERE sequence = {}",
            original.replace('\'', "''"),
            fetched.sequence
        ))
        .await;
    assert_eq!(restored, 1);
    let again = ok(audit.verify_chain(pb::VerifyChainRequest::default()).await);
    assert!(again.intact, "{again:?}");
    assert!(again.head_sequence > intact.head_sequence);

    // A removed row breaks the chain where it was.
    let second = fetches[1];
    let removed = hub
        .execute_sql(&format!(
            "DELETE FROM audit_events WHERE sequence = {}",
            second.sequence
        ))
        .await;
    assert_eq!(removed, 1);
    let gap = ok(audit.verify_chain(pb::VerifyChainRequest::default()).await);
    assert!(!gap.intact, "a removed row goes unnoticed: {gap:?}");
    assert!(
        [second.sequence, second.sequence + 1].contains(&gap.broken_sequence),
        "the break is named at the removed row or the one after it: {gap:?}"
    );
    hub.finish().await;
}

/// Every stored event, read from the store directly (a read over gRPC would be audited itself).
async fn stored_chain(hub: &TestHub) -> Vec<xinqiao_domain::audit::ChainedEvent> {
    hub.store()
        .list_audit(&xinqiao_store::AuditFilter::default(), 0, 1000)
        .await
        .expect("the stored chain")
}

async fn an_anchor_finds_what_a_keyed_verification_cannot(backend: Backend) {
    use xinqiao_domain::audit::{ChainHash, ChainKey, keyed_link};
    let hub = TestHub::start_on(backend).await;
    hub.import_resident_schema().await;
    let open = hub
        .open_residents(SAMR, "公示低保对象信息", pb::ShareType::Unconditional)
        .await
        .dataset;
    for n in 1..=3 {
        ok(hub
            .exchange(SAMR)
            .await
            .publish(batch(&open, &format!("b{n}"), vec![upsert_resident(n, "张三丰")]))
            .await);
    }
    refused(
        hub.audit(SAMR).await.anchor_chain(pb::AnchorChainRequest {}).await,
        Code::PermissionDenied,
    );
    let mut audit = hub.audit_admin().await;
    let anchor = ok(audit.anchor_chain(pb::AnchorChainRequest {}).await);
    assert!(anchor.sequence > 3 && !anchor.signature.is_empty(), "{anchor:?}");
    assert!(anchor.hub_certificate.starts_with("-----BEGIN CERTIFICATE-----"));
    let with = |anchor: &pb::ChainAnchor| pb::VerifyChainRequest {
        anchor: Some(anchor.clone()),
    };
    let holds = ok(audit.verify_chain(with(&anchor)).await);
    assert!(holds.intact && holds.anchor_holds, "{holds:?}");
    assert_eq!(holds.keyed, holds.verified, "every link is keyed: {holds:?}");

    // An anchor altered after signing, or signed by a department's key, vouches for nothing.
    let altered = pb::ChainAnchor {
        sequence: anchor.sequence - 1,
        ..anchor.clone()
    };
    let answer = ok(audit.verify_chain(with(&altered)).await);
    assert!(
        !answer.anchor_holds && answer.anchor_reason.contains("signature"),
        "{answer:?}"
    );
    let files = xinqiao_hub::pki::department_files(&hub.pki_dir(), SAMR);
    let at = xinqiao_hub::convert::time("at", anchor.at)
        .expect("a time")
        .expect("a time");
    let by_department = xinqiao_hub::tls::sign_with_hub_key(
        &files.cert,
        &files.key,
        &xinqiao_domain::audit::Anchor {
            sequence: anchor.sequence,
            hash: anchor.hash.clone(),
            at,
        }
        .signed_bytes(),
    )
    .expect("a department can sign too");
    let forged = pb::ChainAnchor {
        hub_certificate: by_department.certificate,
        signature_scheme: by_department.scheme,
        signature: by_department.signature,
        ..anchor.clone()
    };
    let answer = ok(audit.verify_chain(with(&forged)).await);
    assert!(
        !answer.anchor_holds && answer.anchor_reason.contains("not a hub"),
        "{answer:?}"
    );

    // Someone who holds the audit key and can write the database rewrites an event before the
    // anchor and relinks everything after it with the key: the chain verifies, the anchor does not.
    let events = stored_chain(&hub).await;
    let keys = ChainKey::parse_lines(
        &std::fs::read_to_string(xinqiao_hub::pki::audit_keys_path(&hub.pki_dir())).expect("the key file"),
    )
    .expect("keys");
    let key = keys.last().expect("a key");
    let victim = events
        .iter()
        .find(|e| e.event.action == "Publish")
        .expect("a publish event")
        .event
        .sequence;
    let mut previous = events
        .iter()
        .find(|e| e.event.sequence == victim - 1)
        .map_or("genesis".to_string(), |e| e.hash.clone());
    for row in events.iter().filter(|e| e.event.sequence >= victim) {
        let mut event = row.event.clone();
        if event.sequence == victim {
            event.detail = r#"{"records":0}"#.into();
        }
        let hash = keyed_link(ChainHash::Sha256, key, &previous, &event);
        hub.execute_sql(&format!(
            "UPDATE audit_events SET detail = '{}', hash = '{hash}' WHERE sequence = {}",
            event.detail.replace('\'', "''"),
            event.sequence
        ))
        .await;
        previous = hash;
    }
    hub.execute_sql(&format!("UPDATE audit_head SET last_hash = '{previous}' WHERE id = 1"))
        .await;
    let rewritten = ok(audit.verify_chain(with(&anchor)).await);
    assert!(
        rewritten.intact,
        "relinked with the key, the chain itself verifies: {rewritten:?}"
    );
    assert!(!rewritten.anchor_holds, "{rewritten:?}");
    assert!(
        rewritten.anchor_reason.contains("no longer has the anchored hash"),
        "{rewritten:?}"
    );

    // Events cut from the end (and the head moved back) leave a chain that verifies, but not the
    // anchor.
    let events = stored_chain(&hub).await;
    let keep = anchor.sequence - 2;
    let kept_hash = &events.iter().find(|e| e.event.sequence == keep).expect("kept").hash;
    hub.execute_sql(&format!("DELETE FROM audit_events WHERE sequence > {keep}"))
        .await;
    hub.execute_sql(&format!(
        "UPDATE audit_head SET last_sequence = {keep}, last_hash = '{kept_hash}' WHERE id = 1"
    ))
    .await;
    let truncated = ok(audit.verify_chain(with(&anchor)).await);
    assert!(truncated.intact, "{truncated:?}");
    assert!(
        !truncated.anchor_holds && truncated.anchor_reason.contains("removed from its end"),
        "{truncated:?}"
    );
    hub.finish().await;
}

async fn a_stream_left_open_by_a_stopped_node_is_ended_in_the_trail(backend: Backend) {
    use xinqiao_domain::audit::{ChainHash, ChainKey, Keyring};
    let hub = TestHub::start_on(backend).await;
    hub.import_resident_schema().await;
    let open = hub
        .open_residents(SAMR, "公示低保对象信息", pb::ShareType::Unconditional)
        .await
        .dataset;
    let records = (1..=3).map(|n| upsert_resident(n, "张三丰")).collect();
    ok(hub.exchange(SAMR).await.publish(batch(&open, "three", records)).await);
    let mut police = hub.exchange(POLICE).await;
    let mut stream = ok(police
        .subscribe(pb::SubscribeRequest {
            consumer: "etl".into(),
            ..subscribe_as(&open, 0, PURPOSE, "")
        })
        .await);
    let first = stream.message().await.expect("a batch").expect("a batch");
    assert_eq!(first.changes.len(), 3);
    ok(police
        .acknowledge(pb::AcknowledgeRequest {
            dataset: open.clone(),
            consumer: "etl".into(),
            sequence: 2,
        })
        .await);

    // The serving node is alive: nothing is orphaned now, even for another node looking.
    let keys = ChainKey::parse_lines(
        &std::fs::read_to_string(xinqiao_hub::pki::audit_keys_path(&hub.pki_dir())).expect("the key file"),
    )
    .expect("keys");
    let linker = Keyring::new(keys, 0).linker(ChainHash::Sha256);
    let now = Utc::now();
    let ended = xinqiao_hub::nodes::end_orphaned_streams_at(hub.store(), &linker, "another-node", now)
        .await
        .expect("a pass");
    assert_eq!(ended, 0);
    // Five minutes on, as another node sees it after this one died without ending its stream.
    let later = now + xinqiao_tests::chrono::Duration::minutes(5);
    let ended = xinqiao_hub::nodes::end_orphaned_streams_at(hub.store(), &linker, "another-node", later)
        .await
        .expect("a pass");
    assert_eq!(ended, 1);
    let chain = stored_chain(&hub).await;
    let opened = chain
        .iter()
        .find(|e| e.event.action == "Subscribe" && json(&e.event.detail)["phase"] == "open")
        .expect("the open event");
    let ends: Vec<_> = chain
        .iter()
        .filter(|e| e.event.request_id == opened.event.request_id && json(&e.event.detail)["phase"] == "end")
        .collect();
    assert_eq!(ends.len(), 1, "exactly one end, the recovered one");
    let end = json(&ends[0].event.detail);
    assert_eq!(ends[0].event.outcome, "UNAVAILABLE");
    assert_eq!(
        (end["recovered"].clone(), end["acknowledged_to"].clone()),
        (Json::Bool(true), Json::from(2))
    );
    assert!(end["records"].is_null(), "what was delivered is unknown: {end}");
    let verified = ok(hub
        .audit_admin()
        .await
        .verify_chain(pb::VerifyChainRequest::default())
        .await);
    assert!(verified.intact, "{verified:?}");
    drop(stream);
    hub.finish().await;
}
