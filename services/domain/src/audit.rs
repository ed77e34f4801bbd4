//! The tamper-evident audit trail (等保 2.0 security audit): each event is chained to the one
//! before by a hash over both, so that a changed, removed or reordered row breaks the chain at
//! that row.

use std::sync::Arc;

use chrono::{DateTime, SecondsFormat, Utc};
use hmac::{KeyInit, Mac, SimpleHmac};
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

    /// HMAC (RFC 2104) over `bytes` with this hash: HMAC-SHA-256, or HMAC-SM3.
    fn mac(self, secret: &[u8], bytes: &[u8]) -> String {
        fn run<D: Digest + hmac::digest::block_api::BlockSizeUser>(secret: &[u8], bytes: &[u8]) -> String {
            // Any key length is accepted by HMAC; `ChainKey` insists on at least 32 bytes.
            match <SimpleHmac<D> as KeyInit>::new_from_slice(secret) {
                Ok(mut mac) => {
                    mac.update(bytes);
                    to_hex(&mac.finalize().into_bytes())
                }
                Err(_) => String::new(),
            }
        }
        match self {
            ChainHash::Sha256 => run::<Sha256>(secret, bytes),
            ChainHash::Sm3 => run::<sm3::Sm3>(secret, bytes),
        }
    }
}

/// A secret key for the chain's links, kept outside the database (a file or an environment
/// variable). With it each link is an HMAC, which someone who can write the database but does not
/// hold the key cannot recompute; its id is stored with every link it made, so that keys can be
/// rotated and older links still verified.
#[derive(Clone, PartialEq, Eq)]
pub struct ChainKey {
    id: String,
    secret: Arc<[u8]>,
}

impl std::fmt::Debug for ChainKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChainKey").field("id", &self.id).finish_non_exhaustive()
    }
}

impl ChainKey {
    /// The shortest secret accepted, in bytes (the hash's output size).
    pub const MIN_SECRET: usize = 32;

    pub fn new(id: &str, secret: &[u8]) -> Result<ChainKey, String> {
        let id_ok = !id.is_empty()
            && id.len() <= 32
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if !id_ok {
            return Err(format!(
                "audit key id '{id}': 1 to 32 of A-Z, a-z, 0-9, '-', '_' and '.'"
            ));
        }
        if secret.len() < Self::MIN_SECRET {
            return Err(format!(
                "audit key '{id}': the secret has {} bytes; at least {} are needed",
                secret.len(),
                Self::MIN_SECRET
            ));
        }
        Ok(ChainKey {
            id: id.into(),
            secret: secret.into(),
        })
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// Reads keys written one per line as `ID:HEX` (blank lines and `#` comments skipped). The
    /// last is the one new links are made with; the others remain to verify older links.
    pub fn parse_lines(text: &str) -> Result<Vec<ChainKey>, String> {
        let mut keys: Vec<ChainKey> = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (id, hex) = line
                .split_once(':')
                .ok_or_else(|| format!("line {}: expected ID:HEX", n + 1))?;
            let secret =
                from_hex(hex.trim()).ok_or_else(|| format!("line {}: the secret is not hexadecimal", n + 1))?;
            let key = ChainKey::new(id.trim(), &secret).map_err(|e| format!("line {}: {e}", n + 1))?;
            if keys.iter().any(|k| k.id == key.id) {
                return Err(format!("line {}: audit key '{}' appears twice", n + 1, key.id));
            }
            keys.push(key);
        }
        Ok(keys)
    }

    /// The line `parse_lines` reads back.
    pub fn to_line(&self) -> String {
        format!("{}:{}", self.id, to_hex(&self.secret))
    }
}

fn from_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| text.get(i..i + 2).and_then(|pair| u8::from_str_radix(pair, 16).ok()))
        .collect()
}

/// How new links are made: the hash, and the key when the chain is keyed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainLinker {
    pub hash: ChainHash,
    pub key: Option<ChainKey>,
}

impl From<ChainHash> for ChainLinker {
    fn from(hash: ChainHash) -> Self {
        ChainLinker { hash, key: None }
    }
}

impl ChainLinker {
    /// The link of `event` after `previous`, and the key id it was made with.
    pub fn link(&self, previous: &str, event: &AuditEvent) -> (String, Option<String>) {
        match &self.key {
            None => (link(self.hash, previous, event), None),
            Some(key) => (keyed_link(self.hash, key, previous, event), Some(key.id.clone())),
        }
    }
}

/// How a link's algorithm is stored: `sha256`, `sm3`, `hmac-sha256:<key id>`, `hmac-sm3:<key id>`.
pub fn algorithm_text(hash: ChainHash, key_id: Option<&str>) -> String {
    match key_id {
        None => hash.as_str().to_string(),
        Some(id) => format!("hmac-{}:{id}", hash.as_str()),
    }
}

/// Reads a stored algorithm back: the hash and the key id, if keyed. `None` for what no hub
/// writes.
pub fn parse_algorithm(text: &str) -> Option<(ChainHash, Option<String>)> {
    match text.strip_prefix("hmac-") {
        None => ChainHash::parse(text).map(|hash| (hash, None)),
        Some(rest) => {
            let (hash, id) = rest.split_once(':')?;
            let valid_id = !id.is_empty() && id.len() <= 32;
            valid_id.then_some((ChainHash::parse(hash)?, Some(id.to_string())))
        }
    }
}

/// The keys a verifier holds, and from which event on every link must be keyed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Keyring {
    keys: Vec<ChainKey>,
    /// Links up to this sequence may be unkeyed (written before the chain had a key); every later
    /// one must be keyed. `None`: no key is configured, and unkeyed links are all there is.
    unkeyed_until: Option<u64>,
}

impl Keyring {
    /// No keys: keyed links cannot be checked, unkeyed ones are taken as they are.
    pub fn none() -> Keyring {
        Keyring::default()
    }

    /// `keys` (the last makes new links); every link after `unkeyed_until` must be keyed with one
    /// of them, so that a chain recomputed without the key does not verify.
    pub fn new(keys: Vec<ChainKey>, unkeyed_until: u64) -> Keyring {
        let unkeyed_until = (!keys.is_empty()).then_some(unkeyed_until);
        Keyring { keys, unkeyed_until }
    }

    /// The linker for new events: keyed with the newest key, when there is one.
    pub fn linker(&self, hash: ChainHash) -> ChainLinker {
        ChainLinker {
            hash,
            key: self.keys.last().cloned(),
        }
    }

    fn key(&self, id: &str) -> Option<&ChainKey> {
        self.keys.iter().find(|k| k.id == id)
    }
}

/// The HMAC link of `event` after `previous` under `key`.
pub fn keyed_link(hash: ChainHash, key: &ChainKey, previous: &str, event: &AuditEvent) -> String {
    hash.mac(&key.secret, &linked_bytes(previous, event))
}

/// A signed statement of the chain's head at a moment (`xinqiao audit anchor`), kept outside the
/// database: while the anchor's event still has the anchor's hash and the chain verifies up to
/// it, nothing at or before it was rewritten, removed or reordered, keyed or not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Anchor {
    pub sequence: u64,
    pub hash: String,
    pub at: DateTime<Utc>,
}

impl Anchor {
    /// The exact bytes the hub signs.
    pub fn signed_bytes(&self) -> Vec<u8> {
        format!(
            "xinqiao audit anchor v1\n{}\n{}\n{}\n",
            self.sequence,
            self.hash,
            self.at.to_rfc3339_opts(SecondsFormat::Micros, true)
        )
        .into_bytes()
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

fn linked_bytes(previous: &str, event: &AuditEvent) -> Vec<u8> {
    let mut bytes = previous.as_bytes().to_vec();
    bytes.push(b'\n');
    bytes.extend(event.canonical());
    bytes
}

/// The (unkeyed) hash of `event` chained after `previous`.
pub fn link(hash: ChainHash, previous: &str, event: &AuditEvent) -> String {
    hash.digest(&linked_bytes(previous, event))
}

/// A stored row: the event, the hash it was stored with and the algorithm of that hash (a chain
/// may switch algorithm when the configuration does; each link says which one it used).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainedEvent {
    pub event: AuditEvent,
    pub hash: String,
    pub algorithm: ChainHash,
    /// The key the link is an HMAC with; `None` for a plain hash.
    pub key_id: Option<String>,
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
/// checkpoint left by pruning, or the genesis. Names the first broken link. Without keys, a keyed
/// link cannot be checked and counts as broken; see [`verify_keyed`].
pub fn verify(
    previous: &str,
    first_sequence: u64,
    rows: impl IntoIterator<Item = ChainedEvent>,
) -> Result<u64, BrokenLink> {
    verify_keyed(previous, first_sequence, rows, &Keyring::none())
}

/// [`verify`] with the keys of a keyed chain: each keyed link must be the HMAC of its key, and
/// every link after the keyring's `unkeyed_until` must be keyed.
pub fn verify_keyed(
    previous: &str,
    first_sequence: u64,
    rows: impl IntoIterator<Item = ChainedEvent>,
    keys: &Keyring,
) -> Result<u64, BrokenLink> {
    let mut previous = previous.to_string();
    let mut verified = 0;
    for (expected, row) in (first_sequence..).zip(rows) {
        let broken = |reason: String| BrokenLink {
            sequence: row.event.sequence,
            reason,
            verified,
        };
        if row.event.sequence != expected {
            return Err(broken(format!(
                "expected event {expected} here: rows were removed or reordered"
            )));
        }
        let computed = match &row.key_id {
            None => {
                if keys.unkeyed_until.is_some_and(|until| row.event.sequence > until) {
                    return Err(broken(
                        "the link is not keyed, but the chain is keyed from here on: it was rewritten without the key"
                            .into(),
                    ));
                }
                link(row.algorithm, &previous, &row.event)
            }
            Some(id) => match keys.key(id) {
                Some(key) => keyed_link(row.algorithm, key, &previous, &row.event),
                None => {
                    return Err(broken(format!(
                        "the link is keyed with '{id}', a key this verifier does not hold"
                    )));
                }
            },
        };
        if computed != row.hash {
            return Err(broken(
                "the stored hash does not match the event and the hash before it: the row was changed".into(),
            ));
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
                    key_id: None,
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

    fn key(id: &str, byte: u8) -> ChainKey {
        ChainKey::new(id, &[byte; 32]).expect("a valid key")
    }

    /// A chain linked by `linkers[i % len]`, so that keys and hashes can change along it.
    fn keyed_chain(linkers: &[ChainLinker], n: u64) -> Vec<ChainedEvent> {
        let mut previous = GENESIS.to_string();
        (1..=n)
            .map(|s| {
                let linker = &linkers[(s as usize - 1) % linkers.len()];
                let event = event(s, "fetch");
                let (hash, key_id) = linker.link(&previous, &event);
                previous.clone_from(&hash);
                ChainedEvent {
                    event,
                    hash,
                    algorithm: linker.hash,
                    key_id,
                }
            })
            .collect()
    }

    #[test]
    fn hmac_sha256_matches_rfc_4231() {
        // RFC 4231 test case 2.
        assert_eq!(
            ChainHash::Sha256.mac(b"Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn hmac_sm3_is_rfc_2104_over_sm3() {
        let (secret, message) = ([0x0bu8; 32], b"Hi There");
        let pad = |byte: u8| {
            secret
                .iter()
                .chain(std::iter::repeat(&0).take(64 - 32))
                .map(|b| b ^ byte)
                .collect::<Vec<u8>>()
        };
        let inner = sm3::Sm3::digest([pad(0x36), message.to_vec()].concat());
        let outer = sm3::Sm3::digest([pad(0x5c), inner.to_vec()].concat());
        assert_eq!(ChainHash::Sm3.mac(&secret, message), to_hex(&outer));
    }

    #[test]
    fn keys_are_read_one_per_line_and_refused_when_weak() {
        let text = format!(
            "# rotated yearly\n{}\n\n{}\n",
            key("k2025", 1).to_line(),
            key("k2026", 2).to_line()
        );
        let keys = ChainKey::parse_lines(&text).expect("two keys");
        assert_eq!(keys.iter().map(ChainKey::id).collect::<Vec<_>>(), ["k2025", "k2026"]);
        assert_eq!(keys[1], key("k2026", 2));
        assert!(
            ChainKey::parse_lines("k1:abcd")
                .expect_err("short")
                .contains("at least 32")
        );
        assert!(
            ChainKey::parse_lines("k1 0011")
                .expect_err("no colon")
                .contains("ID:HEX")
        );
        assert!(ChainKey::parse_lines(&format!("bad id:{}", "00".repeat(32))).is_err());
        assert!(ChainKey::parse_lines(&format!("k:{}", "zz".repeat(32))).is_err());
        let twice = format!("{}\n{}", key("k", 1).to_line(), key("k", 2).to_line());
        assert!(ChainKey::parse_lines(&twice).expect_err("twice").contains("twice"));
        // The secret never shows in debug output.
        assert!(!format!("{:?}", key("k", 0xab)).contains("abab"));
    }

    #[test]
    fn algorithms_are_stored_as_text_and_read_back() {
        for (hash, id) in [
            (ChainHash::Sha256, None),
            (ChainHash::Sm3, Some("k1")),
            (ChainHash::Sha256, Some("k.2")),
        ] {
            let text = algorithm_text(hash, id);
            assert_eq!(parse_algorithm(&text), Some((hash, id.map(String::from))));
        }
        assert_eq!(algorithm_text(ChainHash::Sm3, Some("k1")), "hmac-sm3:k1");
        for junk in ["md5", "hmac-sha256", "hmac-sha256:", "hmac-md5:k1", ""] {
            assert_eq!(parse_algorithm(junk), None, "{junk}");
        }
    }

    #[test]
    fn a_keyed_chain_verifies_only_with_its_keys() {
        let keyed = Keyring::new(vec![key("k1", 1)], 0).linker(ChainHash::Sha256);
        let rows = keyed_chain(&[keyed], 4);
        assert!(rows.iter().all(|r| r.key_id.as_deref() == Some("k1")));
        // The keyed link is not the plain hash.
        assert_ne!(rows[0].hash, link(ChainHash::Sha256, GENESIS, &rows[0].event));
        assert_eq!(
            verify_keyed(GENESIS, 1, rows.clone(), &Keyring::new(vec![key("k1", 1)], 0)),
            Ok(4)
        );
        // Without the key, or with another secret under the same id, it does not.
        let broken = verify(GENESIS, 1, rows.clone()).expect_err("no key");
        assert!(broken.reason.contains("does not hold"), "{}", broken.reason);
        let wrong = verify_keyed(GENESIS, 1, rows, &Keyring::new(vec![key("k1", 9)], 0)).expect_err("wrong key");
        assert_eq!((wrong.sequence, wrong.verified), (1, 0));
    }

    #[test]
    fn a_chain_recomputed_without_the_key_does_not_verify() {
        let keys = Keyring::new(vec![key("k1", 1)], 0);
        let mut rows = keyed_chain(&[keys.linker(ChainHash::Sha256)], 5);
        // Someone with database access but not the key changes event 3 and relinks everything
        // with the plain hash, which they can compute.
        rows[2].event.outcome = "ok-forged".into();
        let mut previous = GENESIS.to_string();
        for row in &mut rows {
            row.hash = link(ChainHash::Sha256, &previous, &row.event);
            row.key_id = None;
            previous.clone_from(&row.hash);
        }
        assert_eq!(verify(GENESIS, 1, rows.clone()), Ok(5), "consistent as a plain chain");
        let broken = verify_keyed(GENESIS, 1, rows, &keys).expect_err("not keyed");
        assert_eq!(broken.sequence, 1);
        assert!(broken.reason.contains("not keyed"), "{}", broken.reason);
    }

    #[test]
    fn keys_rotate_and_a_chain_keyed_later_keeps_its_plain_beginning() {
        let (old, new) = (key("k2025", 1), key("k2026", 2));
        let plain = ChainLinker::from(ChainHash::Sm3);
        let by_old = Keyring::new(vec![old.clone()], 0).linker(ChainHash::Sm3);
        let by_new = Keyring::new(vec![old.clone(), new.clone()], 0).linker(ChainHash::Sm3);
        assert_eq!(by_new.key.as_ref().map(ChainKey::id), Some("k2026"));
        let mut rows = keyed_chain(&[plain], 2);
        let mut previous = rows[1].hash.clone();
        for (s, linker) in [(3, &by_old), (4, &by_new), (5, &by_new)] {
            let event = event(s, "fetch");
            let (hash, key_id) = linker.link(&previous, &event);
            previous.clone_from(&hash);
            rows.push(ChainedEvent {
                event,
                hash,
                algorithm: ChainHash::Sm3,
                key_id,
            });
        }
        let both = Keyring::new(vec![old.clone(), new.clone()], 2);
        assert_eq!(verify_keyed(GENESIS, 1, rows.clone(), &both), Ok(5));
        // A keyring that demands keys from event 1 on refuses the plain beginning.
        assert_eq!(
            verify_keyed(GENESIS, 1, rows.clone(), &Keyring::new(vec![old, new.clone()], 0)).map_err(|b| b.sequence),
            Err(1)
        );
        // Dropping the old key leaves its links unverifiable.
        let only_new = Keyring::new(vec![new], 2);
        assert_eq!(
            verify_keyed(GENESIS, 1, rows, &only_new).map_err(|b| b.sequence),
            Err(3)
        );
    }

    #[test]
    fn an_anchor_signs_its_sequence_hash_and_time() {
        let anchor = Anchor {
            sequence: 42,
            hash: "ab".repeat(32),
            at: DateTime::from_timestamp(1_790_000_000, 5_000).unwrap_or_default(),
        };
        let text = String::from_utf8(anchor.signed_bytes()).expect("text");
        assert_eq!(
            text,
            format!(
                "xinqiao audit anchor v1\n42\n{}\n2026-09-21T14:13:20.000005Z\n",
                "ab".repeat(32)
            )
        );
        let other = Anchor {
            sequence: 43,
            ..anchor.clone()
        };
        assert_ne!(other.signed_bytes(), anchor.signed_bytes());
    }
}
