//! What both backends do the same way for access requests, grants and error reports: the JSON
//! text of field lists and masks, the checks on an answer before it is written, and the errors
//! that name a row's current state.

use xinqiao_domain::access::{AccessGrant, AccessRequest, ErrorReport, ReportState, RequestState};
use xinqiao_domain::masking::MaskRule;
use xinqiao_domain::{Error, Result};

use crate::error::corrupt;

/// Field names as a JSON array.
pub(crate) fn fields_json(fields: &[String]) -> Result<String> {
    serde_json::to_string(fields).map_err(|e| Error::Internal(format!("encoding fields: {e}")))
}

pub(crate) fn parse_fields(text: &str, column: &str) -> Result<Vec<String>> {
    serde_json::from_str(text).map_err(|e| corrupt(column, e))
}

/// Masks as a JSON array of `[field, rule]` pairs, each rule as `MaskRule::as_text`.
pub(crate) fn masks_json(masks: &[(String, MaskRule)]) -> Result<String> {
    let pairs: Vec<(&str, String)> = masks.iter().map(|(f, r)| (f.as_str(), r.as_text())).collect();
    serde_json::to_string(&pairs).map_err(|e| Error::Internal(format!("encoding masks: {e}")))
}

pub(crate) fn parse_masks(text: &str) -> Result<Vec<(String, MaskRule)>> {
    const COLUMN: &str = "access_grants.masks";
    let pairs: Vec<(String, String)> = serde_json::from_str(text).map_err(|e| corrupt(COLUMN, e))?;
    pairs
        .into_iter()
        .map(|(field, rule)| match MaskRule::parse(&rule) {
            Some(rule) => Ok((field, rule)),
            None => Err(corrupt(COLUMN, format!("unknown rule '{rule}'"))),
        })
        .collect()
}

pub(crate) fn request_state(text: &str) -> Result<RequestState> {
    RequestState::parse(text).ok_or_else(|| corrupt("access_requests.state", text))
}

pub(crate) fn report_state(text: &str) -> Result<ReportState> {
    ReportState::parse(text).ok_or_else(|| corrupt("error_reports.state", text))
}

/// A count or sequence number read back.
pub(crate) fn stored_u64(value: i64, column: &str) -> Result<u64> {
    u64::try_from(value).map_err(|e| corrupt(column, e))
}

/// An answer must leave the request answered, and name the grant it stores (and only then).
pub(crate) fn check_settlement(request: &AccessRequest, grant: Option<&AccessGrant>) -> Result<()> {
    if request.state == RequestState::Pending {
        return Err(Error::invalid(
            "state",
            "an answer leaves the request approved, rejected or withdrawn",
        ));
    }
    if request.grant_id.as_deref() != grant.map(|g| g.id.as_str()) {
        return Err(Error::invalid(
            "grant_id",
            "names the grant stored with the answer, and only an approval stores one",
        ));
    }
    if (request.state == RequestState::Approved) != grant.is_some() {
        return Err(Error::invalid(
            "state",
            "an approval, and only an approval, stores a grant",
        ));
    }
    if let Some(grant) = grant
        && (grant.request_id != request.id || grant.dataset != request.application.dataset)
    {
        return Err(Error::invalid("grant", "belongs to another request or dataset"));
    }
    Ok(())
}

/// A resolution must leave the report corrected or rejected.
pub(crate) fn check_resolution(report: &ErrorReport) -> Result<()> {
    if report.state == ReportState::Open {
        return Err(Error::invalid(
            "state",
            "a resolution leaves the report corrected or rejected",
        ));
    }
    Ok(())
}

pub(crate) fn request_not_found(id: &str) -> Error {
    Error::NotFound(format!("access request {id}"))
}

pub(crate) fn grant_not_found(id: &str) -> Error {
    Error::NotFound(format!("grant {id}"))
}

pub(crate) fn report_not_found(id: &str) -> Error {
    Error::NotFound(format!("error report {id}"))
}

/// The request was answered (or withdrawn) meanwhile: `state` is the stored state's text.
pub(crate) fn not_pending(id: &str, state: &str) -> Error {
    let label = RequestState::parse(state).map_or("", RequestState::label);
    Error::FailedPrecondition(format!(
        "access request {id} is {state} ({label}); only a pending request can be answered or withdrawn"
    ))
}

pub(crate) fn already_revoked(id: &str) -> Error {
    Error::FailedPrecondition(format!("grant {id} is already revoked"))
}

/// The report was resolved meanwhile: `state` is the stored state's text.
pub(crate) fn not_open(id: &str, state: &str) -> Error {
    Error::FailedPrecondition(format!(
        "error report {id} is {state}; only an open report can be resolved"
    ))
}

/// The one implementation of [`crate::AccessStore`], for either backend: the SQL is the same text
/// on both (the query builder writes each engine's placeholders). Invoked in each backend's
/// module, where `get` and `stored_time` are that backend's; `$row` and `$conn` are its row and
/// connection types, `$read` and `$write` its pools, and `begin_write` its write transaction.
macro_rules! access_store {
    ($store:ty, $db:ty, $row:ty, $conn:ty, $read:ident, $write:ident) => {
        use chrono::{DateTime, Utc};
        use sqlx::QueryBuilder;
        use xinqiao_domain::Result;
        use xinqiao_domain::access::{AccessApplication, AccessGrant, AccessRequest, ErrorReport, ReportState, RequestState};

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

        fn request(row: &$row) -> Result<AccessRequest> {
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

        fn grant(row: &$row) -> Result<AccessGrant> {
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

        fn report(row: &$row) -> Result<ErrorReport> {
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
            conn: &mut $conn,
            table: &'static str,
            columns: &'static str,
            id: &str,
            map: fn(&$row) -> Result<T>,
        ) -> Result<Option<T>> {
            let mut query = QueryBuilder::<$db>::new("SELECT ");
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
            conn: &mut $conn,
            table: &'static str,
            column: &'static str,
            id: &str,
        ) -> Result<Option<String>> {
            let mut query = QueryBuilder::<$db>::new("SELECT ");
            query
                .push(column)
                .push(" FROM ")
                .push(table)
                .push(" WHERE id = ")
                .push_bind(id);
            query.build_query_scalar().fetch_optional(conn).await.map_err(db_error)
        }

        /// Appends `AND id > after ORDER BY id LIMIT limit`: lists page by id.
        fn page(query: &mut QueryBuilder<$db>, after: Option<&str>, limit: u32) {
            if let Some(after) = after {
                query.push(" AND id > ").push_bind(after);
            }
            query.push(" ORDER BY id LIMIT ").push_bind(i64::from(limit));
        }

        async fn insert_grant(conn: &mut $conn, grant: &AccessGrant) -> Result<()> {
            let mut query = QueryBuilder::<$db>::new("INSERT INTO access_grants (");
            query.push(GRANT_COLUMNS).push(") VALUES (");
            let mut values = query.separated(", ");
            values.push_bind(&grant.id);
            values.push_bind(&grant.request_id);
            values.push_bind(&grant.dataset);
            values.push_bind(&grant.provider_code);
            values.push_bind(&grant.grantee_code);
            values.push_bind(&grant.purpose);
            values.push_bind(&grant.business_system);
            values.push_bind(fields_json(&grant.fields)?);
            values.push_bind(masks_json(&grant.masks)?);
            values.push_bind(stored_time(grant.granted_at));
            values.push_bind(&grant.granted_by);
            values.push_bind(stored_time(grant.expires_at));
            values.push_bind(grant.revoked_at.map(stored_time));
            values.push_bind(&grant.revoked_by);
            values.push_bind(&grant.revoke_reason);
            values.push_bind(fields_json(&grant.operations)?);
            query.push(")");
            query
                .build()
                .execute(conn)
                .await
                .map_err(|e| dataset_write_error(e, &grant.dataset, &format!("grant {}", grant.id)))?;
            Ok(())
        }

        #[async_trait::async_trait]
        impl AccessStore for $store {
            /// NOT_FOUND for an unknown dataset; ALREADY_EXISTS if the id is taken.
            async fn create_request(&self, new: &AccessRequest) -> Result<AccessRequest> {
                let application = &new.application;
                let mut query = QueryBuilder::<$db>::new("INSERT INTO access_requests (");
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
                    .fetch_one(&self.$write)
                    .await
                    .map_err(|e| dataset_write_error(e, &application.dataset, &format!("access request {}", new.id)))?;
                request(&row)
            }

            async fn get_request(&self, id: &str) -> Result<Option<AccessRequest>> {
                let mut conn = self.$read.acquire().await.map_err(db_error)?;
                fetch_by_id(&mut conn, "access_requests", REQUEST_COLUMNS, id, request).await
            }

            async fn list_requests(
                &self,
                filter: &RequestFilter,
                after: Option<&str>,
                limit: u32,
            ) -> Result<Vec<AccessRequest>> {
                let mut query = QueryBuilder::<$db>::new("SELECT ");
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
                    // Days are dates, or YYYY-MM-DD text on SQLite, which sorts as the days do.
                    query.push(" AND state = ").push_bind(RequestState::Pending.as_str());
                    query.push(" AND due_on < ").push_bind(day);
                }
                page(&mut query, after, limit);
                let rows = query.build().fetch_all(&self.$read).await.map_err(db_error)?;
                rows.iter().map(request).collect()
            }

            /// One write transaction: the request is updated only while it is still pending (a
            /// compare-and-set on its state; on PostgreSQL it also locks the row, so the second of two
            /// concurrent answers waits, re-reads the row and no longer matches), then the grant is
            /// inserted.
            async fn settle_request(&self, answer: &AccessRequest, grant: Option<&AccessGrant>) -> Result<AccessRequest> {
                check_settlement(answer, grant)?;
                let mut tx = self.begin_write().await?;
                let mut query = QueryBuilder::<$db>::new("UPDATE access_requests SET state = ");
                query.push_bind(answer.state.as_str());
                query.push(", answered_at = ").push_bind(answer.answered_at.map(stored_time));
                query.push(", answered_by = ").push_bind(&answer.answered_by);
                query.push(", reason = ").push_bind(&answer.reason);
                query.push(", grant_id = ").push_bind(answer.grant_id.as_deref());
                query.push(" WHERE id = ").push_bind(&answer.id);
                query.push(" AND state = ").push_bind(RequestState::Pending.as_str());
                let updated = query.build().execute(&mut *tx).await.map_err(db_error)?;
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
                let mut conn = self.$read.acquire().await.map_err(db_error)?;
                fetch_by_id(&mut conn, "access_grants", GRANT_COLUMNS, id, grant).await
            }

            async fn list_grants(&self, filter: &GrantFilter, after: Option<&str>, limit: u32) -> Result<Vec<AccessGrant>> {
                let mut query = QueryBuilder::<$db>::new("SELECT ");
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
                    // SQLite keeps times in one canonical text form (see its `stored_time`), which sorts
                    // as the instants do; PostgreSQL as timestamptz.
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
                let rows = query.build().fetch_all(&self.$read).await.map_err(db_error)?;
                rows.iter().map(grant).collect()
            }

            async fn grants_of(&self, dataset: &str, grantee: &str) -> Result<Vec<AccessGrant>> {
                let mut query = QueryBuilder::<$db>::new("SELECT ");
                query
                    .push(GRANT_COLUMNS)
                    .push(" FROM access_grants WHERE dataset = ")
                    .push_bind(dataset);
                query.push(" AND grantee_code = ").push_bind(grantee);
                query.push(" ORDER BY id");
                let rows = query.build().fetch_all(&self.$read).await.map_err(db_error)?;
                rows.iter().map(grant).collect()
            }

            /// A compare-and-set on `revoked_at`: of two revocations, only one finds the grant unrevoked.
            async fn revoke_grant(&self, id: &str, by: &str, reason: &str, at: DateTime<Utc>) -> Result<AccessGrant> {
                let mut query = QueryBuilder::<$db>::new("UPDATE access_grants SET revoked_at = ");
                query.push_bind(stored_time(at));
                query.push(", revoked_by = ").push_bind(by);
                query.push(", revoke_reason = ").push_bind(reason);
                query.push(" WHERE id = ").push_bind(id).push(" AND revoked_at IS NULL");
                query.push(" RETURNING ").push(GRANT_COLUMNS);
                let mut conn = self.$write.acquire().await.map_err(db_error)?;
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
                let mut query = QueryBuilder::<$db>::new("INSERT INTO error_reports (");
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
                    .fetch_one(&self.$write)
                    .await
                    .map_err(|e| dataset_write_error(e, &new.dataset, &format!("error report {}", new.id)))?;
                report(&row)
            }

            async fn get_report(&self, id: &str) -> Result<Option<ErrorReport>> {
                let mut conn = self.$read.acquire().await.map_err(db_error)?;
                fetch_by_id(&mut conn, "error_reports", REPORT_COLUMNS, id, report).await
            }

            async fn list_reports(&self, filter: &ReportFilter, after: Option<&str>, limit: u32) -> Result<Vec<ErrorReport>> {
                let mut query = QueryBuilder::<$db>::new("SELECT ");
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
                let rows = query.build().fetch_all(&self.$read).await.map_err(db_error)?;
                rows.iter().map(report).collect()
            }

            /// A compare-and-set on the state: only an open report is resolved.
            async fn resolve_report(&self, resolved: &ErrorReport) -> Result<ErrorReport> {
                check_resolution(resolved)?;
                let mut query = QueryBuilder::<$db>::new("UPDATE error_reports SET state = ");
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
                let mut conn = self.$write.acquire().await.map_err(db_error)?;
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
    };
}
pub(crate) use access_store;

#[cfg(test)]
mod tests {
    use chrono::{NaiveDate, TimeZone, Utc};
    use xinqiao_domain::access::AccessApplication;

    use super::*;

    #[test]
    fn masks_round_trip_as_pairs() {
        let masks = vec![
            ("id".to_string(), MaskRule::ResidentId),
            ("name".to_string(), MaskRule::Keep { first: 1, last: 2 }),
        ];
        let text = masks_json(&masks).expect("encode");
        assert_eq!(text, r#"[["id","resident_id"],["name","keep:1:2"]]"#);
        assert_eq!(parse_masks(&text).expect("decode"), masks);
        assert!(parse_masks(r#"[["id","rot13"]]"#).is_err());
        assert!(parse_masks("{}").is_err());
        assert_eq!(
            parse_fields(r#"["a","名称"]"#, "fields").expect("fields"),
            ["a", "名称"]
        );
        assert!(parse_fields("[1]", "fields").is_err());
    }

    #[test]
    fn an_answer_names_its_grant() {
        let day = NaiveDate::from_ymd_opt(2026, 3, 1).expect("day");
        let at = Utc.with_ymd_and_hms(2026, 3, 1, 8, 0, 0).single().expect("instant");
        let mut request = AccessRequest {
            id: "r1".into(),
            application: AccessApplication {
                dataset: "102/000001".into(),
                purpose: "p".into(),
                scope: "s".into(),
                fields: vec![],
                period_from: day,
                period_until: day,
                business_system: "b".into(),
                operations: vec![],
            },
            provider_code: "P".into(),
            applicant_code: "A".into(),
            state: RequestState::Rejected,
            submitted_at: at,
            due_on: day,
            answered_at: Some(at),
            answered_by: "P".into(),
            reason: "no".into(),
            grant_id: None,
        };
        assert!(check_settlement(&request, None).is_ok());
        let grant = AccessGrant {
            id: "g1".into(),
            request_id: "r1".into(),
            dataset: "102/000001".into(),
            provider_code: "P".into(),
            grantee_code: "A".into(),
            purpose: "p".into(),
            business_system: "b".into(),
            fields: vec![],
            masks: vec![],
            operations: vec![],
            granted_at: at,
            granted_by: "P".into(),
            expires_at: at,
            revoked_at: None,
            revoked_by: String::new(),
            revoke_reason: String::new(),
        };
        assert!(check_settlement(&request, Some(&grant)).is_err());
        request.state = RequestState::Approved;
        assert!(check_settlement(&request, None).is_err());
        request.grant_id = Some("g1".into());
        assert!(check_settlement(&request, Some(&grant)).is_ok());
        request.grant_id = Some("g2".into());
        assert!(check_settlement(&request, Some(&grant)).is_err());
        request.state = RequestState::Pending;
        assert!(check_settlement(&request, None).is_err());
    }
}
