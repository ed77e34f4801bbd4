//! The hub as a client of providers' upstream services (接口共享).
//!
//! Each interface has a gate in front of its upstream: the circuit (refuse at once while the
//! upstream is known to be down), a bound on calls in flight across every caller, and a few idle
//! HTTP/1.1 connections over TLS kept for the next call. Every call has a deadline: the caller
//! hears UNAVAILABLE or DEADLINE_EXCEEDED naming the interface, never a hang.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use chrono::Utc;
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio_rustls::TlsConnector;
use xinqiao_domain::interface::{Circuit, Interface, Method, Passage, Upstream};

use crate::tls;

/// An upstream's answer larger than this is refused (the caller's message limit is the same).
pub const MAX_ANSWER_BYTES: usize = 4 * 1024 * 1024;

/// A call to an upstream.
pub struct Outgoing {
    pub method: Method,
    /// The path under the upstream's base, with its query.
    pub path_and_query: String,
    pub body: Vec<u8>,
    pub idempotent: bool,
    pub timeout: Duration,
    /// Who the call is made for and the call's id, sent as headers so the upstream's own log can
    /// name them.
    pub client: String,
    pub request_id: String,
}

#[derive(Debug)]
pub struct Answer {
    pub status: u16,
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
}

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
    idle: Mutex<Vec<SendRequest<Full<Bytes>>>>,
}

impl Upstreams {
    pub fn new(hub: HubCertificate) -> Self {
        Self {
            hub,
            gates: Mutex::new(HashMap::new()),
        }
    }

    fn gate(&self, interface: &Interface) -> Result<Arc<Gate>, Failure> {
        let key = GateKey {
            upstream: interface.spec.upstream.clone(),
            ca_pem: interface.spec.upstream_ca_pem.clone(),
            max_concurrency: interface.spec.max_concurrency,
            hub_files: self.hub.version(),
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
        let config = tls::upstream_client_config(&key.ca_pem, &self.hub.cert, &self.hub.key)
            .map_err(|e| Failure::Misconfigured(e.to_string()))?;
        // A new gate starts closed: a re-registered upstream deserves a fresh chance.
        let gate = Arc::new(Gate {
            in_flight: Arc::new(Semaphore::new(key.max_concurrency.max(1) as usize)),
            key,
            target,
            server_name,
            tls: TlsConnector::from(Arc::new(config)),
            circuit: Mutex::new(Circuit::default()),
            idle: Mutex::new(Vec::new()),
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
                match tokio::time::timeout(out.timeout, gate.send(&out)).await {
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
        let succeeded = matches!(&outcome, Ok((status, _)) if *status < 500);
        // Busy is the hub's own back-pressure, not the upstream failing.
        if !matches!(outcome, Err(Failure::Busy)) {
            gate.circuit().record(succeeded, Utc::now());
        }
        outcome.map(|(status, body)| Answer {
            status,
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
        let unreachable = |what: &str, e: &dyn std::fmt::Display| Failure::Unreachable(format!("{what}: {e}"));
        let tcp = TcpStream::connect((self.target.host.as_str(), self.target.port))
            .await
            .map_err(|e| unreachable("connecting", &e))?;
        let _ = tcp.set_nodelay(true);
        let stream = self
            .tls
            .connect(self.server_name.clone(), tcp)
            .await
            .map_err(|e| unreachable("TLS handshake", &e))?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| unreachable("HTTP handshake", &e))?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "an upstream connection ended");
            }
        });
        Ok(sender)
    }

    /// One request and its whole answer.
    async fn send(&self, out: &Outgoing) -> Result<(u16, Bytes), Failure> {
        let mut sender = self.connection().await?;
        sender
            .ready()
            .await
            .map_err(|e| Failure::Unreachable(format!("connection: {e}")))?;
        let authority = if self.target.port == 443 {
            self.target.host.clone()
        } else {
            format!("{}:{}", self.target.host, self.target.port)
        };
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
            .body(Full::new(Bytes::from(out.body.clone())))
            .map_err(|e| Failure::Misconfigured(format!("request: {e}")))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| Failure::Unreachable(format!("no answer: {e}")))?;
        let status = response.status().as_u16();
        let body = Limited::new(response.into_body(), MAX_ANSWER_BYTES)
            .collect()
            .await
            .map_err(|e| {
                if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() {
                    Failure::TooLarge
                } else {
                    Failure::Unreachable(format!("the answer broke off: {e}"))
                }
            })?
            .to_bytes();
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < self.key.max_concurrency as usize {
            idle.push(sender);
        }
        Ok((status, body))
    }
}
