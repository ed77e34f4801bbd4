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
