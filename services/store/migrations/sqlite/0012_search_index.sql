-- Catalogue search as an index (issue #16): every 1- and 2-character substring of an entry's
-- search text is a term (xinqiao_domain::search says why: Chinese keywords of one or two
-- characters, which no word or trigram tokenizer serves), kept in an FTS5 table; a search reads
-- the entries holding all of a keyword's terms and then tests the keyword itself.

-- The documents of the index: this hub's own entries (origin_hub '') and those aggregated from
-- children. The FTS rowid is this table's id, an INTEGER PRIMARY KEY, which VACUUM (and so a
-- backup made with VACUUM INTO) keeps, unlike the implicit rowids of the entry tables.
CREATE TABLE IF NOT EXISTS catalog_search_docs (
    id            INTEGER NOT NULL PRIMARY KEY,
    origin_hub    TEXT    NOT NULL,
    resource_code TEXT    NOT NULL,
    UNIQUE (origin_hub, resource_code)
) STRICT;

-- The terms of each document as hex words (one plain ASCII word per term, whatever its script
-- or punctuation), written by the store in the transaction that writes the entry. Contentless
-- (the terms are not stored twice), deletable, and with detail=none: a search asks only which
-- documents hold a term.
CREATE VIRTUAL TABLE IF NOT EXISTS catalog_search_terms USING fts5 (
    terms, content = '', contentless_delete = 1, detail = none, tokenize = 'ascii'
);

-- The same of each name (the search text's first line) alone: how many entries hold a keyword in
-- their name, the first relevance tier, and which.
CREATE VIRTUAL TABLE IF NOT EXISTS catalog_search_name_terms USING fts5 (
    terms, content = '', contentless_delete = 1, detail = none, tokenize = 'ascii'
);

-- The entries that exist already, own and aggregated.
INSERT INTO catalog_search_docs (origin_hub, resource_code)
SELECT '', resource_code FROM catalog_entries WHERE true
ON CONFLICT (origin_hub, resource_code) DO NOTHING;

INSERT INTO catalog_search_docs (origin_hub, resource_code)
SELECT origin_hub, resource_code FROM catalogue_feed WHERE origin_hub <> ''
ON CONFLICT (origin_hub, resource_code) DO NOTHING;

-- Their terms, as the store writes them (search::indexed_terms): hex() of each substring of
-- one and two characters (at a text's last character the 2-character substring is that one
-- character again, which changes nothing).
WITH RECURSIVE
    texts (id, t) AS (
        SELECT m.id, e.search_text FROM catalog_search_docs m
        JOIN catalog_entries e ON e.resource_code = m.resource_code
        WHERE m.origin_hub = ''
        UNION ALL
        SELECT m.id, f.search_text FROM catalog_search_docs m
        JOIN catalogue_feed f ON f.origin_hub = m.origin_hub AND f.resource_code = m.resource_code
        WHERE m.origin_hub <> ''
    ),
    positions (n) AS (
        SELECT 1
        UNION ALL
        SELECT n + 1 FROM positions WHERE n < (SELECT COALESCE(MAX(length(t)), 0) FROM texts)
    )
INSERT OR REPLACE INTO catalog_search_terms (rowid, terms)
SELECT texts.id, group_concat(hex(substr(texts.t, positions.n, 1)) || ' ' || hex(substr(texts.t, positions.n, 2)), ' ')
FROM texts JOIN positions ON positions.n <= length(texts.t)
GROUP BY texts.id;

WITH RECURSIVE
    texts (id, t) AS (
        SELECT m.id, substr(e.search_text, 1, instr(e.search_text || char(10), char(10)) - 1) FROM catalog_search_docs m
        JOIN catalog_entries e ON e.resource_code = m.resource_code
        WHERE m.origin_hub = ''
        UNION ALL
        SELECT m.id, substr(f.search_text, 1, instr(f.search_text || char(10), char(10)) - 1) FROM catalog_search_docs m
        JOIN catalogue_feed f ON f.origin_hub = m.origin_hub AND f.resource_code = m.resource_code
        WHERE m.origin_hub <> ''
    ),
    positions (n) AS (
        SELECT 1
        UNION ALL
        SELECT n + 1 FROM positions WHERE n < (SELECT COALESCE(MAX(length(t)), 0) FROM texts)
    )
INSERT OR REPLACE INTO catalog_search_name_terms (rowid, terms)
SELECT texts.id, group_concat(hex(substr(texts.t, positions.n, 1)) || ' ' || hex(substr(texts.t, positions.n, 2)), ' ')
FROM texts JOIN positions ON positions.n <= length(texts.t)
GROUP BY texts.id;

-- The federated search filters aggregated entries by state and orders them by origin and code.
CREATE INDEX IF NOT EXISTS catalogue_feed_state ON catalogue_feed (state, origin_hub, resource_code);
