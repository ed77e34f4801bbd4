-- The hub's in-memory catalogue search (issue #16) follows changes made on other hub nodes by
-- reading the entries changed since a time, about once a second: this index makes that a short
-- range read rather than a scan of the whole catalogue.
CREATE INDEX IF NOT EXISTS catalog_entries_updated ON catalog_entries (updated_at, resource_code);
