//! `xinqiao interface` and `xinqiao call`: service interfaces (接口共享). A provider registers the
//! live service behind one of its 接口 catalogue entries; a using department calls its operations
//! through the hub, under the same sharing rules as a read of records.

use std::io::Read as _;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use serde::Deserialize;
use serde_json::{Value, json};
use tonic::transport::Channel;
use xinqiao_proto::v1 as pb;
use xinqiao_proto::v1::interface_service_client::InterfaceServiceClient;
use xinqiao_proto::v1::schema_service_client::SchemaServiceClient;

use crate::client::{ClientArgs, explain};
use crate::exchange::explain_read;
use crate::{CliResult, out, output};

#[derive(Args)]
pub struct InterfaceArgs {
    #[command(flatten)]
    client: ClientArgs,
    #[command(subcommand)]
    command: InterfaceCommand,
}

#[derive(Subcommand)]
enum InterfaceCommand {
    /// Register (or replace, which also re-enables) the interface of one of your catalogue entries
    /// whose exchange kind is 接口 (provider).
    Register(RegisterArgs),
    /// Interfaces you may see: those of published entries, and your own.
    List {
        /// Only this provider's interfaces (its 统一社会信用代码).
        #[arg(long, value_name = "CODE")]
        provider: Option<String>,
        /// At most this many interfaces.
        #[arg(long, default_value_t = 200)]
        limit: usize,
    },
    /// Show an interface: its upstream, limits and operations.
    Show {
        /// The resource code of its catalogue entry.
        code: String,
    },
    /// Take an interface out of service (provider or admin): calls are refused with the reason
    /// until it is registered again.
    Disable {
        code: String,
        #[arg(long)]
        reason: String,
    },
}

#[derive(Args)]
struct RegisterArgs {
    /// The resource code of the catalogue entry (exchange kind 接口) the interface serves.
    code: String,
    /// A specification file, TOML (or JSON when it ends in .json), with the keys upstream,
    /// upstream_ca and descriptors (paths, relative to the file), timeout, rate, concurrency and
    /// [[operations]] (name, method, path, request_schema, response_schema, idempotent). Flags
    /// given beside it override its values; --operation replaces its operations.
    #[arg(long, short = 'f', value_name = "FILE")]
    file: Option<PathBuf>,
    /// The provider's service: https://host[:port][/base] (JSON), or grpcs://host[:port] (gRPC).
    #[arg(long, value_name = "URL")]
    upstream: Option<String>,
    /// For a grpcs:// upstream: its service's descriptors, a .proto file (compiled here, its
    /// imports looked up beside it) or a FileDescriptorSet (`protoc --include_imports -o FILE`).
    #[arg(long, value_name = "FILE")]
    descriptors: Option<PathBuf>,
    /// PEM certificate(s) of the CA that issued the upstream's certificate; the hub verifies the
    /// upstream against it.
    #[arg(long, value_name = "FILE")]
    upstream_ca: Option<PathBuf>,
    /// An operation, NAME=METHOD:PATH:REQUEST_SCHEMA:RESPONSE_SCHEMA[:idempotent], e.g.
    /// verify=POST:/verify:id-check-request@1:id-check-response@1:idempotent. METHOD is POST (the
    /// request is the body) or GET (its values become the query), or GRPC with the path
    /// /package.Service/Method; a schema is SUBJECT@VERSION, or SUBJECT for its latest version,
    /// pinned now. Repeat for several operations.
    #[arg(long = "operation", value_name = "SPEC", value_parser = parse_operation)]
    operations: Vec<OperationSpec>,
    /// How long the hub waits for the upstream, per attempt: 5s, 1500ms [default: 5s; at most 60s].
    #[arg(long, value_name = "DURATION", value_parser = parse_timeout)]
    timeout: Option<u32>,
    /// Calls one using department may make a minute [default: 600].
    #[arg(long, value_name = "CALLS")]
    rate: Option<u32>,
    /// Calls in flight to the upstream at once, across every caller [default: 16].
    #[arg(long, value_name = "N")]
    concurrency: Option<u32>,
}

/// Call an operation of a service interface through the hub (接口共享) and print its answer.
#[derive(Args)]
pub struct CallArgs {
    #[command(flatten)]
    client: ClientArgs,
    /// The interface: the resource code of its catalogue entry.
    code: String,
    /// The operation (`xinqiao interface show CODE` lists them).
    operation: String,
    /// The request, a JSON document: given here, @FILE to read it from a file, or @- from
    /// standard input.
    #[arg(long, short = 'd', value_name = "JSON|@FILE", default_value = "{}")]
    data: String,
    /// Why you call it (用途). Required for another department's unconditionally shared
    /// (无条件共享) interface; recorded in the audit trail.
    #[arg(long, value_name = "TEXT")]
    purpose: Option<String>,
    /// The grant to call under (有条件共享), needed only when you hold several active grants for
    /// the entry (`xinqiao access grants --active` lists them).
    #[arg(long = "grant", value_name = "ID")]
    grant: Option<String>,
}

/// A schema an operation names; version 0 until the latest is looked up.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SchemaArg {
    subject: String,
    version: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct OperationSpec {
    name: String,
    method: String,
    path: String,
    request: SchemaArg,
    response: SchemaArg,
    idempotent: bool,
}

/// `SUBJECT@VERSION`, or `SUBJECT` for the latest version.
fn parse_schema(text: &str) -> Result<SchemaArg, String> {
    let text = text.trim();
    let (subject, version) = match text.rsplit_once('@') {
        Some((subject, version)) => {
            let version = version
                .trim()
                .parse::<u32>()
                .ok()
                .filter(|v| *v > 0)
                .ok_or_else(|| format!("'{text}': the version after '@' must be a number from 1"))?;
            (subject.trim(), version)
        }
        None => (text, 0),
    };
    if subject.is_empty() {
        return Err(format!("'{text}' names no schema subject"));
    }
    Ok(SchemaArg {
        subject: subject.to_string(),
        version,
    })
}

fn parse_method(text: &str) -> Result<String, String> {
    match text.trim().to_ascii_uppercase().as_str() {
        m @ ("POST" | "GET" | "GRPC") => Ok(m.to_string()),
        _ => Err(format!("method '{}' is not POST, GET or GRPC", text.trim())),
    }
}

/// `NAME=METHOD:PATH:REQUEST_SCHEMA:RESPONSE_SCHEMA[:idempotent]`.
fn parse_operation(text: &str) -> Result<OperationSpec, String> {
    let form = "NAME=METHOD:PATH:REQUEST_SCHEMA:RESPONSE_SCHEMA[:idempotent], e.g. verify=POST:/verify:id-check-request@1:id-check-response@1";
    let (name, rest) = text.split_once('=').ok_or_else(|| format!("'{text}' is not {form}"))?;
    let mut parts: Vec<&str> = rest.split(':').collect();
    let idempotent = parts.last().is_some_and(|p| p.trim() == "idempotent");
    if idempotent {
        parts.pop();
    }
    if parts.len() != 4 || name.trim().is_empty() {
        return Err(format!("'{text}' is not {form}"));
    }
    Ok(OperationSpec {
        name: name.trim().to_string(),
        method: parse_method(parts[0])?,
        path: parts[1].trim().to_string(),
        request: parse_schema(parts[2])?,
        response: parse_schema(parts[3])?,
        idempotent,
    })
}

/// `5s`, `1500ms`, `1.5s` or `1m`, in milliseconds.
fn parse_timeout(text: &str) -> Result<u32, String> {
    let text = text.trim();
    let (number, unit_ms) = if let Some(n) = text.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1000.0)
    } else if let Some(n) = text.strip_suffix('m') {
        (n, 60_000.0)
    } else {
        return Err(format!("'{text}' needs a unit: 5s, 1500ms or 1m"));
    };
    let ms = number
        .trim()
        .parse::<f64>()
        .ok()
        .map(|n| (n * unit_ms).round())
        .filter(|ms| (1.0..=f64::from(u32::MAX)).contains(ms))
        .ok_or_else(|| format!("'{text}' is not a duration such as 5s, 1500ms or 1m"))?;
    Ok(ms as u32)
}

/// A specification file: the flags' values, under the same names.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SpecFile {
    upstream: Option<String>,
    upstream_ca: Option<PathBuf>,
    descriptors: Option<PathBuf>,
    timeout: Option<String>,
    rate: Option<u32>,
    concurrency: Option<u32>,
    #[serde(default)]
    operations: Vec<OperationFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OperationFile {
    name: String,
    #[serde(default = "post")]
    method: String,
    path: String,
    request_schema: String,
    response_schema: String,
    #[serde(default)]
    idempotent: bool,
}

fn post() -> String {
    "POST".into()
}

impl OperationFile {
    fn spec(self, at: usize) -> CliResult<OperationSpec> {
        let context = |e: String| format!("operations[{at}] ({}): {e}", self.name);
        Ok(OperationSpec {
            method: parse_method(&self.method).map_err(context)?,
            request: parse_schema(&self.request_schema).map_err(context)?,
            response: parse_schema(&self.response_schema).map_err(context)?,
            name: self.name.trim().to_string(),
            path: self.path.trim().to_string(),
            idempotent: self.idempotent,
        })
    }
}

/// Reads a specification file; a relative `upstream_ca` is made relative to the file's folder.
fn read_spec_file(path: &Path) -> CliResult<SpecFile> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let parsed: Result<SpecFile, String> = if path.extension().is_some_and(|e| e == "json") {
        serde_json::from_str(&text).map_err(|e| e.to_string())
    } else {
        toml::from_str(&text).map_err(|e| e.to_string())
    };
    let mut file = parsed.map_err(|e| format!("{}: {e}", path.display()))?;
    let beside = |p: &mut Option<PathBuf>| {
        if let Some(relative) = p.as_ref().filter(|p| p.is_relative()) {
            *p = Some(path.parent().unwrap_or(Path::new(".")).join(relative));
        }
    };
    beside(&mut file.upstream_ca);
    beside(&mut file.descriptors);
    Ok(file)
}

/// The registration the flags and the file describe, each schema still as named.
struct Registration {
    upstream: String,
    upstream_ca: PathBuf,
    descriptors: Option<PathBuf>,
    operations: Vec<OperationSpec>,
    timeout_ms: u32,
    rate_per_minute: u32,
    max_concurrency: u32,
}

fn registration(args: RegisterArgs) -> CliResult<Registration> {
    let file = match &args.file {
        Some(path) => read_spec_file(path)?,
        None => SpecFile::default(),
    };
    let file_timeout = file
        .timeout
        .as_deref()
        .map(parse_timeout)
        .transpose()
        .map_err(|e| format!("timeout: {e}"))?;
    let operations = if args.operations.is_empty() {
        file.operations
            .into_iter()
            .enumerate()
            .map(|(i, op)| op.spec(i))
            .collect::<CliResult<Vec<_>>>()?
    } else {
        args.operations
    };
    if operations.is_empty() {
        return Err(
            "name at least one operation: --operation NAME=METHOD:PATH:REQUEST_SCHEMA:RESPONSE_SCHEMA[:idempotent], or [[operations]] in --file".into(),
        );
    }
    Ok(Registration {
        upstream: args
            .upstream
            .or(file.upstream)
            .ok_or("say where the service is: --upstream https://host[:port][/base] (or upstream in --file)")?,
        upstream_ca: args
            .upstream_ca
            .or(file.upstream_ca)
            .ok_or("say which CA issued the upstream's certificate: --upstream-ca FILE (or upstream_ca in --file)")?,
        descriptors: args.descriptors.or(file.descriptors),
        operations,
        timeout_ms: args.timeout.or(file_timeout).unwrap_or(0),
        rate_per_minute: args.rate.or(file.rate).unwrap_or(0),
        max_concurrency: args.concurrency.or(file.concurrency).unwrap_or(0),
    })
}

/// A schema reference with its version: a subject named without one is pinned to its latest now.
async fn pinned(
    schemas: &mut SchemaServiceClient<Channel>,
    schema: &SchemaArg,
    operation: &str,
) -> CliResult<pb::SchemaReference> {
    let version = if schema.version > 0 {
        schema.version
    } else {
        let request = pb::GetSchemaRequest {
            subject: schema.subject.clone(),
            version: 0,
            include_deleted: false,
        };
        let latest = schemas
            .get_schema(request)
            .await
            .map_err(|s| format!("operation {operation}: schema {}: {}", schema.subject, explain(s)))?;
        latest.into_inner().version
    };
    Ok(pb::SchemaReference {
        subject: schema.subject.clone(),
        version,
    })
}

async fn spec_of(channel: Channel, r: Registration) -> CliResult<pb::InterfaceSpec> {
    let upstream_ca_pem =
        std::fs::read_to_string(&r.upstream_ca).map_err(|e| format!("cannot read {}: {e}", r.upstream_ca.display()))?;
    let descriptor_set = match &r.descriptors {
        Some(path) => descriptor_set(path)?,
        None => Vec::new(),
    };
    let mut schemas = SchemaServiceClient::new(channel);
    let mut operations = Vec::with_capacity(r.operations.len());
    for op in r.operations {
        operations.push(pb::InterfaceOperation {
            request_schema: Some(pinned(&mut schemas, &op.request, &op.name).await?),
            response_schema: Some(pinned(&mut schemas, &op.response, &op.name).await?),
            name: op.name,
            method: op.method,
            path: op.path,
            idempotent: op.idempotent,
        });
    }
    Ok(pb::InterfaceSpec {
        upstream: r.upstream,
        upstream_ca_pem,
        operations,
        timeout_ms: r.timeout_ms,
        rate_per_minute: r.rate_per_minute,
        max_concurrency: r.max_concurrency,
        descriptor_set,
    })
}

/// A gRPC upstream's descriptors as the hub takes them: a FileDescriptorSet, read as it is, or
/// compiled from a .proto file with its imports (looked up beside it).
fn descriptor_set(path: &Path) -> CliResult<Vec<u8>> {
    if path.extension().is_none_or(|e| e != "proto") {
        return std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()));
    }
    let folder = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let file = path
        .file_name()
        .ok_or_else(|| format!("{} names no file", path.display()))?;
    let compiled = protox::Compiler::new([folder])
        .and_then(|mut c| {
            c.include_imports(true);
            c.open_file(file)?;
            Ok(c.encode_file_descriptor_set())
        })
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(compiled)
}

fn schema_text(s: &Option<pb::SchemaReference>) -> String {
    s.as_ref()
        .map(|s| format!("{}@{}", s.subject, s.version))
        .unwrap_or_default()
}

fn status_text(i: &pb::Interface) -> String {
    if i.enabled {
        "enabled".into()
    } else {
        format!("disabled: {}", i.disabled_reason)
    }
}

pub fn interface_json(i: &pb::Interface) -> Value {
    let spec = i.spec.clone().unwrap_or_default();
    json!({
        "code": i.code, "provider_code": i.provider_code, "enabled": i.enabled,
        "disabled_reason": i.disabled_reason,
        "registered_at": output::time(&i.registered_at), "updated_at": output::time(&i.updated_at),
        "upstream": spec.upstream, "upstream_ca_pem": spec.upstream_ca_pem,
        "timeout_ms": spec.timeout_ms, "rate_per_minute": spec.rate_per_minute,
        "max_concurrency": spec.max_concurrency,
        "operations": spec.operations.iter().map(|o| json!({
            "name": o.name, "method": o.method, "path": o.path,
            "request_schema": schema_text(&o.request_schema),
            "response_schema": schema_text(&o.response_schema),
            "idempotent": o.idempotent,
        })).collect::<Vec<_>>(),
    })
}

/// One interface, as a person reads it.
pub fn print_interface(i: &pb::Interface) {
    let spec = i.spec.clone().unwrap_or_default();
    let certificates = spec.upstream_ca_pem.matches("-----BEGIN CERTIFICATE-----").count();
    out!("interface {}  {}", i.code, status_text(i));
    out!("  provider:     {}", i.provider_code);
    out!("  upstream:     {}", spec.upstream);
    out!(
        "  upstream CA:  {certificates} certificate{} (PEM)",
        if certificates == 1 { "" } else { "s" }
    );
    out!(
        "  limits:       {} ms per attempt, {} calls a minute per department, {} in flight",
        spec.timeout_ms,
        spec.rate_per_minute,
        spec.max_concurrency
    );
    out!(
        "  registered:   {}   updated: {}",
        output::time(&i.registered_at),
        output::time(&i.updated_at)
    );
    out!("  operations:");
    let rows: Vec<Vec<String>> = spec
        .operations
        .iter()
        .map(|o| {
            vec![
                format!("  {}", o.name),
                o.method.clone(),
                o.path.clone(),
                schema_text(&o.request_schema),
                schema_text(&o.response_schema),
                if o.idempotent { "yes" } else { "" }.into(),
            ]
        })
        .collect();
    output::table(
        &["  name", "method", "path", "request", "response", "idempotent"],
        &rows,
    );
}

fn interfaces(as_json: bool, list: &[pb::Interface]) {
    output::emit(as_json, Value::Array(list.iter().map(interface_json).collect()), || {
        let rows: Vec<Vec<String>> = list
            .iter()
            .map(|i| {
                let spec = i.spec.clone().unwrap_or_default();
                let names: Vec<&str> = spec.operations.iter().map(|o| o.name.as_str()).collect();
                vec![
                    i.code.clone(),
                    i.provider_code.clone(),
                    spec.upstream.clone(),
                    names.join(","),
                    status_text(i),
                    output::time(&i.updated_at),
                ]
            })
            .collect();
        output::table(
            &["interface", "provider", "upstream", "operations", "status", "updated"],
            &rows,
        );
    });
}

pub async fn run(args: InterfaceArgs) -> CliResult {
    let json = args.client.json;
    let channel = args.client.channel().await?;
    let mut client = InterfaceServiceClient::new(channel.clone());
    let show = |i: &pb::Interface| output::emit(json, interface_json(i), || print_interface(i));
    match args.command {
        InterfaceCommand::Register(register) => {
            let code = register.code.clone();
            let spec = spec_of(channel, registration(register)?).await?;
            let request = pb::RegisterInterfaceRequest { code, spec: Some(spec) };
            show(&client.register_interface(request).await.map_err(explain)?.into_inner());
        }
        InterfaceCommand::List { provider, limit } => {
            let mut request = pb::ListInterfacesRequest {
                provider_code: provider.unwrap_or_default(),
                page_size: limit.clamp(1, 1000) as u32,
                page_token: String::new(),
                hub: String::new(),
            };
            let mut found = Vec::new();
            loop {
                let page = client
                    .list_interfaces(request.clone())
                    .await
                    .map_err(explain)?
                    .into_inner();
                found.extend(page.interfaces);
                if page.next_page_token.is_empty() || found.len() >= limit {
                    break;
                }
                request.page_token = page.next_page_token;
            }
            found.truncate(limit);
            interfaces(json, &found);
        }
        InterfaceCommand::Show { code } => {
            let request = pb::GetInterfaceRequest { code };
            show(&client.get_interface(request).await.map_err(explain)?.into_inner());
        }
        InterfaceCommand::Disable { code, reason } => {
            let request = pb::DisableInterfaceRequest { code, reason };
            show(&client.disable_interface(request).await.map_err(explain)?.into_inner());
        }
    }
    Ok(())
}

/// The request `--data` names: the text itself, or a file's (`@-`: standard input).
fn request_text(data: &str) -> CliResult<String> {
    match data.strip_prefix('@') {
        Some("-") => {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .map_err(|e| format!("cannot read the request from standard input: {e}"))?;
            Ok(text)
        }
        Some(path) => std::fs::read_to_string(path).map_err(|e| format!("cannot read {path}: {e}")),
        None => Ok(data.to_string()),
    }
}

/// `xinqiao call`: the answer on standard output as indented JSON (with --json, inside an object
/// that also says what the upstream answered and how long it took).
pub async fn call(args: CallArgs) -> CliResult {
    let request = pb::InvokeRequest {
        code: args.code,
        operation: args.operation,
        request_json: request_text(&args.data)?,
        purpose: args.purpose.unwrap_or_default().trim().to_string(),
        grant_id: args.grant.unwrap_or_default().trim().to_string(),
    };
    let mut client = InterfaceServiceClient::new(args.client.channel().await?);
    let answer = client.invoke(request).await.map_err(explain_read)?.into_inner();
    let response: Value = serde_json::from_str(&answer.response_json)
        .map_err(|e| format!("the hub passed on an answer that is not JSON ({e})"))?;
    let printed = if args.client.json {
        json!({"response": response, "upstream_status": answer.upstream_status, "upstream_ms": answer.upstream_ms})
    } else {
        response
    };
    out!("{}", serde_json::to_string_pretty(&printed).unwrap_or_default());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_operation_flag_names_method_path_and_schemas() {
        let op = parse_operation("verify=post:/verify:id-check-request@1:id-check-response@2:idempotent")
            .expect("an operation");
        assert_eq!(
            op,
            OperationSpec {
                name: "verify".into(),
                method: "POST".into(),
                path: "/verify".into(),
                request: SchemaArg {
                    subject: "id-check-request".into(),
                    version: 1
                },
                response: SchemaArg {
                    subject: "id-check-response".into(),
                    version: 2
                },
                idempotent: true,
            }
        );
        let latest = parse_operation("status=GET:/status:empty:status").expect("an operation");
        assert_eq!((latest.request.version, latest.idempotent), (0, false));
        for bad in [
            "verify",
            "verify=POST:/verify:req@1",
            "verify=DELETE:/verify:req@1:resp@1",
            "verify=POST:/verify:req@0:resp@1",
            "verify=POST:/verify:req@x:resp@1",
            "=POST:/verify:req@1:resp@1",
            "verify=POST:/verify:@1:resp@1",
            "verify=POST:/verify:req@1:resp@1:sometimes",
        ] {
            assert!(parse_operation(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_timeout_has_a_unit() {
        assert_eq!(parse_timeout("5s"), Ok(5_000));
        assert_eq!(parse_timeout("1500ms"), Ok(1_500));
        assert_eq!(parse_timeout("1.5s"), Ok(1_500));
        assert_eq!(parse_timeout("1m"), Ok(60_000));
        for bad in ["5", "0s", "-1s", "fast", "s"] {
            assert!(parse_timeout(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_spec_file_is_toml_or_json_and_flags_override_it() {
        let dir = tempfile::tempdir().expect("a directory");
        let toml_file = dir.path().join("interface.toml");
        std::fs::write(
            &toml_file,
            r#"
upstream = "https://idcheck.example:8443"
upstream_ca = "upstream-ca.crt"
timeout = "3s"
rate = 120

[[operations]]
name = "verify"
path = "/verify"
request_schema = "id-check-request@1"
response_schema = "id-check-response@1"
idempotent = true

[[operations]]
name = "status"
method = "get"
path = "/status"
request_schema = "empty-request"
response_schema = "status-response@1"
"#,
        )
        .expect("write");
        let args = |file: &Path, timeout: Option<u32>| RegisterArgs {
            code: "000000/000000".into(),
            file: Some(file.to_path_buf()),
            upstream: None,
            descriptors: None,
            upstream_ca: None,
            operations: Vec::new(),
            timeout,
            rate: None,
            concurrency: None,
        };
        let r = registration(args(&toml_file, Some(800))).expect("a registration");
        assert_eq!(r.upstream, "https://idcheck.example:8443");
        assert_eq!(r.upstream_ca, dir.path().join("upstream-ca.crt"));
        assert_eq!((r.timeout_ms, r.rate_per_minute, r.max_concurrency), (800, 120, 0));
        assert_eq!(r.operations.len(), 2);
        assert_eq!(
            (r.operations[0].method.as_str(), r.operations[0].idempotent),
            ("POST", true)
        );
        assert_eq!(r.operations[1].method, "GET");
        assert_eq!(r.operations[1].request.version, 0);

        let json_file = dir.path().join("interface.json");
        std::fs::write(
            &json_file,
            r#"{"upstream": "https://idcheck.example", "upstream_ca": "/etc/ca.pem", "operations": [
                {"name": "verify", "path": "/verify", "request_schema": "a@1", "response_schema": "b@1"}]}"#,
        )
        .expect("write");
        let r = registration(args(&json_file, None)).expect("a registration");
        assert_eq!(r.upstream_ca, PathBuf::from("/etc/ca.pem"));
        assert_eq!(r.timeout_ms, 0);

        std::fs::write(&json_file, r#"{"upstream": "https://x", "retries": 3}"#).expect("write");
        let err = registration(args(&json_file, None))
            .err()
            .expect("an unknown key is refused");
        assert!(err.contains("retries"), "{err}");
    }

    #[test]
    fn descriptors_are_a_set_as_read_or_a_proto_file_compiled() {
        use prost::Message as _;
        let proto = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proto/xinqiao/sample/v1/identity_check.proto");
        let compiled = descriptor_set(&proto).expect("compiles");
        let set = prost_types::FileDescriptorSet::decode(compiled.as_slice()).expect("a FileDescriptorSet");
        let file = set
            .file
            .iter()
            .find(|f| f.package() == "xinqiao.sample.v1")
            .expect("the file");
        assert_eq!(file.service[0].name(), "IdentityCheck");

        let dir = tempfile::tempdir().expect("tempdir");
        let bin = dir.path().join("svc.pb");
        std::fs::write(&bin, &compiled).expect("write");
        assert_eq!(descriptor_set(&bin).expect("reads"), compiled, "a set is sent as it is");

        let broken = dir.path().join("broken.proto");
        std::fs::write(&broken, "syntax = \"proto3\"; message {").expect("write");
        let err = descriptor_set(&broken).expect_err("does not compile");
        assert!(err.to_string().contains("broken.proto"), "{err}");
        assert!(descriptor_set(&dir.path().join("missing.pb")).is_err());
    }
}
