//! Operating a PostgreSQL hub: migration state, node announcements and readiness. Backups are
//! PostgreSQL's own (`pg_dump`), not the hub's.

use std::collections::BTreeSet;
use std::path::Path;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use xinqiao_domain::{Error, Result};

use super::{PgStore, get, stored_time};
use crate::error::{db_error, translate};
use crate::operations::{HubNode, OperationsStore, SchemaStatus};

impl PgStore {
    /// Whether the table exists where the search_path looks.
    async fn has_table(&self, name: &str) -> Result<bool> {
        sqlx::query_scalar::<_, bool>("SELECT to_regclass($1) IS NOT NULL")
            .bind(name)
            .fetch_one(&self.pool)
            .await
            .map_err(db_error)
    }
}

#[async_trait]
impl OperationsStore for PgStore {
    async fn schema_status(&self) -> Result<SchemaStatus> {
        let known = Self::migrator().iter().map(|m| m.version).collect();
        let applied = if self.has_table("_sqlx_migrations").await? {
            sqlx::query_scalar::<_, i64>("SELECT version FROM _sqlx_migrations WHERE success")
                .fetch_all(&self.pool)
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
        sqlx::query(
            "INSERT INTO hub_nodes (id, host, pid, listen, version, schema_known, started_at, seen_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
             ON CONFLICT (id) DO UPDATE SET seen_at = excluded.seen_at",
        )
        .bind(&node.id)
        .bind(&node.host)
        .bind(i64::from(node.pid))
        .bind(&node.listen)
        .bind(&node.version)
        .bind(node.schema_known)
        .bind(stored_time(node.started_at))
        .bind(stored_time(node.seen_at))
        .execute(&self.pool)
        .await
        .map_err(|e| translate(e, "hub node"))?;
        Ok(())
    }

    async fn retire_node(&self, id: &str) -> Result<()> {
        sqlx::query("DELETE FROM hub_nodes WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(|e| translate(e, "hub node"))?;
        Ok(())
    }

    async fn list_nodes(&self, since: DateTime<Utc>) -> Result<Vec<HubNode>> {
        if !self.has_table("hub_nodes").await? {
            return Ok(Vec::new());
        }
        let rows = sqlx::query(
            "SELECT id, host, pid, listen, version, schema_known, started_at, seen_at FROM hub_nodes \
             WHERE seen_at >= $1 ORDER BY host, pid",
        )
        .bind(stored_time(since))
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
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

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await.map_err(db_error)?;
        Ok(())
    }

    async fn backup_to(&self, _path: &Path) -> Result<()> {
        Err(Error::FailedPrecondition(
            "a PostgreSQL database is backed up with pg_dump (see README, Running in production), not by the hub"
                .into(),
        ))
    }
}
