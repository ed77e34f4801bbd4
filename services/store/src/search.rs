//! The catalogue search's SQL, one builder for both backends and for both kinds of entry: this
//! hub's own (`catalog_entries`) and those aggregated from child hubs (`catalogue_feed`).
//!
//! A keyword is answered from an index of the 1- and 2-character substrings of each entry's
//! search text (see `xinqiao_domain::search`), then narrowed by an exact substring test, so the
//! results are exactly a full scan's while only the index's candidates are read:
//!
//! - SQLite: an FTS5 table (`catalog_search_terms`, migration 0012) holding each entry's terms as
//!   hex-encoded words, written in the transaction that writes the entry. Hex makes every term
//!   one plain ASCII word, so no tokenizer decides what a Chinese character, a quote, `*` or
//!   `NEAR` is, and no keyword can become FTS query syntax. The table is contentless with
//!   `detail=none` (only which documents hold a term: nothing else is asked), and its rowids are
//!   the stable ids of `catalog_search_docs`, since VACUUM (and so a backup) may renumber the
//!   implicit rowids of the entry tables.
//! - PostgreSQL: a GIN index over `xinqiao_search_terms(search_text)`, an immutable SQL function
//!   computing the same terms as a `text[]`; a query asks `@>` the keyword's terms. pg_trgm would
//!   need `CREATE EXTENSION` rights and ignores CJK characters under the C locale; this needs
//!   neither, and indexes existing rows when the index is built.
//!
//! Results come in relevance tiers (the name first, see `relevance_tier`), then by origin hub and
//! resource code, so a page continues after a (tier, origin, code) position without gaps or
//! repeats. Without a keyword the order is that of codes, which the primary keys give.
//!
//! Ranking needs every match before the first page can be cut, which for a keyword held by half
//! the catalogue (信息, 登记) means reading half the catalogue. So a search first counts the
//! index's candidates, stopping past [`FEW_CANDIDATES`]: up to that many it reads them, tests and
//! sorts them; above it the keyword is common, and reading each tier in code order along the
//! primary key (the name tier, then the other) reaches a page after a few dozen rows. Both give
//! the same order, so a page token from either continues in the other.

use sqlx::{Database, QueryBuilder};
use xinqiao_domain::catalogue::EntryFilter;
use xinqiao_domain::lifecycle::EntryState;
use xinqiao_domain::policy::EntryVisibility;
use xinqiao_domain::search::{self, SearchPosition};

/// Which engine's SQL to write where the two differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Engine {
    Sqlite,
    Postgres,
}

/// Which entries are searched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    /// This hub's own entries, `catalog_entries e` (joined to `departments d` by the caller).
    Own,
    /// Entries aggregated from children: the rows of `catalogue_feed f` with an origin hub.
    Aggregated,
}

impl Engine {
    fn position(self) -> &'static str {
        match self {
            Engine::Sqlite => "instr",
            Engine::Postgres => "strpos",
        }
    }

    fn line_break(self) -> &'static str {
        match self {
            Engine::Sqlite => "char(10)",
            Engine::Postgres => "chr(10)",
        }
    }
}

impl Source {
    fn alias(self) -> &'static str {
        match self {
            Source::Own => "e",
            Source::Aggregated => "f",
        }
    }
}

/// Which terms an index holds: of the whole search text, or of the name (its first line) alone,
/// which tells how many entries a keyword's first tier holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Terms {
    All,
    Name,
}

impl Terms {
    fn fts_table(self) -> &'static str {
        match self {
            Terms::All => "catalog_search_terms",
            Terms::Name => "catalog_search_name_terms",
        }
    }

    /// PostgreSQL's indexed expression of a row's search text.
    fn pg_expression(self, alias: &str) -> String {
        match self {
            Terms::All => format!("xinqiao_search_terms({alias}.search_text)"),
            Terms::Name => format!("xinqiao_search_terms(split_part({alias}.search_text, chr(10), 1))"),
        }
    }
}

/// The name of a search text: its first line.
pub(crate) fn name_part(search_text: &str) -> &str {
    search_text.split('\n').next().unwrap_or_default()
}

/// A term as the SQLite index holds it: the hex of its UTF-8 bytes (SQLite's `hex()` of the same
/// substring, which migration 0012 uses for rows that existed before).
pub(crate) fn hex_term(term: &str) -> String {
    term.bytes().map(|b| format!("{b:02X}")).collect()
}

/// A search text's terms for the SQLite index: hex words separated by spaces.
pub(crate) fn indexed_terms(search_text: &str) -> String {
    search::text_terms(search_text)
        .iter()
        .map(|t| hex_term(t))
        .collect::<Vec<_>>()
        .join(" ")
}

/// An FTS5 query asking for every one of the keyword's terms (each a quoted hex word).
fn fts_query(terms: &[String]) -> String {
    terms
        .iter()
        .map(|t| format!("\"{}\"", hex_term(t)))
        .collect::<Vec<_>>()
        .join(" AND ")
}

/// Escapes LIKE's wildcards so that `text` matches itself (with `ESCAPE '\'`).
pub(crate) fn escape_like(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '\\' | '%' | '_') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

/// Pushes the tier of a row for `keyword`: 0 when the keyword's first occurrence starts before
/// the first line break (in the name), 1 otherwise; `xinqiao_domain::search::relevance_tier`
/// says the same in Rust.
fn push_tier<DB: Database>(query: &mut QueryBuilder<DB>, engine: Engine, source: Source, keyword: &str)
where
    String: sqlx::Encode<'static, DB> + sqlx::Type<DB>,
{
    let (position, line_break, a) = (engine.position(), engine.line_break(), source.alias());
    query.push(format!("(CASE WHEN {position}({a}.search_text, "));
    query.push_bind(keyword.to_string());
    query.push(format!(
        ") < {position}({a}.search_text || {line_break}, {line_break}) THEN 0 ELSE 1 END)"
    ));
}

/// Up to this many index candidates, a search reads them all, tests each and sorts them; above
/// it, reading the entries in code order finds a page sooner (at least one in this many of them
/// holds the keyword's terms), so each tier is read that way and stops at the page's end.
pub(crate) const FEW_CANDIDATES: i64 = 1000;

/// One query of a search (see [`Search::steps`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// No keyword: every entry the filters let through, in code order.
    All,
    /// The index's candidates, tested and sorted by (tier, code).
    Candidates,
    /// The entries of one tier, read in code order.
    Tier(u8),
    /// The name tier from the names' index candidates, tested and sorted by code.
    NameCandidates,
}

/// A catalogue search: the filters and where it continues.
pub(crate) struct Search<'a> {
    pub engine: Engine,
    pub source: Source,
    pub visibility: &'a EntryVisibility,
    pub filter: &'a EntryFilter,
    pub after: Option<&'a SearchPosition>,
    keyword: String,
}

impl<'a> Search<'a> {
    pub fn new(
        engine: Engine,
        source: Source,
        visibility: &'a EntryVisibility,
        filter: &'a EntryFilter,
        after: Option<&'a SearchPosition>,
    ) -> Self {
        Search {
            engine,
            source,
            visibility,
            filter,
            after,
            keyword: search::matching_keyword(&filter.keyword),
        }
    }

    /// A query counting the candidates of the `terms` index for the keyword, up to one more
    /// than [`FEW_CANDIDATES`] (so it stops early however common the keyword is); `None` without
    /// a keyword.
    pub fn count_candidates<DB: Database>(&self, index: Terms) -> Option<QueryBuilder<DB>>
    where
        String: sqlx::Encode<'static, DB> + sqlx::Type<DB>,
        i64: sqlx::Encode<'static, DB> + sqlx::Type<DB>,
    {
        if self.keyword.is_empty() {
            return None;
        }
        let terms = search::keyword_terms(&self.keyword);
        let mut query = QueryBuilder::<DB>::new("SELECT COUNT(*) FROM (");
        match self.engine {
            // Own and aggregated entries share the FTS table: an upper bound for either.
            Engine::Sqlite => {
                let table = index.fts_table();
                query.push(format!("SELECT rowid FROM {table} WHERE {table} MATCH "));
                query.push_bind(fts_query(&terms));
            }
            Engine::Postgres => {
                match self.source {
                    Source::Own => query.push("SELECT 1 FROM catalog_entries e WHERE "),
                    Source::Aggregated => query.push("SELECT 1 FROM catalogue_feed f WHERE f.origin_hub <> '' AND "),
                };
                self.push_index_match(&mut query, index, &terms);
            }
        }
        query
            .push(" LIMIT ")
            .push_bind(FEW_CANDIDATES + 1)
            .push(") AS candidates");
        Some(query)
    }

    /// The queries to run in turn, each for what the page still lacks, given the candidates
    /// counted in the whole text's index and in the names' (`None` without a keyword).
    pub fn steps(&self, candidates: Option<(i64, i64)>) -> Vec<Step> {
        match candidates {
            None => vec![Step::All],
            Some((all, _)) if all <= FEW_CANDIDATES => vec![Step::Candidates],
            // A keyword common in the text but rare in names (a data item's name, say) would
            // have the name tier read in code order to the end: its few candidates are read.
            Some((_, names)) => [search::NAME_TIER, search::OTHER_TIER]
                .into_iter()
                .filter(|&tier| self.after.is_none_or(|after| after.tier <= tier))
                .map(|tier| {
                    if tier == search::NAME_TIER && names <= FEW_CANDIDATES {
                        Step::NameCandidates
                    } else {
                        Step::Tier(tier)
                    }
                })
                .collect(),
        }
    }

    fn push_index_match<DB: Database>(&self, query: &mut QueryBuilder<DB>, index: Terms, terms: &[String])
    where
        String: sqlx::Encode<'static, DB> + sqlx::Type<DB>,
    {
        let a = self.source.alias();
        let table = index.fts_table();
        match (self.engine, self.source) {
            (Engine::Sqlite, Source::Own) => {
                query.push(format!(
                    "e.resource_code IN (SELECT m.resource_code FROM catalog_search_docs m \
                     WHERE m.origin_hub = '' AND m.id IN (SELECT rowid FROM {table} WHERE {table} MATCH "
                ));
                query.push_bind(fts_query(terms)).push("))");
            }
            (Engine::Sqlite, Source::Aggregated) => {
                query.push(format!(
                    "(f.origin_hub, f.resource_code) IN (SELECT m.origin_hub, m.resource_code \
                     FROM catalog_search_docs m WHERE m.origin_hub <> '' AND m.id IN (SELECT rowid \
                     FROM {table} WHERE {table} MATCH "
                ));
                query.push_bind(fts_query(terms)).push("))");
            }
            (Engine::Postgres, _) => {
                query.push(format!("{} @> ARRAY[", index.pg_expression(a)));
                let mut list = query.separated(", ");
                for term in terms {
                    list.push_bind(term.clone());
                }
                query.push("]::text[]");
            }
        }
    }

    /// Pushes one step's query after `SELECT … FROM` its source: the conditions, the order and
    /// at most `limit` rows.
    pub fn push_step<DB: Database>(&self, query: &mut QueryBuilder<DB>, step: Step, limit: u32)
    where
        String: sqlx::Encode<'static, DB> + sqlx::Type<DB>,
        i64: sqlx::Encode<'static, DB> + sqlx::Type<DB>,
    {
        let (engine, source, keyword) = (self.engine, self.source, self.keyword.as_str());
        let a = source.alias();
        match source {
            Source::Own => query.push(" WHERE 1 = 1"),
            Source::Aggregated => query.push(" WHERE f.origin_hub <> ''"),
        };
        match (source, self.visibility) {
            (_, EntryVisibility::All) => {}
            (Source::Own, EntryVisibility::PublishedOrOwnedBy(code)) => {
                // Most entries are published, so this narrows little; on SQLite the unary `+`
                // keeps its planner from reading both indexes of the OR and sorting every row,
                // where walking the primary key in code order stops at the page's end.
                let plus = if engine == Engine::Sqlite { "+" } else { "" };
                query.push(format!(" AND ({plus}e.state = "));
                query.push_bind(EntryState::Published.as_str().to_string());
                query
                    .push(format!(" OR {plus}e.provider_code = "))
                    .push_bind(code.clone())
                    .push(")");
            }
            // Nobody here owns an aggregated entry: others see it while it is published.
            (Source::Aggregated, EntryVisibility::PublishedOrOwnedBy(_)) => {
                query
                    .push(" AND f.state = ")
                    .push_bind(EntryState::Published.as_str().to_string());
            }
        }
        match step {
            Step::Candidates => {
                query.push(" AND ");
                self.push_index_match(query, Terms::All, &search::keyword_terms(keyword));
            }
            Step::NameCandidates => {
                query.push(" AND ");
                self.push_index_match(query, Terms::Name, &search::keyword_terms(keyword));
            }
            Step::All | Step::Tier(_) => {}
        }
        if step != Step::All {
            // The exact test: the index's candidates hold the keyword's terms, not always the
            // keyword; read in code order, the entries are not candidates at all.
            query.push(format!(" AND {}({a}.search_text, ", engine.position()));
            query.push_bind(keyword.to_string()).push(") > 0");
        }
        let tier = match step {
            Step::Tier(tier) => Some(tier),
            Step::NameCandidates => Some(search::NAME_TIER),
            Step::All | Step::Candidates => None,
        };
        if let Some(tier) = tier {
            query.push(" AND ");
            push_tier(query, engine, source, keyword);
            query.push(" = ").push_bind(i64::from(tier));
        }

        let filter = self.filter;
        if !filter.classification_prefix.is_empty() {
            // Classification codes are digits, and ':' follows '9': the range holds exactly the
            // codes that start with the prefix and lets the (classification, code) index serve
            // it, which LIKE (case-insensitive on SQLite, collation-bound on PostgreSQL) does not.
            let prefix = &filter.classification_prefix;
            query
                .push(format!(" AND {a}.classification >= "))
                .push_bind(prefix.clone());
            query
                .push(format!(" AND {a}.classification < "))
                .push_bind(format!("{prefix}:"));
            query.push(format!(" AND {a}.classification LIKE "));
            query
                .push_bind(format!("{}%", escape_like(prefix)))
                .push(" ESCAPE '\\'");
        }
        if !filter.provider_code.is_empty() {
            query
                .push(format!(" AND {a}.provider_code = "))
                .push_bind(filter.provider_code.clone());
        }
        let equal = [
            ("share_type", filter.share_type.map(|v| v.as_str())),
            ("open_type", filter.open_type.map(|v| v.as_str())),
            ("update_cycle", filter.update_cycle.map(|v| v.as_str())),
            ("format", filter.format.map(|v| v.as_str())),
            ("state", filter.state.map(|v| v.as_str())),
        ];
        for (column, value) in equal {
            if let Some(value) = value {
                query.push(format!(" AND {a}.{column} = ")).push_bind(value.to_string());
            }
        }

        if let Some(after) = self.after {
            // After the key (origin, code) within the tier, or in any later tier.
            let push_key_after = |query: &mut QueryBuilder<DB>| match source {
                Source::Own => {
                    query.push("e.resource_code > ").push_bind(after.resource_code.clone());
                }
                Source::Aggregated => {
                    query.push("(f.origin_hub > ").push_bind(after.origin_hub.clone());
                    query.push(" OR (f.origin_hub = ").push_bind(after.origin_hub.clone());
                    query
                        .push(" AND f.resource_code > ")
                        .push_bind(after.resource_code.clone());
                    query.push("))");
                }
            };
            match step {
                Step::All => {
                    query.push(" AND ");
                    push_key_after(query);
                }
                // A later tier than the position's starts at its beginning (steps() leaves out
                // the earlier ones).
                Step::Tier(tier) if tier > after.tier => {}
                Step::Tier(_) | Step::NameCandidates => {
                    query.push(" AND ");
                    push_key_after(query);
                }
                Step::Candidates => {
                    let tier = i64::from(after.tier);
                    query.push(" AND (");
                    push_tier(query, engine, source, keyword);
                    query.push(" > ").push_bind(tier).push(" OR (");
                    push_tier(query, engine, source, keyword);
                    query.push(" = ").push_bind(tier).push(" AND ");
                    push_key_after(query);
                    query.push("))");
                }
            }
        }

        query.push(" ORDER BY ");
        if step == Step::Candidates {
            push_tier(query, engine, source, keyword);
            query.push(", ");
        }
        match source {
            Source::Own => query.push("e.resource_code"),
            Source::Aggregated => query.push("f.origin_hub, f.resource_code"),
        };
        query.push(" LIMIT ").push_bind(i64::from(limit));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terms_are_hex_words_as_sqlite_hex_writes_them() {
        assert_eq!(hex_term("企"), "E4BC81");
        assert_eq!(hex_term("a\""), "6122");
        assert_eq!(indexed_terms("ab"), "61 6162 62");
    }

    #[test]
    fn fts_queries_hold_only_quoted_hex_words() {
        let terms = search::keyword_terms("\" OR * NEAR(");
        let q = fts_query(&terms);
        assert!(
            q.split(" AND ").all(|w| w.len() > 2
                && w.starts_with('"')
                && w.ends_with('"')
                && w[1..w.len() - 1].bytes().all(|b| b.is_ascii_hexdigit())),
            "{q}"
        );
    }

    #[test]
    fn like_wildcards_match_themselves() {
        assert_eq!(escape_like("10_%\\"), "10\\_\\%\\\\");
        assert_eq!(escape_like("102"), "102");
    }
}
