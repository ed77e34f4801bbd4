//! The development PKI: a platform CA and the certificates it issues to the hub, the admin and
//! departments. Identity travels in the SAN URI (`urn:xinqiao:dept:<USCC>`,
//! `urn:xinqiao:admin:<name>`); production deployments issue the same shape from their own CA.

use std::fs;
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use chrono::{Datelike, Utc};
pub use rcgen::RevocationReason;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose, RevokedCertParams, SanType,
    SerialNumber, date_time_ymd,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer};
use x509_parser::certificate::X509Certificate;
use xinqiao_domain::identifiers::validate_uscc;
use xinqiao_domain::identity::Principal;

/// A department the development PKI issues a certificate to and `serve --dev` registers.
#[derive(Debug, Clone)]
pub struct SampleDepartment {
    pub code: &'static str,
    pub name: &'static str,
    pub division_code: &'static str,
    pub contact: &'static str,
}

/// The sample departments of the development PKI, in a fictional city under division 330100.
/// Their codes carry correct GB 32100 check characters (a test below proves it).
pub const SAMPLE_DEPARTMENTS: &[SampleDepartment] = &[
    SampleDepartment {
        code: "11330100MB00010011",
        name: "市市场监督管理局",
        division_code: "330100",
        contact: "数据科 0571-00000001",
    },
    SampleDepartment {
        code: "11330100MB0002002B",
        name: "市公安局",
        division_code: "330100",
        contact: "科信处 0571-00000002",
    },
    SampleDepartment {
        code: "11330100MB0003003M",
        name: "市人力资源和社会保障局",
        division_code: "330100",
        contact: "信息中心 0571-00000003",
    },
];

/// The name in the development admin certificate.
pub const DEV_ADMIN: &str = "platform-admin";
/// The name in the development evaluator (评价方) certificate.
pub const DEV_EVALUATOR: &str = "evaluation-office";

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("{0} already exists; refusing to overwrite it")]
    Exists(PathBuf),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("certificate generation failed: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("{0}")]
    Invalid(String),
    /// A file that is there but is not what it should be (not a certificate, a CRL of another CA…).
    #[error("{path}: {reason}")]
    Content { path: PathBuf, reason: String },
}

fn content(path: &Path, reason: impl Into<String>) -> PkiError {
    PkiError::Content {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PkiError + '_ {
    move |source| PkiError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Paths of a certificate and its key.
#[derive(Debug, Clone)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

pub fn ca_cert_path(dir: &Path) -> PathBuf {
    dir.join("ca.crt")
}

fn ca_key_path(dir: &Path) -> PathBuf {
    dir.join("ca.key")
}

/// The CA's certificate revocation list. `serve --dev` loads it when it exists and re-reads it
/// when it changes.
/// The development PKI's audit keys (`[audit] key_file` by default while it exists).
pub fn audit_keys_path(dir: &Path) -> PathBuf {
    dir.join("audit.keys")
}

/// A new audit key with a random 32-byte secret, as a `ID:HEX` line for a key file.
pub fn new_audit_key(id: &str) -> Result<xinqiao_domain::audit::ChainKey, PkiError> {
    let mut secret = [0u8; 32];
    rustls::crypto::ring::default_provider()
        .secure_random
        .fill(&mut secret)
        .map_err(|_| PkiError::Invalid("no randomness for an audit key".into()))?;
    xinqiao_domain::audit::ChainKey::new(id, &secret).map_err(PkiError::Invalid)
}

pub fn crl_path(dir: &Path) -> PathBuf {
    dir.join("crl.pem")
}

/// How long a CRL written here says it is current. The hub warns about a list past this date but
/// keeps using it: an old list still names every certificate revoked up to then.
const CRL_VALIDITY: Duration = Duration::from_secs(30 * 24 * 60 * 60);

/// Where `certs init` puts a department's certificate.
pub fn department_files(dir: &Path, code: &str) -> CertFiles {
    CertFiles {
        cert: dir.join(format!("dept-{code}.crt")),
        key: dir.join(format!("dept-{code}.key")),
    }
}

/// The development evaluator's certificate and key.
pub fn evaluator_files(dir: &Path) -> CertFiles {
    CertFiles {
        cert: dir.join("evaluator.crt"),
        key: dir.join("evaluator.key"),
    }
}

/// Where `certs issue --hub` puts a hub's identity certificate (平台级联: the certificate this
/// hub presents to its peer hubs, `urn:xinqiao:hub:<division code>`).
pub fn hub_files(dir: &Path, division_code: &str) -> CertFiles {
    CertFiles {
        cert: dir.join(format!("hub-{division_code}.crt")),
        key: dir.join(format!("hub-{division_code}.key")),
    }
}

pub fn admin_files(dir: &Path) -> CertFiles {
    CertFiles {
        cert: dir.join("admin.crt"),
        key: dir.join("admin.key"),
    }
}

pub fn server_files(dir: &Path) -> CertFiles {
    CertFiles {
        cert: dir.join("server.crt"),
        key: dir.join("server.key"),
    }
}

/// Creates a CA, a server certificate for localhost/127.0.0.1 (and `extra_hosts`), an admin
/// certificate and one per sample department under `dir`. Refuses to overwrite an existing CA.
pub fn init(dir: &Path, extra_hosts: &[String]) -> Result<(), PkiError> {
    fs::create_dir_all(dir).map_err(io(dir))?;
    let ca_path = ca_cert_path(dir);
    if ca_path.exists() {
        return Err(PkiError::Exists(ca_path));
    }
    let ca_key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    // Each CA its own name: during a CA rotation the hub trusts two at once, and revocation lists
    // are matched to their CA by name.
    let tag = uuid::Uuid::new_v4().simple().to_string();
    params.distinguished_name = name(&format!("Xinqiao platform CA (development) {}", &tag[..8]));
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    set_validity(&mut params, 10);
    params.serial_number = Some(random_serial());
    let ca_cert = params.self_signed(&ca_key)?;
    write_private(&ca_key_path(dir), &ca_key.serialize_pem())?;
    write(&ca_path, &ca_cert.pem())?;
    // An empty list from the start, so a hub serving this PKI watches the file and a later
    // `certs revoke` takes effect without a restart.
    write_crl(dir, 1, Vec::new())?;
    // The audit chain's key, kept beside the CA's as a production platform keeps both outside
    // the database.
    let key = new_audit_key("dev-1")?;
    write_private(&audit_keys_path(dir), &format!("{}\n", key.to_line()))?;

    let mut hosts = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    hosts.extend(extra_hosts.iter().cloned());
    issue_server(dir, &hosts)?;
    issue(dir, &Principal::Admin(DEV_ADMIN.into()))?;
    issue(dir, &Principal::Evaluator(DEV_EVALUATOR.into()))?;
    for dept in SAMPLE_DEPARTMENTS {
        issue(dir, &Principal::Department(dept.code.into()))?;
    }
    Ok(())
}

/// Issues a client certificate for a department or an admin from the CA in `dir`, writing
/// `dept-<USCC>.crt|key` or `admin-<name>.crt|key` (`admin.crt|key` for the development admin).
pub fn issue(dir: &Path, principal: &Principal) -> Result<CertFiles, PkiError> {
    let files = match principal {
        Principal::Department(code) => {
            validate_uscc(code).map_err(|e| PkiError::Invalid(format!("department code {code}: {e}")))?;
            department_files(dir, code)
        }
        Principal::Hub(code) => {
            xinqiao_domain::federation::validate_division_code(code)
                .map_err(|e| PkiError::Invalid(format!("hub division code {code}: {e}")))?;
            hub_files(dir, code)
        }
        Principal::Admin(admin) if admin == DEV_ADMIN => admin_files(dir),
        Principal::Admin(admin) => {
            if admin.is_empty() || !admin.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
                return Err(PkiError::Invalid(
                    "an admin name is letters, digits, '-' and '_'".into(),
                ));
            }
            CertFiles {
                cert: dir.join(format!("admin-{admin}.crt")),
                key: dir.join(format!("admin-{admin}.key")),
            }
        }
        Principal::Evaluator(evaluator) if evaluator == DEV_EVALUATOR => evaluator_files(dir),
        Principal::Evaluator(evaluator) => {
            if evaluator.is_empty()
                || !evaluator
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(PkiError::Invalid(
                    "an evaluator name is letters, digits, '-' and '_'".into(),
                ));
            }
            CertFiles {
                cert: dir.join(format!("evaluator-{evaluator}.crt")),
                key: dir.join(format!("evaluator-{evaluator}.key")),
            }
        }
    };
    refuse_overwrite(&files)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = name(&principal.to_string());
    let uri = principal
        .uri()
        .try_into()
        .map_err(|_| PkiError::Invalid("identity is not ASCII".into()))?;
    params.subject_alt_names = vec![SanType::URI(uri)];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    set_validity(&mut params, 2);
    sign(dir, params, &files)?;
    Ok(files)
}

/// Issues the hub's certificate for the given DNS names and IP addresses.
pub fn issue_server(dir: &Path, hosts: &[String]) -> Result<CertFiles, PkiError> {
    let files = server_files(dir);
    refuse_overwrite(&files)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = name("Xinqiao hub");
    for host in hosts {
        let san = match host.parse::<IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(
                host.as_str()
                    .try_into()
                    .map_err(|_| PkiError::Invalid(format!("bad host name {host}")))?,
            ),
        };
        params.subject_alt_names.push(san);
    }
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    // Also a client certificate: the hub presents it when it calls a provider's upstream
    // service that asks who is calling (接口共享).
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    set_validity(&mut params, 2);
    sign(dir, params, &files)?;
    Ok(files)
}

fn sign(dir: &Path, mut params: CertificateParams, files: &CertFiles) -> Result<(), PkiError> {
    let ca_pem = read(&ca_cert_path(dir))?;
    let ca_key = KeyPair::from_pem(&read(&ca_key_path(dir))?)?;
    let issuer = Issuer::from_ca_cert_pem(&ca_pem, ca_key)?;
    let key = KeyPair::generate()?;
    params.serial_number = Some(random_serial());
    let cert = params.signed_by(&key, &issuer)?;
    write_private(&files.key, &key.serialize_pem())?;
    write(&files.cert, &cert.pem())?;
    Ok(())
}

/// A random positive serial number. rcgen's default is a hash of the public key, which two
/// certificates for one key would share; a CRL names certificates by serial, so each gets its own.
fn random_serial() -> SerialNumber {
    // 122 random bits from the operating system's generator (UUID v4).
    let mut bytes = *uuid::Uuid::new_v4().as_bytes();
    // Positive, and never a leading zero octet (which DER would strip, shortening the serial).
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    SerialNumber::from_slice(&bytes)
}

/// What [`revoke`] did.
#[derive(Debug, Clone)]
pub struct Revocation {
    /// The revoked certificate's serial number, as `openssl x509 -serial` prints it.
    pub serial: String,
    /// The list that names it.
    pub crl: PathBuf,
    /// The list's CRL number after the call.
    pub crl_number: u64,
    /// How many certificates the list names.
    pub listed: usize,
    /// The certificate was already on the list; the file was left as it was.
    pub already_revoked: bool,
}

/// Revokes the certificate in `cert` (PEM or DER, issued by the CA in `dir`): writes
/// `<dir>/crl.pem` signed by the CA, with the next CRL number and every serial the previous list
/// named. The file is replaced atomically, so a hub watching it never reads half a list.
pub fn revoke(dir: &Path, cert: &Path, reason: Option<RevocationReason>) -> Result<Revocation, PkiError> {
    let ca_path = ca_cert_path(dir);
    let ca_der = certificate_der(&ca_path, &fs::read(&ca_path).map_err(io(&ca_path))?)?;
    let ca = parse_certificate(&ca_path, &ca_der)?;
    let cert_der = certificate_der(cert, &fs::read(cert).map_err(io(cert))?)?;
    if cert_der.as_ref() == ca_der.as_ref() {
        return Err(PkiError::Invalid(format!(
            "{} is the CA's own certificate; a CA is retired by replacing it, not by its own CRL",
            cert.display()
        )));
    }
    let revoked = parse_certificate(cert, &cert_der)?;
    if revoked.issuer().as_raw() != ca.subject().as_raw() || revoked.verify_signature(Some(ca.public_key())).is_err() {
        return Err(PkiError::Invalid(format!(
            "{} (issuer {}) was not issued by the CA in {}",
            cert.display(),
            revoked.issuer(),
            dir.display()
        )));
    }
    let serial = significant(revoked.raw_serial()).to_vec();
    let serial_text = revoked.raw_serial_as_string();

    let crl = crl_path(dir);
    let (number, mut entries) = match fs::read(&crl) {
        Ok(bytes) => listed(&crl, &bytes, &ca)?,
        // A PKI made before `init` wrote a list: this revocation starts one.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => (0, Vec::new()),
        Err(e) => return Err(io(&crl)(e)),
    };
    if entries.iter().any(|e| e.serial_number.as_ref() == serial.as_slice()) {
        return Ok(Revocation {
            serial: serial_text,
            crl,
            crl_number: number,
            listed: entries.len(),
            already_revoked: true,
        });
    }
    entries.push(RevokedCertParams {
        serial_number: SerialNumber::from_slice(&serial),
        revocation_time: SystemTime::now().into(),
        // RFC 5280 §5.3.1: the code is left out rather than given as "unspecified".
        reason_code: reason.filter(|r| *r != RevocationReason::Unspecified),
        invalidity_date: None,
    });
    let number = number
        .checked_add(1)
        .ok_or_else(|| content(&crl, "the CRL number cannot grow further"))?;
    let listed = entries.len();
    write_crl(dir, number, entries)?;
    Ok(Revocation {
        serial: serial_text,
        crl,
        crl_number: number,
        listed,
        already_revoked: false,
    })
}

/// The CRL number and the entries of the CA's current list, after checking that the CA signed it.
fn listed(path: &Path, bytes: &[u8], ca: &X509Certificate<'_>) -> Result<(u64, Vec<RevokedCertParams>), PkiError> {
    let der = if bytes.first() == Some(&DER_SEQUENCE) {
        CertificateRevocationListDer::from(bytes.to_vec())
    } else {
        CertificateRevocationListDer::from_pem_slice(bytes)
            .map_err(|e| content(path, format!("no PEM X509 CRL in it: {e}")))?
    };
    let (_, list) =
        x509_parser::parse_x509_crl(der.as_ref()).map_err(|e| content(path, format!("not an X.509 CRL: {e}")))?;
    if list.issuer().as_raw() != ca.subject().as_raw() || list.verify_signature(ca.public_key()).is_err() {
        // Re-signing a list the CA did not sign would launder whatever it says.
        return Err(content(
            path,
            format!(
                "not signed by this CA (issuer {}); move it aside to start a new list",
                list.issuer()
            ),
        ));
    }
    let number = match list.crl_number() {
        None => 0,
        Some(n) => {
            let bytes = n.to_bytes_be();
            let significant = significant(&bytes);
            if significant.len() > 8 {
                return Err(content(path, "its CRL number is larger than this tool counts"));
            }
            significant.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b))
        }
    };
    let entries = list
        .iter_revoked_certificates()
        .map(|r| RevokedCertParams {
            serial_number: SerialNumber::from_slice(significant(r.raw_serial())),
            revocation_time: r.revocation_date.to_datetime(),
            reason_code: r.reason_code().and_then(|(_, code)| reason_from_code(code.0)),
            invalidity_date: r.invalidity_date().map(|(_, date)| date.to_datetime()),
        })
        .collect();
    Ok((number, entries))
}

fn reason_from_code(code: u8) -> Option<RevocationReason> {
    use RevocationReason::*;
    Some(match code {
        0 => Unspecified,
        1 => KeyCompromise,
        2 => CaCompromise,
        3 => AffiliationChanged,
        4 => Superseded,
        5 => CessationOfOperation,
        6 => CertificateHold,
        8 => RemoveFromCrl,
        9 => PrivilegeWithdrawn,
        10 => AaCompromise,
        _ => return None,
    })
}

/// Signs and writes the CA's list, replacing the file atomically.
fn write_crl(dir: &Path, number: u64, entries: Vec<RevokedCertParams>) -> Result<(), PkiError> {
    let ca_key = KeyPair::from_pem(&read(&ca_key_path(dir))?)?;
    let issuer = Issuer::from_ca_cert_pem(&read(&ca_cert_path(dir))?, ca_key)?;
    let now = SystemTime::now();
    let params = CertificateRevocationListParams {
        this_update: now.into(),
        next_update: (now + CRL_VALIDITY).into(),
        crl_number: SerialNumber::from(number),
        issuing_distribution_point: None,
        revoked_certs: entries,
        key_identifier_method: KeyIdMethod::Sha256,
    };
    let pem = params.signed_by(&issuer)?.pem()?;
    let path = crl_path(dir);
    let partial = dir.join("crl.pem.partial");
    write(&partial, &pem)?;
    fs::rename(&partial, &path).map_err(io(&path))
}

/// DER starts with a SEQUENCE tag; PEM with text.
const DER_SEQUENCE: u8 = 0x30;

/// The first certificate in a PEM file, or the file itself when it is DER.
fn certificate_der(path: &Path, bytes: &[u8]) -> Result<CertificateDer<'static>, PkiError> {
    if bytes.first() == Some(&DER_SEQUENCE) {
        return Ok(CertificateDer::from(bytes.to_vec()));
    }
    CertificateDer::from_pem_slice(bytes).map_err(|e| content(path, format!("no PEM certificate in it: {e}")))
}

fn parse_certificate<'a>(path: &Path, der: &'a CertificateDer<'_>) -> Result<X509Certificate<'a>, PkiError> {
    x509_parser::parse_x509_certificate(der.as_ref())
        .map(|(_, cert)| cert)
        .map_err(|e| content(path, format!("not an X.509 certificate: {e}")))
}

/// An unsigned big-endian integer without its leading zero octets, so that serial numbers
/// compare by value whatever padding their encoding had.
fn significant(bytes: &[u8]) -> &[u8] {
    // Zero itself keeps one octet.
    let start = bytes
        .iter()
        .position(|b| *b != 0)
        .unwrap_or(bytes.len().saturating_sub(1));
    &bytes[start..]
}

fn name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Xinqiao");
    dn.push(DnType::CommonName, common_name);
    dn
}

fn set_validity(params: &mut CertificateParams, years: i32) {
    let today = Utc::now().date_naive();
    // A day's slack before today absorbs clock skew between the hub and its clients.
    let start = today.pred_opt().unwrap_or(today);
    params.not_before = date_time_ymd(start.year(), start.month() as u8, start.day() as u8);
    params.not_after = date_time_ymd(start.year() + years, start.month() as u8, start.day().min(28) as u8);
}

fn refuse_overwrite(files: &CertFiles) -> Result<(), PkiError> {
    for path in [&files.cert, &files.key] {
        if path.exists() {
            return Err(PkiError::Exists(path.clone()));
        }
    }
    Ok(())
}

fn read(path: &Path) -> Result<String, PkiError> {
    fs::read_to_string(path).map_err(io(path))
}

fn write(path: &Path, contents: &str) -> Result<(), PkiError> {
    fs::write(path, contents).map_err(io(path))
}

/// Writes a private key readable by its owner only.
fn write_private(path: &Path, contents: &str) -> Result<(), PkiError> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).map_err(io(path))?;
    file.write_all(contents.as_bytes()).map_err(io(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_department_codes_are_valid() {
        for d in SAMPLE_DEPARTMENTS {
            assert_eq!(validate_uscc(d.code), Ok(()), "{}", d.code);
            assert_eq!(
                xinqiao_domain::identifiers::validate_division_code(d.division_code),
                Ok(())
            );
        }
    }

    #[test]
    fn init_writes_the_layout_and_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        init(dir.path(), &[]).unwrap();
        for f in [
            "ca.crt",
            "ca.key",
            "server.crt",
            "server.key",
            "admin.crt",
            "admin.key",
            "crl.pem",
        ] {
            assert!(dir.path().join(f).exists(), "{f}");
        }
        for d in SAMPLE_DEPARTMENTS {
            assert!(department_files(dir.path(), d.code).cert.exists());
        }
        let before = fs::read(dir.path().join("ca.crt")).unwrap();
        assert!(matches!(init(dir.path(), &[]), Err(PkiError::Exists(_))));
        assert_eq!(fs::read(dir.path().join("ca.crt")).unwrap(), before);
        let code = "11330100MB00040040";
        issue(dir.path(), &Principal::Department(code.into())).unwrap();
        assert!(matches!(
            issue(dir.path(), &Principal::Department(code.into())),
            Err(PkiError::Exists(_))
        ));
        assert!(matches!(
            issue(dir.path(), &Principal::Department("11330100MB00040041".into())),
            Err(PkiError::Invalid(_))
        ));
    }

    fn serial_of(path: &Path) -> Vec<u8> {
        let der = certificate_der(path, &fs::read(path).unwrap()).unwrap();
        significant(parse_certificate(path, &der).unwrap().raw_serial()).to_vec()
    }

    /// A revoked serial and its reason code.
    type Entry = (Vec<u8>, Option<u8>);

    /// The CRL number and the entries of the list in `dir`, whose signature must verify.
    fn crl_of(dir: &Path) -> (u64, Vec<Entry>) {
        let pem = fs::read(crl_path(dir)).unwrap();
        let der = CertificateRevocationListDer::from_pem_slice(&pem).unwrap();
        let (_, list) = x509_parser::parse_x509_crl(der.as_ref()).unwrap();
        let ca_der = certificate_der(&ca_cert_path(dir), &fs::read(ca_cert_path(dir)).unwrap()).unwrap();
        let ca = parse_certificate(&ca_cert_path(dir), &ca_der).unwrap();
        list.verify_signature(ca.public_key()).unwrap();
        assert!(list.next_update().unwrap().timestamp() > list.last_update().timestamp() + 29 * 24 * 3600);
        let number = list
            .crl_number()
            .unwrap()
            .to_bytes_be()
            .iter()
            .fold(0u64, |n, b| (n << 8) | u64::from(*b));
        let entries = list
            .iter_revoked_certificates()
            .map(|r| (significant(r.raw_serial()).to_vec(), r.reason_code().map(|(_, c)| c.0)))
            .collect();
        (number, entries)
    }

    #[test]
    fn revoke_adds_to_the_list_and_keeps_what_it_named() {
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path();
        init(dir, &[]).unwrap();
        assert_eq!(crl_of(dir), (1, vec![]));
        let samr = department_files(dir, SAMPLE_DEPARTMENTS[0].code).cert;
        let police = department_files(dir, SAMPLE_DEPARTMENTS[1].code).cert;

        let first = revoke(dir, &samr, Some(RevocationReason::KeyCompromise)).unwrap();
        assert!(!first.already_revoked);
        assert_eq!((first.crl_number, first.listed), (2, 1));
        let second = revoke(dir, &police, Some(RevocationReason::Unspecified)).unwrap();
        assert_eq!((second.crl_number, second.listed), (3, 2));
        assert_eq!(
            crl_of(dir),
            (3, vec![(serial_of(&samr), Some(1)), (serial_of(&police), None)])
        );

        let written = fs::read(crl_path(dir)).unwrap();
        let again = revoke(dir, &samr, None).unwrap();
        assert!(again.already_revoked);
        assert_eq!((again.crl_number, again.listed), (3, 2));
        assert_eq!(again.serial, first.serial);
        assert_eq!(fs::read(crl_path(dir)).unwrap(), written);
    }

    #[test]
    fn revoke_starts_a_list_where_there_is_none() {
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path();
        init(dir, &[]).unwrap();
        fs::remove_file(crl_path(dir)).unwrap();
        let admin = admin_files(dir).cert;
        let revoked = revoke(dir, &admin, None).unwrap();
        assert_eq!((revoked.crl_number, revoked.listed), (1, 1));
        assert_eq!(crl_of(dir), (1, vec![(serial_of(&admin), None)]));
    }

    #[test]
    fn revoke_refuses_what_this_ca_did_not_issue_or_sign() {
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path();
        init(dir, &[]).unwrap();
        let other = tempfile::tempdir().unwrap();
        init(other.path(), &[]).unwrap();

        let foreign = revoke(dir, &admin_files(other.path()).cert, None).unwrap_err();
        assert!(
            matches!(foreign, PkiError::Invalid(ref m) if m.contains("not issued by")),
            "{foreign}"
        );
        let ca = revoke(dir, &ca_cert_path(dir), None).unwrap_err();
        assert!(matches!(ca, PkiError::Invalid(ref m) if m.contains("CA's own")), "{ca}");
        let garbage = dir.join("garbage.crt");
        fs::write(&garbage, "hello").unwrap();
        assert!(matches!(revoke(dir, &garbage, None), Err(PkiError::Content { .. })));
        assert!(matches!(
            revoke(dir, &dir.join("missing.crt"), None),
            Err(PkiError::Io { .. })
        ));

        // A list the CA did not sign is neither trusted nor overwritten.
        fs::copy(crl_path(other.path()), crl_path(dir)).unwrap();
        let before = fs::read(crl_path(dir)).unwrap();
        let admin = admin_files(dir).cert;
        let unsigned = revoke(dir, &admin, None).unwrap_err();
        assert!(
            matches!(unsigned, PkiError::Content { ref reason, .. } if reason.contains("not signed by this CA")),
            "{unsigned}"
        );
        assert_eq!(fs::read(crl_path(dir)).unwrap(), before);
    }

    #[test]
    fn every_certificate_gets_its_own_random_serial() {
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path();
        init(dir, &[]).unwrap();
        let mut paths = vec![ca_cert_path(dir), server_files(dir).cert, admin_files(dir).cert];
        paths.extend(SAMPLE_DEPARTMENTS.iter().map(|d| department_files(dir, d.code).cert));
        let serials: std::collections::BTreeSet<Vec<u8>> = paths.iter().map(|p| serial_of(p)).collect();
        assert_eq!(serials.len(), paths.len());
        assert!(serials.iter().all(|s| s.len() == 16 && s[0] & 0x80 == 0), "{serials:?}");
    }
}
