//! What operating a hub needs from its database, beside the records: the schema's migration
//! state, the hub nodes running over it, a readiness ping and an online backup.

use std::collections::BTreeSet;
use std::path::Path;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use xinqiao_domain::Result;
use xinqiao_domain::audit::{AuditEvent, ChainLinker};

/// Which schema migrations the database has, against those this build carries. Versions are the
/// numbers of the files under `migrations/` (the same numbering on both backends).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaStatus {
    /// Versions applied successfully to the database.
    pub applied: BTreeSet<i64>,
    /// Versions this build carries.
    pub known: BTreeSet<i64>,
}

impl SchemaStatus {
    /// The database's version: its highest applied migration (0 for an empty database).
    pub fn current(&self) -> i64 {
        self.applied.last().copied().unwrap_or(0)
    }

    /// The version this build brings a database to.
    pub fn target(&self) -> i64 {
        self.known.last().copied().unwrap_or(0)
    }

    /// Migrations this build would apply.
    pub fn pending(&self) -> Vec<i64> {
        self.known.difference(&self.applied).copied().collect()
    }

    /// Migrations the database has that this build does not know: a newer hub migrated it, and
    /// this one must not run on it.
    pub fn unknown(&self) -> Vec<i64> {
        self.applied.difference(&self.known).copied().collect()
    }

    /// The database is exactly what this build expects.
    pub fn up_to_date(&self) -> bool {
        self.applied == self.known
    }
}

/// A hub node as it announces itself to the others over the shared database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubNode {
    /// Unique per process (a new one at each start).
    pub id: String,
    pub host: String,
    pub pid: u32,
    /// The gRPC address it serves on.
    pub listen: String,
    /// The build's version (`xinqiao --version`).
    pub version: String,
    /// The highest migration its build carries.
    pub schema_known: i64,
    pub started_at: DateTime<Utc>,
    /// When it last announced itself.
    pub seen_at: DateTime<Utc>,
}

/// A read stream open on a hub node, as recorded when it opened (its audit event has the same
/// request id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenStream {
    pub request_id: String,
    /// The `HubNode::id` of the node serving it.
    pub node_id: String,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub about: String,
    pub consumer: Option<String>,
    pub opened_at: DateTime<Utc>,
}

/// Operating the database under a hub.
#[async_trait]
pub trait OperationsStore: Send + Sync {
    /// Which migrations are applied and which this build carries. Reads only.
    async fn schema_status(&self) -> Result<SchemaStatus>;
    /// Applies this build's pending migrations, under the backend's migration lock (several hubs
    /// may try at once; each migration is applied once). Refuses a database migrated by a newer
    /// build or whose applied migrations were changed.
    async fn apply_migrations(&self) -> Result<()>;
    /// Records `node` as running, seen at `node.seen_at` (inserted, or updated by id).
    async fn announce_node(&self, node: &HubNode) -> Result<()>;
    /// Forgets a node that stopped.
    async fn retire_node(&self, id: &str) -> Result<()>;
    /// Nodes seen at or after `since`, by host and pid. Empty on a schema older than the table.
    async fn list_nodes(&self, since: DateTime<Utc>) -> Result<Vec<HubNode>>;
    /// Succeeds when the database answers a query: a hub whose database does not is not ready.
    async fn ping(&self) -> Result<()>;
    /// Notes a read stream as open (with its "open" audit event already recorded).
    async fn record_open_stream(&self, stream: &OpenStream) -> Result<()>;
    /// Forgets a stream that ended (with its "end" audit event recorded).
    async fn forget_open_stream(&self, request_id: &str) -> Result<()>;
    /// Every stream noted as open, oldest first.
    async fn list_open_streams(&self) -> Result<Vec<OpenStream>>;
    /// Ends a stream whose node stopped without ending it: forgets it and appends `end` to the
    /// audit chain in one transaction, so that of several nodes doing this at once one does it,
    /// and a crash in between leaves both undone. False if it was no longer open.
    async fn end_orphaned_stream(&self, request_id: &str, end: &AuditEvent, linker: &ChainLinker) -> Result<bool>;
    /// Writes a consistent copy of the whole database to the new file `path` while hubs keep
    /// working on it. SQLite only: a PostgreSQL database is backed up with `pg_dump`
    /// (FAILED_PRECONDITION here).
    async fn backup_to(&self, path: &Path) -> Result<()>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(applied: &[i64], known: &[i64]) -> SchemaStatus {
        SchemaStatus {
            applied: applied.iter().copied().collect(),
            known: known.iter().copied().collect(),
        }
    }

    #[test]
    fn an_empty_database_has_every_migration_pending() {
        let s = status(&[], &[1, 2, 3]);
        assert_eq!((s.current(), s.target()), (0, 3));
        assert_eq!(s.pending(), vec![1, 2, 3]);
        assert!(s.unknown().is_empty());
        assert!(!s.up_to_date());
    }

    #[test]
    fn an_older_database_has_the_newer_migrations_pending() {
        let s = status(&[1, 2], &[1, 2, 3, 4]);
        assert_eq!(s.current(), 2);
        assert_eq!(s.pending(), vec![3, 4]);
        assert!(s.unknown().is_empty());
    }

    #[test]
    fn a_database_migrated_by_a_newer_build_has_unknown_migrations() {
        let s = status(&[1, 2, 3, 4], &[1, 2, 3]);
        assert_eq!(s.current(), 4);
        assert_eq!(s.unknown(), vec![4]);
        assert!(s.pending().is_empty());
        assert!(!s.up_to_date());
    }

    #[test]
    fn the_same_migrations_are_up_to_date() {
        let s = status(&[1, 2, 3], &[1, 2, 3]);
        assert!(s.up_to_date());
        assert!(s.pending().is_empty() && s.unknown().is_empty());
    }
}
