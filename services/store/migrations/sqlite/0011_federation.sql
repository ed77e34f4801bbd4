-- Federation (平台级联): the hubs registered with this one, and the catalogue feed that a parent
-- reads (目录汇聚).

-- A peer hub, by its 行政区划代码. The exposure (what this hub offers it) is one JSON document,
-- read and written whole. For a child, `catalogue_cursor` is the position of its feed up to
-- which its changes are applied here.
CREATE TABLE IF NOT EXISTS federation_peers (
    division_code    TEXT    NOT NULL PRIMARY KEY,
    name             TEXT    NOT NULL,
    address          TEXT    NOT NULL,
    ca_pem           TEXT    NOT NULL,
    relation         TEXT    NOT NULL,
    exposure         TEXT    NOT NULL,
    catalogue_cursor INTEGER NOT NULL,
    added_by         TEXT    NOT NULL,
    added_at         TEXT    NOT NULL
) STRICT;

-- The last position given in the feed. Taken with an update inside the transaction that writes
-- the change, so positions follow commit order: a reader that has seen N has seen all below N.
CREATE TABLE IF NOT EXISTS catalogue_feed_head (
    id            INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
    last_position INTEGER NOT NULL
) STRICT;

INSERT OR IGNORE INTO catalogue_feed_head (id, last_position) VALUES (1, 0);

-- The catalogue this hub offers upward: the latest state (published, or withdrawn since) of each
-- of its own entries (origin_hub '') and of each entry aggregated from a child (origin_hub the
-- hub that holds it, via_hub the child it came through). The aggregated rows are also what
-- the directory search shows beside this hub's own entries.
CREATE TABLE IF NOT EXISTS catalogue_feed (
    origin_hub     TEXT    NOT NULL,
    resource_code  TEXT    NOT NULL,
    position       INTEGER NOT NULL UNIQUE,
    via_hub        TEXT    NOT NULL,
    provider_code  TEXT    NOT NULL,
    provider_name  TEXT    NOT NULL,
    classification TEXT    NOT NULL,
    search_text    TEXT    NOT NULL,
    share_type     TEXT    NOT NULL,
    open_type      TEXT    NOT NULL,
    update_cycle   TEXT    NOT NULL,
    format         TEXT    NOT NULL,
    state          TEXT    NOT NULL,
    version        INTEGER NOT NULL,
    state_reason   TEXT    NOT NULL,
    -- serde_json of the domain's EntryContent.
    content        TEXT    NOT NULL,
    published_at   TEXT,
    created_at     TEXT    NOT NULL,
    updated_at     TEXT    NOT NULL,
    PRIMARY KEY (origin_hub, resource_code)
) STRICT;

CREATE INDEX IF NOT EXISTS catalogue_feed_via ON catalogue_feed (via_hub, origin_hub, resource_code);

-- Every publication of one of this hub's entries, and the withdrawal of one that was published,
-- is a change of the feed, in the transaction that saves the entry's version: none is lost.
CREATE TRIGGER IF NOT EXISTS catalogue_feed_on_entry_change AFTER UPDATE ON catalog_entries
WHEN NEW.state = 'published'
    OR (NEW.state = 'withdrawn' AND EXISTS (
        SELECT 1 FROM catalogue_feed f
        WHERE f.origin_hub = '' AND f.resource_code = NEW.resource_code AND f.state = 'published'))
BEGIN
    UPDATE catalogue_feed_head SET last_position = last_position + 1 WHERE id = 1;
    INSERT INTO catalogue_feed (origin_hub, resource_code, position, via_hub, provider_code, provider_name,
        classification, search_text, share_type, open_type, update_cycle, format, state, version, state_reason,
        content, published_at, created_at, updated_at)
    SELECT '', NEW.resource_code, h.last_position, '', NEW.provider_code, COALESCE(d.name, ''),
        NEW.classification, NEW.search_text, NEW.share_type, NEW.open_type, NEW.update_cycle, NEW.format,
        NEW.state, NEW.version, NEW.state_reason, NEW.content, NEW.published_at, NEW.created_at, NEW.updated_at
    FROM catalogue_feed_head h LEFT JOIN departments d ON d.code = NEW.provider_code
    WHERE h.id = 1
    ON CONFLICT (origin_hub, resource_code) DO UPDATE SET
        position = excluded.position, provider_code = excluded.provider_code,
        provider_name = excluded.provider_name, classification = excluded.classification,
        search_text = excluded.search_text, share_type = excluded.share_type, open_type = excluded.open_type,
        update_cycle = excluded.update_cycle, format = excluded.format, state = excluded.state,
        version = excluded.version, state_reason = excluded.state_reason, content = excluded.content,
        published_at = excluded.published_at, created_at = excluded.created_at, updated_at = excluded.updated_at;
END;

-- Entries published before federation existed are in the feed from the start (statements that
-- may run again: only entries not yet in the feed, after the head).
INSERT INTO catalogue_feed (origin_hub, resource_code, position, via_hub, provider_code, provider_name,
    classification, search_text, share_type, open_type, update_cycle, format, state, version, state_reason,
    content, published_at, created_at, updated_at)
SELECT '', e.resource_code,
    (SELECT last_position FROM catalogue_feed_head WHERE id = 1) + ROW_NUMBER() OVER (ORDER BY e.resource_code),
    '', e.provider_code, COALESCE(d.name, ''),
    e.classification, e.search_text, e.share_type, e.open_type, e.update_cycle, e.format,
    e.state, e.version, e.state_reason, e.content, e.published_at, e.created_at, e.updated_at
FROM catalog_entries e LEFT JOIN departments d ON d.code = e.provider_code
WHERE e.state = 'published'
    AND NOT EXISTS (SELECT 1 FROM catalogue_feed f WHERE f.origin_hub = '' AND f.resource_code = e.resource_code);

UPDATE catalogue_feed_head
SET last_position = MAX(last_position, COALESCE((SELECT MAX(position) FROM catalogue_feed), 0))
WHERE id = 1;
