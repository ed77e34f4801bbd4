//! Trust across platforms: a registered peer hub may be under another platform's CA. Its CA is
//! trusted for that hub's identity alone — never for a department, an admin or another hub — on
//! the server side (its client certificate) and when this hub calls it (its server certificate).

use std::sync::Arc;
use std::time::Duration;

use rustls::DistinguishedName;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use xinqiao_domain::federation::PeerHub;
use xinqiao_domain::identity::Principal;
use xinqiao_domain::{Error, Result};

use crate::tls::principal_of;

/// The peer hubs' CAs in force, each for its hub's identity only. Empty: only the platform CA.
#[derive(Debug, Clone, Default)]
pub struct PeerTrust {
    peers: Vec<(String, Arc<dyn ClientCertVerifier>)>,
    hints: Vec<DistinguishedName>,
}

impl PeerTrust {
    /// The trust for these peers. A peer whose CA bundle is unusable is left out (and logged):
    /// its calls are refused, the others' are not.
    pub fn of(peers: &[PeerHub]) -> PeerTrust {
        let mut trust = PeerTrust::default();
        for peer in peers {
            match client_verifier(&peer.ca_pem) {
                Ok(verifier) => {
                    trust.hints.extend(verifier.root_hint_subjects().iter().cloned());
                    trust.peers.push((peer.division_code.clone(), verifier));
                }
                Err(e) => {
                    tracing::error!(peer = %peer.division_code, error = %e, "the peer hub's CA bundle is unusable; its calls are refused")
                }
            }
        }
        trust
    }

    /// The platform's verifier, extended to the peers' CAs.
    pub fn wrap(&self, platform: Arc<dyn ClientCertVerifier>) -> Arc<dyn ClientCertVerifier> {
        if self.peers.is_empty() {
            return platform;
        }
        let mut hints = platform.root_hint_subjects().to_vec();
        hints.extend(self.hints.iter().cloned());
        Arc::new(WithPeers {
            platform,
            peers: self.peers.clone(),
            hints,
        })
    }
}

/// The certificates of a CA bundle (PEM), checked to be usable as trust anchors.
pub fn ca_certificates(ca_pem: &str) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_slice_iter(ca_pem.as_bytes())
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::invalid("ca_pem", format!("is not PEM: {e}")))?;
    if certs.is_empty() {
        return Err(Error::invalid("ca_pem", "holds no certificate"));
    }
    let mut roots = RootCertStore::empty();
    for cert in &certs {
        roots
            .add(cert.clone())
            .map_err(|e| Error::invalid("ca_pem", format!("holds a certificate that is no CA: {e}")))?;
    }
    Ok(certs)
}

fn client_verifier(ca_pem: &str) -> Result<Arc<dyn ClientCertVerifier>> {
    let mut roots = RootCertStore::empty();
    for cert in ca_certificates(ca_pem)? {
        roots.add(cert).map_err(|e| Error::invalid("ca_pem", e.to_string()))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    // No revocation list: a peer's CA publishes its own, which this hub does not hold. A peer is
    // cut off by removing it (`peer remove`), which takes effect on open connections too.
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .map_err(|e| Error::invalid("ca_pem", e.to_string()))?;
    Ok(verifier)
}

/// The platform's verifier first; a certificate it refuses is taken if it names a registered
/// peer hub and chains to the CA registered for that very hub.
#[derive(Debug)]
struct WithPeers {
    platform: Arc<dyn ClientCertVerifier>,
    peers: Vec<(String, Arc<dyn ClientCertVerifier>)>,
    hints: Vec<DistinguishedName>,
}

impl ClientCertVerifier for WithPeers {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.hints
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> std::result::Result<ClientCertVerified, rustls::Error> {
        let refused = match self.platform.verify_client_cert(end_entity, intermediates, now) {
            Ok(verified) => return Ok(verified),
            Err(e) => e,
        };
        if let Some(Principal::Hub(code)) = principal_of(end_entity)
            && let Some((_, verifier)) = self.peers.iter().find(|(peer, _)| *peer == code)
        {
            return verifier.verify_client_cert(end_entity, intermediates, now);
        }
        Err(refused)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.platform.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.platform.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.platform.supported_verify_schemes()
    }
}

/// How long connecting to a peer hub may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A channel to a peer hub over mutual TLS: its server certificate verified against the CA
/// registered for it (not the platform's), this hub's identity certificate presented. Connects
/// lazily: a peer that is down shows as the first call's UNAVAILABLE.
pub fn peer_channel(peer: &PeerHub, identity_cert: &[u8], identity_key: &[u8]) -> Result<tonic::transport::Channel> {
    crate::tls::install_crypto_provider();
    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(&peer.ca_pem))
        .identity(tonic::transport::Identity::from_pem(identity_cert, identity_key));
    let endpoint = tonic::transport::Endpoint::from_shared(peer.address.clone())
        .map_err(|e| Error::invalid("address", e.to_string()))?
        .tls_config(tls)
        .map_err(|e| Error::Internal(format!("TLS to peer hub {}: {e}", peer.division_code)))?
        .connect_timeout(CONNECT_TIMEOUT)
        // A peer that stops answering (hung, or its network gone) is noticed on a long-lived
        // relayed stream too, which then ends with UNAVAILABLE rather than hanging.
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(10))
        .keep_alive_while_idle(true);
    Ok(endpoint.connect_lazy())
}
