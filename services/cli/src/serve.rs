//! `xinqiao serve`: configuration from a TOML file, then environment, then flags.

use crate::out;
use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;
use xinqiao_domain::identity::Caller;
use xinqiao_hub::registry::Registry;
use xinqiao_hub::{Config, nodes, pki, server};

use crate::CliResult;

/// Where a hub's configuration comes from: shared by `serve` and the operations commands, so that
/// `migrate`, `check`, `backup` and `restore` find the same database and certificates.
#[derive(Args)]
pub struct ConfigArgs {
    /// TOML configuration file (see deploy/xinqiao.toml).
    #[arg(long, env = "XINQIAO_CONFIG")]
    config: Option<PathBuf>,
    /// sqlite://PATH or postgres://… [default: a SQLite file in the data directory].
    #[arg(long, env = "XINQIAO_DATABASE_URL")]
    database_url: Option<String>,
    /// Data directory for the embedded database and the development PKI [default: ./xinqiao-data].
    #[arg(long, env = "XINQIAO_DATA")]
    data: Option<PathBuf>,
}

impl ConfigArgs {
    /// The configuration file, then environment and flags over it.
    pub fn load(&self) -> CliResult<Config> {
        let mut config = match &self.config {
            Some(path) => Config::load(path).map_err(|e| e.to_string())?,
            None => Config::default(),
        };
        if self.database_url.is_some() {
            config.database_url.clone_from(&self.database_url);
        }
        if self.data.is_some() {
            config.data_dir.clone_from(&self.data);
        }
        Ok(config)
    }
}

#[derive(Args)]
pub struct ServeArgs {
    #[command(flatten)]
    from: ConfigArgs,
    /// Address to listen on [default: 127.0.0.1:7443].
    #[arg(long, env = "XINQIAO_LISTEN")]
    listen: Option<SocketAddr>,
    /// Serve Prometheus metrics and the /healthz and /readyz probes over plain HTTP at ADDR
    /// [default: not served].
    #[arg(long, env = "XINQIAO_METRICS_LISTEN", value_name = "ADDR")]
    metrics_listen: Option<SocketAddr>,
    /// Serve the web console on an HTTPS port of its own at ADDR, where browsers sign in with a
    /// link from `xinqiao console` [default: the hub's port, for browsers with a client
    /// certificate; with --dev: the hub's port + 1].
    #[arg(long, env = "XINQIAO_CONSOLE_LISTEN", value_name = "ADDR")]
    console_listen: Option<SocketAddr>,
    /// Do not migrate the database at start: it must already be at this hub's schema (run
    /// `xinqiao migrate` as a step of its own, as production deployments do).
    #[arg(long)]
    no_migrate: bool,
    /// The same as a setting: XINQIAO_MIGRATE_ON_START=false is --no-migrate.
    #[arg(long, env = "XINQIAO_MIGRATE_ON_START", hide = true, value_name = "BOOL")]
    migrate_on_start: Option<bool>,
    /// Development mode: create a PKI under DATA/pki on first start (never overwriting one) and
    /// register the sample departments.
    #[arg(long)]
    dev: bool,
}

pub async fn run(args: ServeArgs) -> CliResult {
    let mut config = args.from.load()?;
    if args.listen.is_some() {
        config.listen = args.listen;
    }
    if args.metrics_listen.is_some() {
        config.metrics.listen = args.metrics_listen;
    }
    if args.console_listen.is_some() {
        config.console.listen = args.console_listen;
    }
    if args.dev && config.console.listen.is_none() {
        // In development the console has its own port next to the hub's, so that a browser
        // without a client certificate can sign in with a link.
        let hub = config.listen();
        config.console.listen = Some(SocketAddr::new(hub.ip(), hub.port().saturating_add(1)));
    }
    if args.migrate_on_start.is_some() {
        config.migrate_on_start = args.migrate_on_start;
    }
    if args.no_migrate {
        config.migrate_on_start = Some(false);
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
    let store = xinqiao_store::connect(&config.database_url())
        .await
        .map_err(|e| format!("storage: {e}"))?;
    nodes::prepare_schema(store.as_ref(), config.migrate_on_start())
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
        out!("metrics: http://{addr}/metrics  (probes: /healthz, /readyz)");
    }
    if hub.console_addr == hub.addr {
        out!(
            "web console: https://{}/console/  (browsers with a client certificate)",
            hub.console_addr
        );
    } else {
        out!(
            "web console: https://{}/console/  (sign in with the link `xinqiao console --as admin` prints)",
            hub.console_addr
        );
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
