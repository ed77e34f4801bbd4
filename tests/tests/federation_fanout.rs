//! Fan-out of relayed subscriptions (issue #11: records cross once per hub pair). Three
//! departments of the province follow one county dataset under grants of the same view: the
//! county sends each live record once up the chain, and each of them receives every record in
//! order. A fourth, granted a different (masked) view, gets a stream of its own. Revoking one of
//! the three on the county cuts off that one only; cutting off the one whose upstream carries
//! the shared stream has the others re-open, losing and repeating nothing.

use std::time::Instant;

use tonic::Code;
use xinqiao_tests::federation::*;
use xinqiao_tests::*;

on_each_backend!(followers_of_one_view_share_one_stream_across_each_hub_pair);

/// A province department's grant on the county dataset, masked as `masks`; the grant's id.
async fn granted(county: &Level, province: &Level, department: &str, code: &str, masks: &[(&str, &str)]) -> String {
    let request = ok(Access::new(province.as_dept(department).await)
        .request_access(request_access(application(code, &["resident_id", "name"])))
        .await);
    ok(Access::new(county.as_dept(SAMR).await)
        .approve_request(v1::ApproveRequestRequest {
            request_id: request.request_id,
            ..approval(&["resident_id", "name"], masks)
        })
        .await)
    .grant_id
}

/// The stream's refusal, once the records before it have come.
async fn refusal(stream: &mut tonic::Streaming<v1::ChangeBatch>) -> tonic::Status {
    loop {
        match next(stream).await {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("the stream ended without the refusal"),
            Err(status) => return status,
        }
    }
}

/// Waits until the county's trail shows `count` relayed subscriptions ended.
async fn until_streams_ended(county: &Level, count: usize) {
    let started = Instant::now();
    loop {
        let ended = county
            .audit_events("Subscribe")
            .await
            .into_iter()
            .filter(|e| e.actor == format!("hub:{CITY}") && json(&e.detail)["phase"] == "end")
            .count();
        if ended >= count {
            return;
        }
        assert!(started.elapsed() < PROMPT, "{ended} of {count} catch-up streams ended");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

async fn followers_of_one_view_share_one_stream_across_each_hub_pair(backend: Backend) {
    let (county, city, province) = chain(&backend).await;
    let mut same_view = Vec::new();
    for (serial, name) in [
        (1, "浙江省民政厅"),
        (2, "浙江省人力资源和社会保障厅"),
        (3, "浙江省医疗保障局"),
    ] {
        same_view.push(add_province_department(&province, serial, name).await);
    }
    let masked_more = add_province_department(&province, 4, "浙江省统计局").await;
    let code = county_residents(&county).await;
    until_aggregated(&province, &code).await;
    let mut grants = Vec::new();
    for department in &same_view {
        grants.push(granted(&county, &province, department, &code, &[("name", "name")]).await);
    }
    let masks = [("resident_id", "resident_id"), ("name", "name")];
    granted(&county, &province, &masked_more, &code, &masks).await;

    // The first follower's upstream becomes the shared stream; the next two catch up through
    // upstreams of their own (1..=3), join it and close those.
    let mut streams = Vec::new();
    for department in &same_view {
        let mut exchange = Exchange::new(province.as_dept(department).await);
        let mut stream = ok(exchange.subscribe(subscribe_as(&code, 0, "", "")).await);
        assert_eq!(sequences(&changes(&mut stream, 3).await), [1, 2, 3]);
        streams.push(stream);
    }
    until_streams_ended(&county, 2).await;

    // Live records cross from the county once for the three.
    let before = county.delivered(&code);
    publish_residents(&county, &code, "b2", 4..=8).await;
    for stream in &mut streams {
        let live = changes(stream, 5).await;
        assert_eq!(sequences(&live), [4, 5, 6, 7, 8], "every record, in order, once");
        let record = record_of(&live[0]);
        assert_eq!(record["name"], "张*", "masked as granted: {record}");
        assert_eq!(record["resident_id"], resident_id(4).as_str(), "{record}");
    }
    assert_eq!(
        county.delivered(&code) - before,
        5,
        "once across the pair, not once per follower"
    );

    // Another view is never shared with them: the fourth gets its own stream, masked its way.
    let mut exchange = Exchange::new(province.as_dept(&masked_more).await);
    let mut fourth = ok(exchange.subscribe(subscribe_as(&code, 0, "", "")).await);
    let caught_up = changes(&mut fourth, 8).await;
    assert_eq!(sequences(&caught_up), [1, 2, 3, 4, 5, 6, 7, 8]);
    let record = record_of(&caught_up[3]);
    assert_ne!(
        record["resident_id"],
        resident_id(4).as_str(),
        "masked for it: {record}"
    );
    let before = county.delivered(&code);
    publish_residents(&county, &code, "b3", 9..=10).await;
    for stream in streams.iter_mut().chain([&mut fourth]) {
        assert_eq!(sequences(&changes(stream, 2).await), [9, 10]);
    }
    assert_eq!(county.delivered(&code) - before, 4, "once per view");

    // The second's grant revoked on the county: its stream ends with the county's refusal,
    // found by its own checks there; the others go on.
    let mut provider = Access::new(county.as_dept(SAMR).await);
    ok(provider.revoke_grant(revoke_grant(&grants[1], "核验事项已办结")).await);
    let cut = refusal(&mut streams[1]).await;
    assert_eq!(cut.code(), Code::PermissionDenied, "{cut:?}");
    assert!(cut.message().contains(COUNTY), "the county's refusal: {cut:?}");
    publish_residents(&county, &code, "b4", 11..=11).await;
    for stream in streams.iter_mut().step_by(2).chain([&mut fourth]) {
        assert_eq!(sequences(&changes(stream, 1).await), [11]);
    }

    // The third, riding on the first's upstream, is checked on the county in its own name every
    // CHECK_INTERVAL (a Fetch that moves no record); one such check, before the first is cut off.
    let third_checked = async {
        loop {
            let checks = county.audit_events("Fetch").await;
            if checks
                .iter()
                .any(|e| e.actor == format!("hub:{CITY}") && e.detail.contains(same_view[2].as_str()))
            {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(15), third_checked)
        .await
        .expect("the third follower checked on the county within 15 s");

    // The first, whose upstream carries the shared stream, cut off: the third re-opens from
    // its position and goes on, nothing lost or repeated.
    ok(provider.revoke_grant(revoke_grant(&grants[0], "核验事项已办结")).await);
    let cut = refusal(&mut streams[0]).await;
    assert_eq!(cut.code(), Code::PermissionDenied, "{cut:?}");
    publish_residents(&county, &code, "b5", 12..=13).await;
    assert_eq!(sequences(&changes(&mut streams[2], 2).await), [12, 13]);
    assert_eq!(sequences(&changes(&mut fourth, 2).await), [12, 13]);

    // The county decided and audited each department's reads: its opening, and the checks of
    // those riding on another's upstream (Fetches that move no record), in its name.
    let opened = county.audit_events("Subscribe").await;
    for department in same_view.iter().chain([&masked_more]) {
        assert!(
            opened
                .iter()
                .any(|e| e.detail.contains(department.as_str()) && json(&e.detail)["phase"] == "open"),
            "{department}: {opened:?}"
        );
    }
    let checks = county.audit_events("Fetch").await;
    assert!(
        checks
            .iter()
            .any(|e| e.actor == format!("hub:{CITY}") && e.detail.contains(same_view[2].as_str())),
        "{checks:?}"
    );
    // The province audits each follower's stream as its own.
    let followed = province.audit_events("Subscribe").await;
    for department in &same_view {
        assert!(
            followed.iter().any(|e| e.actor.contains(department.as_str())),
            "{followed:?}"
        );
    }

    county.finish().await;
    city.finish().await;
    province.finish().await;
}
