//! Operating a PostgreSQL hub: the implementation shared with SQLite
//! (`crate::operations::operations_store!`), and this backend's own migration state. Migrations
//! run under an advisory lock (`PgStore::migrate`); backups are PostgreSQL's own (`pg_dump`), not
//! the hub's.

use xinqiao_domain::Error;

use super::{PgStore, get, stored_time};

impl PgStore {
    /// Whether the table exists where the search_path looks.
    async fn has_table(&self, name: &str) -> Result<bool> {
        sqlx::query_scalar::<_, bool>("SELECT to_regclass($1) IS NOT NULL")
            .bind(name)
            .fetch_one(&self.pool)
            .await
            .map_err(db_error)
    }

    fn known_migrations() -> BTreeSet<i64> {
        Self::migrator().iter().map(|m| m.version).collect()
    }

    async fn backup(&self, _path: &Path) -> Result<()> {
        Err(Error::FailedPrecondition(
            "a PostgreSQL database is backed up with pg_dump (see README, Running in production), not by the hub"
                .into(),
        ))
    }
}

crate::operations::operations_store!(PgStore, sqlx::Postgres, pool, pool);
