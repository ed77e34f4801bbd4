//! InterfaceService: providers' live services shared through the hub (接口共享).
//!
//! An Invoke is a read like a Fetch: it passes the same gate (`exchange::authorise_use`: the
//! entry must be visible, 无条件 needs a purpose, 有条件 an active grant, 不予共享 never), its request
//! is checked against the operation's registered schema before anything leaves the hub, and the
//! upstream's answer is checked against the response schema, then projected and masked as the
//! grant says, before it reaches the caller. The call is audited by the layer, with what the
//! handler notes: basis, operation, upstream status, time and bytes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tonic::{Request, Response, Status};
use xinqiao_domain::identity::Caller;
use xinqiao_domain::interface::{self as rules, Interface, InterfaceSpec, Method, Operation, RateBucket};
use xinqiao_domain::schema::SchemaRef;
use xinqiao_domain::{Error, FieldViolation, Result, paging, text};
use xinqiao_proto::v1 as pb;
use xinqiao_proto::v1::interface_service_server::InterfaceService;
use xinqiao_schema::FormatMode;
use xinqiao_store::Store;

use crate::audit::CallNote;
use crate::auth::{Authenticator, Relayed};
use crate::cache::{Cache, FRESH_FOR};
use crate::convert::timestamp;
use crate::exchange::{ReadRequest, decide_use, note_basis};
use crate::federation::relay::{self, Relay, qualify};
use crate::metrics::Metrics;
use crate::paging::{decode, next_token};
use crate::registry::Registry;
use crate::status::{answer, to_status};
use crate::transcode::{GrpcMethods, answer_json, request_frame};
use crate::upstream::{Answer, Failure, HubCertificate, Outgoing, Upstreams};

const INTERFACES: &str = "interfaces";
/// A request larger than this is refused before it is parsed.
const MAX_REQUEST_BYTES: usize = 1024 * 1024;
/// Schema violations named in one refusal.
const MAX_VIOLATIONS: usize = 20;

pub struct InterfaceApi {
    store: Arc<dyn Store>,
    auth: Authenticator,
    registry: Registry,
    upstreams: Upstreams,
    hub: HubCertificate,
    metrics: Metrics,
    /// Each department's calls per interface.
    rates: Mutex<HashMap<(String, String), RateBucket>>,
    /// Interfaces as last read, for a second (this node forgets one it changes at once; another
    /// node's change is seen within the second, as with catalogue entries).
    interfaces: Cache<String, Arc<Callable>>,
    /// Catalogue entries as the directory caches them (it forgets one it changes).
    entries: Arc<crate::directory::EntryCache>,
    /// Compiled request and response schemas: a registered version never changes.
    validators: Cache<(String, u32), Arc<xinqiao_schema::CompiledSchema>>,
    /// Calls of interfaces on entries held on other hubs, relayed there (跨级交换).
    relay: Option<Relay>,
}

/// An interface as a call needs it: with its gRPC methods found in its descriptors.
struct Callable {
    interface: Interface,
    grpc: GrpcMethods,
}

/// How long a compiled schema version is kept (its content never changes; only so the map is
/// renewed now and then).
const VALIDATORS_FRESH_FOR: Duration = Duration::from_secs(600);

impl InterfaceApi {
    pub fn new(
        store: Arc<dyn Store>,
        auth: Authenticator,
        registry: Registry,
        hub: HubCertificate,
        metrics: Metrics,
        entries: Arc<crate::directory::EntryCache>,
    ) -> Self {
        Self {
            store,
            auth,
            registry,
            upstreams: Upstreams::new(hub.clone()),
            hub,
            metrics,
            rates: Mutex::new(HashMap::new()),
            interfaces: Cache::new(FRESH_FOR),
            entries,
            validators: Cache::new(VALIDATORS_FRESH_FOR),
            relay: None,
        }
    }

    /// Relays calls of interfaces on entries aggregated from child hubs: the hub holding the
    /// entry decides, calls its upstream, checks and masks the answer, and audits; this hub
    /// audits its side (see `federation::relay`).
    pub fn relay(mut self, relay: Option<Relay>) -> Self {
        self.relay = relay;
        self
    }

    /// Where a call about interface `code` goes when another hub holds its entry.
    async fn route(&self, code: &str, note: &CallNote) -> Result<Option<(&Relay, relay::Route)>> {
        let Some(relay) = &self.relay else { return Ok(None) };
        let Some(route) = relay.route(code).await? else {
            return Ok(None);
        };
        note.about(&route.entry.resource_code, &route.entry.provider_code);
        note.detail("relayed_to", route.peer.division_code.clone());
        note.detail("origin_hub", route.origin_hub.clone());
        Ok(Some((relay, route)))
    }

    /// Invoke of an interface held on another hub: the call passed on as the department's, its
    /// grant named as the peer knows it; the answer comes back checked and masked there.
    async fn invoke_relayed(
        &self,
        (caller, relayed): (&Caller, Option<&Relayed>),
        (relay, route): (&Relay, relay::Route),
        r: pb::InvokeRequest,
        note: &CallNote,
    ) -> Result<pb::InvokeResponse> {
        note.detail("operation", text::shorten(&r.operation, 64));
        note.detail("request_bytes", r.request_json.len());
        let message = pb::InvokeRequest {
            code: route.dataset.clone(),
            grant_id: route.name(&r.grant_id),
            ..r
        };
        let request = relay.request(caller, relayed, message, true)?;
        let mut client = relay.interface_at(&route.peer)?;
        let started = Instant::now();
        let answer = relay::answered(&route.peer.division_code, client.invoke(request)).await?;
        note.detail("peer_ms", started.elapsed().as_millis() as u64);
        note.detail("upstream_status", answer.upstream_status);
        note.detail("upstream_ms", answer.upstream_ms);
        note.detail("response_bytes", answer.response_json.len());
        Ok(answer)
    }

    /// The interface of an entry, from the cache when fresh.
    async fn current(&self, code: &str) -> Result<Option<Arc<Callable>>> {
        if let Some(found) = self.interfaces.get(code) {
            return Ok(Some(found));
        }
        let since = self.interfaces.mark();
        let Some(interface) = self.store.get_interface(code).await? else {
            return Ok(None);
        };
        // Registration checked the descriptors; stored ones that no longer read are the store's
        // fault, not the caller's.
        let grpc = GrpcMethods::resolve(&interface.spec)
            .map_err(|e| Error::Internal(format!("interface {code}: its stored descriptors do not resolve: {e}")))?;
        let found = Arc::new(Callable { interface, grpc });
        self.interfaces.put(since, code.to_string(), found.clone());
        Ok(Some(found))
    }

    /// The interface of an entry the caller may see.
    async fn interface(&self, caller: &Caller, code: &str, note: &CallNote) -> Result<Interface> {
        let entry = crate::directory::visible_entry(self.store.as_ref(), caller, code)
            .await
            .map_err(|e| match e {
                Error::NotFound(_) => not_registered(code),
                other => other,
            })?;
        note.about(&entry.resource_code, &entry.provider_code);
        self.store
            .get_interface(&entry.resource_code)
            .await?
            .ok_or_else(|| not_registered(&entry.resource_code))
    }

    /// Every operation's schemas must be registered, live versions.
    async fn check_schemas(&self, spec: &InterfaceSpec) -> Result<()> {
        let mut v = xinqiao_domain::error::Violations::new();
        for (i, op) in spec.operations.iter().enumerate() {
            for (field, schema) in [
                ("request_schema", &op.request_schema),
                ("response_schema", &op.response_schema),
            ] {
                if let Err(e) = self.registry.resolve(&schema.subject, schema.version, false).await {
                    match e {
                        Error::NotFound(what) => v.add(
                            format!("spec.operations[{i}].{field}"),
                            format!("{what} is not registered (register it in the schema registry first)"),
                        ),
                        other => return Err(other),
                    }
                }
            }
        }
        v.into_result()
    }

    /// Takes one call from the department's allowance for this interface.
    fn take_rate(&self, interface: &Interface, department: &str) -> Result<()> {
        let now = crate::clock::now();
        let rate = interface.spec.rate_per_minute;
        let mut rates = self.rates.lock().unwrap_or_else(|e| e.into_inner());
        let bucket = rates
            .entry((interface.code.clone(), department.to_string()))
            .or_insert_with(|| RateBucket::new(rate, now));
        bucket.take(rate, now).map_err(|retry_after| Error::Throttled {
            why: format!(
                "interface {} takes {rate} calls a minute from one department; try again in {} ms",
                interface.code,
                retry_after.as_millis().max(1)
            ),
            retry_after,
        })
    }

    async fn validator(&self, schema: &SchemaRef) -> Result<Arc<xinqiao_schema::CompiledSchema>> {
        let key = (schema.subject.clone(), schema.version);
        if let Some(found) = self.validators.get(&key) {
            return Ok(found);
        }
        let since = self.validators.mark();
        let registered = self.registry.resolve(&schema.subject, schema.version, true).await?;
        let compiled = self.registry.validator(&registered, FormatMode::Strict).await?;
        self.validators.put(since, key, compiled.clone());
        Ok(compiled)
    }

    /// The body of Invoke. `trace` learns the interface and operation once they are known to
    /// exist (metrics are kept only for those: a caller's made-up names make no series), and how
    /// long the upstream took if it was reached.
    async fn invoke_checked(
        &self,
        caller: &Caller,
        r: &pb::InvokeRequest,
        note: &CallNote,
        trace: &mut Trace,
    ) -> Result<pb::InvokeResponse> {
        note.detail("operation", text::shorten(&r.operation, 64));
        let read = ReadRequest::records(&r.code, &r.grant_id, &r.purpose);
        let entry = crate::directory::cached_visible_entry(self.store.as_ref(), &self.entries, caller, &r.code).await;
        let (entry, basis) = decide_use(self.store.as_ref(), caller, &read, "interface", entry, Some(note)).await?;
        note_basis(note, &basis);
        let callable = self
            .current(&entry.resource_code)
            .await?
            .ok_or_else(|| not_registered(&entry.resource_code))?;
        let interface = &callable.interface;
        let operation = rules::callable(interface, &r.operation)?.clone();
        trace.called = Some((interface.code.clone(), operation.name.clone()));
        if let Some(grant) = basis.grant() {
            grant.covers_operation(&operation.name)?;
        }
        if let Some(department) = caller.department() {
            self.take_rate(interface, department)?;
        }

        // The request is checked here: nothing that breaks its schema reaches the upstream.
        if r.request_json.len() > MAX_REQUEST_BYTES {
            return Err(Error::ResourceExhausted(format!(
                "the request is {} bytes; at most {MAX_REQUEST_BYTES}",
                r.request_json.len()
            )));
        }
        let request: Value = serde_json::from_str(&r.request_json)
            .map_err(|e| Error::invalid("request_json", format!("is not JSON: {e}")))?;
        let outcome = self
            .validator(&operation.request_schema)
            .await?
            .validate_bounded(&request, MAX_VIOLATIONS);
        if !outcome.is_valid() {
            return Err(Error::InvalidArgument(
                outcome
                    .errors
                    .into_iter()
                    .map(|v| {
                        xinqiao_domain::FieldViolation::new(format!("request_json{}", v.instance_pointer), v.message)
                    })
                    .collect(),
            ));
        }
        note.detail("request_bytes", r.request_json.len());

        let grpc_method = match operation.method {
            Method::Grpc => Some(callable.grpc.method(&operation.name).ok_or_else(|| {
                Error::Internal(format!(
                    "interface {}: operation {} has no method",
                    interface.code, operation.name
                ))
            })?),
            _ => None,
        };
        let out = outgoing(interface, &operation, grpc_method, &request, r, caller, note)?;
        let answer = match self.upstreams.call(interface, out).await {
            Ok(answer) => answer,
            Err(failure) => return Err(failure_error(interface, failure)),
        };
        trace.upstream = Some(answer.waited);
        note.detail("upstream_status", answer.status);
        if let Some((code, _)) = &answer.grpc {
            note.detail("upstream_grpc_status", crate::audit::code_name(*code));
        }
        note.detail("upstream_ms", answer.waited.as_millis() as u64);
        note.detail("response_bytes", answer.body.len());
        refused_by_upstream(interface, &answer)?;

        // The answer is checked before it is passed on: an upstream outside its schema is failing.
        let read = match grpc_method {
            Some(method) => answer_json(method, answer.body.clone()),
            None => serde_json::from_slice::<Value>(&answer.body).map_err(|e| format!("not JSON ({e})")),
        };
        let response = match read {
            Ok(v) => v,
            Err(why) => {
                self.upstreams.count_failure(interface);
                return Err(Error::Unavailable(format!(
                    "interface {}: its upstream answered with something that is {}; nothing was passed on",
                    interface.code,
                    text::shorten(&why, 200)
                )));
            }
        };
        let checked = self
            .validator(&operation.response_schema)
            .await?
            .validate_bounded(&response, 3);
        if !checked.is_valid() {
            self.upstreams.count_failure(interface);
            let first = checked
                .errors
                .first()
                .map(|v| format!("{}: {}", v.instance_pointer, v.message))
                .unwrap_or_default();
            return Err(Error::Unavailable(format!(
                "interface {}: its upstream answered outside the response schema {} v{} ({}); nothing was passed on",
                interface.code,
                operation.response_schema.subject,
                operation.response_schema.version,
                text::shorten(&first, 200)
            )));
        }
        let response_json = match basis.view(&[]) {
            Some(view) => view.record(response.to_string().as_bytes()),
            None => response.to_string(),
        };
        Ok(pb::InvokeResponse {
            response_json,
            upstream_status: u32::from(answer.status),
            upstream_ms: answer.waited.as_millis().min(u128::from(u32::MAX)) as u32,
        })
    }
}

/// What an Invoke learned for the metrics.
#[derive(Default)]
struct Trace {
    called: Option<(String, String)>,
    upstream: Option<Duration>,
}

fn not_registered(code: &str) -> Error {
    Error::NotFound(format!("interface {}", text::shorten(code, 64)))
}

/// The HTTP request an operation makes of the upstream.
fn outgoing(
    interface: &Interface,
    operation: &Operation,
    grpc_method: Option<&prost_reflect::MethodDescriptor>,
    request: &Value,
    r: &pb::InvokeRequest,
    caller: &Caller,
    note: &CallNote,
) -> Result<Outgoing> {
    let (path_and_query, body) = match operation.method {
        Method::Post => (operation.path.clone(), bytes::Bytes::from(r.request_json.clone())),
        Method::Grpc => {
            let method = grpc_method.ok_or_else(|| Error::Internal(format!("{}: no gRPC method", operation.name)))?;
            (operation.path.clone(), request_frame(method, request)?)
        }
        Method::Get => {
            let mut query = String::new();
            if let Value::Object(fields) = request {
                for (name, value) in fields {
                    let value = match value {
                        Value::String(s) => s.clone(),
                        Value::Number(n) => n.to_string(),
                        Value::Bool(b) => b.to_string(),
                        Value::Null => continue,
                        _ => {
                            return Err(Error::invalid(
                                format!("request_json/{name}"),
                                "a GET operation takes text, numbers and true/false only (they become the query)",
                            ));
                        }
                    };
                    query.push(if query.is_empty() { '?' } else { '&' });
                    query.push_str(&percent_encode(name));
                    query.push('=');
                    query.push_str(&percent_encode(&value));
                }
            }
            (format!("{}{query}", operation.path), bytes::Bytes::new())
        }
    };
    Ok(Outgoing {
        method: operation.method,
        path_and_query,
        body,
        idempotent: operation.idempotent,
        timeout: interface.timeout(),
        client: match caller {
            Caller::Department(code) | Caller::Admin(code) | Caller::Evaluator(code) => code.clone(),
        },
        request_id: note.request_id(),
    })
}

/// Everything but the unreserved characters of RFC 3986, as %XX of its UTF-8 bytes.
pub(crate) fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// What the caller hears when the upstream gave no answer: the interface named, never a hang.
fn failure_error(interface: &Interface, failure: Failure) -> Error {
    let code = &interface.code;
    match failure {
        Failure::CircuitOpen { retry_after } => Error::Unavailable(format!(
            "interface {code}: its upstream failed {} times in a row; the circuit is open and calls are refused for {} s while it recovers",
            rules::CIRCUIT_THRESHOLD,
            retry_after.as_secs().max(1)
        )),
        Failure::Busy => Error::Throttled {
            why: format!(
                "interface {code}: its {} calls in flight to the upstream stayed busy for {} ms",
                interface.spec.max_concurrency, interface.spec.timeout_ms
            ),
            retry_after: Duration::from_secs(1),
        },
        Failure::TimedOut => Error::DeadlineExceeded(format!(
            "interface {code}: its upstream did not answer within {} ms",
            interface.spec.timeout_ms
        )),
        Failure::Unreachable(why) => Error::Unavailable(format!(
            "interface {code}: its upstream cannot be reached ({})",
            text::shorten(&why, 200)
        )),
        Failure::TooLarge => Error::Unavailable(format!(
            "interface {code}: its upstream answered more than {} bytes; nothing was passed on",
            crate::upstream::MAX_ANSWER_BYTES
        )),
        Failure::Misconfigured(why) => Error::FailedPrecondition(format!(
            "interface {code} cannot be called as registered: {}",
            text::shorten(&why, 200)
        )),
    }
}

/// An upstream's refusal as the caller hears it. 2xx (gRPC OK) passes; the rest is named as the
/// upstream's, with the HTTP or gRPC status it gave.
fn refused_by_upstream(interface: &Interface, answer: &Answer) -> Result<()> {
    let status = answer.status;
    if (200..300).contains(&status) {
        return Ok(());
    }
    let (gave, said) = match &answer.grpc {
        Some((code, message)) => (format!("gRPC {}", crate::audit::code_name(*code)), message.clone()),
        None => (
            format!("HTTP {status}"),
            String::from_utf8_lossy(&answer.body).into_owned(),
        ),
    };
    let said = text::shorten(&said, 200);
    let code = &interface.code;
    Err(match status {
        400 | 422 => Error::invalid(
            "request_json",
            format!("the upstream of {code} refused the request ({gave}): {said}"),
        ),
        404 => Error::NotFound(format!("the upstream of {code} found nothing ({gave}): {said}")),
        429 => Error::Throttled {
            why: format!("the upstream of {code} is busy ({gave})"),
            retry_after: Duration::from_secs(1),
        },
        401 | 403 => Error::FailedPrecondition(format!(
            "the upstream of {code} refused the hub ({gave}): its provider must let the hub's certificate in"
        )),
        s if s >= 500 => Error::Unavailable(format!("the upstream of {code} failed ({gave}): {said}")),
        _ => Error::FailedPrecondition(format!("the upstream of {code} answered {gave}: {said}")),
    })
}

/// The specification as the domain takes it, and what is wrong with it already (a method that
/// is neither POST nor GET), to be reported with what the rules find.
fn spec_from_api(spec: Option<pb::InterfaceSpec>) -> Result<(InterfaceSpec, Vec<FieldViolation>)> {
    let spec = spec.ok_or_else(|| Error::invalid("spec", "is required"))?;
    let mut v = Vec::new();
    let schema = |s: Option<pb::SchemaReference>| {
        s.map(|s| SchemaRef {
            subject: s.subject,
            version: s.version,
        })
        .unwrap_or(SchemaRef {
            subject: String::new(),
            version: 0,
        })
    };
    let mut operations = Vec::with_capacity(spec.operations.len().min(rules::MAX_OPERATIONS + 1));
    for (i, op) in spec.operations.into_iter().enumerate().take(rules::MAX_OPERATIONS + 1) {
        let method = Method::parse(&op.method).unwrap_or_else(|| {
            v.push(FieldViolation::new(
                format!("spec.operations[{i}].method"),
                format!("'{}' is not POST, GET or GRPC", text::shorten(&op.method, 16)),
            ));
            Method::Post
        });
        operations.push(Operation {
            name: op.name,
            method,
            path: op.path,
            request_schema: schema(op.request_schema),
            response_schema: schema(op.response_schema),
            idempotent: op.idempotent,
        });
    }
    let spec = InterfaceSpec {
        upstream: spec.upstream,
        upstream_ca_pem: spec.upstream_ca_pem,
        operations,
        timeout_ms: spec.timeout_ms,
        rate_per_minute: spec.rate_per_minute,
        max_concurrency: spec.max_concurrency,
        descriptor_set: spec.descriptor_set,
    };
    Ok((spec, v))
}

fn interface_api(i: Interface) -> pb::Interface {
    let schema = |s: SchemaRef| {
        Some(pb::SchemaReference {
            subject: s.subject,
            version: s.version,
        })
    };
    pb::Interface {
        code: i.code,
        provider_code: i.provider_code,
        spec: Some(pb::InterfaceSpec {
            upstream: i.spec.upstream,
            upstream_ca_pem: i.spec.upstream_ca_pem,
            operations: i
                .spec
                .operations
                .into_iter()
                .map(|o| pb::InterfaceOperation {
                    name: o.name,
                    method: o.method.as_str().into(),
                    path: o.path,
                    request_schema: schema(o.request_schema),
                    response_schema: schema(o.response_schema),
                    idempotent: o.idempotent,
                })
                .collect(),
            timeout_ms: i.spec.timeout_ms,
            rate_per_minute: i.spec.rate_per_minute,
            max_concurrency: i.spec.max_concurrency,
            descriptor_set: i.spec.descriptor_set,
        }),
        enabled: i.enabled,
        disabled_reason: i.disabled_reason,
        registered_at: Some(timestamp(i.registered_at)),
        updated_at: Some(timestamp(i.updated_at)),
    }
}

#[tonic::async_trait]
impl InterfaceService for InterfaceApi {
    async fn register_interface(
        &self,
        request: Request<pb::RegisterInterfaceRequest>,
    ) -> std::result::Result<Response<pb::Interface>, Status> {
        let note = CallNote::of(&request);
        answer(async {
            let caller = self.auth.caller(&request).await?;
            let r = request.into_inner();
            note.about(&r.code, caller.department().unwrap_or_default());
            let entry = crate::directory::visible_entry(self.store.as_ref(), &caller, &r.code).await?;
            note.about(&entry.resource_code, &entry.provider_code);
            let (mut spec, mut problems) = spec_from_api(r.spec)?;
            match rules::register(&caller, &entry, &mut spec) {
                Ok(()) => {}
                Err(Error::InvalidArgument(found)) => problems.extend(found),
                Err(other) => return Err(other),
            }
            if !problems.is_empty() {
                return Err(Error::InvalidArgument(problems));
            }
            // A gRPC operation must name a unary method its descriptors hold.
            GrpcMethods::resolve(&spec)?;
            self.check_schemas(&spec).await?;
            // The CA must be one the hub can verify the upstream with.
            crate::tls::upstream_client_config(&spec.upstream_ca_pem, &self.hub.cert, &self.hub.key)
                .map_err(|e| Error::invalid("spec.upstream_ca_pem", e.to_string()))?;
            let stored = self
                .store
                .put_interface(&entry.resource_code, &entry.provider_code, &spec, crate::clock::now())
                .await?;
            self.interfaces.forget(&stored.code);
            note.detail("upstream", stored.spec.upstream.clone());
            note.detail(
                "operations",
                stored
                    .spec
                    .operations
                    .iter()
                    .map(|o| o.name.clone())
                    .collect::<Vec<_>>(),
            );
            Ok(interface_api(stored))
        })
        .await
    }

    async fn get_interface(
        &self,
        request: Request<pb::GetInterfaceRequest>,
    ) -> std::result::Result<Response<pb::Interface>, Status> {
        let note = CallNote::of(&request);
        answer(async {
            let (caller, relayed) = self.auth.reader(&request).await?;
            let code = &request.get_ref().code;
            if let Some((relay, route)) = self.route(code, &note).await? {
                let message = pb::GetInterfaceRequest {
                    code: route.dataset.clone(),
                };
                let mut client = relay.interface_at(&route.peer)?;
                let call = client.get_interface(relay.request(&caller, relayed.as_ref(), message, true)?);
                let mut found = relay::answered(&route.peer.division_code, call).await?;
                found.code = qualify(&route.origin_hub, &found.code);
                return Ok(found);
            }
            let interface = self.interface(&caller, code, &note).await?;
            Ok(interface_api(interface))
        })
        .await
    }

    async fn list_interfaces(
        &self,
        request: Request<pb::ListInterfacesRequest>,
    ) -> std::result::Result<Response<pb::ListInterfacesResponse>, Status> {
        let note = CallNote::of(&request);
        answer(async {
            let (caller, relayed) = self.auth.reader(&request).await?;
            let r = request.get_ref();
            // The interfaces of another hub below this one, listed there as the caller may see them.
            if let Some(relay) = &self.relay
                && let Some(route) = relay.route_hub(&r.hub).await?
            {
                note.detail("relayed_to", route.peer.division_code.clone());
                note.detail("origin_hub", route.origin_hub.clone());
                let message = pb::ListInterfacesRequest {
                    hub: route.hub(),
                    ..r.clone()
                };
                let mut client = relay.interface_at(&route.peer)?;
                let call = client.list_interfaces(relay.request(&caller, relayed.as_ref(), message, true)?);
                let mut page = relay::answered(&route.peer.division_code, call).await?;
                for found in &mut page.interfaces {
                    found.code = qualify(&route.origin_hub, &found.code);
                }
                return Ok(page);
            }
            if !r.hub.is_empty() && self.relay.as_ref().is_none_or(|relay| relay.division() != r.hub) {
                return Err(Error::NotFound(format!(
                    "hub {}: this hub takes no part in federation",
                    text::shorten(&r.hub, 20)
                )));
            }
            let limit = paging::page_size(r.page_size)?;
            let after = decode(INTERFACES, &r.page_token)?;
            let provider = (!r.provider_code.is_empty()).then_some(r.provider_code.as_str());
            let mut page = self
                .store
                .list_interfaces(provider, after.as_deref(), limit + 1)
                .await?;
            let next_page_token = next_token(INTERFACES, &mut page, limit, |i| i.code.as_str());
            // Only those of entries the caller may see (published ones, and its own).
            let mut visible = Vec::with_capacity(page.len());
            for interface in page {
                match crate::directory::visible_entry(self.store.as_ref(), &caller, &interface.code).await {
                    Ok(_) => visible.push(interface_api(interface)),
                    Err(Error::NotFound(_) | Error::PermissionDenied(_)) => {}
                    Err(other) => return Err(other),
                }
            }
            Ok(pb::ListInterfacesResponse {
                interfaces: visible,
                next_page_token,
            })
        })
        .await
    }

    async fn disable_interface(
        &self,
        request: Request<pb::DisableInterfaceRequest>,
    ) -> std::result::Result<Response<pb::Interface>, Status> {
        let note = CallNote::of(&request);
        answer(async {
            let caller = self.auth.caller(&request).await?;
            let r = request.get_ref();
            let interface = self.interface(&caller, &r.code, &note).await?;
            rules::disable(&caller, &interface, &r.reason)?;
            note.detail("reason", r.reason.trim());
            let disabled = self
                .store
                .disable_interface(&interface.code, r.reason.trim(), crate::clock::now())
                .await?;
            self.interfaces.forget(&disabled.code);
            Ok(interface_api(disabled))
        })
        .await
    }

    async fn invoke(
        &self,
        request: Request<pb::InvokeRequest>,
    ) -> std::result::Result<Response<pb::InvokeResponse>, Status> {
        let note = CallNote::of(&request);
        let (caller, relayed) = self.auth.reader(&request).await.map_err(to_status)?;
        let r = request.into_inner();
        let started = Instant::now();
        if let Some(route) = self.route(&r.code, &note).await.map_err(to_status)? {
            let result = self
                .invoke_relayed((&caller, relayed.as_ref()), route, r, &note)
                .await
                .map_err(to_status);
            note.detail("hub_ms", started.elapsed().as_millis() as u64);
            return result.map(Response::new);
        }
        let mut trace = Trace::default();
        let result = self
            .invoke_checked(&caller, &r, &note, &mut trace)
            .await
            .map_err(to_status);
        note.detail("hub_ms", started.elapsed().as_millis() as u64);
        if let Some((interface, operation)) = &trace.called {
            let code = result.as_ref().map_or_else(Status::code, |_| tonic::Code::Ok);
            self.metrics.interface_call(interface, operation, code, trace.upstream);
        }
        result.map(Response::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(percent_encode("330102199001011234"), "330102199001011234");
        assert_eq!(percent_encode("张 三&x=1"), "%E5%BC%A0%20%E4%B8%89%26x%3D1");
    }
}
