//! Access requests, grants and error reports on PostgreSQL: the implementation shared with SQLite
//! (`crate::access::access_store!`), over this backend's pool. Answers, revocations and
//! resolutions are compare-and-set updates on the row's state: under READ COMMITTED, the second
//! of two concurrent ones waits for the first's row lock, re-reads the row, and no longer matches.

use super::{PgStore, get, stored_time};

crate::access::access_store!(
    PgStore,
    sqlx::Postgres,
    sqlx::postgres::PgRow,
    sqlx::postgres::PgConnection,
    pool,
    pool
);
