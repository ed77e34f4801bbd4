//! Operating a hub: `xinqiao migrate`, `check`, `backup` and `restore`. Each reads the same
//! configuration as `serve` (file, environment, flags), so it finds the same database and files.

use crate::out;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use clap::Args;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use xinqiao_domain::audit::Keyring;
use xinqiao_hub::nodes::{self, Migration};
use xinqiao_hub::{Config, tls, trail};
use xinqiao_store::{OperationsStore as _, Store};

use crate::CliResult;
use crate::serve::ConfigArgs;

#[derive(Args)]
pub struct MigrateArgs {
    #[command(flatten)]
    from: ConfigArgs,
}

#[derive(Args)]
pub struct CheckArgs {
    #[command(flatten)]
    from: ConfigArgs,
    /// A certificate that expires within so many days is a warning.
    #[arg(long, default_value_t = 30, value_name = "DAYS")]
    warn_days: i64,
    /// Also require this host's hub to answer ready at the metrics address ([metrics] listen),
    /// so that the command can serve as a container health check.
    #[arg(long)]
    hub_ready: bool,
}

#[derive(Args)]
pub struct BackupArgs {
    #[command(flatten)]
    from: ConfigArgs,
    /// The backup file to write (must not exist).
    #[arg(long)]
    to: PathBuf,
}

#[derive(Args)]
pub struct RestoreArgs {
    #[command(flatten)]
    from: ConfigArgs,
    /// A backup written by `xinqiao backup`.
    #[arg(long = "from", value_name = "FILE")]
    backup: PathBuf,
}

/// `xinqiao migrate`: brings the database to this build's schema, refused while a running hub
/// node would not know it.
pub async fn migrate(args: MigrateArgs) -> CliResult {
    let config = args.from.load()?;
    // A new installation migrates an empty database: this command may create it.
    let store = xinqiao_store::connect(&config.database_url())
        .await
        .map_err(|e| format!("storage: {e}"))?;
    match nodes::migrate(store.as_ref()).await.map_err(|e| e.to_string())? {
        Migration::UpToDate { version } => out!("database schema is up to date (version {version})"),
        Migration::Migrated { from, to, applied } => {
            out!("database schema migrated from version {from} to {to} (applied {applied:?})");
        }
    }
    Ok(())
}

async fn connect(config: &Config) -> CliResult<Arc<dyn Store>> {
    let url = config.database_url();
    if let Some(path) = sqlite_file(&url) {
        // Connecting would create an empty database; an operator who named the wrong file
        // should hear so instead.
        if !path.exists() {
            return Err(format!(
                "no database at {} (is --data or the config right?)",
                path.display()
            ));
        }
    }
    xinqiao_store::connect(&url).await.map_err(|e| format!("storage: {e}"))
}

/// The file of a `sqlite:` URL; `None` for PostgreSQL and for in-memory databases.
fn sqlite_file(url: &str) -> Option<PathBuf> {
    let rest = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or_default();
    (!path.is_empty() && path != ":memory:").then(|| PathBuf::from(path))
}

// ---------------------------------------------------------------------------------------------
// check

/// How bad a finding is; the command exits with the worst (monitoring-plugin convention).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Level {
    Ok = 0,
    Warning = 1,
    Critical = 2,
}

impl Level {
    fn label(self) -> &'static str {
        match self {
            Level::Ok => "OK",
            Level::Warning => "WARNING",
            Level::Critical => "CRITICAL",
        }
    }
}

struct Findings(Vec<(Level, String)>);

impl Findings {
    fn add(&mut self, level: Level, what: impl Into<String>) {
        let what = what.into();
        out!("{:<8} {what}", level.label());
        self.0.push((level, what));
    }

    fn worst(&self) -> Level {
        self.0.iter().map(|(l, _)| *l).max().unwrap_or(Level::Ok)
    }
}

/// `xinqiao check`: configuration, certificates, database, schema, audit chain and (optionally)
/// the local hub's readiness. Exit 0 when all is well, 1 on a warning, 2 on a critical finding.
pub async fn check(args: CheckArgs) -> CliResult<ExitCode> {
    let mut findings = Findings(Vec::new());
    let config = match args.from.load() {
        Ok(config) => config,
        Err(e) => {
            findings.add(Level::Critical, format!("configuration: {e}"));
            return Ok(finish(&findings));
        }
    };
    match config.audit.chain_hash() {
        Ok(_) => findings.add(Level::Ok, "configuration read"),
        Err(e) => findings.add(Level::Critical, format!("configuration: {e}")),
    }
    check_certificates(&config, args.warn_days, &mut findings);
    check_database(&config, &mut findings).await;
    if args.hub_ready {
        check_ready(&config, &mut findings).await;
    }
    Ok(finish(&findings))
}

fn finish(findings: &Findings) -> ExitCode {
    let worst = findings.worst();
    let problems = findings.0.iter().filter(|(l, _)| *l != Level::Ok).count();
    out!(
        "xinqiao check: {} ({problems} of {} findings need attention)",
        worst.label(),
        findings.0.len()
    );
    ExitCode::from(worst as u8)
}

fn check_certificates(config: &Config, warn_days: i64, findings: &mut Findings) {
    let now = Utc::now();
    for (role, path) in [("CA", config.ca()), ("hub certificate", config.cert())] {
        match tls::validity(&path) {
            Err(e) => findings.add(Level::Critical, format!("{role}: {e}")),
            Ok(certs) => {
                for cert in certs {
                    let days = (cert.not_after - now).num_days();
                    let what = format!(
                        "{role} {} ({}): expires {} ({days} days)",
                        path.display(),
                        cert.subject,
                        cert.not_after.format("%Y-%m-%d")
                    );
                    let level = if cert.not_after <= now || cert.not_before > now {
                        Level::Critical
                    } else if days < warn_days {
                        Level::Warning
                    } else {
                        Level::Ok
                    };
                    findings.add(level, what);
                }
            }
        }
    }
    // Loading them as the hub does checks that the key matches and the CRL is signed by a CA.
    match tls::ServerTls::load(&config.ca(), &config.cert(), &config.key(), config.crl().as_deref()) {
        Ok(_) => findings.add(Level::Ok, "TLS configuration loads (key matches, CRL accepted)"),
        Err(e) => findings.add(Level::Critical, format!("TLS configuration: {e}")),
    }
}

async fn check_database(config: &Config, findings: &mut Findings) {
    let url = config.database_url();
    let shown = redacted(&url);
    let store = match connect(config).await {
        Ok(store) => store,
        Err(e) => return findings.add(Level::Critical, format!("database {shown}: {e}")),
    };
    match tokio::time::timeout(Duration::from_secs(5), store.ping()).await {
        Ok(Ok(())) => findings.add(Level::Ok, format!("database {shown} answers")),
        Ok(Err(e)) => return findings.add(Level::Critical, format!("database {shown}: {e}")),
        Err(_) => return findings.add(Level::Critical, format!("database {shown}: no answer within 5 s")),
    }
    match store.schema_status().await {
        Err(e) => findings.add(Level::Critical, format!("schema: {e}")),
        Ok(status) if !status.unknown().is_empty() => findings.add(
            Level::Critical,
            format!(
                "schema version {} is newer than this build knows ({})",
                status.current(),
                status.target()
            ),
        ),
        Ok(status) if !status.up_to_date() => findings.add(
            // A hub that migrates at start fixes this itself; one that does not will not start.
            if config.migrate_on_start() {
                Level::Warning
            } else {
                Level::Critical
            },
            format!(
                "schema version {} needs migrations {:?}: run `xinqiao migrate`",
                status.current(),
                status.pending()
            ),
        ),
        Ok(status) => findings.add(Level::Ok, format!("schema version {} (this build's)", status.current())),
    }
    match store.audit_head().await {
        Ok((sequence, hash)) => findings.add(Level::Ok, format!("audit chain head: event {sequence}, hash {hash}")),
        Err(e) => findings.add(Level::Critical, format!("audit chain head: {e}")),
    }
    match store.list_nodes(Utc::now() - nodes::SEEN_WITHIN).await {
        Ok(running) if running.is_empty() => findings.add(Level::Ok, "hub nodes running on this database: none"),
        Ok(running) => {
            let names: Vec<String> = running.iter().map(nodes::describe).collect();
            findings.add(
                Level::Ok,
                format!("hub nodes running on this database: {}", names.join("; ")),
            );
        }
        Err(e) => findings.add(Level::Warning, format!("hub nodes: {e}")),
    }
}

/// A database URL without its password, fit to print.
fn redacted(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    match rest.split_once('@') {
        Some((credentials, host)) => {
            let user = credentials.split(':').next().unwrap_or_default();
            format!("{scheme}://{user}@{host}")
        }
        None => url.to_string(),
    }
}

async fn check_ready(config: &Config, findings: &mut Findings) {
    let Some(mut addr) = config.metrics.listen else {
        return findings.add(
            Level::Critical,
            "hub readiness: no [metrics] listen address configured to ask",
        );
    };
    if addr.ip().is_unspecified() {
        addr.set_ip(if addr.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    match tokio::time::timeout(Duration::from_secs(3), http_get(addr, "/readyz")).await {
        Ok(Ok((200, _))) => findings.add(Level::Ok, format!("hub at {addr} is ready")),
        Ok(Ok((status, body))) => findings.add(
            Level::Critical,
            format!("hub at {addr} is not ready ({status}): {}", body.trim()),
        ),
        Ok(Err(e)) => findings.add(Level::Critical, format!("hub readiness at {addr}: {e}")),
        Err(_) => findings.add(
            Level::Critical,
            format!("hub readiness at {addr}: no answer within 3 s"),
        ),
    }
}

/// One plain HTTP/1.1 GET: the status code and the body.
async fn http_get(addr: std::net::SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes())
        .await?;
    let mut answer = Vec::new();
    stream.take(64 * 1024).read_to_end(&mut answer).await?;
    let text = String::from_utf8_lossy(&answer);
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| std::io::Error::other("not an HTTP answer"))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

// ---------------------------------------------------------------------------------------------
// backup and restore

/// `xinqiao backup`: an online, consistent copy of a SQLite hub's database, checked before it is
/// given its name.
pub async fn backup(args: BackupArgs) -> CliResult {
    let config = args.from.load()?;
    let url = config.database_url();
    if sqlite_file(&url).is_none() {
        return Err(
            "backup copies a SQLite database; back up PostgreSQL with pg_dump (README: Running in production)".into(),
        );
    }
    if args.to.exists() {
        return Err(format!(
            "{} exists; a backup never overwrites a file",
            args.to.display()
        ));
    }
    let store = connect(&config).await?;
    let partial = sibling(&args.to, "partial")?;
    store.backup_to(&partial).await.map_err(|e| e.to_string())?;
    let keys = config.audit_keyring()?;
    let summary = match inspect(&partial, &keys).await {
        Ok(summary) => summary,
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            return Err(format!("the copy does not check out, nothing written: {e}"));
        }
    };
    settle(&partial, &args.to)?;
    out!("backup written: {} ({summary})", args.to.display());
    Ok(())
}

/// `xinqiao restore`: puts a backup in place of a SQLite hub's database while no hub runs on it.
/// The database it replaces is kept beside it, renamed, never deleted.
pub async fn restore(args: RestoreArgs) -> CliResult {
    let config = args.from.load()?;
    let url = config.database_url();
    let Some(target) = sqlite_file(&url) else {
        return Err(
            "restore replaces a SQLite database; restore PostgreSQL with pg_restore (README: Running in production)"
                .into(),
        );
    };
    if !args.backup.is_file() {
        return Err(format!("no backup file at {}", args.backup.display()));
    }
    if target.exists() {
        // Opened on its own and closed before the files move: a connection left open would
        // hold the write-ahead log of a file that is about to be renamed.
        let current = xinqiao_store::SqliteStore::connect(&url)
            .await
            .map_err(|e| format!("storage: {e}"))?;
        let running = current.list_nodes(Utc::now() - nodes::SEEN_WITHIN).await;
        current.close().await;
        let running = running.map_err(|e| e.to_string())?;
        if !running.is_empty() {
            let names: Vec<String> = running.iter().map(nodes::describe).collect();
            return Err(format!(
                "refused: a hub is running on {}: {}. Stop it first",
                target.display(),
                names.join("; ")
            ));
        }
    }
    if let Some(dir) = target.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    // The backup itself is never opened for writing: a copy beside the target is checked, then
    // renamed into place.
    let incoming = sibling(&target, "restoring")?;
    std::fs::copy(&args.backup, &incoming).map_err(|e| format!("cannot copy the backup: {e}"))?;
    let keys = config.audit_keyring()?;
    let summary = match inspect(&incoming, &keys).await {
        Ok(summary) => summary,
        Err(e) => {
            let _ = std::fs::remove_file(&incoming);
            return Err(format!("the backup does not check out, nothing changed: {e}"));
        }
    };
    let kept = if target.exists() {
        let kept = PathBuf::from(format!(
            "{}.replaced-{}",
            target.display(),
            Utc::now().format("%Y%m%dT%H%M%SZ")
        ));
        // The write-ahead log belongs to the database it came from: it moves with it.
        for suffix in ["", "-wal", "-shm"] {
            let from = PathBuf::from(format!("{}{suffix}", target.display()));
            if from.exists() {
                let to = PathBuf::from(format!("{}{suffix}", kept.display()));
                std::fs::rename(&from, &to).map_err(|e| format!("cannot move {} aside: {e}", from.display()))?;
            }
        }
        Some(kept)
    } else {
        None
    };
    settle(&incoming, &target)?;
    out!(
        "restored {} from {} ({summary})",
        target.display(),
        args.backup.display()
    );
    if let Some(kept) = kept {
        out!("the database it replaced is kept at {}", kept.display());
    }
    Ok(())
}

/// A temporary name beside `path`, in the same directory so that a rename moves it into place.
fn sibling(path: &Path, purpose: &str) -> CliResult<PathBuf> {
    let name = path
        .file_name()
        .ok_or_else(|| format!("{} names no file", path.display()))?
        .to_string_lossy();
    Ok(path.with_file_name(format!(".{name}.{purpose}-{}", uuid::Uuid::new_v4())))
}

/// Opens a database file on its own and checks that this build can serve it and that its audit
/// chain is intact; a line saying what it holds.
async fn inspect(path: &Path, keys: &Keyring) -> CliResult<String> {
    let url = format!("sqlite://{}", path.display());
    let store = xinqiao_store::SqliteStore::connect(&url)
        .await
        .map_err(|e| e.to_string())?;
    let summary = summarise(&store, keys).await;
    // Closing checkpoints and removes the write-ahead log, which must not be left behind under
    // the temporary name when the file is renamed.
    store.close().await;
    summary
}

async fn summarise(store: &xinqiao_store::SqliteStore, keys: &Keyring) -> CliResult<String> {
    let status = store.schema_status().await.map_err(|e| e.to_string())?;
    if !status.unknown().is_empty() {
        return Err(format!(
            "its schema version {} is newer than this build knows ({})",
            status.current(),
            status.target()
        ));
    }
    let chain = trail::verify_chain(store, keys, None)
        .await
        .map_err(|e| e.to_string())?;
    if !chain.intact {
        return Err(format!(
            "its audit chain is broken at event {}: {}",
            chain.broken_sequence, chain.broken_reason
        ));
    }
    Ok(format!(
        "schema version {}, audit chain intact to event {} ({})",
        status.current(),
        chain.head_sequence,
        chain.head_hash
    ))
}

/// Makes a finished file durable and gives it its name, refusing to replace one.
fn settle(from: &Path, to: &Path) -> CliResult {
    let sync = |p: &Path| std::fs::File::open(p).and_then(|f| f.sync_all());
    sync(from).map_err(|e| format!("cannot sync {}: {e}", from.display()))?;
    if to.exists() {
        let _ = std::fs::remove_file(from);
        return Err(format!("{} appeared meanwhile; not replaced", to.display()));
    }
    std::fs::rename(from, to).map_err(|e| format!("cannot name {}: {e}", to.display()))?;
    if let Some(dir) = to.parent().filter(|d| !d.as_os_str().is_empty()) {
        let _ = sync(dir);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_urls_name_their_file_and_others_none() {
        assert_eq!(
            sqlite_file("sqlite:///var/lib/x/hub.db"),
            Some(PathBuf::from("/var/lib/x/hub.db"))
        );
        assert_eq!(
            sqlite_file("sqlite://data/hub.db?mode=rwc"),
            Some(PathBuf::from("data/hub.db"))
        );
        assert_eq!(sqlite_file("sqlite::memory:"), None);
        assert_eq!(sqlite_file("postgres://u@h/db"), None);
    }

    #[test]
    fn passwords_are_not_printed() {
        assert_eq!(redacted("postgres://hub:s3cret@db:5432/x"), "postgres://hub@db:5432/x");
        assert_eq!(redacted("postgres://db/x"), "postgres://db/x");
        assert_eq!(redacted("sqlite:///a/b.db"), "sqlite:///a/b.db");
    }
}
