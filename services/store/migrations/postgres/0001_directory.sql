-- The resource directory: departments and catalogue entries with their full history.
-- Enumerations are stored as their domain text (`as_str()`). Codes use the "C" collation so that
-- they sort byte-wise, as on SQLite, and paging with `after` sees the same order on both.

CREATE TABLE departments (
    code          TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    name          TEXT        NOT NULL,
    division_code TEXT        NOT NULL,
    contact       TEXT        NOT NULL,
    active        BOOLEAN     NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL,
    updated_at    TIMESTAMPTZ NOT NULL
);

-- The last sequence number handed out per classification (信息资源代码 后段码). Bumped with an
-- upsert inside the transaction that creates the entry: the row lock orders concurrent creators
-- on every hub node, and a rolled-back create gives its number back.
CREATE TABLE entry_sequences (
    classification TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    last_sequence  BIGINT NOT NULL
);

CREATE TABLE catalog_entries (
    resource_code  TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    provider_code  TEXT COLLATE "C" NOT NULL REFERENCES departments (code),
    classification TEXT COLLATE "C" NOT NULL,
    name           TEXT        NOT NULL,
    summary        TEXT        NOT NULL,
    -- Lower-cased name, summary and data-item names: what keyword search looks in.
    search_text    TEXT        NOT NULL,
    share_type     TEXT        NOT NULL,
    open_type      TEXT        NOT NULL,
    update_cycle   TEXT        NOT NULL,
    format         TEXT        NOT NULL,
    state          TEXT        NOT NULL,
    version        BIGINT      NOT NULL,
    state_reason   TEXT        NOT NULL,
    -- serde_json of the domain's EntryContent.
    content        JSONB       NOT NULL,
    published_at   TIMESTAMPTZ,
    created_at     TIMESTAMPTZ NOT NULL,
    updated_at     TIMESTAMPTZ NOT NULL
);

CREATE INDEX catalog_entries_provider ON catalog_entries (provider_code, resource_code);
CREATE INDEX catalog_entries_state ON catalog_entries (state, resource_code);
CREATE INDEX catalog_entries_classification ON catalog_entries (classification, resource_code);

-- One row per version: the change that made it and the entry as it then was.
CREATE TABLE catalog_entry_versions (
    resource_code TEXT COLLATE "C" NOT NULL REFERENCES catalog_entries (resource_code),
    version       BIGINT      NOT NULL,
    state         TEXT        NOT NULL,
    state_reason  TEXT        NOT NULL,
    published_at  TIMESTAMPTZ,
    updated_at    TIMESTAMPTZ NOT NULL,
    content       JSONB       NOT NULL,
    action        TEXT        NOT NULL,
    actor         TEXT        NOT NULL,
    reason        TEXT        NOT NULL,
    changed_at    TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (resource_code, version)
);
