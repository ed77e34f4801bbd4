//! The catalogue search (目录检索) in memory, in front of the store (issue #16): every keyword
//! search of the store reads the database at least once, and on a small machine one read per call
//! already costs more than the whole call may. So the hub keeps, for every current entry the
//! store's search can return (its own, and those aggregated from child hubs), a compact record
//! and per-term posting lists already in result order, and answers a keyword's page from them.
//!
//! The rules are the store's (`xinqiao_domain::search`): the terms are every 1- and 2-character
//! substring of the lower-cased search text; a keyword matches where it is a substring; results
//! come by relevance tier (the name first), then by origin hub and code. A term's postings are
//! kept in two lists, by the term's own tier, each in (origin, code) order, so a keyword of one or
//! two characters (a term itself) reads its page off the front of one list; a longer keyword walks
//! its rarest bigram's lists and tests itself on each entry.
//!
//! Correctness never rests on the index: a search it cannot serve well (no keyword, a line break
//! in it, or a walk that found too few after [`MAX_SCAN`] postings) goes to the store; the entries
//! of a page come from the entry cache or one store read, and if any of them is not exactly what
//! the index held (changed meanwhile), the store answers that call. So a stale index costs a
//! database read, never a wrong or forbidden result.
//!
//! Freshness: the hub that changes one of its entries tells the index at once; other hub nodes'
//! changes and the entries aggregated from children are read about once a second (entries changed
//! since a time, the feed after a position), as the entry cache sees them (see `cache`). Until
//! the first build from the store is done, every search goes to the store.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering as AtomicOrdering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio::sync::watch;
use xinqiao_domain::Result;
use xinqiao_domain::catalogue::{CatalogEntry, EntryFilter, OpenType, ResourceFormat, ShareType, UpdateCycle};
use xinqiao_domain::federation::FederatedEntry;
use xinqiao_domain::lifecycle::EntryState;
use xinqiao_domain::policy::EntryVisibility;
use xinqiao_domain::search::{self, NAME_TIER, OTHER_TIER, SearchPosition};
use xinqiao_store::Store;

use crate::directory::{CachedEntry, EntryCache};

/// A walk that has read this many postings without filling its page gives the search to the
/// store (a keyword common in the catalogue but rare under the filters).
pub const MAX_SCAN: usize = 20_000;
/// How often changes made elsewhere are read.
const POLL_EVERY: Duration = Duration::from_secs(1);
/// Entries changed this long before the last read are read again: a change committed late (its
/// time is taken before its transaction commits) is still seen.
pub const OVERLAP: Duration = Duration::from_secs(3);
/// How often the whole index is read from the store again. Following reads the changes by their
/// time, with an [`OVERLAP`]; a change whose time is further behind (a node's clock that is
/// late, a transaction that took longer to commit) would otherwise stay unseen until the entry
/// changes again.
const REREAD_EVERY: Duration = Duration::from_secs(600);
/// The page of the store reads that build and follow the index.
const READ_PAGE: u32 = 2_000;
/// The posting lists are rebuilt once the changes kept beside them exceed this many (or a
/// quarter of the catalogue), or once changes have stopped for [`QUIET_FOR`].
const OVERLAY_MAX: usize = 256;
const QUIET_FOR: Duration = Duration::from_secs(1);

/// An index term: one character, or two, packed into a number (no allocation per term).
type Term = u64;

/// Not a character: the second half of a one-character term.
const NO_CHAR: u64 = 0xFFFF_FFFF;

fn unigram(c: char) -> Term {
    (u64::from(u32::from(c)) << 32) | NO_CHAR
}

fn bigram(a: char, b: char) -> Term {
    (u64::from(u32::from(a)) << 32) | u64::from(u32::from(b))
}

/// The terms of a lower-cased search text, as `search::text_terms` gives them, each with its
/// tier as `search::relevance_tier` gives it for the term: where the term first starts.
fn text_terms(text: &str) -> Vec<(Term, u8)> {
    let chars: Vec<char> = text.chars().collect();
    let name_end = chars.iter().position(|&c| c == '\n').unwrap_or(chars.len());
    let mut seen = HashSet::with_capacity(chars.len() * 2);
    let mut terms = Vec::with_capacity(chars.len() * 2);
    for (i, &c) in chars.iter().enumerate() {
        let tier = if i < name_end { NAME_TIER } else { OTHER_TIER };
        if seen.insert(unigram(c)) {
            terms.push((unigram(c), tier));
        }
        if let Some(&next) = chars.get(i + 1) {
            let term = bigram(c, next);
            if seen.insert(term) {
                terms.push((term, tier));
            }
        }
    }
    terms
}

/// The terms a text must hold to contain `keyword` (as `search::keyword_terms`, without its cap:
/// the rarest of all is walked), and whether the keyword is itself its one term.
fn keyword_terms(keyword: &str) -> (Vec<Term>, bool) {
    let chars: Vec<char> = keyword.chars().collect();
    match chars.as_slice() {
        [] => (Vec::new(), false),
        [c] => (vec![unigram(*c)], true),
        [a, b] => (vec![bigram(*a, *b)], true),
        _ => {
            let mut seen = HashSet::new();
            let terms = chars
                .windows(2)
                .map(|pair| bigram(pair[0], pair[1]))
                .filter(|t| seen.insert(*t))
                .collect();
            (terms, false)
        }
    }
}

/// What the index keeps of an entry: its key, its search text, and what the filters and the
/// visibility test.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    origin: Box<str>,
    code: Box<str>,
    text: Box<str>,
    provider: Box<str>,
    classification: Box<str>,
    state: EntryState,
    share: ShareType,
    open: OpenType,
    cycle: UpdateCycle,
    format: ResourceFormat,
    version: u64,
}

impl Record {
    /// The record of `entry`, held by `origin` ('' for this hub's own).
    pub fn of(origin: &str, entry: &CatalogEntry) -> Self {
        let content = &entry.content;
        Record {
            origin: origin.into(),
            code: entry.resource_code.as_str().into(),
            text: content.search_text().to_lowercase().into(),
            provider: entry.provider_code.as_str().into(),
            classification: content.classification.as_str().into(),
            state: entry.state,
            share: content.share.share_type,
            open: content.open.open_type,
            cycle: content.update_cycle,
            format: content.format,
            version: entry.version,
        }
    }

    fn key(&self) -> (&str, &str) {
        (&self.origin, &self.code)
    }

    /// Whether the store's search lets this entry through the visibility and the filters (the
    /// keyword aside), as `xinqiao_store`'s search SQL decides it.
    fn admits(&self, visibility: &EntryVisibility, filter: &EntryFilter) -> bool {
        let visible = match visibility {
            EntryVisibility::All => true,
            // Nobody here owns an aggregated entry: others see it while it is published.
            EntryVisibility::PublishedOrOwnedBy(code) => {
                self.state == EntryState::Published || (self.origin.is_empty() && *self.provider == **code)
            }
        };
        visible
            && self.classification.starts_with(filter.classification_prefix.as_str())
            && (filter.provider_code.is_empty() || *self.provider == *filter.provider_code)
            && filter.share_type.is_none_or(|v| v == self.share)
            && filter.open_type.is_none_or(|v| v == self.open)
            && filter.update_cycle.is_none_or(|v| v == self.cycle)
            && filter.format.is_none_or(|v| v == self.format)
            && filter.state.is_none_or(|v| v == self.state)
    }
}

/// Posting lists built at once over records in key order: a record's id is its rank.
#[derive(Default)]
struct Base {
    records: Vec<Arc<Record>>,
    /// Per term, the ids holding it whose first occurrence is in the name, then the others.
    postings: HashMap<Term, [Vec<u32>; 2]>,
}

impl Base {
    fn build(mut records: Vec<Arc<Record>>) -> Self {
        records.sort_by(|a, b| a.key().cmp(&b.key()));
        records.dedup_by(|a, b| a.key() == b.key());
        let mut postings: HashMap<Term, [Vec<u32>; 2]> = HashMap::new();
        for (id, record) in records.iter().enumerate() {
            let id = u32::try_from(id).unwrap_or(u32::MAX);
            for (term, tier) in text_terms(&record.text) {
                postings.entry(term).or_default()[usize::from(tier)].push(id);
            }
        }
        for lists in postings.values_mut() {
            for list in lists.iter_mut() {
                list.shrink_to_fit();
            }
        }
        Base { records, postings }
    }

    fn id_of(&self, key: (&str, &str)) -> Option<usize> {
        self.records.binary_search_by(|r| r.key().cmp(&key)).ok()
    }

    /// Bytes held by the posting lists and the records (an estimate, for the report).
    fn bytes(&self) -> usize {
        let lists: usize = self
            .postings
            .values()
            .map(|[a, b]| 16 + 2 * 24 + 4 * (a.capacity() + b.capacity()))
            .sum();
        let records: usize = self
            .records
            .iter()
            .map(|r| {
                std::mem::size_of::<Record>()
                    + 16
                    + r.origin.len()
                    + r.code.len()
                    + r.text.len()
                    + r.provider.len()
                    + r.classification.len()
            })
            .sum();
        lists + records + 8 * self.records.len()
    }
}

/// One source's index (own entries, or aggregated ones): the posting lists as last built, and
/// the records changed since, kept beside them until the next build.
#[derive(Default)]
pub struct Index {
    base: Arc<Base>,
    /// Base ids whose record has changed since (the overlay holds the current one).
    dirty: Vec<bool>,
    /// Records changed since the build, by key, with the change's number.
    overlay: BTreeMap<Key, (Arc<Record>, u64)>,
    changes: u64,
    last_change: Option<Instant>,
}

/// An entry's key: (origin hub, resource code).
type Key = (Box<str>, Box<str>);

/// A search's answer from the index: the records of the page with their tier, in order.
pub type Hits = Vec<(u8, Arc<Record>)>;

impl Index {
    /// An index of these records.
    pub fn build(records: Vec<Arc<Record>>) -> Self {
        let base = Base::build(records);
        Index {
            dirty: vec![false; base.records.len()],
            base: Arc::new(base),
            ..Index::default()
        }
    }

    /// How many entries it holds.
    pub fn len(&self) -> usize {
        self.base.records.len()
            + self
                .overlay
                .keys()
                .filter(|k| self.base.id_of((&k.0, &k.1)).is_none())
                .count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many records changed since the last build, each tested one by one by every search
    /// until the next build folds them into the posting lists.
    pub fn unbuilt(&self) -> usize {
        self.overlay.len()
    }

    /// Bytes held (an estimate).
    pub fn bytes(&self) -> usize {
        self.base.bytes() + self.dirty.len() + self.overlay.len() * 256
    }

    fn current(&self, key: (&str, &str)) -> Option<&Arc<Record>> {
        if let Some((record, _)) = self.overlay.get(&(Box::from(key.0), Box::from(key.1))) {
            return Some(record);
        }
        self.base.id_of(key).map(|id| &self.base.records[id])
    }

    /// Takes a record as the entry's current one, unless the index already holds it or a later
    /// version (a read that raced a change made here).
    pub fn put(&mut self, record: Record) {
        if let Some(known) = self.current(record.key())
            && (**known == record || known.version > record.version)
        {
            return;
        }
        if let Some(id) = self.base.id_of(record.key()) {
            self.dirty[id] = true;
        }
        self.changes += 1;
        self.last_change = Some(Instant::now());
        let key = (record.origin.clone(), record.code.clone());
        self.overlay.insert(key, (Arc::new(record), self.changes));
    }

    /// Whether the changes kept beside the posting lists are worth a rebuild now.
    fn wants_rebuild(&self) -> bool {
        let many = self.overlay.len() > OVERLAY_MAX.max(self.base.records.len() / 4);
        let quiet = self.last_change.is_some_and(|at| at.elapsed() >= QUIET_FOR);
        !self.overlay.is_empty() && (many || quiet)
    }

    /// Every current record, and the number of the last change they include.
    fn snapshot(&self) -> (Vec<Arc<Record>>, u64) {
        let mut records: Vec<Arc<Record>> = self
            .base
            .records
            .iter()
            .zip(&self.dirty)
            .filter(|(_, dirty)| !**dirty)
            .map(|(r, _)| r.clone())
            .collect();
        records.extend(self.overlay.values().map(|(r, _)| r.clone()));
        (records, self.changes)
    }

    /// Takes posting lists built from a snapshot up to change `upto`; the changes made since stay
    /// beside them.
    fn install(&mut self, base: Base, upto: u64) {
        self.overlay.retain(|_, (_, change)| *change > upto);
        self.dirty = vec![false; base.records.len()];
        for (origin, code) in self.overlay.keys() {
            if let Some(id) = base.id_of((origin, code)) {
                self.dirty[id] = true;
            }
        }
        self.base = Arc::new(base);
    }

    /// The page of results for `filter` (its keyword non-empty) after `after`, at most `limit`,
    /// in the store's order; `None` when the store should answer (see the module's comment).
    /// `own` says whether these are this hub's own entries, whose positions ignore the origin.
    pub fn search(
        &self,
        own: bool,
        visibility: &EntryVisibility,
        filter: &EntryFilter,
        after: Option<&SearchPosition>,
        limit: usize,
    ) -> Option<Hits> {
        let keyword = search::matching_keyword(&filter.keyword);
        if keyword.is_empty() || keyword.chars().any(char::is_control) {
            return None;
        }
        if limit == 0 {
            return Some(Vec::new());
        }
        let after = after.map(|a| {
            let origin: &str = if own { "" } else { &a.origin_hub };
            (a.tier, origin, a.resource_code.as_str())
        });
        let (terms, exact) = keyword_terms(&keyword);
        let empty: [Vec<u32>; 2] = Default::default();
        let lists = terms
            .iter()
            .map(|t| self.base.postings.get(t).unwrap_or(&empty))
            .min_by_key(|[a, b]| a.len() + b.len())
            .unwrap_or(&empty);
        let records = &self.base.records;
        let starts_after = |list: &[u32], tier: u8| -> usize {
            match after {
                Some((at, origin, code)) if at == tier => {
                    list.partition_point(|&id| records[id as usize].key() <= (origin, code))
                }
                _ => 0,
            }
        };

        let mut found: Hits = Vec::new();
        let mut scanned = 0usize;
        'tiers: for tier in [NAME_TIER, OTHER_TIER] {
            if after.is_some_and(|(at, _, _)| at > tier) {
                continue;
            }
            let name = &lists[0][starts_after(&lists[0], tier)..];
            let other = &lists[1][starts_after(&lists[1], tier)..];
            // The name tier's entries hold the keyword's terms in the name; the other tier's may
            // hold them anywhere, unless the keyword is the term itself.
            let walk: Box<dyn Iterator<Item = u32>> = match (tier, exact) {
                (NAME_TIER, _) => Box::new(name.iter().copied()),
                (_, true) => Box::new(other.iter().copied()),
                (_, false) => Box::new(Merged::new(name, other)),
            };
            for id in walk {
                scanned += 1;
                if scanned > MAX_SCAN {
                    return None;
                }
                if self.dirty[id as usize] {
                    continue;
                }
                let record = &records[id as usize];
                if !record.admits(visibility, filter) {
                    continue;
                }
                if !exact && search::relevance_tier(&record.text, &keyword) != Some(tier) {
                    continue;
                }
                found.push((tier, record.clone()));
                if found.len() >= limit {
                    break 'tiers;
                }
            }
        }

        // The records changed since the build, tested one by one (few: see `wants_rebuild`).
        let mut changed: Hits = self
            .overlay
            .values()
            .filter(|(r, _)| r.admits(visibility, filter))
            .filter_map(|(r, _)| Some((search::relevance_tier(&r.text, &keyword)?, r.clone())))
            .filter(|(tier, r)| after.is_none_or(|(at, origin, code)| (*tier, r.key()) > (at, (origin, code))))
            .collect();
        if changed.is_empty() {
            return Some(found);
        }
        changed.sort_by(order);
        let mut merged: Hits = found.into_iter().chain(changed).collect();
        merged.sort_by(order);
        merged.truncate(limit);
        Some(merged)
    }
}

fn order(a: &(u8, Arc<Record>), b: &(u8, Arc<Record>)) -> Ordering {
    (a.0, a.1.key()).cmp(&(b.0, b.1.key()))
}

/// Two ascending id lists as one (an id is in at most one of them).
struct Merged<'a> {
    a: &'a [u32],
    b: &'a [u32],
}

impl<'a> Merged<'a> {
    fn new(a: &'a [u32], b: &'a [u32]) -> Self {
        Merged { a, b }
    }
}

impl Iterator for Merged<'_> {
    type Item = u32;

    fn next(&mut self) -> Option<u32> {
        match (self.a.first(), self.b.first()) {
            (Some(&x), Some(&y)) if x <= y => {
                self.a = &self.a[1..];
                Some(x)
            }
            (_, Some(&y)) => {
                self.b = &self.b[1..];
                Some(y)
            }
            (Some(&x), None) => {
                self.a = &self.a[1..];
                Some(x)
            }
            (None, None) => None,
        }
    }
}

/// The hub's catalogue search: this hub's entries and the aggregated ones, each from its index
/// when it can answer, from the store otherwise.
pub struct CatalogueSearch {
    store: Arc<dyn Store>,
    entries: Arc<EntryCache>,
    own: RwLock<Index>,
    aggregated: RwLock<Index>,
    ready: AtomicBool,
    /// Searches answered from the index (a part each: own, aggregated), for tests and reports.
    answered: AtomicU64,
}

fn read(index: &RwLock<Index>) -> std::sync::RwLockReadGuard<'_, Index> {
    // The index holds plain values; a panic elsewhere while holding it leaves it usable.
    index.read().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn write(index: &RwLock<Index>) -> std::sync::RwLockWriteGuard<'_, Index> {
    index.write().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl CatalogueSearch {
    /// A search that answers from the store until [`CatalogueSearch::start`] has built the index.
    pub fn new(store: Arc<dyn Store>, entries: Arc<EntryCache>) -> Self {
        CatalogueSearch {
            store,
            entries,
            own: RwLock::new(Index::default()),
            aggregated: RwLock::new(Index::default()),
            ready: AtomicBool::new(false),
            answered: AtomicU64::new(0),
        }
    }

    /// Whether searches are answered from the index.
    pub fn is_ready(&self) -> bool {
        self.ready.load(AtomicOrdering::Acquire)
    }

    /// How many searches (own and aggregated parts counted apart) the index has answered.
    pub fn answered_from_index(&self) -> u64 {
        self.answered.load(AtomicOrdering::Relaxed)
    }

    /// How many entries the index holds and its bytes (an estimate), own and aggregated together.
    pub fn size(&self) -> (usize, usize) {
        let (own, aggregated) = (read(&self.own), read(&self.aggregated));
        (own.len() + aggregated.len(), own.bytes() + aggregated.bytes())
    }

    /// Whether the index holds at least `entries` entries, every one of them in its posting lists
    /// (none waiting for a build): for a benchmark, which measures searches once the index has
    /// taken in a catalogue written behind its back.
    pub fn holds_built(&self, entries: usize) -> bool {
        let (own, aggregated) = (read(&self.own), read(&self.aggregated));
        self.is_ready() && own.len() + aggregated.len() >= entries && own.unbuilt() + aggregated.unbuilt() == 0
    }

    /// Tells the index of one of this hub's entries as it has just been saved here.
    pub fn saved(&self, entry: &CatalogEntry) {
        write(&self.own).put(Record::of("", entry));
    }

    /// This hub's own entries as `Store::search_entries` gives them, each with its encoded API
    /// message; shared with the entry cache when the index answers.
    pub async fn own_entries(
        &self,
        visibility: &EntryVisibility,
        filter: &EntryFilter,
        after: Option<&SearchPosition>,
        limit: u32,
    ) -> Result<Vec<Arc<CachedEntry>>> {
        let hits = if self.is_ready() {
            read(&self.own).search(true, visibility, filter, after, limit as usize)
        } else {
            None
        };
        if let Some(hits) = hits
            && let Some(entries) = self.own_page(&hits).await?
        {
            self.answered.fetch_add(1, AtomicOrdering::Relaxed);
            return Ok(entries);
        }
        let found = self.store.search_entries(visibility, filter, after, limit).await?;
        Ok(found.into_iter().map(|e| Arc::new(CachedEntry::new(e))).collect())
    }

    /// The entries of a page of hits, from the entry cache or one read; `None` when one of them is
    /// not what the index held (changed since).
    async fn own_page(&self, hits: &Hits) -> Result<Option<Vec<Arc<CachedEntry>>>> {
        let mut entries = self.entries.get_many_shared(hits.iter().map(|(_, r)| &*r.code));
        let missing: Vec<String> = hits
            .iter()
            .zip(&entries)
            .filter(|(_, e)| e.is_none())
            .map(|((_, r), _)| r.code.to_string())
            .collect();
        if !missing.is_empty() {
            let since = self.entries.mark();
            let mut fetched: HashMap<String, CatalogEntry> = self
                .store
                .get_entries(&missing)
                .await?
                .into_iter()
                .map(|e| (e.resource_code.clone(), e))
                .collect();
            for ((_, r), slot) in hits.iter().zip(entries.iter_mut()) {
                if slot.is_none()
                    && let Some(entry) = fetched.remove(&*r.code)
                {
                    let cached = CachedEntry::new(entry);
                    *slot = Some(self.entries.put(since, cached.entry.resource_code.clone(), cached));
                }
            }
        }
        let mut page = Vec::with_capacity(hits.len());
        for ((_, record), cached) in hits.iter().zip(entries) {
            let Some(cached) = cached else { return Ok(None) };
            if !agrees(record, "", &cached.entry) {
                return Ok(None);
            }
            page.push(cached);
        }
        Ok(Some(page))
    }

    /// Entries aggregated from child hubs as `Store::search_federated_entries` gives them.
    pub async fn aggregated_entries(
        &self,
        visibility: &EntryVisibility,
        filter: &EntryFilter,
        after: Option<&SearchPosition>,
        limit: u32,
    ) -> Result<Vec<FederatedEntry>> {
        let hits = if self.is_ready() {
            read(&self.aggregated).search(false, visibility, filter, after, limit as usize)
        } else {
            None
        };
        if let Some(hits) = hits {
            if hits.is_empty() {
                self.answered.fetch_add(1, AtomicOrdering::Relaxed);
                return Ok(Vec::new());
            }
            let keys: Vec<(String, String)> = hits
                .iter()
                .map(|(_, r)| (r.origin.to_string(), r.code.to_string()))
                .collect();
            let mut fetched: HashMap<(String, String), FederatedEntry> = self
                .store
                .get_federated_entries(&keys)
                .await?
                .into_iter()
                .map(|f| ((f.origin_hub.clone(), f.entry.resource_code.clone()), f))
                .collect();
            let mut page = Vec::with_capacity(hits.len());
            for ((_, record), key) in hits.iter().zip(&keys) {
                match fetched.remove(key) {
                    Some(f) if agrees(record, &f.origin_hub, &f.entry) => page.push(f),
                    _ => {
                        page.clear();
                        break;
                    }
                }
            }
            if page.len() == hits.len() {
                self.answered.fetch_add(1, AtomicOrdering::Relaxed);
                return Ok(page);
            }
        }
        self.store
            .search_federated_entries(visibility, filter, after, limit)
            .await
    }

    /// Builds the index from the store, then follows the changes made elsewhere until `stopping`.
    /// Searches go to the store until the build is done, or while it fails.
    pub fn start(self: &Arc<Self>, mut stopping: watch::Receiver<bool>) {
        let this = self.clone();
        tokio::spawn(async move {
            let mut follow = loop {
                match this.build().await {
                    Ok(follow) => break follow,
                    Err(e) => {
                        tracing::warn!(error = %e, "building the catalogue search index; searches read the store meanwhile");
                        tokio::select! {
                            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                            _ = stopping.changed() => return,
                        }
                    }
                }
            };
            this.ready.store(true, AtomicOrdering::Release);
            let mut read_whole = Instant::now();
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(POLL_EVERY) => {}
                    _ = stopping.changed() => return,
                }
                if *stopping.borrow() {
                    return;
                }
                if read_whole.elapsed() >= REREAD_EVERY {
                    read_whole = Instant::now();
                    match this.build().await {
                        Ok(again) => follow = again,
                        Err(e) => tracing::warn!(error = %e, "reading the catalogue again for the search index"),
                    }
                } else if let Err(e) = this.follow(&mut follow).await {
                    tracing::warn!(error = %e, "reading catalogue changes for the search index");
                }
                this.rebuild_if_due().await;
            }
        });
    }

    /// Reads every entry, own and aggregated, in pages; returns where following starts.
    async fn build(&self) -> Result<Following> {
        let since = crate::clock::now() - chrono::Duration::from_std(OVERLAP).unwrap_or_default();
        let (_, feed_head) = self.store.catalogue_changes(0, 0).await?;
        let all = EntryVisibility::All;
        let any = EntryFilter::default();
        let mut records = Vec::new();
        let mut after: Option<SearchPosition> = None;
        loop {
            let page = self.store.search_entries(&all, &any, after.as_ref(), READ_PAGE).await?;
            after = page.last().map(|e| SearchPosition::of_code(&e.resource_code));
            records.extend(page.iter().map(|e| Arc::new(Record::of("", e))));
            if page.len() < READ_PAGE as usize {
                break;
            }
        }
        let own = tokio::task::spawn_blocking(move || Index::build(records))
            .await
            .map_err(|e| xinqiao_domain::Error::Internal(format!("building the search index: {e}")))?;
        let mut records = Vec::new();
        let mut after: Option<SearchPosition> = None;
        loop {
            let page = self
                .store
                .search_federated_entries(&all, &any, after.as_ref(), READ_PAGE)
                .await?;
            after = page.last().map(|f| SearchPosition {
                tier: NAME_TIER,
                origin_hub: f.origin_hub.clone(),
                resource_code: f.entry.resource_code.clone(),
            });
            records.extend(page.iter().map(|f| Arc::new(Record::of(&f.origin_hub, &f.entry))));
            if page.len() < READ_PAGE as usize {
                break;
            }
        }
        let aggregated = Index::build(records);
        // Changes saved here during the build were put in the empty index: keep them on top.
        let mut own = own;
        let mut current = write(&self.own);
        for (record, _) in std::mem::take(&mut current.overlay).into_values() {
            own.put(Record::clone(&record));
        }
        *current = own;
        drop(current);
        *write(&self.aggregated) = aggregated;
        Ok(Following {
            since,
            feed_after: feed_head,
        })
    }

    /// Reads the changes since the last read: entries changed since a time (with an overlap),
    /// and the aggregated entries' feed after a position.
    async fn follow(&self, at: &mut Following) -> Result<()> {
        let started = crate::clock::now();
        let mut after: Option<(DateTime<Utc>, String)> = None;
        loop {
            let page = self
                .store
                .entries_changed_since(at.since, after.clone(), READ_PAGE)
                .await?;
            if let Some(last) = page.last() {
                after = Some((last.updated_at, last.resource_code.clone()));
            }
            {
                let mut own = write(&self.own);
                for entry in &page {
                    own.put(Record::of("", entry));
                }
            }
            if page.len() < READ_PAGE as usize {
                break;
            }
        }
        at.since = started - chrono::Duration::from_std(OVERLAP).unwrap_or_default();
        loop {
            let (changes, _) = self.store.catalogue_changes(at.feed_after, READ_PAGE).await?;
            if let Some(last) = changes.last() {
                at.feed_after = last.position;
            }
            {
                let mut aggregated = write(&self.aggregated);
                for change in changes.iter().filter(|c| !c.entry.origin_hub.is_empty()) {
                    aggregated.put(Record::of(&change.entry.origin_hub, &change.entry.entry));
                }
            }
            if changes.len() < READ_PAGE as usize {
                break;
            }
        }
        Ok(())
    }

    /// Rebuilds an index's posting lists off the async threads when its changes have piled up.
    async fn rebuild_if_due(&self) {
        for index in [&self.own, &self.aggregated] {
            let snapshot = {
                let index = read(index);
                index.wants_rebuild().then(|| index.snapshot())
            };
            let Some((records, upto)) = snapshot else { continue };
            if let Ok(base) = tokio::task::spawn_blocking(move || Base::build(records)).await {
                write(index).install(base, upto);
            }
        }
    }
}

/// Where following the store's changes continues.
struct Following {
    since: DateTime<Utc>,
    feed_after: u64,
}

/// Whether the entry read for a hit is the one the index held: otherwise the index was stale and
/// the store answers. An entry's content is fixed by its version (a change makes the next one),
/// all but an aggregated entry's state (a child's withdrawal by unlinking changes that alone), so
/// at the same origin, code, version and state it is the entry whose record this very search
/// tested the keyword, the tier, the filters and the visibility on. The provider, which the
/// visibility rests on, is compared as well. (Testing them all again on the record, and its
/// filter fields one by one, was about a tenth of the samples in a profile of B5's searches.)
fn agrees(held: &Record, origin: &str, entry: &CatalogEntry) -> bool {
    *held.origin == *origin
        && *held.code == *entry.resource_code
        && held.version == entry.version
        && held.state == entry.state
        && *held.provider == *entry.provider_code
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn packed_terms_are_the_domains_terms_with_their_tiers() {
        for text in [
            "企业信用信息\n全市企业的登记\n统一社会信用代码",
            "a b\nb a",
            "",
            "x",
            "企企企\n企",
        ] {
            let packed = text_terms(text);
            let domain = search::text_terms(text);
            assert_eq!(packed.len(), domain.len(), "{text:?}");
            for ((term, tier), expected) in packed.iter().zip(&domain) {
                let chars: Vec<char> = expected.chars().collect();
                let want = match chars.as_slice() {
                    [c] => unigram(*c),
                    [a, b] => bigram(*a, *b),
                    _ => unreachable!("terms are one or two characters"),
                };
                assert_eq!(*term, want);
                assert_eq!(
                    Some(*tier),
                    search::relevance_tier(text, expected),
                    "{expected:?} in {text:?}"
                );
            }
        }
    }

    #[test]
    fn keyword_terms_name_the_term_itself_up_to_two_characters() {
        assert_eq!(keyword_terms("企"), (vec![unigram('企')], true));
        assert_eq!(keyword_terms("社保"), (vec![bigram('社', '保')], true));
        assert_eq!(
            keyword_terms("社保卡"),
            (vec![bigram('社', '保'), bigram('保', '卡')], false)
        );
        assert_eq!(keyword_terms("aaaa"), (vec![bigram('a', 'a')], false));
        assert_eq!(keyword_terms(""), (vec![], false));
    }

    fn entry(
        code: &str,
        provider: &str,
        state: EntryState,
        text: (&str, &str, &[&str]),
        cycle: UpdateCycle,
    ) -> CatalogEntry {
        use xinqiao_domain::catalogue::*;
        let now = Utc::now();
        CatalogEntry {
            resource_code: code.into(),
            provider_code: provider.into(),
            provider_name: String::new(),
            content: EntryContent {
                name: text.0.into(),
                classification: code.split('/').next().unwrap_or("").into(),
                summary: text.1.into(),
                format: ResourceFormat::Database,
                items: text
                    .2
                    .iter()
                    .map(|n| DataItem {
                        name: (*n).into(),
                        data_type: "字符型".into(),
                        length: 8,
                        sensitive: false,
                        description: String::new(),
                    })
                    .collect(),
                share: ShareAttributes {
                    share_type: ShareType::Unconditional,
                    condition: String::new(),
                    channel: ShareChannel::Platform,
                    exchange_kind: ExchangeKind::Table,
                    legal_basis: String::new(),
                },
                open: OpenAttributes {
                    open_type: OpenType::NotOpen,
                    condition: String::new(),
                },
                update_cycle: cycle,
                related_codes: vec![],
                maintainer: String::new(),
            },
            state,
            version: 1,
            state_reason: String::new(),
            published_at: None,
            created_at: now,
            updated_at: now,
        }
    }

    /// The reference: every record tested, sorted by (tier, key), cut after the position.
    fn scan(
        records: &[Arc<Record>],
        own: bool,
        visibility: &EntryVisibility,
        filter: &EntryFilter,
        after: Option<&SearchPosition>,
        limit: usize,
    ) -> Vec<(u8, String, String)> {
        let keyword = search::matching_keyword(&filter.keyword);
        let mut all: Vec<(u8, String, String)> = records
            .iter()
            .filter(|r| r.admits(visibility, filter))
            .filter_map(|r| {
                Some((
                    search::relevance_tier(&r.text, &keyword)?,
                    r.origin.to_string(),
                    r.code.to_string(),
                ))
            })
            .collect();
        all.sort();
        all.retain(|(tier, origin, code)| {
            after.is_none_or(|a| {
                let origin_after = if own { "" } else { a.origin_hub.as_str() };
                (*tier, origin.as_str(), code.as_str()) > (a.tier, origin_after, a.resource_code.as_str())
            })
        });
        all.truncate(limit);
        all
    }

    const NAMES: &[&str] = &[
        "企业登记",
        "社保缴费",
        "企业年报",
        "户籍人口",
        "登记信息",
        "a%b_c",
        "信息企业",
    ];
    const SUMMARIES: &[&str] = &["全市企业的信息", "社保 卡", "人口登记", "", "企业社保"];
    const ITEMS: &[&str] = &["统一社会信用代码", "名称", "姓名", "企业名称", "登记日期"];
    const KEYWORDS: &[&str] = &[
        "企",
        "企业",
        "信息",
        "社保",
        "登记",
        "企业登记",
        "信用代码",
        "a",
        "%b",
        "保 卡",
        "海关",
        "名称",
        "业的",
        "息企",
    ];

    fn catalogue(seed: &[(usize, usize, usize, u8, u8)]) -> Vec<CatalogEntry> {
        let providers = ["A", "B", "C"];
        let states = [EntryState::Published, EntryState::Draft, EntryState::Withdrawn];
        seed.iter()
            .enumerate()
            .map(|(i, &(n, s, it, p, st))| {
                let items: Vec<&str> = (0..1 + it % 3).map(|k| ITEMS[(it + k) % ITEMS.len()]).collect();
                let mut e = entry(
                    &format!("{}/{:06}", 101 + i % 3, i),
                    providers[p as usize % 3],
                    states[st as usize % 3],
                    (NAMES[n % NAMES.len()], SUMMARIES[s % SUMMARIES.len()], &items),
                    if i % 2 == 0 {
                        UpdateCycle::Daily
                    } else {
                        UpdateCycle::Monthly
                    },
                );
                e.version = 1 + (i as u64 % 4);
                e
            })
            .collect()
    }

    proptest! {
        /// Whatever was built and changed since, a walk of pages through the index gives what a
        /// scan of every record gives, under every visibility and filter.
        #[test]
        fn the_index_pages_as_a_scan_does(
            seed in proptest::collection::vec((0usize..10, 0usize..10, 0usize..10, 0u8..3, 0u8..3), 0..60),
            changed in proptest::collection::vec((0usize..60, 0usize..10, 0u8..3), 0..10),
            own in any::<bool>(),
            keyword in 0usize..KEYWORDS.len(),
            visibility in 0u8..3,
            filter_kind in 0u8..5,
            page in 1usize..7,
        ) {
            let origin = if own { "" } else { "330110" };
            let entries = catalogue(&seed);
            let mut records: BTreeMap<(String, String), Arc<Record>> = entries
                .iter()
                .map(|e| ((origin.to_string(), e.resource_code.clone()), Arc::new(Record::of(origin, e))))
                .collect();
            let mut index = Index::build(records.values().cloned().collect());
            for (at, name, state) in changed {
                let Some(mut e) = entries.get(at).cloned() else { continue };
                e.content.name = NAMES[name % NAMES.len()].into();
                e.state = [EntryState::Published, EntryState::Draft, EntryState::Withdrawn][state as usize];
                e.version += 1;
                let record = Record::of(origin, &e);
                records.insert((origin.to_string(), e.resource_code.clone()), Arc::new(record.clone()));
                index.put(record);
            }
            let records: Vec<Arc<Record>> = records.into_values().collect();
            let visibility = match visibility {
                0 => EntryVisibility::All,
                1 => EntryVisibility::PublishedOrOwnedBy("A".into()),
                _ => EntryVisibility::PublishedOrOwnedBy(String::new()),
            };
            let mut filter = EntryFilter { keyword: KEYWORDS[keyword].into(), ..EntryFilter::default() };
            match filter_kind {
                1 => filter.provider_code = "B".into(),
                2 => filter.classification_prefix = "102".into(),
                3 => filter.update_cycle = Some(UpdateCycle::Monthly),
                4 => filter.state = Some(EntryState::Draft),
                _ => {}
            }
            let expected = scan(&records, own, &visibility, &filter, None, usize::MAX);
            let mut walked = Vec::new();
            let mut after: Option<SearchPosition> = None;
            loop {
                let hits = index.search(own, &visibility, &filter, after.as_ref(), page).expect("served");
                let got: Vec<(u8, String, String)> =
                    hits.iter().map(|(t, r)| (*t, r.origin.to_string(), r.code.to_string())).collect();
                prop_assert_eq!(&got, &scan(&records, own, &visibility, &filter, after.as_ref(), page));
                walked.extend(got.iter().cloned());
                match got.last() {
                    Some((tier, origin, code)) if got.len() == page => {
                        after = Some(SearchPosition { tier: *tier, origin_hub: origin.clone(), resource_code: code.clone() });
                    }
                    _ => break,
                }
            }
            prop_assert_eq!(walked, expected);
            // And after a rebuild, the same.
            let (snapshot, upto) = index.snapshot();
            index.install(Base::build(snapshot), upto);
            let hits = index.search(own, &visibility, &filter, None, usize::MAX).expect("served");
            let got: Vec<(u8, String, String)> =
                hits.iter().map(|(t, r)| (*t, r.origin.to_string(), r.code.to_string())).collect();
            prop_assert_eq!(got, scan(&records, own, &visibility, &filter, None, usize::MAX));
        }
    }

    #[test]
    fn what_the_index_cannot_serve_goes_to_the_store() {
        let index = Index::build(vec![]);
        let all = EntryVisibility::All;
        assert!(
            index.search(true, &all, &EntryFilter::default(), None, 20).is_none(),
            "no keyword"
        );
        let broken = EntryFilter {
            keyword: "企\n业".into(),
            ..EntryFilter::default()
        };
        assert!(index.search(true, &all, &broken, None, 20).is_none(), "a line break");
        let absent = EntryFilter {
            keyword: "海关".into(),
            ..EntryFilter::default()
        };
        assert_eq!(index.search(true, &all, &absent, None, 20).map(|h| h.len()), Some(0));
    }

    #[test]
    fn an_older_version_never_replaces_a_newer_one() {
        let mut e = entry(
            "102/000001",
            "A",
            EntryState::Draft,
            ("企业", "", &[]),
            UpdateCycle::Daily,
        );
        e.version = 3;
        let mut index = Index::build(vec![Arc::new(Record::of("", &e))]);
        let mut older = e.clone();
        older.version = 2;
        older.state = EntryState::Published;
        index.put(Record::of("", &older));
        assert!(index.overlay.is_empty());
        index.put(Record::of("", &e));
        assert!(index.overlay.is_empty(), "the same record changes nothing");
    }
}
