//! The catalogue export (DCAT-AP JSON-LD), read through the store in one place for every edge
//! that serves it: the gRPC `ExportCatalog` and an HTTP `GET /catalog.jsonld` alike. The mapping
//! itself is the domain's (`xinqiao_domain::dcat`).

use std::future::Future;

use serde_json::Value;
use xinqiao_domain::Result;
use xinqiao_domain::catalogue::{CatalogEntry, EntryFilter};
use xinqiao_domain::dcat::{self, CatalogueSite};
use xinqiao_domain::department::Department;
use xinqiao_domain::exchange::Dataset;
use xinqiao_domain::interface::Interface;
use xinqiao_domain::lifecycle::EntryState;
use xinqiao_domain::policy::EntryVisibility;
use xinqiao_domain::search::SearchPosition;
use xinqiao_store::{DatasetFilter, DatasetListing, Store};

/// Rows read from the store at a time.
const PAGE: u32 = 1000;

/// The published catalogue as a DCAT-AP JSON-LD document (media type [`dcat::MEDIA_TYPE`]). It
/// holds only what is published, so it is the same whoever asks; an edge decides who may.
pub async fn dcat_document(store: &dyn Store, site: &CatalogueSite) -> Result<Value> {
    let published = &EntryFilter {
        state: Some(EntryState::Published),
        ..EntryFilter::default()
    };
    let entries = read_all(
        |e: &CatalogEntry| e.resource_code.clone(),
        |after| async move {
            store
                .search_entries(
                    &EntryVisibility::All,
                    published,
                    after.map(|code| SearchPosition::of_code(&code)).as_ref(),
                    PAGE,
                )
                .await
        },
    )
    .await?;
    // Datasets whose entry is published (no department has the empty code). The mapping leaves
    // out any other anyway: it sees which entries are published.
    let on_published = &DatasetFilter {
        published_or_provided_by: Some(String::new()),
        ..DatasetFilter::default()
    };
    let datasets: Vec<Dataset> = read_all(
        |l: &DatasetListing| l.dataset.id.clone(),
        |after| async move { store.list_datasets(on_published, after.as_deref(), PAGE).await },
    )
    .await?
    .into_iter()
    .map(|listing| listing.dataset)
    .collect();
    // Of every entry: the mapping keeps the enabled ones of published entries.
    let interfaces = read_all(
        |i: &Interface| i.code.clone(),
        |after| async move { store.list_interfaces(None, after.as_deref(), PAGE).await },
    )
    .await?;
    // Deactivated departments too: their published entries are still in the directory.
    let departments = read_all(
        |d: &Department| d.code().to_string(),
        |after| async move { store.list_departments(after.as_deref(), PAGE, true).await },
    )
    .await?;
    Ok(dcat::document(site, &entries, &datasets, &interfaces, &departments))
}

/// The document as the text an edge sends: compact, about half the size of an indented one (a
/// gRPC answer is bounded by the hub's message limit).
pub fn dcat_text(document: &Value) -> Result<String> {
    serde_json::to_string(document)
        .map_err(|e| xinqiao_domain::Error::Internal(format!("the DCAT document cannot be written: {e}")))
}

/// Every row of a listing that pages by key, `PAGE` rows a call.
async fn read_all<T, Page>(key: impl Fn(&T) -> String, mut page: impl FnMut(Option<String>) -> Page) -> Result<Vec<T>>
where
    Page: Future<Output = Result<Vec<T>>>,
{
    let mut rows = Vec::new();
    let mut after = None;
    loop {
        let next = page(after).await?;
        let more = next.len() == PAGE as usize;
        after = next.last().map(&key);
        rows.extend(next);
        if !more {
            return Ok(rows);
        }
    }
}
