//! Mutual TLS: the hub's rustls configuration, the accept loop that turns TCP connections into
//! authenticated TLS streams, and the client side used by the CLI, the demo and the tests.
//!
//! The handshake itself refuses clients without a certificate from the platform CA, and those the
//! CA has revoked. The identity in the certificate's SAN URI is read once per connection and
//! travels with every request on it.
//!
//! The configuration is reloadable ([`ServerTls`]): the certificate revocation list is re-read
//! when its file changes, and everything on SIGHUP. A new handshake uses the configuration current
//! when the TCP connection was accepted. An open connection is checked again on every reload and
//! closed if its certificate is no longer accepted (revoked, or expired meanwhile): a revocation
//! usually means a stolen key, and a connection opened with it must not outlive it.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;
use rustls::{RootCertStore, ServerConfig, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;
use xinqiao_domain::identity::Principal;

use crate::federation::trust::PeerTrust;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("TLS configuration: {0}")]
    Config(String),
}

/// Installs ring as the process's one rustls crypto provider. Idempotent.
pub fn install_crypto_provider() {
    // Err only means a provider is already installed, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| TlsError::File {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

fn file_error(path: &Path, reason: impl Into<String>) -> TlsError {
    TlsError::File {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(path, format!("not a PEM certificate: {e}")))?;
    if certs.is_empty() {
        return Err(file_error(path, "holds no certificate"));
    }
    Ok(certs)
}

/// When a certificate may be used, as an operator checks it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Validity {
    pub subject: String,
    pub not_before: chrono::DateTime<chrono::Utc>,
    pub not_after: chrono::DateTime<chrono::Utc>,
}

/// The validity of every certificate in a PEM file (a CA bundle holds several).
pub fn validity(path: &Path) -> Result<Vec<Validity>, TlsError> {
    certificates(path)?
        .iter()
        .map(|der| {
            let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref())
                .map_err(|e| file_error(path, format!("not an X.509 certificate: {e}")))?;
            let time = |t: x509_parser::time::ASN1Time| {
                chrono::DateTime::from_timestamp(t.timestamp(), 0)
                    .ok_or_else(|| file_error(path, "a validity date out of range"))
            };
            Ok(Validity {
                subject: cert.subject().to_string(),
                not_before: time(cert.validity().not_before)?,
                not_after: time(cert.validity().not_after)?,
            })
        })
        .collect()
}

/// The TLS a hub speaks to a provider's upstream service: the upstream's certificate verified
/// against the CA(s) registered with its interface (never the system's roots: an upstream answers
/// for a department and is trusted as registered), and the hub's own certificate presented when
/// the upstream asks for one.
pub fn upstream_client_config(ca_pem: &str, hub_cert: &Path, hub_key: &Path) -> Result<rustls::ClientConfig, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        let cert = cert.map_err(|e| TlsError::Config(format!("the upstream's CA is not PEM: {e}")))?;
        roots
            .add(cert)
            .map_err(|e| TlsError::Config(format!("the upstream's CA certificate is not usable: {e}")))?;
    }
    if roots.is_empty() {
        return Err(TlsError::Config("no certificate in the upstream's CA".into()));
    }
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_root_certificates(roots)
        .with_client_auth_cert(certificates(hub_cert)?, private_key(hub_key)?)
        .map_err(|e| TlsError::Config(format!("the hub's certificate and key: {e}")))
}

/// The TLS of a provider's upstream as the sample upstream speaks it (the demo, the benchmark
/// and the tests): its certificate, and when `client_ca` is given, a client certificate of that
/// CA required (an upstream that lets only the hub in).
pub fn upstream_server_config(cert: &Path, key: &Path, client_ca: Option<&Path>) -> Result<ServerConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for cert in certificates(ca)? {
                roots.add(cert).map_err(|e| TlsError::Config(e.to_string()))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| TlsError::Config(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    builder
        .with_single_cert(certificates(cert)?, private_key(key)?)
        .map_err(|e| TlsError::Config(e.to_string()))
}

fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read(path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| file_error(path, format!("not a PEM private key: {e}")))
}

/// DER starts with a SEQUENCE tag; anything else is taken for PEM.
const DER_SEQUENCE: u8 = 0x30;

/// Reads the revocation lists in `path` (PEM, one or more `X509 CRL` blocks, or one DER list)
/// and checks that each is signed by a CA in `cas`. A list that is not would either be ignored
/// by the verifier or lock every client out, so it is refused here, where the previous
/// configuration can stay in force.
fn revocation_lists(
    path: &Path,
    cas: &[CertificateDer<'static>],
    ca_path: &Path,
) -> Result<Vec<CertificateRevocationListDer<'static>>, TlsError> {
    let bytes = read(path)?;
    let lists = if bytes.first() == Some(&DER_SEQUENCE) {
        vec![CertificateRevocationListDer::from(bytes)]
    } else {
        CertificateRevocationListDer::pem_slice_iter(&bytes)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| file_error(path, format!("not a PEM CRL: {e}")))?
    };
    if lists.is_empty() {
        return Err(file_error(
            path,
            "holds no certificate revocation list (PEM \"-----BEGIN X509 CRL-----\" or DER)",
        ));
    }
    let cas = cas
        .iter()
        .map(|der| x509_parser::parse_x509_certificate(der.as_ref()).map(|(_, cert)| cert))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(ca_path, format!("not an X.509 certificate: {e}")))?;
    // A list names its CA by subject; with two CAs of one name, the verifier would check one CA's
    // list with the other's key and refuse that CA's clients.
    for (i, a) in cas.iter().enumerate() {
        if let Some(b) = cas[..i].iter().find(|b| b.subject().as_raw() == a.subject().as_raw()) {
            return Err(file_error(
                ca_path,
                format!(
                    "two CAs are both named '{}': revocation lists are matched to CAs by name, so each CA of the bundle needs its own",
                    b.subject()
                ),
            ));
        }
    }
    let mut covered = vec![false; cas.len()];
    for (n, der) in lists.iter().enumerate() {
        let which = if lists.len() == 1 {
            String::new()
        } else {
            format!("CRL {} of {}: ", n + 1, lists.len())
        };
        let (rest, list) = x509_parser::parse_x509_crl(der.as_ref())
            .map_err(|e| file_error(path, format!("{which}not an X.509 CRL: {e}")))?;
        if !rest.is_empty() {
            return Err(file_error(path, format!("{which}trailing bytes after the CRL")));
        }
        // Signature checks come from x509-parser's `verify` feature, which rcgen's `ring`
        // feature turns on.
        let signer = cas.iter().position(|ca| {
            ca.subject().as_raw() == list.issuer().as_raw() && list.verify_signature(ca.public_key()).is_ok()
        });
        let Some(signer) = signer else {
            return Err(file_error(
                path,
                format!(
                    "{which}issued by {}, but not signed by a CA in {}",
                    list.issuer(),
                    ca_path.display()
                ),
            ));
        };
        covered[signer] = true;
        if let Some(next) = list.next_update()
            && next.timestamp() < unix_now()
        {
            // Still used: an old list names every certificate revoked up to its date, and
            // refusing every client over a late list would be worse.
            tracing::warn!(crl = %path.display(), issuer = %list.issuer(), next_update = %next, "the CRL is past its next update; publish a fresh one");
        }
    }
    for (ca, covered) in cas.iter().zip(covered) {
        if !covered {
            tracing::warn!(crl = %path.display(), ca = %ca.subject(), "no CRL for this CA: its clients are refused (revocation status unknown)");
        }
    }
    Ok(lists)
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The files the hub's TLS configuration is built from.
#[derive(Debug, Clone)]
struct ServerFiles {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    crl: Option<PathBuf>,
    /// Client certificates optional (the web console's own port): a browser without one is let
    /// in, with no identity; one that presents a certificate is verified as on the hub's port.
    certificate_optional: bool,
}

/// One built configuration, and its client verifier, kept to check open connections again.
struct Active {
    config: Arc<ServerConfig>,
    verifier: Arc<dyn ClientCertVerifier>,
    /// The files as they were just before they were read, for the watcher to compare against.
    seen: Vec<Fingerprint>,
}

impl ServerFiles {
    /// The hub's TLS configuration: its own certificate, and client certificates required,
    /// verified against the platform CA and checked against its revocation list.
    fn build(&self) -> Result<Active, TlsError> {
        self.build_with(&PeerTrust::default())
    }

    /// Like `build`, with the registered peer hubs' CAs trusted for their hub identities.
    fn build_with(&self, peers: &PeerTrust) -> Result<Active, TlsError> {
        install_crypto_provider();
        // Taken before reading: a change made while building shows as a change afterwards.
        let seen = self.fingerprints();
        let cas = certificates(&self.ca)?;
        let mut roots = RootCertStore::empty();
        for ca_cert in &cas {
            roots
                .add(ca_cert.clone())
                .map_err(|e| file_error(&self.ca, e.to_string()))?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
        if let Some(crl) = &self.crl {
            // Defaults kept on purpose: every certificate of the chain below the CA is checked,
            // and one whose status no list gives is refused.
            verifier = verifier.with_crls(revocation_lists(crl, &cas, &self.ca)?);
        }
        if self.certificate_optional {
            verifier = verifier.allow_unauthenticated();
        }
        let verifier = verifier.build().map_err(|e| match (&self.crl, e) {
            (Some(crl), rustls::server::VerifierBuilderError::InvalidCrl(e)) => {
                file_error(crl, rustls::Error::from(e).to_string())
            }
            (_, e) => TlsError::Config(e.to_string()),
        })?;
        let verifier = peers.wrap(verifier);
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_client_cert_verifier(verifier.clone())
            .with_single_cert(certificates(&self.cert)?, private_key(&self.key)?)
            .map_err(|e| TlsError::Config(format!("server certificate and key: {e}")))?;
        // HTTP/1.1 too: the HTTP edge (`web`) serves plain HTTP+JSON clients on the same port.
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Active {
            config: Arc::new(config),
            verifier,
            seen,
        })
    }

    /// Every file the configuration is built from, in a fixed order.
    fn fingerprints(&self) -> Vec<Fingerprint> {
        [Some(&self.ca), Some(&self.cert), Some(&self.key), self.crl.as_ref()]
            .into_iter()
            .flatten()
            .map(|p| Fingerprint::of(p))
            .collect()
    }
}

/// How often the watcher looks at the TLS files.
const FILES_POLL: Duration = Duration::from_secs(2);

/// The hub's server TLS configuration, reloadable while the hub serves. Clones share it.
#[derive(Clone)]
pub struct ServerTls {
    files: Arc<ServerFiles>,
    /// The configuration in force. A watch channel is a lock that also tells open connections
    /// that a new configuration arrived.
    active: Arc<watch::Sender<Active>>,
    /// One reload at a time, so that a slower reload of older files cannot replace a newer one.
    /// It also holds the peer hubs' CAs in force (平台级联), which every reload keeps.
    reloading: Arc<std::sync::Mutex<PeerTrust>>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl ServerTls {
    /// Builds the configuration from the CA that client certificates must chain to, the hub's
    /// certificate and key, and optionally the CA's certificate revocation list (PEM or DER).
    /// Any of them missing or invalid is an error: the hub does not start half-protected.
    pub fn load(ca: &Path, cert: &Path, key: &Path, crl: Option<&Path>) -> Result<ServerTls, TlsError> {
        Self::load_files(ServerFiles {
            ca: ca.to_path_buf(),
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            crl: crl.map(Path::to_path_buf),
            certificate_optional: false,
        })
    }

    /// Like [`ServerTls::load`] for the web console's own port, where browsers come without a
    /// client certificate (and sign in with a link); a certificate presented is still verified.
    pub fn load_for_browsers(ca: &Path, cert: &Path, key: &Path, crl: Option<&Path>) -> Result<ServerTls, TlsError> {
        Self::load_files(ServerFiles {
            ca: ca.to_path_buf(),
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            crl: crl.map(Path::to_path_buf),
            certificate_optional: true,
        })
    }

    fn load_files(files: ServerFiles) -> Result<ServerTls, TlsError> {
        let active = files.build()?;
        Ok(ServerTls {
            files: Arc::new(files),
            active: Arc::new(watch::Sender::new(active)),
            reloading: Arc::default(),
        })
    }

    /// The configuration in force, for the next handshake.
    pub fn current(&self) -> Arc<ServerConfig> {
        self.active.borrow().config.clone()
    }

    /// The revocation list file, if one is configured.
    pub fn crl(&self) -> Option<&Path> {
        self.files.crl.as_deref()
    }

    /// Reads every file again and puts the new configuration in force. On any error the
    /// previous configuration stays: a broken CRL update must never let revoked certificates in.
    pub fn reload(&self) -> Result<(), TlsError> {
        // The guard protects no data, so a panic while it was held leaves nothing inconsistent.
        let peers = self.reloading.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let active = self.files.build_with(&peers)?;
        self.active.send_replace(active);
        Ok(())
    }

    /// Puts the registered peer hubs' CAs in force (each for its hub's identity only), for new
    /// handshakes and, as on any reload, for open connections: a removed peer's are closed.
    pub fn trust_peers(&self, trust: PeerTrust) -> Result<(), TlsError> {
        let mut peers = self.reloading.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let active = self.files.build_with(&trust)?;
        *peers = trust;
        self.active.send_replace(active);
        Ok(())
    }

    /// Reloads when the CRL file changes (looked at every two seconds) and on SIGHUP, which also
    /// picks up a renewed hub certificate or CA file. Failures are logged and the previous
    /// configuration kept. Ends when `stopping` turns true or its sender is dropped.
    pub fn watch(&self, mut stopping: watch::Receiver<bool>) -> JoinHandle<()> {
        let tls = self.clone();
        tokio::spawn(async move {
            let mut hangups = hangups();
            let mut seen = tls.active.borrow().seen.clone();
            let mut ticks = tokio::time::interval(FILES_POLL);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                let why = tokio::select! {
                    changed = stopping.changed() => {
                        if changed.is_err() || *stopping.borrow() {
                            break;
                        }
                        continue;
                    }
                    () = next_hangup(&mut hangups) => {
                        // Whatever the files hold now is what this reload reads.
                        seen = tls.files.fingerprints();
                        "SIGHUP"
                    }
                    _ = ticks.tick() => {
                        // The CA bundle, the hub's certificate and key, and the CRL: a renewed
                        // certificate (cert-manager swaps the files), a CA added for rotation or
                        // a new revocation list takes effect without a signal or a restart.
                        let now = tls.files.fingerprints();
                        if now == seen {
                            continue;
                        }
                        // Remembered even if the reload fails: a broken file is reported once,
                        // and read again when it changes again.
                        seen = now;
                        "a TLS file changed"
                    }
                };
                match tls.reload() {
                    Ok(()) => tracing::info!(reason = why, crl = ?tls.crl(), "TLS configuration reloaded"),
                    Err(e) => tracing::error!(
                        reason = why,
                        error = %e,
                        "TLS configuration not reloaded; the previous one, with its revocation list, stays in force"
                    ),
                }
            }
        })
    }

    fn subscribe(&self) -> watch::Receiver<Active> {
        self.active.subscribe()
    }
}

/// What the watcher compares to notice that the CRL file changed. A missing or unreadable file
/// counts as a change too, so that its return is noticed.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Fingerprint(Option<(Option<SystemTime>, u64, u64)>);

impl Fingerprint {
    fn of(path: &Path) -> Fingerprint {
        Fingerprint(std::fs::metadata(path).ok().map(|m| {
            // A file replaced by rename (the safe way to publish a list) has a new inode even
            // when its size and time are the same.
            #[cfg(unix)]
            let inode = std::os::unix::fs::MetadataExt::ino(&m);
            #[cfg(not(unix))]
            let inode = 0;
            (m.modified().ok(), m.len(), inode)
        }))
    }
}

#[cfg(unix)]
type Hangups = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Hangups = Option<()>;

fn hangups() -> Hangups {
    #[cfg(unix)]
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(signal) => Some(signal),
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP; the CRL file is still watched");
            None
        }
    }
    #[cfg(not(unix))]
    None
}

async fn next_hangup(hangups: &mut Hangups) {
    #[cfg(unix)]
    if let Some(signal) = hangups
        && signal.recv().await.is_some()
    {
        return;
    }
    #[cfg(not(unix))]
    let _ = hangups;
    std::future::pending().await
}

/// What the hub knows about a connection, attached to every request made on it.
#[derive(Debug, Clone)]
pub struct PeerInfo {
    pub remote: SocketAddr,
    /// The identity named by the client certificate, if it names exactly one.
    pub principal: Option<Principal>,
}

/// Reads the xinqiao identity from a certificate's SAN URIs.
pub fn principal_of(cert: &CertificateDer<'_>) -> Option<Principal> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let san = parsed.subject_alternative_name().ok()??;
    let uris = san.value.general_names.iter().filter_map(|name| match name {
        x509_parser::extensions::GeneralName::URI(uri) => Some(*uri),
        _ => None,
    });
    Principal::from_uris(uris)
}

/// A server-side TLS connection whose client certificate has been verified.
pub struct TlsConnection {
    stream: tokio_rustls::server::TlsStream<TcpStream>,
    info: PeerInfo,
    recheck: Option<Recheck>,
    /// Set once a reload no longer accepted the certificate: every read and write fails after.
    refused: Option<String>,
}

/// Checks an open connection's certificate again whenever the TLS configuration is reloaded.
struct Recheck {
    /// The client's certificate chain, as presented in the handshake.
    chain: Vec<CertificateDer<'static>>,
    next: ConfigChange,
    on_refused: HandshakeFailureHook,
}

/// Completes with the receiver when a new configuration is in force; `None` once the hub's
/// TLS configuration is gone (the hub stopped).
type ConfigChange = Pin<Box<dyn Future<Output = Option<watch::Receiver<Active>>> + Send>>;

fn next_config(mut active: watch::Receiver<Active>) -> ConfigChange {
    Box::pin(async move { active.changed().await.ok().map(|()| active) })
}

impl TlsConnection {
    /// Fails once the client's certificate is no longer accepted. Registers the task's waker
    /// with the configuration, so an idle connection is also closed at the reload, not at its
    /// next request.
    fn still_accepted(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        if let Some(reason) = &self.refused {
            return Err(io::Error::new(io::ErrorKind::PermissionDenied, reason.clone()));
        }
        let Some(recheck) = &mut self.recheck else {
            return Ok(());
        };
        loop {
            let active = match recheck.next.as_mut().poll(cx) {
                Poll::Pending => return Ok(()),
                Poll::Ready(None) => {
                    self.recheck = None;
                    return Ok(());
                }
                Poll::Ready(Some(active)) => active,
            };
            let verdict = match recheck.chain.split_first() {
                Some((end_entity, intermediates)) => active
                    .borrow()
                    .verifier
                    .verify_client_cert(end_entity, intermediates, UnixTime::now())
                    .map(|_| ()),
                None => Ok(()),
            };
            if let Err(e) = verdict {
                let error = io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    format!("client certificate no longer accepted after a TLS reload, connection closed: {e}"),
                );
                (recheck.on_refused)(self.info.remote, &error);
                self.refused = Some(error.to_string());
                self.recheck = None;
                return Err(error);
            }
            recheck.next = next_config(active);
        }
    }
}

impl Connected for TlsConnection {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> PeerInfo {
        self.info.clone()
    }
}

impl AsyncRead for TlsConnection {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        self.still_accepted(cx)?;
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConnection {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.still_accepted(cx)?;
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.still_accepted(cx)?;
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// A plaintext connection whose identity is fixed in advance: the benchmark's TLS baseline only.
pub struct PlainConnection {
    stream: TcpStream,
    info: PeerInfo,
}

impl Connected for PlainConnection {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> PeerInfo {
        self.info.clone()
    }
}

impl AsyncRead for PlainConnection {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for PlainConnection {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// Accepts plaintext connections, each attributed to `principal`. For the benchmark only.
pub fn plaintext_incoming(
    listener: TcpListener,
    principal: Principal,
) -> ReceiverStream<Result<PlainConnection, io::Error>> {
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                () = tx.closed() => break,
            };
            match accepted {
                Ok((stream, remote)) => {
                    let _ = stream.set_nodelay(true);
                    let info = PeerInfo {
                        remote,
                        principal: Some(principal.clone()),
                    };
                    if tx.send(Ok(PlainConnection { stream, info })).await.is_err() {
                        break;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    });
    ReceiverStream::new(rx)
}

/// Called for each connection the TLS layer refuses: a failed handshake (no certificate, another
/// CA, expired, revoked…), and an open connection closed because a reloaded configuration no
/// longer accepts its certificate (error kind `PermissionDenied`).
pub type HandshakeFailureHook = Arc<dyn Fn(SocketAddr, &io::Error) + Send + Sync>;

/// Accepts TCP connections and completes TLS handshakes concurrently, so that one slow or hostile
/// client cannot hold up the others. Yields only connections with a verified client certificate.
/// Each handshake uses the configuration in force when its TCP connection was accepted; open
/// connections are checked again on every reload of `tls`. The accept loop ends when the
/// returned stream is dropped (the server stopped).
pub fn incoming(
    listener: TcpListener,
    tls: ServerTls,
    handshake_timeout: Duration,
    on_failure: HandshakeFailureHook,
) -> ReceiverStream<Result<TlsConnection, io::Error>> {
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                () = tx.closed() => break,
            };
            let (tcp, remote) = match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: back off briefly rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            // Subscribed before the handshake, so that a reload during it is checked afterwards.
            let changes = tls.subscribe();
            let acceptor = TlsAcceptor::from(changes.borrow().config.clone());
            let tx = tx.clone();
            let on_failure = on_failure.clone();
            tokio::spawn(async move {
                let handshake = tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await;
                let stream = match handshake {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(e)) => return on_failure(remote, &e),
                    Err(_) => {
                        return on_failure(
                            remote,
                            &io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out"),
                        );
                    }
                };
                let chain = stream
                    .get_ref()
                    .1
                    .peer_certificates()
                    .map(<[_]>::to_vec)
                    .unwrap_or_default();
                let principal = chain.first().and_then(principal_of);
                let _ = tx
                    .send(Ok(TlsConnection {
                        stream,
                        info: PeerInfo { remote, principal },
                        recheck: Some(Recheck {
                            chain,
                            next: next_config(changes),
                            on_refused: on_failure,
                        }),
                        refused: None,
                    }))
                    .await;
            });
        }
    });
    ReceiverStream::new(rx)
}

/// Where a client finds the hub and its own certificate.
#[derive(Debug, Clone)]
pub struct ClientIdentity {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Connects to a hub over mutual TLS. `hub` is `https://host:port` (a bare `host:port` is taken
/// as https).
pub async fn connect(hub: &str, identity: &ClientIdentity) -> Result<tonic::transport::Channel, ConnectError> {
    install_crypto_provider();
    let uri = if hub.contains("://") {
        hub.to_string()
    } else {
        format!("https://{hub}")
    };
    let ca = read(&identity.ca)?;
    let cert = read(&identity.cert)?;
    let key = read(&identity.key)?;
    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(ca))
        .identity(tonic::transport::Identity::from_pem(cert, key));
    let endpoint = tonic::transport::Endpoint::from_shared(uri.clone())
        .map_err(|e| ConnectError::Address(format!("{uri}: {e}")))?
        .tls_config(tls)
        .map_err(|e| ConnectError::Tls(e.to_string()))?
        .connect_timeout(Duration::from_secs(10));
    endpoint
        .connect()
        .await
        .map_err(|e| ConnectError::Connect(format!("{uri}: {}", error_chain(&e))))
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error(transparent)]
    File(#[from] TlsError),
    #[error("bad hub address {0}")]
    Address(String),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("cannot connect to {0}")]
    Connect(String),
}

/// An error with its causes, for messages a person reads.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_stream::StreamExt;

    use super::*;
    use crate::pki::{self, CertFiles, SAMPLE_DEPARTMENTS};

    fn samr(dir: &Path) -> CertFiles {
        pki::department_files(dir, SAMPLE_DEPARTMENTS[0].code)
    }

    fn police(dir: &Path) -> CertFiles {
        pki::department_files(dir, SAMPLE_DEPARTMENTS[1].code)
    }

    fn dev_pki() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        pki::init(dir.path(), &[]).unwrap();
        dir
    }

    fn load(dir: &Path, crl: Option<&Path>) -> Result<ServerTls, TlsError> {
        let server = pki::server_files(dir);
        ServerTls::load(&pki::ca_cert_path(dir), &server.cert, &server.key, crl)
    }

    fn client(dir: &Path, files: &CertFiles) -> Arc<rustls::ClientConfig> {
        let mut roots = RootCertStore::empty();
        for ca in certificates(&pki::ca_cert_path(dir)).unwrap() {
            roots.add(ca).unwrap();
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_client_auth_cert(certificates(&files.cert).unwrap(), private_key(&files.key).unwrap())
            .unwrap();
        Arc::new(config)
    }

    fn localhost() -> rustls::pki_types::ServerName<'static> {
        rustls::pki_types::ServerName::try_from("localhost").unwrap()
    }

    /// One handshake in memory; the server's verdict.
    async fn handshake(server: Arc<ServerConfig>, client: Arc<rustls::ClientConfig>) -> Result<(), String> {
        let (client_io, server_io) = tokio::io::duplex(64 * 1024);
        let connector = tokio_rustls::TlsConnector::from(client);
        let (_client, server) = tokio::join!(
            connector.connect(localhost(), client_io),
            TlsAcceptor::from(server).accept(server_io)
        );
        server.map(drop).map_err(|e| e.to_string())
    }

    #[tokio::test]
    async fn a_revoked_certificate_is_refused_after_a_reload() {
        let dir = dev_pki();
        let dir = dir.path();
        let tls = load(dir, Some(&pki::crl_path(dir))).unwrap();
        assert_eq!(handshake(tls.current(), client(dir, &samr(dir))).await, Ok(()));

        pki::revoke(dir, &samr(dir).cert, Some(pki::RevocationReason::KeyCompromise)).unwrap();
        // The list in force is the one last loaded.
        assert_eq!(handshake(tls.current(), client(dir, &samr(dir))).await, Ok(()));
        tls.reload().unwrap();
        let refused = handshake(tls.current(), client(dir, &samr(dir))).await.unwrap_err();
        assert!(refused.contains("Revoked"), "{refused}");
        assert_eq!(handshake(tls.current(), client(dir, &police(dir))).await, Ok(()));
    }

    #[tokio::test]
    async fn without_a_crl_nothing_is_revoked() {
        let dir = dev_pki();
        let dir = dir.path();
        pki::revoke(dir, &samr(dir).cert, None).unwrap();
        let tls = load(dir, None).unwrap();
        assert_eq!(tls.crl(), None);
        assert_eq!(handshake(tls.current(), client(dir, &samr(dir))).await, Ok(()));
    }

    #[tokio::test]
    async fn a_der_crl_is_read_too() {
        let dir = dev_pki();
        let dir = dir.path();
        pki::revoke(dir, &samr(dir).cert, None).unwrap();
        let pem = std::fs::read(pki::crl_path(dir)).unwrap();
        let der = CertificateRevocationListDer::from_pem_slice(&pem).unwrap();
        let der_path = dir.join("crl.der");
        std::fs::write(&der_path, der.as_ref()).unwrap();
        let tls = load(dir, Some(&der_path)).unwrap();
        assert!(handshake(tls.current(), client(dir, &samr(dir))).await.is_err());
        assert_eq!(handshake(tls.current(), client(dir, &police(dir))).await, Ok(()));
    }

    #[tokio::test]
    async fn a_broken_crl_keeps_the_previous_configuration() {
        let dir = dev_pki();
        let dir = dir.path();
        let crl = pki::crl_path(dir);
        pki::revoke(dir, &samr(dir).cert, None).unwrap();
        let tls = load(dir, Some(&crl)).unwrap();
        let before = tls.current();

        let other = dev_pki();
        let foreign = std::fs::read(pki::crl_path(other.path())).unwrap();
        let certificate = std::fs::read(samr(dir).cert).unwrap();
        let valid = std::fs::read(&crl).unwrap();
        let truncated = valid[..valid.len() / 2].to_vec();
        let cases: [(&str, Option<Vec<u8>>, &str); 5] = [
            (
                "garbage",
                Some(b"not a list at all".to_vec()),
                "holds no certificate revocation list",
            ),
            ("truncated", Some(truncated), "not a PEM CRL"),
            (
                "a certificate",
                Some(certificate),
                "holds no certificate revocation list",
            ),
            ("another CA's list", Some(foreign), "not signed by a CA"),
            ("no file", None, "No such file"),
        ];
        for (what, contents, expected) in cases {
            match contents {
                Some(bytes) => std::fs::write(&crl, bytes).unwrap(),
                None => std::fs::remove_file(&crl).unwrap(),
            }
            let error = tls.reload().unwrap_err().to_string();
            assert!(error.contains(expected), "{what}: {error}");
            assert!(error.contains("crl.pem"), "{what} names the file: {error}");
            assert!(
                Arc::ptr_eq(&before, &tls.current()),
                "{what} replaced the configuration"
            );
            assert!(
                handshake(tls.current(), client(dir, &samr(dir))).await.is_err(),
                "{what}"
            );
            assert_eq!(
                handshake(tls.current(), client(dir, &police(dir))).await,
                Ok(()),
                "{what}"
            );
        }
        // And the hub does not start on one.
        assert!(load(dir, Some(&crl)).is_err());
    }

    type Refusals = Arc<Mutex<Vec<(io::ErrorKind, String)>>>;

    fn recording_hook() -> (HandshakeFailureHook, Refusals) {
        let refusals = Refusals::default();
        let recorded = refusals.clone();
        let hook: HandshakeFailureHook = Arc::new(move |_, error| {
            recorded.lock().unwrap().push((error.kind(), error.to_string()));
        });
        (hook, refusals)
    }

    async fn open(addr: SocketAddr, client: Arc<rustls::ClientConfig>) -> tokio_rustls::client::TlsStream<TcpStream> {
        let tcp = TcpStream::connect(addr).await.unwrap();
        tokio_rustls::TlsConnector::from(client)
            .connect(localhost(), tcp)
            .await
            .unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_open_connection_is_closed_when_its_certificate_is_revoked() {
        let dir = dev_pki();
        let dir = dir.path();
        let tls = load(dir, Some(&pki::crl_path(dir))).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (hook, refusals) = recording_hook();
        let mut accepted = incoming(listener, tls.clone(), Duration::from_secs(5), hook);

        let mut samr_client = open(addr, client(dir, &samr(dir))).await;
        let mut samr_server = accepted.next().await.unwrap().unwrap();
        let mut police_client = open(addr, client(dir, &police(dir))).await;
        let mut police_server = accepted.next().await.unwrap().unwrap();
        let mut byte = [0u8; 1];
        samr_client.write_all(b"a").await.unwrap();
        samr_server.read_exact(&mut byte).await.unwrap();

        pki::revoke(dir, &samr(dir).cert, None).unwrap();
        tls.reload().unwrap();
        // The client sends nothing: the reload alone ends the connection.
        let cut = tokio::time::timeout(Duration::from_secs(5), samr_server.read(&mut byte))
            .await
            .expect("the revoked connection is closed at the reload")
            .unwrap_err();
        assert_eq!(cut.kind(), io::ErrorKind::PermissionDenied);
        assert!(samr_server.write_all(b"b").await.is_err(), "it stays closed");
        let refusals = refusals.lock().unwrap().clone();
        assert_eq!(refusals.len(), 1, "{refusals:?}");
        assert_eq!(refusals[0].0, io::ErrorKind::PermissionDenied);
        assert!(refusals[0].1.contains("Revoked"), "{}", refusals[0].1);

        police_client.write_all(b"c").await.unwrap();
        police_server.read_exact(&mut byte).await.unwrap();
        assert_eq!(&byte, b"c");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_new_handshake_after_a_reload_is_refused_and_reported() {
        let dir = dev_pki();
        let dir = dir.path();
        let tls = load(dir, Some(&pki::crl_path(dir))).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (hook, refusals) = recording_hook();
        let _accepted = incoming(listener, tls.clone(), Duration::from_secs(5), hook);
        pki::revoke(dir, &samr(dir).cert, None).unwrap();
        tls.reload().unwrap();

        // TLS 1.3: the client's handshake may complete before the hub has checked its
        // certificate; it learns of the refusal on its next read.
        let tcp = TcpStream::connect(addr).await.unwrap();
        if let Ok(mut stream) = tokio_rustls::TlsConnector::from(client(dir, &samr(dir)))
            .connect(localhost(), tcp)
            .await
        {
            let _ = stream.write_all(b"a").await;
            assert!(!matches!(stream.read(&mut [0u8; 1]).await, Ok(1)));
        }
        for _ in 0..50 {
            if !refusals.lock().unwrap().is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let refusals = refusals.lock().unwrap().clone();
        assert_eq!(refusals.len(), 1, "{refusals:?}");
        assert!(refusals[0].1.contains("Revoked"), "{}", refusals[0].1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_watcher_reloads_a_changed_crl_and_stops_with_the_hub() {
        let dir = dev_pki();
        let dir = dir.path();
        let tls = load(dir, Some(&pki::crl_path(dir))).unwrap();
        let (stop, stopping) = watch::channel(false);
        let watcher = tls.watch(stopping);

        pki::revoke(dir, &samr(dir).cert, None).unwrap();
        let mut refused = false;
        for _ in 0..50 {
            if handshake(tls.current(), client(dir, &samr(dir))).await.is_err() {
                refused = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert!(refused, "the revocation was not picked up within 10 s");

        stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(5), watcher)
            .await
            .expect("the watcher stops with the hub")
            .unwrap();
    }

    #[test]
    fn a_missing_or_foreign_crl_stops_the_start() {
        let dir = dev_pki();
        let dir = dir.path();
        let missing = load(dir, Some(&dir.join("nowhere.pem"))).unwrap_err().to_string();
        assert!(missing.contains("nowhere.pem"), "{missing}");
        let other = dev_pki();
        let foreign = load(dir, Some(&pki::crl_path(other.path()))).unwrap_err().to_string();
        assert!(foreign.contains("not signed by a CA"), "{foreign}");
    }
}

// ---------------------------------------------------------------------------------------------
// Signatures of the audit trail's anchors

/// What the hub signed, with which certificate's key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed {
    /// The hub's certificate, PEM.
    pub certificate: String,
    /// The TLS 1.3 name of the signature scheme (`ECDSA_NISTP256_SHA256`, `ED25519`, ...).
    pub scheme: String,
    pub signature: Vec<u8>,
}

/// Schemes an anchor may be signed with, in the hub's order of preference.
const ANCHOR_SCHEMES: [SignatureScheme; 6] = [
    SignatureScheme::ECDSA_NISTP256_SHA256,
    SignatureScheme::ECDSA_NISTP384_SHA384,
    SignatureScheme::ED25519,
    SignatureScheme::RSA_PSS_SHA256,
    SignatureScheme::RSA_PSS_SHA384,
    SignatureScheme::RSA_PSS_SHA512,
];

/// Signs `message` with the hub's private key (the one its TLS certificate certifies), read from
/// the files now, so that a renewed certificate signs from the moment it is in place.
pub fn sign_with_hub_key(cert: &Path, key: &Path, message: &[u8]) -> Result<Signed, TlsError> {
    let chain = certificates(cert)?;
    let signing_key = rustls::crypto::ring::sign::any_supported_type(&private_key(key)?)
        .map_err(|e| file_error(key, format!("cannot sign with this key: {e}")))?;
    let signer = signing_key
        .choose_scheme(&ANCHOR_SCHEMES)
        .ok_or_else(|| file_error(key, "the key supports none of the anchor signature schemes"))?;
    let signature = signer
        .sign(message)
        .map_err(|e| TlsError::Config(format!("signing failed: {e}")))?;
    let first = chain.first().ok_or_else(|| file_error(cert, "holds no certificate"))?;
    Ok(Signed {
        certificate: pem_certificate(first.as_ref()),
        scheme: format!("{:?}", signer.scheme()),
        signature,
    })
}

fn pem_certificate(der: &[u8]) -> String {
    use base64::Engine as _;
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in body.as_bytes().chunks(64) {
        pem.push_str(&String::from_utf8_lossy(line));
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    pem
}

/// Checks that `signed` is a signature over `message` by a hub certificate of this platform:
/// issued by one of the CAs in `ca_bundle`, for serving (serverAuth), and that the signature
/// verifies with its key. Why not, otherwise.
pub fn verify_hub_signature(ca_bundle: &Path, message: &[u8], signed: &Signed) -> Result<(), String> {
    let der = CertificateDer::pem_slice_iter(signed.certificate.as_bytes())
        .next()
        .ok_or("the anchor holds no certificate")?
        .map_err(|e| format!("the anchor's certificate is not PEM: {e}"))?;
    let (_, cert) =
        x509_parser::parse_x509_certificate(der.as_ref()).map_err(|e| format!("the anchor's certificate: {e}"))?;
    let serves = cert
        .extended_key_usage()
        .ok()
        .flatten()
        .is_some_and(|eku| eku.value.server_auth);
    if !serves {
        return Err("the anchor is signed by a certificate that is not a hub's (no serverAuth usage)".into());
    }
    let cas = certificates(ca_bundle).map_err(|e| e.to_string())?;
    let issued = cas.iter().any(|ca| {
        x509_parser::parse_x509_certificate(ca.as_ref()).is_ok_and(|(_, ca)| {
            ca.subject().as_raw() == cert.issuer().as_raw() && cert.verify_signature(Some(ca.public_key())).is_ok()
        })
    });
    if !issued {
        return Err("the anchor's certificate was not issued by this platform's CA".into());
    }
    let scheme = ANCHOR_SCHEMES
        .into_iter()
        .find(|s| format!("{s:?}") == signed.scheme)
        .ok_or_else(|| format!("unknown signature scheme '{}'", signed.scheme))?;
    let algorithms = rustls::crypto::ring::default_provider().signature_verification_algorithms;
    let candidates = algorithms
        .mapping
        .iter()
        .find(|(s, _)| *s == scheme)
        .map(|(_, algs)| *algs)
        .unwrap_or_default();
    let end_entity = webpki::EndEntityCert::try_from(&der).map_err(|e| format!("the anchor's certificate: {e}"))?;
    if candidates
        .iter()
        .any(|alg| end_entity.verify_signature(*alg, message, &signed.signature).is_ok())
    {
        Ok(())
    } else {
        Err("the anchor's signature does not verify: the anchor was altered or not signed by that hub".into())
    }
}
