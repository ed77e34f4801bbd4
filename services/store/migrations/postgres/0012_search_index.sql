-- Catalogue search as an index (issue #16): every 1- and 2-character substring of an entry's
-- search text is a term (xinqiao_domain::search says why: Chinese keywords of one or two
-- characters, which no word or trigram tokenizer serves). A GIN index over the terms, computed
-- by an immutable function of search_text, finds the entries holding all of a keyword's terms;
-- the store then tests the keyword itself. pg_trgm is not used: it needs CREATE EXTENSION rights
-- and ignores CJK characters under the C locale.

-- The terms of a search text, as xinqiao_domain::search::text_terms gives them.
CREATE OR REPLACE FUNCTION xinqiao_search_terms(t text) RETURNS text[]
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT COALESCE(array_agg(DISTINCT term), '{}') FROM (
        SELECT substr(t, n, 1) AS term FROM generate_series(1, length(t)) AS n
        UNION ALL
        SELECT substr(t, n, 2) FROM generate_series(1, length(t) - 1) AS n
    ) AS terms
$$;

-- Built over the existing rows here, kept by PostgreSQL with every write after.
CREATE INDEX IF NOT EXISTS catalog_entries_search_terms
    ON catalog_entries USING gin (xinqiao_search_terms(search_text));
CREATE INDEX IF NOT EXISTS catalogue_feed_search_terms
    ON catalogue_feed USING gin (xinqiao_search_terms(search_text)) WHERE origin_hub <> '';
-- The same of each name (the search text's first line) alone: how many entries hold a keyword in
-- their name, the first relevance tier, and which.
CREATE INDEX IF NOT EXISTS catalog_entries_search_name_terms
    ON catalog_entries USING gin (xinqiao_search_terms(split_part(search_text, chr(10), 1)));
CREATE INDEX IF NOT EXISTS catalogue_feed_search_name_terms
    ON catalogue_feed USING gin (xinqiao_search_terms(split_part(search_text, chr(10), 1))) WHERE origin_hub <> '';

-- The federated search filters aggregated entries by state and orders them by origin and code.
CREATE INDEX IF NOT EXISTS catalogue_feed_state ON catalogue_feed (state, origin_hub, resource_code);
