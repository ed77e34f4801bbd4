//! Server assembly: storage, TLS, the gRPC services, health and reflection, and a graceful stop.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tonic::codegen::http;
use tonic::server::NamedService;
use tonic::transport::Server;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;
use xinqiao_domain::department::DepartmentProfile;
use xinqiao_proto::v1::access_service_server::AccessServiceServer;
use xinqiao_proto::v1::audit_service_server::AuditServiceServer;
use xinqiao_proto::v1::console_service_server::ConsoleServiceServer;
use xinqiao_proto::v1::directory_service_server::DirectoryServiceServer;
use xinqiao_proto::v1::evaluation_service_server::EvaluationServiceServer;
use xinqiao_proto::v1::exchange_service_server::ExchangeServiceServer;
use xinqiao_proto::v1::federation_service_server::FederationServiceServer;
use xinqiao_proto::v1::interface_service_server::InterfaceServiceServer;
use xinqiao_proto::v1::schema_service_server::SchemaServiceServer;
use xinqiao_store::Store;

use crate::access::{AccessApi, Revocations};
use crate::audit::{AuditLayer, AuditLog};
use crate::auth::Authenticator;
use crate::config::Config;
use crate::console::{Console, ConsoleApi, InProcess, InProcessService, LinkSettings};
use crate::directory::DirectoryApi;
use crate::evaluation::{EvaluationApi, Evaluator};
use crate::exchange::ExchangeApi;
use crate::federation::FederationApi;
use crate::feed::ChangeFeed;
use crate::interface::InterfaceApi;
use crate::metrics::{self, Metrics, MetricsLayer};
use crate::nodes::{self, Readiness};
use crate::refusals::{self, RefusalLimiter, Verdict};
use crate::registry::Registry;
use crate::schemas::SchemaApi;
use crate::tls;
use crate::trail::{self, AuditApi};
use crate::upstream::HubCertificate;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("storage: {0}")]
    Store(#[from] xinqiao_domain::Error),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: SocketAddr, source: std::io::Error },
    #[error("reflection: {0}")]
    Reflection(String),
    #[error("server: {0}")]
    Transport(String),
    #[error("configuration: {0}")]
    Config(String),
}

/// A hub that is serving. Dropping it without [`RunningHub::stop`] leaves the server running
/// until the runtime ends.
pub struct RunningHub {
    pub addr: SocketAddr,
    pub store: Arc<dyn Store>,
    /// Where `/metrics` is served, when `[metrics] listen` asks for it.
    pub metrics_addr: Option<SocketAddr>,
    /// Where the web console is served: its own port (`[console] listen`, browsers without a
    /// client certificate welcome) or the hub's.
    pub console_addr: SocketAddr,
    /// This hub's metrics (the handlers count into them; the scorecard sets its gauges).
    pub metrics: Metrics,
    /// The directory's search in memory (its size and state, for reports and the benchmark).
    pub catalogue_search: Arc<crate::search_index::CatalogueSearch>,
    stop: oneshot::Sender<()>,
    /// Tells live streams (subscriptions) to end, so that a graceful stop does not wait on them.
    stopping: watch::Sender<bool>,
    /// Whether the hub takes traffic, for readiness probes: false from the start of a stop.
    serving: watch::Sender<bool>,
    /// The gRPC health service's statuses, NOT_SERVING from the start of a stop.
    health: HealthReporter,
    /// Stops the metrics and probe endpoint, last, so that probes see the drain.
    probes_stop: watch::Sender<bool>,
    /// Announces this node in the database until the hub stops, then retires it.
    announcer: JoinHandle<()>,
    /// Summarises refused handshakes past the limit, the last ones when the hub stops.
    summarizer: JoinHandle<()>,
    task: JoinHandle<Result<(), ServeError>>,
    grace: std::time::Duration,
}

impl RunningHub {
    /// Stops accepting connections and waits for in-flight calls, at most the grace period.
    ///
    /// Live streams are told to end with UNAVAILABLE at once. A client that has stopped reading
    /// cannot be told anything (HTTP/2 flow control holds the stream), so connections still open
    /// when the grace period ends are cut: such a client sees a broken connection and resumes
    /// from its last sequence like after any other failure.
    pub async fn stop(self) -> Result<(), ServeError> {
        // Health checks over gRPC and HTTP probes alike now send traffic elsewhere.
        let _ = self.serving.send(false);
        for service in served_services() {
            self.health.set_service_status(service, ServingStatus::NotServing).await;
        }
        let _ = self.stopping.send(true);
        let _ = self.stop.send(());
        let mut task = self.task;
        let result = match tokio::time::timeout(self.grace, &mut task).await {
            Ok(Ok(result)) => result,
            Ok(Err(join)) => Err(ServeError::Transport(join.to_string())),
            Err(_) => {
                task.abort();
                tracing::warn!(grace = ?self.grace, "connections still open after the grace period were cut");
                Ok(())
            }
        };
        // The node leaves the database's list of running nodes (a bounded wait: an unreachable
        // database only leaves the entry to age out).
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), self.announcer).await;
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), self.summarizer).await;
        let _ = self.probes_stop.send(true);
        result
    }

    /// Serves until `signal` completes, then stops gracefully.
    pub async fn serve_until(self, signal: impl Future<Output = ()>) -> Result<(), ServeError> {
        signal.await;
        self.stop().await
    }
}

/// Opens the configured store (running its migrations) and starts serving.
pub async fn start(config: &Config) -> Result<RunningHub, ServeError> {
    let store = xinqiao_store::open(&config.database_url()).await?;
    start_with_store(config, store).await
}

/// Starts serving on the configured address (port 0 picks a free one; see `RunningHub::addr`).
pub async fn start_with_store(config: &Config, store: Arc<dyn Store>) -> Result<RunningHub, ServeError> {
    let server_tls = tls::ServerTls::load(&config.ca(), &config.cert(), &config.key(), config.crl().as_deref())?;
    let addr = config.listen();
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Listen { addr, source })?;
    let addr = listener
        .local_addr()
        .map_err(|source| ServeError::Listen { addr, source })?;
    let hash = config.audit.chain_hash().map_err(ServeError::Config)?;
    let keys = config.audit_keyring().map_err(ServeError::Config)?;
    let node = nodes::this_node(addr, store.schema_status().await?.target());
    let audit = AuditLog::start(store.clone(), keys.linker(hash), &node.id);
    let audit_for_summaries = audit.clone();
    let refused = audit.clone();
    let limiter = Arc::new(RefusalLimiter::new(config.limits.handshake_refusals_per_minute));
    let counted = limiter.clone();
    let on_failure: tls::HandshakeFailureHook =
        Arc::new(
            move |remote, error| match counted.on_refusal(remote.ip(), &error.to_string(), chrono::Utc::now()) {
                Verdict::Record => {
                    tracing::warn!(%remote, %error, "TLS handshake refused");
                    refused.record_detached(crate::audit::handshake_refused(remote, error));
                }
                Verdict::Count => tracing::debug!(%remote, %error, "TLS handshake refused (counted for a summary)"),
            },
        );
    let handshake_timeout = config.handshake_timeout();
    // The console's own port, bound now so that the links the hub mints can name it.
    let console_listener = match config.console.listen {
        Some(console_addr) => Some(
            TcpListener::bind(console_addr)
                .await
                .map_err(|source| ServeError::Listen {
                    addr: console_addr,
                    source,
                })?,
        ),
        None => None,
    };
    let console_addr = match &console_listener {
        Some(listener) => listener
            .local_addr()
            .map_err(|source| ServeError::Listen { addr, source })?,
        None => addr,
    };

    let max = config.limits.max_message_bytes;
    // One authenticator for every service: the directory's changes to departments reach them all.
    let auth = Authenticator::new(store.clone());
    let directory_api = Arc::new(DirectoryApi::new(store.clone(), auth.clone()));
    let directory = DirectoryServiceServer::from_arc(directory_api.clone())
        .max_decoding_message_size(max)
        .max_encoding_message_size(max.max(4 * 1024 * 1024));
    let registry = Registry::new(store.clone());
    let (stopping_tx, stopping) = watch::channel(false);
    forget_departments_changed_elsewhere(store.as_ref(), auth.clone(), stopping.clone()).await?;
    let catalogue_search = directory_api.catalogue_search();
    catalogue_search.start(stopping.clone());
    let metrics = Metrics::new();
    metrics.track_audit_chain(store.clone());
    let (serving, serving_rx) = watch::channel(false);
    let (probes_stop, probes_stopping) = watch::channel(false);
    let metrics_addr = match config.metrics.listen {
        Some(addr) => Some(
            metrics::serve(
                addr,
                metrics.clone(),
                Readiness::new(serving_rx, store.clone()),
                probes_stopping,
            )
            .await
            .map_err(|source| ServeError::Listen { addr, source })?,
        ),
        None => None,
    };
    let feed = ChangeFeed::new();
    feed.start(store.clone(), stopping.clone());
    let revocations = Revocations::default();
    // 平台级联: the registered peer hubs' CAs trusted (each for its own identity), and a pull
    // loop per child hub.
    let federation = crate::federation::start(
        config,
        store.clone(),
        auth.clone(),
        audit.clone(),
        &server_tls,
        stopping.clone(),
    )
    .await?;
    trail::keep_retention(
        store.clone(),
        audit.clone(),
        config.audit.retention_days,
        stopping.clone(),
    );
    // 跨级交换: reads of datasets aggregated from child hubs are relayed through them.
    let relay = config.hub_identity().map(|(division, files)| {
        crate::federation::relay::Relay::new(store.clone(), directory_api.entry_cache(), division, files)
    });
    let exchange = ExchangeServiceServer::new(
        ExchangeApi::new(
            store.clone(),
            auth.clone(),
            registry.clone(),
            feed,
            config.limits.clone(),
            stopping,
            audit.clone(),
            revocations.clone(),
            metrics.clone(),
        )
        .skip_validation(config.benchmark.skip_validation)
        .relay(relay.clone()),
    )
    .max_decoding_message_size(max)
    .max_encoding_message_size(max.max(4 * 1024 * 1024));
    let access = AccessServiceServer::new(
        AccessApi::new(
            store.clone(),
            auth.clone(),
            registry.clone(),
            config.access.clone(),
            revocations,
        )
        .relay(relay.clone()),
    )
    .max_decoding_message_size(max)
    .max_encoding_message_size(max.max(4 * 1024 * 1024));
    let evaluator = Evaluator::new(store.clone(), &config.evaluation).map_err(|e| ServeError::Config(e.to_string()))?;
    crate::evaluation::keep_gauges(evaluator.clone(), metrics.clone(), stopping_tx.subscribe());
    let evaluation = EvaluationServiceServer::new(EvaluationApi::new(evaluator, auth.clone()))
        .max_decoding_message_size(max)
        .max_encoding_message_size(max.max(4 * 1024 * 1024));
    let anchor_files = trail::AnchorFiles {
        ca: config.ca(),
        cert: config.cert(),
        key: config.key(),
    };
    let audit_service = AuditServiceServer::new(AuditApi::new(store.clone(), auth.clone(), keys, anchor_files))
        .max_decoding_message_size(max)
        .max_encoding_message_size(max.max(4 * 1024 * 1024));
    let interface_api = Arc::new(
        InterfaceApi::new(
            store.clone(),
            auth.clone(),
            registry.clone(),
            HubCertificate {
                cert: config.cert(),
                key: config.key(),
            },
            metrics.clone(),
            directory_api.entry_cache(),
        )
        .relay(relay),
    );
    let web = crate::web::routes(crate::web::Web {
        directory: directory_api,
        interfaces: interface_api.clone(),
        audit: audit.clone(),
    });
    let interfaces = InterfaceServiceServer::from_arc(interface_api)
        .max_decoding_message_size(max)
        .max_encoding_message_size(max.max(4 * 1024 * 1024));
    let console_service = ConsoleServiceServer::new(ConsoleApi::new(
        store.clone(),
        auth.clone(),
        LinkSettings::new(&config.console, console_addr),
    ));
    let schemas = SchemaServiceServer::new(SchemaApi::new(store.clone(), auth, registry))
        .max_decoding_message_size(max)
        .max_encoding_message_size(max.max(4 * 1024 * 1024));
    // The console calls these services in process, through the same layers as the network.
    let in_process = InProcess::new(in_process_service(
        tonic::service::Routes::new(directory.clone())
            .add_service(schemas.clone())
            .add_service(exchange.clone())
            .add_service(access.clone())
            .add_service(audit_service.clone())
            .add_service(evaluation.clone())
            .add_service(interfaces.clone()),
        metrics.clone(),
        audit.clone(),
    ));
    let console_routes = crate::console::routes(Console::new(in_process, store.clone(), &config.console));
    crate::console::keep_purging(store.clone(), stopping_tx.subscribe());

    let (health, health_service) = tonic_health::server::health_reporter();
    for service in served_services() {
        health.set_service_status(service, ServingStatus::Serving).await;
    }
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(xinqiao_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection()
        .build_v1()
        .map_err(|e| ServeError::Reflection(e.to_string()))?;
    // Many clients in the field (Python grpcio among them) still speak only v1alpha.
    let reflection_v1alpha = reflection()
        .build_v1alpha()
        .map_err(|e| ServeError::Reflection(e.to_string()))?;

    let (stop, stopped) = oneshot::channel::<()>();
    let router = Server::builder()
        // HTTP/2 streams one connection may hold open at once (hyper's default is unlimited): a
        // client that opens requests and never finishes them holds no more than this.
        .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION)
        // Outermost, so that it counts the status the client gets.
        .layer(MetricsLayer::new(metrics.clone()))
        .layer(AuditLayer::new(audit))
        // Inside the audit layer, so that the trail records the status the caller gets.
        .layer(tower::util::MapResponseLayer::new(callers_fault_statuses))
        // The HTTP edge shares the port and the connection's identity (see `web`).
        .accept_http1(true)
        .add_routes(tonic::service::Routes::from(web.merge(console_routes.clone())))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(directory)
        .add_service(federation)
        .add_service(schemas)
        .add_service(exchange)
        .add_service(access)
        .add_service(audit_service)
        .add_service(evaluation)
        .add_service(interfaces)
        .add_service(console_service);
    if let Some(listener) = console_listener {
        serve_console(listener, config, console_routes, &stopping_tx, handshake_timeout)?;
    }
    let stopped = async {
        let _ = stopped.await;
    };
    let task = match config.benchmark.plaintext_as.clone() {
        None => {
            // Reloads the CRL (and on SIGHUP everything) until the hub stops.
            server_tls.watch(stopping_tx.subscribe());
            tokio::spawn(async move {
                let incoming = tls::incoming(listener, server_tls, handshake_timeout, on_failure);
                router
                    .serve_with_incoming_shutdown(incoming, stopped)
                    .await
                    .map_err(|e| ServeError::Transport(tls::error_chain(&e)))
            })
        }
        Some(principal) => tokio::spawn(async move {
            tracing::warn!("benchmark: serving plaintext, every caller is {principal}");
            let incoming = tls::plaintext_incoming(listener, principal);
            router
                .serve_with_incoming_shutdown(incoming, stopped)
                .await
                .map_err(|e| ServeError::Transport(tls::error_chain(&e)))
        }),
    };
    // Streams that a node left open when it died are ended in the trail; this node's, once it
    // has itself stopped being seen.
    nodes::keep_ending_orphaned_streams(
        store.clone(),
        audit_for_summaries.linker().clone(),
        node.id.clone(),
        stopping_tx.subscribe(),
    );
    let summarizer = refusals::keep_summarising(limiter, audit_for_summaries, stopping_tx.subscribe());
    let announcer = nodes::keep_announced(store.clone(), node, stopping_tx.subscribe());
    let _ = serving.send(true);
    tracing::info!(%addr, "xinqiao hub serving (mTLS)");
    Ok(RunningHub {
        addr,
        store,
        metrics_addr,
        console_addr,
        metrics,
        catalogue_search,
        stop,
        stopping: stopping_tx,
        serving,
        health,
        probes_stop,
        announcer,
        summarizer,
        task,
        grace: config.shutdown_grace(),
    })
}

/// The gRPC services behind the layers a call from the network passes (outermost first: metrics,
/// audit, the status corrections), as one service the console calls in process.
fn in_process_service(routes: tonic::service::Routes, metrics: Metrics, audit: AuditLog) -> InProcessService {
    let service = tower::ServiceBuilder::new()
        .layer(MetricsLayer::new(metrics))
        .layer(AuditLayer::new(audit))
        .layer(tower::util::MapResponseLayer::new(callers_fault_statuses))
        .service(routes);
    tower::util::BoxCloneSyncService::new(service)
}

/// Serves the web console on its own port: TLS with the hub's certificate, client certificates
/// optional (browsers sign in with a link), until the hub stops.
fn serve_console(
    listener: TcpListener,
    config: &Config,
    routes: axum::Router,
    stopping: &watch::Sender<bool>,
    handshake_timeout: std::time::Duration,
) -> Result<(), ServeError> {
    let console_tls =
        tls::ServerTls::load_for_browsers(&config.ca(), &config.cert(), &config.key(), config.crl().as_deref())?;
    console_tls.watch(stopping.subscribe());
    let on_failure: tls::HandshakeFailureHook = Arc::new(|remote, error| {
        tracing::debug!(%remote, %error, "console TLS handshake refused");
    });
    let mut stopped = stopping.subscribe();
    let addr = listener.local_addr().ok();
    tokio::spawn(async move {
        let incoming = tls::incoming(listener, console_tls, handshake_timeout, on_failure);
        let until = async move {
            let _ = stopped.wait_for(|stopping| *stopping).await;
        };
        let served = Server::builder()
            .accept_http1(true)
            .add_routes(tonic::service::Routes::from(routes))
            .serve_with_incoming_shutdown(incoming, until)
            .await;
        if let Err(e) = served {
            tracing::error!(?addr, error = %tls::error_chain(&e), "the console stopped serving");
        }
    });
    Ok(())
}

/// Streams at once on one connection: far above what a department's client needs (one per
/// dataset it follows, a few calls in flight).
const MAX_STREAMS_PER_CONNECTION: u32 = 200;

/// The names the gRPC health service answers for: the whole server ("") and each service.
fn served_services() -> [&'static str; 9] {
    [
        "",
        FederationServiceServer::<FederationApi>::NAME,
        InterfaceServiceServer::<InterfaceApi>::NAME,
        DirectoryServiceServer::<DirectoryApi>::NAME,
        SchemaServiceServer::<SchemaApi>::NAME,
        ExchangeServiceServer::<ExchangeApi>::NAME,
        AccessServiceServer::<AccessApi>::NAME,
        AuditServiceServer::<AuditApi>::NAME,
        EvaluationServiceServer::<EvaluationApi>::NAME,
    ]
}

/// Other hub nodes over the same PostgreSQL tell this one when they change a department, so that
/// its cached copy is forgotten at once rather than when it expires (`cache::FRESH_FOR`).
async fn forget_departments_changed_elsewhere(
    store: &dyn Store,
    auth: Authenticator,
    mut stopping: watch::Receiver<bool>,
) -> Result<(), ServeError> {
    let (tx, mut changed) = tokio::sync::mpsc::channel::<String>(256);
    if !store.listen_departments(tx).await? {
        return Ok(());
    }
    tokio::spawn(async move {
        loop {
            tokio::select! {
                code = changed.recv() => match code {
                    Some(code) => auth.forget_department(&code),
                    None => return,
                },
                _ = stopping.changed() => return,
            }
        }
    });
    Ok(())
}

/// tonic answers a request larger than the decoding limit with OUT_OF_RANGE; gRPC's own status
/// table says RESOURCE_EXHAUSTED, which is what clients retry on and what the hub documents.
/// The framework's own answers to a caller's malformed request, as the statuses they are: a
/// message above the size limit (tonic: OUT_OF_RANGE) is RESOURCE_EXHAUSTED; a request body cut
/// mid-message, without its message or with an unknown compression flag (tonic: INTERNAL) is
/// INVALID_ARGUMENT — the caller's fault, not the hub's.
fn callers_fault_statuses<B>(mut response: http::Response<B>) -> http::Response<B> {
    let headers = response.headers_mut();
    let status = headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let message = headers
        .get("grpc-message")
        .and_then(|m| m.to_str().ok())
        .map(|m| m.replace("%20", " "))
        .unwrap_or_default();
    let corrected = match status {
        "11" if message.contains("too large") => Some("8"),
        "13" if [
            "Unexpected EOF decoding stream",
            "Missing request message",
            "invalid compression flag",
        ]
        .iter()
        .any(|m| message.contains(m)) =>
        {
            Some("3")
        }
        _ => None,
    };
    if let Some(code) = corrected {
        headers.insert("grpc-status", http::HeaderValue::from_static(code));
    }
    response
}

/// Registers the development PKI's sample departments, leaving any already registered alone.
pub async fn register_sample_departments(store: &dyn Store) -> Result<(), xinqiao_domain::Error> {
    for sample in crate::pki::SAMPLE_DEPARTMENTS {
        if store.get_department(sample.code).await?.is_none() {
            let profile = DepartmentProfile {
                code: sample.code.into(),
                name: sample.name.into(),
                division_code: sample.division_code.into(),
                contact: sample.contact.into(),
            };
            store.register_department(&profile, crate::clock::now()).await?;
        }
    }
    Ok(())
}
