//! Access requests, grants and error reports on SQLite.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::sqlite::{SqliteConnection, SqliteRow};
use sqlx::{QueryBuilder, Sqlite};
use xinqiao_domain::Result;
use xinqiao_domain::access::{AccessApplication, AccessGrant, AccessRequest, ErrorReport, ReportState, RequestState};

use super::{SqliteStore, get, stored_time};
use crate::access::{
    already_revoked, check_resolution, check_settlement, fields_json, grant_not_found, masks_json, not_open,
    not_pending, parse_fields, parse_masks, report_not_found, report_state, request_not_found, request_state,
    stored_u64,
};
use crate::error::{dataset_write_error, db_error, translate};
use crate::exchange::to_db;
use crate::{AccessStore, GrantFilter, ReportFilter, RequestFilter};

const REQUEST_COLUMNS: &str = "id, dataset, provider_code, applicant_code, purpose, scope, fields, period_from, \
     period_until, business_system, state, submitted_at, due_on, answered_at, answered_by, reason, grant_id, \
     operations";

const GRANT_COLUMNS: &str = "id, request_id, dataset, provider_code, grantee_code, purpose, business_system, fields, \
     masks, granted_at, granted_by, expires_at, revoked_at, revoked_by, revoke_reason, operations";

const REPORT_COLUMNS: &str = "id, dataset, provider_code, reporter_code, sequence, key, description, state, \
     reported_at, resolved_at, resolved_by, resolution, corrected_sequence";

fn request(row: &SqliteRow) -> Result<AccessRequest> {
    let fields: String = get(row, "fields")?;
    let operations: String = get(row, "operations")?;
    let state: String = get(row, "state")?;
    Ok(AccessRequest {
        id: get(row, "id")?,
        application: AccessApplication {
            dataset: get(row, "dataset")?,
            purpose: get(row, "purpose")?,
            scope: get(row, "scope")?,
            fields: parse_fields(&fields, "access_requests.fields")?,
            period_from: get(row, "period_from")?,
            period_until: get(row, "period_until")?,
            business_system: get(row, "business_system")?,
            operations: parse_fields(&operations, "access_requests.operations")?,
        },
        provider_code: get(row, "provider_code")?,
        applicant_code: get(row, "applicant_code")?,
        state: request_state(&state)?,
        submitted_at: get(row, "submitted_at")?,
        due_on: get(row, "due_on")?,
        answered_at: get(row, "answered_at")?,
        answered_by: get(row, "answered_by")?,
        reason: get(row, "reason")?,
        grant_id: get(row, "grant_id")?,
    })
}

fn grant(row: &SqliteRow) -> Result<AccessGrant> {
    let fields: String = get(row, "fields")?;
    let masks: String = get(row, "masks")?;
    let operations: String = get(row, "operations")?;
    Ok(AccessGrant {
        id: get(row, "id")?,
        request_id: get(row, "request_id")?,
        dataset: get(row, "dataset")?,
        provider_code: get(row, "provider_code")?,
        grantee_code: get(row, "grantee_code")?,
        purpose: get(row, "purpose")?,
        business_system: get(row, "business_system")?,
        fields: parse_fields(&fields, "access_grants.fields")?,
        masks: parse_masks(&masks)?,
        operations: parse_fields(&operations, "access_grants.operations")?,
        granted_at: get(row, "granted_at")?,
        granted_by: get(row, "granted_by")?,
        expires_at: get(row, "expires_at")?,
        revoked_at: get(row, "revoked_at")?,
        revoked_by: get(row, "revoked_by")?,
        revoke_reason: get(row, "revoke_reason")?,
    })
}

fn report(row: &SqliteRow) -> Result<ErrorReport> {
    let state: String = get(row, "state")?;
    Ok(ErrorReport {
        id: get(row, "id")?,
        dataset: get(row, "dataset")?,
        provider_code: get(row, "provider_code")?,
        reporter_code: get(row, "reporter_code")?,
        sequence: stored_u64(get(row, "sequence")?, "error_reports.sequence")?,
        key: get(row, "key")?,
        description: get(row, "description")?,
        state: report_state(&state)?,
        reported_at: get(row, "reported_at")?,
        resolved_at: get(row, "resolved_at")?,
        resolved_by: get(row, "resolved_by")?,
        resolution: get(row, "resolution")?,
        corrected_sequence: stored_u64(get(row, "corrected_sequence")?, "error_reports.corrected_sequence")?,
    })
}

/// One row of `table` by id, with `columns` (names from this file, never input).
async fn fetch_by_id<T>(
    conn: &mut SqliteConnection,
    table: &'static str,
    columns: &'static str,
    id: &str,
    map: fn(&SqliteRow) -> Result<T>,
) -> Result<Option<T>> {
    let mut query = QueryBuilder::<Sqlite>::new("SELECT ");
    query
        .push(columns)
        .push(" FROM ")
        .push(table)
        .push(" WHERE id = ")
        .push_bind(id);
    let row = query.build().fetch_optional(conn).await.map_err(db_error)?;
    row.as_ref().map(map).transpose()
}

/// The text of a column of one row, to explain why a conditional update touched nothing.
async fn current_text(
    conn: &mut SqliteConnection,
    table: &'static str,
    column: &'static str,
    id: &str,
) -> Result<Option<String>> {
    let mut query = QueryBuilder::<Sqlite>::new("SELECT ");
    query
        .push(column)
        .push(" FROM ")
        .push(table)
        .push(" WHERE id = ")
        .push_bind(id);
    query.build_query_scalar().fetch_optional(conn).await.map_err(db_error)
}

/// Appends `AND id > after ORDER BY id LIMIT limit`: lists page by id.
fn page(query: &mut QueryBuilder<Sqlite>, after: Option<&str>, limit: u32) {
    if let Some(after) = after {
        query.push(" AND id > ").push_bind(after);
    }
    query.push(" ORDER BY id LIMIT ").push_bind(i64::from(limit));
}

async fn insert_grant(conn: &mut SqliteConnection, grant: &AccessGrant) -> Result<()> {
    sqlx::query(
        "INSERT INTO access_grants (id, request_id, dataset, provider_code, grantee_code, purpose, business_system, \
         fields, masks, granted_at, granted_by, expires_at, revoked_at, revoked_by, revoke_reason, operations) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(&grant.id)
    .bind(&grant.request_id)
    .bind(&grant.dataset)
    .bind(&grant.provider_code)
    .bind(&grant.grantee_code)
    .bind(&grant.purpose)
    .bind(&grant.business_system)
    .bind(fields_json(&grant.fields)?)
    .bind(masks_json(&grant.masks)?)
    .bind(stored_time(grant.granted_at))
    .bind(&grant.granted_by)
    .bind(stored_time(grant.expires_at))
    .bind(grant.revoked_at.map(stored_time))
    .bind(&grant.revoked_by)
    .bind(&grant.revoke_reason)
    .bind(fields_json(&grant.operations)?)
    .execute(conn)
    .await
    .map_err(|e| dataset_write_error(e, &grant.dataset, &format!("grant {}", grant.id)))?;
    Ok(())
}

#[async_trait]
impl AccessStore for SqliteStore {
    /// NOT_FOUND for an unknown dataset; ALREADY_EXISTS if the id is taken.
    async fn create_request(&self, new: &AccessRequest) -> Result<AccessRequest> {
        let application = &new.application;
        let mut query = QueryBuilder::<Sqlite>::new("INSERT INTO access_requests (");
        query.push(REQUEST_COLUMNS).push(") VALUES (");
        let mut values = query.separated(", ");
        values.push_bind(&new.id);
        values.push_bind(&application.dataset);
        values.push_bind(&new.provider_code);
        values.push_bind(&new.applicant_code);
        values.push_bind(&application.purpose);
        values.push_bind(&application.scope);
        values.push_bind(fields_json(&application.fields)?);
        values.push_bind(application.period_from);
        values.push_bind(application.period_until);
        values.push_bind(&application.business_system);
        values.push_bind(new.state.as_str());
        values.push_bind(stored_time(new.submitted_at));
        values.push_bind(new.due_on);
        values.push_bind(new.answered_at.map(stored_time));
        values.push_bind(&new.answered_by);
        values.push_bind(&new.reason);
        values.push_bind(new.grant_id.as_deref());
        values.push_bind(fields_json(&application.operations)?);
        query.push(") RETURNING ").push(REQUEST_COLUMNS);
        let row = query
            .build()
            .fetch_one(&self.writer)
            .await
            .map_err(|e| dataset_write_error(e, &application.dataset, &format!("access request {}", new.id)))?;
        request(&row)
    }

    async fn get_request(&self, id: &str) -> Result<Option<AccessRequest>> {
        let mut conn = self.readers.acquire().await.map_err(db_error)?;
        fetch_by_id(&mut conn, "access_requests", REQUEST_COLUMNS, id, request).await
    }

    async fn list_requests(
        &self,
        filter: &RequestFilter,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<AccessRequest>> {
        let mut query = QueryBuilder::<Sqlite>::new("SELECT ");
        query.push(REQUEST_COLUMNS).push(" FROM access_requests WHERE 1 = 1");
        if let Some(applicant) = &filter.applicant {
            query.push(" AND applicant_code = ").push_bind(applicant);
        }
        if let Some(provider) = &filter.provider {
            query.push(" AND provider_code = ").push_bind(provider);
        }
        if let Some(party) = &filter.party {
            query.push(" AND (applicant_code = ").push_bind(party);
            query.push(" OR provider_code = ").push_bind(party).push(")");
        }
        if let Some(dataset) = &filter.dataset {
            query.push(" AND dataset = ").push_bind(dataset);
        }
        if let Some(state) = filter.state {
            query.push(" AND state = ").push_bind(state.as_str());
        }
        if let Some(day) = filter.due_before {
            // Days are YYYY-MM-DD text, which sorts as the days do.
            query.push(" AND state = ").push_bind(RequestState::Pending.as_str());
            query.push(" AND due_on < ").push_bind(day);
        }
        page(&mut query, after, limit);
        let rows = query.build().fetch_all(&self.readers).await.map_err(db_error)?;
        rows.iter().map(request).collect()
    }

    /// One write transaction: the request is updated only while it is still pending (a
    /// compare-and-set on its state), then the grant is inserted.
    async fn settle_request(&self, answer: &AccessRequest, grant: Option<&AccessGrant>) -> Result<AccessRequest> {
        check_settlement(answer, grant)?;
        let mut tx = self.begin_write().await?;
        let updated = sqlx::query(
            "UPDATE access_requests SET state = ?, answered_at = ?, answered_by = ?, reason = ?, grant_id = ? \
             WHERE id = ? AND state = ?",
        )
        .bind(answer.state.as_str())
        .bind(answer.answered_at.map(stored_time))
        .bind(&answer.answered_by)
        .bind(&answer.reason)
        .bind(answer.grant_id.as_deref())
        .bind(&answer.id)
        .bind(RequestState::Pending.as_str())
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        if updated.rows_affected() == 0 {
            return Err(
                match current_text(&mut tx, "access_requests", "state", &answer.id).await? {
                    None => request_not_found(&answer.id),
                    Some(state) => not_pending(&answer.id, &state),
                },
            );
        }
        if let Some(grant) = grant {
            insert_grant(&mut tx, grant).await?;
        }
        let settled = fetch_by_id(&mut tx, "access_requests", REQUEST_COLUMNS, &answer.id, request)
            .await?
            .ok_or_else(|| request_not_found(&answer.id))?;
        tx.commit().await.map_err(db_error)?;
        Ok(settled)
    }

    async fn get_grant(&self, id: &str) -> Result<Option<AccessGrant>> {
        let mut conn = self.readers.acquire().await.map_err(db_error)?;
        fetch_by_id(&mut conn, "access_grants", GRANT_COLUMNS, id, grant).await
    }

    async fn list_grants(&self, filter: &GrantFilter, after: Option<&str>, limit: u32) -> Result<Vec<AccessGrant>> {
        let mut query = QueryBuilder::<Sqlite>::new("SELECT ");
        query.push(GRANT_COLUMNS).push(" FROM access_grants WHERE 1 = 1");
        if let Some(grantee) = &filter.grantee {
            query.push(" AND grantee_code = ").push_bind(grantee);
        }
        if let Some(provider) = &filter.provider {
            query.push(" AND provider_code = ").push_bind(provider);
        }
        if let Some(party) = &filter.party {
            query.push(" AND (grantee_code = ").push_bind(party);
            query.push(" OR provider_code = ").push_bind(party).push(")");
        }
        if let Some(dataset) = &filter.dataset {
            query.push(" AND dataset = ").push_bind(dataset);
        }
        if let Some(at) = filter.active_at {
            // Times are stored in one canonical text form (see `stored_time`), which sorts as the
            // instants do.
            // Active at that moment: given by then, not yet revoked then, not yet expired.
            query
                .push(" AND granted_at <= ")
                .push_bind(stored_time(at))
                .push(" AND (revoked_at IS NULL OR revoked_at > ")
                .push_bind(stored_time(at))
                .push(") AND expires_at > ")
                .push_bind(stored_time(at));
        }
        page(&mut query, after, limit);
        let rows = query.build().fetch_all(&self.readers).await.map_err(db_error)?;
        rows.iter().map(grant).collect()
    }

    async fn grants_of(&self, dataset: &str, grantee: &str) -> Result<Vec<AccessGrant>> {
        let mut query = QueryBuilder::<Sqlite>::new("SELECT ");
        query
            .push(GRANT_COLUMNS)
            .push(" FROM access_grants WHERE dataset = ")
            .push_bind(dataset);
        query.push(" AND grantee_code = ").push_bind(grantee);
        query.push(" ORDER BY id");
        let rows = query.build().fetch_all(&self.readers).await.map_err(db_error)?;
        rows.iter().map(grant).collect()
    }

    /// A compare-and-set on `revoked_at`: of two revocations, only one finds the grant unrevoked.
    async fn revoke_grant(&self, id: &str, by: &str, reason: &str, at: DateTime<Utc>) -> Result<AccessGrant> {
        let mut query = QueryBuilder::<Sqlite>::new("UPDATE access_grants SET revoked_at = ");
        query.push_bind(stored_time(at));
        query.push(", revoked_by = ").push_bind(by);
        query.push(", revoke_reason = ").push_bind(reason);
        query.push(" WHERE id = ").push_bind(id).push(" AND revoked_at IS NULL");
        query.push(" RETURNING ").push(GRANT_COLUMNS);
        let mut conn = self.writer.acquire().await.map_err(db_error)?;
        let row = query.build().fetch_optional(&mut *conn).await.map_err(db_error)?;
        match row {
            Some(row) => grant(&row),
            None => Err(match current_text(&mut conn, "access_grants", "id", id).await? {
                None => grant_not_found(id),
                Some(_) => already_revoked(id),
            }),
        }
    }

    /// NOT_FOUND for an unknown dataset; ALREADY_EXISTS if the id is taken.
    async fn create_report(&self, new: &ErrorReport) -> Result<ErrorReport> {
        let mut query = QueryBuilder::<Sqlite>::new("INSERT INTO error_reports (");
        query.push(REPORT_COLUMNS).push(") VALUES (");
        let mut values = query.separated(", ");
        values.push_bind(&new.id);
        values.push_bind(&new.dataset);
        values.push_bind(&new.provider_code);
        values.push_bind(&new.reporter_code);
        values.push_bind(to_db(new.sequence, "sequence")?);
        values.push_bind(&new.key);
        values.push_bind(&new.description);
        values.push_bind(new.state.as_str());
        values.push_bind(stored_time(new.reported_at));
        values.push_bind(new.resolved_at.map(stored_time));
        values.push_bind(&new.resolved_by);
        values.push_bind(&new.resolution);
        values.push_bind(to_db(new.corrected_sequence, "corrected_sequence")?);
        query.push(") RETURNING ").push(REPORT_COLUMNS);
        let row = query
            .build()
            .fetch_one(&self.writer)
            .await
            .map_err(|e| dataset_write_error(e, &new.dataset, &format!("error report {}", new.id)))?;
        report(&row)
    }

    async fn get_report(&self, id: &str) -> Result<Option<ErrorReport>> {
        let mut conn = self.readers.acquire().await.map_err(db_error)?;
        fetch_by_id(&mut conn, "error_reports", REPORT_COLUMNS, id, report).await
    }

    async fn list_reports(&self, filter: &ReportFilter, after: Option<&str>, limit: u32) -> Result<Vec<ErrorReport>> {
        let mut query = QueryBuilder::<Sqlite>::new("SELECT ");
        query.push(REPORT_COLUMNS).push(" FROM error_reports WHERE 1 = 1");
        if let Some(reporter) = &filter.reporter {
            query.push(" AND reporter_code = ").push_bind(reporter);
        }
        if let Some(provider) = &filter.provider {
            query.push(" AND provider_code = ").push_bind(provider);
        }
        if let Some(party) = &filter.party {
            query.push(" AND (reporter_code = ").push_bind(party);
            query.push(" OR provider_code = ").push_bind(party).push(")");
        }
        if let Some(dataset) = &filter.dataset {
            query.push(" AND dataset = ").push_bind(dataset);
        }
        if let Some(state) = filter.state {
            query.push(" AND state = ").push_bind(state.as_str());
        }
        page(&mut query, after, limit);
        let rows = query.build().fetch_all(&self.readers).await.map_err(db_error)?;
        rows.iter().map(report).collect()
    }

    /// A compare-and-set on the state: only an open report is resolved.
    async fn resolve_report(&self, resolved: &ErrorReport) -> Result<ErrorReport> {
        check_resolution(resolved)?;
        let mut query = QueryBuilder::<Sqlite>::new("UPDATE error_reports SET state = ");
        query.push_bind(resolved.state.as_str());
        query
            .push(", resolved_at = ")
            .push_bind(resolved.resolved_at.map(stored_time));
        query.push(", resolved_by = ").push_bind(&resolved.resolved_by);
        query.push(", resolution = ").push_bind(&resolved.resolution);
        query
            .push(", corrected_sequence = ")
            .push_bind(to_db(resolved.corrected_sequence, "corrected_sequence")?);
        query.push(" WHERE id = ").push_bind(&resolved.id);
        query.push(" AND state = ").push_bind(ReportState::Open.as_str());
        query.push(" RETURNING ").push(REPORT_COLUMNS);
        let mut conn = self.writer.acquire().await.map_err(db_error)?;
        let row = query
            .build()
            .fetch_optional(&mut *conn)
            .await
            .map_err(|e| translate(e, &format!("error report {}", resolved.id)))?;
        match row {
            Some(row) => report(&row),
            None => Err(
                match current_text(&mut conn, "error_reports", "state", &resolved.id).await? {
                    None => report_not_found(&resolved.id),
                    Some(state) => not_open(&resolved.id, &state),
                },
            ),
        }
    }
}
