-- Read streams (Snapshot, Subscribe, DownloadFile) open on some hub node. The audit trail has a
-- stream's "open" event; its "end" event, with what it delivered, comes when it ends. A node that
-- crashes cannot write it: another node (or the same after its restart) finds the row here and
-- ends the stream in the trail itself, so that no "open" stays without its "end".
CREATE TABLE IF NOT EXISTS open_streams (
    request_id TEXT NOT NULL PRIMARY KEY,
    node_id    TEXT        NOT NULL,
    actor      TEXT        NOT NULL,
    action     TEXT        NOT NULL,
    target     TEXT        NOT NULL,
    about      TEXT        NOT NULL,
    -- The named consumer of a Subscribe, whose cursor tells how far the reader acknowledged.
    consumer   TEXT,
    opened_at  TIMESTAMPTZ NOT NULL
);
