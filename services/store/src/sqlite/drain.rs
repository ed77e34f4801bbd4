//! The reads a follower's drain makes on SQLite: the hot path of Subscribe and Fetch.
//!
//! On a database file, a page of changes is read through rusqlite on a blocking thread, one
//! hand-off per page. sqlx's SQLite driver runs each statement on a worker thread of its own and
//! sends every row to the waiting task over a channel; in a drain of a million records those
//! wake-ups cost more than SQLite's own work (README Performance, B3: rusqlite scans the same
//! rows at about four times sqlx's rate). rusqlite links the same SQLite library as sqlx
//! (libsqlite3-sys), and the connections here only read: in WAL mode they neither block the
//! writer nor wait for it, as the sqlx readers do. A memory database has one connection for
//! everything, so there the read stays on sqlx.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OpenFlags, OptionalExtension, types::ValueRef};

use super::*;

/// How many idle native readers are kept; a drain beyond them opens another and drops it after.
const IDLE_READERS: usize = READERS as usize;

/// Read-only rusqlite connections to the hub's file, opened as needed and kept while idle.
#[derive(Debug)]
pub(super) struct NativeReaders {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    closed: AtomicBool,
}

impl NativeReaders {
    pub(super) fn new(path: &Path) -> Arc<Self> {
        Arc::new(NativeReaders {
            path: path.to_path_buf(),
            idle: Mutex::new(Vec::new()),
            closed: AtomicBool::new(false),
        })
    }

    /// Closes the idle connections (a read under way closes its own when it ends), so that the
    /// store's last connection can checkpoint the WAL.
    pub(super) fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        if let Ok(mut idle) = self.idle.lock() {
            idle.clear();
        }
    }

    fn open(&self) -> Result<Connection> {
        // The writer has created the file and set WAL; a reader opens what exists and leaves the
        // journal mode alone. query_only makes a slip into a write an error, not a second writer.
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(native_error)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(native_error)?;
        conn.pragma_update(None, "query_only", "ON").map_err(native_error)?;
        Ok(conn)
    }

    /// Runs `read` on an idle connection (or a new one) on a blocking thread. A connection is
    /// kept for the next read only if `read` succeeded, so one that failed half-way is not reused.
    async fn read<T: Send + 'static>(
        self: &Arc<Self>,
        read: impl FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        if self.closed.load(Ordering::SeqCst) {
            return Err(Error::Unavailable("the store is closed".into()));
        }
        let readers = self.clone();
        tokio::task::spawn_blocking(move || {
            let idle = readers.idle.lock().map(|mut idle| idle.pop()).unwrap_or(None);
            let mut conn = match idle {
                Some(conn) => conn,
                None => readers.open()?,
            };
            let answer = read(&mut conn)?;
            if let Ok(mut idle) = readers.idle.lock()
                && idle.len() < IDLE_READERS
            {
                idle.push(conn);
            }
            Ok(answer)
        })
        .await
        .map_err(|e| Error::Internal(format!("the SQLite reader thread failed: {e}")))?
    }
}

fn native_error(e: rusqlite::Error) -> Error {
    match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => {
            Error::Unavailable(format!("the database is busy: {e}"))
        }
        _ => Error::Internal(format!("database: {e}")),
    }
}

/// Text a column holds; anything else is a corrupt row.
fn text<'a>(value: ValueRef<'a>, column: &str) -> Result<&'a [u8]> {
    match value {
        ValueRef::Text(bytes) => Ok(bytes),
        other => Err(corrupt(column, format!("holds {:?}, not text", other.data_type()))),
    }
}

fn utf8(bytes: &[u8], column: &str) -> Result<String> {
    String::from_utf8(bytes.to_vec()).map_err(|e| corrupt(column, e))
}

/// A `changes` row as the drain reads it (`SELECT sequence, op, key, record, published_at`).
fn native_change(row: &rusqlite::Row<'_>) -> Result<StoredChange> {
    let sequence: i64 = row.get(0).map_err(native_error)?;
    let op = text(row.get_ref(1).map_err(native_error)?, "changes.op")?;
    let key = text(row.get_ref(2).map_err(native_error)?, "changes.key")?;
    let record = match row.get_ref(3).map_err(native_error)? {
        ValueRef::Null => None,
        value => Some(text(value, "changes.record")?.to_vec()),
    };
    let published_at = text(row.get_ref(4).map_err(native_error)?, "changes.published_at")?;
    let published_at = std::str::from_utf8(published_at)
        .ok()
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .ok_or_else(|| corrupt("changes.published_at", String::from_utf8_lossy(published_at)))?;
    let op = std::str::from_utf8(op).ok().and_then(ChangeOp::parse);
    Ok(StoredChange {
        sequence: stored_u64(sequence, "changes.sequence")?,
        op: op.ok_or_else(|| corrupt("changes.op", "an unknown operation"))?,
        key: utf8(key, "changes.key")?,
        record,
        published_at: published_at.with_timezone(&Utc),
    })
}

impl SqliteStore {
    /// NOT_FOUND for an unknown dataset. The changes and the last sequence come from one
    /// snapshot (one read transaction).
    pub(super) async fn changes_after(
        &self,
        dataset: &str,
        after: u64,
        limit: u32,
    ) -> Result<(Vec<StoredChange>, u64)> {
        let Some(native) = self.native.clone() else {
            return self.changes_after_sqlx(dataset, after, limit).await;
        };
        let dataset = dataset.to_owned();
        native
            .read(move |conn| {
                let tx = conn.transaction().map_err(native_error)?;
                let last: Option<i64> = tx
                    .prepare_cached("SELECT last_sequence FROM datasets WHERE id = ?1")
                    .and_then(|mut s| s.query_row([&dataset], |r| r.get(0)).optional())
                    .map_err(native_error)?;
                let last = last.ok_or_else(|| dataset_not_found(&dataset))?;
                let mut changes = Vec::with_capacity(limit.min(10_000) as usize);
                {
                    let mut statement = tx
                        .prepare_cached(
                            "SELECT sequence, op, key, record, published_at FROM changes \
                             WHERE dataset = ?1 AND sequence > ?2 ORDER BY sequence LIMIT ?3",
                        )
                        .map_err(native_error)?;
                    let mut rows = statement
                        .query(rusqlite::params![dataset, bound(after), i64::from(limit)])
                        .map_err(native_error)?;
                    while let Some(row) = rows.next().map_err(native_error)? {
                        changes.push(native_change(row)?);
                    }
                }
                tx.finish().map_err(native_error)?;
                Ok((changes, stored_u64(last, "datasets.last_sequence")?))
            })
            .await
    }

    /// The same read through sqlx, for a memory database.
    async fn changes_after_sqlx(&self, dataset: &str, after: u64, limit: u32) -> Result<(Vec<StoredChange>, u64)> {
        let mut tx = self.readers.begin().await.map_err(db_error)?;
        let last: Option<i64> = sqlx::query_scalar("SELECT last_sequence FROM datasets WHERE id = ?")
            .bind(dataset)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_error)?;
        let last = last.ok_or_else(|| dataset_not_found(dataset))?;
        let mut query = QueryBuilder::<Sqlite>::new("SELECT ");
        query
            .push(CHANGE_COLUMNS)
            .push(" FROM changes c WHERE c.dataset = ")
            .push_bind(dataset);
        query.push(" AND c.sequence > ").push_bind(bound(after));
        query.push(" ORDER BY c.sequence LIMIT ").push_bind(i64::from(limit));
        let rows = query.build().fetch_all(&mut *tx).await.map_err(db_error)?;
        let changes = rows.iter().map(stored_change).collect::<Result<Vec<_>>>()?;
        Ok((changes, stored_u64(last, "datasets.last_sequence")?))
    }
}
