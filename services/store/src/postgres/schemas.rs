//! The schema registry on PostgreSQL: the implementation shared with SQLite
//! (`crate::schemas::schema_store!`), over this backend's pool. Registrations of one subject lock
//! its subject row (FOR UPDATE) and so run one after another on every hub node; a version being
//! referenced or bound is locked FOR SHARE, so that it cannot be deleted (soft or for good) before
//! the transaction that uses it commits.

use super::{FOR_SHARE, FOR_UPDATE, PgStore, get, stored_time};

crate::schemas::schema_store!(
    PgStore,
    sqlx::Postgres,
    sqlx::postgres::PgRow,
    sqlx::postgres::PgConnection,
    pool,
    pool
);
