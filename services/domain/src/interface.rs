//! 接口共享: live services of a providing department's own system, shared through the hub.
//!
//! An interface belongs to a catalogue entry whose exchange kind is 接口; its provider registers
//! the upstream address, the operations with their request and response schemas, a timeout, a
//! rate per using department and the calls in flight at once. Whether a department may call it is
//! decided by the same rule as every read of records (`access::read`); what is here is the rest:
//! what a registration must hold, which calls an interface takes, and the two guards in front of
//! an upstream (the circuit and the per-department rate).

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::catalogue::{CatalogEntry, ExchangeKind};
use crate::error::Violations;
use crate::identity::Caller;
use crate::lifecycle::EntryState;
use crate::schema::SchemaRef;
use crate::text;
use crate::{Error, Result};

pub const DEFAULT_TIMEOUT_MS: u32 = 5_000;
pub const MAX_TIMEOUT_MS: u32 = 60_000;
pub const DEFAULT_RATE_PER_MINUTE: u32 = 600;
/// A rate above this is no limit worth the name; one department is not to flood a provider.
pub const MAX_RATE_PER_MINUTE: u32 = 600_000;
pub const DEFAULT_MAX_CONCURRENCY: u32 = 16;
pub const MAX_CONCURRENCY: u32 = 1_024;
pub const MAX_OPERATIONS: usize = 64;
/// A CA bundle larger than this is not a CA bundle.
pub const MAX_CA_PEM_BYTES: usize = 64 * 1024;
/// The protobuf descriptors of a gRPC upstream's service (a serialized FileDescriptorSet).
pub const MAX_DESCRIPTOR_SET_BYTES: usize = 1024 * 1024;

/// How an operation's request reaches the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// The JSON request is the body.
    Post,
    /// No body: the request's top-level scalar values become query parameters.
    Get,
    /// A unary gRPC method of a `grpcs://` upstream: the JSON request becomes the method's
    /// protobuf message, and its answer becomes JSON again, by the registered descriptors.
    Grpc,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Post => "POST",
            Method::Get => "GET",
            Method::Grpc => "GRPC",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text.trim().to_ascii_uppercase().as_str() {
            "POST" | "" => Some(Method::Post),
            "GET" => Some(Method::Get),
            "GRPC" => Some(Method::Grpc),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operation {
    pub name: String,
    pub method: Method,
    /// Under the upstream's address, beginning with '/'; for gRPC, the method's full name
    /// `/package.Service/Method`.
    pub path: String,
    pub request_schema: SchemaRef,
    pub response_schema: SchemaRef,
    /// Retried once after a failure to connect; other operations are never repeated.
    pub idempotent: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceSpec {
    /// https://host[:port][/base], or grpcs://host[:port]
    pub upstream: String,
    pub upstream_ca_pem: String,
    /// For a gRPC upstream: its service's descriptors (a serialized FileDescriptorSet, as
    /// `protoc --include_imports -o` writes it), by which the hub turns JSON into the method's
    /// messages and back. Empty for HTTPS.
    pub descriptor_set: Vec<u8>,
    pub operations: Vec<Operation>,
    pub timeout_ms: u32,
    pub rate_per_minute: u32,
    pub max_concurrency: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    /// The resource code of its catalogue entry.
    pub code: String,
    pub provider_code: String,
    pub spec: InterfaceSpec,
    pub enabled: bool,
    pub disabled_reason: String,
    pub registered_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Interface {
    pub fn operation(&self, name: &str) -> Option<&Operation> {
        self.spec.operations.iter().find(|o| o.name == name)
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_millis(u64::from(self.spec.timeout_ms))
    }
}

/// How the hub speaks to an upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// HTTP/1.1 with JSON bodies, over TLS.
    Https,
    /// gRPC (HTTP/2), over TLS.
    Grpcs,
}

/// Where an upstream is, as the hub dials it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    pub protocol: Protocol,
    pub host: String,
    pub port: u16,
    /// The path prefix every operation's path follows; empty or beginning with '/', without a
    /// trailing '/'.
    pub base: String,
}

impl Upstream {
    /// `https://host[:port][/base]` or `grpcs://host[:port]`. Only TLS: an upstream that
    /// answers for a department's system is verified, and plain http would let anyone on the path
    /// read and change the answers.
    pub fn parse(url: &str) -> std::result::Result<Upstream, String> {
        let (protocol, rest) = if let Some(rest) = url.strip_prefix("https://") {
            (Protocol::Https, rest)
        } else if let Some(rest) = url.strip_prefix("grpcs://") {
            (Protocol::Grpcs, rest)
        } else {
            return Err("must begin with https:// or grpcs:// (the hub reaches upstreams over TLS only)".to_string());
        };
        if rest.contains(['?', '#', '@', ' ', '\\']) {
            return Err("must be https://host[:port][/path], without query, fragment, user or spaces".into());
        }
        let (authority, base) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        if protocol == Protocol::Grpcs && !base.is_empty() {
            return Err("a grpcs:// upstream is host[:port] only: its methods name their own paths".into());
        }
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) if !host.ends_with(']') || authority.starts_with('[') => {
                let port: u16 = port
                    .parse()
                    .ok()
                    .filter(|p| *p > 0)
                    .ok_or_else(|| format!("port '{}' is not a port number", text::shorten(port, 16)))?;
                (host, port)
            }
            _ => (authority, 443),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() || host.len() > 253 {
            return Err("names no host".into());
        }
        if !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':'))
        {
            return Err(format!(
                "host '{}' is not a host name or address",
                text::shorten(host, 64)
            ));
        }
        Ok(Upstream {
            protocol,
            host: host.to_string(),
            port,
            base: base.to_string(),
        })
    }
}

fn check_operation(v: &mut Violations, at: &str, op: &Operation) {
    if op.name.is_empty()
        || op.name.len() > 64
        || !op
            .name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
    {
        v.add(
            format!("{at}.name"),
            format!(
                "'{}' must be 1 to 64 lower-case letters, digits, '-' or '_'",
                text::shorten(&op.name, 64)
            ),
        );
    }
    if !op.path.starts_with('/')
        || op.path.len() > 512
        || op.path.contains("..")
        || !op
            .path
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/-_.~".contains(c))
    {
        v.add(
            format!("{at}.path"),
            "must begin with '/' and hold only letters, digits and / - _ . ~ (no '..')",
        );
    }
    for (field, schema) in [
        ("request_schema", &op.request_schema),
        ("response_schema", &op.response_schema),
    ] {
        if schema.subject.trim().is_empty() {
            v.add(format!("{at}.{field}.subject"), "is required: a registered schema");
        }
        if schema.version == 0 {
            v.add(
                format!("{at}.{field}.version"),
                "is required: a version of the subject (1, 2, …)",
            );
        }
    }
}

/// Who may register an interface, on what, and what it must hold. Fills in the defaults of the
/// limits left at 0. Every problem of the specification is reported at once.
pub fn register(caller: &Caller, entry: &CatalogEntry, spec: &mut InterfaceSpec) -> Result<()> {
    match caller {
        Caller::Department(me) if *me == entry.provider_code => {}
        _ => {
            return Err(Error::PermissionDenied(format!(
                "only the provider of {} registers its interface",
                entry.resource_code
            )));
        }
    }
    if entry.content.share.exchange_kind != ExchangeKind::Interface {
        return Err(Error::FailedPrecondition(format!(
            "{} is shared as {}, not as an interface (接口): an interface belongs to an entry whose exchange kind is 接口",
            entry.resource_code,
            entry.content.share.exchange_kind.label()
        )));
    }
    if entry.state == EntryState::Withdrawn {
        return Err(Error::FailedPrecondition(format!(
            "{} is withdrawn (下线); it takes no interface",
            entry.resource_code
        )));
    }
    if spec.timeout_ms == 0 {
        spec.timeout_ms = DEFAULT_TIMEOUT_MS;
    }
    if spec.rate_per_minute == 0 {
        spec.rate_per_minute = DEFAULT_RATE_PER_MINUTE;
    }
    if spec.max_concurrency == 0 {
        spec.max_concurrency = DEFAULT_MAX_CONCURRENCY;
    }
    let mut v = Violations::new();
    let protocol = match Upstream::parse(&spec.upstream) {
        Ok(upstream) => Some(upstream.protocol),
        Err(e) => {
            v.add("spec.upstream", e);
            None
        }
    };
    match protocol {
        Some(Protocol::Grpcs) if spec.descriptor_set.is_empty() => v.add(
            "spec.descriptor_set",
            "is required for a grpcs:// upstream: its service's FileDescriptorSet (protoc --include_imports -o FILE)",
        ),
        Some(Protocol::Https) if !spec.descriptor_set.is_empty() => v.add(
            "spec.descriptor_set",
            "is for grpcs:// upstreams only; an https:// upstream speaks JSON",
        ),
        _ => {}
    }
    if spec.descriptor_set.len() > MAX_DESCRIPTOR_SET_BYTES {
        v.add(
            "spec.descriptor_set",
            format!(
                "is {} bytes; at most {MAX_DESCRIPTOR_SET_BYTES}",
                spec.descriptor_set.len()
            ),
        );
    }
    if spec.upstream_ca_pem.len() > MAX_CA_PEM_BYTES {
        v.add(
            "spec.upstream_ca_pem",
            format!("is larger than {MAX_CA_PEM_BYTES} bytes"),
        );
    } else if !spec.upstream_ca_pem.contains("-----BEGIN CERTIFICATE-----") {
        v.add(
            "spec.upstream_ca_pem",
            "is required: the PEM certificate of the CA that issued the upstream's certificate",
        );
    }
    if spec.timeout_ms > MAX_TIMEOUT_MS {
        v.add(
            "spec.timeout_ms",
            format!("is {}; at most {MAX_TIMEOUT_MS}", spec.timeout_ms),
        );
    }
    if spec.rate_per_minute > MAX_RATE_PER_MINUTE {
        v.add(
            "spec.rate_per_minute",
            format!("is {}; at most {MAX_RATE_PER_MINUTE}", spec.rate_per_minute),
        );
    }
    if spec.max_concurrency > MAX_CONCURRENCY {
        v.add(
            "spec.max_concurrency",
            format!("is {}; at most {MAX_CONCURRENCY}", spec.max_concurrency),
        );
    }
    if spec.operations.is_empty() {
        v.add("spec.operations", "at least one operation is required");
    }
    if spec.operations.len() > MAX_OPERATIONS {
        v.add(
            "spec.operations",
            format!("{} operations; at most {MAX_OPERATIONS}", spec.operations.len()),
        );
    }
    let mut seen = std::collections::HashSet::new();
    for (i, op) in spec.operations.iter().enumerate().take(MAX_OPERATIONS) {
        let at = format!("spec.operations[{i}]");
        check_operation(&mut v, &at, op);
        match (protocol, op.method) {
            (Some(Protocol::Grpcs), Method::Grpc) if grpc_method_name(&op.path).is_none() => v.add(
                format!("{at}.path"),
                "must name a gRPC method as /package.Service/Method",
            ),
            (Some(Protocol::Grpcs), Method::Grpc) => {}
            (Some(Protocol::Grpcs), _) => v.add(format!("{at}.method"), "must be GRPC: the upstream is grpcs://"),
            (Some(Protocol::Https), Method::Grpc) => v.add(
                format!("{at}.method"),
                "GRPC needs a grpcs:// upstream; an https:// upstream takes POST or GET",
            ),
            _ => {}
        }
        if !seen.insert(op.name.as_str()) {
            v.add(
                format!("{at}.name"),
                format!("'{}' appears twice", text::shorten(&op.name, 64)),
            );
        }
    }
    v.into_result()
}

/// The service and method a gRPC operation's path names: `/package.Service/Method`.
pub fn grpc_method_name(path: &str) -> Option<(&str, &str)> {
    let (service, method) = path.strip_prefix('/')?.split_once('/')?;
    let word = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    (service.split('.').all(word) && word(method)).then_some((service, method))
}

/// The provider takes its interface out of service, or the admin does.
pub fn disable(caller: &Caller, interface: &Interface, reason: &str) -> Result<()> {
    match caller {
        Caller::Admin(_) => {}
        Caller::Department(me) if *me == interface.provider_code => {}
        _ => {
            return Err(Error::PermissionDenied(format!(
                "only the provider of {} or the admin disables its interface",
                interface.code
            )));
        }
    }
    text::check(reason, true, 1000, true).map_err(|e| Error::invalid("reason", e))
}

/// The operation a call names, if the interface takes calls now.
pub fn callable<'a>(interface: &'a Interface, operation: &str) -> Result<&'a Operation> {
    if !interface.enabled {
        return Err(Error::FailedPrecondition(format!(
            "interface {} is disabled: {}",
            interface.code, interface.disabled_reason
        )));
    }
    interface.operation(operation).ok_or_else(|| {
        let names: Vec<&str> = interface.spec.operations.iter().map(|o| o.name.as_str()).collect();
        Error::invalid(
            "operation",
            format!(
                "'{}' is not an operation of {} (it has: {})",
                text::shorten(operation, 64),
                interface.code,
                names.join(", ")
            ),
        )
    })
}

/// Failures in a row that open the circuit.
pub const CIRCUIT_THRESHOLD: u32 = 5;
/// How long an open circuit refuses calls before it lets one through to try the upstream again.
pub const CIRCUIT_COOL_OFF: Duration = Duration::from_secs(10);

/// The circuit in front of one upstream: after [`CIRCUIT_THRESHOLD`] failures in a row it opens and
/// calls are refused at once (the caller is not made to wait for an upstream known to be down);
/// after [`CIRCUIT_COOL_OFF`] one call is let through, whose outcome closes or re-opens it.
#[derive(Debug, Clone, Default)]
pub struct Circuit {
    failures: u32,
    opened_at: Option<DateTime<Utc>>,
    trial_in_flight: bool,
}

/// Whether a call may go to the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Passage {
    Closed,
    /// The one call after the cool-off.
    Trial,
    /// Refused; the circuit may let a trial through after this long.
    Open {
        retry_after: Duration,
    },
}

impl Circuit {
    pub fn enter(&mut self, now: DateTime<Utc>) -> Passage {
        let Some(opened) = self.opened_at else {
            return Passage::Closed;
        };
        let elapsed = (now - opened).to_std().unwrap_or_default();
        if elapsed >= CIRCUIT_COOL_OFF && !self.trial_in_flight {
            self.trial_in_flight = true;
            return Passage::Trial;
        }
        Passage::Open {
            retry_after: CIRCUIT_COOL_OFF.saturating_sub(elapsed).max(Duration::from_secs(1)),
        }
    }

    /// The outcome of a call that was let through. A failure is the upstream's: no answer in
    /// time, a refused connection, a 5xx, or an answer outside its schema.
    pub fn record(&mut self, succeeded: bool, now: DateTime<Utc>) {
        self.trial_in_flight = false;
        if succeeded {
            self.failures = 0;
            self.opened_at = None;
        } else {
            self.failures = self.failures.saturating_add(1);
            if self.failures >= CIRCUIT_THRESHOLD || self.opened_at.is_some() {
                self.opened_at = Some(now);
            }
        }
    }

    pub fn is_open(&self) -> bool {
        self.opened_at.is_some()
    }
}

/// A department's calls to one interface: a bucket of `rate_per_minute` calls that refills
/// evenly, so that a burst up to the minute's allowance passes and a steady flood is held to it.
#[derive(Debug, Clone)]
pub struct RateBucket {
    tokens: f64,
    at: DateTime<Utc>,
}

impl RateBucket {
    pub fn new(rate_per_minute: u32, now: DateTime<Utc>) -> Self {
        Self {
            tokens: f64::from(rate_per_minute),
            at: now,
        }
    }

    /// Takes one call, or says how long until one is allowed.
    pub fn take(&mut self, rate_per_minute: u32, now: DateTime<Utc>) -> std::result::Result<(), Duration> {
        let capacity = f64::from(rate_per_minute.max(1));
        let per_second = capacity / 60.0;
        let elapsed = (now - self.at).to_std().unwrap_or_default().as_secs_f64();
        self.tokens = (self.tokens + elapsed * per_second).min(capacity);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / per_second))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalogue::tests::draft;

    fn op(name: &str) -> Operation {
        Operation {
            name: name.into(),
            method: Method::Post,
            path: "/verify".into(),
            request_schema: SchemaRef {
                subject: "id-check-request".into(),
                version: 1,
            },
            response_schema: SchemaRef {
                subject: "id-check-response".into(),
                version: 1,
            },
            idempotent: true,
        }
    }

    fn spec() -> InterfaceSpec {
        InterfaceSpec {
            upstream: "https://upstream.gov.example:8443/api/".into(),
            upstream_ca_pem: "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n".into(),
            descriptor_set: Vec::new(),
            operations: vec![op("verify")],
            timeout_ms: 0,
            rate_per_minute: 0,
            max_concurrency: 0,
        }
    }

    fn interface_entry() -> CatalogEntry {
        let mut content = draft().validate().expect("a valid draft");
        content.share.exchange_kind = ExchangeKind::Interface;
        CatalogEntry {
            resource_code: "102/000007".into(),
            provider_code: "11330100MB00010011".into(),
            provider_name: "局".into(),
            content,
            state: EntryState::Published,
            version: 1,
            state_reason: String::new(),
            published_at: None,
            created_at: Utc::now(),
            updated_at: Utc::now(),
        }
    }

    #[test]
    fn upstreams_are_https_with_a_host() {
        let u = Upstream::parse("https://upstream.gov.example:8443/api/").expect("parses");
        assert_eq!(
            (u.host.as_str(), u.port, u.base.as_str()),
            ("upstream.gov.example", 8443, "/api")
        );
        let u = Upstream::parse("https://127.0.0.1").expect("parses");
        assert_eq!((u.host.as_str(), u.port, u.base.as_str()), ("127.0.0.1", 443, ""));
        let u = Upstream::parse("https://[::1]:9000/x").expect("parses");
        assert_eq!((u.host.as_str(), u.port), ("::1", 9000));
        for bad in [
            "http://upstream:80",
            "https://",
            "https://a b",
            "https://host:0",
            "https://host:99999",
            "https://user@host",
            "https://host/x?y=1",
            "ftp://host",
        ] {
            assert!(Upstream::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_provider_registers_on_an_interface_entry_with_defaults_filled_in() {
        let entry = interface_entry();
        let provider = Caller::Department(entry.provider_code.clone());
        let mut s = spec();
        register(&provider, &entry, &mut s).expect("registers");
        assert_eq!(
            (s.timeout_ms, s.rate_per_minute, s.max_concurrency),
            (DEFAULT_TIMEOUT_MS, DEFAULT_RATE_PER_MINUTE, DEFAULT_MAX_CONCURRENCY)
        );

        let other = Caller::Department("11330100MB0001002X".into());
        assert!(matches!(
            register(&other, &entry, &mut spec()),
            Err(Error::PermissionDenied(_))
        ));
        assert!(matches!(
            register(&Caller::Admin("admin".into()), &entry, &mut spec()),
            Err(Error::PermissionDenied(_))
        ));
        let mut table = entry.clone();
        table.content.share.exchange_kind = ExchangeKind::Table;
        assert!(matches!(
            register(&provider, &table, &mut spec()),
            Err(Error::FailedPrecondition(_))
        ));
        let mut withdrawn = entry.clone();
        withdrawn.state = EntryState::Withdrawn;
        assert!(matches!(
            register(&provider, &withdrawn, &mut spec()),
            Err(Error::FailedPrecondition(_))
        ));
    }

    #[test]
    fn every_problem_of_a_specification_is_named_at_once() {
        let entry = interface_entry();
        let provider = Caller::Department(entry.provider_code.clone());
        let mut s = spec();
        s.upstream = "http://plain".into();
        s.upstream_ca_pem = String::new();
        s.timeout_ms = MAX_TIMEOUT_MS + 1;
        s.max_concurrency = MAX_CONCURRENCY + 1;
        let mut bad = op("Verify Now");
        bad.path = "/../etc".into();
        bad.request_schema.subject = String::new();
        bad.response_schema.version = 0;
        s.operations = vec![op("verify"), op("verify"), bad];
        let Err(Error::InvalidArgument(violations)) = register(&provider, &entry, &mut s) else {
            panic!("an invalid specification is refused");
        };
        let fields: Vec<&str> = violations.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "spec.upstream",
                "spec.upstream_ca_pem",
                "spec.timeout_ms",
                "spec.max_concurrency",
                "spec.operations[1].name",
                "spec.operations[2].name",
                "spec.operations[2].path",
                "spec.operations[2].request_schema.subject",
                "spec.operations[2].response_schema.version",
            ]
        );
    }

    #[test]
    fn a_grpc_upstream_takes_grpc_methods_named_in_its_descriptors() {
        let u = Upstream::parse("grpcs://ids.gov.example:9443").expect("parses");
        assert_eq!(
            (u.protocol, u.host.as_str(), u.port),
            (Protocol::Grpcs, "ids.gov.example", 9443)
        );
        assert!(
            Upstream::parse("grpcs://host/base").is_err(),
            "gRPC methods name their own paths"
        );
        assert_eq!(Upstream::parse("https://h").expect("parses").protocol, Protocol::Https);

        assert_eq!(
            grpc_method_name("/gov.identity.v1.IdentityCheck/Verify"),
            Some(("gov.identity.v1.IdentityCheck", "Verify"))
        );
        for bad in [
            "/Verify",
            "gov.X/Verify",
            "/gov..X/Verify",
            "/gov.X/",
            "/gov.X/Verify/again",
            "/a-b/C",
        ] {
            assert_eq!(grpc_method_name(bad), None, "{bad}");
        }

        let entry = interface_entry();
        let provider = Caller::Department(entry.provider_code.clone());
        let grpc_op = |path: &str| Operation {
            method: Method::Grpc,
            path: path.into(),
            ..op("verify")
        };
        let mut s = spec();
        s.upstream = "grpcs://ids.gov.example:9443".into();
        s.descriptor_set = vec![1, 2, 3];
        s.operations = vec![grpc_op("/gov.identity.v1.IdentityCheck/Verify")];
        register(&provider, &entry, &mut s).expect("a gRPC interface registers");

        s.descriptor_set.clear();
        s.operations = vec![op("verify"), grpc_op("/verify")];
        let Err(Error::InvalidArgument(violations)) = register(&provider, &entry, &mut s) else {
            panic!("refused");
        };
        let fields: Vec<&str> = violations.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "spec.descriptor_set",
                "spec.operations[0].method",
                "spec.operations[1].path",
                "spec.operations[1].name",
            ]
        );

        let mut s = spec();
        s.descriptor_set = vec![1];
        s.operations = vec![grpc_op("/a.B/C")];
        let Err(Error::InvalidArgument(violations)) = register(&provider, &entry, &mut s) else {
            panic!("refused");
        };
        let fields: Vec<&str> = violations.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(fields, ["spec.descriptor_set", "spec.operations[0].method"]);
    }

    #[test]
    fn a_disabled_interface_or_an_unknown_operation_takes_no_call() {
        let now = Utc::now();
        let mut interface = Interface {
            code: "x".into(),
            provider_code: "p".into(),
            spec: spec(),
            enabled: true,
            disabled_reason: String::new(),
            registered_at: now,
            updated_at: now,
        };
        assert_eq!(callable(&interface, "verify").expect("callable").name, "verify");
        assert!(matches!(callable(&interface, "delete"), Err(Error::InvalidArgument(_))));
        interface.enabled = false;
        interface.disabled_reason = "upstream migrating".into();
        let Err(Error::FailedPrecondition(why)) = callable(&interface, "verify") else {
            panic!("a disabled interface refuses");
        };
        assert!(why.contains("upstream migrating"));
        assert!(disable(&Caller::Department("p".into()), &interface, "maintenance").is_ok());
        assert!(disable(&Caller::Admin("a".into()), &interface, "maintenance").is_ok());
        assert!(matches!(
            disable(&Caller::Department("q".into()), &interface, "x"),
            Err(Error::PermissionDenied(_))
        ));
        assert!(matches!(
            disable(&Caller::Department("p".into()), &interface, " "),
            Err(Error::InvalidArgument(_))
        ));
    }

    #[test]
    fn the_circuit_opens_after_failures_in_a_row_and_a_trial_closes_it() {
        let t0 = Utc::now();
        let mut c = Circuit::default();
        for _ in 0..CIRCUIT_THRESHOLD - 1 {
            assert_eq!(c.enter(t0), Passage::Closed);
            c.record(false, t0);
        }
        // A success in between starts the count again.
        c.record(true, t0);
        for _ in 0..CIRCUIT_THRESHOLD {
            assert_eq!(c.enter(t0), Passage::Closed);
            c.record(false, t0);
        }
        assert!(c.is_open());
        assert!(matches!(c.enter(t0), Passage::Open { retry_after } if retry_after == CIRCUIT_COOL_OFF));
        let later = t0 + chrono::Duration::from_std(CIRCUIT_COOL_OFF).expect("duration");
        assert_eq!(c.enter(later), Passage::Trial);
        // One trial at a time.
        assert!(matches!(c.enter(later), Passage::Open { .. }));
        c.record(false, later);
        assert!(
            matches!(c.enter(later), Passage::Open { .. }),
            "a failed trial re-opens it"
        );
        let again = later + chrono::Duration::from_std(CIRCUIT_COOL_OFF).expect("duration");
        assert_eq!(c.enter(again), Passage::Trial);
        c.record(true, again);
        assert_eq!(c.enter(again), Passage::Closed);
    }

    #[test]
    fn the_rate_lets_a_minutes_burst_through_then_holds_to_the_rate() {
        let t0 = Utc::now();
        let mut b = RateBucket::new(60, t0);
        for _ in 0..60 {
            assert!(b.take(60, t0).is_ok());
        }
        let wait = b.take(60, t0).expect_err("the 61st call in the same instant waits");
        assert!((wait.as_secs_f64() - 1.0).abs() < 1e-6, "{wait:?}");
        let t1 = t0 + chrono::Duration::milliseconds(1000);
        assert!(b.take(60, t1).is_ok());
        assert!(b.take(60, t1).is_err());
    }

    #[test]
    fn methods_parse() {
        assert_eq!(Method::parse("get"), Some(Method::Get));
        assert_eq!(Method::parse(""), Some(Method::Post));
        assert_eq!(Method::parse("DELETE"), None);
    }
}
