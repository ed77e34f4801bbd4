//! `xinqiao serve`: configuration from a TOML file, then environment, then flags.

use crate::out;
use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;
use xinqiao_domain::identity::Caller;
use xinqiao_hub::registry::Registry;
use xinqiao_hub::{Config, pki, server};

use crate::CliResult;

#[derive(Args)]
pub struct ServeArgs {
    /// TOML configuration file (see deploy/xinqiao.toml).
    #[arg(long, env = "XINQIAO_CONFIG")]
    config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:7443].
    #[arg(long, env = "XINQIAO_LISTEN")]
    listen: Option<SocketAddr>,
    /// sqlite://PATH or postgres://… [default: a SQLite file in the data directory].
    #[arg(long, env = "XINQIAO_DATABASE_URL")]
    database_url: Option<String>,
    /// Data directory for the embedded database and the development PKI [default: ./xinqiao-data].
    #[arg(long, env = "XINQIAO_DATA")]
    data: Option<PathBuf>,
    /// Serve Prometheus metrics over plain HTTP at ADDR/metrics [default: not served].
    #[arg(long, env = "XINQIAO_METRICS_LISTEN", value_name = "ADDR")]
    metrics_listen: Option<SocketAddr>,
    /// Development mode: create a PKI under DATA/pki on first start (never overwriting one) and
    /// register the sample departments.
    #[arg(long)]
    dev: bool,
}

pub async fn run(args: ServeArgs) -> CliResult {
    let mut config = match &args.config {
        Some(path) => Config::load(path).map_err(|e| e.to_string())?,
        None => Config::default(),
    };
    if args.listen.is_some() {
        config.listen = args.listen;
    }
    if args.database_url.is_some() {
        config.database_url = args.database_url;
    }
    if args.data.is_some() {
        config.data_dir = args.data;
    }
    if args.metrics_listen.is_some() {
        config.metrics.listen = args.metrics_listen;
    }
    std::fs::create_dir_all(config.data_dir())
        .map_err(|e| format!("cannot create the data directory {}: {e}", config.data_dir().display()))?;

    if args.dev {
        let dir = config.pki_dir();
        if pki::ca_cert_path(&dir).exists() {
            tracing::info!(pki = %dir.display(), "using the existing development PKI");
        } else {
            pki::init(&dir, &[]).map_err(|e| e.to_string())?;
            tracing::info!(pki = %dir.display(), "created a development PKI");
        }
    }
    let store = xinqiao_store::open(&config.database_url())
        .await
        .map_err(|e| format!("storage: {e}"))?;
    if args.dev {
        server::register_sample_departments(store.as_ref())
            .await
            .map_err(|e| e.to_string())?;
        let admin = Caller::Admin(pki::DEV_ADMIN.into());
        for (schema, created) in Registry::new(store.clone())
            .import_shared(&admin)
            .await
            .map_err(|e| e.to_string())?
        {
            if created {
                tracing::info!(subject = %schema.subject, version = schema.version, "registered a shared schema");
            }
        }
    }
    let hub = server::start_with_store(&config, store)
        .await
        .map_err(|e| e.to_string())?;
    out!(
        "xinqiao hub serving on {} (mutual TLS; CA {})",
        hub.addr,
        config.ca().display()
    );
    if let Some(addr) = hub.metrics_addr {
        out!("metrics: http://{addr}/metrics");
    }
    if args.dev {
        let dir = config.pki_dir();
        out!(
            "development PKI: {}  (admin: admin.crt/admin.key; departments: dept-<USCC>.crt/.key)",
            dir.display()
        );
    }
    hub.serve_until(shutdown_signal()).await.map_err(|e| e.to_string())?;
    out!("xinqiao hub stopped");
    Ok(())
}

/// Completes on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down: no new connections; finishing calls in flight");
}
