//! Cross-hub exchange (跨级交换) across three hubs on loopback, each with its own CA and database:
//! county (330110) → city (330100) → province (330000). A department of the province applies
//! through its own hub for a 有条件共享 dataset of the county, the county's provider grants it
//! masked, and the department follows it through the chain, masked as granted; the city stopped
//! mid-stream and restarted loses and repeats nothing; the county's revocation cuts the follower
//! off; a hub cannot act for a department it does not serve; both ends' trails show the read.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tonic::Code;
use xinqiao_hub::pki::{self};
use xinqiao_proto::v1::directory_service_client::DirectoryServiceClient;
use xinqiao_tests::federation::*;
use xinqiao_tests::*;

/// The county's SAMR opens a 无条件共享 文件 dataset holding `roster.txt`; its resource code.
async fn county_file(county: &Level, bytes: &[u8]) -> String {
    let entry = files_entry(content("余杭区低保对象名册", "101001", "低保对象名册文件"));
    let mut dept = DirectoryServiceClient::new(county.as_dept(SAMR).await);
    let code = ok(dept.create_entry(create(entry)).await).resource_code;
    ok(dept.submit_entry(submit(&code)).await);
    ok(DirectoryServiceClient::new(county.as_admin().await)
        .publish_entry(publish(&code))
        .await);
    let mut exchange = Exchange::new(county.as_dept(SAMR).await);
    ok(exchange.create_dataset(file_dataset(&code)).await);
    let started = ok(exchange
        .start_upload(v1::StartUploadRequest {
            dataset: code.clone(),
            file_name: "roster.txt".into(),
            size: bytes.len() as u64,
            sha256: sha256_hex(bytes),
        })
        .await);
    let chunk = v1::FileChunk {
        upload_id: started.upload_id,
        offset: 0,
        data: bytes.to_vec(),
    };
    let done = ok(exchange.upload_chunks(tokio_stream::iter(vec![chunk])).await);
    assert!(done.complete);
    code
}

on_each_backend!(
    a_province_department_follows_a_county_dataset_through_the_city,
    a_peer_that_hangs_or_answers_garbage_is_named_promptly,
);

async fn a_province_department_follows_a_county_dataset_through_the_city(backend: Backend) {
    let (county, mut city, province) = chain_with_department(&backend).await;
    let me = province_department();
    let code = county_residents(&county).await;
    until_aggregated(&province, &code).await;

    // Before a grant the county's rules refuse it, through the chain.
    let mut exchange = Exchange::new(province.as_dept(&me).await);
    let refusal = refused(
        exchange.fetch(fetch_as(&code, 0, 10, "", "")).await,
        Code::PermissionDenied,
    );
    assert!(refusal.message().contains(CITY), "{}", refusal.message());

    // It applies on its own hub; the county's provider answers on the county.
    let request = ok(Access::new(province.as_dept(&me).await)
        .request_access(request_access(application(&code, &["resident_id", "name", "mobile"])))
        .await);
    assert_eq!(request.applicant_code, me);
    assert_eq!(request.provider_code, SAMR);
    let mut provider = Access::new(county.as_dept(SAMR).await);
    let approved = ok(provider
        .approve_request(v1::ApproveRequestRequest {
            request_id: request.request_id.clone(),
            ..approval(
                &["resident_id", "name"],
                &[("resident_id", "resident_id"), ("name", "name")],
            )
        })
        .await);
    let grant_id = approved.grant_id.clone();

    // It follows the dataset through the chain, projected and masked as granted on the county.
    let dataset = ok(exchange.get_dataset(get_dataset(&code)).await);
    assert_eq!(dataset.dataset, code);
    assert_eq!(dataset.provider_code, SAMR);
    // Named with its origin, as when several hubs hold the code: answered under that name.
    let named = format!("{COUNTY}:{code}");
    assert_eq!(ok(exchange.get_dataset(get_dataset(&named)).await).dataset, named);
    let mut stream = ok(exchange.subscribe(subscribe_as(&code, 0, "", "")).await);
    let first = changes(&mut stream, 3).await;
    assert_eq!(sequences(&first), [1, 2, 3]);
    let record = record_of(&first[0]);
    assert_eq!(record["name"], "张*", "masked on the county: {record}");
    assert_ne!(record["resident_id"], resident_id(1).as_str());
    assert!(
        record.get("mobile").is_none() && record.get("address").is_none(),
        "{record}"
    );
    publish_residents(&county, &code, "b2", 4..=5).await;
    let live = changes(&mut stream, 2).await;
    assert_eq!(sequences(&live), [4, 5]);

    // A consumer's cursor, acknowledged through the chain, is kept on the county under the
    // department's name and resumes there.
    let acked = ok(exchange
        .acknowledge(v1::AcknowledgeRequest {
            dataset: code.clone(),
            consumer: "relief".into(),
            sequence: 3,
        })
        .await);
    assert_eq!(acked.acknowledged_sequence, 3);
    let cursor = ok(exchange
        .get_consumer(v1::GetConsumerRequest {
            dataset: code.clone(),
            consumer: "relief".into(),
        })
        .await);
    assert_eq!(cursor.acknowledged_sequence, 3);
    let on_county = county
        .store()
        .get_consumer(&code, &me, "relief")
        .await
        .expect("read the cursor")
        .expect("kept on the county");
    assert_eq!(on_county.acknowledged, 3);
    let mut consumer = ok(exchange
        .subscribe(v1::SubscribeRequest {
            consumer: "relief".into(),
            ..subscribe_as(&code, 0, "", "")
        })
        .await);
    assert_eq!(
        sequences(&changes(&mut consumer, 2).await),
        [4, 5],
        "resumes after its cursor"
    );
    drop(consumer);

    // The city goes down mid-stream: the follower is told so, naming the city, never hangs.
    city.stop().await;
    let ended = next(&mut stream).await.expect_err("the stream ends with a status");
    assert_eq!(ended.code(), Code::Unavailable, "{ended:?}");
    assert!(ended.message().contains(CITY), "{ended:?}");
    let down = tokio::time::timeout(PROMPT, exchange.fetch(fetch_as(&code, 0, 10, "", "")))
        .await
        .expect("a call through a hub that is down ends promptly");
    let down = down.expect_err("the city is down");
    assert_eq!(down.code(), Code::Unavailable, "{down:?}");
    assert!(down.message().contains(CITY), "{down:?}");
    publish_residents(&county, &code, "b3", 6..=7).await;

    // Restarted, the city relays again: from the last sequence seen, nothing lost or repeated.
    city.run().await;
    let started = Instant::now();
    let mut stream = loop {
        match exchange.subscribe(subscribe_as(&code, 5, "", "")).await {
            Ok(stream) => break stream.into_inner(),
            Err(status) => {
                assert!(
                    started.elapsed() < PROMPT,
                    "the restarted city never relayed: {status:?}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    let resumed = changes(&mut stream, 2).await;
    assert_eq!(sequences(&resumed), [6, 7], "gap-free and once each");
    let fetched = ok(exchange.fetch(fetch_as(&code, 0, 100, "", "")).await);
    assert_eq!(sequences(&fetched.changes), [1, 2, 3, 4, 5, 6, 7]);

    // The county's provider revokes: the province's follower is cut off.
    ok(provider.revoke_grant(revoke_grant(&grant_id, "核验事项已办结")).await);
    let cut = loop {
        match next(&mut stream).await {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("the stream ended without the refusal"),
            Err(status) => break status,
        }
    };
    assert_eq!(cut.code(), Code::PermissionDenied, "{cut:?}");
    refused(
        exchange.fetch(fetch_as(&code, 0, 10, "", "")).await,
        Code::PermissionDenied,
    );

    // A 文件 dataset shared unconditionally: downloaded through the chain with a purpose,
    // byte for byte as the county holds it.
    let bytes = "余杭区低保对象名册（示例）\n".repeat(2000).into_bytes();
    let files = county_file(&county, &bytes).await;
    until_aggregated(&province, &files).await;
    let mut download = ok(exchange
        .download_file(download_as(&files, "roster.txt", PURPOSE, ""))
        .await);
    let mut received = Vec::new();
    let mut declared = String::new();
    while let Some(data) = tokio::time::timeout(PROMPT, download.message())
        .await
        .expect("the relayed download goes on")
        .expect("the relayed download succeeds")
    {
        if !data.sha256.is_empty() {
            declared = data.sha256.clone();
        }
        received.extend(data.data);
    }
    assert_eq!(received, bytes);
    assert_eq!(declared, sha256_hex(&bytes));

    // Both ends audit: the county names the city and the department, the province its side.
    let county_side = county.audit_events("Subscribe").await;
    assert!(
        county_side.iter().any(|e| e.actor == format!("hub:{CITY}")
            && e.detail.contains(&me)
            && e.detail.contains(PROVINCE)
            && e.target == code),
        "{county_side:?}"
    );
    let province_side = province.audit_events("Subscribe").await;
    assert!(
        province_side
            .iter()
            .any(|e| e.actor.contains(&me) && e.detail.contains("relayed_to") && e.detail.contains(COUNTY)),
        "{province_side:?}"
    );
    let requests = county.audit_events("RequestAccess").await;
    assert!(
        requests
            .iter()
            .any(|e| e.actor == format!("hub:{CITY}") && e.detail.contains(&me))
    );

    // A hub cannot act for a department it does not serve: the city, as the county's parent,
    // naming a department of another province, or naming none.
    let city_identity = pki::hub_files(&city.pki_dir(), CITY);
    let mut as_city = Exchange::new(county.channel_as(&city_identity));
    let mut foreign = tonic::Request::new(fetch_as(&code, 0, 10, "", ""));
    foreign
        .metadata_mut()
        .insert("x-xinqiao-for-department", uscc_in("320100").parse().expect("ascii"));
    foreign
        .metadata_mut()
        .insert("x-xinqiao-home-hub", "320100".parse().expect("ascii"));
    refused(as_city.fetch(foreign).await, Code::PermissionDenied);
    // Nor for the county's own provider, which calls the county itself.
    let mut borrowed = tonic::Request::new(fetch_as(&code, 0, 10, "", ""));
    borrowed
        .metadata_mut()
        .insert("x-xinqiao-for-department", SAMR.parse().expect("ascii"));
    borrowed
        .metadata_mut()
        .insert("x-xinqiao-home-hub", CITY.parse().expect("ascii"));
    let status = refused(as_city.fetch(borrowed).await, Code::PermissionDenied);
    assert!(status.message().contains("registered with this hub"), "{status:?}");
    refused(
        as_city.fetch(fetch_as(&code, 0, 10, "", "")).await,
        Code::PermissionDenied,
    );

    county.finish().await;
    city.finish().await;
    province.finish().await;
}

fn uscc_in(division: &str) -> String {
    let first17 = format!("11{division}MB0090002");
    let check = xinqiao_domain::identifiers::uscc_check_char(&first17).expect("alphabet");
    format!("{first17}{check}")
}

/// What stands on the city's port while the city is down: a listener that accepts and then says
/// nothing, or one that answers bytes that are no TLS.
async fn impostor(addr: SocketAddr, garbage: bool) -> tokio::task::JoinHandle<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .expect("the city's port is free again");
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((mut socket, _)) = listener.accept().await {
            if garbage {
                use tokio::io::AsyncWriteExt;
                let _ = socket
                    .write_all(b"HTTP/1.1 200 OK\r\n\r\n\x00\xff not a TLS record")
                    .await;
            }
            held.push(socket);
        }
    })
}

async fn a_peer_that_hangs_or_answers_garbage_is_named_promptly(backend: Backend) {
    let (county, mut city, province) = chain_with_department(&backend).await;
    let me = province_department();
    let code = county_residents(&county).await;
    until_aggregated(&province, &code).await;
    let mut exchange = Exchange::new(province.as_dept(&me).await);
    refused(
        exchange.fetch(fetch_as(&code, 0, 10, "", "")).await,
        Code::PermissionDenied,
    );

    // Its own hub keeps deciding its standing too: deactivated there, its relayed stream ends.
    let request = ok(Access::new(province.as_dept(&me).await)
        .request_access(request_access(application(&code, &["resident_id", "name"])))
        .await);
    ok(Access::new(county.as_dept(SAMR).await)
        .approve_request(v1::ApproveRequestRequest {
            request_id: request.request_id,
            ..approval(&[], &[])
        })
        .await);
    let mut stream = ok(exchange.subscribe(subscribe_as(&code, 0, "", "")).await);
    assert_eq!(sequences(&changes(&mut stream, 3).await), [1, 2, 3]);
    let mut admin = DirectoryServiceClient::new(province.as_admin().await);
    ok(admin
        .deactivate_department(v1::DeactivateDepartmentRequest {
            code: me.clone(),
            reason: "演示停用".into(),
        })
        .await);
    let ended = next(&mut stream).await.expect_err("cut off on its own hub");
    assert_eq!(ended.code(), Code::PermissionDenied, "{ended:?}");
    ok(admin
        .reactivate_department(v1::ReactivateDepartmentRequest { code: me.clone() })
        .await);

    let city_addr = city.addr;
    city.stop().await;

    for garbage in [false, true] {
        let listener = impostor(city_addr, garbage).await;
        let started = Instant::now();
        let answer = tokio::time::timeout(PROMPT, exchange.fetch(fetch_as(&code, 0, 10, "", "")))
            .await
            .expect("never a hang");
        let status = answer.expect_err("no answer from the city's port");
        assert_ne!(status.code(), Code::PermissionDenied, "{status:?}");
        assert!(
            matches!(status.code(), Code::Unavailable | Code::DeadlineExceeded),
            "garbage {garbage}: {status:?}"
        );
        assert!(status.message().contains(CITY), "names the peer: {status:?}");
        assert!(started.elapsed() < PROMPT, "{:?}", started.elapsed());
        let stream = tokio::time::timeout(PROMPT, exchange.subscribe(subscribe_as(&code, 0, "", "")))
            .await
            .expect("a subscription through it never hangs either");
        let status = stream.expect_err("no stream from the city's port");
        assert!(
            matches!(status.code(), Code::Unavailable | Code::DeadlineExceeded),
            "garbage {garbage}: {status:?}"
        );
        listener.abort();
        let _ = listener.await;
    }

    county.finish().await;
    city.finish().await;
    province.finish().await;
}
