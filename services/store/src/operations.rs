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

/// The one implementation of [`OperationsStore`], for either backend: the SQL is the same text on
/// both (the query builder writes each engine's placeholders). Invoked in each backend's module,
/// where `get`, `stored_time` and `begin_write` are that backend's, `$read` and `$write` its
/// pools. What differs by engine is each backend's own inherent methods: `has_table` (each
/// engine's catalogue), `known_migrations` and `migrate` (each its own migrations, PostgreSQL's
/// under an advisory lock), and `backup` (SQLite's VACUUM INTO; PostgreSQL is backed up by
/// pg_dump).
macro_rules! operations_store {
    ($store:ty, $db:ty, $read:ident, $write:ident) => {
        use std::collections::BTreeSet;
        use std::path::Path;

        use chrono::{DateTime, Utc};
        use sqlx::QueryBuilder;
        use xinqiao_domain::Result;
        use xinqiao_domain::audit::{AuditEvent, ChainLinker};

        use crate::error::{db_error, translate};
        use crate::operations::{HubNode, OpenStream, OperationsStore, SchemaStatus};

        #[async_trait::async_trait]
        impl OperationsStore for $store {
            async fn schema_status(&self) -> Result<SchemaStatus> {
                let known = Self::known_migrations();
                let applied = if self.has_table("_sqlx_migrations").await? {
                    sqlx::query_scalar::<_, i64>("SELECT version FROM _sqlx_migrations WHERE success")
                        .fetch_all(&self.$read)
                        .await
                        .map_err(db_error)?
                        .into_iter()
                        .collect()
                } else {
                    BTreeSet::new()
                };
                Ok(SchemaStatus { applied, known })
            }

            async fn apply_migrations(&self) -> Result<()> {
                self.migrate().await
            }

            async fn announce_node(&self, node: &HubNode) -> Result<()> {
                let mut query = QueryBuilder::<$db>::new(
                    "INSERT INTO hub_nodes (id, host, pid, listen, version, schema_known, started_at, seen_at) VALUES (",
                );
                let mut values = query.separated(", ");
                values.push_bind(&node.id);
                values.push_bind(&node.host);
                values.push_bind(i64::from(node.pid));
                values.push_bind(&node.listen);
                values.push_bind(&node.version);
                values.push_bind(node.schema_known);
                values.push_bind(stored_time(node.started_at));
                values.push_bind(stored_time(node.seen_at));
                query.push(") ON CONFLICT (id) DO UPDATE SET seen_at = excluded.seen_at");
                query
                    .build()
                    .execute(&self.$write)
                    .await
                    .map_err(|e| translate(e, "hub node"))?;
                Ok(())
            }

            async fn retire_node(&self, id: &str) -> Result<()> {
                let mut query = QueryBuilder::<$db>::new("DELETE FROM hub_nodes WHERE id = ");
                query.push_bind(id);
                query
                    .build()
                    .execute(&self.$write)
                    .await
                    .map_err(|e| translate(e, "hub node"))?;
                Ok(())
            }

            async fn list_nodes(&self, since: DateTime<Utc>) -> Result<Vec<HubNode>> {
                if !self.has_table("hub_nodes").await? {
                    return Ok(Vec::new());
                }
                let mut query = QueryBuilder::<$db>::new(
                    "SELECT id, host, pid, listen, version, schema_known, started_at, seen_at FROM hub_nodes \
                     WHERE seen_at >= ",
                );
                query.push_bind(stored_time(since)).push(" ORDER BY host, pid");
                let rows = query.build().fetch_all(&self.$read).await.map_err(db_error)?;
                rows.iter()
                    .map(|row| {
                        let pid: i64 = get(row, "pid")?;
                        Ok(HubNode {
                            id: get(row, "id")?,
                            host: get(row, "host")?,
                            pid: u32::try_from(pid).unwrap_or_default(),
                            listen: get(row, "listen")?,
                            version: get(row, "version")?,
                            schema_known: get(row, "schema_known")?,
                            started_at: get(row, "started_at")?,
                            seen_at: get(row, "seen_at")?,
                        })
                    })
                    .collect()
            }

            async fn record_open_stream(&self, stream: &OpenStream) -> Result<()> {
                let mut query = QueryBuilder::<$db>::new(
                    "INSERT INTO open_streams (request_id, node_id, actor, action, target, about, consumer, opened_at) \
                     VALUES (",
                );
                let mut values = query.separated(", ");
                values.push_bind(&stream.request_id);
                values.push_bind(&stream.node_id);
                values.push_bind(&stream.actor);
                values.push_bind(&stream.action);
                values.push_bind(&stream.target);
                values.push_bind(&stream.about);
                values.push_bind(&stream.consumer);
                values.push_bind(stored_time(stream.opened_at));
                query.push(")");
                query
                    .build()
                    .execute(&self.$write)
                    .await
                    .map_err(|e| translate(e, "open stream"))?;
                Ok(())
            }

            async fn forget_open_stream(&self, request_id: &str) -> Result<()> {
                let mut query = QueryBuilder::<$db>::new("DELETE FROM open_streams WHERE request_id = ");
                query.push_bind(request_id);
                query
                    .build()
                    .execute(&self.$write)
                    .await
                    .map_err(|e| translate(e, "open stream"))?;
                Ok(())
            }

            async fn list_open_streams(&self) -> Result<Vec<OpenStream>> {
                let rows = sqlx::query(
                    "SELECT request_id, node_id, actor, action, target, about, consumer, opened_at FROM open_streams \
                     ORDER BY opened_at, request_id",
                )
                .fetch_all(&self.$read)
                .await
                .map_err(db_error)?;
                rows.iter()
                    .map(|row| {
                        Ok(OpenStream {
                            request_id: get(row, "request_id")?,
                            node_id: get(row, "node_id")?,
                            actor: get(row, "actor")?,
                            action: get(row, "action")?,
                            target: get(row, "target")?,
                            about: get(row, "about")?,
                            consumer: get(row, "consumer")?,
                            opened_at: get(row, "opened_at")?,
                        })
                    })
                    .collect()
            }

            async fn end_orphaned_stream(&self, request_id: &str, end: &AuditEvent, linker: &ChainLinker) -> Result<bool> {
                let mut tx = self.begin_write().await?;
                let mut query = QueryBuilder::<$db>::new("DELETE FROM open_streams WHERE request_id = ");
                query.push_bind(request_id);
                let forgotten = query
                    .build()
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| translate(e, "open stream"))?
                    .rows_affected();
                if forgotten == 0 {
                    return Ok(false);
                }
                super::audit::append_in(&mut tx, std::slice::from_ref(end), linker).await?;
                tx.commit().await.map_err(db_error)?;
                Ok(true)
            }

            async fn ping(&self) -> Result<()> {
                sqlx::query("SELECT 1").execute(&self.$read).await.map_err(db_error)?;
                Ok(())
            }

            async fn backup_to(&self, path: &Path) -> Result<()> {
                self.backup(path).await
            }
        }
    };
}
pub(crate) use operations_store;

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
