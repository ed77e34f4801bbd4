-- The audit trail (安全审计): an append-only hash chain. Each row's hash covers the event and the
-- hash of the row before it (`xinqiao_domain::audit::link`), so a changed, removed or reordered
-- row breaks the chain at that row. Timestamps as in 0001.

CREATE TABLE audit_events (
    -- Position in the chain, from 1, without gaps (pruning removes a prefix only).
    sequence   INTEGER NOT NULL PRIMARY KEY,
    at         TEXT    NOT NULL,
    actor      TEXT    NOT NULL,
    action     TEXT    NOT NULL,
    target     TEXT    NOT NULL,
    -- The department the event concerns (empty when none).
    about      TEXT    NOT NULL,
    outcome    TEXT    NOT NULL,
    request_id TEXT    NOT NULL,
    -- Counts and reasons as JSON text, exactly as hashed.
    detail     TEXT    NOT NULL,
    -- The link's hash, lower-case hexadecimal, and its algorithm (`ChainHash::as_str`).
    hash       TEXT    NOT NULL,
    algorithm  TEXT    NOT NULL
) STRICT;

-- "Events a department did or that concern it", what happened to a target, and time ranges.
CREATE INDEX audit_events_actor ON audit_events (actor, sequence);
CREATE INDEX audit_events_about ON audit_events (about, sequence);
CREATE INDEX audit_events_target ON audit_events (target, sequence);
CREATE INDEX audit_events_at ON audit_events (at);

-- The chain's one head row: the last event appended (what the next one links to), and where the
-- stored chain starts after pruning (the last removed event; 0 and 'genesis' before any).
CREATE TABLE audit_head (
    id                  INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
    last_sequence       INTEGER NOT NULL,
    last_hash           TEXT    NOT NULL,
    checkpoint_sequence INTEGER NOT NULL,
    checkpoint_hash     TEXT    NOT NULL,
    pruned_at           TEXT
) STRICT;

INSERT INTO audit_head (id, last_sequence, last_hash, checkpoint_sequence, checkpoint_hash, pruned_at)
VALUES (1, 0, 'genesis', 0, 'genesis', NULL);
