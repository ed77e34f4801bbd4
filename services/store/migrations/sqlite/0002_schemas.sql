-- The schema registry: subjects, their versions and references, the registry's settings and the
-- schema version that describes each catalogue entry's records. Compatibility modes are stored as
-- their domain text (`CompatibilityMode::as_str()`); timestamps as in 0001.

CREATE TABLE schema_subjects (
    subject       TEXT    NOT NULL PRIMARY KEY,
    -- The department code or `admin:<name>` that registered the first version.
    owner         TEXT    NOT NULL,
    -- NULL: the subject follows the registry's default mode.
    compatibility TEXT,
    -- The highest version ever handed out, kept when that version is deleted for good, so that
    -- version numbers are never reused.
    last_version  INTEGER NOT NULL,
    created_at    TEXT    NOT NULL
) STRICT;

CREATE TABLE schema_versions (
    subject       TEXT    NOT NULL REFERENCES schema_subjects (subject),
    version       INTEGER NOT NULL,
    -- The schema document as registered (JSON text).
    content       TEXT    NOT NULL,
    -- SHA-256 of the canonical JSON: identical content registers once per subject.
    fingerprint   TEXT    NOT NULL,
    registered_by TEXT    NOT NULL,
    -- Soft-deleted: hidden from "latest" and listings, kept for readers that pinned it.
    deleted       INTEGER NOT NULL CHECK (deleted IN (0, 1)),
    created_at    TEXT    NOT NULL,
    PRIMARY KEY (subject, version)
) STRICT;

CREATE INDEX schema_versions_fingerprint ON schema_versions (subject, fingerprint);

-- The versions a schema version refers to, in the order they were registered.
CREATE TABLE schema_references (
    subject     TEXT    NOT NULL,
    version     INTEGER NOT NULL,
    position    INTEGER NOT NULL,
    ref_subject TEXT    NOT NULL,
    ref_version INTEGER NOT NULL,
    PRIMARY KEY (subject, version, position),
    FOREIGN KEY (subject, version) REFERENCES schema_versions (subject, version),
    FOREIGN KEY (ref_subject, ref_version) REFERENCES schema_versions (subject, version)
) STRICT;

-- Who refers to a version: checked before it is deleted for good.
CREATE INDEX schema_references_target ON schema_references (ref_subject, ref_version);

-- Registry-wide settings by name; `default_compatibility` holds the default mode.
CREATE TABLE registry_settings (
    key   TEXT NOT NULL PRIMARY KEY,
    value TEXT NOT NULL
) STRICT;

-- The schema version that describes a catalogue entry's records (at most one per entry).
CREATE TABLE entry_schema_bindings (
    resource_code TEXT    NOT NULL PRIMARY KEY REFERENCES catalog_entries (resource_code),
    subject       TEXT    NOT NULL,
    version       INTEGER NOT NULL,
    bound_by      TEXT    NOT NULL,
    bound_at      TEXT    NOT NULL,
    FOREIGN KEY (subject, version) REFERENCES schema_versions (subject, version)
) STRICT;

-- Which entries use a version: checked before it is deleted for good.
CREATE INDEX entry_schema_bindings_schema ON entry_schema_bindings (subject, version, resource_code);
