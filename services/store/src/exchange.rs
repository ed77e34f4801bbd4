//! Datasets, their change logs, consumer cursors and file uploads, written once for both backends
//! (`exchange_store!`), and what both work out the same way when they append to a dataset's log.
//!
//! Backend-specific, through names each backend's module defines: `insert_changes` (SQLite inserts
//! many rows per statement; PostgreSQL a batch in one statement of parallel arrays),
//! `push_key_table` and `push_id_in` (a list of keys or ids bound as one value: JSON for SQLite's
//! `json_each`, an array for PostgreSQL), `push_head_moved` (PostgreSQL announces a dataset's new
//! head to the other hub nodes in the statement that moves it), `CHANGES_BY_KEY` (SQLite is told
//! which index walks a snapshot), the row lock `FOR_UPDATE` (empty on SQLite's single writer), and
//! the inherent methods `changes_after` (the drain's read), `listen_for_changes` (PostgreSQL's
//! LISTEN; nothing on SQLite) and `upload_reader`.

use std::collections::HashMap;

use xinqiao_domain::exchange::ChangeOp;
use xinqiao_domain::{Error, Result};

use crate::error::corrupt;
use crate::{NewChange, Upload};

pub(crate) const DATASET_COLUMNS: &str = "ds.id, ds.provider_code, ds.kind, ds.schema_subject, ds.schema_version, \
     ds.key, ds.record_count, ds.last_sequence, ds.last_published_at, ds.created_at";

pub(crate) const CHANGE_COLUMNS: &str = "c.sequence, c.op, c.key, c.record, c.published_at";

/// An upload's columns, as a statement on `uploads` alone names them (SQLite's RETURNING takes no
/// table alias) and as a join names them (alias `u`).
pub(crate) const UPLOAD_FIELDS: &str =
    "id, dataset, file_name, size, sha256, received, sequence, started_by, started_at";
pub(crate) const UPLOAD_COLUMNS: &str =
    "u.id, u.dataset, u.file_name, u.size, u.sha256, u.received, u.sequence, u.started_by, u.started_at";

pub(crate) const CONSUMER_COLUMNS: &str = "dataset, department, consumer, acknowledged, updated_at";

pub(crate) fn dataset_not_found(id: &str) -> Error {
    Error::NotFound(format!("dataset {id}"))
}

pub(crate) fn upload_not_found(id: &str) -> Error {
    Error::NotFound(format!("upload {id}"))
}

/// A dataset's last sequence number and record count, as a writer finds them.
pub(crate) struct Head {
    pub last_sequence: i64,
    pub record_count: i64,
}

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

/// The one implementation of [`crate::ExchangeStore`]. Invoked in each backend's module beside
/// the backend-specific names listed in this module's documentation, where `get`, `stored_time`
/// and `begin_write` are that backend's; `$row` and `$conn` are its row and connection types,
/// `$read` and `$write` its pools, `$substring` its plain substring-position function.
macro_rules! exchange_store {
    ($store:ty, $db:ty, $row:ty, $conn:ty, $read:ident, $write:ident, $substring:literal) => {
        use chrono::{DateTime, Utc};
        use sqlx::QueryBuilder;
        use xinqiao_domain::catalogue::ShareType;
        use xinqiao_domain::exchange::{ChangeOp, Dataset, DatasetKind};
        use xinqiao_domain::lifecycle::EntryState;
        use xinqiao_domain::schema::SchemaRef;
        use xinqiao_domain::{Error, Result};

        use crate::access::stored_u64;
        use crate::error::{corrupt, dataset_write_error, db_error, translate};
        use crate::exchange::{
            BatchKeys, CHANGE_COLUMNS, CONSUMER_COLUMNS, DATASET_COLUMNS, Head, UPLOAD_COLUMNS, UPLOAD_FIELDS, bound,
            check_append, check_complete, dataset_not_found, file_key, sequences, slice_chunks, to_db,
            upload_not_found,
        };
        use crate::schemas::schema_version;
        use crate::{
            BatchResult, ConsumerCursor, DatasetFilter, DatasetListing, ExchangeStore, NewBatch, NewChange,
            StoredChange, Upload,
        };

        fn dataset(row: &$row) -> Result<Dataset> {
            let kind: String = get(row, "kind")?;
            let subject: Option<String> = get(row, "schema_subject")?;
            let version: Option<i64> = get(row, "schema_version")?;
            let key: String = get(row, "key")?;
            Ok(Dataset {
                id: get(row, "id")?,
                provider_code: get(row, "provider_code")?,
                kind: DatasetKind::parse(&kind).ok_or_else(|| corrupt("datasets.kind", &kind))?,
                schema: match (subject, version) {
                    (Some(subject), Some(version)) => Some(SchemaRef {
                        subject,
                        version: schema_version(version, "datasets.schema_version")?,
                    }),
                    _ => None,
                },
                key: serde_json::from_str(&key).map_err(|e| corrupt("datasets.key", e))?,
                record_count: stored_u64(get(row, "record_count")?, "datasets.record_count")?,
                last_sequence: stored_u64(get(row, "last_sequence")?, "datasets.last_sequence")?,
                last_published_at: get(row, "last_published_at")?,
                created_at: get(row, "created_at")?,
            })
        }

        fn listing(row: &$row) -> Result<DatasetListing> {
            let share_type: String = get(row, "share_type")?;
            let state: String = get(row, "entry_state")?;
            Ok(DatasetListing {
                dataset: dataset(row)?,
                name: get(row, "name")?,
                provider_name: get(row, "provider_name")?,
                share_type: ShareType::parse(&share_type).ok_or_else(|| corrupt("share_type", &share_type))?,
                entry_state: EntryState::parse(&state).ok_or_else(|| corrupt("state", &state))?,
            })
        }

        /// A change of a dataset's log; also the drain's (`changes_after`).
        pub(super) fn stored_change(row: &$row) -> Result<StoredChange> {
            let op: String = get(row, "op")?;
            Ok(StoredChange {
                sequence: stored_u64(get(row, "sequence")?, "changes.sequence")?,
                op: ChangeOp::parse(&op).ok_or_else(|| corrupt("changes.op", &op))?,
                key: get(row, "key")?,
                // The stored text's bytes, without the UTF-8 check a String would make (both
                // engines hand TEXT over as its bytes).
                record: sqlx::Row::try_get_unchecked::<Option<Vec<u8>>, _>(row, "record")
                    .map_err(crate::error::db_error)?,
                published_at: get(row, "published_at")?,
            })
        }

        fn upload(row: &$row) -> Result<Upload> {
            let sequence: Option<i64> = get(row, "sequence")?;
            Ok(Upload {
                id: get(row, "id")?,
                dataset: get(row, "dataset")?,
                file_name: get(row, "file_name")?,
                size: stored_u64(get(row, "size")?, "uploads.size")?,
                sha256: get(row, "sha256")?,
                received: stored_u64(get(row, "received")?, "uploads.received")?,
                sequence: sequence.map(|s| stored_u64(s, "uploads.sequence")).transpose()?,
                started_by: get(row, "started_by")?,
                started_at: get(row, "started_at")?,
            })
        }

        fn cursor(row: &$row) -> Result<ConsumerCursor> {
            Ok(ConsumerCursor {
                dataset: get(row, "dataset")?,
                department: get(row, "department")?,
                consumer: get(row, "consumer")?,
                acknowledged: stored_u64(get(row, "acknowledged")?, "consumers.acknowledged")?,
                updated_at: get(row, "updated_at")?,
            })
        }

        /// A dataset, locked until the transaction ends when `lock` is `FOR_UPDATE`.
        async fn fetch_dataset(conn: &mut $conn, id: &str, lock: &str) -> Result<Option<Dataset>> {
            let mut query = QueryBuilder::<$db>::new("SELECT ");
            query
                .push(DATASET_COLUMNS)
                .push(" FROM datasets ds WHERE ds.id = ")
                .push_bind(id);
            query.push(" ").push(lock);
            let row = query.build().fetch_optional(conn).await.map_err(db_error)?;
            row.as_ref().map(dataset).transpose()
        }

        /// An upload, locked until the transaction ends when `lock` is `FOR_UPDATE`.
        async fn fetch_upload(conn: &mut $conn, id: &str, lock: &str) -> Result<Option<Upload>> {
            let mut query = QueryBuilder::<$db>::new("SELECT ");
            query.push(UPLOAD_FIELDS).push(" FROM uploads WHERE id = ").push_bind(id);
            query.push(" ").push(lock);
            let row = query.build().fetch_optional(conn).await.map_err(db_error)?;
            row.as_ref().map(upload).transpose()
        }

        /// The result a batch committed with its idempotency key, if one was.
        async fn committed_batch(conn: &mut $conn, dataset: &str, key: &str) -> Result<Option<BatchResult>> {
            let mut query = QueryBuilder::<$db>::new(
                "SELECT accepted, rejected, first_sequence, last_sequence FROM batches WHERE dataset = ",
            );
            query.push_bind(dataset).push(" AND idempotency_key = ").push_bind(key);
            let row = query.build().fetch_optional(conn).await.map_err(db_error)?;
            row.map(|row| {
                let accepted: i64 = get(&row, "accepted")?;
                Ok(BatchResult {
                    accepted: u32::try_from(accepted).map_err(|e| corrupt("batches.accepted", e))?,
                    rejected: get(&row, "rejected")?,
                    first_sequence: stored_u64(get(&row, "first_sequence")?, "batches.first_sequence")?,
                    last_sequence: stored_u64(get(&row, "last_sequence")?, "batches.last_sequence")?,
                    replayed: true,
                })
            })
            .transpose()
        }

        /// Appends `changes` (not empty; `first` to `last` are the sequence numbers they take, see
        /// `sequences`) to a dataset's log after `head`, which the caller has locked
        /// (`lock_dataset`), and moves the dataset on: its last sequence, record count and last
        /// publish time. The rows are written by the backend's `insert_changes`, and the head is
        /// moved in the statement the backend's `push_head_moved` wraps around the update.
        async fn append_changes(
            conn: &mut $conn,
            dataset: &str,
            head: Head,
            changes: &[NewChange],
            (first, last): (i64, i64),
            at: DateTime<Utc>,
        ) -> Result<()> {
            // How many of the batch's keys are present now: one lookup of each key's latest
            // change, through the (dataset, key, sequence) index. This statement's snapshot is
            // taken after the dataset's lock was granted, so it sees every earlier batch.
            let keys = BatchKeys::of(changes);
            let mut query = QueryBuilder::<$db>::new("SELECT count(*) FROM ");
            push_key_table(&mut query, &keys);
            query.push(" WHERE (SELECT c.op FROM changes c WHERE c.dataset = ").push_bind(dataset);
            query.push(" AND c.key = k.value ORDER BY c.sequence DESC LIMIT 1) = 'upsert'");
            let present_before: i64 = query.build_query_scalar().fetch_one(&mut *conn).await.map_err(db_error)?;

            insert_changes(conn, dataset, changes, (first, last), at).await?;

            let mut query = QueryBuilder::<$db>::new("");
            push_head_moved(&mut query, |update| {
                update.push("UPDATE datasets SET last_sequence = ").push_bind(last);
                update.push(", record_count = ").push_bind(keys.record_count(head.record_count, present_before));
                update.push(", last_published_at = ").push_bind(at);
                update.push(" WHERE id = ").push_bind(dataset);
            });
            query.build().execute(&mut *conn).await.map_err(db_error)?;
            Ok(())
        }

        /// Reads a dataset's head, locking its row (`FOR_UPDATE`) until the transaction ends. Every
        /// writer of the dataset's log takes this lock first (on SQLite the single writer is the
        /// lock): they number their changes one after another, and each commits before the next
        /// reads the head it left. So sequence numbers become visible in order, and a reader that
        /// has seen N never sees a lower number appear later.
        async fn lock_dataset(conn: &mut $conn, id: &str) -> Result<Head> {
            let mut query = QueryBuilder::<$db>::new("SELECT last_sequence, record_count FROM datasets WHERE id = ");
            query.push_bind(id).push(" ").push(FOR_UPDATE);
            let row = query
                .build()
                .fetch_optional(conn)
                .await
                .map_err(|e| translate(e, &format!("dataset {id}")))?
                .ok_or_else(|| dataset_not_found(id))?;
            Ok(Head {
                last_sequence: get(&row, "last_sequence")?,
                record_count: get(&row, "record_count")?,
            })
        }

        #[async_trait::async_trait]
        impl ExchangeStore for $store {
            /// NOT_FOUND if the catalogue entry does not exist. Counts start at 0, whatever
            /// `dataset` says.
            async fn create_dataset(&self, new: &Dataset) -> Result<Dataset> {
                let key =
                    serde_json::to_string(&new.key).map_err(|e| Error::Internal(format!("encoding the key: {e}")))?;
                let mut tx = self.begin_write().await?;
                let mut query =
                    QueryBuilder::<$db>::new("SELECT resource_code FROM catalog_entries WHERE resource_code = ");
                query.push_bind(&new.id);
                let entry = query.build().fetch_optional(&mut *tx).await.map_err(db_error)?;
                if entry.is_none() {
                    return Err(Error::NotFound(format!("catalogue entry {}", new.id)));
                }
                let mut query = QueryBuilder::<$db>::new(
                    "INSERT INTO datasets (id, provider_code, kind, schema_subject, schema_version, key, record_count, \
                     last_sequence, last_published_at, created_at) VALUES (",
                );
                query.push_bind(&new.id).push(", ").push_bind(&new.provider_code);
                query.push(", ").push_bind(new.kind.as_str());
                query.push(", ").push_bind(new.schema.as_ref().map(|s| s.subject.as_str()));
                query.push(", ").push_bind(new.schema.as_ref().map(|s| i64::from(s.version)));
                query.push(", ").push_bind(key);
                query.push(", 0, 0, NULL, ").push_bind(stored_time(new.created_at)).push(")");
                query
                    .build()
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| translate(e, &format!("dataset {}", new.id)))?;
                let created = fetch_dataset(&mut tx, &new.id, "")
                    .await?
                    .ok_or_else(|| Error::Internal(format!("dataset {} vanished while being created", new.id)))?;
                tx.commit().await.map_err(db_error)?;
                Ok(created)
            }

            async fn get_dataset(&self, id: &str) -> Result<Option<Dataset>> {
                let mut conn = self.$read.acquire().await.map_err(db_error)?;
                fetch_dataset(&mut conn, id, "").await
            }

            /// NOT_FOUND for an unknown dataset; FAILED_PRECONDITION for a file dataset, or a
            /// schema of another subject.
            async fn set_dataset_schema(&self, id: &str, schema: &SchemaRef) -> Result<Dataset> {
                let mut tx = self.begin_write().await?;
                let current = fetch_dataset(&mut tx, id, FOR_UPDATE)
                    .await?
                    .ok_or_else(|| dataset_not_found(id))?;
                match &current.schema {
                    None => {
                        return Err(Error::FailedPrecondition(format!(
                            "{id} is a file dataset: it has no schema"
                        )));
                    }
                    Some(old) if old.subject != schema.subject => {
                        return Err(Error::FailedPrecondition(format!(
                            "dataset {id} follows schema subject {}, not {}",
                            old.subject, schema.subject
                        )));
                    }
                    Some(_) => {}
                }
                let mut query = QueryBuilder::<$db>::new("UPDATE datasets SET schema_version = ");
                query.push_bind(i64::from(schema.version)).push(" WHERE id = ").push_bind(id);
                query.build().execute(&mut *tx).await.map_err(db_error)?;
                let updated = fetch_dataset(&mut tx, id, "").await?.ok_or_else(|| dataset_not_found(id))?;
                tx.commit().await.map_err(db_error)?;
                Ok(updated)
            }

            async fn list_datasets(
                &self,
                filter: &DatasetFilter,
                after: Option<&str>,
                limit: u32,
            ) -> Result<Vec<DatasetListing>> {
                let mut query = QueryBuilder::<$db>::new("SELECT ");
                query.push(DATASET_COLUMNS).push(
                    ", e.name, d.name AS provider_name, e.share_type, e.state AS entry_state FROM datasets ds \
                     JOIN catalog_entries e ON e.resource_code = ds.id JOIN departments d ON d.code = e.provider_code \
                     WHERE 1 = 1",
                );
                if !filter.keyword.is_empty() {
                    // A plain substring test: quotes, % and _ match themselves.
                    query
                        .push(concat!(" AND (", $substring, "(lower(e.name), lower("))
                        .push_bind(&filter.keyword);
                    query
                        .push(concat!(")) > 0 OR ", $substring, "(lower(ds.id), lower("))
                        .push_bind(&filter.keyword);
                    query.push(")) > 0)");
                }
                if !filter.provider_code.is_empty() {
                    query.push(" AND ds.provider_code = ").push_bind(&filter.provider_code);
                }
                if let Some(kind) = filter.kind {
                    query.push(" AND ds.kind = ").push_bind(kind.as_str());
                }
                if let Some(share_type) = filter.share_type {
                    query.push(" AND e.share_type = ").push_bind(share_type.as_str());
                }
                if let Some(excluded) = &filter.exclude_provider {
                    query.push(" AND ds.provider_code <> ").push_bind(excluded);
                }
                if let Some(provider) = &filter.published_or_provided_by {
                    query.push(" AND (e.state = ").push_bind(EntryState::Published.as_str());
                    query.push(" OR ds.provider_code = ").push_bind(provider).push(")");
                }
                if let Some((grantee, at)) = &filter.granted_to {
                    // SQLite keeps times in one canonical text form (see its `stored_time`), which
                    // sorts as the instants do; PostgreSQL as timestamptz.
                    query.push(" AND EXISTS (SELECT 1 FROM access_grants g WHERE g.dataset = ds.id AND g.grantee_code = ");
                    query.push_bind(grantee);
                    // Active at that moment: given by then, not yet revoked then, not yet expired.
                    query
                        .push(" AND g.granted_at <= ")
                        .push_bind(stored_time(*at))
                        .push(" AND (g.revoked_at IS NULL OR g.revoked_at > ")
                        .push_bind(stored_time(*at))
                        .push(") AND g.expires_at > ")
                        .push_bind(stored_time(*at))
                        .push(")");
                }
                if let Some(after) = after {
                    query.push(" AND ds.id > ").push_bind(after);
                }
                query.push(" ORDER BY ds.id LIMIT ").push_bind(i64::from(limit));
                let rows = query.build().fetch_all(&self.$read).await.map_err(db_error)?;
                rows.iter().map(listing).collect()
            }

            /// One write transaction: (1) the idempotency key is looked up, and a replay writes
            /// nothing; (2) the dataset's head is read and locked (see `lock_dataset`); (3) the
            /// batch row is claimed, and should a publisher of the same key on another node have
            /// committed it meanwhile (PostgreSQL), that result is returned instead; (4) the
            /// changes are numbered and inserted (see each backend's `append_changes`).
            async fn publish_batch(&self, batch: &NewBatch<'_>) -> Result<BatchResult> {
                let at = stored_time(batch.at);
                let accepted =
                    u32::try_from(batch.changes.len()).map_err(|_| Error::invalid("changes", "are too many"))?;
                let mut tx = self.begin_write().await?;
                if let Some(replayed) = committed_batch(&mut tx, batch.dataset, batch.idempotency_key).await? {
                    return Ok(replayed);
                }
                let head = lock_dataset(&mut tx, batch.dataset).await?;
                let (first, last) = sequences(head.last_sequence, batch.changes.len())?;
                let mut query = QueryBuilder::<$db>::new(
                    "INSERT INTO batches (dataset, idempotency_key, accepted, rejected, first_sequence, \
                     last_sequence, committed_at) VALUES (",
                );
                let mut values = query.separated(", ");
                values.push_bind(batch.dataset);
                values.push_bind(batch.idempotency_key);
                values.push_bind(i64::from(accepted));
                values.push_bind(batch.rejected);
                values.push_bind(first);
                values.push_bind(last);
                values.push_bind(at);
                query.push(") ON CONFLICT (dataset, idempotency_key) DO NOTHING");
                let claimed = query.build().execute(&mut *tx).await.map_err(|e| {
                    translate(
                        e,
                        &format!("batch {} of dataset {}", batch.idempotency_key, batch.dataset),
                    )
                })?;
                if claimed.rows_affected() == 0 {
                    // Committed by another node between the look-up and the lock: its result stands.
                    return committed_batch(&mut tx, batch.dataset, batch.idempotency_key)
                        .await?
                        .ok_or_else(|| {
                            Error::Aborted(format!(
                                "batch {} of dataset {} is being committed concurrently; retry",
                                batch.idempotency_key, batch.dataset
                            ))
                        });
                }
                // A batch whose changes were all rejected claims its idempotency key and no more:
                // nothing to append, and the dataset's head stays where it is.
                if !batch.changes.is_empty() {
                    append_changes(&mut tx, batch.dataset, head, batch.changes, (first, last), at).await?;
                }
                // Last, so that the chain's head is locked only while this transaction commits.
                if let Some(audit) = &batch.audit {
                    let event = crate::audit::batch_event(audit.event, accepted, first, last);
                    super::audit::append_in(&mut tx, &[event], &audit.linker).await?;
                }
                tx.commit().await.map_err(db_error)?;
                Ok(BatchResult {
                    accepted,
                    rejected: batch.rejected.to_string(),
                    first_sequence: stored_u64(first, "first_sequence")?,
                    last_sequence: stored_u64(last, "last_sequence")?,
                    replayed: false,
                })
            }

            async fn fetch_changes(&self, dataset: &str, after: u64, limit: u32) -> Result<(Vec<StoredChange>, u64)> {
                self.changes_after(dataset, after, limit).await
            }

            /// Walks the (dataset, key, sequence) index in key order, keeping each key's latest
            /// change up to `as_of` when it is an upsert. An unknown dataset has no changes.
            async fn snapshot_page(
                &self,
                dataset: &str,
                as_of: u64,
                after_key: Option<&str>,
                limit: u32,
            ) -> Result<Vec<StoredChange>> {
                let as_of = bound(as_of);
                let mut query = QueryBuilder::<$db>::new("SELECT ");
                query
                    .push(CHANGE_COLUMNS)
                    .push(" FROM ")
                    .push(CHANGES_BY_KEY)
                    .push(" WHERE c.dataset = ")
                    .push_bind(dataset);
                if let Some(after) = after_key {
                    query.push(" AND c.key > ").push_bind(after);
                }
                query.push(" AND c.sequence <= ").push_bind(as_of);
                query.push(" AND c.op = ").push_bind(ChangeOp::Upsert.as_str());
                query.push(
                    " AND NOT EXISTS (SELECT 1 FROM changes n WHERE n.dataset = c.dataset AND n.key = c.key \
                     AND n.sequence > c.sequence AND n.sequence <= ",
                );
                query.push_bind(as_of).push(")");
                query.push(" ORDER BY c.key LIMIT ").push_bind(i64::from(limit));
                let rows = query.build().fetch_all(&self.$read).await.map_err(db_error)?;
                rows.iter().map(stored_change).collect()
            }

            async fn dataset_heads(&self, ids: &[String]) -> Result<Vec<(String, u64)>> {
                if ids.is_empty() {
                    return Ok(Vec::new());
                }
                let mut query = QueryBuilder::<$db>::new("SELECT id, last_sequence FROM datasets WHERE ");
                push_id_in(&mut query, ids)?;
                query.push(" ORDER BY id");
                let rows = query.build().fetch_all(&self.$read).await.map_err(db_error)?;
                rows.iter()
                    .map(|row| {
                        Ok((
                            get(row, "id")?,
                            stored_u64(get(row, "last_sequence")?, "datasets.last_sequence")?,
                        ))
                    })
                    .collect()
            }

            async fn listen_changes(&self, sink: tokio::sync::mpsc::Sender<(String, u64)>) -> Result<bool> {
                self.listen_for_changes(sink).await
            }

            /// One statement: `updated_at` is when the position last moved. NOT_FOUND for an unknown
            /// dataset (the foreign key).
            async fn acknowledge(&self, cursor: &ConsumerCursor) -> Result<ConsumerCursor> {
                let mut query = QueryBuilder::<$db>::new("INSERT INTO consumers (");
                query.push(CONSUMER_COLUMNS).push(") VALUES (");
                let mut values = query.separated(", ");
                values.push_bind(&cursor.dataset);
                values.push_bind(&cursor.department);
                values.push_bind(&cursor.consumer);
                values.push_bind(to_db(cursor.acknowledged, "acknowledged")?);
                values.push_bind(stored_time(cursor.updated_at));
                // The larger of the two positions, spelt as a CASE since SQLite's max() and
                // PostgreSQL's GREATEST() have no common name.
                query.push(
                    ") ON CONFLICT (dataset, department, consumer) DO UPDATE SET \
                     updated_at = CASE WHEN excluded.acknowledged > consumers.acknowledged THEN excluded.updated_at \
                     ELSE consumers.updated_at END, \
                     acknowledged = CASE WHEN excluded.acknowledged > consumers.acknowledged \
                     THEN excluded.acknowledged ELSE consumers.acknowledged END RETURNING ",
                );
                query.push(CONSUMER_COLUMNS);
                let row = query
                    .build()
                    .fetch_one(&self.$write)
                    .await
                    .map_err(|e| dataset_write_error(e, &cursor.dataset, &format!("consumer {}", cursor.consumer)))?;
                self::cursor(&row)
            }

            async fn get_consumer(
                &self,
                dataset: &str,
                department: &str,
                consumer: &str,
            ) -> Result<Option<ConsumerCursor>> {
                let mut query = QueryBuilder::<$db>::new("SELECT ");
                query
                    .push(CONSUMER_COLUMNS)
                    .push(" FROM consumers WHERE dataset = ")
                    .push_bind(dataset);
                query.push(" AND department = ").push_bind(department);
                query.push(" AND consumer = ").push_bind(consumer);
                let row = query.build().fetch_optional(&self.$read).await.map_err(db_error)?;
                row.as_ref().map(cursor).transpose()
            }

            /// Stores the upload with nothing received yet. NOT_FOUND for an unknown dataset,
            /// FAILED_PRECONDITION for a table dataset, ALREADY_EXISTS if the id is taken. A
            /// dataset's kind never changes, so it is checked before the insert, outside it.
            async fn start_upload(&self, new: &Upload) -> Result<Upload> {
                let size = to_db(new.size, "size")?;
                let mut query = QueryBuilder::<$db>::new("SELECT kind FROM datasets WHERE id = ");
                query.push_bind(&new.dataset);
                let kind: Option<String> = query
                    .build_query_scalar()
                    .fetch_optional(&self.$read)
                    .await
                    .map_err(db_error)?;
                match kind.as_deref().map(DatasetKind::parse) {
                    None => return Err(dataset_not_found(&new.dataset)),
                    Some(Some(DatasetKind::File)) => {}
                    Some(_) => {
                        return Err(Error::FailedPrecondition(format!(
                            "{} is a table dataset: publish records to it",
                            new.dataset
                        )));
                    }
                }
                let mut query = QueryBuilder::<$db>::new("INSERT INTO uploads (");
                query.push(UPLOAD_FIELDS).push(") VALUES (");
                let mut values = query.separated(", ");
                values.push_bind(&new.id);
                values.push_bind(&new.dataset);
                values.push_bind(&new.file_name);
                values.push_bind(size);
                values.push_bind(&new.sha256);
                values.push_bind(0_i64);
                values.push_bind(None::<i64>);
                values.push_bind(&new.started_by);
                values.push_bind(stored_time(new.started_at));
                query.push(") RETURNING ").push(UPLOAD_FIELDS);
                let row = query
                    .build()
                    .fetch_one(&self.$write)
                    .await
                    .map_err(|e| dataset_write_error(e, &new.dataset, &format!("upload {}", new.id)))?;
                upload(&row)
            }

            async fn get_upload(&self, id: &str) -> Result<Option<Upload>> {
                let mut conn = self.$read.acquire().await.map_err(db_error)?;
                fetch_upload(&mut conn, id, "").await
            }

            /// NOT_FOUND for an unknown upload; FAILED_PRECONDITION once it is complete or when
            /// `offset` is not the bytes received; RESOURCE_EXHAUSTED past the declared size. No
            /// bytes: nothing changes. Appends to one upload lock its row and so run one after
            /// another.
            async fn append_upload(&self, id: &str, offset: u64, data: &[u8]) -> Result<Upload> {
                let mut tx = self.begin_write().await?;
                let current = fetch_upload(&mut tx, id, FOR_UPDATE)
                    .await?
                    .ok_or_else(|| upload_not_found(id))?;
                let received = check_append(&current, offset, data)?;
                if data.is_empty() {
                    return Ok(current);
                }
                let mut query = QueryBuilder::<$db>::new("INSERT INTO upload_chunks (upload_id, chunk_offset, data) VALUES (");
                query.push_bind(id).push(", ").push_bind(to_db(offset, "offset")?);
                query.push(", ").push_bind(data).push(")");
                query
                    .build()
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| translate(e, &format!("the bytes at offset {offset} of upload {id}")))?;
                let mut query = QueryBuilder::<$db>::new("UPDATE uploads SET received = ");
                query.push_bind(to_db(received, "received")?);
                query.push(" WHERE id = ").push_bind(id);
                query.push(" RETURNING ").push(UPLOAD_FIELDS);
                let row = query.build().fetch_one(&mut *tx).await.map_err(db_error)?;
                let appended = upload(&row)?;
                tx.commit().await.map_err(db_error)?;
                Ok(appended)
            }

            /// Empty at or past the bytes received. NOT_FOUND for an unknown upload.
            async fn read_upload(&self, id: &str, offset: u64, max: u32) -> Result<Vec<u8>> {
                let mut conn = self.upload_reader().await?;
                let found = fetch_upload(&mut conn, id, "")
                    .await?
                    .ok_or_else(|| upload_not_found(id))?;
                let end = found.received.min(offset.saturating_add(u64::from(max)));
                if offset >= end {
                    return Ok(Vec::new());
                }
                // The chunk that holds `offset` and those after it, up to `end`.
                let mut query =
                    QueryBuilder::<$db>::new("SELECT chunk_offset, data FROM upload_chunks WHERE upload_id = ");
                query.push_bind(id).push(" AND chunk_offset < ").push_bind(to_db(end, "offset")?);
                query.push(" AND chunk_offset >= (SELECT max(chunk_offset) FROM upload_chunks WHERE upload_id = ");
                query.push_bind(id).push(" AND chunk_offset <= ").push_bind(to_db(offset, "offset")?);
                query.push(") ORDER BY chunk_offset");
                let rows = query.build().fetch_all(&mut *conn).await.map_err(db_error)?;
                let chunks = rows
                    .iter()
                    .map(|row| {
                        Ok((
                            stored_u64(get(row, "chunk_offset")?, "upload_chunks.chunk_offset")?,
                            get(row, "data")?,
                        ))
                    })
                    .collect::<Result<Vec<(u64, Vec<u8>)>>>()?;
                slice_chunks(&chunks, offset, end)
            }

            /// Idempotent: a complete upload is returned as it is. FAILED_PRECONDITION until every
            /// declared byte is received. Locks the upload, then the dataset (as publishers do).
            async fn complete_upload(&self, id: &str, metadata: &str, at: DateTime<Utc>) -> Result<Upload> {
                let at = stored_time(at);
                let mut tx = self.begin_write().await?;
                let current = fetch_upload(&mut tx, id, FOR_UPDATE)
                    .await?
                    .ok_or_else(|| upload_not_found(id))?;
                if current.sequence.is_some() {
                    return Ok(current);
                }
                check_complete(&current)?;
                let head = lock_dataset(&mut tx, &current.dataset).await?;
                let change = NewChange {
                    op: ChangeOp::Upsert,
                    key: file_key(&current.file_name),
                    record: Some(metadata.to_string()),
                };
                let (sequence, last) = sequences(head.last_sequence, 1)?;
                append_changes(
                    &mut tx,
                    &current.dataset,
                    head,
                    std::slice::from_ref(&change),
                    (sequence, last),
                    at,
                )
                .await?;
                let mut query = QueryBuilder::<$db>::new("UPDATE uploads SET sequence = ");
                query.push_bind(sequence).push(" WHERE id = ").push_bind(id);
                query.push(" RETURNING ").push(UPLOAD_FIELDS);
                let row = query.build().fetch_one(&mut *tx).await.map_err(db_error)?;
                let completed = upload(&row)?;
                tx.commit().await.map_err(db_error)?;
                Ok(completed)
            }

            /// The upload whose change is the file's latest, unless that change deleted the file.
            async fn current_file(&self, dataset: &str, file_name: &str) -> Result<Option<Upload>> {
                let key = file_key(file_name);
                let mut query = QueryBuilder::<$db>::new("SELECT ");
                query.push(UPLOAD_COLUMNS).push(
                    " FROM changes c JOIN uploads u ON u.dataset = c.dataset AND u.sequence = c.sequence \
                     WHERE c.dataset = ",
                );
                query.push_bind(dataset).push(" AND c.key = ").push_bind(&key);
                query.push(" AND c.op = ").push_bind(ChangeOp::Upsert.as_str());
                query.push(" AND c.sequence = (SELECT max(l.sequence) FROM changes l WHERE l.dataset = ");
                query.push_bind(dataset).push(" AND l.key = ").push_bind(&key).push(")");
                let row = query.build().fetch_optional(&self.$read).await.map_err(db_error)?;
                row.as_ref().map(upload).transpose()
            }
        }
    };
}
pub(crate) use exchange_store;

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
