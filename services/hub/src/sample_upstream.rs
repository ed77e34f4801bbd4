//! A provider's upstream service for the demo, the benchmark and the tests: 身份核验 (identity
//! verification), as a public security bureau's system would offer it: `POST /verify` with
//! `{"id_number", "name"}` answers whether they match, with the person's registered mobile
//! number; `GET /status` answers `{"status": "ok"}`. HTTPS with its own certificate, optionally
//! requiring a client certificate (an upstream that lets only the hub in).
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
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

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

    pub async fn start_on(
        addr: SocketAddr,
        cert: &Path,
        key: &Path,
        client_ca: Option<&Path>,
    ) -> Result<SampleUpstream, TlsError> {
        let config = tls::upstream_server_config(cert, key, client_ca)?;
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
                    let service = service_fn(move |request| answer(state.clone(), request));
                    let connection =
                        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service);
                    tokio::select! {
                        _ = connection => {}
                        _ = stopped.changed() => {}
                    }
                });
            }
        });
        Ok(SampleUpstream {
            addr,
            state,
            task,
            stop,
        })
    }

    /// `https://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
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

async fn answer(state: Arc<State>, request: Request<hyper::body::Incoming>) -> Result<Reply, std::io::Error> {
    state.requests.fetch_add(1, Ordering::SeqCst);
    if let Some(client) = request.headers().get("x-xinqiao-client").and_then(|v| v.to_str().ok()) {
        *state.last_client.lock().unwrap_or_else(|e| e.into_inner()) = client.to_string();
    }
    let behaviour = state.behaviour.lock().unwrap_or_else(|e| e.into_inner()).clone();
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
            // The sample's register: a name matches when it is not "nobody".
            let matched = !id.is_empty() && name != "nobody";
            Ok(reply(
                200,
                json!({"id_number": id, "name": name, "match": matched, "mobile": mobile_of(id)}).to_string(),
            ))
        }
        ("GET", "/status") => Ok(reply(200, r#"{"status":"ok"}"#)),
        _ => Ok(reply(404, r#"{"error":"no such operation"}"#)),
    }
}
