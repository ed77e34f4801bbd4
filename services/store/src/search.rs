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

/// Pushes the rest of a search after `SELECT … FROM` its source: the conditions, the order and
/// the limit.
#[allow(clippy::too_many_arguments)]
pub(crate) fn push_search<DB: Database>(
    query: &mut QueryBuilder<DB>,
    engine: Engine,
    source: Source,
    visibility: &EntryVisibility,
    filter: &EntryFilter,
    after: Option<&SearchPosition>,
    limit: u32,
) where
    String: sqlx::Encode<'static, DB> + sqlx::Type<DB>,
    i64: sqlx::Encode<'static, DB> + sqlx::Type<DB>,
{
    let a = source.alias();
    match source {
        Source::Own => query.push(" WHERE 1 = 1"),
        Source::Aggregated => query.push(" WHERE f.origin_hub <> ''"),
    };
    match (source, visibility) {
        (_, EntryVisibility::All) => {}
        (Source::Own, EntryVisibility::PublishedOrOwnedBy(code)) => {
            query
                .push(" AND (e.state = ")
                .push_bind(EntryState::Published.as_str().to_string());
            query.push(" OR e.provider_code = ").push_bind(code.clone()).push(")");
        }
        // Nobody here owns an aggregated entry: others see it while it is published.
        (Source::Aggregated, EntryVisibility::PublishedOrOwnedBy(_)) => {
            query
                .push(" AND f.state = ")
                .push_bind(EntryState::Published.as_str().to_string());
        }
    }

    let keyword = search::matching_keyword(&filter.keyword);
    if !keyword.is_empty() {
        let terms = search::keyword_terms(&keyword);
        match (engine, source) {
            (Engine::Sqlite, Source::Own) => {
                query.push(
                    " AND e.resource_code IN (SELECT m.resource_code FROM catalog_search_docs m \
                     WHERE m.origin_hub = '' AND m.id IN (SELECT rowid FROM catalog_search_terms \
                     WHERE catalog_search_terms MATCH ",
                );
                query.push_bind(fts_query(&terms)).push("))");
            }
            (Engine::Sqlite, Source::Aggregated) => {
                query.push(
                    " AND (f.origin_hub, f.resource_code) IN (SELECT m.origin_hub, m.resource_code \
                     FROM catalog_search_docs m WHERE m.origin_hub <> '' AND m.id IN (SELECT rowid \
                     FROM catalog_search_terms WHERE catalog_search_terms MATCH ",
                );
                query.push_bind(fts_query(&terms)).push("))");
            }
            (Engine::Postgres, _) => {
                query.push(format!(" AND xinqiao_search_terms({a}.search_text) @> ARRAY["));
                let mut list = query.separated(", ");
                for term in terms {
                    list.push_bind(term);
                }
                query.push("]::text[]");
            }
        }
        // The exact test: the index's candidates hold the keyword's terms, not always the keyword.
        query.push(format!(" AND {}({a}.search_text, ", engine.position()));
        query.push_bind(keyword.clone()).push(") > 0");
    }

    if !filter.classification_prefix.is_empty() {
        query.push(format!(" AND {a}.classification LIKE "));
        query
            .push_bind(format!("{}%", escape_like(&filter.classification_prefix)))
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

    if let Some(after) = after {
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
        if keyword.is_empty() {
            query.push(" AND ");
            push_key_after(query);
        } else {
            let tier = i64::from(after.tier);
            query.push(" AND (");
            push_tier(query, engine, source, &keyword);
            query.push(" > ").push_bind(tier).push(" OR (");
            push_tier(query, engine, source, &keyword);
            query.push(" = ").push_bind(tier).push(" AND ");
            push_key_after(query);
            query.push("))");
        }
    }

    query.push(" ORDER BY ");
    if !keyword.is_empty() {
        push_tier(query, engine, source, &keyword);
        query.push(", ");
    }
    match source {
        Source::Own => query.push("e.resource_code"),
        Source::Aggregated => query.push("f.origin_hub, f.resource_code"),
    };
    query.push(" LIMIT ").push_bind(i64::from(limit));
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
