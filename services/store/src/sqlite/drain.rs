//! The reads a follower's drain makes on SQLite: the hot path of Subscribe and Fetch.

use super::*;

impl SqliteStore {
    /// NOT_FOUND for an unknown dataset. The changes and the last sequence come from one
    /// snapshot.
    pub(super) async fn changes_after(
        &self,
        dataset: &str,
        after: u64,
        limit: u32,
    ) -> Result<(Vec<StoredChange>, u64)> {
        let mut tx = self.readers.begin().await.map_err(db_error)?;
        let last: Option<i64> = sqlx::query_scalar("SELECT last_sequence FROM datasets WHERE id = ?")
            .bind(dataset)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_error)?;
        let last = last.ok_or_else(|| dataset_not_found(dataset))?;
        let mut query = QueryBuilder::<Sqlite>::new("SELECT ");
        query
            .push(CHANGE_COLUMNS)
            .push(" FROM changes c WHERE c.dataset = ")
            .push_bind(dataset);
        query.push(" AND c.sequence > ").push_bind(bound(after));
        query.push(" ORDER BY c.sequence LIMIT ").push_bind(i64::from(limit));
        let rows = query.build().fetch_all(&mut *tx).await.map_err(db_error)?;
        let changes = rows.iter().map(stored_change).collect::<Result<Vec<_>>>()?;
        Ok((changes, stored_u64(last, "datasets.last_sequence")?))
    }
}
