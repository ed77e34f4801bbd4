//! The hub's configuration: a TOML file, then environment variables and flags (applied by the
//! CLI), then defaults derived from the data directory.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use xinqiao_domain::audit::{ChainKey, Keyring};

pub const DEFAULT_LISTEN: &str = "127.0.0.1:7443";
pub const DEFAULT_DATA_DIR: &str = "xinqiao-data";

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address the gRPC server listens on.
    pub listen: Option<SocketAddr>,
    /// Where the embedded database and the development PKI live.
    pub data_dir: Option<PathBuf>,
    /// `sqlite://PATH` or `postgres://…`; the default is a SQLite file in the data directory.
    pub database_url: Option<String>,
    /// Whether `serve` brings the database schema up to date at start (the default), or refuses
    /// to start on an older schema and leaves migrating to `xinqiao migrate`, as a deployment of
    /// several nodes does.
    pub migrate_on_start: Option<bool>,
    #[serde(default)]
    pub tls: TlsFiles,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub access: AccessRules,
    #[serde(default)]
    pub audit: AuditSettings,
    #[serde(default)]
    pub federation: FederationSettings,
    #[serde(default)]
    pub evaluation: EvaluationSettings,
    #[serde(default)]
    pub metrics: MetricsSettings,
    #[serde(default)]
    pub console: ConsoleSettings,
    /// Switches for the benchmark program only: they cannot be set from a file or the command line.
    #[serde(skip)]
    pub benchmark: BenchmarkSwitches,
}

/// What the benchmark turns off to measure what it costs. Never set in a served hub.
#[derive(Debug, Clone, Default)]
pub struct BenchmarkSwitches {
    /// Serve plaintext gRPC and take every connection to be this identity (the TLS baseline).
    pub plaintext_as: Option<xinqiao_domain::identity::Principal>,
    /// Publish without validating records against their schema (the validation baseline).
    pub skip_validation: bool,
}

/// The hub's certificate and the CA that client certificates must chain to. Each defaults to
/// the development PKI under `DATA_DIR/pki`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// A certificate revocation list (PEM or DER) from the platform CA. The hub re-reads it when
    /// the file changes, without a restart, and refuses the certificates it lists.
    pub crl: Option<PathBuf>,
}

/// The access workflow's rules that differ between provinces.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AccessRules {
    /// A provider answers an access request within so many working days (国发〔2016〕51号: 10).
    pub answer_within_workdays: u32,
    /// Public holidays (YYYY-MM-DD), not counted as working days.
    pub holidays: Vec<chrono::NaiveDate>,
    /// Weekend days worked instead (调休), counted as working days.
    pub extra_workdays: Vec<chrono::NaiveDate>,
}

impl Default for AccessRules {
    fn default() -> Self {
        Self {
            answer_within_workdays: 10,
            holidays: Vec::new(),
            extra_workdays: Vec::new(),
        }
    }
}

impl AccessRules {
    pub fn calendar(&self) -> xinqiao_domain::workdays::Calendar {
        xinqiao_domain::workdays::Calendar {
            holidays: self.holidays.iter().copied().collect(),
            extra_workdays: self.extra_workdays.iter().copied().collect(),
        }
    }
}

/// The Prometheus endpoint.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsSettings {
    /// Address of the plain-HTTP `/metrics` endpoint; none: no endpoint.
    pub listen: Option<SocketAddr>,
}

/// The web console (控制台).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsoleSettings {
    /// An HTTPS address of its own for the console, where browsers need no client certificate
    /// (they sign in with a link from `xinqiao console`; a certificate, when presented, is the
    /// identity). None: the console is served on the hub's port only, to browsers that present
    /// a client certificate.
    pub listen: Option<SocketAddr>,
    /// The console's address as people reach it (`https://console.example.gov.cn`), for the
    /// sign-in links the hub mints; by default the listen address.
    pub public_url: Option<String>,
    /// How long a sign-in link stays usable, in seconds (default 600).
    pub link_ttl_secs: Option<u64>,
    /// How long a session lasts, in seconds (default 8 hours).
    pub session_ttl_secs: Option<u64>,
}

/// Federation (平台级联): this hub among the hubs of other levels.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FederationSettings {
    /// This hub's 行政区划代码 (its certificate's `urn:xinqiao:hub:<division>`). Unset: the hub
    /// neither pulls from children nor is read by a parent.
    pub division: Option<String>,
    /// This hub's identity certificate and key, presented to peer hubs; by default
    /// `DATA_DIR/pki/hub-<division>.crt|key` (`xinqiao certs issue --hub <division>`).
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// How long a pull waits at a child for a change before it asks again (default 20 s): a
    /// change reaches the parent as it happens, and at the latest after this.
    pub wait_secs: Option<u64>,
    /// After a failed pull, how long before the next (default 5 s).
    pub retry_secs: Option<u64>,
}

impl FederationSettings {
    pub fn wait(&self) -> Duration {
        Duration::from_secs(self.wait_secs.unwrap_or(20).clamp(1, 30))
    }

    pub fn retry(&self) -> Duration {
        Duration::from_secs(self.retry_secs.unwrap_or(5).max(1))
    }
}

/// The audit trail.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditSettings {
    /// `sha256` (the default) or `sm3` (GB/T 32905, where 国密 algorithms are required).
    pub hash: String,
    /// Events older than this are pruned (a checkpoint keeps the rest verifiable). At least 180
    /// (Cybersecurity Law art. 21: logs kept six months or more).
    pub retention_days: u32,
    /// A file of audit keys, one `ID:HEX` per line (the last makes new links; earlier ones verify
    /// older links). With keys, each link is an HMAC that nobody without the key can recompute.
    /// Default: the development PKI's `audit.keys`, when it exists.
    pub key_file: Option<PathBuf>,
    /// Or the name of an environment variable holding the same lines.
    pub key_env: Option<String>,
    /// Links up to this sequence may be unkeyed: the events written before keys were configured.
    /// Every later link must be keyed, or verification names it.
    pub unkeyed_until: u64,
}

/// The scorecard's weights (any non-negative numbers; they are normalised) and its default period.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvaluationSettings {
    pub weight_catalogue: f64,
    pub weight_timeliness: f64,
    pub weight_quality: f64,
    pub weight_responsiveness: f64,
    pub weight_use: f64,
    /// A scorecard asked for without dates covers this many days, ending today.
    pub default_period_days: u32,
}

impl Default for EvaluationSettings {
    fn default() -> Self {
        let w = xinqiao_domain::scorecard::Weights::default();
        Self {
            weight_catalogue: w.catalogue,
            weight_timeliness: w.timeliness,
            weight_quality: w.quality,
            weight_responsiveness: w.responsiveness,
            weight_use: w.use_,
            default_period_days: 30,
        }
    }
}

impl EvaluationSettings {
    pub fn weights(&self) -> xinqiao_domain::scorecard::Weights {
        xinqiao_domain::scorecard::Weights {
            catalogue: self.weight_catalogue,
            timeliness: self.weight_timeliness,
            quality: self.weight_quality,
            responsiveness: self.weight_responsiveness,
            use_: self.weight_use,
        }
    }
}

/// The legal minimum retention of the audit trail, in days.
pub const MIN_AUDIT_RETENTION_DAYS: u32 = 180;

impl Default for AuditSettings {
    fn default() -> Self {
        Self {
            hash: "sha256".into(),
            retention_days: MIN_AUDIT_RETENTION_DAYS,
            key_file: None,
            key_env: None,
            unkeyed_until: 0,
        }
    }
}

impl AuditSettings {
    /// The chain hash, or why the settings are refused.
    pub fn chain_hash(&self) -> Result<xinqiao_domain::audit::ChainHash, String> {
        if self.retention_days < MIN_AUDIT_RETENTION_DAYS {
            return Err(format!(
                "audit.retention_days is {}; the law asks for at least {MIN_AUDIT_RETENTION_DAYS}",
                self.retention_days
            ));
        }
        xinqiao_domain::audit::ChainHash::parse(&self.hash)
            .ok_or_else(|| format!("audit.hash is '{}'; use sha256 or sm3", self.hash))
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest request message the hub decodes, in bytes; larger ones get RESOURCE_EXHAUSTED.
    pub max_message_bytes: usize,
    /// A client that has not completed its TLS handshake by then is dropped.
    pub handshake_timeout_secs: u64,
    /// Refused handshakes recorded one audit event each, per peer address and minute; further
    /// ones that minute are counted into one summary event.
    pub handshake_refusals_per_minute: u32,
    /// On shutdown, how long in-flight calls may take to finish.
    pub shutdown_grace_secs: u64,
    /// Most changes in one published batch.
    pub max_batch_records: usize,
    /// Largest single record, in bytes.
    pub max_record_bytes: usize,
    /// Largest file in a file dataset, in bytes.
    pub max_file_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_message_bytes: 4 * 1024 * 1024,
            handshake_timeout_secs: 10,
            handshake_refusals_per_minute: 20,
            shutdown_grace_secs: 30,
            max_batch_records: 10_000,
            max_record_bytes: 1024 * 1024,
            max_file_bytes: 4 * 1024 * 1024 * 1024,
        }
    }
}

fn read_keys(path: &Path) -> Result<String, String> {
    warn_if_readable_by_others(path);
    std::fs::read_to_string(path).map_err(|e| format!("audit keys {}: {e}", path.display()))
}

/// A key file others can read is a key others may have: said loudly, not refused, since the
/// operator may have reasons (a group of operators).
fn warn_if_readable_by_others(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        if let Ok(meta) = std::fs::metadata(path)
            && meta.permissions().mode() & 0o077 != 0
        {
            tracing::warn!(file = %path.display(), "the audit key file can be read by others than its owner (chmod 600 it)");
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.into(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.into(),
            message: e.to_string(),
        })
    }

    pub fn listen(&self) -> SocketAddr {
        self.listen
            .unwrap_or_else(|| DEFAULT_LISTEN.parse().expect("the default listen address is valid"))
    }

    pub fn migrate_on_start(&self) -> bool {
        self.migrate_on_start.unwrap_or(true)
    }

    pub fn data_dir(&self) -> PathBuf {
        self.data_dir.clone().unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR))
    }

    pub fn pki_dir(&self) -> PathBuf {
        self.data_dir().join("pki")
    }

    pub fn database_url(&self) -> String {
        self.database_url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", self.data_dir().join("hub.db").display()))
    }

    pub fn ca(&self) -> PathBuf {
        self.tls
            .ca
            .clone()
            .unwrap_or_else(|| crate::pki::ca_cert_path(&self.pki_dir()))
    }

    pub fn cert(&self) -> PathBuf {
        self.tls
            .cert
            .clone()
            .unwrap_or_else(|| crate::pki::server_files(&self.pki_dir()).cert)
    }

    pub fn key(&self) -> PathBuf {
        self.tls
            .key
            .clone()
            .unwrap_or_else(|| crate::pki::server_files(&self.pki_dir()).key)
    }

    /// This hub's federation identity: its division code and certificate files, when
    /// `[federation] division` is set.
    pub fn hub_identity(&self) -> Option<(String, crate::pki::CertFiles)> {
        let division = self.federation.division.clone()?;
        let default = crate::pki::hub_files(&self.pki_dir(), &division);
        Some((
            division,
            crate::pki::CertFiles {
                cert: self.federation.cert.clone().unwrap_or(default.cert),
                key: self.federation.key.clone().unwrap_or(default.key),
            },
        ))
    }

    /// The certificate revocation list: `tls.crl`, or else the development PKI's `crl.pem` when
    /// that file exists (so `serve --dev` honours `certs revoke`). `None`: no revocation checks.
    pub fn crl(&self) -> Option<PathBuf> {
        self.tls.crl.clone().or_else(|| {
            let dev = crate::pki::crl_path(&self.pki_dir());
            dev.is_file().then_some(dev)
        })
    }

    /// The audit keys: `[audit] key_file`, or `key_env`, or the development PKI's `audit.keys` when
    /// it exists; none at all leaves the chain unkeyed.
    pub fn audit_keyring(&self) -> Result<Keyring, String> {
        let text = match (&self.audit.key_file, &self.audit.key_env) {
            (Some(_), Some(_)) => return Err("set audit.key_file or audit.key_env, not both".into()),
            (Some(path), None) => Some(read_keys(path)?),
            (None, Some(var)) => Some(
                std::env::var(var)
                    .map_err(|_| format!("audit.key_env names {var}, which is not set (or not UTF-8)"))?,
            ),
            (None, None) => {
                let dev = crate::pki::audit_keys_path(&self.pki_dir());
                if dev.is_file() { Some(read_keys(&dev)?) } else { None }
            }
        };
        let Some(text) = text else {
            return Ok(Keyring::none());
        };
        let keys = ChainKey::parse_lines(&text).map_err(|e| format!("audit keys: {e}"))?;
        if keys.is_empty() {
            return Err("audit keys: the file or variable holds no key".into());
        }
        Ok(Keyring::new(keys, self.audit.unkeyed_until))
    }

    pub fn handshake_timeout(&self) -> Duration {
        Duration::from_secs(self.limits.handshake_timeout_secs.max(1))
    }

    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.limits.shutdown_grace_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_derive_from_the_data_directory() {
        let c: Config = toml::from_str("data_dir = \"/srv/xq\"").unwrap();
        assert_eq!(c.database_url(), "sqlite:///srv/xq/hub.db");
        assert_eq!(c.ca(), PathBuf::from("/srv/xq/pki/ca.crt"));
        assert_eq!(c.listen().to_string(), DEFAULT_LISTEN);
        assert_eq!(c.limits.max_message_bytes, 4 * 1024 * 1024);
    }

    #[test]
    fn the_shipped_example_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/xinqiao.toml");
        let c = Config::load(&path).unwrap();
        assert_eq!(c.listen().to_string(), "0.0.0.0:7443");
        assert_eq!(c.database_url(), "sqlite:///var/lib/xinqiao/hub.db");
    }

    #[test]
    fn access_and_audit_settings() {
        let c: Config = toml::from_str(
            r#"
            [access]
            answer_within_workdays = 5
            holidays = ["2026-10-01", "2026-10-02"]
            extra_workdays = ["2026-10-10"]
            [audit]
            hash = "sm3"
            retention_days = 365
            "#,
        )
        .unwrap();
        assert_eq!(c.access.answer_within_workdays, 5);
        assert_eq!(c.access.calendar().holidays.len(), 2);
        assert_eq!(c.audit.chain_hash(), Ok(xinqiao_domain::audit::ChainHash::Sm3));
        let short: Config = toml::from_str("[audit]\nretention_days = 30").unwrap();
        assert!(short.audit.chain_hash().is_err());
        let md5: Config = toml::from_str("[audit]\nhash = \"md5\"").unwrap();
        assert!(md5.audit.chain_hash().is_err());
        assert_eq!(Config::default().access.answer_within_workdays, 10);
    }

    #[test]
    fn unknown_keys_are_refused() {
        assert!(toml::from_str::<Config>("listn = \"127.0.0.1:1\"").is_err());
        assert!(toml::from_str::<Config>("[limits]\nmax_mesage_bytes = 1").is_err());
    }

    #[test]
    fn a_full_file_parses() {
        let c: Config = toml::from_str(
            r#"
            listen = "0.0.0.0:7443"
            database_url = "postgres://hub@db/xinqiao"
            [tls]
            ca = "/etc/xinqiao/ca.crt"
            cert = "/etc/xinqiao/server.crt"
            key = "/etc/xinqiao/server.key"
            [limits]
            max_message_bytes = 1048576
            [metrics]
            listen = "127.0.0.1:9464"
            "#,
        )
        .unwrap();
        assert_eq!(c.database_url(), "postgres://hub@db/xinqiao");
        assert_eq!(c.limits.max_message_bytes, 1_048_576);
        assert_eq!(c.limits.shutdown_grace_secs, 30);
        assert_eq!(c.metrics.listen, Some(SocketAddr::from(([127, 0, 0, 1], 9464))));
        assert_eq!(Config::default().metrics.listen, None, "no endpoint unless asked for");
    }
}
