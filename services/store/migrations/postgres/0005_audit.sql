-- The audit trail (安全审计): an append-only hash chain. Each row's hash covers the event and the
-- hash of the row before it (`xinqiao_domain::audit::link`), so a changed, removed or reordered
-- row breaks the chain at that row. Codes use the "C" collation, as elsewhere.

CREATE TABLE audit_events (
    -- Position in the chain, from 1, without gaps (pruning removes a prefix only).
    sequence   BIGINT      NOT NULL PRIMARY KEY,
    at         TIMESTAMPTZ NOT NULL,
    actor      TEXT COLLATE "C" NOT NULL,
    action     TEXT COLLATE "C" NOT NULL,
    target     TEXT COLLATE "C" NOT NULL,
    -- The department the event concerns (empty when none).
    about      TEXT COLLATE "C" NOT NULL,
    outcome    TEXT        NOT NULL,
    request_id TEXT        NOT NULL,
    -- Counts and reasons as JSON text, exactly as hashed (not JSONB, which would normalise it).
    detail     TEXT        NOT NULL,
    -- The link's hash, lower-case hexadecimal, and its algorithm (`ChainHash::as_str`).
    hash       TEXT        NOT NULL,
    algorithm  TEXT        NOT NULL
);

-- "Events a department did or that concern it", what happened to a target, and time ranges.
CREATE INDEX audit_events_actor ON audit_events (actor, sequence);
CREATE INDEX audit_events_about ON audit_events (about, sequence);
CREATE INDEX audit_events_target ON audit_events (target, sequence);
CREATE INDEX audit_events_at ON audit_events (at);

-- The chain's one head row: the last event appended (what the next one links to), and where the
-- stored chain starts after pruning (the last removed event; 0 and 'genesis' before any).
-- Appenders on every hub node lock this row (FOR UPDATE) first, so they link one after another
-- and the chain never forks.
CREATE TABLE audit_head (
    id                  INTEGER     NOT NULL PRIMARY KEY CHECK (id = 1),
    last_sequence       BIGINT      NOT NULL,
    last_hash           TEXT        NOT NULL,
    checkpoint_sequence BIGINT      NOT NULL,
    checkpoint_hash     TEXT        NOT NULL,
    pruned_at           TIMESTAMPTZ
);

INSERT INTO audit_head (id, last_sequence, last_hash, checkpoint_sequence, checkpoint_hash, pruned_at)
VALUES (1, 0, 'genesis', 0, 'genesis', NULL);
