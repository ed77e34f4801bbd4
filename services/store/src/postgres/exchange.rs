//! Datasets, their change logs, consumer cursors and files on PostgreSQL: the implementation
//! shared with SQLite (`crate::exchange::exchange_store!`), and what this backend does its own
//! way: its append (a batch in one statement of parallel arrays, announced to the other hub nodes
//! at commit), its list of ids (an array), and its listening for the other nodes' commits.

use sqlx::Postgres;
use sqlx::postgres::PgConnection;

use super::{CHANGES_CHANNEL, FOR_UPDATE, PgStore, forward_changes, get, stored_time};

/// PostgreSQL picks the (dataset, key, sequence) index for a snapshot by itself.
const CHANGES_BY_KEY: &str = "changes c";

/// Inserts `changes`, numbered `first` to `last`.
async fn insert_changes(
    conn: &mut PgConnection,
    dataset: &str,
    changes: &[NewChange],
    (first, last): (i64, i64),
    at: DateTime<Utc>,
) -> Result<()> {
    // The whole batch in one statement, as parallel arrays: change i (from 1) gets sequence
    // first - 1 + i.
    let ops: Vec<&str> = changes.iter().map(|c| c.op.as_str()).collect();
    let change_keys: Vec<&str> = changes.iter().map(|c| c.key.as_str()).collect();
    let records: Vec<Option<&str>> = changes.iter().map(|c| c.record.as_deref()).collect();
    sqlx::query(
        "INSERT INTO changes (dataset, sequence, op, key, record, published_at) \
         SELECT $1, $2 + u.n, u.op, u.key, u.record, $6 \
         FROM UNNEST($3::text[], $4::text[], $5::text[]) WITH ORDINALITY AS u(op, key, record, n)",
    )
    .bind(dataset)
    .bind(first - 1)
    .bind(&ops)
    .bind(&change_keys)
    .bind(&records)
    .bind(at)
    .execute(&mut *conn)
    .await
    .map_err(|e| translate(e, &format!("changes {first} to {last} of dataset {dataset}")))?;
    Ok(())
}

/// A batch's keys as the table `k(value)`, bound as one array. The column is named as SQLite's
/// `json_each` names it, for the query both backends share.
fn push_key_table(query: &mut QueryBuilder<Postgres>, keys: &BatchKeys<'_>) {
    query
        .push("UNNEST(")
        .push_bind(&keys.keys)
        .push("::text[]) AS k(value)");
}

/// Moving a dataset's head announces it to the other hub nodes as `<schema> <last sequence>
/// <dataset>`, in the same statement; the notification is delivered when (and only if) the
/// transaction commits.
fn push_head_moved(query: &mut QueryBuilder<Postgres>, update: impl FnOnce(&mut QueryBuilder<Postgres>)) {
    query.push("WITH moved AS (");
    update(query);
    query
        .push(" RETURNING id, last_sequence) SELECT pg_notify(")
        .push_bind(CHANGES_CHANNEL)
        .push(", current_schema() || ' ' || last_sequence || ' ' || id) FROM moved");
}

/// `id` is one of `ids`, bound as one array: the statement is the same whatever their number.
fn push_id_in(query: &mut QueryBuilder<Postgres>, ids: &[String]) -> Result<()> {
    query.push("id = ANY(").push_bind(ids).push(")");
    Ok(())
}

impl PgStore {
    /// Listens on a connection of its own (same options as the pool, so the same schema), and
    /// forwards the announcements of stores in the same schema from a background task.
    async fn listen_for_changes(&self, sink: tokio::sync::mpsc::Sender<(String, u64)>) -> Result<bool> {
        let listener = self.listener(CHANGES_CHANNEL).await?;
        let schema = self.schema_name().await?;
        tokio::spawn(forward_changes(listener, schema, sink, self.pool.close_event()));
        Ok(true)
    }

    /// Chunks once written never change, so an upload and its chunks need no common snapshot.
    async fn upload_reader(&self) -> Result<sqlx::pool::PoolConnection<Postgres>> {
        self.pool.acquire().await.map_err(db_error)
    }
}

crate::exchange::exchange_store!(
    PgStore,
    sqlx::Postgres,
    sqlx::postgres::PgRow,
    sqlx::postgres::PgConnection,
    pool,
    pool,
    "strpos"
);
