//! The audit trail on SQLite. Appends and pruning run in write transactions, which the single
//! writer connection (and BEGIN IMMEDIATE against other processes) makes the only ones: nobody
//! else reads the chain's head between an appender reading it and moving it on.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::sqlite::{SqliteConnection, SqliteRow};
use sqlx::{QueryBuilder, Sqlite};
use xinqiao_domain::Result;
use xinqiao_domain::audit::{AuditEvent, ChainLinker, ChainedEvent, algorithm_text};

use super::{SqliteStore, get, stored_time};
use crate::audit::{ChainHead, link_after, stored_link};
use crate::error::{corrupt, db_error, translate};
use crate::exchange::bound;
use crate::{AuditCheckpoint, AuditFilter, AuditStore};

const EVENT_COLUMNS: &str = "sequence, at, actor, action, target, about, outcome, request_id, detail, hash, algorithm";

/// At most this many events per INSERT (11 variables each, far below SQLite's limit of 32766).
/// Events are inserted in powers of two, so that only a few distinct statements are prepared and
/// kept in the statement cache whatever the group sizes.
const MAX_INSERT_ROWS: usize = 256;

fn chained_event(row: &SqliteRow) -> Result<ChainedEvent> {
    let sequence: i64 = get(row, "sequence")?;
    let algorithm: String = get(row, "algorithm")?;
    let event = AuditEvent {
        sequence: u64::try_from(sequence).map_err(|e| corrupt("audit_events.sequence", e))?,
        at: get(row, "at")?,
        actor: get(row, "actor")?,
        action: get(row, "action")?,
        target: get(row, "target")?,
        about: get(row, "about")?,
        outcome: get(row, "outcome")?,
        request_id: get(row, "request_id")?,
        detail: get(row, "detail")?,
    };
    Ok(stored_link(event, get(row, "hash")?, &algorithm))
}

async fn chain_head(conn: &mut SqliteConnection) -> Result<ChainHead> {
    let row = sqlx::query("SELECT last_sequence, last_hash FROM audit_head WHERE id = 1")
        .fetch_optional(conn)
        .await
        .map_err(db_error)?
        .ok_or_else(|| corrupt("audit_head", "the head row is missing"))?;
    Ok(ChainHead {
        last_sequence: get(&row, "last_sequence")?,
        last_hash: get(&row, "last_hash")?,
    })
}

fn head_sequence(sequence: i64) -> Result<u64> {
    u64::try_from(sequence).map_err(|e| corrupt("audit_head.last_sequence", e))
}

/// Appends events after the chain's head inside the caller's write transaction (SQLite has one
/// writer, so the head cannot move under it). Returns the new last sequence.
pub(crate) async fn append_in(tx: &mut SqliteConnection, events: &[AuditEvent], linker: &ChainLinker) -> Result<i64> {
    let head = chain_head(&mut *tx).await?;
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

#[async_trait]
impl AuditStore for SqliteStore {
    async fn append_audit(&self, events: &[AuditEvent], linker: &ChainLinker) -> Result<u64> {
        if events.is_empty() {
            let mut conn = self.readers.acquire().await.map_err(db_error)?;
            return head_sequence(chain_head(&mut conn).await?.last_sequence);
        }
        let mut tx = self.begin_write().await?;
        let last = append_in(&mut tx, events, linker).await?;
        tx.commit().await.map_err(db_error)?;
        head_sequence(last)
    }

    async fn list_audit(&self, filter: &AuditFilter, after: u64, limit: u32) -> Result<Vec<ChainedEvent>> {
        let mut query = QueryBuilder::<Sqlite>::new("SELECT ");
        query
            .push(EVENT_COLUMNS)
            .push(" FROM audit_events WHERE sequence > ")
            .push_bind(bound(after));
        if let Some(actor) = &filter.actor {
            query.push(" AND actor = ").push_bind(actor);
        }
        if let Some(target) = &filter.target {
            query.push(" AND target = ").push_bind(target);
        }
        if let Some(action) = &filter.action {
            query.push(" AND action = ").push_bind(action);
        }
        // Times are stored in one canonical text form (see `stored_time`), which sorts as the
        // instants do.
        if let Some(from) = filter.from {
            query.push(" AND at >= ").push_bind(stored_time(from));
        }
        if let Some(to) = filter.to {
            query.push(" AND at < ").push_bind(stored_time(to));
        }
        if let Some(department) = &filter.involving {
            query.push(" AND (actor = ").push_bind(department);
            query.push(" OR about = ").push_bind(department).push(")");
        }
        query.push(" ORDER BY sequence LIMIT ").push_bind(i64::from(limit));
        let rows = query.build().fetch_all(&self.readers).await.map_err(db_error)?;
        rows.iter().map(chained_event).collect()
    }

    async fn audit_head(&self) -> Result<(u64, String)> {
        let mut conn = self.readers.acquire().await.map_err(db_error)?;
        let head = chain_head(&mut conn).await?;
        Ok((head_sequence(head.last_sequence)?, head.last_hash))
    }

    async fn audit_checkpoint(&self) -> Result<AuditCheckpoint> {
        let row = sqlx::query("SELECT checkpoint_sequence, checkpoint_hash, pruned_at FROM audit_head WHERE id = 1")
            .fetch_optional(&self.readers)
            .await
            .map_err(db_error)?
            .ok_or_else(|| corrupt("audit_head", "the head row is missing"))?;
        let sequence: i64 = get(&row, "checkpoint_sequence")?;
        Ok(AuditCheckpoint {
            sequence: u64::try_from(sequence).map_err(|e| corrupt("audit_head.checkpoint_sequence", e))?,
            hash: get(&row, "checkpoint_hash")?,
            pruned_at: get(&row, "pruned_at")?,
        })
    }

    /// One write transaction: the last event before the first one at or after `before` is found
    /// (walking the chain in order, so an event with an earlier time further on, from a hub
    /// whose clock lags, is kept), then it and every event before it are deleted and it becomes
    /// the checkpoint.
    async fn prune_audit(&self, before: DateTime<Utc>, at: DateTime<Utc>) -> Result<u64> {
        let mut tx = self.begin_write().await?;
        let last = sqlx::query(
            "SELECT sequence, hash FROM audit_events WHERE sequence < coalesce((SELECT s.sequence \
             FROM audit_events s WHERE s.at >= ? ORDER BY s.sequence LIMIT 1), 9223372036854775807) \
             ORDER BY sequence DESC LIMIT 1",
        )
        .bind(stored_time(before))
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_error)?;
        let Some(last) = last else {
            return Ok(0);
        };
        let sequence: i64 = get(&last, "sequence")?;
        let hash: String = get(&last, "hash")?;
        let deleted = sqlx::query("DELETE FROM audit_events WHERE sequence <= ?")
            .bind(sequence)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        sqlx::query("UPDATE audit_head SET checkpoint_sequence = ?, checkpoint_hash = ?, pruned_at = ? WHERE id = 1")
            .bind(sequence)
            .bind(&hash)
            .bind(stored_time(at))
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        tx.commit().await.map_err(db_error)?;
        Ok(deleted.rows_affected())
    }
}
