//! SQLite, the embedded default: one file, one hub.
//!
//! SQLite lets one connection write at a time. Rather than have several connections queue on the
//! file lock (and fail with SQLITE_BUSY once busy_timeout runs out), every write goes through a
//! pool of exactly one connection, so writers wait in the pool in order. Reads use their own
//! pool; in WAL mode they never block the writer nor wait for it.

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{Decode, QueryBuilder, Row, Sqlite, Type};
use xinqiao_domain::exchange::ChangeOp;
use xinqiao_domain::{Error, Result};

use crate::StoredChange;
use crate::error::{corrupt, db_error, migrate_error};
// Timestamps are kept to the microsecond, as PostgreSQL keeps them, so that both backends give
// back exactly what they stored. sqlx writes them as RFC 3339 text in UTC with as few fraction
// digits as the value needs (none, 3, 6), one text per instant; since `+` and `.` sort before the
// digits, that text sorts as the instants do, and comparisons in SQL are plain text ones.
use crate::exchange::bound;
use crate::interface::stored_time;

// What the drain (`drain.rs`, the backend's own read of a dataset's changes) shares with the rest
// of the exchange.
use crate::access::stored_u64;
use crate::exchange::{CHANGE_COLUMNS, dataset_not_found};
use exchange::stored_change;

mod access;
mod audit;
mod catalog;
mod checkpoint;
mod departments;
mod drain;
mod exchange;
mod operations;
mod schemas;

const READERS: u32 = 4;
/// How long a statement waits for a lock held by another process before SQLITE_BUSY.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a request waits for a pooled connection before UNAVAILABLE.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

/// The row lock a write transaction takes on a row it reads and then changes (or relies on). None on
/// SQLite: the single writer connection (and BEGIN IMMEDIATE against other processes) already lets
/// one write transaction run at a time, and SQLite has no row locks.
const FOR_UPDATE: &str = "";
const FOR_SHARE: &str = "";

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");

/// The store on a SQLite file (or in memory, for tests and demos).
#[derive(Debug, Clone)]
pub struct SqliteStore {
    writer: SqlitePool,
    readers: SqlitePool,
    /// rusqlite readers for the drain's pages, on a file (see `drain`).
    native: Option<std::sync::Arc<drain::NativeReaders>>,
    /// Checkpoints of the write-ahead log off the writer's path, on a file (see `checkpoint`).
    checkpointer: Option<std::sync::Arc<std::sync::Mutex<checkpoint::Checkpointer>>>,
}

impl SqliteStore {
    /// Opens `sqlite:///abs/path.db`, `sqlite://relative.db` or `sqlite::memory:`, creating the
    /// file and its directory if needed, and brings the schema up to date.
    pub async fn open(url: &str) -> Result<Self> {
        let store = Self::connect(url).await?;
        MIGRATOR.run(&store.writer).await.map_err(migrate_error)?;
        Ok(store)
    }

    /// Like [`SqliteStore::open`], but leaves the schema as it is (see `OperationsStore`).
    pub async fn connect(url: &str) -> Result<Self> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|e| Error::invalid("database_url", format!("is not a SQLite URL: {e}")))?
            .create_if_missing(true)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT);

        let store = if in_memory(url) {
            // A memory database lives as long as its last connection, and its connections share
            // one cache with table locks that busy_timeout does not wait on: one connection, kept
            // open, does everything.
            let pool = SqlitePoolOptions::new()
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
                .acquire_timeout(ACQUIRE_TIMEOUT)
                .connect_with(options)
                .await
                .map_err(db_error)?;
            SqliteStore {
                writer: pool.clone(),
                readers: pool,
                native: None,
                checkpointer: None,
            }
        } else {
            if let Some(dir) = options.get_filename().parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|e| {
                    tracing::error!(error = %e, dir = %dir.display(), "cannot create the database directory");
                    Error::Internal(format!("creating {}: {e}", dir.display()))
                })?;
            }
            // WAL is a property of the file, set once by the writer; switching needs an exclusive
            // lock that busy_timeout does not wait for, so readers leave the mode alone. NORMAL
            // is durable in WAL mode except for the last commits before a power cut, and spares
            // an fsync per commit.
            let writer_options = options
                .clone()
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .pragma("wal_autocheckpoint", checkpoint::BACKSTOP_PAGES.to_string());
            let writer = SqlitePoolOptions::new()
                .max_connections(1)
                .acquire_timeout(ACQUIRE_TIMEOUT)
                .before_acquire(|conn, _| Box::pin(async move { Ok(usable(conn)) }))
                .connect_with(writer_options)
                .await
                .map_err(db_error)?;
            let native = Some(drain::NativeReaders::new(options.get_filename()));
            let checkpointer = Some(std::sync::Arc::new(std::sync::Mutex::new(
                checkpoint::Checkpointer::start(options.get_filename()),
            )));
            let readers = SqlitePoolOptions::new()
                .max_connections(READERS)
                .acquire_timeout(ACQUIRE_TIMEOUT)
                .before_acquire(|conn, _| Box::pin(async move { Ok(usable(conn)) }))
                .connect_lazy_with(options);
            SqliteStore {
                writer,
                readers,
                native,
                checkpointer,
            }
        };
        Ok(store)
    }

    /// Closes every connection, letting SQLite checkpoint the WAL into the main file.
    pub async fn close(&self) {
        if let Some(native) = &self.native {
            native.close();
        }
        if let Some(checkpointer) = &self.checkpointer {
            checkpointer.lock().unwrap_or_else(|e| e.into_inner()).stop();
        }
        self.readers.close().await;
        self.writer.close().await;
    }

    /// Begins a write transaction. IMMEDIATE takes the write lock at once: a transaction that
    /// read first and wrote later could otherwise fail outright if another process wrote between.
    async fn begin_write(&self) -> Result<sqlx::Transaction<'static, Sqlite>> {
        self.writer.begin_with("BEGIN IMMEDIATE").await.map_err(db_error)
    }

    /// Begins a read transaction on a reader: in WAL mode its statements all see one snapshot,
    /// for reads that take more than one query.
    async fn begin_snapshot(&self) -> Result<sqlx::Transaction<'static, Sqlite>> {
        self.readers.begin().await.map_err(db_error)
    }
}

/// A pooled connection still inside a transaction is not handed out again but closed (the pool
/// opens a fresh one): after SQLite rolls a transaction back by itself — on a full disk, say —
/// the driver's own rollback fails and leaves it thinking a transaction is open, and every
/// later write on it would fail, long after the disk has room again.
fn usable(conn: &mut SqliteConnection) -> bool {
    use sqlx::Connection as _;
    let fresh = !conn.is_in_transaction();
    if !fresh {
        tracing::warn!("a database connection was left inside a transaction; it is replaced");
    }
    fresh
}

fn in_memory(url: &str) -> bool {
    let rest = url.trim_start_matches("sqlite://").trim_start_matches("sqlite:");
    let (database, params) = rest.split_once('?').unwrap_or((rest, ""));
    database == ":memory:" || params.split('&').any(|p| p == "mode=memory")
}

fn get<'r, T: Decode<'r, Sqlite> + Type<Sqlite>>(row: &'r SqliteRow, column: &str) -> Result<T> {
    row.try_get(column).map_err(db_error)
}

crate::interface::interface_store!(SqliteStore, sqlx::Sqlite, readers, writer);
crate::federation::federation_store!(SqliteStore, sqlx::Sqlite, readers, writer);
crate::console::console_store!(SqliteStore, sqlx::Sqlite, readers, writer);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_urls_are_recognised() {
        assert!(in_memory("sqlite::memory:"));
        assert!(in_memory("sqlite://:memory:"));
        assert!(in_memory("sqlite://?mode=memory&cache=shared"));
        assert!(!in_memory("sqlite:///var/lib/xinqiao/hub.db"));
        assert!(!in_memory("sqlite://hub.db"));
    }
}
