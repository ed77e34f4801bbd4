//! What both backends do the same way for the audit trail: linking new events after the chain's
//! head, and reading a stored link back.

use chrono::{DateTime, Timelike, Utc};
use xinqiao_domain::Result;
use xinqiao_domain::audit::{AuditEvent, ChainHash, ChainLinker, ChainedEvent, parse_algorithm};

use crate::error::corrupt;
use crate::exchange::sequences;

/// Timestamps are stored to the microsecond on both backends; an event is hashed as it will be
/// read back, or it would never verify.
fn stored_time(at: DateTime<Utc>) -> DateTime<Utc> {
    at.with_nanosecond(at.nanosecond() / 1_000 * 1_000).unwrap_or(at)
}

/// The head of the chain as an appender finds it: the last sequence and hash (0 and
/// `audit::GENESIS` for an empty trail).
pub(crate) struct ChainHead {
    pub last_sequence: i64,
    pub last_hash: String,
}

/// Numbers `events` after `head` and links each to the one before with `linker`, as they are to be
/// stored. The caller holds the head locked until the rows are committed.
pub(crate) fn link_after(head: &ChainHead, events: &[AuditEvent], linker: &ChainLinker) -> Result<Vec<ChainedEvent>> {
    let (first, _) = sequences(head.last_sequence, events.len())?;
    let mut previous = head.last_hash.clone();
    let mut linked = Vec::with_capacity(events.len());
    for (event, sequence) in events.iter().zip(first..) {
        let mut event = event.clone();
        // `sequences` checked that the numbers fit; they are positive, since the head is not.
        event.sequence = u64::try_from(sequence).unwrap_or_default();
        event.at = stored_time(event.at);
        let (hash_text, key_id) = linker.link(&previous, &event);
        previous.clone_from(&hash_text);
        linked.push(ChainedEvent {
            event,
            hash: hash_text,
            algorithm: linker.hash,
            key_id,
        });
    }
    Ok(linked)
}

/// The event of a committed batch: the publisher's event with the commit's outcome added to its
/// JSON detail (a detail that is not a JSON object is kept under `"note"`).
pub(crate) fn batch_event(event: &AuditEvent, accepted: u32, first_sequence: i64, last_sequence: i64) -> AuditEvent {
    let mut detail = match serde_json::from_str::<serde_json::Value>(&event.detail) {
        Ok(serde_json::Value::Object(map)) => map,
        _ => {
            let mut map = serde_json::Map::new();
            if !event.detail.is_empty() {
                map.insert("note".into(), event.detail.clone().into());
            }
            map
        }
    };
    detail.insert("accepted".into(), accepted.into());
    detail.insert("first_sequence".into(), first_sequence.into());
    detail.insert("last_sequence".into(), last_sequence.into());
    detail.insert("replayed".into(), false.into());
    let mut event = event.clone();
    event.detail = serde_json::Value::Object(detail).to_string();
    event
}

/// A stored link. An algorithm the domain does not know means the row was changed behind the
/// store's back; rather than fail every listing that includes it, the row is returned with a hash
/// text that no algorithm produces (it keeps the stored hash for the record), so that
/// `audit::verify` names exactly this row as changed.
pub(crate) fn stored_link(event: AuditEvent, hash: String, algorithm: &str) -> ChainedEvent {
    match parse_algorithm(algorithm) {
        Some((algorithm, key_id)) => ChainedEvent {
            event,
            hash,
            algorithm,
            key_id,
        },
        None => {
            tracing::error!(
                sequence = event.sequence,
                algorithm,
                "audit event with an unknown hash algorithm"
            );
            ChainedEvent {
                hash: format!("unknown algorithm '{algorithm}': {hash}"),
                event,
                algorithm: ChainHash::Sha256,
                key_id: None,
            }
        }
    }
}

pub(crate) const EVENT_COLUMNS: &str =
    "sequence, at, actor, action, target, about, outcome, request_id, detail, hash, algorithm";

/// A stored sequence number of the chain's head.
pub(crate) fn head_sequence(sequence: i64) -> Result<u64> {
    u64::try_from(sequence).map_err(|e| corrupt("audit_head.last_sequence", e))
}

/// The one implementation of [`crate::AuditStore`], for either backend: the SQL is the same text
/// on both (the query builder writes each engine's placeholders). Invoked in each backend's
/// module, where `get`, `stored_time`, `begin_write` and `FOR_UPDATE` are that backend's, and
/// beside that backend's `append_in`, the one part written for each engine: SQLite inserts the
/// events many rows per statement, PostgreSQL all of them in one statement as parallel arrays.
///
/// The chain's head is read `FOR_UPDATE` by appenders and pruners: on PostgreSQL a row lock that
/// makes every hub node's appenders take turns, so the chain never forks; on SQLite nothing,
/// since the single writer connection (and BEGIN IMMEDIATE against other processes) already lets
/// one write transaction run at a time.
macro_rules! audit_store {
    ($store:ty, $db:ty, $row:ty, $conn:ty, $read:ident) => {
        use chrono::{DateTime, Utc};
        use sqlx::QueryBuilder;
        use xinqiao_domain::Result;
        use xinqiao_domain::audit::{AuditEvent, ChainLinker, ChainedEvent};

        use crate::audit::{ChainHead, EVENT_COLUMNS, head_sequence, stored_link};
        use crate::error::{corrupt, db_error, translate};
        use crate::exchange::bound;
        use crate::{AuditCheckpoint, AuditFilter, AuditStore};

        fn chained_event(row: &$row) -> Result<ChainedEvent> {
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

        /// The chain's head, locked until the transaction ends when `lock` is `FOR_UPDATE`.
        async fn chain_head(conn: &mut $conn, lock: &str) -> Result<ChainHead> {
            let mut query = QueryBuilder::<$db>::new("SELECT last_sequence, last_hash FROM audit_head WHERE id = 1 ");
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

        #[async_trait::async_trait]
        impl AuditStore for $store {
            /// One write transaction: lock the head, insert the events (see `append_in`), move the
            /// head, commit.
            async fn append_audit(&self, events: &[AuditEvent], linker: &ChainLinker) -> Result<u64> {
                if events.is_empty() {
                    let mut conn = self.$read.acquire().await.map_err(db_error)?;
                    return head_sequence(chain_head(&mut conn, "").await?.last_sequence);
                }
                let mut tx = self.begin_write().await?;
                let last = append_in(&mut tx, events, linker).await?;
                tx.commit().await.map_err(db_error)?;
                head_sequence(last)
            }

            async fn list_audit(&self, filter: &AuditFilter, after: u64, limit: u32) -> Result<Vec<ChainedEvent>> {
                let mut query = QueryBuilder::<$db>::new("SELECT ");
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
                // SQLite keeps times in one canonical text form (see its `stored_time`), which sorts
                // as the instants do; PostgreSQL as timestamptz.
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
                query
                    .push(" ORDER BY sequence LIMIT ")
                    .push_bind(i64::from(limit));
                let rows = query.build().fetch_all(&self.$read).await.map_err(db_error)?;
                rows.iter().map(chained_event).collect()
            }

            async fn audit_head(&self) -> Result<(u64, String)> {
                let mut conn = self.$read.acquire().await.map_err(db_error)?;
                let head = chain_head(&mut conn, "").await?;
                Ok((head_sequence(head.last_sequence)?, head.last_hash))
            }

            async fn audit_checkpoint(&self) -> Result<AuditCheckpoint> {
                let row =
                    sqlx::query("SELECT checkpoint_sequence, checkpoint_hash, pruned_at FROM audit_head WHERE id = 1")
                        .fetch_optional(&self.$read)
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

            /// One write transaction holding the head locked, so that two prunes cannot leave the
            /// checkpoint of the one that removed less: the last event before the first one at or
            /// after `before` is found (walking the chain in order, so an event with an earlier time
            /// further on, from a hub whose clock lags, is kept), then it and every event before it
            /// are deleted and it becomes the checkpoint.
            async fn prune_audit(&self, before: DateTime<Utc>, at: DateTime<Utc>) -> Result<u64> {
                let mut tx = self.begin_write().await?;
                chain_head(&mut tx, FOR_UPDATE).await?;
                let mut query = QueryBuilder::<$db>::new(
                    "SELECT sequence, hash FROM audit_events WHERE sequence < coalesce((SELECT s.sequence \
                     FROM audit_events s WHERE s.at >= ",
                );
                query.push_bind(stored_time(before));
                query.push(" ORDER BY s.sequence LIMIT 1), 9223372036854775807) ORDER BY sequence DESC LIMIT 1");
                let last = query.build().fetch_optional(&mut *tx).await.map_err(db_error)?;
                let Some(last) = last else {
                    return Ok(0);
                };
                let sequence: i64 = get(&last, "sequence")?;
                let hash: String = get(&last, "hash")?;
                let mut query = QueryBuilder::<$db>::new("DELETE FROM audit_events WHERE sequence <= ");
                query.push_bind(sequence);
                let deleted = query.build().execute(&mut *tx).await.map_err(db_error)?;
                let mut query = QueryBuilder::<$db>::new("UPDATE audit_head SET checkpoint_sequence = ");
                query.push_bind(sequence);
                query.push(", checkpoint_hash = ").push_bind(&hash);
                query.push(", pruned_at = ").push_bind(stored_time(at));
                query.push(" WHERE id = 1");
                query.build().execute(&mut *tx).await.map_err(db_error)?;
                tx.commit().await.map_err(db_error)?;
                Ok(deleted.rows_affected())
            }
        }
    };
}
pub(crate) use audit_store;

#[cfg(test)]
mod tests {
    use xinqiao_domain::audit::{GENESIS, verify};

    use super::*;

    fn event(action: &str) -> AuditEvent {
        AuditEvent {
            sequence: 0,
            at: DateTime::from_timestamp(1_790_000_000, 123_456_789).unwrap_or_default(),
            actor: "11330100MB00010011".into(),
            action: action.into(),
            target: "102001/000001".into(),
            about: String::new(),
            outcome: "ok".into(),
            request_id: "req".into(),
            detail: "{}".into(),
        }
    }

    #[test]
    fn events_are_numbered_and_linked_after_the_head() {
        let head = ChainHead {
            last_sequence: 0,
            last_hash: GENESIS.into(),
        };
        let first = link_after(&head, &[event("a"), event("b")], &ChainHash::Sha256.into()).expect("link");
        assert_eq!(first[1].event.sequence, 2);
        assert_eq!(first[0].event.at.nanosecond(), 123_456_000);
        let head = ChainHead {
            last_sequence: 2,
            last_hash: first[1].hash.clone(),
        };
        let second = link_after(&head, &[event("c")], &ChainHash::Sm3.into()).expect("link");
        assert_eq!(second[0].event.sequence, 3);
        let rows = first.into_iter().chain(second).collect::<Vec<_>>();
        assert_eq!(verify(GENESIS, 1, rows), Ok(3));
    }

    #[test]
    fn an_unknown_algorithm_fails_verification_at_its_row() {
        let head = ChainHead {
            last_sequence: 0,
            last_hash: GENESIS.into(),
        };
        let mut rows = link_after(&head, &[event("a"), event("b")], &ChainHash::Sha256.into()).expect("link");
        let second = rows.pop().expect("two rows");
        rows.push(stored_link(second.event, second.hash, "md5"));
        let broken = verify(GENESIS, 1, rows).expect_err("the second row is broken");
        assert_eq!(broken.sequence, 2);
    }
}
