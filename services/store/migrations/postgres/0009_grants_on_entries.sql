-- Access requests and grants are for what a catalogue entry shares: a dataset's records, or an
-- interface's answers (接口共享). Their `dataset` column names the entry's resource code of
-- either, without a foreign key to datasets; for an interface, they name the operations asked for
-- and granted (a JSON array of names, empty for a dataset). Idempotent.
ALTER TABLE access_requests DROP CONSTRAINT IF EXISTS access_requests_dataset_fkey;
ALTER TABLE access_grants DROP CONSTRAINT IF EXISTS access_grants_dataset_fkey;
ALTER TABLE access_requests ADD COLUMN IF NOT EXISTS operations TEXT NOT NULL DEFAULT '[]';
ALTER TABLE access_grants ADD COLUMN IF NOT EXISTS operations TEXT NOT NULL DEFAULT '[]';
