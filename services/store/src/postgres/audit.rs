//! The audit trail on PostgreSQL. Appenders and pruners on every hub node first lock the chain's
//! one head row (FOR UPDATE) and hold it until they commit: each appender links its events after
//! the head the previous one left, so the chain never forks and its numbers have no gaps.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnection, PgRow};
use sqlx::{Postgres, QueryBuilder};
use xinqiao_domain::Result;
use xinqiao_domain::audit::{AuditEvent, ChainLinker, ChainedEvent, algorithm_text};

use super::{PgStore, get, stored_time};
use crate::audit::{ChainHead, link_after, stored_link};
use crate::error::{corrupt, db_error, translate};
use crate::exchange::bound;
use crate::{AuditCheckpoint, AuditFilter, AuditStore};

const EVENT_COLUMNS: &str = "sequence, at, actor, action, target, about, outcome, request_id, detail, hash, algorithm";

fn chained_event(row: &PgRow) -> Result<ChainedEvent> {
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

/// The chain's head, locked until the transaction ends when `lock` is `FOR UPDATE`.
async fn chain_head(conn: &mut PgConnection, lock: &str) -> Result<ChainHead> {
    let mut query = QueryBuilder::<Postgres>::new("SELECT last_sequence, last_hash FROM audit_head WHERE id = 1 ");
    query.push(lock);
    let row = query
        .build()
        .fetch_optional(conn)
        .await
        .map_err(|e| translate(e, "the audit trail"))?
        .ok_or_else(|| corrupt("audit_head", "the head row is missing"))?;
    Ok(ChainHead {
        last_sequence: get(&row, "last_sequence")?,
        last_hash: get(&row, "last_hash")?,
    })
}

fn head_sequence(sequence: i64) -> Result<u64> {
    u64::try_from(sequence).map_err(|e| corrupt("audit_head.last_sequence", e))
}

/// Appends events after the chain's head inside the caller's transaction, locking the head row
/// until that transaction ends, so that appenders on every node take turns. Returns the new last
/// sequence.
pub(crate) async fn append_in(tx: &mut PgConnection, events: &[AuditEvent], linker: &ChainLinker) -> Result<i64> {
    let head = chain_head(&mut *tx, "FOR UPDATE").await?;
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

#[async_trait]
impl AuditStore for PgStore {
    /// One transaction of four statements whatever the number of events: lock the head, insert
    /// every event (as parallel arrays), move the head, commit.
    async fn append_audit(&self, events: &[AuditEvent], linker: &ChainLinker) -> Result<u64> {
        if events.is_empty() {
            let mut conn = self.pool.acquire().await.map_err(db_error)?;
            return head_sequence(chain_head(&mut conn, "").await?.last_sequence);
        }
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        let last = append_in(&mut tx, events, linker).await?;
        tx.commit().await.map_err(db_error)?;
        head_sequence(last)
    }

    async fn list_audit(&self, filter: &AuditFilter, after: u64, limit: u32) -> Result<Vec<ChainedEvent>> {
        let mut query = QueryBuilder::<Postgres>::new("SELECT ");
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
        let rows = query.build().fetch_all(&self.pool).await.map_err(db_error)?;
        rows.iter().map(chained_event).collect()
    }

    async fn audit_head(&self) -> Result<(u64, String)> {
        let mut conn = self.pool.acquire().await.map_err(db_error)?;
        let head = chain_head(&mut conn, "").await?;
        Ok((head_sequence(head.last_sequence)?, head.last_hash))
    }

    async fn audit_checkpoint(&self) -> Result<AuditCheckpoint> {
        let row = sqlx::query("SELECT checkpoint_sequence, checkpoint_hash, pruned_at FROM audit_head WHERE id = 1")
            .fetch_optional(&self.pool)
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

    /// One transaction holding the head locked, so that two prunes cannot leave the checkpoint of
    /// the one that removed less: the last event before the first one at or after `before` is
    /// found (walking the chain in order, so an event with an earlier time further on, from a
    /// hub whose clock lags, is kept), then it and every event before it are deleted and it
    /// becomes the checkpoint.
    async fn prune_audit(&self, before: DateTime<Utc>, at: DateTime<Utc>) -> Result<u64> {
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        chain_head(&mut tx, "FOR UPDATE").await?;
        let last = sqlx::query(
            "SELECT sequence, hash FROM audit_events WHERE sequence < coalesce((SELECT s.sequence \
             FROM audit_events s WHERE s.at >= $1 ORDER BY s.sequence LIMIT 1), 9223372036854775807) \
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
        let deleted = sqlx::query("DELETE FROM audit_events WHERE sequence <= $1")
            .bind(sequence)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        sqlx::query(
            "UPDATE audit_head SET checkpoint_sequence = $1, checkpoint_hash = $2, pruned_at = $3 WHERE id = 1",
        )
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
