-- 接口共享: the interface a provider registered on one of its catalogue entries (exchange kind
-- 接口). The specification (upstream, CA, operations with their schemas, limits) is one JSON
-- document: it is always read and written whole. Re-registering replaces it and enables the
-- interface again; disabling keeps it with the reason.
CREATE TABLE IF NOT EXISTS interfaces (
    code            TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    provider_code   TEXT COLLATE "C" NOT NULL,
    spec            TEXT NOT NULL,
    enabled         BOOLEAN NOT NULL,
    disabled_reason TEXT NOT NULL,
    registered_at   TIMESTAMPTZ NOT NULL,
    updated_at      TIMESTAMPTZ NOT NULL
);

CREATE INDEX IF NOT EXISTS interfaces_by_provider ON interfaces (provider_code, code);
