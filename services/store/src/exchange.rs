//! What both backends work out the same way when they append to a dataset's log.

use std::collections::HashMap;

use xinqiao_domain::exchange::ChangeOp;
use xinqiao_domain::{Error, Result};

use crate::error::corrupt;
use crate::{NewChange, Upload};

/// The distinct keys of a batch, and how many of them it leaves present. A dataset's record count
/// moves by the batch's keys present after it minus those present before it (their latest change
/// in the log an upsert); a key changed several times within the batch counts once, by its last
/// change.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct BatchKeys<'a> {
    /// Each key once, in the order of its first change.
    pub keys: Vec<&'a str>,
    /// How many of them the batch leaves present.
    pub present_after: i64,
}

impl<'a> BatchKeys<'a> {
    pub fn of(changes: &'a [NewChange]) -> Self {
        let mut last: HashMap<&str, ChangeOp> = HashMap::with_capacity(changes.len());
        let mut keys = Vec::with_capacity(changes.len());
        for change in changes {
            if last.insert(&change.key, change.op).is_none() {
                keys.push(change.key.as_str());
            }
        }
        let present_after = last.values().filter(|op| **op == ChangeOp::Upsert).count();
        BatchKeys {
            keys,
            present_after: i64::try_from(present_after).unwrap_or(i64::MAX),
        }
    }

    /// The keys as a JSON array of strings, for SQLite's `json_each`.
    pub fn json(&self) -> String {
        serde_json::to_string(&self.keys).unwrap_or_else(|_| "[]".into())
    }

    /// The record count after the batch, from the count before it and how many of the batch's
    /// keys were present before it.
    pub fn record_count(&self, before: i64, present_before: i64) -> i64 {
        before - present_before + self.present_after
    }
}

/// The key of a file in a file dataset's log: its name as a one-element JSON array.
pub(crate) fn file_key(file_name: &str) -> String {
    serde_json::to_string(&[file_name]).unwrap_or_default()
}

/// A count or sequence number from the caller, as the databases store it.
pub(crate) fn to_db(value: u64, field: &str) -> Result<i64> {
    i64::try_from(value).map_err(|_| Error::invalid(field, "is out of range"))
}

/// A position to read after or up to: past the largest storable number means "everything".
pub(crate) fn bound(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// The sequence numbers a batch of `count` changes gets after `last`: 0 and 0 for none.
pub(crate) fn sequences(last: i64, count: usize) -> Result<(i64, i64)> {
    if count == 0 {
        return Ok((0, 0));
    }
    let count = i64::try_from(count).map_err(|_| Error::invalid("changes", "are too many"))?;
    let end = last
        .checked_add(count)
        .ok_or_else(|| Error::FailedPrecondition("the dataset has no sequence numbers left".into()))?;
    Ok((last + 1, end))
}

/// The bytes an upload will have received once `data` is appended at `offset`. FAILED_PRECONDITION
/// once it is complete or unless `offset` is the bytes received so far; RESOURCE_EXHAUSTED past
/// the declared size.
pub(crate) fn check_append(upload: &Upload, offset: u64, data: &[u8]) -> Result<u64> {
    if upload.sequence.is_some() {
        return Err(Error::FailedPrecondition(format!(
            "upload {} is already complete",
            upload.id
        )));
    }
    if offset != upload.received {
        return Err(Error::FailedPrecondition(format!(
            "upload {} has received {} bytes: expected offset {}, not {offset}",
            upload.id, upload.received, upload.received
        )));
    }
    offset
        .checked_add(data.len() as u64)
        .filter(|end| *end <= upload.size)
        .ok_or_else(|| {
            Error::ResourceExhausted(format!(
                "upload {} is declared as {} bytes; {} bytes at offset {offset} would exceed it",
                upload.id,
                upload.size,
                data.len()
            ))
        })
}

/// FAILED_PRECONDITION until every declared byte is received.
pub(crate) fn check_complete(upload: &Upload) -> Result<()> {
    if upload.received == upload.size {
        Ok(())
    } else {
        Err(Error::FailedPrecondition(format!(
            "upload {} has received {} of its {} bytes",
            upload.id, upload.received, upload.size
        )))
    }
}

/// The bytes from `from` up to `to` of consecutive chunks `(offset, bytes)`, the first of which
/// starts at or before `from`.
pub(crate) fn slice_chunks(chunks: &[(u64, Vec<u8>)], from: u64, to: u64) -> Result<Vec<u8>> {
    let mut bytes = Vec::with_capacity(usize::try_from(to.saturating_sub(from)).unwrap_or(0));
    for (start, data) in chunks {
        let end = start.saturating_add(data.len() as u64);
        let (low, high) = ((*start).max(from), end.min(to));
        if low >= high {
            continue;
        }
        if low != from + bytes.len() as u64 {
            return Err(corrupt(
                "upload_chunks.chunk_offset",
                format!("a gap before offset {low}"),
            ));
        }
        bytes.extend_from_slice(&data[(low - start) as usize..(high - start) as usize]);
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(op: ChangeOp, key: &str) -> NewChange {
        NewChange {
            op,
            key: key.into(),
            record: (op == ChangeOp::Upsert).then(|| "{}".into()),
        }
    }

    #[test]
    fn a_key_counts_once_by_its_last_change() {
        use ChangeOp::{Delete, Upsert};
        let changes = [
            change(Upsert, "[1]"),
            change(Upsert, "[2]"),
            change(Delete, "[1]"),
            change(Delete, "[3]"),
            change(Upsert, "[3]"),
            change(Upsert, "[2]"),
        ];
        let keys = BatchKeys::of(&changes);
        assert_eq!(keys.keys, ["[1]", "[2]", "[3]"]);
        assert_eq!(keys.present_after, 2);
        assert_eq!(keys.json(), r#"["[1]","[2]","[3]"]"#);
        // Before: 10 records, of which [1] and [2] were two.
        assert_eq!(keys.record_count(10, 2), 10);
        assert_eq!(keys.record_count(10, 0), 12);
    }

    #[test]
    fn chunks_are_sliced_across_boundaries() {
        let chunks = [(0, b"abc".to_vec()), (3, b"defg".to_vec()), (7, b"h".to_vec())];
        assert_eq!(slice_chunks(&chunks, 0, 8).expect("all"), b"abcdefgh");
        assert_eq!(slice_chunks(&chunks, 2, 5).expect("across"), b"cde");
        assert_eq!(slice_chunks(&chunks[1..], 4, 8).expect("inside"), b"efgh");
        assert_eq!(slice_chunks(&chunks, 5, 5).expect("empty"), b"");
        assert!(slice_chunks(&[(0, b"ab".to_vec()), (3, b"d".to_vec())], 0, 4).is_err());
    }

    #[test]
    fn file_keys_are_json_arrays() {
        assert_eq!(file_key("报告.pdf"), r#"["报告.pdf"]"#);
        assert_eq!(file_key(r#"a"b"#), r#"["a\"b"]"#);
    }

    #[test]
    fn sequences_follow_the_last() {
        assert_eq!(sequences(7, 0).expect("none"), (0, 0));
        assert_eq!(sequences(7, 3).expect("three"), (8, 10));
        assert!(sequences(i64::MAX - 1, 2).is_err());
        assert_eq!(bound(u64::MAX), i64::MAX);
        assert!(to_db(u64::MAX, "size").is_err());
    }
}
