//! The development PKI: a platform CA and the certificates it issues to the hub, the admin and
//! departments. Identity travels in the SAN URI (`urn:xinqiao:dept:<USCC>`,
//! `urn:xinqiao:admin:<name>`); production deployments issue the same shape from their own CA.

use std::fs;
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use chrono::{Datelike, Utc};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType, date_time_ymd,
};
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

/// Where `certs init` puts a department's certificate.
pub fn department_files(dir: &Path, code: &str) -> CertFiles {
    CertFiles {
        cert: dir.join(format!("dept-{code}.crt")),
        key: dir.join(format!("dept-{code}.key")),
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
    params.distinguished_name = name("Xinqiao platform CA (development)");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    set_validity(&mut params, 10);
    let ca_cert = params.self_signed(&ca_key)?;
    write_private(&ca_key_path(dir), &ca_key.serialize_pem())?;
    write(&ca_path, &ca_cert.pem())?;

    let mut hosts = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    hosts.extend(extra_hosts.iter().cloned());
    issue_server(dir, &hosts)?;
    issue(dir, &Principal::Admin(DEV_ADMIN.into()))?;
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

/// Issues the hub's server certificate for the given DNS names and IP addresses.
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
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    set_validity(&mut params, 2);
    sign(dir, params, &files)?;
    Ok(files)
}

fn sign(dir: &Path, params: CertificateParams, files: &CertFiles) -> Result<(), PkiError> {
    let ca_pem = read(&ca_cert_path(dir))?;
    let ca_key = KeyPair::from_pem(&read(&ca_key_path(dir))?)?;
    let issuer = Issuer::from_ca_cert_pem(&ca_pem, ca_key)?;
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer)?;
    write_private(&files.key, &key.serialize_pem())?;
    write(&files.cert, &cert.pem())?;
    Ok(())
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
        for f in ["ca.crt", "ca.key", "server.crt", "server.key", "admin.crt", "admin.key"] {
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
}
