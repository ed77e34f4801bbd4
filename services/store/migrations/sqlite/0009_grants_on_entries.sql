-- no-transaction
-- Access requests and grants are for what a catalogue entry shares: a dataset's records, or an
-- interface's answers (接口共享). Their `dataset` column names the entry's resource code of
-- either, without a foreign key to datasets; for an interface, they name the operations asked
-- for and granted (a JSON array of names, empty for a dataset). SQLite cannot drop a constraint,
-- so the two tables are rebuilt as its manual describes ("Making Other Kinds Of Table Schema
-- Changes"): foreign keys off on this connection, one transaction, the rows copied. It is meant
-- to run once: run again, it rebuilds the tables again with every row's operations emptied.
PRAGMA foreign_keys = OFF;

BEGIN IMMEDIATE;

DROP TABLE IF EXISTS access_requests_rebuilt;
CREATE TABLE access_requests_rebuilt (
    id              TEXT NOT NULL PRIMARY KEY,
    dataset         TEXT NOT NULL,
    provider_code   TEXT NOT NULL,
    applicant_code  TEXT NOT NULL,
    purpose         TEXT NOT NULL,
    scope           TEXT NOT NULL,
    fields          TEXT NOT NULL,
    period_from     TEXT NOT NULL,
    period_until    TEXT NOT NULL,
    business_system TEXT NOT NULL,
    state           TEXT NOT NULL,
    submitted_at    TEXT NOT NULL,
    due_on          TEXT NOT NULL,
    answered_at     TEXT,
    answered_by     TEXT NOT NULL,
    reason          TEXT NOT NULL,
    grant_id        TEXT,
    operations      TEXT NOT NULL DEFAULT '[]'
) STRICT;
INSERT INTO access_requests_rebuilt (id, dataset, provider_code, applicant_code, purpose, scope, fields,
    period_from, period_until, business_system, state, submitted_at, due_on, answered_at, answered_by, reason,
    grant_id)
SELECT id, dataset, provider_code, applicant_code, purpose, scope, fields, period_from, period_until,
    business_system, state, submitted_at, due_on, answered_at, answered_by, reason, grant_id
FROM access_requests;
DROP TABLE access_requests;
ALTER TABLE access_requests_rebuilt RENAME TO access_requests;
CREATE INDEX IF NOT EXISTS access_requests_applicant ON access_requests (applicant_code, id);
CREATE INDEX IF NOT EXISTS access_requests_provider ON access_requests (provider_code, id);
CREATE INDEX IF NOT EXISTS access_requests_dataset ON access_requests (dataset, id);
CREATE INDEX IF NOT EXISTS access_requests_state ON access_requests (state, due_on);

DROP TABLE IF EXISTS access_grants_rebuilt;
CREATE TABLE access_grants_rebuilt (
    id              TEXT NOT NULL PRIMARY KEY,
    request_id      TEXT NOT NULL UNIQUE REFERENCES access_requests (id),
    dataset         TEXT NOT NULL,
    provider_code   TEXT NOT NULL,
    grantee_code    TEXT NOT NULL,
    purpose         TEXT NOT NULL,
    business_system TEXT NOT NULL,
    fields          TEXT NOT NULL,
    masks           TEXT NOT NULL,
    granted_at      TEXT NOT NULL,
    granted_by      TEXT NOT NULL,
    expires_at      TEXT NOT NULL,
    revoked_at      TEXT,
    revoked_by      TEXT NOT NULL,
    revoke_reason   TEXT NOT NULL,
    operations      TEXT NOT NULL DEFAULT '[]'
) STRICT;
INSERT INTO access_grants_rebuilt (id, request_id, dataset, provider_code, grantee_code, purpose,
    business_system, fields, masks, granted_at, granted_by, expires_at, revoked_at, revoked_by, revoke_reason)
SELECT id, request_id, dataset, provider_code, grantee_code, purpose, business_system, fields, masks,
    granted_at, granted_by, expires_at, revoked_at, revoked_by, revoke_reason
FROM access_grants;
DROP TABLE access_grants;
ALTER TABLE access_grants_rebuilt RENAME TO access_grants;
CREATE INDEX IF NOT EXISTS access_grants_dataset ON access_grants (dataset, grantee_code);
CREATE INDEX IF NOT EXISTS access_grants_grantee ON access_grants (grantee_code, id);
CREATE INDEX IF NOT EXISTS access_grants_provider ON access_grants (provider_code, id);

COMMIT;

PRAGMA foreign_keys = ON;
