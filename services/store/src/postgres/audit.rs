//! The audit trail on PostgreSQL: the implementation shared with SQLite
//! (`crate::audit::audit_store!`), and this backend's own append. Appenders and pruners on every
//! hub node first lock the chain's one head row (FOR UPDATE) and hold it until they commit: each
//! appender links its events after the head the previous one left, so the chain never forks and
//! its numbers have no gaps.

use sqlx::postgres::PgConnection;
use xinqiao_domain::audit::algorithm_text;

use super::{FOR_UPDATE, PgStore, get, stored_time};
use crate::audit::link_after;

/// Appends events after the chain's head inside the caller's transaction, locking the head row
/// until that transaction ends, so that appenders on every node take turns. Returns the new last
/// sequence.
pub(crate) async fn append_in(tx: &mut PgConnection, events: &[AuditEvent], linker: &ChainLinker) -> Result<i64> {
    let head = chain_head(&mut *tx, FOR_UPDATE).await?;
    let linked = link_after(&head, events, linker)?;
    let algorithm = algorithm_text(linker.hash, linker.key.as_ref().map(|k| k.id()));
    let at: Vec<DateTime<Utc>> = linked.iter().map(|l| l.event.at).collect();
    let column = |f: fn(&AuditEvent) -> &str| linked.iter().map(|l| f(&l.event)).collect::<Vec<&str>>();
    let hashes: Vec<&str> = linked.iter().map(|l| l.hash.as_str()).collect();
    let last = linked.last().map_or(head.last_sequence, |l| bound(l.event.sequence));
    let last_hash = linked.last().map_or(head.last_hash.as_str(), |l| l.hash.as_str());
    // Event i (from 1) gets sequence head + i, as `link_after` numbered and hashed it.
    sqlx::query(
        "WITH appended AS (INSERT INTO audit_events (sequence, at, actor, action, target, about, outcome, \
             request_id, detail, hash, algorithm) \
             SELECT $1 + u.n, u.at, u.actor, u.action, u.target, u.about, u.outcome, u.request_id, u.detail, \
             u.hash, $11 \
             FROM UNNEST($2::timestamptz[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], \
             $8::text[], $9::text[], $10::text[]) \
             WITH ORDINALITY AS u(at, actor, action, target, about, outcome, request_id, detail, hash, n)) \
             UPDATE audit_head SET last_sequence = $12, last_hash = $13 WHERE id = 1",
    )
    .bind(head.last_sequence)
    .bind(&at)
    .bind(column(|e| &e.actor))
    .bind(column(|e| &e.action))
    .bind(column(|e| &e.target))
    .bind(column(|e| &e.about))
    .bind(column(|e| &e.outcome))
    .bind(column(|e| &e.request_id))
    .bind(column(|e| &e.detail))
    .bind(&hashes)
    .bind(&algorithm)
    .bind(last)
    .bind(last_hash)
    .execute(&mut *tx)
    .await
    .map_err(|e| translate(e, "audit event"))?;
    Ok(last)
}

crate::audit::audit_store!(
    PgStore,
    sqlx::Postgres,
    sqlx::postgres::PgRow,
    sqlx::postgres::PgConnection,
    pool
);
