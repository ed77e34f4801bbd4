//! The hub as a client of providers' upstream services (接口共享).
//!
//! Each interface has a gate in front of its upstream: the circuit (refuse at once while the
//! upstream is known to be down), a bound on calls in flight across every caller, and the
//! connections kept for the next call: a few idle HTTP/1.1 connections over TLS for an https://
//! upstream, one multiplexed HTTP/2 connection for a grpcs:// one. Every call has a deadline: the
//! caller hears UNAVAILABLE or DEADLINE_EXCEEDED naming the interface, never a hang.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use chrono::Utc;
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::SendRequest;
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio_rustls::TlsConnector;
use xinqiao_domain::interface::{Circuit, Interface, Method, Passage, Protocol, Upstream};

use crate::tls;

/// An upstream's answer larger than this is refused (the caller's message limit is the same).
pub const MAX_ANSWER_BYTES: usize = 4 * 1024 * 1024;

/// A call to an upstream.
pub struct Outgoing {
    pub method: Method,
    /// The path under the upstream's base, with its query; for gRPC, `/package.Service/Method`.
    pub path_and_query: String,
    /// The JSON request, or for gRPC the framed message.
    pub body: Bytes,
    pub idempotent: bool,
    pub timeout: Duration,
    /// Who the call is made for and the call's id, sent as headers so the upstream's own log can
    /// name them.
    pub client: String,
    pub request_id: String,
}

#[derive(Debug)]
pub struct Answer {
    /// The HTTP status; for gRPC, the HTTP status that says what the gRPC status says (see
    /// `web::http_status`), so that one rule reads both.
    pub status: u16,
    /// For gRPC: the status code and message the upstream gave.
    pub grpc: Option<(tonic::Code, String)>,
    /// The JSON answer; for gRPC, the message's frame.
    pub body: Bytes,
    pub waited: Duration,
}

/// Why an upstream call gave no answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The circuit is open: the upstream failed repeatedly; a trial call is let through later.
    CircuitOpen { retry_after: Duration },
    /// Every slot toward the upstream stayed taken for the whole timeout.
    Busy,
    /// No answer within the timeout.
    TimedOut,
    /// The connection or the TLS handshake failed, or the connection broke.
    Unreachable(String),
    /// The upstream's answer was larger than [`MAX_ANSWER_BYTES`].
    TooLarge,
    /// The interface's registration cannot be dialled (its CA, or the hub's certificate).
    Misconfigured(String),
}

/// Where the hub's own certificate and key are, presented to upstreams that ask for one.
#[derive(Clone)]
pub struct HubCertificate {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl HubCertificate {
    /// When the files last changed: a rotated certificate builds new gates.
    fn version(&self) -> Option<(SystemTime, SystemTime)> {
        let modified = |p: &PathBuf| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        Some((modified(&self.cert)?, modified(&self.key)?))
    }
}

pub struct Upstreams {
    hub: HubCertificate,
    gates: Mutex<HashMap<String, Arc<Gate>>>,
    /// The hub certificate's files as last looked at, and when: looked at again after a second,
    /// not on every call (a rotated certificate is used within the second).
    hub_files: Mutex<(FileTimes, Option<Instant>)>,
}

/// When the hub certificate's two files last changed, if they can be read.
type FileTimes = Option<(SystemTime, SystemTime)>;

/// How long the hub certificate's file times are trusted before they are read again.
const HUB_FILES_FRESH_FOR: Duration = Duration::from_secs(1);

/// What a gate was built from; a change of any builds a new one.
#[derive(Clone, PartialEq, Eq)]
struct GateKey {
    upstream: String,
    ca_pem: String,
    max_concurrency: u32,
    hub_files: Option<(SystemTime, SystemTime)>,
}

struct Gate {
    key: GateKey,
    target: Upstream,
    server_name: ServerName<'static>,
    tls: TlsConnector,
    in_flight: Arc<Semaphore>,
    circuit: Mutex<Circuit>,
    /// https://: idle HTTP/1.1 connections.
    idle: Mutex<Vec<SendRequest<Full<Bytes>>>>,
    /// grpcs://: the HTTP/2 connection every call shares; made again when it closes.
    multiplexed: tokio::sync::Mutex<Option<http2::SendRequest<Full<Bytes>>>>,
}

/// What one attempt got: the status, and for gRPC the status the upstream gave, and the body.
type Reply = (u16, Option<(tonic::Code, String)>, Bytes);

impl Upstreams {
    pub fn new(hub: HubCertificate) -> Self {
        Self {
            hub,
            gates: Mutex::new(HashMap::new()),
            hub_files: Mutex::new((None, None)),
        }
    }

    fn hub_files(&self) -> FileTimes {
        let mut seen = self.hub_files.lock().unwrap_or_else(|e| e.into_inner());
        if seen.1.is_none_or(|at| at.elapsed() >= HUB_FILES_FRESH_FOR) {
            *seen = (self.hub.version(), Some(Instant::now()));
        }
        seen.0
    }

    fn gate(&self, interface: &Interface) -> Result<Arc<Gate>, Failure> {
        let key = GateKey {
            upstream: interface.spec.upstream.clone(),
            ca_pem: interface.spec.upstream_ca_pem.clone(),
            max_concurrency: interface.spec.max_concurrency,
            hub_files: self.hub_files(),
        };
        let mut gates = self.gates.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(gate) = gates.get(&interface.code)
            && gate.key == key
        {
            return Ok(gate.clone());
        }
        let target = Upstream::parse(&key.upstream).map_err(Failure::Misconfigured)?;
        let server_name = ServerName::try_from(target.host.clone())
            .map_err(|e| Failure::Misconfigured(format!("upstream host {}: {e}", target.host)))?;
        let mut config = tls::upstream_client_config(&key.ca_pem, &self.hub.cert, &self.hub.key)
            .map_err(|e| Failure::Misconfigured(e.to_string()))?;
        config.alpn_protocols = match target.protocol {
            Protocol::Https => vec![b"http/1.1".to_vec()],
            Protocol::Grpcs => vec![b"h2".to_vec()],
        };
        // A new gate starts closed: a re-registered upstream deserves a fresh chance.
        let gate = Arc::new(Gate {
            in_flight: Arc::new(Semaphore::new(key.max_concurrency.max(1) as usize)),
            key,
            target,
            server_name,
            tls: TlsConnector::from(Arc::new(config)),
            circuit: Mutex::new(Circuit::default()),
            idle: Mutex::new(Vec::new()),
            multiplexed: tokio::sync::Mutex::new(None),
        });
        gates.insert(interface.code.clone(), gate.clone());
        Ok(gate)
    }

    /// Makes one call through the interface's gate. A failure, and a 5xx answer, count against
    /// the circuit; an answer the hub then refuses is counted with [`Upstreams::count_failure`].
    pub async fn call(&self, interface: &Interface, out: Outgoing) -> Result<Answer, Failure> {
        let gate = self.gate(interface)?;
        if let Passage::Open { retry_after } = gate.circuit().enter(Utc::now()) {
            return Err(Failure::CircuitOpen { retry_after });
        }
        let started = Instant::now();
        let outcome = async {
            // A call beyond the bound waits for a slot at most half its timeout: a queue longer
            // than that would only turn into timeouts.
            let _slot = tokio::time::timeout(out.timeout / 2, gate.in_flight.clone().acquire_owned())
                .await
                .map_err(|_| Failure::Busy)?
                .map_err(|_| Failure::Busy)?;
            let attempt = || async {
                let sent = async {
                    match gate.target.protocol {
                        Protocol::Https => gate.send(&out).await,
                        Protocol::Grpcs => gate.send_grpc(&out).await,
                    }
                };
                match tokio::time::timeout(out.timeout, sent).await {
                    Err(_) => Err(Failure::TimedOut),
                    Ok(result) => result,
                }
            };
            match attempt().await {
                // A connection that could not be made, or broke before an answer: an idempotent
                // operation is tried once more; others never are, lest they act twice.
                Err(Failure::Unreachable(_)) if out.idempotent => attempt().await,
                result => result,
            }
        }
        .await;
        let succeeded = matches!(&outcome, Ok((status, _, _)) if *status < 500);
        // Busy is the hub's own back-pressure, not the upstream failing.
        if !matches!(outcome, Err(Failure::Busy)) {
            gate.circuit().record(succeeded, Utc::now());
        }
        outcome.map(|(status, grpc, body)| Answer {
            status,
            grpc,
            body,
            waited: started.elapsed(),
        })
    }

    /// An answer that came back but was refused (outside its schema): the upstream is failing.
    pub fn count_failure(&self, interface: &Interface) {
        if let Some(gate) = self
            .gates
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&interface.code)
        {
            gate.circuit().record(false, Utc::now());
        }
    }
}

impl Gate {
    fn circuit(&self) -> std::sync::MutexGuard<'_, Circuit> {
        self.circuit.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// An idle connection, or a new one.
    async fn connection(&self) -> Result<SendRequest<Full<Bytes>>, Failure> {
        loop {
            let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
            match idle {
                Some(sender) if !sender.is_closed() => return Ok(sender),
                Some(_) => continue,
                None => break,
            }
        }
        let stream = self.dial().await?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| cannot_reach("HTTP handshake", &e))?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "an upstream connection ended");
            }
        });
        Ok(sender)
    }

    /// A TCP connection to the upstream, through the TLS handshake.
    async fn dial(&self) -> Result<tokio_rustls::client::TlsStream<TcpStream>, Failure> {
        let tcp = TcpStream::connect((self.target.host.as_str(), self.target.port))
            .await
            .map_err(|e| cannot_reach("connecting", &e))?;
        let _ = tcp.set_nodelay(true);
        self.tls
            .connect(self.server_name.clone(), tcp)
            .await
            .map_err(|e| cannot_reach("TLS handshake", &e))
    }

    /// The shared HTTP/2 connection, made if there is none or it closed. Callers that find it
    /// closed together make one new connection, not one each.
    async fn multiplexed(&self) -> Result<http2::SendRequest<Full<Bytes>>, Failure> {
        let mut shared = self.multiplexed.lock().await;
        if let Some(sender) = shared.as_ref()
            && !sender.is_closed()
        {
            return Ok(sender.clone());
        }
        let stream = self.dial().await?;
        let (sender, connection) = http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .map_err(|e| cannot_reach("HTTP/2 handshake", &e))?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "an upstream HTTP/2 connection ended");
            }
        });
        *shared = Some(sender.clone());
        Ok(sender)
    }

    fn authority(&self) -> String {
        if self.target.port == 443 {
            self.target.host.clone()
        } else {
            format!("{}:{}", self.target.host, self.target.port)
        }
    }

    /// One unary gRPC call and its whole answer. The status is in the trailers, or in the
    /// headers of an answer without a message.
    async fn send_grpc(&self, out: &Outgoing) -> Result<Reply, Failure> {
        let mut sender = self.multiplexed().await?;
        sender
            .ready()
            .await
            .map_err(|e| Failure::Unreachable(format!("connection: {e}")))?;
        let request = hyper::Request::builder()
            .method("POST")
            .uri(format!("https://{}{}", self.authority(), out.path_and_query))
            .header(hyper::header::CONTENT_TYPE, "application/grpc")
            .header(hyper::header::TE, "trailers")
            .header(
                "grpc-timeout",
                format!("{}m", out.timeout.as_millis().clamp(1, 99_999_999)),
            )
            .header("x-xinqiao-client", out.client.as_str())
            .header("x-xinqiao-request-id", out.request_id.as_str())
            .body(Full::new(out.body.clone()))
            .map_err(|e| Failure::Misconfigured(format!("request: {e}")))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| Failure::Unreachable(format!("no answer: {e}")))?;
        let http_status = response.status().as_u16();
        let (parts, body) = response.into_parts();
        let collected = Limited::new(body, MAX_ANSWER_BYTES)
            .collect()
            .await
            .map_err(|e| answer_failure(&*e))?;
        let trailers = collected.trailers().cloned();
        let body = collected.to_bytes();
        let status_in = |headers: &http::HeaderMap| {
            let code = headers.get("grpc-status")?.to_str().ok()?.parse::<i32>().ok()?;
            let message = headers
                .get("grpc-message")
                .and_then(|m| m.to_str().ok())
                .map(crate::audit::grpc_message)
                .unwrap_or_default();
            Some((tonic::Code::from_i32(code), message))
        };
        let grpc = trailers
            .as_ref()
            .and_then(status_in)
            .or_else(|| status_in(&parts.headers));
        match grpc {
            Some((code, message)) => Ok((crate::web::http_status(code), Some((code, message)), body)),
            // No gRPC status: not a gRPC server, or one that broke off; its HTTP status says which.
            None if http_status != 200 => Ok((http_status, None, body)),
            None => Err(Failure::Unreachable("the answer carried no grpc-status".into())),
        }
    }

    /// One request and its whole answer.
    async fn send(&self, out: &Outgoing) -> Result<Reply, Failure> {
        let mut sender = self.connection().await?;
        sender
            .ready()
            .await
            .map_err(|e| Failure::Unreachable(format!("connection: {e}")))?;
        let authority = self.authority();
        let mut request = hyper::Request::builder()
            .method(out.method.as_str())
            .uri(format!("{}{}", self.target.base, out.path_and_query))
            .header(hyper::header::HOST, authority)
            .header(hyper::header::ACCEPT, "application/json")
            .header("x-xinqiao-client", out.client.as_str())
            .header("x-xinqiao-request-id", out.request_id.as_str());
        if out.method == Method::Post {
            request = request.header(hyper::header::CONTENT_TYPE, "application/json");
        }
        let request = request
            .body(Full::new(out.body.clone()))
            .map_err(|e| Failure::Misconfigured(format!("request: {e}")))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| Failure::Unreachable(format!("no answer: {e}")))?;
        let status = response.status().as_u16();
        let body = Limited::new(response.into_body(), MAX_ANSWER_BYTES)
            .collect()
            .await
            .map_err(|e| answer_failure(&*e))?
            .to_bytes();
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < self.key.max_concurrency as usize {
            idle.push(sender);
        }
        Ok((status, None, body))
    }
}

fn cannot_reach(what: &str, e: &dyn std::fmt::Display) -> Failure {
    Failure::Unreachable(format!("{what}: {e}"))
}

/// Why an answer's body could not be read whole.
fn answer_failure(e: &(dyn std::error::Error + Send + Sync + 'static)) -> Failure {
    if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() {
        Failure::TooLarge
    } else {
        Failure::Unreachable(format!("the answer broke off: {e}"))
    }
}
