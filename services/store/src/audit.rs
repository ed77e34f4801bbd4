//! What both backends do the same way for the audit trail: linking new events after the chain's
//! head, and reading a stored link back.

use chrono::{DateTime, Timelike, Utc};
use xinqiao_domain::Result;
use xinqiao_domain::audit::{AuditEvent, ChainHash, ChainLinker, ChainedEvent, parse_algorithm};

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
