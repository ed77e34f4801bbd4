//! The audit trail on SQLite: the implementation shared with PostgreSQL
//! (`crate::audit::audit_store!`), and this backend's own append. Appends and pruning run in write
//! transactions, which the single writer connection (and BEGIN IMMEDIATE against other processes)
//! makes the only ones: nobody else reads the chain's head between an appender reading it and
//! moving it on.

use sqlx::Sqlite;
use sqlx::sqlite::SqliteConnection;
use xinqiao_domain::audit::algorithm_text;

use super::{FOR_UPDATE, SqliteStore, get, stored_time};
use crate::audit::link_after;

/// At most this many events per INSERT (11 variables each, far below SQLite's limit of 32766).
/// Events are inserted in powers of two, so that only a few distinct statements are prepared and
/// kept in the statement cache whatever the group sizes.
const MAX_INSERT_ROWS: usize = 256;

/// Appends events after the chain's head inside the caller's write transaction (SQLite has one
/// writer, so the head cannot move under it). Returns the new last sequence.
pub(crate) async fn append_in(tx: &mut SqliteConnection, events: &[AuditEvent], linker: &ChainLinker) -> Result<i64> {
    let head = chain_head(&mut *tx, FOR_UPDATE).await?;
    let linked = link_after(&head, events, linker)?;
    let algorithm = algorithm_text(linker.hash, linker.key.as_ref().map(|k| k.id()));
    let mut rest = linked.as_slice();
    while !rest.is_empty() {
        let rows = MAX_INSERT_ROWS.min(1 << rest.len().ilog2());
        let (chunk, tail) = rest.split_at(rows);
        let mut query = QueryBuilder::<Sqlite>::new("INSERT INTO audit_events (");
        query.push(EVENT_COLUMNS).push(") ");
        query.push_values(chunk, |mut row, linked| {
            let event = &linked.event;
            row.push_bind(bound(event.sequence))
                .push_bind(event.at)
                .push_bind(&event.actor)
                .push_bind(&event.action)
                .push_bind(&event.target)
                .push_bind(&event.about)
                .push_bind(&event.outcome)
                .push_bind(&event.request_id)
                .push_bind(&event.detail)
                .push_bind(&linked.hash)
                .push_bind(&algorithm);
        });
        query
            .build()
            .execute(&mut *tx)
            .await
            .map_err(|e| translate(e, "audit event"))?;
        rest = tail;
    }
    let last = linked.last().map_or(head.last_sequence, |l| bound(l.event.sequence));
    let last_hash = linked.last().map_or(head.last_hash.as_str(), |l| l.hash.as_str());
    sqlx::query("UPDATE audit_head SET last_sequence = ?, last_hash = ? WHERE id = 1")
        .bind(last)
        .bind(last_hash)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
    Ok(last)
}

crate::audit::audit_store!(
    SqliteStore,
    sqlx::Sqlite,
    sqlx::sqlite::SqliteRow,
    sqlx::sqlite::SqliteConnection,
    readers
);
