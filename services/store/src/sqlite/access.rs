//! Access requests, grants and error reports on SQLite: the implementation shared with
//! PostgreSQL (`crate::access::access_store!`), over this backend's pools.

use super::{SqliteStore, get, stored_time};

crate::access::access_store!(
    SqliteStore,
    sqlx::Sqlite,
    sqlx::sqlite::SqliteRow,
    sqlx::sqlite::SqliteConnection,
    readers,
    writer
);
