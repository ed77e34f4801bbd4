//! The tamper-evident audit trail (等保 2.0 security audit): each event is chained to the one
//! before by a hash over both, so that a changed, removed or reordered row breaks the chain at
//! that row.

use chrono::{DateTime, SecondsFormat, Utc};
use sha2::{Digest, Sha256};

use crate::fingerprint::to_hex;

/// The hash that links the chain. SHA-256 by default; SM3 (GB/T 32905) where 国密 algorithms
/// are required.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChainHash {
    Sha256,
    Sm3,
}

impl ChainHash {
    pub fn as_str(self) -> &'static str {
        match self {
            ChainHash::Sha256 => "sha256",
            ChainHash::Sm3 => "sm3",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text.to_ascii_lowercase().as_str() {
            "sha256" | "sha-256" => Some(ChainHash::Sha256),
            "sm3" => Some(ChainHash::Sm3),
            _ => None,
        }
    }

    fn digest(self, bytes: &[u8]) -> String {
        match self {
            ChainHash::Sha256 => to_hex(&Sha256::digest(bytes)),
            ChainHash::Sm3 => to_hex(&sm3::Sm3::digest(bytes)),
        }
    }
}

/// The hash before the first event of a chain.
pub const GENESIS: &str = "genesis";

/// What happened, as the trail records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    /// Position in the chain, from 1.
    pub sequence: u64,
    pub at: DateTime<Utc>,
    /// A department code, `admin:<name>`, or the peer address for a failed handshake.
    pub actor: String,
    /// For example `publish`, `fetch`, `register_department`, `denied`.
    pub action: String,
    /// What the action was about: a dataset, entry, department, request, grant or subject.
    pub target: String,
    /// The department whose data or resource the event concerns (empty when none): with the
    /// actor, it decides which departments may read the event.
    pub about: String,
    /// `ok`, or the status code of a refusal.
    pub outcome: String,
    pub request_id: String,
    /// Counts and reasons, as JSON text (for example `{"records": 500}`).
    pub detail: String,
}

impl AuditEvent {
    /// The bytes the chain hashes: every field, length-prefixed so that no two different events
    /// (or field boundaries) serialise alike.
    fn canonical(&self) -> Vec<u8> {
        let sequence = self.sequence.to_string();
        let at = self.at.to_rfc3339_opts(SecondsFormat::Micros, true);
        let mut out = Vec::new();
        for field in [
            sequence.as_str(),
            &at,
            &self.actor,
            &self.action,
            &self.target,
            &self.about,
            &self.outcome,
            &self.request_id,
            &self.detail,
        ] {
            out.extend_from_slice(field.len().to_string().as_bytes());
            out.push(b':');
            out.extend_from_slice(field.as_bytes());
            out.push(b'\n');
        }
        out
    }
}

/// The hash of `event` chained after `previous`.
pub fn link(hash: ChainHash, previous: &str, event: &AuditEvent) -> String {
    let mut bytes = previous.as_bytes().to_vec();
    bytes.push(b'\n');
    bytes.extend(event.canonical());
    hash.digest(&bytes)
}

/// A stored row: the event, the hash it was stored with and the algorithm of that hash (a chain
/// may switch algorithm when the configuration does; each link says which one it used).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainedEvent {
    pub event: AuditEvent,
    pub hash: String,
    pub algorithm: ChainHash,
}

/// Where a chain stops being what was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokenLink {
    /// The sequence number of the first row that does not verify.
    pub sequence: u64,
    pub reason: String,
    /// How many rows before it did verify.
    pub verified: u64,
}

/// Verifies rows (in stored order) that follow `previous` and start at `first_sequence`: a
/// checkpoint left by pruning, or the genesis. Names the first broken link.
pub fn verify(
    previous: &str,
    first_sequence: u64,
    rows: impl IntoIterator<Item = ChainedEvent>,
) -> Result<u64, BrokenLink> {
    let mut previous = previous.to_string();
    let mut verified = 0;
    for (expected, row) in (first_sequence..).zip(rows) {
        if row.event.sequence != expected {
            return Err(BrokenLink {
                sequence: row.event.sequence,
                reason: format!("expected event {expected} here: rows were removed or reordered"),
                verified,
            });
        }
        let computed = link(row.algorithm, &previous, &row.event);
        if computed != row.hash {
            return Err(BrokenLink {
                sequence: row.event.sequence,
                reason: "the stored hash does not match the event and the hash before it: the row was changed".into(),
                verified,
            });
        }
        previous = row.hash;
        verified += 1;
    }
    Ok(verified)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(sequence: u64, action: &str) -> AuditEvent {
        AuditEvent {
            sequence,
            at: DateTime::from_timestamp(1_790_000_000 + sequence as i64, 0).unwrap_or_default(),
            actor: "11330100MB00010011".into(),
            action: action.into(),
            target: "102001/000001".into(),
            about: "11330100MB00010011".into(),
            outcome: "ok".into(),
            request_id: format!("req-{sequence}"),
            detail: r#"{"records":500}"#.into(),
        }
    }

    fn chain(hash: ChainHash, n: u64) -> Vec<ChainedEvent> {
        let mut previous = GENESIS.to_string();
        (1..=n)
            .map(|s| {
                let event = event(s, "publish");
                let h = link(hash, &previous, &event);
                previous = h.clone();
                ChainedEvent {
                    event,
                    hash: h,
                    algorithm: hash,
                }
            })
            .collect()
    }

    #[test]
    fn an_intact_chain_verifies_with_either_hash() {
        for hash in [ChainHash::Sha256, ChainHash::Sm3] {
            assert_eq!(verify(GENESIS, 1, chain(hash, 5)), Ok(5));
        }
        assert_ne!(chain(ChainHash::Sha256, 1)[0].hash, chain(ChainHash::Sm3, 1)[0].hash);
    }

    #[test]
    fn sm3_matches_the_standard_test_vector() {
        // GB/T 32905-2016 example 1: SM3("abc").
        assert_eq!(
            ChainHash::Sm3.digest(b"abc"),
            "66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0"
        );
    }

    #[test]
    fn a_changed_row_is_named() {
        let mut rows = chain(ChainHash::Sha256, 5);
        rows[2].event.detail = r#"{"records":5}"#.into();
        let broken = verify(GENESIS, 1, rows).expect_err("the chain is broken");
        assert_eq!(broken.sequence, 3);
        assert!(broken.reason.contains("changed"));
        // Events 1 and 2 before it did verify.
        assert_eq!(broken.verified, 2);
    }

    #[test]
    fn a_removed_or_reordered_row_is_named() {
        let mut rows = chain(ChainHash::Sha256, 5);
        rows.remove(1);
        let broken = verify(GENESIS, 1, rows).expect_err("the chain is broken");
        assert_eq!((broken.sequence, broken.verified), (3, 1));
        let mut rows = chain(ChainHash::Sha256, 5);
        rows.swap(3, 4);
        assert_eq!(verify(GENESIS, 1, rows).expect_err("the chain is broken").sequence, 5);
    }

    #[test]
    fn a_rewritten_tail_with_recomputed_hashes_still_breaks_at_the_first_change() {
        // Changing a row and recomputing its own hash leaves the next row's link broken.
        let mut rows = chain(ChainHash::Sha256, 4);
        rows[1].event.outcome = "PERMISSION_DENIED".into();
        rows[1].hash = link(ChainHash::Sha256, &rows[0].hash, &rows[1].event);
        assert_eq!(verify(GENESIS, 1, rows).expect_err("the chain is broken").sequence, 3);
    }

    #[test]
    fn pruning_keeps_the_rest_verifiable_from_a_checkpoint() {
        let rows = chain(ChainHash::Sha256, 6);
        let checkpoint = rows[2].hash.clone();
        assert_eq!(verify(&checkpoint, 4, rows[3..].to_vec()), Ok(3));
        assert!(verify(GENESIS, 4, rows[3..].to_vec()).is_err());
    }

    #[test]
    fn field_boundaries_cannot_be_shifted() {
        let mut a = event(1, "publish");
        let mut b = a.clone();
        a.actor = "ab".into();
        a.action = "c".into();
        b.actor = "a".into();
        b.action = "bc".into();
        assert_ne!(
            link(ChainHash::Sha256, GENESIS, &a),
            link(ChainHash::Sha256, GENESIS, &b)
        );
    }

    #[test]
    fn hash_names() {
        assert_eq!(ChainHash::parse("SM3"), Some(ChainHash::Sm3));
        assert_eq!(ChainHash::parse("sha256"), Some(ChainHash::Sha256));
        assert_eq!(ChainHash::parse("md5"), None);
    }
}
