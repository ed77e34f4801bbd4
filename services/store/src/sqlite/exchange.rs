//! Datasets, their change logs, consumer cursors and files on SQLite: the implementation shared
//! with PostgreSQL (`crate::exchange::exchange_store!`), and what this backend does its own way:
//! its append (many rows per INSERT), its list of ids (one JSON text), the index it is told to
//! walk for a snapshot, and its lack of other hub nodes to hear from.

use sqlx::Sqlite;
use sqlx::sqlite::SqliteConnection;

use super::{FOR_UPDATE, SqliteStore, get, stored_time};

/// A snapshot walks the (dataset, key, sequence) index in key order; SQLite's planner would
/// otherwise pick the (dataset, sequence) key and sort.
const CHANGES_BY_KEY: &str = "changes c INDEXED BY changes_key";

/// At most this many changes per INSERT (6 variables each, far below SQLite's limit of 32766).
/// A batch is split into powers of two, so that only a few distinct statements are prepared and
/// kept in the statement cache whatever the batch sizes.
const MAX_INSERT_ROWS: usize = 512;

/// Inserts `changes`, numbered from `first`. Runs inside the caller's write transaction, which
/// the single writer connection makes the only one: nobody else numbers changes meanwhile.
async fn insert_changes(
    conn: &mut SqliteConnection,
    dataset: &str,
    changes: &[NewChange],
    (first, _): (i64, i64),
    at: DateTime<Utc>,
) -> Result<()> {
    let mut sequence = first;
    let mut rest = changes;
    while !rest.is_empty() {
        let rows = MAX_INSERT_ROWS.min(1 << rest.len().ilog2());
        let (chunk, tail) = rest.split_at(rows);
        let mut query =
            QueryBuilder::<Sqlite>::new("INSERT INTO changes (dataset, sequence, op, key, record, published_at) ");
        query.push_values(chunk.iter().zip(sequence..), |mut row, (change, sequence)| {
            row.push_bind(dataset)
                .push_bind(sequence)
                .push_bind(change.op.as_str())
                .push_bind(&change.key)
                .push_bind(change.record.as_deref())
                .push_bind(at);
        });
        query
            .build()
            .execute(&mut *conn)
            .await
            .map_err(|e| translate(e, &format!("change {sequence} of dataset {dataset}")))?;
        sequence += rows as i64;
        rest = tail;
    }
    Ok(())
}

/// A batch's keys as the table `k(value)`, bound as one JSON text.
fn push_key_table(query: &mut QueryBuilder<Sqlite>, keys: &BatchKeys<'_>) {
    query.push("json_each(").push_bind(keys.json()).push(") AS k");
}

/// One hub per SQLite file: a dataset's new head is nobody else's news.
fn push_head_moved(query: &mut QueryBuilder<Sqlite>, update: impl FnOnce(&mut QueryBuilder<Sqlite>)) {
    update(query);
}

/// `id` is one of `ids`, bound as one JSON text: the statement is the same whatever their number.
fn push_id_in(query: &mut QueryBuilder<Sqlite>, ids: &[String]) -> Result<()> {
    let ids = serde_json::to_string(ids).map_err(|e| Error::Internal(format!("encoding dataset ids: {e}")))?;
    query
        .push("id IN (SELECT value FROM json_each(")
        .push_bind(ids)
        .push("))");
    Ok(())
}

impl SqliteStore {
    /// One hub per SQLite file: there is nobody else to hear from.
    async fn listen_for_changes(&self, _sink: tokio::sync::mpsc::Sender<(String, u64)>) -> Result<bool> {
        Ok(false)
    }

    /// An upload and its chunks are read in one read transaction, from one snapshot.
    async fn upload_reader(&self) -> Result<sqlx::Transaction<'static, Sqlite>> {
        self.begin_snapshot().await
    }
}

crate::exchange::exchange_store!(
    SqliteStore,
    sqlx::Sqlite,
    sqlx::sqlite::SqliteRow,
    sqlx::sqlite::SqliteConnection,
    readers,
    writer,
    "instr"
);
