//! Service interfaces (接口共享) over real loopback mTLS: a provider registers its upstream, a
//! using department calls it through the hub under the sharing rules, and every bad upstream
//! (slow, failing, garbled, off-schema, oversized, silent, behind another CA) gives the caller a
//! precise status naming the interface, never a hang. The upstream is the sample 身份核验
//! service, an HTTPS server of its own on 127.0.0.1 with its own CA, letting in only the hub's
//! certificate.
//!
//! Timeouts below only keep a broken hub from hanging the suite, except where a test says that
//! something must happen within a bound.

use std::path::Path;
use std::time::{Duration, Instant};

use tonic::Code;
use tonic_types::StatusExt;
use xinqiao_hub::pki;
use xinqiao_hub::sample_upstream::{Behaviour, SampleUpstream, VERIFY_REQUEST_SCHEMA, VERIFY_RESPONSE_SCHEMA};
use xinqiao_tests::v1 as pb;
use xinqiao_tests::*;

type Interfaces = xinqiao_proto::v1::interface_service_client::InterfaceServiceClient<tonic::transport::Channel>;

on_each_backend!(
    an_open_interface_is_called_through_the_hub,
    what_the_sharing_rules_refuse_never_reaches_the_upstream,
    registrations_are_checked_and_interfaces_disabled,
    bad_upstreams_get_precise_statuses_naming_the_interface,
    limits_guard_the_upstream,
    the_http_form_is_the_same_call,
    a_conditional_interface_answers_under_a_grant_projected_and_masked,
    a_grpc_upstream_is_called_with_json_through_the_hub,
);

/// The provider: the public security bureau, which keeps the population register.
const PROVIDER: &str = POLICE;
/// A using department.
const USER: &str = HRSS;
const PURPOSE: &str = "社保待遇资格认证";
/// Calls a test waits for at most before calling the hub hung.
const GUARD: Duration = Duration::from_secs(20);

async fn interfaces(hub: &TestHub, code: &str) -> Interfaces {
    Interfaces::new(hub.channel(pki::department_files(&hub.pki_dir(), code)).await)
}

/// An upstream with a CA of its own, letting in only clients of the hub's CA.
struct Upstream {
    server: SampleUpstream,
    ca_pem: String,
    _dir: tempfile::TempDir,
}

async fn upstream_for(hub: &TestHub) -> Upstream {
    upstream_trusting(&pki::ca_cert_path(&hub.pki_dir())).await
}

async fn upstream_trusting(client_ca: &Path) -> Upstream {
    upstream_speaking(client_ca, false).await
}

/// The sample upstream over HTTPS, or over gRPC when `grpc`.
async fn upstream_speaking(client_ca: &Path, grpc: bool) -> Upstream {
    let dir = tempfile::tempdir().expect("a directory");
    pki::init(dir.path(), &[]).expect("the upstream's own PKI");
    let files = pki::server_files(dir.path());
    let server = if grpc {
        SampleUpstream::start_grpc(&files.cert, &files.key, Some(client_ca)).await
    } else {
        SampleUpstream::start(&files.cert, &files.key, Some(client_ca)).await
    }
    .expect("the sample upstream");
    let ca_pem = std::fs::read_to_string(pki::ca_cert_path(dir.path())).expect("its CA");
    Upstream {
        server,
        ca_pem,
        _dir: dir,
    }
}

fn schema(subject: &str, version: u32) -> Option<pb::SchemaReference> {
    Some(pb::SchemaReference {
        subject: subject.into(),
        version,
    })
}

fn operations() -> Vec<pb::InterfaceOperation> {
    vec![
        pb::InterfaceOperation {
            name: "verify".into(),
            method: "POST".into(),
            path: "/verify".into(),
            request_schema: schema("id-check-request", 1),
            response_schema: schema("id-check-response", 1),
            idempotent: true,
        },
        pb::InterfaceOperation {
            name: "status".into(),
            method: "GET".into(),
            path: "/status".into(),
            request_schema: schema("empty-request", 1),
            response_schema: schema("status-response", 1),
            idempotent: true,
        },
    ]
}

fn spec(upstream: &Upstream) -> pb::InterfaceSpec {
    pb::InterfaceSpec {
        upstream: upstream.server.url(),
        upstream_ca_pem: upstream.ca_pem.clone(),
        operations: operations(),
        timeout_ms: 2_000,
        rate_per_minute: 0,
        max_concurrency: 0,
        descriptor_set: Vec::new(),
    }
}

/// The provider's schemas for the operations.
async fn register_schemas(hub: &TestHub) {
    let mut schemas = hub.schemas(PROVIDER).await;
    for (subject, text) in [
        ("id-check-request", VERIFY_REQUEST_SCHEMA),
        ("id-check-response", VERIFY_RESPONSE_SCHEMA),
        ("empty-request", r#"{"type": "object", "maxProperties": 0}"#),
        (
            "status-response",
            r#"{"type": "object", "properties": {"status": {"const": "ok"}}, "required": ["status"]}"#,
        ),
    ] {
        ok(schemas
            .register_schema(pb::RegisterSchemaRequest {
                subject: subject.into(),
                schema_json: text.into(),
            })
            .await);
    }
}

/// A published 接口 entry of the provider with `share`, and its interface registered on
/// `upstream`; the resource code.
async fn registered(
    hub: &TestHub,
    upstream: &Upstream,
    share: pb::ShareType,
    tune: impl FnOnce(&mut pb::InterfaceSpec),
) -> String {
    let mut content = content(
        "居民身份核验",
        "101",
        "按公民身份号码和姓名核验身份，返回核验结果和登记手机号码。",
    );
    content.format = pb::ResourceFormat::ServiceInterface as i32;
    let code = hub
        .published_entry(PROVIDER, shared_as(content, share, pb::ExchangeKind::Interface))
        .await;
    let mut spec = spec(upstream);
    tune(&mut spec);
    ok(interfaces(hub, PROVIDER)
        .await
        .register_interface(pb::RegisterInterfaceRequest {
            code: code.clone(),
            spec: Some(spec),
        })
        .await);
    code
}

fn verify(code: &str, id_number: &str, name: &str) -> pb::InvokeRequest {
    pb::InvokeRequest {
        code: code.into(),
        operation: "verify".into(),
        request_json: serde_json::json!({"id_number": id_number, "name": name}).to_string(),
        purpose: PURPOSE.into(),
        grant_id: String::new(),
    }
}

async fn invoke(client: &mut Interfaces, request: pb::InvokeRequest) -> Result<pb::InvokeResponse, tonic::Status> {
    tokio::time::timeout(GUARD, client.invoke(request))
        .await
        .expect("the hub answers")
        .map(tonic::Response::into_inner)
}

#[track_caller]
fn refused_with(result: Result<pb::InvokeResponse, tonic::Status>, code: Code, words: &str) -> tonic::Status {
    let status = result.expect_err("the call is refused");
    assert_eq!(status.code(), code, "{status:?}");
    assert!(
        status.message().contains(words),
        "'{words}' not in: {}",
        status.message()
    );
    status
}

async fn an_open_interface_is_called_through_the_hub(backend: Backend) {
    let hub = TestHub::start_on(backend).await;
    register_schemas(&hub).await;
    let upstream = upstream_for(&hub).await;
    let code = registered(&hub, &upstream, pb::ShareType::Unconditional, |_| {}).await;
    let mut user = interfaces(&hub, USER).await;

    // The using department calls with nothing but its certificate: the hub verifies the
    // upstream against the registered CA and presents its own certificate, which the upstream
    // requires.
    let id = resident_id(7);
    let answer = invoke(&mut user, verify(&code, &id, "张三")).await.expect("answered");
    assert_eq!(answer.upstream_status, 200);
    let body = json(&answer.response_json);
    assert_eq!(body["match"], true);
    assert_eq!(body["mobile"], xinqiao_hub::sample_upstream::mobile_of(&id));
    assert_eq!(upstream.server.requests(), 1);
    assert_eq!(
        upstream.server.last_client(),
        USER,
        "the upstream learns whom the call is for"
    );

    // GET: the request's values become the query.
    let status = invoke(
        &mut user,
        pb::InvokeRequest {
            operation: "status".into(),
            request_json: "{}".into(),
            ..verify(&code, "", "")
        },
    )
    .await
    .expect("status");
    assert_eq!(json(&status.response_json)["status"], "ok");

    // A request outside its schema never leaves the hub, and every problem is named.
    let before = upstream.server.requests();
    let bad = invoke(
        &mut user,
        pb::InvokeRequest {
            request_json: r#"{"id_number": "110101199003070000", "extra": 1}"#.into(),
            ..verify(&code, "", "")
        },
    )
    .await;
    let status = refused_with(bad, Code::InvalidArgument, "");
    let fields = violated_fields(&status);
    assert!(fields.iter().any(|f| f.starts_with("request_json")), "{fields:?}");
    for not_json in ["", "{", "[1,2", "\"text\"x"] {
        let r = invoke(
            &mut user,
            pb::InvokeRequest {
                request_json: not_json.into(),
                ..verify(&code, "", "")
            },
        )
        .await;
        refused_with(r, Code::InvalidArgument, "request_json");
    }
    let unknown = invoke(
        &mut user,
        pb::InvokeRequest {
            operation: "delete_everyone".into(),
            ..verify(&code, &id, "张三")
        },
    )
    .await;
    refused_with(unknown, Code::InvalidArgument, "verify, status");
    assert_eq!(
        upstream.server.requests(),
        before,
        "nothing refused reached the upstream"
    );

    // Listed and shown to anyone who may see the entry.
    let listed = ok(user.list_interfaces(pb::ListInterfacesRequest::default()).await);
    assert_eq!(listed.interfaces.len(), 1);
    assert_eq!(listed.interfaces[0].code, code);
    let shown = ok(user.get_interface(pb::GetInterfaceRequest { code: code.clone() }).await);
    assert_eq!(shown.spec.expect("spec").operations.len(), 2);

    // Every call is in the trail: who, which operation, on what basis, what the upstream said.
    let events = audit_events(
        &mut hub.audit_admin().await,
        pb::ListEventsRequest {
            action: "Invoke".into(),
            ..Default::default()
        },
    )
    .await;
    let first = events.first().expect("the first Invoke is recorded");
    assert_eq!(
        (first.actor.as_str(), first.target.as_str(), first.about.as_str()),
        (USER, code.as_str(), PROVIDER)
    );
    assert_eq!(first.outcome, "OK");
    let detail = json(&first.detail);
    assert_eq!(detail["operation"], "verify");
    assert_eq!(detail["basis"], "unconditional");
    assert_eq!(detail["purpose"], PURPOSE);
    assert_eq!(detail["upstream_status"], 200);
    assert!(detail["upstream_ms"].is_u64() && detail["response_bytes"].as_u64() > Some(0));
    assert!(
        events.iter().any(|e| e.outcome == "INVALID_ARGUMENT"),
        "refusals are recorded too"
    );

    // The provider's scorecard counts the answered calls as use by another department.
    let mut evaluation = xinqiao_proto::v1::evaluation_service_client::EvaluationServiceClient::new(
        hub.channel(pki::department_files(&hub.pki_dir(), PROVIDER)).await,
    );
    let card = ok(evaluation
        .get_scorecard(pb::GetScorecardRequest {
            department: PROVIDER.into(),
            ..Default::default()
        })
        .await);
    let indicators = card.indicators.expect("indicators");
    assert_eq!((indicators.interface_calls, indicators.using_departments), (2, 1));
    assert!(
        card.parts.expect("parts").r#use.is_some(),
        "an interface is something to use"
    );
    hub.finish().await;
}

async fn what_the_sharing_rules_refuse_never_reaches_the_upstream(backend: Backend) {
    let hub = TestHub::start_on(backend).await;
    register_schemas(&hub).await;
    let upstream = upstream_for(&hub).await;
    let open = registered(&hub, &upstream, pb::ShareType::Unconditional, |_| {}).await;
    let closed = registered(&hub, &upstream, pb::ShareType::NotShared, |_| {}).await;
    let mut user = interfaces(&hub, USER).await;
    let id = resident_id(9);

    // 无条件共享 needs a declared purpose.
    let r = invoke(
        &mut user,
        pb::InvokeRequest {
            purpose: " ".into(),
            ..verify(&open, &id, "李四")
        },
    )
    .await;
    refused_with(r, Code::InvalidArgument, "purpose");
    // 不予共享: never for others; the provider uses its own.
    refused_with(
        invoke(&mut user, verify(&closed, &id, "李四")).await,
        Code::PermissionDenied,
        "不予共享",
    );
    assert!(
        invoke(&mut interfaces(&hub, PROVIDER).await, verify(&closed, &id, "李四"))
            .await
            .is_ok()
    );
    // The admin manages, it does not read.
    let mut admin = Interfaces::new(hub.admin_channel().await);
    refused_with(
        invoke(&mut admin, verify(&open, &id, "李四")).await,
        Code::PermissionDenied,
        "admin",
    );
    // An entry that is not published is only its provider's.
    let mut content = content("未发布的接口", "101", "尚未发布的身份核验接口。");
    content.format = pb::ResourceFormat::ServiceInterface as i32;
    let mut provider_dir = hub.dept(PROVIDER).await;
    let draft = ok(provider_dir
        .create_entry(create(shared_as(
            content,
            pb::ShareType::Unconditional,
            pb::ExchangeKind::Interface,
        )))
        .await)
    .resource_code;
    refused_with(
        invoke(&mut user, verify(&draft, &id, "李四")).await,
        Code::NotFound,
        "interface",
    );
    // Unknown and hostile codes.
    for code in [
        "999999/999999",
        "'; DROP TABLE interfaces; --",
        "../../etc/passwd",
        &"码".repeat(10_000),
    ] {
        refused_with(
            invoke(&mut user, verify(code, &id, "李四")).await,
            Code::NotFound,
            "interface",
        );
    }
    assert_eq!(
        upstream.server.requests(),
        1,
        "only the provider's own call reached the upstream"
    );
    hub.finish().await;
}

async fn registrations_are_checked_and_interfaces_disabled(backend: Backend) {
    let hub = TestHub::start_on(backend).await;
    register_schemas(&hub).await;
    let upstream = upstream_for(&hub).await;
    let code = registered(&hub, &upstream, pb::ShareType::Unconditional, |_| {}).await;
    let mut provider = interfaces(&hub, PROVIDER).await;
    let mut user = interfaces(&hub, USER).await;
    let register = |spec: pb::InterfaceSpec| pb::RegisterInterfaceRequest {
        code: code.clone(),
        spec: Some(spec),
    };

    // Only the provider registers.
    refused(
        user.register_interface(register(spec(&upstream))).await,
        Code::PermissionDenied,
    );
    // Every problem of a specification at once.
    let mut bad = spec(&upstream);
    bad.upstream = "http://127.0.0.1:1".into();
    bad.upstream_ca_pem = "not a certificate".into();
    bad.operations[0].request_schema = schema("no-such-subject", 1);
    bad.operations[1].method = "DELETE".into();
    let status = refused(provider.register_interface(register(bad)).await, Code::InvalidArgument);
    assert_eq!(
        violated_fields(&status),
        ["spec.operations[1].method", "spec.upstream", "spec.upstream_ca_pem"],
        "{status:?}"
    );
    let mut bad = spec(&upstream);
    bad.upstream = "http://127.0.0.1:1".into();
    bad.upstream_ca_pem = "not a certificate".into();
    let status = refused(provider.register_interface(register(bad)).await, Code::InvalidArgument);
    assert_eq!(violated_fields(&status), ["spec.upstream", "spec.upstream_ca_pem"]);
    let mut bad = spec(&upstream);
    bad.operations[0].request_schema = schema("no-such-subject", 1);
    let status = refused(provider.register_interface(register(bad)).await, Code::InvalidArgument);
    assert_eq!(violated_fields(&status), ["spec.operations[0].request_schema"]);
    let mut bad = spec(&upstream);
    bad.upstream_ca_pem = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".into();
    let status = refused(provider.register_interface(register(bad)).await, Code::InvalidArgument);
    assert_eq!(violated_fields(&status), ["spec.upstream_ca_pem"]);

    // A table entry takes no interface.
    let table = hub
        .published_entry(PROVIDER, content("人口基础信息", "101", "常住人口的基础信息。"))
        .await;
    refused(
        provider
            .register_interface(pb::RegisterInterfaceRequest {
                code: table,
                spec: Some(spec(&upstream)),
            })
            .await,
        Code::FailedPrecondition,
    );

    // Disabled: calls are refused with the reason, until it is registered again.
    refused(
        user.disable_interface(pb::DisableInterfaceRequest {
            code: code.clone(),
            reason: "x".into(),
        })
        .await,
        Code::PermissionDenied,
    );
    let disabled = ok(provider
        .disable_interface(pb::DisableInterfaceRequest {
            code: code.clone(),
            reason: "上游系统升级".into(),
        })
        .await);
    assert!(!disabled.enabled);
    refused_with(
        invoke(&mut user, verify(&code, &resident_id(1), "王五")).await,
        Code::FailedPrecondition,
        "上游系统升级",
    );
    ok(provider.register_interface(register(spec(&upstream))).await);
    assert!(invoke(&mut user, verify(&code, &resident_id(1), "王五")).await.is_ok());
    hub.finish().await;
}

/// Each of `cases` in turn: the upstream misbehaves so, and the caller gets the status with the
/// words, naming the interface, within the timeout (1.5 s here), never the upstream's 5 s or 1 h;
/// then the upstream serves again (a success in between keeps the circuit closed).
async fn misbehave(
    upstream: &Upstream,
    user: &mut Interfaces,
    code: &str,
    call: impl Fn() -> pb::InvokeRequest,
    cases: impl IntoIterator<Item = (Behaviour, Code, &str)>,
) {
    for (behaviour, expected, words) in cases {
        upstream.server.behave(behaviour.clone());
        let started = Instant::now();
        let status = refused_with(invoke(user, call()).await, expected, words);
        assert!(
            status.message().contains(code),
            "the interface is named: {}",
            status.message()
        );
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "{behaviour:?} took {:?}",
            started.elapsed()
        );
        upstream.server.behave(Behaviour::Serve);
        assert!(invoke(user, call()).await.is_ok(), "served again after {behaviour:?}");
    }
}

async fn bad_upstreams_get_precise_statuses_naming_the_interface(backend: Backend) {
    let hub = TestHub::start_on(backend).await;
    register_schemas(&hub).await;
    let upstream = upstream_for(&hub).await;
    let code = registered(&hub, &upstream, pb::ShareType::Unconditional, |s| s.timeout_ms = 1500).await;
    let mut user = interfaces(&hub, USER).await;
    let id = resident_id(3);
    let call = || verify(&code, &id, "赵六");

    let cases = [
        (
            Behaviour::Slow(Duration::from_secs(5)),
            Code::DeadlineExceeded,
            "did not answer within 1500 ms",
        ),
        (Behaviour::Silent, Code::DeadlineExceeded, "did not answer"),
        (
            Behaviour::Status(503, "down".into()),
            Code::Unavailable,
            "failed (HTTP 503)",
        ),
        (Behaviour::Garbled, Code::Unavailable, "not JSON"),
        (Behaviour::OffSchema, Code::Unavailable, "outside the response schema"),
        (Behaviour::Huge(5 * 1024 * 1024), Code::Unavailable, "more than"),
        (Behaviour::Hang, Code::Unavailable, "cannot be reached"),
        (Behaviour::Status(404, "{}".into()), Code::NotFound, "found nothing"),
        (
            Behaviour::Status(400, "{\"error\":\"bad\"}".into()),
            Code::InvalidArgument,
            "refused the request",
        ),
        (
            Behaviour::Status(403, "{}".into()),
            Code::FailedPrecondition,
            "refused the hub",
        ),
    ];
    misbehave(&upstream, &mut user, &code, call, cases).await;

    // An upstream that is gone.
    drop(upstream);
    let status = refused_with(invoke(&mut user, call()).await, Code::Unavailable, "cannot be reached");
    assert!(status.message().contains(&code));

    // An upstream that lets in only another CA's clients refuses the hub's handshake.
    let other = tempfile::tempdir().expect("dir");
    pki::init(other.path(), &[]).expect("another PKI");
    let picky = upstream_trusting(&pki::ca_cert_path(other.path())).await;
    let code = registered(&hub, &picky, pb::ShareType::Unconditional, |_| {}).await;
    refused_with(
        invoke(&mut user, verify(&code, &id, "赵六")).await,
        Code::Unavailable,
        "cannot be reached",
    );
    hub.finish().await;
}

async fn limits_guard_the_upstream(backend: Backend) {
    let hub = TestHub::start_on(backend).await;
    register_schemas(&hub).await;
    let upstream = upstream_for(&hub).await;
    let code = registered(&hub, &upstream, pb::ShareType::Unconditional, |s| {
        s.rate_per_minute = 3;
        s.max_concurrency = 1;
        s.timeout_ms = 800;
    })
    .await;
    let mut user = interfaces(&hub, USER).await;
    let id = resident_id(5);

    // The rate: three calls a minute from one department, then RESOURCE_EXHAUSTED with the time
    // to retry; another department has its own allowance.
    for _ in 0..3 {
        assert!(invoke(&mut user, verify(&code, &id, "孙七")).await.is_ok());
    }
    let status = refused_with(
        invoke(&mut user, verify(&code, &id, "孙七")).await,
        Code::ResourceExhausted,
        "3 calls a minute",
    );
    let retry = status
        .get_details_retry_info()
        .and_then(|r| r.retry_delay)
        .expect("RetryInfo");
    assert!(
        retry > Duration::from_secs(1) && retry <= Duration::from_secs(20),
        "{retry:?}"
    );
    hub.issue_dept(HEALTH).await;
    ok(hub
        .admin()
        .await
        .register_department(register_request(HEALTH, "市卫生健康委员会"))
        .await);
    let mut other = interfaces(&hub, HEALTH).await;
    invoke(&mut other, verify(&code, &id, "孙七"))
        .await
        .expect("another department has its own allowance");

    // Concurrency: one call in flight; a second waits for the slot only as long as the timeout.
    upstream.server.behave(Behaviour::Silent);
    let mut third = interfaces(&hub, SAMR).await;
    let first = tokio::spawn({
        let request = verify(&code, &id, "孙七");
        let mut client = third.clone();
        async move { invoke(&mut client, request).await }
    });
    let waited = Instant::now();
    while upstream.server.requests() < 5 && waited.elapsed() < GUARD {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let second = invoke(&mut other, verify(&code, &id, "孙七")).await;
    refused_with(second, Code::ResourceExhausted, "calls in flight");
    refused_with(first.await.expect("task"), Code::DeadlineExceeded, "did not answer");
    assert_eq!(
        upstream.server.requests(),
        5,
        "the second call never reached the upstream"
    );

    // The circuit: failures in a row open it (the silent call was the first), and then calls are
    // refused without reaching the upstream. The rate is raised for it: re-registering keeps the
    // gate (same upstream, CA and concurrency) and so the circuit's count.
    ok(interfaces(&hub, PROVIDER)
        .await
        .register_interface(pb::RegisterInterfaceRequest {
            code: code.clone(),
            spec: Some(pb::InterfaceSpec {
                rate_per_minute: 600,
                max_concurrency: 1,
                timeout_ms: 800,
                ..spec(&upstream)
            }),
        })
        .await);
    upstream.server.behave(Behaviour::Status(500, "{}".into()));
    for _ in 0..xinqiao_domain::interface::CIRCUIT_THRESHOLD - 1 {
        // The department's allowance refills at 10 calls a second now.
        tokio::time::sleep(Duration::from_millis(150)).await;
        refused_with(
            invoke(&mut third, verify(&code, &id, "孙七")).await,
            Code::Unavailable,
            "HTTP 500",
        );
    }
    let before = upstream.server.requests();
    refused_with(
        invoke(&mut third, verify(&code, &id, "孙七")).await,
        Code::Unavailable,
        "circuit",
    );
    assert_eq!(
        upstream.server.requests(),
        before,
        "an open circuit does not call the upstream"
    );
    let _ = &mut third;
    hub.finish().await;
}

/// An HTTP/1.1 request over mutual TLS as `department` (or the admin): status, headers, body.
async fn http_call(
    hub: &TestHub,
    files: pki::CertFiles,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, hyper::HeaderMap, String) {
    http_request(hub, files, "POST", path, headers, body).await
}

async fn http_request(
    hub: &TestHub,
    files: pki::CertFiles,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, hyper::HeaderMap, String) {
    use http_body_util::BodyExt;
    let ca = std::fs::read_to_string(pki::ca_cert_path(&hub.pki_dir())).expect("CA");
    let tls = xinqiao_hub::tls::upstream_client_config(&ca, &files.cert, &files.key).expect("client TLS");
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(tls));
    let tcp = tokio::net::TcpStream::connect(hub.addr).await.expect("connect");
    let name = tokio_rustls::rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let stream = connector.connect(name, tcp).await.expect("mutual TLS");
    let (mut sender, connection) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
        .await
        .expect("HTTP/1.1");
    tokio::spawn(connection);
    let mut request = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "localhost")
        .header("content-type", "application/json");
    for (name, value) in headers {
        request = request.header(
            *name,
            hyper::header::HeaderValue::from_bytes(value.as_bytes()).expect("header"),
        );
    }
    let request = request
        .body(http_body_util::Full::new(bytes::Bytes::from(body.to_string())))
        .expect("request");
    let response = tokio::time::timeout(GUARD, sender.send_request(request))
        .await
        .expect("the hub answers")
        .expect("an HTTP answer");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.expect("body").to_bytes();
    (status, headers, String::from_utf8(body.to_vec()).expect("UTF-8"))
}

async fn the_http_form_is_the_same_call(backend: Backend) {
    let hub = TestHub::start_on(backend).await;
    register_schemas(&hub).await;
    let upstream = upstream_for(&hub).await;
    let code = registered(&hub, &upstream, pb::ShareType::Unconditional, |s| s.rate_per_minute = 3).await;
    let dir = hub.pki_dir();
    let path = format!("/interfaces/{code}/verify");
    let id = resident_id(11);
    let body = serde_json::json!({"id_number": id, "name": "周八"}).to_string();

    // The same identity (the connection's certificate), the same rules, the same answer.
    let (status, headers, answer) = http_call(
        &hub,
        pki::department_files(&dir, USER),
        &path,
        &[("x-xinqiao-purpose", PURPOSE)],
        &body,
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(json(&answer)["mobile"], xinqiao_hub::sample_upstream::mobile_of(&id));
    assert!(headers.contains_key("x-request-id"));
    assert_eq!(upstream.server.last_client(), USER);

    // Refusals are the gRPC statuses as HTTP statuses with a JSON body.
    let (status, _, answer) = http_call(&hub, pki::department_files(&dir, USER), &path, &[], &body).await;
    assert_eq!(
        (status, json(&answer)["code"].as_str()),
        (400, Some("INVALID_ARGUMENT")),
        "{answer}"
    );
    assert!(
        json(&answer)["message"]
            .as_str()
            .unwrap_or_default()
            .contains("purpose")
    );
    let (status, _, answer) = http_call(
        &hub,
        pki::admin_files(&dir),
        &path,
        &[("x-xinqiao-purpose", PURPOSE)],
        &body,
    )
    .await;
    assert_eq!(status, 403, "{answer}");
    let (status, _, _) = http_call(
        &hub,
        pki::department_files(&dir, USER),
        &format!("/interfaces/{code}/verify?purpose=%E7%A4%BE%E4%BF%9D"),
        &[],
        r#"{"id_number": "not an id", "name": "周八"}"#,
    )
    .await;
    assert_eq!(status, 400);
    // The department's allowance (3 a minute) counts every call that named a callable
    // operation, valid or not: the fourth waits.
    let (status, headers, answer) = http_call(
        &hub,
        pki::department_files(&dir, USER),
        &path,
        &[("x-xinqiao-purpose", PURPOSE)],
        &body,
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let (status, headers_429, _) = http_call(
        &hub,
        pki::department_files(&dir, USER),
        &path,
        &[("x-xinqiao-purpose", PURPOSE)],
        &body,
    )
    .await;
    assert_eq!(status, 429);
    assert!(headers_429.contains_key("retry-after"), "{headers_429:?}");
    let _ = headers;
    let (status, _, _) = http_call(
        &hub,
        pki::department_files(&dir, USER),
        "/interfaces/nothing",
        &[],
        "{}",
    )
    .await;
    assert_eq!(status, 404);

    // The catalogue, for DCAT harvesters, over the same edge: the published interface entry is
    // a dataset with the interface as a data service.
    let (status, headers_dcat, catalogue) = http_request(
        &hub,
        pki::department_files(&dir, USER),
        "GET",
        "/catalog.jsonld",
        &[],
        "",
    )
    .await;
    assert_eq!(status, 200, "{catalogue}");
    assert_eq!(
        headers_dcat.get("content-type").and_then(|v| v.to_str().ok()),
        Some("application/ld+json")
    );
    assert!(
        catalogue.contains(&code) && catalogue.contains("dcat:Catalog"),
        "{catalogue}"
    );
    assert!(
        !catalogue.contains(&upstream.server.url()),
        "the upstream's address stays private"
    );

    // In the trail as Invoke, marked as having come over HTTP.
    let events = audit_events(
        &mut hub.audit_admin().await,
        pb::ListEventsRequest {
            action: "Invoke".into(),
            ..Default::default()
        },
    )
    .await;
    let over_http: Vec<_> = events.iter().filter(|e| json(&e.detail)["via"] == "http").collect();
    assert!(over_http.len() >= 6, "{} of {}", over_http.len(), events.len());
    assert_eq!(
        (over_http[0].actor.as_str(), over_http[0].outcome.as_str()),
        (USER, "OK")
    );
    assert!(
        over_http
            .iter()
            .any(|e| e.outcome == "PERMISSION_DENIED" && e.actor.starts_with("admin"))
    );
    hub.finish().await;
}

async fn a_conditional_interface_answers_under_a_grant_projected_and_masked(backend: Backend) {
    let hub = TestHub::start_on(backend).await;
    register_schemas(&hub).await;
    let upstream = upstream_for(&hub).await;
    let code = registered(&hub, &upstream, pb::ShareType::Conditional, |_| {}).await;
    let mut user = interfaces(&hub, USER).await;
    let id = resident_id(21);

    // Without a grant: refused, and the upstream never hears of it.
    refused_with(
        invoke(&mut user, verify(&code, &id, "吴九")).await,
        Code::PermissionDenied,
        "apply for access",
    );
    assert_eq!(upstream.server.requests(), 0);

    // The same workflow as a dataset's: the fields are the answers' properties.
    let mut access = hub.access(USER).await;
    let status = refused(
        access
            .request_access(request_access(application(&code, &["match", "salary"])))
            .await,
        Code::InvalidArgument,
    );
    assert!(status.message().contains("salary"), "{}", status.message());
    // An interface is applied for by operation.
    let status = refused(
        access
            .request_access(request_access(application(&code, &["id_number", "match", "mobile"])))
            .await,
        Code::InvalidArgument,
    );
    assert_eq!(violated_fields(&status), ["operations"], "{}", status.message());
    let request = ok(access
        .request_access(request_access(pb::AccessApplication {
            operations: vec!["verify".into()],
            ..application(&code, &["id_number", "match", "mobile"])
        }))
        .await);
    assert_eq!(
        request.application.as_ref().expect("application").operations,
        ["verify"]
    );
    let approved = ok(hub
        .access(PROVIDER)
        .await
        .approve_request(pb::ApproveRequestRequest {
            request_id: request.request_id.clone(),
            ..approval(&[], &[("mobile", "mobile"), ("id_number", "resident_id")])
        })
        .await);

    // Under the grant: projected (no name) and masked, whatever the upstream answered.
    let answer = invoke(&mut user, verify(&code, &id, "吴九")).await.expect("granted");
    let body = json(&answer.response_json);
    let fields: Vec<&String> = body.as_object().expect("an object").keys().collect();
    assert_eq!(fields, ["id_number", "match", "mobile"], "{body}");
    assert_eq!(body["match"], true);
    let mobile = body["mobile"].as_str().expect("mobile");
    assert!(
        mobile.contains('*') && mobile != xinqiao_hub::sample_upstream::mobile_of(&id),
        "{mobile}"
    );
    assert!(body["id_number"].as_str().expect("id").contains('*'), "{body}");
    // The trail names the grant the call was made under.
    let events = audit_events(
        &mut hub.audit_admin().await,
        pb::ListEventsRequest {
            action: "Invoke".into(),
            actor: USER.into(),
            ..Default::default()
        },
    )
    .await;
    let last = events.last().expect("recorded");
    assert_eq!(last.outcome, "OK");
    assert_eq!(json(&last.detail)["grant"], approved.grant_id.as_str());
    // The grant names the operations it covers: the others are refused before the upstream.
    let r = invoke(
        &mut user,
        pb::InvokeRequest {
            operation: "status".into(),
            request_json: "{}".into(),
            ..verify(&code, "", "")
        },
    )
    .await;
    refused_with(r, Code::PermissionDenied, "covers the operations verify");
    assert_eq!(upstream.server.requests(), 1);

    // Revoked: refused at once, naming why.
    ok(hub
        .access(PROVIDER)
        .await
        .revoke_grant(revoke_grant(&approved.grant_id, "业务已办结"))
        .await);
    refused_with(
        invoke(&mut user, verify(&code, &id, "吴九")).await,
        Code::PermissionDenied,
        "业务已办结",
    );
    assert_eq!(upstream.server.requests(), 1);
    hub.finish().await;
}

/// The sample 身份核验 service's gRPC method.
const GRPC_VERIFY: &str = "/xinqiao.sample.v1.IdentityCheck/Verify";

/// The registration of the gRPC sample: one operation, `verify`, on `method`.
fn grpc_spec(upstream: &Upstream, method: &str) -> pb::InterfaceSpec {
    pb::InterfaceSpec {
        operations: vec![pb::InterfaceOperation {
            name: "verify".into(),
            method: "GRPC".into(),
            path: method.into(),
            request_schema: schema("id-check-request", 1),
            response_schema: schema("id-check-response", 1),
            idempotent: true,
        }],
        descriptor_set: xinqiao_proto::sample::DESCRIPTOR_SET.to_vec(),
        timeout_ms: 1_500,
        ..spec(upstream)
    }
}

async fn a_grpc_upstream_is_called_with_json_through_the_hub(backend: Backend) {
    let hub = TestHub::start_on(backend).await;
    register_schemas(&hub).await;
    let upstream = upstream_speaking(&pki::ca_cert_path(&hub.pki_dir()), true).await;
    assert!(upstream.server.url().starts_with("grpcs://"));

    // Registration reads the descriptors: the method must be there, and unary.
    let mut content = content("居民身份核验（gRPC）", "101", "按公民身份号码和姓名核验身份。");
    content.format = pb::ResourceFormat::ServiceInterface as i32;
    let code = hub
        .published_entry(
            PROVIDER,
            shared_as(content, pb::ShareType::Unconditional, pb::ExchangeKind::Interface),
        )
        .await;
    let mut provider = interfaces(&hub, PROVIDER).await;
    let register = |spec: pb::InterfaceSpec| pb::RegisterInterfaceRequest {
        code: code.clone(),
        spec: Some(spec),
    };
    for (spec, field, words) in [
        (
            grpc_spec(&upstream, "/xinqiao.sample.v1.IdentityCheck/Watch"),
            "spec.operations[0].path",
            "streams",
        ),
        (
            grpc_spec(&upstream, "/xinqiao.sample.v1.Nothing/Verify"),
            "spec.operations[0].path",
            "no service",
        ),
        (
            pb::InterfaceSpec {
                descriptor_set: Vec::new(),
                ..grpc_spec(&upstream, GRPC_VERIFY)
            },
            "spec.descriptor_set",
            "is required",
        ),
        (
            pb::InterfaceSpec {
                descriptor_set: vec![0xff; 64],
                ..grpc_spec(&upstream, GRPC_VERIFY)
            },
            "spec.descriptor_set",
            "FileDescriptorSet",
        ),
        (
            pb::InterfaceSpec {
                operations: operations(),
                ..grpc_spec(&upstream, GRPC_VERIFY)
            },
            "spec.operations[0].method",
            "must be GRPC",
        ),
    ] {
        let status = provider.register_interface(register(spec)).await.expect_err("refused");
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        let violations = status
            .get_details_bad_request()
            .expect("field violations")
            .field_violations;
        assert!(
            violations
                .iter()
                .any(|v| v.field == field && v.description.contains(words)),
            "{field}: '{words}' not in {violations:?}"
        );
    }
    assert_eq!(upstream.server.requests(), 0);
    let shown = ok(provider
        .register_interface(register(grpc_spec(&upstream, GRPC_VERIFY)))
        .await);
    assert_eq!(
        shown.spec.as_ref().expect("spec").descriptor_set,
        xinqiao_proto::sample::DESCRIPTOR_SET,
        "the descriptors are kept as registered"
    );

    // The caller sends and gets JSON; the hub speaks gRPC to the upstream, as itself.
    let mut user = interfaces(&hub, USER).await;
    let id = resident_id(11);
    let answer = invoke(&mut user, verify(&code, &id, "钱十")).await.expect("answered");
    let json: serde_json::Value = serde_json::from_str(&answer.response_json).expect("JSON");
    assert_eq!(json["match"], true);
    assert_eq!(json["mobile"], xinqiao_hub::sample_upstream::mobile_of(&id).as_str());
    assert_eq!(json["id_number"], id.as_str());
    assert_eq!(answer.upstream_status, 200);
    assert_eq!(upstream.server.last_client(), USER);
    // A false is an answer too: every field of the message is in the JSON.
    let answer = invoke(&mut user, verify(&code, &id, "nobody")).await.expect("answered");
    let json: serde_json::Value = serde_json::from_str(&answer.response_json).expect("JSON");
    assert_eq!(json["match"], false);

    // What breaks the request schema never leaves the hub.
    let before = upstream.server.requests();
    let r = invoke(
        &mut user,
        pb::InvokeRequest {
            request_json: r#"{"id_number": "x"}"#.into(),
            ..verify(&code, "", "")
        },
    )
    .await;
    refused_with(r, Code::InvalidArgument, "request_json");
    assert_eq!(upstream.server.requests(), before);

    // A bad upstream gets the same precise statuses as over HTTPS, with the gRPC status named.
    let call = || verify(&code, &id, "钱十");
    let cases = [
        (
            Behaviour::Status(404, "查无此人".into()),
            Code::NotFound,
            "gRPC NOT_FOUND",
        ),
        (
            Behaviour::Status(503, "维护中".into()),
            Code::Unavailable,
            "gRPC UNAVAILABLE",
        ),
        (
            Behaviour::Status(403, "no".into()),
            Code::FailedPrecondition,
            "refused the hub",
        ),
        (Behaviour::Garbled, Code::Unavailable, "nothing was passed on"),
        (Behaviour::OffSchema, Code::Unavailable, "outside the response schema"),
        (Behaviour::Huge(5 * 1024 * 1024), Code::Unavailable, "more than"),
        (
            Behaviour::Slow(Duration::from_secs(5)),
            Code::DeadlineExceeded,
            "within 1500 ms",
        ),
        (Behaviour::Hang, Code::Unavailable, "cannot be reached"),
    ];
    misbehave(&upstream, &mut user, &code, call, cases).await;
    // The upstream's words reach the caller, decoded.
    upstream.server.behave(Behaviour::Status(404, "查无此人".into()));
    refused_with(invoke(&mut user, call()).await, Code::NotFound, "查无此人");
    upstream.server.behave(Behaviour::Serve);

    // Gone: UNAVAILABLE naming the interface, at once.
    drop(upstream);
    let status = refused_with(invoke(&mut user, call()).await, Code::Unavailable, "cannot be reached");
    assert!(status.message().contains(&code));
    hub.finish().await;
}
