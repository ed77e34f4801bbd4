//! Federation on either backend: the peer registry, this hub's catalogue feed (its own entries,
//! written by the trigger of migration 0011 in the transaction that saves an entry, and the
//! entries aggregated from children) and the search of aggregated entries.

use xinqiao_domain::catalogue::CatalogEntry;
use xinqiao_domain::federation::{CatalogueChange, Exposure, FederatedEntry, PeerHub, Relation};
use xinqiao_domain::lifecycle::EntryState;
use xinqiao_domain::{Error, Result, text};

use crate::error::corrupt;

pub(crate) const PEER_COLUMNS: &str =
    "division_code, name, address, ca_pem, relation, exposure, catalogue_cursor, added_by, added_at";

pub(crate) const FEED_COLUMNS: &str = "origin_hub, resource_code, position, via_hub, provider_code, provider_name, \
     state, version, state_reason, content, published_at, created_at, updated_at";

pub(crate) fn peer_not_found(code: &str) -> Error {
    Error::NotFound(format!("peer hub {}", text::shorten(code, 20)))
}

pub(crate) fn exposure_json(exposure: &Exposure) -> Result<String> {
    serde_json::to_string(exposure).map_err(|e| Error::Internal(format!("encoding an exposure: {e}")))
}

pub(crate) fn content_json(entry: &CatalogEntry) -> Result<String> {
    serde_json::to_string(&entry.content).map_err(|e| Error::Internal(format!("encoding entry content: {e}")))
}

pub(crate) fn db_u64(value: u64, what: &str) -> Result<i64> {
    i64::try_from(value).map_err(|_| Error::invalid(what, "is too large"))
}

/// A peer from a row of either backend.
pub(crate) fn peer<R>(row: &R) -> Result<PeerHub>
where
    R: sqlx::Row,
    for<'r> &'r str: sqlx::ColumnIndex<R>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> chrono::DateTime<chrono::Utc>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let get_err = crate::error::db_error;
    let relation: String = row.try_get("relation").map_err(get_err)?;
    let exposure: String = row.try_get("exposure").map_err(get_err)?;
    let cursor: i64 = row.try_get("catalogue_cursor").map_err(get_err)?;
    Ok(PeerHub {
        division_code: row.try_get("division_code").map_err(get_err)?,
        name: row.try_get("name").map_err(get_err)?,
        address: row.try_get("address").map_err(get_err)?,
        ca_pem: row.try_get("ca_pem").map_err(get_err)?,
        relation: Relation::parse(&relation).ok_or_else(|| corrupt("federation_peers.relation", &relation))?,
        exposure: serde_json::from_str(&exposure).map_err(|e| corrupt("federation_peers.exposure", e))?,
        catalogue_cursor: u64::try_from(cursor).map_err(|e| corrupt("federation_peers.catalogue_cursor", e))?,
        added_by: row.try_get("added_by").map_err(get_err)?,
        added_at: row.try_get("added_at").map_err(get_err)?,
    })
}

/// A feed change from a row of either backend.
pub(crate) fn feed_change<R>(row: &R) -> Result<CatalogueChange>
where
    R: sqlx::Row,
    for<'r> &'r str: sqlx::ColumnIndex<R>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> chrono::DateTime<chrono::Utc>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<chrono::DateTime<chrono::Utc>>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let get_err = crate::error::db_error;
    let position: i64 = row.try_get("position").map_err(get_err)?;
    let version: i64 = row.try_get("version").map_err(get_err)?;
    let state: String = row.try_get("state").map_err(get_err)?;
    let content: String = row.try_get("content").map_err(get_err)?;
    Ok(CatalogueChange {
        position: u64::try_from(position).map_err(|e| corrupt("catalogue_feed.position", e))?,
        entry: FederatedEntry {
            origin_hub: row.try_get("origin_hub").map_err(get_err)?,
            via_hub: row.try_get("via_hub").map_err(get_err)?,
            entry: CatalogEntry {
                resource_code: row.try_get("resource_code").map_err(get_err)?,
                provider_code: row.try_get("provider_code").map_err(get_err)?,
                provider_name: row.try_get("provider_name").map_err(get_err)?,
                content: serde_json::from_str(&content).map_err(|e| corrupt("catalogue_feed.content", e))?,
                state: EntryState::parse(&state).ok_or_else(|| corrupt("catalogue_feed.state", &state))?,
                version: u64::try_from(version).map_err(|e| corrupt("catalogue_feed.version", e))?,
                state_reason: row.try_get("state_reason").map_err(get_err)?,
                published_at: row.try_get("published_at").map_err(get_err)?,
                created_at: row.try_get("created_at").map_err(get_err)?,
                updated_at: row.try_get("updated_at").map_err(get_err)?,
            },
        },
    })
}

/// The one implementation of [`crate::FederationStore`], for either backend (see
/// `interface_store!`). The search takes its SQL from `crate::search` (shared with the own
/// entries' search), by the store's `SEARCH_ENGINE`, and each store's `index_search_text` keeps
/// its search index.
macro_rules! federation_store {
    ($store:ty, $db:ty, $read:ident, $write:ident) => {
        impl $store {
            /// Takes the feed's next position inside `tx`: the head's row stays locked until the
            /// transaction ends, so positions follow commit order.
            async fn next_feed_position(tx: &mut sqlx::Transaction<'static, $db>) -> xinqiao_domain::Result<i64> {
                sqlx::query_scalar::<_, i64>(
                    "UPDATE catalogue_feed_head SET last_position = last_position + 1 WHERE id = 1 RETURNING last_position",
                )
                .fetch_one(&mut **tx)
                .await
                .map_err(crate::error::db_error)
            }
        }

        #[async_trait::async_trait]
        impl crate::FederationStore for $store {
            async fn add_peer(
                &self,
                peer: &xinqiao_domain::federation::PeerHub,
            ) -> xinqiao_domain::Result<xinqiao_domain::federation::PeerHub> {
                let mut query = sqlx::QueryBuilder::<$db>::new("INSERT INTO federation_peers (");
                query.push(crate::federation::PEER_COLUMNS).push(") VALUES (");
                query.push_bind(&peer.division_code).push(", ").push_bind(&peer.name).push(", ");
                query.push_bind(&peer.address).push(", ").push_bind(&peer.ca_pem).push(", ");
                query.push_bind(peer.relation.as_str()).push(", ");
                query.push_bind(crate::federation::exposure_json(&peer.exposure)?).push(", ");
                query.push_bind(crate::federation::db_u64(peer.catalogue_cursor, "catalogue_cursor")?);
                query.push(", ").push_bind(&peer.added_by).push(", ");
                query.push_bind(crate::interface::stored_time(peer.added_at)).push(") RETURNING ");
                query.push(crate::federation::PEER_COLUMNS);
                let row = query.build().fetch_one(&self.$write).await.map_err(|e| {
                    crate::error::translate(e, &format!("peer hub {}", peer.division_code))
                })?;
                crate::federation::peer(&row)
            }

            async fn get_peer(
                &self,
                division_code: &str,
            ) -> xinqiao_domain::Result<Option<xinqiao_domain::federation::PeerHub>> {
                let mut query = sqlx::QueryBuilder::<$db>::new("SELECT ");
                query.push(crate::federation::PEER_COLUMNS);
                query.push(" FROM federation_peers WHERE division_code = ").push_bind(division_code);
                let row = query.build().fetch_optional(&self.$read).await.map_err(crate::error::db_error)?;
                row.as_ref().map(crate::federation::peer).transpose()
            }

            async fn list_peers(&self) -> xinqiao_domain::Result<Vec<xinqiao_domain::federation::PeerHub>> {
                let mut query = sqlx::QueryBuilder::<$db>::new("SELECT ");
                query.push(crate::federation::PEER_COLUMNS);
                query.push(" FROM federation_peers ORDER BY division_code");
                let rows = query.build().fetch_all(&self.$read).await.map_err(crate::error::db_error)?;
                rows.iter().map(crate::federation::peer).collect()
            }

            async fn remove_peer(&self, division_code: &str, at: chrono::DateTime<chrono::Utc>) -> xinqiao_domain::Result<u64> {
                let at = crate::interface::stored_time(at);
                let mut tx = self.$write.begin().await.map_err(crate::error::db_error)?;
                let mut query = sqlx::QueryBuilder::<$db>::new("DELETE FROM federation_peers WHERE division_code = ");
                query.push_bind(division_code);
                let deleted = query.build().execute(&mut *tx).await.map_err(crate::error::db_error)?;
                if deleted.rows_affected() == 0 {
                    return Err(crate::federation::peer_not_found(division_code));
                }
                let mut query =
                    sqlx::QueryBuilder::<$db>::new("SELECT origin_hub, resource_code FROM catalogue_feed WHERE via_hub = ");
                query.push_bind(division_code).push(" AND state = ").push_bind("published");
                query.push(" ORDER BY origin_hub, resource_code");
                let keys: Vec<(String, String)> =
                    query.build_query_as().fetch_all(&mut *tx).await.map_err(crate::error::db_error)?;
                for (origin, code) in &keys {
                    let position = Self::next_feed_position(&mut tx).await?;
                    let mut query = sqlx::QueryBuilder::<$db>::new("UPDATE catalogue_feed SET state = ");
                    query.push_bind("withdrawn").push(", state_reason = ");
                    query.push_bind(format!("下级平台 {division_code} 已解除级联"));
                    query.push(", position = ").push_bind(position).push(", updated_at = ").push_bind(at);
                    query.push(" WHERE origin_hub = ").push_bind(origin).push(" AND resource_code = ").push_bind(code);
                    query.build().execute(&mut *tx).await.map_err(crate::error::db_error)?;
                }
                tx.commit().await.map_err(crate::error::db_error)?;
                Ok(keys.len() as u64)
            }

            async fn catalogue_changes(
                &self,
                after: u64,
                limit: u32,
            ) -> xinqiao_domain::Result<(Vec<xinqiao_domain::federation::CatalogueChange>, u64)> {
                let after = crate::federation::db_u64(after, "after")?;
                // The head first: every change up to it is committed (positions follow commit
                // order), so a page read afterwards holds all of those it reaches.
                let head: i64 = sqlx::query_scalar("SELECT last_position FROM catalogue_feed_head WHERE id = 1")
                    .fetch_one(&self.$read)
                    .await
                    .map_err(crate::error::db_error)?;
                let mut query = sqlx::QueryBuilder::<$db>::new("SELECT ");
                query.push(crate::federation::FEED_COLUMNS);
                query.push(" FROM catalogue_feed WHERE position > ").push_bind(after);
                query.push(" AND position <= ").push_bind(head);
                query.push(" ORDER BY position LIMIT ").push_bind(i64::from(limit));
                let rows = query.build().fetch_all(&self.$read).await.map_err(crate::error::db_error)?;
                let changes = rows
                    .iter()
                    .map(crate::federation::feed_change)
                    .collect::<xinqiao_domain::Result<Vec<_>>>()?;
                Ok((changes, u64::try_from(head).unwrap_or(0)))
            }

            async fn apply_catalogue_changes(
                &self,
                child: &str,
                from: u64,
                changes: &[xinqiao_domain::federation::CatalogueChange],
                cursor: u64,
            ) -> xinqiao_domain::Result<u64> {
                let mut tx = self.$write.begin().await.map_err(crate::error::db_error)?;
                // Compare-and-set on the child's cursor: another hub node that applied these
                // changes first has moved it, and then nothing is applied twice.
                let mut query = sqlx::QueryBuilder::<$db>::new("UPDATE federation_peers SET catalogue_cursor = ");
                query.push_bind(crate::federation::db_u64(cursor, "cursor")?);
                query.push(" WHERE division_code = ").push_bind(child);
                query.push(" AND catalogue_cursor = ").push_bind(crate::federation::db_u64(from, "from")?);
                let moved = query.build().execute(&mut *tx).await.map_err(crate::error::db_error)?;
                if moved.rows_affected() == 0 {
                    return Err(xinqiao_domain::Error::Aborted(format!(
                        "the catalogue cursor of peer hub {child} is no longer at {from}: applied meanwhile, or the peer is gone"
                    )));
                }
                let mut applied = 0;
                for change in changes {
                    let federated = &change.entry;
                    let entry = &federated.entry;
                    let content = &entry.content;
                    if entry.state == xinqiao_domain::lifecycle::EntryState::Withdrawn {
                        // A withdrawal of an entry this hub never had changes nothing.
                        let mut known =
                            sqlx::QueryBuilder::<$db>::new("SELECT COUNT(*) FROM catalogue_feed WHERE origin_hub = ");
                        known.push_bind(&federated.origin_hub);
                        known.push(" AND resource_code = ").push_bind(&entry.resource_code);
                        let count: i64 =
                            known.build_query_scalar().fetch_one(&mut *tx).await.map_err(crate::error::db_error)?;
                        if count == 0 {
                            continue;
                        }
                    }
                    let position = Self::next_feed_position(&mut tx).await?;
                    let mut query = sqlx::QueryBuilder::<$db>::new("INSERT INTO catalogue_feed (");
                    query.push(
                        "origin_hub, resource_code, position, via_hub, provider_code, provider_name, classification, \
                         search_text, share_type, open_type, update_cycle, format, state, version, state_reason, content, \
                         published_at, created_at, updated_at) VALUES (",
                    );
                    {
                        let mut values = query.separated(", ");
                        values.push_bind(&federated.origin_hub);
                        values.push_bind(&entry.resource_code);
                        values.push_bind(position);
                        values.push_bind(child);
                        values.push_bind(&entry.provider_code);
                        values.push_bind(&entry.provider_name);
                        values.push_bind(&content.classification);
                        values.push_bind(content.search_text().to_lowercase());
                        values.push_bind(content.share.share_type.as_str());
                        values.push_bind(content.open.open_type.as_str());
                        values.push_bind(content.update_cycle.as_str());
                        values.push_bind(content.format.as_str());
                        values.push_bind(entry.state.as_str());
                        values.push_bind(crate::federation::db_u64(entry.version, "version")?);
                        values.push_bind(&entry.state_reason);
                        values.push_bind(crate::federation::content_json(entry)?);
                        values.push_bind(entry.published_at.map(crate::interface::stored_time));
                        values.push_bind(crate::interface::stored_time(entry.created_at));
                        values.push_bind(crate::interface::stored_time(entry.updated_at));
                    }
                    query.push(
                        ") ON CONFLICT (origin_hub, resource_code) DO UPDATE SET position = excluded.position, \
                         via_hub = excluded.via_hub, provider_code = excluded.provider_code, \
                         provider_name = excluded.provider_name, classification = excluded.classification, \
                         search_text = excluded.search_text, share_type = excluded.share_type, \
                         open_type = excluded.open_type, update_cycle = excluded.update_cycle, format = excluded.format, \
                         state = excluded.state, version = excluded.version, state_reason = excluded.state_reason, \
                         content = excluded.content, published_at = excluded.published_at, \
                         created_at = excluded.created_at, updated_at = excluded.updated_at",
                    );
                    query.build().execute(&mut *tx).await.map_err(crate::error::db_error)?;
                    Self::index_search_text(
                        &mut tx,
                        &federated.origin_hub,
                        &entry.resource_code,
                        &content.search_text().to_lowercase(),
                    )
                    .await?;
                    applied += 1;
                }
                tx.commit().await.map_err(crate::error::db_error)?;
                Ok(applied)
            }

            async fn search_federated_entries(
                &self,
                visibility: &xinqiao_domain::policy::EntryVisibility,
                filter: &xinqiao_domain::catalogue::EntryFilter,
                after: Option<&xinqiao_domain::search::SearchPosition>,
                limit: u32,
            ) -> xinqiao_domain::Result<Vec<xinqiao_domain::federation::FederatedEntry>> {
                let search = crate::search::Search::new(
                    <$store>::SEARCH_ENGINE,
                    crate::search::Source::Aggregated,
                    visibility,
                    filter,
                    after,
                );
                let mut candidates = None;
                if let (Some(mut all), Some(mut names)) = (
                    search.count_candidates::<$db>(crate::search::Terms::All),
                    search.count_candidates::<$db>(crate::search::Terms::Name),
                ) {
                    let all: i64 = all.build_query_scalar().fetch_one(&self.$read).await.map_err(crate::error::db_error)?;
                    let names: i64 = names.build_query_scalar().fetch_one(&self.$read).await.map_err(crate::error::db_error)?;
                    candidates = Some((all, names));
                }
                let mut found = Vec::new();
                for step in search.steps(candidates) {
                    let room = limit.saturating_sub(u32::try_from(found.len()).unwrap_or(u32::MAX));
                    if room == 0 {
                        break;
                    }
                    let mut query = {
                        let mut query = sqlx::QueryBuilder::<$db>::new("SELECT ");
                        query.push(crate::federation::FEED_COLUMNS).push(" FROM catalogue_feed f");
                        query
                    };
                    search.push_step(&mut query, step, room);
                    let rows = query.build().fetch_all(&self.$read).await.map_err(crate::error::db_error)?;
                    for row in &rows {
                        found.push(crate::federation::feed_change(row)?.entry);
                    }
                }
                Ok(found)
            }

            async fn federated_entries(
                &self,
                resource_code: &str,
            ) -> xinqiao_domain::Result<Vec<xinqiao_domain::federation::FederatedEntry>> {
                let mut query = sqlx::QueryBuilder::<$db>::new("SELECT ");
                query.push(crate::federation::FEED_COLUMNS);
                query.push(" FROM catalogue_feed WHERE origin_hub <> '' AND resource_code = ");
                query.push_bind(resource_code);
                query.push(" ORDER BY origin_hub LIMIT 100");
                let rows = query.build().fetch_all(&self.$read).await.map_err(crate::error::db_error)?;
                rows.iter()
                    .map(|row| crate::federation::feed_change(row).map(|c| c.entry))
                    .collect()
            }

            async fn get_federated_entries(
                &self,
                keys: &[(String, String)],
            ) -> xinqiao_domain::Result<Vec<xinqiao_domain::federation::FederatedEntry>> {
                if keys.is_empty() {
                    return Ok(Vec::new());
                }
                let mut query = sqlx::QueryBuilder::<$db>::new("SELECT ");
                query.push(crate::federation::FEED_COLUMNS);
                query.push(" FROM catalogue_feed WHERE origin_hub <> '' AND (");
                let mut first = true;
                for (origin, code) in keys {
                    if !first {
                        query.push(" OR ");
                    }
                    first = false;
                    query.push("(origin_hub = ").push_bind(origin.clone());
                    query.push(" AND resource_code = ").push_bind(code.clone()).push(")");
                }
                query.push(") ORDER BY origin_hub, resource_code");
                let rows = query.build().fetch_all(&self.$read).await.map_err(crate::error::db_error)?;
                rows.iter()
                    .map(|row| crate::federation::feed_change(row).map(|c| c.entry))
                    .collect()
            }
        }
    };
}
pub(crate) use federation_store;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposures_round_trip_through_json() {
        let exposure = Exposure {
            catalogue: true,
            classifications: vec!["102".into()],
        };
        let json = exposure_json(&exposure).expect("encodes");
        assert_eq!(serde_json::from_str::<Exposure>(&json).expect("parses"), exposure);
    }
}
