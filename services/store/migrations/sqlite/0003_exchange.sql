-- The exchange: datasets of published catalogue entries, their append-only change logs, the
-- batches committed to them (by idempotency key), consumer cursors and resumable file uploads.
-- Enumerations are stored as their domain text (`as_str()`); timestamps as in 0001.

CREATE TABLE datasets (
    -- The catalogue entry's resource code.
    id                TEXT    NOT NULL PRIMARY KEY REFERENCES catalog_entries (resource_code),
    provider_code     TEXT    NOT NULL REFERENCES departments (code),
    kind              TEXT    NOT NULL,
    -- Table datasets: the schema version their records follow. NULL for file datasets.
    schema_subject    TEXT,
    schema_version    INTEGER,
    -- The key properties as a JSON array of names (empty for file datasets).
    key               TEXT    NOT NULL,
    -- Keys (or file names) whose latest change is an upsert.
    record_count      INTEGER NOT NULL,
    -- The last sequence number handed out; changes are numbered 1, 2, … without gaps.
    last_sequence     INTEGER NOT NULL,
    last_published_at TEXT,
    created_at        TEXT    NOT NULL
) STRICT;

-- Each dataset's log. Rows are only ever inserted, by the transaction that moves the dataset's
-- last_sequence past them. No foreign key: the log is the hot path, and its writers have just
-- read the dataset row in the same transaction.
CREATE TABLE changes (
    dataset      TEXT    NOT NULL,
    sequence     INTEGER NOT NULL,
    op           TEXT    NOT NULL,
    -- The record's key values as a JSON array (`["<file name>"]` in file datasets).
    key          TEXT    NOT NULL,
    -- The record's JSON text exactly as published; NULL for deletes.
    record       TEXT,
    published_at TEXT    NOT NULL,
    PRIMARY KEY (dataset, sequence)
) STRICT;

-- The history of each key: its latest change as of any sequence (snapshots, record counts).
CREATE INDEX changes_key ON changes (dataset, key, sequence);

-- Committed batches by their idempotency key, with what they were given, for replays.
CREATE TABLE batches (
    dataset         TEXT    NOT NULL REFERENCES datasets (id),
    idempotency_key TEXT    NOT NULL,
    accepted        INTEGER NOT NULL,
    -- The publisher's rejections, opaque to the store.
    rejected        TEXT    NOT NULL,
    -- 0 and 0 for a batch without changes.
    first_sequence  INTEGER NOT NULL,
    last_sequence   INTEGER NOT NULL,
    committed_at    TEXT    NOT NULL,
    PRIMARY KEY (dataset, idempotency_key)
) STRICT;

-- Named consumers' acknowledged positions, which only move forward.
CREATE TABLE consumers (
    dataset      TEXT    NOT NULL REFERENCES datasets (id),
    department   TEXT    NOT NULL,
    consumer     TEXT    NOT NULL,
    acknowledged INTEGER NOT NULL,
    updated_at   TEXT    NOT NULL,
    PRIMARY KEY (dataset, department, consumer)
) STRICT;

-- Files being uploaded into file datasets, and those received: a complete upload has the
-- sequence number of its change in the dataset's log.
CREATE TABLE uploads (
    id         TEXT    NOT NULL PRIMARY KEY,
    dataset    TEXT    NOT NULL REFERENCES datasets (id),
    file_name  TEXT    NOT NULL,
    size       INTEGER NOT NULL,
    -- The declared SHA-256, lower-case hexadecimal.
    sha256     TEXT    NOT NULL,
    received   INTEGER NOT NULL,
    sequence   INTEGER,
    started_by TEXT    NOT NULL,
    started_at TEXT    NOT NULL
) STRICT;

-- Which upload a file change stored.
CREATE UNIQUE INDEX uploads_sequence ON uploads (dataset, sequence);

-- An upload's bytes, in the chunks they arrived in; `chunk_offset` is the first byte's offset.
CREATE TABLE upload_chunks (
    upload_id    TEXT    NOT NULL REFERENCES uploads (id),
    chunk_offset INTEGER NOT NULL,
    data         BLOB    NOT NULL,
    PRIMARY KEY (upload_id, chunk_offset)
) STRICT;
