-- Hub nodes running over this database, as each announces itself (every few seconds while it
-- serves; removed when it stops). `xinqiao migrate` reads it to refuse a migration that a running
-- node does not know.
CREATE TABLE IF NOT EXISTS hub_nodes (
    id           TEXT        NOT NULL PRIMARY KEY,
    host         TEXT        NOT NULL,
    pid          BIGINT      NOT NULL,
    listen       TEXT        NOT NULL,
    version      TEXT        NOT NULL,
    -- The highest schema migration the node's build carries.
    schema_known BIGINT      NOT NULL,
    started_at   TIMESTAMPTZ NOT NULL,
    seen_at      TIMESTAMPTZ NOT NULL
);
