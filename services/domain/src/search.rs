//! Catalogue search (目录检索) as an index: what a keyword must find, the n-grams an index keeps
//! of each entry, and the relevance order of the results.
//!
//! A keyword matches an entry when it is a literal substring of the entry's search text (name,
//! summary and data-item names, lower-cased, one per line; [`CatalogEntry`]'s content builds it).
//! Chinese has no spaces between words and typical queries are one or two characters (企业,
//! 社保), so no word tokenizer serves it, and a trigram index cannot answer a keyword shorter than
//! three characters. Every 1- and 2-character substring of the text is therefore an index term:
//! a keyword of one character is a term itself, and a longer keyword can only be a substring of a
//! text that holds each of its 2-character substrings. The index thus gives a superset of the
//! matches, which the store narrows with an exact substring test, so the results are exactly those
//! of a full scan, for any keyword, in any script, with any punctuation.
//!

use std::collections::HashSet;

use crate::catalogue::CatalogEntry;

/// The relevance tier of an entry whose name holds the keyword: shown first.
pub const NAME_TIER: u8 = 0;
/// The tier of an entry that holds the keyword elsewhere (summary or a data-item name).
pub const OTHER_TIER: u8 = 1;

/// At most this many terms are looked up for one keyword. Any subset of the keyword's bigrams
/// still finds every match (the exact test removes the rest), and a dozen 2-character terms
/// together are already rarer than any single one; a 100-character keyword need not look up 99.
pub const MAX_KEYWORD_TERMS: usize = 12;

/// The keyword as it is compared with the stored search text, which is lower-cased when stored.
pub fn matching_keyword(keyword: &str) -> String {
    keyword.to_lowercase()
}

/// The index terms of a search text: each distinct substring of one or two characters, in the
/// order they first occur. Spaces, line breaks and punctuation are characters like any other, so
/// a keyword such as "a%b" or "社保 卡" is served too.
pub fn text_terms(search_text: &str) -> Vec<String> {
    let chars: Vec<char> = search_text.chars().collect();
    let mut seen = HashSet::new();
    let mut terms = Vec::new();
    for (i, &c) in chars.iter().enumerate() {
        let mut push = |term: String| {
            if seen.insert(term.clone()) {
                terms.push(term);
            }
        };
        push(c.to_string());
        if let Some(&next) = chars.get(i + 1) {
            push([c, next].iter().collect());
        }
    }
    terms
}

/// The terms a text must hold to contain `keyword` (as [`matching_keyword`] gives it): the
/// keyword itself when it is one character, otherwise its distinct 2-character substrings (at
/// most [`MAX_KEYWORD_TERMS`]). Empty for the empty keyword, which matches everything.
pub fn keyword_terms(keyword: &str) -> Vec<String> {
    let chars: Vec<char> = keyword.chars().collect();
    if chars.len() == 1 {
        return vec![keyword.to_string()];
    }
    let mut seen = HashSet::new();
    chars
        .windows(2)
        .map(|pair| pair.iter().collect::<String>())
        .filter(|term| seen.insert(term.clone()))
        .take(MAX_KEYWORD_TERMS)
        .collect()
}

/// The relevance tier of a search text for a non-empty keyword, or `None` when it does not
/// contain it: [`NAME_TIER`] when the keyword's first occurrence starts before the first line
/// break (the name is one line and comes first), [`OTHER_TIER`] otherwise. The stores compute
/// the same in SQL (first position of the keyword before the first line break), so that results
/// are ordered and paged by (tier, resource code) and the hub can name the tier of the last
/// result in a page token.
pub fn relevance_tier(search_text: &str, keyword: &str) -> Option<u8> {
    let at = search_text.find(keyword)?;
    let name_end = search_text.find('\n').unwrap_or(search_text.len());
    Some(if at < name_end { NAME_TIER } else { OTHER_TIER })
}

/// Where a page of search results continues: after the entry at this position in the order
/// (tier, origin hub, resource code). Without a keyword every entry is in [`NAME_TIER`] and the
/// order is that of codes. This hub's own entries have the empty origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchPosition {
    pub tier: u8,
    pub origin_hub: String,
    pub resource_code: String,
}

impl SearchPosition {
    /// The position of one of this hub's entries, by its code alone (a listing without keyword).
    pub fn of_code(resource_code: &str) -> Self {
        Self {
            tier: NAME_TIER,
            origin_hub: String::new(),
            resource_code: resource_code.to_string(),
        }
    }

    /// The position of `entry` (from `origin_hub`, '' for this hub's own) among the results for
    /// `keyword` (as [`matching_keyword`] gives it).
    pub fn of_entry(origin_hub: &str, entry: &CatalogEntry, keyword: &str) -> Self {
        let tier = if keyword.is_empty() {
            NAME_TIER
        } else {
            relevance_tier(&entry.content.search_text().to_lowercase(), keyword).unwrap_or(OTHER_TIER)
        };
        Self {
            tier,
            origin_hub: origin_hub.to_string(),
            resource_code: entry.resource_code.clone(),
        }
    }

    /// The position as text, for a page token: "tier origin code" (neither holds a space).
    pub fn key(&self) -> String {
        format!("{} {} {}", self.tier, self.origin_hub, self.resource_code)
    }

    /// A position from [`SearchPosition::key`]; `None` for anything else (a forged token).
    pub fn parse_key(key: &str) -> Option<Self> {
        let mut parts = key.split(' ');
        let tier = match parts.next()? {
            "0" => NAME_TIER,
            "1" => OTHER_TIER,
            _ => return None,
        };
        let origin_hub = parts.next()?;
        let resource_code = parts.next()?;
        let fair = |s: &str| !s.chars().any(char::is_control);
        if parts.next().is_some() || resource_code.is_empty() || !fair(origin_hub) || !fair(resource_code) {
            return None;
        }
        Some(Self {
            tier,
            origin_hub: origin_hub.to_string(),
            resource_code: resource_code.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference the index must agree with: a plain substring test.
    fn scan(text: &str, keyword: &str) -> bool {
        text.contains(keyword)
    }

    fn indexed(text: &str, keyword: &str) -> bool {
        let terms: HashSet<String> = text_terms(text).into_iter().collect();
        keyword_terms(keyword).iter().all(|t| terms.contains(t))
    }

    #[test]
    fn terms_are_the_unigrams_and_bigrams_once_each() {
        assert_eq!(text_terms("企业企业"), ["企", "企业", "业", "业企"]);
        assert_eq!(text_terms("a b"), ["a", "a ", " ", " b", "b"]);
        assert!(text_terms("").is_empty());
    }

    #[test]
    fn keyword_terms_for_one_two_and_more_characters() {
        assert_eq!(keyword_terms("企"), ["企"]);
        assert_eq!(keyword_terms("社保"), ["社保"]);
        assert_eq!(keyword_terms("社保卡"), ["社保", "保卡"]);
        assert_eq!(keyword_terms("aaaa"), ["aa"]);
        assert!(keyword_terms("").is_empty());
        let long: String = "一二三四五六七八九十".repeat(10);
        assert_eq!(keyword_terms(&long).len(), 10, "distinct bigrams only");
        let longer: String = ('一'..='龥').take(200).collect();
        assert_eq!(keyword_terms(&longer).len(), MAX_KEYWORD_TERMS);
    }

    #[test]
    fn the_index_never_misses_what_a_scan_finds() {
        let texts = [
            "企业信用信息\n全市企业的登记、变更\n统一社会信用代码\n企业名称",
            "社会保险参保\n社保 卡的发放\n姓名",
            "population register\n100% of residents, by district_code\nname",
            "引号\"与'单引号\n*NEAR OR AND\nx",
        ];
        let keywords = [
            "企",
            "企业",
            "信用代码",
            "社保",
            "社保 卡",
            "保 ",
            "100%",
            "_code",
            "%",
            "\"",
            "'",
            "near or",
            "*",
            "x",
            "业信",
            "不存在",
            "register\n100",
            "pop",
        ];
        for text in texts {
            for keyword in keywords {
                if scan(text, keyword) {
                    assert!(indexed(text, keyword), "{keyword:?} in {text:?}");
                }
            }
        }
        // And the index narrows: a text without one of the bigrams is not a candidate.
        assert!(!indexed(texts[0], "社保"));
    }

    #[test]
    fn tiers_put_the_name_first() {
        let text = "企业登记\n社保缴纳的企业\n参保人";
        assert_eq!(relevance_tier(text, "企业"), Some(NAME_TIER));
        assert_eq!(relevance_tier(text, "社保"), Some(OTHER_TIER));
        assert_eq!(relevance_tier(text, "参保人"), Some(OTHER_TIER));
        assert_eq!(relevance_tier(text, "医保"), None);
        // The tier is where the keyword starts (a keyword holds no line break at the hub's edge;
        // the stores' SQL says the same for one that does).
        assert_eq!(relevance_tier(text, "登记\n社保"), Some(NAME_TIER));
        assert_eq!(relevance_tier("one line", "line"), Some(NAME_TIER));
    }

    #[test]
    fn matching_is_case_insensitive_through_lower_case() {
        assert_eq!(matching_keyword("GDP Ⅷ İ"), "gdp ⅷ i\u{307}");
    }

    #[test]
    fn positions_round_trip_and_forgeries_are_refused() {
        let own = SearchPosition::of_code("102/000003");
        assert_eq!(SearchPosition::parse_key(&own.key()), Some(own));
        let aggregated = SearchPosition {
            tier: OTHER_TIER,
            origin_hub: "330100".into(),
            resource_code: "102/000003".into(),
        };
        assert_eq!(SearchPosition::parse_key(&aggregated.key()), Some(aggregated));
        for forged in [
            "",
            "0",
            "2  102/1",
            "0  ",
            "x  102/1",
            "0  102/1 extra",
            "0 \u{0} 102/1",
            "0  102/\u{0}",
        ] {
            assert_eq!(SearchPosition::parse_key(forged), None, "{forged:?}");
        }
    }
}
