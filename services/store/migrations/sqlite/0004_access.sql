-- Access under the sharing rules: access requests (共享申请) and their answers, the grants (授权)
-- approvals make, and error reports (纠错). Ids are UUIDv7 text chosen by the hub, so ordering by
-- id is ordering by time. Enumerations are stored as their domain text (`as_str()`), timestamps
-- as in 0001, days as YYYY-MM-DD text (both sort as they compare).

CREATE TABLE access_requests (
    id              TEXT NOT NULL PRIMARY KEY,
    dataset         TEXT NOT NULL REFERENCES datasets (id),
    provider_code   TEXT NOT NULL,
    applicant_code  TEXT NOT NULL,
    purpose         TEXT NOT NULL,
    scope           TEXT NOT NULL,
    -- The requested top-level fields as a JSON array of names (empty for file datasets).
    fields          TEXT NOT NULL,
    -- The requested period of use, inclusive, in China Standard Time days.
    period_from     TEXT NOT NULL,
    period_until    TEXT NOT NULL,
    business_system TEXT NOT NULL,
    state           TEXT NOT NULL,
    submitted_at    TEXT NOT NULL,
    -- The last day to answer.
    due_on          TEXT NOT NULL,
    answered_at     TEXT,
    answered_by     TEXT NOT NULL,
    reason          TEXT NOT NULL,
    -- The grant an approval made. No foreign key: the grant refers to its request, and both are
    -- written by the one transaction that answers the request.
    grant_id        TEXT
) STRICT;

-- "Requests a department made or must answer", and each side alone.
CREATE INDEX access_requests_applicant ON access_requests (applicant_code, id);
CREATE INDEX access_requests_provider ON access_requests (provider_code, id);
CREATE INDEX access_requests_dataset ON access_requests (dataset, id);
-- Requests in a state, and pending ones by due day (overdue reminders).
CREATE INDEX access_requests_state ON access_requests (state, due_on);

CREATE TABLE access_grants (
    id              TEXT NOT NULL PRIMARY KEY,
    request_id      TEXT NOT NULL UNIQUE REFERENCES access_requests (id),
    dataset         TEXT NOT NULL REFERENCES datasets (id),
    provider_code   TEXT NOT NULL,
    grantee_code    TEXT NOT NULL,
    purpose         TEXT NOT NULL,
    business_system TEXT NOT NULL,
    -- The granted fields as a JSON array of names (empty for file datasets).
    fields          TEXT NOT NULL,
    -- The masks as a JSON array of [field, rule] pairs, the rule as `MaskRule::as_text`.
    masks           TEXT NOT NULL,
    granted_at      TEXT NOT NULL,
    granted_by      TEXT NOT NULL,
    expires_at      TEXT NOT NULL,
    revoked_at      TEXT,
    revoked_by      TEXT NOT NULL,
    revoke_reason   TEXT NOT NULL
) STRICT;

-- The grants a department holds on a dataset: every read under a grant looks them up.
CREATE INDEX access_grants_dataset ON access_grants (dataset, grantee_code);
CREATE INDEX access_grants_grantee ON access_grants (grantee_code, id);
CREATE INDEX access_grants_provider ON access_grants (provider_code, id);

CREATE TABLE error_reports (
    id                 TEXT    NOT NULL PRIMARY KEY,
    dataset            TEXT    NOT NULL REFERENCES datasets (id),
    provider_code      TEXT    NOT NULL,
    reporter_code      TEXT    NOT NULL,
    -- The record named by its sequence number (0: by key only) or its key (empty: by sequence
    -- only).
    sequence           INTEGER NOT NULL,
    key                TEXT    NOT NULL,
    description        TEXT    NOT NULL,
    state              TEXT    NOT NULL,
    reported_at        TEXT    NOT NULL,
    resolved_at        TEXT,
    resolved_by        TEXT    NOT NULL,
    resolution         TEXT    NOT NULL,
    -- The sequence of the correcting change (0 unless corrected).
    corrected_sequence INTEGER NOT NULL
) STRICT;

CREATE INDEX error_reports_provider ON error_reports (provider_code, id);
CREATE INDEX error_reports_reporter ON error_reports (reporter_code, id);
CREATE INDEX error_reports_dataset ON error_reports (dataset, id);
