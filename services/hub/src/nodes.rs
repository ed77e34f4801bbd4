//! Hub nodes over one database: the schema they run on, who is running, and whether this one is
//! ready to serve.
//!
//! Each serving node announces itself in the database every few seconds and retires when it
//! stops. A migration is refused while a node that does not know its target schema is running,
//! since that node would then read and write tables it does not know the shape of; the operator
//! stops (or upgrades) it first. A node that crashed stops counting once it has not been seen for
//! [`SEEN_WITHIN`], or at once when it ran on this host and its process is gone.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use xinqiao_domain::audit::{AuditEvent, ChainLinker};
use xinqiao_domain::{Error, Result};
use xinqiao_store::{HubNode, OpenStream, SchemaStatus, Store};

/// How often a serving node says it is still there.
pub const ANNOUNCE_EVERY: Duration = Duration::from_secs(5);
/// A node not seen for this long is taken to have stopped.
pub const SEEN_WITHIN: Duration = Duration::from_secs(30);
/// How long the readiness probe waits for the database.
const PING_TIMEOUT: Duration = Duration::from_secs(2);

/// What `migrate` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Migration {
    UpToDate { version: i64 },
    Migrated { from: i64, to: i64, applied: Vec<i64> },
}

/// Brings the database to this build's schema, unless a running node would not know it.
pub async fn migrate(store: &dyn Store) -> Result<Migration> {
    let status = store.schema_status().await?;
    refuse_newer(&status)?;
    let pending = status.pending();
    if pending.is_empty() {
        return Ok(Migration::UpToDate {
            version: status.current(),
        });
    }
    let nodes = store.list_nodes(Utc::now() - SEEN_WITHIN).await?;
    let blocking = blocking_migration(&nodes, status.target(), &host_name(), process_alive);
    if !blocking.is_empty() {
        let names: Vec<String> = blocking.iter().map(|n| describe(n)).collect();
        return Err(Error::FailedPrecondition(format!(
            "migration to schema {} refused: {} running and would not know it: {}. Stop or upgrade {} first",
            status.target(),
            if blocking.len() == 1 {
                "a hub node is"
            } else {
                "hub nodes are"
            },
            names.join("; "),
            if blocking.len() == 1 { "it" } else { "them" },
        )));
    }
    store.apply_migrations().await?;
    Ok(Migration::Migrated {
        from: status.current(),
        to: status.target(),
        applied: pending,
    })
}

/// Before serving: migrate when the configuration says so, or else insist that someone did.
pub async fn prepare_schema(store: &dyn Store, migrate_on_start: bool) -> Result<SchemaStatus> {
    if migrate_on_start {
        match migrate(store).await? {
            Migration::UpToDate { .. } => {}
            Migration::Migrated { from, to, .. } => tracing::info!(from, to, "database schema migrated"),
        }
    }
    let status = store.schema_status().await?;
    refuse_newer(&status)?;
    if !status.up_to_date() {
        return Err(Error::FailedPrecondition(format!(
            "the database schema is at version {} and this hub needs {} (migrations {:?} pending); run `xinqiao migrate` first",
            status.current(),
            status.target(),
            status.pending()
        )));
    }
    Ok(status)
}

fn refuse_newer(status: &SchemaStatus) -> Result<()> {
    let unknown = status.unknown();
    if unknown.is_empty() {
        return Ok(());
    }
    Err(Error::FailedPrecondition(format!(
        "the database schema is at version {}, newer than this hub knows ({}; unknown migrations {:?}): run a hub of the newer version",
        status.current(),
        status.target(),
        unknown
    )))
}

/// The running nodes that would not know schema `target`: seen lately, built for an older
/// schema, and, when on this host, still alive.
fn blocking_migration<'a>(
    nodes: &'a [HubNode],
    target: i64,
    this_host: &str,
    alive: impl Fn(u32) -> bool,
) -> Vec<&'a HubNode> {
    nodes
        .iter()
        .filter(|n| n.schema_known < target)
        .filter(|n| n.host != this_host || alive(n.pid))
        .collect()
}

pub fn describe(node: &HubNode) -> String {
    format!(
        "{} pid {} serving {} (version {}, schema {}, last seen {})",
        node.host,
        node.pid,
        node.listen,
        node.version,
        node.schema_known,
        node.seen_at.format("%Y-%m-%d %H:%M:%S UTC")
    )
}

/// This machine's name, as the kernel knows it (a pod's name in Kubernetes).
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown-host".into())
}

/// Whether a process of this host is running. Where `/proc` is missing it is taken to be, which
/// only makes a migration wait for the node to age out.
fn process_alive(pid: u32) -> bool {
    let proc = std::path::Path::new("/proc");
    !proc.is_dir() || proc.join(pid.to_string()).exists()
}

/// This process as a node serving on `listen`, for a build that carries schema `schema_known`.
pub fn this_node(listen: SocketAddr, schema_known: i64) -> HubNode {
    let now = Utc::now();
    HubNode {
        id: uuid::Uuid::now_v7().to_string(),
        host: host_name(),
        pid: std::process::id(),
        listen: listen.to_string(),
        version: env!("CARGO_PKG_VERSION").into(),
        schema_known,
        started_at: now,
        seen_at: now,
    }
}

/// Announces `node` now and every [`ANNOUNCE_EVERY`] until `stopping`, then retires it. A failed
/// announcement is logged and tried again; it only makes the node look stopped to `migrate`.
pub fn keep_announced(store: Arc<dyn Store>, mut node: HubNode, mut stopping: watch::Receiver<bool>) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            node.seen_at = Utc::now();
            if let Err(error) = store.announce_node(&node).await {
                tracing::warn!(%error, "cannot announce this hub node in the database");
            }
            tokio::select! {
                () = tokio::time::sleep(ANNOUNCE_EVERY) => {}
                _ = stopping.wait_for(|stop| *stop) => break,
            }
        }
        if let Err(error) = store.retire_node(&node.id).await {
            tracing::warn!(%error, "cannot retire this hub node from the database");
        }
    })
}

/// How often streams left open by stopped nodes are looked for.
const ORPHANS_EVERY: Duration = Duration::from_secs(60);

/// Ends, in the audit trail, the read streams of nodes that stopped without ending them (a crash,
/// a kill): now and every minute until `stopping`. A stream counts as orphaned when its node is
/// neither this one nor seen lately, and it opened more than [`SEEN_WITHIN`] ago (a node just
/// starting may serve a stream before its first announcement is seen).
pub fn keep_ending_orphaned_streams(
    store: Arc<dyn Store>,
    linker: ChainLinker,
    own_id: String,
    mut stopping: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            match end_orphaned_streams(store.as_ref(), &linker, &own_id).await {
                Ok(0) => {}
                Ok(ended) => tracing::info!(ended, "ended streams left open by stopped hub nodes"),
                Err(error) => tracing::warn!(%error, "cannot end streams left open by stopped hub nodes"),
            }
            tokio::select! {
                () = tokio::time::sleep(ORPHANS_EVERY) => {}
                _ = stopping.wait_for(|stop| *stop) => break,
            }
        }
    })
}

/// One pass of [`keep_ending_orphaned_streams`]: how many streams it ended.
pub async fn end_orphaned_streams(store: &dyn Store, linker: &ChainLinker, own_id: &str) -> Result<usize> {
    end_orphaned_streams_at(store, linker, own_id, Utc::now()).await
}

/// [`end_orphaned_streams`] as if it were `now` (tests move time on rather than wait).
pub async fn end_orphaned_streams_at(
    store: &dyn Store,
    linker: &ChainLinker,
    own_id: &str,
    now: chrono::DateTime<Utc>,
) -> Result<usize> {
    let live: Vec<String> = store
        .list_nodes(now - SEEN_WITHIN)
        .await?
        .into_iter()
        .map(|n| n.id)
        .collect();
    let mut ended = 0;
    for stream in store.list_open_streams().await? {
        let orphaned =
            stream.node_id != own_id && !live.contains(&stream.node_id) && stream.opened_at < now - SEEN_WITHIN;
        if !orphaned {
            continue;
        }
        // What the reader acknowledged is known for a named consumer; what was sent is not.
        let acknowledged = match &stream.consumer {
            Some(consumer) => store
                .get_consumer(&stream.target, &stream.actor, consumer)
                .await?
                .map(|c| c.acknowledged),
            None => None,
        };
        let end = orphan_end(&stream, acknowledged);
        if store.end_orphaned_stream(&stream.request_id, &end, linker).await? {
            ended += 1;
        }
    }
    Ok(ended)
}

/// The "end" event of a stream whose node stopped without writing it.
fn orphan_end(stream: &OpenStream, acknowledged: Option<u64>) -> AuditEvent {
    let mut detail = serde_json::json!({
        "phase": "end",
        "records": null,
        "recovered": true,
        "node": stream.node_id,
        "message": "the hub node serving this stream stopped without ending it; what it delivered is unknown",
    });
    if let Some(acknowledged) = acknowledged {
        detail["consumer"] = stream.consumer.clone().into();
        detail["acknowledged_to"] = acknowledged.into();
    }
    AuditEvent {
        sequence: 0,
        at: crate::clock::now(),
        actor: stream.actor.clone(),
        action: stream.action.clone(),
        target: stream.target.clone(),
        about: stream.about.clone(),
        outcome: "UNAVAILABLE".into(),
        request_id: stream.request_id.clone(),
        detail: detail.to_string(),
    }
}

/// Whether the hub should be sent traffic: it serves gRPC (not starting, not draining) and its
/// database answers. The same state the gRPC health service reports, for probes that speak HTTP.
#[derive(Clone)]
pub struct Readiness {
    serving: watch::Receiver<bool>,
    store: Arc<dyn Store>,
}

impl Readiness {
    pub fn new(serving: watch::Receiver<bool>, store: Arc<dyn Store>) -> Self {
        Self { serving, store }
    }

    /// `Ok` when ready, or why not.
    pub async fn check(&self) -> std::result::Result<(), String> {
        if !*self.serving.borrow() {
            return Err("not serving (starting or stopping)".into());
        }
        match tokio::time::timeout(PING_TIMEOUT, self.store.ping()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(format!("database: {error}")),
            Err(_) => Err(format!("database: no answer within {PING_TIMEOUT:?}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(host: &str, pid: u32, schema_known: i64) -> HubNode {
        let at = Utc::now();
        HubNode {
            id: format!("{host}-{pid}"),
            host: host.into(),
            pid,
            listen: "127.0.0.1:7443".into(),
            version: "0.1.0".into(),
            schema_known,
            started_at: at,
            seen_at: at,
        }
    }

    #[test]
    fn nodes_that_know_the_target_never_block() {
        let nodes = [node("a", 1, 6), node("b", 2, 7)];
        assert!(blocking_migration(&nodes, 6, "a", |_| true).is_empty());
    }

    #[test]
    fn an_older_node_elsewhere_blocks_whatever_its_pid() {
        let nodes = [node("other", 1, 5)];
        let blocking = blocking_migration(&nodes, 6, "here", |_| false);
        assert_eq!(blocking.len(), 1);
        assert_eq!(blocking[0].host, "other");
    }

    #[test]
    fn an_older_node_on_this_host_blocks_only_while_its_process_lives() {
        let nodes = [node("here", 41, 5), node("here", 42, 5)];
        let blocking = blocking_migration(&nodes, 6, "here", |pid| pid == 42);
        assert_eq!(blocking.iter().map(|n| n.pid).collect::<Vec<_>>(), vec![42]);
    }

    #[test]
    fn a_newer_database_is_refused_with_its_version() {
        let status = SchemaStatus {
            applied: [1, 2, 3].into_iter().collect(),
            known: [1, 2].into_iter().collect(),
        };
        let error = refuse_newer(&status).expect_err("refused");
        assert!(
            error.to_string().contains("version 3, newer than this hub knows (2"),
            "{error}"
        );
    }
}
