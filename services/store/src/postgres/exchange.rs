//! Datasets, their change logs, consumer cursors and files on PostgreSQL: the implementation
//! shared with SQLite (`crate::exchange::exchange_store!`), and what this backend does its own
//! way: its append (a batch in one statement of parallel arrays, announced to the other hub nodes
//! at commit), its list of ids (an array), and its listening for the other nodes' commits.

use sqlx::Postgres;
use sqlx::postgres::PgConnection;

use super::{CHANGES_CHANNEL, FOR_UPDATE, PgStore, forward_changes, get, stored_time};
use crate::exchange::BatchKeys;

/// PostgreSQL picks the (dataset, key, sequence) index for a snapshot by itself.
const CHANGES_BY_KEY: &str = "changes c";

/// Appends `changes` to a dataset's log after `head` (whose row the caller has locked) and moves
/// the dataset on: its last sequence, record count and last publish time, announcing the new
/// head to the other hub nodes at commit. `changes` is not empty, and `first` to `last` are the
/// sequence numbers they take (see `crate::exchange::sequences`).
async fn append_changes(
    conn: &mut PgConnection,
    dataset: &str,
    head: Head,
    changes: &[NewChange],
    (first, last): (i64, i64),
    at: DateTime<Utc>,
) -> Result<()> {
    // How many of the batch's keys are present now: one lookup of each key's latest change,
    // through the (dataset, key, sequence) index. This statement's snapshot is taken after the
    // lock was granted, so it sees every earlier batch.
    let keys = BatchKeys::of(changes);
    let present_before: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM UNNEST($2::text[]) AS k(key) WHERE (SELECT c.op FROM changes c \
         WHERE c.dataset = $1 AND c.key = k.key ORDER BY c.sequence DESC LIMIT 1) = 'upsert'",
    )
    .bind(dataset)
    .bind(&keys.keys)
    .fetch_one(&mut *conn)
    .await
    .map_err(db_error)?;

    // The whole batch in one statement, as parallel arrays: change i gets sequence last + i.
    let ops: Vec<&str> = changes.iter().map(|c| c.op.as_str()).collect();
    let change_keys: Vec<&str> = changes.iter().map(|c| c.key.as_str()).collect();
    let records: Vec<Option<&str>> = changes.iter().map(|c| c.record.as_deref()).collect();
    sqlx::query(
        "INSERT INTO changes (dataset, sequence, op, key, record, published_at) \
         SELECT $1, $2 + u.n, u.op, u.key, u.record, $6 \
         FROM UNNEST($3::text[], $4::text[], $5::text[]) WITH ORDINALITY AS u(op, key, record, n)",
    )
    .bind(dataset)
    .bind(head.last_sequence)
    .bind(&ops)
    .bind(&change_keys)
    .bind(&records)
    .bind(at)
    .execute(&mut *conn)
    .await
    .map_err(|e| translate(e, &format!("changes {first} to {last} of dataset {dataset}")))?;

    // The notification is delivered when (and only if) the transaction commits.
    sqlx::query(
        "WITH moved AS (UPDATE datasets SET last_sequence = $2, record_count = $3, last_published_at = $4 \
         WHERE id = $1 RETURNING id, last_sequence) \
         SELECT pg_notify($5, current_schema() || ' ' || last_sequence || ' ' || id) FROM moved",
    )
    .bind(dataset)
    .bind(last)
    .bind(keys.record_count(head.record_count, present_before))
    .bind(at)
    .bind(CHANGES_CHANNEL)
    .execute(&mut *conn)
    .await
    .map_err(db_error)?;
    Ok(())
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
