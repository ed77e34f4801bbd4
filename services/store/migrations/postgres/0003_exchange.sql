-- The exchange: datasets of published catalogue entries, their append-only change logs, the
-- batches committed to them (by idempotency key), consumer cursors and resumable file uploads.
-- Enumerations are stored as their domain text (`as_str()`). Names and keys use the "C"
-- collation so that they sort byte-wise, as on SQLite: snapshots page by key in the same order.

CREATE TABLE datasets (
    -- The catalogue entry's resource code.
    id                TEXT COLLATE "C" NOT NULL PRIMARY KEY REFERENCES catalog_entries (resource_code),
    provider_code     TEXT COLLATE "C" NOT NULL REFERENCES departments (code),
    kind              TEXT        NOT NULL,
    -- Table datasets: the schema version their records follow. NULL for file datasets.
    schema_subject    TEXT COLLATE "C",
    schema_version    BIGINT,
    -- The key properties as a JSON array of names (empty for file datasets).
    key               TEXT        NOT NULL,
    -- Keys (or file names) whose latest change is an upsert.
    record_count      BIGINT      NOT NULL,
    -- The last sequence number handed out; changes are numbered 1, 2, … without gaps. Writers
    -- lock this row (FOR UPDATE), so those of one dataset commit one after another, on every
    -- hub node, in the order of their numbers.
    last_sequence     BIGINT      NOT NULL,
    last_published_at TIMESTAMPTZ,
    created_at        TIMESTAMPTZ NOT NULL
);

-- Each dataset's log. Rows are only ever inserted, by the transaction that moves the dataset's
-- last_sequence past them. No foreign key: the log is the hot path (a foreign key costs a
-- trigger and a row lock per record), and its writers hold the dataset row locked.
CREATE TABLE changes (
    dataset      TEXT COLLATE "C" NOT NULL,
    sequence     BIGINT      NOT NULL,
    op           TEXT        NOT NULL,
    -- The record's key values as a JSON array (`["<file name>"]` in file datasets).
    key          TEXT COLLATE "C" NOT NULL,
    -- The record's JSON text exactly as published; NULL for deletes.
    record       TEXT,
    published_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (dataset, sequence)
);

-- The history of each key: its latest change as of any sequence (snapshots, record counts).
CREATE INDEX changes_key ON changes (dataset, key, sequence);

-- Committed batches by their idempotency key, with what they were given, for replays.
CREATE TABLE batches (
    dataset         TEXT COLLATE "C" NOT NULL REFERENCES datasets (id),
    idempotency_key TEXT COLLATE "C" NOT NULL,
    accepted        BIGINT      NOT NULL,
    -- The publisher's rejections, opaque to the store.
    rejected        TEXT        NOT NULL,
    -- 0 and 0 for a batch without changes.
    first_sequence  BIGINT      NOT NULL,
    last_sequence   BIGINT      NOT NULL,
    committed_at    TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (dataset, idempotency_key)
);

-- Named consumers' acknowledged positions, which only move forward.
CREATE TABLE consumers (
    dataset      TEXT COLLATE "C" NOT NULL REFERENCES datasets (id),
    department   TEXT COLLATE "C" NOT NULL,
    consumer     TEXT COLLATE "C" NOT NULL,
    acknowledged BIGINT      NOT NULL,
    updated_at   TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (dataset, department, consumer)
);

-- Files being uploaded into file datasets, and those received: a complete upload has the
-- sequence number of its change in the dataset's log.
CREATE TABLE uploads (
    id         TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    dataset    TEXT COLLATE "C" NOT NULL REFERENCES datasets (id),
    file_name  TEXT        NOT NULL,
    size       BIGINT      NOT NULL,
    -- The declared SHA-256, lower-case hexadecimal.
    sha256     TEXT        NOT NULL,
    received   BIGINT      NOT NULL,
    sequence   BIGINT,
    started_by TEXT        NOT NULL,
    started_at TIMESTAMPTZ NOT NULL
);

-- Which upload a file change stored.
CREATE UNIQUE INDEX uploads_sequence ON uploads (dataset, sequence);

-- An upload's bytes, in the chunks they arrived in; `chunk_offset` is the first byte's offset.
CREATE TABLE upload_chunks (
    upload_id    TEXT COLLATE "C" NOT NULL REFERENCES uploads (id),
    chunk_offset BIGINT NOT NULL,
    data         BYTEA  NOT NULL,
    PRIMARY KEY (upload_id, chunk_offset)
);

-- Files are mostly compressed already: store the chunks out of line without trying again.
ALTER TABLE upload_chunks ALTER COLUMN data SET STORAGE EXTERNAL;
