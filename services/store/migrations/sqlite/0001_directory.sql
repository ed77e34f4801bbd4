-- The resource directory: departments and catalogue entries with their full history.
-- Enumerations are stored as their domain text (`as_str()`); timestamps as RFC 3339 text in UTC,
-- truncated to microseconds by the store so that they equal PostgreSQL's.

CREATE TABLE departments (
    code          TEXT    NOT NULL PRIMARY KEY,
    name          TEXT    NOT NULL,
    division_code TEXT    NOT NULL,
    contact       TEXT    NOT NULL,
    active        INTEGER NOT NULL CHECK (active IN (0, 1)),
    created_at    TEXT    NOT NULL,
    updated_at    TEXT    NOT NULL
) STRICT;

-- The last sequence number handed out per classification (信息资源代码 后段码). Bumped with an
-- upsert inside the transaction that creates the entry, so numbers are never reused.
CREATE TABLE entry_sequences (
    classification TEXT    NOT NULL PRIMARY KEY,
    last_sequence  INTEGER NOT NULL
) STRICT;

CREATE TABLE catalog_entries (
    resource_code  TEXT    NOT NULL PRIMARY KEY,
    provider_code  TEXT    NOT NULL REFERENCES departments (code),
    classification TEXT    NOT NULL,
    name           TEXT    NOT NULL,
    summary        TEXT    NOT NULL,
    -- Lower-cased name, summary and data-item names: what keyword search looks in.
    search_text    TEXT    NOT NULL,
    share_type     TEXT    NOT NULL,
    open_type      TEXT    NOT NULL,
    update_cycle   TEXT    NOT NULL,
    format         TEXT    NOT NULL,
    state          TEXT    NOT NULL,
    version        INTEGER NOT NULL,
    state_reason   TEXT    NOT NULL,
    -- serde_json of the domain's EntryContent.
    content        TEXT    NOT NULL,
    published_at   TEXT,
    created_at     TEXT    NOT NULL,
    updated_at     TEXT    NOT NULL
) STRICT;

CREATE INDEX catalog_entries_provider ON catalog_entries (provider_code, resource_code);
CREATE INDEX catalog_entries_state ON catalog_entries (state, resource_code);
CREATE INDEX catalog_entries_classification ON catalog_entries (classification, resource_code);

-- One row per version: the change that made it and the entry as it then was.
CREATE TABLE catalog_entry_versions (
    resource_code TEXT    NOT NULL REFERENCES catalog_entries (resource_code),
    version       INTEGER NOT NULL,
    state         TEXT    NOT NULL,
    state_reason  TEXT    NOT NULL,
    published_at  TEXT,
    updated_at    TEXT    NOT NULL,
    content       TEXT    NOT NULL,
    action        TEXT    NOT NULL,
    actor         TEXT    NOT NULL,
    reason        TEXT    NOT NULL,
    changed_at    TEXT    NOT NULL,
    PRIMARY KEY (resource_code, version)
) STRICT;
