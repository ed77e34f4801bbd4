//! B8: a service interface (接口共享) called through the hub against the same upstream called
//! directly. The upstream is the sample 身份核验 service over HTTPS with a CA of its own, letting
//! in only the platform CA's clients, in this process. "Directly" is a caller with a pool of
//! HTTP/1.1 connections over TLS, presenting a certificate, as the hub itself reaches the upstream:
//! the difference between the two is what the hub adds (mutual TLS and gRPC from the caller, the
//! sharing rules, schema checks of request and answer, the rate, the audit trail).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tonic::transport::Channel;
use xinqiao_domain::interface::{Interface, InterfaceSpec, Method, Operation};
use xinqiao_domain::schema::SchemaRef;
use xinqiao_hub::pki;
use xinqiao_hub::sample_upstream::{SampleUpstream, VERIFY_REQUEST_SCHEMA, VERIFY_RESPONSE_SCHEMA};
use xinqiao_hub::upstream::{HubCertificate, Outgoing, Upstreams};
use xinqiao_proto::v1 as pb;
use xinqiao_proto::v1::directory_service_client::DirectoryServiceClient;
use xinqiao_proto::v1::interface_service_client::InterfaceServiceClient;
use xinqiao_proto::v1::schema_service_client::SchemaServiceClient;

use crate::hub::{Hub, PROVIDER};
use crate::report::{Ctx, Res, quantile};

/// The request every call makes.
const ID_NUMBER: &str = "11010519491231002X";

/// One side of B8.
#[derive(Clone)]
pub enum Caller {
    /// InterfaceService.Invoke on the hub, as the provider itself (no rate of others' to mind).
    Hub(Box<(InterfaceServiceClient<Channel>, pb::InvokeRequest)>),
    /// The upstream called directly through a pool of connections.
    Direct(Arc<Upstreams>, Arc<Interface>),
    /// The gRPC floor: Health/Check on the hub, over the same kind of connection as `Hub`, which
    /// does nothing (measured for its CPU per call).
    Floor(tonic_health::pb::health_client::HealthClient<Channel>),
}

impl Caller {
    async fn call(&mut self) -> Res<()> {
        match self {
            Caller::Hub(call) => {
                let (client, request) = &mut **call;
                let answer = client
                    .invoke(request.clone())
                    .await
                    .map_err(|s| format!("Invoke: {s}"))?
                    .into_inner();
                if !answer.response_json.contains("\"match\":true") {
                    return Err(format!("an unexpected answer: {}", answer.response_json));
                }
            }
            Caller::Floor(health) => {
                health
                    .check(tonic_health::pb::HealthCheckRequest::default())
                    .await
                    .map_err(|s| format!("Health/Check: {s}"))?;
            }
            Caller::Direct(upstreams, interface) => {
                let out = Outgoing {
                    method: Method::Post,
                    path_and_query: "/verify".into(),
                    body: request_json().into(),
                    idempotent: true,
                    timeout: Duration::from_secs(10),
                    client: PROVIDER.into(),
                    request_id: String::new(),
                };
                let answer = upstreams
                    .call(interface, out)
                    .await
                    .map_err(|f| format!("the upstream: {f:?}"))?;
                if answer.status != 200 || !String::from_utf8_lossy(&answer.body).contains("\"match\":true") {
                    return Err(format!("an unexpected answer: HTTP {}", answer.status));
                }
            }
        }
        Ok(())
    }
}

fn request_json() -> String {
    serde_json::json!({"id_number": ID_NUMBER, "name": "张三"}).to_string()
}

/// The upstream, the interface registered on the hub, and both callers.
pub struct Setup {
    pub hub: Caller,
    pub direct: Caller,
    pub floor: Caller,
    /// The upstream, told how to behave (its service time) before each part.
    pub upstream: SampleUpstream,
    _dir: tempfile::TempDir,
}

/// Starts the upstream and registers it as the interface of a published 接口 entry of the
/// provider on `hub`.
pub async fn setup(hub: &Hub, pki_dir: &Path, concurrency: u32) -> Res<Setup> {
    let dir = tempfile::tempdir().ctx("a temporary directory")?;
    pki::init(dir.path(), &[]).map_err(|e| format!("the upstream's PKI: {e}"))?;
    let files = pki::server_files(dir.path());
    let upstream = SampleUpstream::start(&files.cert, &files.key, Some(&pki::ca_cert_path(pki_dir)))
        .await
        .map_err(|e| format!("the sample upstream: {e}"))?;
    let ca_pem = std::fs::read_to_string(pki::ca_cert_path(dir.path())).ctx("the upstream's CA")?;

    let provider = hub.provider_channel().await?;
    let mut schemas = SchemaServiceClient::new(provider.clone());
    for (subject, text) in [
        ("b8-request", VERIFY_REQUEST_SCHEMA),
        ("b8-response", VERIFY_RESPONSE_SCHEMA),
    ] {
        schemas
            .register_schema(pb::RegisterSchemaRequest {
                subject: subject.into(),
                schema_json: text.into(),
            })
            .await
            .map_err(|s| format!("registering {subject}: {s}"))?;
    }
    let code = published_interface_entry(hub).await?;
    let spec = InterfaceSpec {
        upstream: upstream.url(),
        upstream_ca_pem: ca_pem,
        operations: vec![Operation {
            name: "verify".into(),
            method: Method::Post,
            path: "/verify".into(),
            request_schema: SchemaRef {
                subject: "b8-request".into(),
                version: 1,
            },
            response_schema: SchemaRef {
                subject: "b8-response".into(),
                version: 1,
            },
            idempotent: true,
        }],
        timeout_ms: 10_000,
        rate_per_minute: xinqiao_domain::interface::MAX_RATE_PER_MINUTE,
        max_concurrency: concurrency,
        descriptor_set: Vec::new(),
    };
    let mut interfaces = InterfaceServiceClient::new(provider);
    let schema = |s: &SchemaRef| {
        Some(pb::SchemaReference {
            subject: s.subject.clone(),
            version: s.version,
        })
    };
    let operation = &spec.operations[0];
    interfaces
        .register_interface(pb::RegisterInterfaceRequest {
            code: code.clone(),
            spec: Some(pb::InterfaceSpec {
                upstream: spec.upstream.clone(),
                upstream_ca_pem: spec.upstream_ca_pem.clone(),
                operations: vec![pb::InterfaceOperation {
                    name: operation.name.clone(),
                    method: "POST".into(),
                    path: operation.path.clone(),
                    request_schema: schema(&operation.request_schema),
                    response_schema: schema(&operation.response_schema),
                    idempotent: true,
                }],
                timeout_ms: spec.timeout_ms,
                rate_per_minute: spec.rate_per_minute,
                max_concurrency: spec.max_concurrency,
                descriptor_set: Vec::new(),
            }),
        })
        .await
        .map_err(|s| format!("registering the interface: {s}"))?;

    // The direct caller presents a department's certificate, as the hub presents its own.
    let department = pki::department_files(pki_dir, PROVIDER);
    let direct = Upstreams::new(HubCertificate {
        cert: department.cert,
        key: department.key,
    });
    let now = chrono::Utc::now();
    let interface = Interface {
        code: code.clone(),
        provider_code: PROVIDER.into(),
        spec,
        enabled: true,
        disabled_reason: String::new(),
        registered_at: now,
        updated_at: now,
    };
    let request = pb::InvokeRequest {
        code,
        operation: "verify".into(),
        request_json: request_json(),
        purpose: String::new(),
        grant_id: String::new(),
    };
    Ok(Setup {
        hub: Caller::Hub(Box::new((interfaces, request))),
        floor: Caller::Floor(tonic_health::pb::health_client::HealthClient::new(
            hub.provider_channel().await?,
        )),
        direct: Caller::Direct(Arc::new(direct), Arc::new(interface)),
        upstream,
        _dir: dir,
    })
}

async fn published_interface_entry(hub: &Hub) -> Res<String> {
    let mut provider = DirectoryServiceClient::new(hub.provider_channel().await?);
    let content = pb::EntryContent {
        name: "居民身份核验（基准测试）".into(),
        classification: "101".into(),
        summary: "按公民身份号码和姓名核验身份。".into(),
        format: pb::ResourceFormat::ServiceInterface as i32,
        items: vec![pb::DataItem {
            name: "公民身份号码".into(),
            data_type: "字符型".into(),
            length: 18,
            sensitive: true,
            description: String::new(),
        }],
        share: Some(pb::ShareAttributes {
            share_type: pb::ShareType::Unconditional as i32,
            condition: String::new(),
            channel: pb::ShareChannel::Platform as i32,
            exchange_kind: pb::ExchangeKind::Interface as i32,
            legal_basis: String::new(),
        }),
        open: Some(pb::OpenAttributes {
            open_type: pb::OpenType::NotOpen as i32,
            condition: String::new(),
        }),
        update_cycle: pb::UpdateCycle::Realtime as i32,
        related_codes: vec![],
        maintainer: String::new(),
    };
    let code = provider
        .create_entry(pb::CreateEntryRequest { content: Some(content) })
        .await
        .map_err(|s| format!("creating the entry: {s}"))?
        .into_inner()
        .resource_code;
    provider
        .submit_entry(pb::SubmitEntryRequest {
            resource_code: code.clone(),
            expected_version: 0,
        })
        .await
        .map_err(|s| format!("submitting the entry: {s}"))?;
    DirectoryServiceClient::new(hub.admin_channel().await?)
        .publish_entry(pb::PublishEntryRequest {
            resource_code: code.clone(),
            expected_version: 0,
        })
        .await
        .map_err(|s| format!("publishing the entry: {s}"))?;
    Ok(code)
}

/// Calls per second and latency quantiles of one run.
pub struct Load {
    pub rate: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// CPU time of the whole process (callers, hub and upstream alike) per call, in µs.
    pub cpu_us_per_call: f64,
}

/// `concurrency` callers in a loop for `duration`, after one untimed call.
pub async fn load(caller: &Caller, concurrency: usize, duration: Duration) -> Res<Load> {
    caller.clone().call().await.map_err(|e| format!("warm-up call: {e}"))?;
    let cpu_before = crate::sys::cpu_seconds();
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let mut caller = caller.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies: Vec<u32> = Vec::with_capacity(4096);
            while Instant::now() < deadline {
                let t0 = Instant::now();
                caller.call().await?;
                latencies.push(t0.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
            }
            Ok::<_, String>(latencies)
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.ctx("load task")??);
    }
    let elapsed = start.elapsed().as_secs_f64();
    let cpu = crate::sys::cpu_seconds() - cpu_before;
    all.sort_unstable();
    Ok(Load {
        cpu_us_per_call: cpu * 1e6 / all.len().max(1) as f64,
        rate: all.len() as f64 / elapsed,
        p50_ms: quantile(&all, 0.50) / 1000.0,
        p99_ms: quantile(&all, 0.99) / 1000.0,
    })
}
