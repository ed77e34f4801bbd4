//! A provider's upstream service for the demo, the benchmark and the tests: 身份核验 (identity
//! verification), as a public security bureau's system would offer it: `POST /verify` with
//! `{"id_number", "name"}` answers whether they match, with the person's registered mobile
//! number; `GET /status` answers `{"status": "ok"}`. HTTPS with its own certificate, optionally
//! requiring a client certificate (an upstream that lets only the hub in). Started with
//! [`SampleUpstream::start_grpc`] it is the same service over gRPC instead
//! (`xinqiao.sample.v1.IdentityCheck/Verify`, `proto/xinqiao/sample/v1`), with the same answers.
//!
//! The tests turn it into a bad upstream on demand: slow, failing, garbled, outside its schema,
//! oversized or silent.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use prost::Message as _;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use xinqiao_domain::interface::Protocol;
use xinqiao_proto::sample::{VerifyRequest, VerifyResponse};

use crate::tls::{self, TlsError};

/// How the upstream answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Behaviour {
    /// As a working 身份核验 service.
    Serve,
    /// As `Serve`, after a pause.
    Slow(Duration),
    /// The given HTTP status and body.
    Status(u16, String),
    /// 200 with a body that is not JSON.
    Garbled,
    /// 200 with JSON outside the response schema.
    OffSchema,
    /// 200 with this many bytes of JSON.
    Huge(usize),
    /// Never answers (until the connection is dropped).
    Silent,
    /// Closes the connection without an answer.
    Hang,
}

/// The JSON Schemas of the verify operation, for registering in the schema registry.
pub const VERIFY_REQUEST_SCHEMA: &str = r#"{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "title": "身份核验请求",
  "type": "object",
  "properties": {
    "id_number": {"type": "string", "format": "cn-resident-id"},
    "name": {"type": "string", "minLength": 1, "maxLength": 50}
  },
  "required": ["id_number", "name"],
  "additionalProperties": false
}"#;

pub const VERIFY_RESPONSE_SCHEMA: &str = r#"{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "title": "身份核验结果",
  "type": "object",
  "properties": {
    "id_number": {"type": "string"},
    "name": {"type": "string"},
    "match": {"type": "boolean"},
    "mobile": {"type": "string", "format": "cn-mobile"}
  },
  "required": ["id_number", "match"]
}"#;

/// A running sample upstream.
pub struct SampleUpstream {
    pub addr: SocketAddr,
    protocol: Protocol,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
    /// Ends every open connection when the upstream is dropped: gone means gone.
    stop: tokio::sync::watch::Sender<bool>,
}

struct State {
    behaviour: Mutex<Behaviour>,
    requests: AtomicU64,
    /// The `x-xinqiao-client` header of the last request.
    last_client: Mutex<String>,
}

impl SampleUpstream {
    /// Serves on 127.0.0.1 (a port of the system's choosing) with `cert`/`key`; with `client_ca`,
    /// only clients with a certificate of that CA get in.
    pub async fn start(cert: &Path, key: &Path, client_ca: Option<&Path>) -> Result<SampleUpstream, TlsError> {
        Self::start_on(
            "127.0.0.1:0".parse().map_err(|_| TlsError::Config("address".into()))?,
            cert,
            key,
            client_ca,
        )
        .await
    }

    /// As [`SampleUpstream::start`], speaking gRPC over HTTP/2.
    pub async fn start_grpc(cert: &Path, key: &Path, client_ca: Option<&Path>) -> Result<SampleUpstream, TlsError> {
        let addr = "127.0.0.1:0".parse().map_err(|_| TlsError::Config("address".into()))?;
        Self::serve(addr, cert, key, client_ca, Protocol::Grpcs).await
    }

    pub async fn start_on(
        addr: SocketAddr,
        cert: &Path,
        key: &Path,
        client_ca: Option<&Path>,
    ) -> Result<SampleUpstream, TlsError> {
        Self::serve(addr, cert, key, client_ca, Protocol::Https).await
    }

    async fn serve(
        addr: SocketAddr,
        cert: &Path,
        key: &Path,
        client_ca: Option<&Path>,
        protocol: Protocol,
    ) -> Result<SampleUpstream, TlsError> {
        let mut config = tls::upstream_server_config(cert, key, client_ca)?;
        if protocol == Protocol::Grpcs {
            config.alpn_protocols = vec![b"h2".to_vec()];
        }
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| TlsError::Config(format!("listening on {addr}: {e}")))?;
        let addr = listener.local_addr().map_err(|e| TlsError::Config(e.to_string()))?;
        let state = Arc::new(State {
            behaviour: Mutex::new(Behaviour::Serve),
            requests: AtomicU64::new(0),
            last_client: Mutex::new(String::new()),
        });
        let shared = state.clone();
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let _ = tcp.set_nodelay(true);
                let (acceptor, state, mut stopped) = (acceptor.clone(), shared.clone(), stopped.clone());
                tokio::spawn(async move {
                    let Ok(stream) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let io = TokioIo::new(stream);
                    match protocol {
                        Protocol::Https => {
                            let service = service_fn(move |request| answer(state.clone(), request));
                            let connection = hyper::server::conn::http1::Builder::new().serve_connection(io, service);
                            tokio::select! {
                                _ = connection => {}
                                _ = stopped.changed() => {}
                            }
                        }
                        Protocol::Grpcs => {
                            let service = service_fn(move |request| answer_grpc(state.clone(), request));
                            let connection = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                                .serve_connection(io, service);
                            tokio::select! {
                                _ = connection => {}
                                _ = stopped.changed() => {}
                            }
                        }
                    }
                });
            }
        });
        Ok(SampleUpstream {
            addr,
            protocol,
            state,
            task,
            stop,
        })
    }

    /// `https://127.0.0.1:<port>`, or `grpcs://` for the gRPC one.
    pub fn url(&self) -> String {
        match self.protocol {
            Protocol::Https => format!("https://{}", self.addr),
            Protocol::Grpcs => format!("grpcs://{}", self.addr),
        }
    }

    pub fn behave(&self, behaviour: Behaviour) {
        *self.state.behaviour.lock().unwrap_or_else(|e| e.into_inner()) = behaviour;
    }

    /// Requests that reached it.
    pub fn requests(&self) -> u64 {
        self.state.requests.load(Ordering::SeqCst)
    }

    /// The department the hub said the last request was for.
    pub fn last_client(&self) -> String {
        self.state.last_client.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Drop for SampleUpstream {
    fn drop(&mut self) {
        self.task.abort();
        let _ = self.stop.send(true);
    }
}

/// The registered mobile number the sample gives for an ID number: fixed digits from it, so that
/// an answer can be checked.
pub fn mobile_of(id_number: &str) -> String {
    let digits: String = id_number.chars().filter(char::is_ascii_digit).collect();
    let tail: String = digits
        .chars()
        .rev()
        .take(8)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    format!("139{tail:0>8}")
}

type Reply = Response<Full<Bytes>>;

fn reply(status: u16, body: impl Into<Bytes>) -> Reply {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}

impl State {
    /// Counts a request and remembers whom it was for; says how to answer it.
    fn arrived<B>(&self, request: &Request<B>) -> Behaviour {
        self.requests.fetch_add(1, Ordering::SeqCst);
        if let Some(client) = request.headers().get("x-xinqiao-client").and_then(|v| v.to_str().ok()) {
            *self.last_client.lock().unwrap_or_else(|e| e.into_inner()) = client.to_string();
        }
        self.behaviour.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// The sample's register: an ID number and a name match when the number is given and the name
/// is not "nobody".
fn verified(id_number: &str, name: &str) -> VerifyResponse {
    VerifyResponse {
        id_number: id_number.to_string(),
        name: name.to_string(),
        r#match: !id_number.is_empty() && name != "nobody",
        mobile: mobile_of(id_number),
    }
}

async fn answer(state: Arc<State>, request: Request<hyper::body::Incoming>) -> Result<Reply, std::io::Error> {
    let behaviour = state.arrived(&request);
    let (parts, body) = request.into_parts();
    let body = match Limited::new(body, 1024 * 1024).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return Ok(reply(413, r#"{"error":"request too large"}"#)),
    };
    match behaviour {
        Behaviour::Serve => {}
        Behaviour::Slow(pause) => tokio::time::sleep(pause).await,
        Behaviour::Status(status, body) => return Ok(reply(status, body)),
        Behaviour::Garbled => return Ok(reply(200, "<html>not json</html>")),
        Behaviour::OffSchema => return Ok(reply(200, r#"{"verified": "perhaps"}"#)),
        Behaviour::Huge(bytes) => {
            let filler = "x".repeat(bytes.saturating_sub(40));
            return Ok(reply(
                200,
                json!({"id_number": "0", "match": true, "name": filler}).to_string(),
            ));
        }
        Behaviour::Silent => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
        Behaviour::Hang => {
            return Err(std::io::Error::new(std::io::ErrorKind::ConnectionAborted, "hang up"));
        }
    }
    match (parts.method.as_str(), parts.uri.path()) {
        ("POST", "/verify") => {
            let Ok(Value::Object(fields)) = serde_json::from_slice::<Value>(&body) else {
                return Ok(reply(400, r#"{"error":"a JSON object is expected"}"#));
            };
            let id = fields.get("id_number").and_then(Value::as_str).unwrap_or_default();
            let name = fields.get("name").and_then(Value::as_str).unwrap_or_default();
            let v = verified(id, name);
            Ok(reply(
                200,
                json!({"id_number": v.id_number, "name": v.name, "match": v.r#match, "mobile": v.mobile}).to_string(),
            ))
        }
        ("GET", "/status") => Ok(reply(200, r#"{"status":"ok"}"#)),
        _ => Ok(reply(404, r#"{"error":"no such operation"}"#)),
    }
}

type GrpcReply = Response<http_body_util::combinators::BoxBody<Bytes, std::convert::Infallible>>;

/// A gRPC answer: the message (if any) in one frame, the status in the trailers.
fn grpc_reply(message: Option<Bytes>, status: u16, text: &str) -> GrpcReply {
    let mut trailers = hyper::HeaderMap::new();
    trailers.insert("grpc-status", hyper::header::HeaderValue::from(status));
    if let Ok(text) = hyper::header::HeaderValue::from_str(&crate::interface::percent_encode(text)) {
        trailers.insert("grpc-message", text);
    }
    let body = Full::new(message.unwrap_or_default())
        .with_trailers(std::future::ready(Some(Ok(trailers))))
        .boxed();
    let mut response = Response::new(body);
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/grpc"),
    );
    response
}

fn frame(message: &[u8]) -> Bytes {
    let mut framed = Vec::with_capacity(5 + message.len());
    framed.push(0);
    framed.extend((message.len() as u32).to_be_bytes());
    framed.extend_from_slice(message);
    Bytes::from(framed)
}

/// The gRPC status code that says what an HTTP status says, for `Behaviour::Status`.
fn grpc_code(status: u16) -> u16 {
    match status {
        400 | 422 => 3,
        401 => 16,
        403 => 7,
        404 => 5,
        429 => 8,
        503 => 14,
        504 => 4,
        _ => 13,
    }
}

async fn answer_grpc(state: Arc<State>, request: Request<hyper::body::Incoming>) -> Result<GrpcReply, std::io::Error> {
    let behaviour = state.arrived(&request);
    let (parts, body) = request.into_parts();
    let body = match Limited::new(body, 1024 * 1024).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return Ok(grpc_reply(None, 8, "request too large")),
    };
    match behaviour {
        Behaviour::Serve => {}
        Behaviour::Slow(pause) => tokio::time::sleep(pause).await,
        Behaviour::Status(status, text) => return Ok(grpc_reply(None, grpc_code(status), &text)),
        Behaviour::Garbled => return Ok(grpc_reply(Some(frame(&[0xff, 0xff, 0xff])), 0, "")),
        Behaviour::OffSchema => {
            let mut v = verified("11010519491231002X", "x");
            v.mobile = "not a mobile number".into();
            return Ok(grpc_reply(Some(frame(&v.encode_to_vec())), 0, ""));
        }
        Behaviour::Huge(bytes) => {
            let v = VerifyResponse {
                name: "x".repeat(bytes),
                ..verified("0", "x")
            };
            return Ok(grpc_reply(Some(frame(&v.encode_to_vec())), 0, ""));
        }
        Behaviour::Silent => tokio::time::sleep(Duration::from_secs(3600)).await,
        Behaviour::Hang => {
            return Err(std::io::Error::new(std::io::ErrorKind::ConnectionAborted, "hang up"));
        }
    }
    if parts.uri.path() != "/xinqiao.sample.v1.IdentityCheck/Verify" {
        return Ok(grpc_reply(None, 12, "no such method"));
    }
    let request = match body.get(5..).map(VerifyRequest::decode) {
        Some(Ok(r)) if body[0] == 0 => r,
        _ => return Ok(grpc_reply(None, 3, "not a VerifyRequest")),
    };
    let v = verified(&request.id_number, &request.name);
    Ok(grpc_reply(Some(frame(&v.encode_to_vec())), 0, ""))
}
