//! The reads a follower's drain makes on PostgreSQL: the hot path of Subscribe and Fetch.

use super::*;

impl PgStore {
    /// NOT_FOUND for an unknown dataset. One statement, so the changes and the last sequence
    /// come from one snapshot.
    pub(super) async fn changes_after(
        &self,
        dataset: &str,
        after: u64,
        limit: u32,
    ) -> Result<(Vec<StoredChange>, u64)> {
        let rows = sqlx::query(
            "SELECT ds.last_sequence AS head, c.sequence, c.op, c.key, c.record, c.published_at FROM datasets ds \
             LEFT JOIN LATERAL (SELECT sequence, op, key, record, published_at FROM changes \
             WHERE dataset = ds.id AND sequence > $2 ORDER BY sequence LIMIT $3) c ON TRUE \
             WHERE ds.id = $1 ORDER BY c.sequence",
        )
        .bind(dataset)
        .bind(bound(after))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        let first = rows.first().ok_or_else(|| dataset_not_found(dataset))?;
        let head = stored_u64(get(first, "head")?, "datasets.last_sequence")?;
        let mut changes = Vec::with_capacity(rows.len());
        for row in &rows {
            // The one row of a dataset without changes after `after` has none.
            if get::<Option<i64>>(row, "sequence")?.is_some() {
                changes.push(stored_change(row)?);
            }
        }
        Ok((changes, head))
    }
}
