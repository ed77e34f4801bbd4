//! The reads a follower's drain makes on PostgreSQL: the hot path of Subscribe and Fetch.

use super::*;

impl PgStore {
    /// NOT_FOUND for an unknown dataset. The changes come with the dataset's last sequence in one
    /// statement, so from one snapshot; the last sequence is read alone only when there are no
    /// changes to send. The rows come in the primary key's order with no sort: a join with the
    /// datasets row and an ORDER BY over it had PostgreSQL sort each page, on disk once a page
    /// passed work_mem (4 MB by default: four thousand 1 KiB records), at ten times the cost.
    pub(super) async fn changes_after(
        &self,
        dataset: &str,
        after: u64,
        limit: u32,
    ) -> Result<(Vec<StoredChange>, u64)> {
        let rows = sqlx::query(
            "SELECT c.sequence, c.op, c.key, c.record, c.published_at, \
             (SELECT last_sequence FROM datasets WHERE id = $1) AS head \
             FROM changes c WHERE c.dataset = $1 AND c.sequence > $2 ORDER BY c.sequence LIMIT $3",
        )
        .bind(dataset)
        .bind(bound(after))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        let head = match rows.first() {
            Some(first) => get(first, "head")?,
            None => sqlx::query_scalar("SELECT last_sequence FROM datasets WHERE id = $1")
                .bind(dataset)
                .fetch_optional(&self.pool)
                .await
                .map_err(db_error)?
                .ok_or_else(|| dataset_not_found(dataset))?,
        };
        let head = stored_u64(head, "datasets.last_sequence")?;
        let changes = rows.iter().map(stored_change).collect::<Result<Vec<_>>>()?;
        Ok((changes, head))
    }
}
