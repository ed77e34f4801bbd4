//! The schema registry on SQLite: the implementation shared with PostgreSQL
//! (`crate::schemas::schema_store!`), over this backend's pools. Registrations and deletions run in
//! write transactions, which the single writer connection makes the only ones.

use super::{FOR_SHARE, FOR_UPDATE, SqliteStore, get, stored_time};

crate::schemas::schema_store!(
    SqliteStore,
    sqlx::Sqlite,
    sqlx::sqlite::SqliteRow,
    sqlx::sqlite::SqliteConnection,
    readers,
    writer
);
