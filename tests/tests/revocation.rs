//! Certificate revocation: the hub loads the CA's revocation list, re-reads it when the file
//! changes, without a restart, and then refuses the certificates it names, on new connections
//! and on connections already open. A broken list never replaces a good one.
//!
//! The test hubs serve the development PKI, whose `crl.pem` the hub loads by default. Revocation
//! happens in the TLS layer, before storage is involved, so these tests run on SQLite only.

use std::path::Path;
use std::time::Duration;

use tonic::Code;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use xinqiao_hub::pki::{self, CertFiles, RevocationReason};
use xinqiao_tests::v1 as pb;
use xinqiao_tests::v1::directory_service_client::DirectoryServiceClient;
use xinqiao_tests::*;

/// How long the hub may take to notice a changed list (it looks every two seconds).
const RELOAD_WITHIN: Duration = Duration::from_secs(10);

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A client on a connection of its own presenting the certificate in `files`. It connects
/// lazily, so a refused handshake shows as the first call's error.
fn fresh_client(hub: &TestHub, files: &CertFiles) -> Directory {
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read(&pki::ca_cert_path(&hub.pki_dir()))))
        .identity(Identity::from_pem(read(&files.cert), read(&files.key)));
    let channel: Channel = Endpoint::from_shared(hub.url())
        .expect("hub URL")
        .connect_timeout(Duration::from_secs(5))
        .tls_config(tls)
        .expect("TLS config")
        .connect_lazy();
    DirectoryServiceClient::new(channel)
}

fn dept_files(hub: &TestHub, code: &str) -> CertFiles {
    pki::department_files(&hub.pki_dir(), code)
}

async fn who_am_i(client: &mut Directory) -> Result<tonic::Response<pb::WhoAmIResponse>, tonic::Status> {
    client.who_am_i(pb::WhoAmIRequest {}).await
}

/// The department a WhoAmI answer names.
#[track_caller]
fn department_code(answer: pb::WhoAmIResponse) -> String {
    match answer.identity {
        Some(pb::who_am_i_response::Identity::Department(d)) => d.code,
        other => panic!("expected a department, got {other:?}"),
    }
}

/// A call refused by the TLS layer. tonic reports the broken connection as UNAVAILABLE, UNKNOWN
/// or CANCELLED depending on when it notices (with TLS 1.3 the client learns of the refusal only
/// after sending its request); either way it is not an answer from a service.
#[track_caller]
fn refused_by_tls<T: std::fmt::Debug>(result: Result<tonic::Response<T>, tonic::Status>) {
    match result {
        Ok(response) => panic!("the hub answered a revoked certificate: {:?}", response.get_ref()),
        Err(status) => assert!(
            matches!(status.code(), Code::Unavailable | Code::Unknown | Code::Cancelled),
            "expected a transport failure, got {:?}: {}",
            status.code(),
            status.message()
        ),
    }
}

/// Waits until a new connection with `code`'s certificate is refused.
async fn until_refused(hub: &TestHub, code: &str) {
    let deadline = tokio::time::Instant::now() + RELOAD_WITHIN;
    loop {
        let answer = who_am_i(&mut fresh_client(hub, &dept_files(hub, code))).await;
        match answer {
            Err(_) => return refused_by_tls(answer),
            Ok(_) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Ok(_) => panic!("{code}'s revoked certificate still accepted after {RELOAD_WITHIN:?}"),
        }
    }
}

/// A new connection with `code`'s certificate works.
async fn accepted(hub: &TestHub, code: &str) {
    let answer = ok(who_am_i(&mut fresh_client(hub, &dept_files(hub, code))).await);
    assert_eq!(department_code(answer), code);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_certificate_is_refused_without_a_restart() {
    let hub = TestHub::start().await;
    let mut open = fresh_client(&hub, &dept_files(&hub, SAMR));
    assert_eq!(department_code(ok(who_am_i(&mut open).await)), SAMR);

    let revocation = pki::revoke(
        &hub.pki_dir(),
        &dept_files(&hub, SAMR).cert,
        Some(RevocationReason::KeyCompromise),
    )
    .expect("revoke");
    assert!(!revocation.already_revoked);

    until_refused(&hub, SAMR).await;
    // The connection opened before the revocation was closed at the reload; the client's
    // reconnection is refused like any new one.
    refused_by_tls(who_am_i(&mut open).await);
    // Every other certificate still works, and the hub goes on serving.
    accepted(&hub, POLICE).await;
    let me = ok(hub.admin().await.who_am_i(pb::WhoAmIRequest {}).await);
    assert_eq!(me.identity, Some(pb::who_am_i_response::Identity::Admin(ADMIN.into())));
    hub.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_list_keeps_the_previous_one() {
    let hub = TestHub::start().await;
    let pki_dir = hub.pki_dir();
    let crl = pki::crl_path(&pki_dir);
    pki::revoke(&pki_dir, &dept_files(&hub, SAMR).cert, None).expect("revoke");
    until_refused(&hub, SAMR).await;
    let good = read(&crl);

    // A botched update: the revoked serial's text in a file that is no CRL at all.
    let garbage = "-----BEGIN X509 CRL-----\nnot base64: 11330100MB00010011 revoked\n-----END X509 CRL-----\n";
    std::fs::write(&crl, garbage).expect("write the broken list");
    // Long enough for the hub to have looked at it (every two seconds) and refused it.
    tokio::time::sleep(Duration::from_secs(5)).await;
    refused_by_tls(who_am_i(&mut fresh_client(&hub, &dept_files(&hub, SAMR))).await);
    accepted(&hub, POLICE).await;

    // The list repaired and extended: the hub takes it, keeping the earlier revocation.
    std::fs::write(&crl, &good).expect("restore the list");
    pki::revoke(&pki_dir, &dept_files(&hub, POLICE).cert, None).expect("revoke");
    until_refused(&hub, POLICE).await;
    refused_by_tls(who_am_i(&mut fresh_client(&hub, &dept_files(&hub, SAMR))).await);
    accepted(&hub, HRSS).await;
    hub.finish().await;
}
