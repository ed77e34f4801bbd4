//! Follow-ups through the chain (跨级交换) across three hubs on loopback: county (330110) → city
//! (330100) → province (330000). A department of the province applies through its own hub for a
//! county dataset and follows its requests, grants and error reports there (ids named
//! `<origin hub>:<id>`), while the county's provider answers on the county; it reads the
//! aggregated entry by GetEntry; it calls a county interface through the chain, masked as the
//! county granted it, and is refused without a grant. A hub cannot act for a department it does
//! not serve; both ends' trails show each call.

use std::path::Path;
use std::time::Instant;

use tonic::Code;
use xinqiao_hub::pki;
use xinqiao_hub::sample_upstream::{SampleUpstream, VERIFY_REQUEST_SCHEMA, VERIFY_RESPONSE_SCHEMA};
use xinqiao_proto::v1::directory_service_client::DirectoryServiceClient;
use xinqiao_proto::v1::interface_service_client::InterfaceServiceClient;
use xinqiao_tests::federation::*;
use xinqiao_tests::*;

type Interfaces = InterfaceServiceClient<tonic::transport::Channel>;

on_each_backend!(
    a_province_department_follows_up_its_county_requests_through_its_hub,
    a_county_interface_is_called_from_the_province_under_the_countys_rules,
);

/// The id as the county keeps it (the province names it `330110:<id>`).
fn on_county(id: &str) -> String {
    let local = id
        .strip_prefix(&format!("{COUNTY}:"))
        .unwrap_or_else(|| panic!("{id} names the county"));
    local.to_string()
}

fn get_entry(code: &str) -> v1::GetEntryRequest {
    v1::GetEntryRequest {
        resource_code: code.into(),
        version: 0,
    }
}

/// A department of another province, which no hub of this chain serves.
fn uscc_in(division: &str) -> String {
    let first17 = format!("11{division}MB0090003");
    let check = xinqiao_domain::identifiers::uscc_check_char(&first17).expect("alphabet");
    format!("{first17}{check}")
}

/// A request the city makes of the county for a department of another province.
fn for_foreigner<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("x-xinqiao-for-department", uscc_in("320100").parse().expect("ascii"));
    request
        .metadata_mut()
        .insert("x-xinqiao-home-hub", "320100".parse().expect("ascii"));
    request
}

async fn a_province_department_follows_up_its_county_requests_through_its_hub(backend: Backend) {
    let (county, city, province) = chain_with_department(&backend).await;
    let me = province_department();
    let code = county_residents(&county).await;
    until_aggregated(&province, &code).await;

    // The aggregated entry reads on the province by its origin-qualified code, and by its code.
    let mut directory = DirectoryServiceClient::new(province.as_dept(&me).await);
    let named = format!("{COUNTY}:{code}");
    let entry = ok(directory.get_entry(get_entry(&named)).await);
    assert_eq!(
        (
            entry.resource_code.as_str(),
            entry.origin_hub.as_str(),
            entry.via_hub.as_str()
        ),
        (code.as_str(), COUNTY, CITY)
    );
    assert_eq!(entry.provider_code, SAMR);
    assert_eq!(ok(directory.get_entry(get_entry(&code)).await).origin_hub, COUNTY);
    refused(
        directory.get_entry(get_entry(&format!("{COUNTY}:NOSUCHCODE"))).await,
        Code::NotFound,
    );
    // Only its current version is kept here.
    refused(
        directory
            .get_entry(v1::GetEntryRequest {
                resource_code: named.clone(),
                version: entry.version + 1,
            })
            .await,
        Code::NotFound,
    );

    // Two applications through the province; both are held on the county, named by it.
    let mut access = Access::new(province.as_dept(&me).await);
    let first = ok(access
        .request_access(request_access(application(&code, &["resident_id", "name"])))
        .await);
    let second = ok(access
        .request_access(request_access(application(&code, &["resident_id"])))
        .await);
    assert!(first.request_id.starts_with(&format!("{COUNTY}:")), "{first:?}");
    assert_eq!(first.application.as_ref().expect("application").dataset, named);
    let pending = ok(access
        .get_request(v1::GetRequestRequest {
            request_id: first.request_id.clone(),
        })
        .await);
    assert_eq!(pending.state, v1::RequestState::Pending as i32);
    assert_eq!(pending.applicant_code, me);
    let listed = ok(access
        .list_requests(v1::ListRequestsRequest {
            party: v1::Party::Applicant as i32,
            hub: COUNTY.into(),
            ..Default::default()
        })
        .await);
    let ids: Vec<&str> = listed.requests.iter().map(|r| r.request_id.as_str()).collect();
    assert!(
        ids.contains(&first.request_id.as_str()) && ids.contains(&second.request_id.as_str()),
        "{ids:?}"
    );
    // The province's own list has none of them.
    let own = ok(access.list_requests(v1::ListRequestsRequest::default()).await);
    assert!(own.requests.is_empty(), "{own:?}");

    // Withdrawn through the province.
    let withdrawn = ok(access
        .withdraw_request(v1::WithdrawRequestRequest {
            request_id: second.request_id.clone(),
        })
        .await);
    assert_eq!(withdrawn.state, v1::RequestState::Withdrawn as i32);

    // Answers stay on the county: the province cannot answer, the county's provider does.
    let status = refused(
        access
            .approve_request(v1::ApproveRequestRequest {
                request_id: first.request_id.clone(),
                ..approval(&["resident_id"], &[])
            })
            .await,
        Code::FailedPrecondition,
    );
    assert!(status.message().contains(COUNTY), "{status:?}");
    let mut provider = Access::new(county.as_dept(SAMR).await);
    let on_the_county = ok(provider
        .list_requests(v1::ListRequestsRequest {
            party: v1::Party::Provider as i32,
            ..Default::default()
        })
        .await);
    let states: Vec<(String, i32)> = on_the_county
        .requests
        .iter()
        .map(|r| (r.request_id.clone(), r.state))
        .collect();
    assert!(
        states.contains(&(on_county(&second.request_id), v1::RequestState::Withdrawn as i32)),
        "{states:?}"
    );
    ok(provider
        .approve_request(v1::ApproveRequestRequest {
            request_id: on_county(&first.request_id),
            ..approval(&["resident_id", "name"], &[("name", "name")])
        })
        .await);

    // Approved, seen through the province, with the grant named by the county.
    let approved = ok(access
        .get_request(v1::GetRequestRequest {
            request_id: first.request_id.clone(),
        })
        .await);
    assert_eq!(approved.state, v1::RequestState::Approved as i32);
    let grant_id = approved.grant_id.clone();
    assert!(grant_id.starts_with(&format!("{COUNTY}:")), "{approved:?}");
    let grant = ok(access
        .get_grant(v1::GetGrantRequest {
            grant_id: grant_id.clone(),
        })
        .await);
    assert_eq!(
        (grant.dataset.as_str(), grant.grantee_code.as_str()),
        (named.as_str(), me.as_str())
    );
    assert_eq!(grant.state, v1::GrantState::Active as i32);
    let grants = ok(access
        .list_grants(v1::ListGrantsRequest {
            hub: COUNTY.into(),
            active_only: true,
            ..Default::default()
        })
        .await);
    assert_eq!(
        grants.grants.iter().map(|g| g.grant_id.as_str()).collect::<Vec<_>>(),
        [grant_id.as_str()]
    );
    // The grant, named as the province named it, reads the records masked as granted.
    let mut exchange = Exchange::new(province.as_dept(&me).await);
    let fetched = ok(exchange.fetch(fetch_as(&code, 0, 10, "", &grant_id)).await);
    let record = record_of(&fetched.changes[0]);
    assert_eq!(record["name"], "张*", "{record}");

    // An error report on a county record, resolved on the county, seen resolved on the province.
    let report = ok(access
        .report_error(v1::ReportErrorRequest {
            dataset: code.clone(),
            sequence: 2,
            key: Vec::new(),
            description: "姓名有误".into(),
        })
        .await);
    assert!(report.report_id.starts_with(&format!("{COUNTY}:")), "{report:?}");
    assert_eq!(report.reporter_code, me);
    let open = ok(provider
        .list_reports(v1::ListReportsRequest {
            party: v1::Party::Provider as i32,
            state: v1::ReportState::Open as i32,
            ..Default::default()
        })
        .await);
    assert_eq!(
        open.reports.iter().map(|r| r.report_id.clone()).collect::<Vec<_>>(),
        [on_county(&report.report_id)]
    );
    ok(provider
        .resolve_report(v1::ResolveReportRequest {
            report_id: on_county(&report.report_id),
            resolution: v1::ReportState::Rejected as i32,
            reason: "与登记一致".into(),
            corrected_sequence: 0,
        })
        .await);
    let resolved = ok(access
        .get_report(v1::GetReportRequest {
            report_id: report.report_id.clone(),
        })
        .await);
    assert_eq!(resolved.state, v1::ReportState::Rejected as i32);
    assert_eq!(resolved.resolution, "与登记一致");
    let mine = ok(access
        .list_reports(v1::ListReportsRequest {
            hub: COUNTY.into(),
            ..Default::default()
        })
        .await);
    assert_eq!(mine.reports.len(), 1, "{mine:?}");

    // Another department of the province is told of no such request: the county decides, as for
    // its own departments.
    let other = add_province_department(&province, 2, "浙江省财政厅").await;
    let mut stranger = Access::new(province.as_dept(&other).await);
    refused(
        stranger
            .get_request(v1::GetRequestRequest {
                request_id: first.request_id.clone(),
            })
            .await,
        Code::NotFound,
    );
    // A hub not below the province is no place to look.
    refused(
        stranger
            .list_grants(v1::ListGrantsRequest {
                hub: "320100".into(),
                ..Default::default()
            })
            .await,
        Code::NotFound,
    );

    // The city cannot act on the county for a department it does not serve.
    let city_identity = pki::hub_files(&city.pki_dir(), CITY);
    let mut as_city = Access::new(county.channel_as(&city_identity));
    refused(
        as_city
            .get_request(for_foreigner(v1::GetRequestRequest {
                request_id: on_county(&first.request_id),
            }))
            .await,
        Code::PermissionDenied,
    );

    // Both trails: the county's names the department the city relayed for; the province's, where
    // it went. Lookups are recorded when refused (PERMISSION_DENIED), as for a hub's own
    // departments.
    let county_side = county.audit_events("WithdrawRequest").await;
    assert!(
        county_side
            .iter()
            .any(|e| e.actor == format!("hub:{CITY}") && e.outcome == "OK" && e.detail.contains(&me)),
        "{county_side:?}"
    );
    let province_side = province.audit_events("WithdrawRequest").await;
    assert!(
        province_side
            .iter()
            .any(|e| e.actor.contains(&me) && e.detail.contains("relayed_to") && e.detail.contains(COUNTY)),
        "{province_side:?}"
    );
    let refusals = county.audit_events("GetRequest").await;
    assert!(
        refusals
            .iter()
            .any(|e| e.outcome == "PERMISSION_DENIED" && e.detail.contains("320100")),
        "{refusals:?}"
    );
    assert!(
        county
            .audit_events("ReportError")
            .await
            .iter()
            .any(|e| e.detail.contains(&me)),
        "the county records the report"
    );

    county.finish().await;
    city.finish().await;
    province.finish().await;
}

/// The county police's 有条件共享 身份核验 interface on `upstream`; its resource code.
async fn county_interface(county: &Level, upstream: &SampleUpstream, ca_pem: &str) -> String {
    let mut schemas = Schemas::new(county.as_dept(POLICE).await);
    for (subject, text) in [
        ("id-check-request", VERIFY_REQUEST_SCHEMA),
        ("id-check-response", VERIFY_RESPONSE_SCHEMA),
    ] {
        ok(schemas
            .register_schema(v1::RegisterSchemaRequest {
                subject: subject.into(),
                schema_json: text.into(),
            })
            .await);
    }
    let mut content = content(
        "余杭区居民身份核验",
        "101",
        "按公民身份号码和姓名核验身份，返回核验结果和登记手机号码。",
    );
    content.format = v1::ResourceFormat::ServiceInterface as i32;
    let entry = shared_as(content, v1::ShareType::Conditional, v1::ExchangeKind::Interface);
    let mut dept = DirectoryServiceClient::new(county.as_dept(POLICE).await);
    let code = ok(dept.create_entry(create(entry)).await).resource_code;
    ok(dept.submit_entry(submit(&code)).await);
    ok(DirectoryServiceClient::new(county.as_admin().await)
        .publish_entry(publish(&code))
        .await);
    let schema = |subject: &str| {
        Some(v1::SchemaReference {
            subject: subject.into(),
            version: 1,
        })
    };
    ok(Interfaces::new(county.as_dept(POLICE).await)
        .register_interface(v1::RegisterInterfaceRequest {
            code: code.clone(),
            spec: Some(v1::InterfaceSpec {
                upstream: upstream.url(),
                upstream_ca_pem: ca_pem.into(),
                operations: vec![v1::InterfaceOperation {
                    name: "verify".into(),
                    method: "POST".into(),
                    path: "/verify".into(),
                    request_schema: schema("id-check-request"),
                    response_schema: schema("id-check-response"),
                    idempotent: true,
                }],
                timeout_ms: 2_000,
                rate_per_minute: 0,
                max_concurrency: 0,
                descriptor_set: Vec::new(),
            }),
        })
        .await);
    code
}

/// The sample upstream with a CA of its own, letting in only clients of `client_ca`; its CA.
async fn upstream_trusting(client_ca: &Path, dir: &Path) -> (SampleUpstream, String) {
    pki::init(dir, &[]).expect("the upstream's own PKI");
    let files = pki::server_files(dir);
    let server = SampleUpstream::start(&files.cert, &files.key, Some(client_ca))
        .await
        .expect("the sample upstream");
    let ca_pem = std::fs::read_to_string(pki::ca_cert_path(dir)).expect("its CA");
    (server, ca_pem)
}

fn verify(code: &str, id_number: &str, grant_id: &str) -> v1::InvokeRequest {
    v1::InvokeRequest {
        code: code.into(),
        operation: "verify".into(),
        request_json: serde_json::json!({"id_number": id_number, "name": "吴九"}).to_string(),
        purpose: "社会救助资格核验".into(),
        grant_id: grant_id.into(),
    }
}

async fn a_county_interface_is_called_from_the_province_under_the_countys_rules(backend: Backend) {
    let (county, city, province) = chain_with_department(&backend).await;
    let me = province_department();
    let dir = tempfile::tempdir().expect("a directory");
    let (upstream, ca_pem) = upstream_trusting(&pki::ca_cert_path(&county.pki_dir()), dir.path()).await;
    let code = county_interface(&county, &upstream, &ca_pem).await;
    let named = format!("{COUNTY}:{code}");

    // Found on the province by GetEntry once aggregated.
    let started = Instant::now();
    let mut directory = DirectoryServiceClient::new(province.as_dept(&me).await);
    while directory.get_entry(get_entry(&named)).await.is_err() {
        assert!(
            started.elapsed() < PROPAGATION,
            "the interface's entry never reached the province"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }

    // Without a grant the county refuses, through the chain, and its upstream never hears of it.
    let mut calls = Interfaces::new(province.as_dept(&me).await);
    let id = resident_id(21);
    let status = refused(calls.invoke(verify(&code, &id, "")).await, Code::PermissionDenied);
    assert!(status.message().contains(CITY), "{status:?}");
    assert_eq!(upstream.requests(), 0);

    // Applied for through the province by operation; granted masked on the county.
    let mut access = Access::new(province.as_dept(&me).await);
    let request = ok(access
        .request_access(request_access(v1::AccessApplication {
            operations: vec!["verify".into()],
            ..application(&code, &["id_number", "match", "mobile"])
        }))
        .await);
    ok(Access::new(county.as_dept(POLICE).await)
        .approve_request(v1::ApproveRequestRequest {
            request_id: on_county(&request.request_id),
            ..approval(&[], &[("mobile", "mobile"), ("id_number", "resident_id")])
        })
        .await);
    let grant_id = ok(access
        .get_request(v1::GetRequestRequest {
            request_id: request.request_id.clone(),
        })
        .await)
    .grant_id;

    // Called through the chain: checked, projected and masked on the county.
    let answer = ok(calls.invoke(verify(&code, &id, &grant_id)).await);
    let body = json(&answer.response_json);
    let fields: Vec<&String> = body.as_object().expect("an object").keys().collect();
    assert_eq!(fields, ["id_number", "match", "mobile"], "{body}");
    assert_eq!(body["match"], true);
    let mobile = body["mobile"].as_str().expect("mobile");
    assert!(
        mobile.contains('*') && mobile != xinqiao_hub::sample_upstream::mobile_of(&id),
        "{mobile}"
    );
    assert_eq!(upstream.requests(), 1);
    // A request outside the schema is refused on the county, before its upstream.
    let mut bad = verify(&code, &id, &grant_id);
    bad.request_json = r#"{"id_number": 5}"#.into();
    refused(calls.invoke(bad).await, Code::InvalidArgument);
    assert_eq!(upstream.requests(), 1);

    // Read through the chain, named with its origin.
    let interface = ok(calls
        .get_interface(v1::GetInterfaceRequest { code: named.clone() })
        .await);
    assert_eq!(interface.code, named);
    let listed = ok(calls
        .list_interfaces(v1::ListInterfacesRequest {
            hub: COUNTY.into(),
            ..Default::default()
        })
        .await);
    assert_eq!(
        listed.interfaces.iter().map(|i| i.code.as_str()).collect::<Vec<_>>(),
        [named.as_str()]
    );

    // The city cannot call it for a department it does not serve.
    let city_identity = pki::hub_files(&city.pki_dir(), CITY);
    let mut as_city = Interfaces::new(county.channel_as(&city_identity));
    refused(
        as_city.invoke(for_foreigner(verify(&code, &id, ""))).await,
        Code::PermissionDenied,
    );
    assert_eq!(upstream.requests(), 1);

    // The county's trail names the department, the grant and the upstream; the province's, the
    // hub it went to and how long it took.
    let county_side = county.audit_events("Invoke").await;
    assert!(
        county_side.iter().any(|e| e.actor == format!("hub:{CITY}")
            && e.outcome == "OK"
            && e.detail.contains(&me)
            && e.detail.contains(&on_county(&grant_id))
            && e.detail.contains("upstream_ms")),
        "{county_side:?}"
    );
    assert!(
        county_side
            .iter()
            .any(|e| e.outcome == "PERMISSION_DENIED" && e.detail.contains("320100")),
        "{county_side:?}"
    );
    let province_side = province.audit_events("Invoke").await;
    assert!(
        province_side.iter().any(|e| e.actor.contains(&me)
            && e.outcome == "OK"
            && e.detail.contains("relayed_to")
            && e.detail.contains("hub_ms")),
        "{province_side:?}"
    );
    assert!(
        province_side
            .iter()
            .any(|e| e.actor.contains(&me) && e.outcome == "PERMISSION_DENIED"),
        "{province_side:?}"
    );

    county.finish().await;
    city.finish().await;
    province.finish().await;
}
