//! The one place where domain errors become gRPC statuses.

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};
use xinqiao_domain::Error;

/// The longest message a status carries. A status travels in response headers, which clients
/// refuse beyond 16 KiB: message and details together must stay well inside that, whatever a
/// caller's input that they echo (non-ASCII text grows threefold when percent-encoded, binary
/// details by a third in base64).
const MAX_MESSAGE_CHARS: usize = 300;
/// How much of a status's details its violations or reasons may fill (bytes of field names and
/// descriptions; the rest are counted), at most how many, and the longest field name and
/// description of each. Every ordinary problem of a request fits: a caller hears of them all at
/// once.
const MAX_DETAIL_BYTES: usize = 4096;
const MAX_DETAILS: usize = 100;
const MAX_FIELD_CHARS: usize = 80;
const MAX_DESCRIPTION_CHARS: usize = 120;

/// Maps a domain error to the status a caller sees. Internal details (SQL, paths) are logged
/// here and never sent. Messages and details are bounded in size.
pub fn to_status(error: Error) -> Status {
    let status = unbounded_status(error);
    if status.message().chars().count() > MAX_MESSAGE_CHARS {
        return Status::with_details(
            status.code(),
            bounded(status.message()),
            status.details().to_vec().into(),
        );
    }
    status
}

/// The (field, description) pairs that fit the details' budget, each shortened, in order.
fn within_budget<'a>(pairs: impl Iterator<Item = (&'a str, &'a str)>) -> Vec<(String, String)> {
    let mut used = 0;
    let mut listed = Vec::new();
    for (field, description) in pairs.take(MAX_DETAILS) {
        let field = xinqiao_domain::text::shorten(field, MAX_FIELD_CHARS);
        let description = xinqiao_domain::text::shorten(description, MAX_DESCRIPTION_CHARS);
        used += field.len() + description.len();
        if used > MAX_DETAIL_BYTES {
            break;
        }
        listed.push((field, description));
    }
    listed
}

fn bounded(message: &str) -> String {
    xinqiao_domain::text::shorten(message, MAX_MESSAGE_CHARS)
}

fn unbounded_status(error: Error) -> Status {
    match error {
        Error::NotFound(what) => Status::not_found(format!("{what} not found")),
        Error::AlreadyExists(what) => Status::already_exists(format!("{what} already exists")),
        Error::InvalidArgument(violations) => {
            let message = violations
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ");
            let mut details = ErrorDetails::new();
            let listed = within_budget(violations.iter().map(|v| (v.field.as_str(), v.description.as_str())));
            for (field, description) in &listed {
                details.add_bad_request_violation(field.clone(), description.clone());
            }
            if violations.len() > listed.len() {
                details.add_bad_request_violation("…", format!("and {} more", violations.len() - listed.len()));
            }
            // The details carry the message too (google.rpc.Status), so it is bounded first.
            Status::with_error_details(Code::InvalidArgument, bounded(&message), details)
        }
        Error::FailedPrecondition(why) => Status::failed_precondition(why),
        Error::Incompatible(reasons) => {
            let message = format!(
                "the schema is not compatible: {}",
                reasons.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
            );
            let mut details = ErrorDetails::new();
            let listed = within_budget(reasons.iter().map(|r| (r.pointer.as_str(), r.reason.as_str())));
            for (pointer, reason) in &listed {
                details.add_precondition_failure_violation("COMPATIBILITY", pointer.clone(), reason.clone());
            }
            if reasons.len() > listed.len() {
                details.add_precondition_failure_violation(
                    "COMPATIBILITY",
                    "",
                    format!("and {} more", reasons.len() - listed.len()),
                );
            }
            Status::with_error_details(Code::FailedPrecondition, bounded(&message), details)
        }
        Error::PermissionDenied(why) => Status::permission_denied(why),
        Error::Unauthenticated(why) => Status::unauthenticated(why),
        Error::ResourceExhausted(why) => Status::resource_exhausted(why),
        Error::Aborted(why) => Status::aborted(why),
        Error::Unavailable(why) => Status::unavailable(why),
        Error::DeadlineExceeded(why) => Status::deadline_exceeded(why),
        Error::Throttled { why, retry_after } => {
            let details = ErrorDetails::with_retry_info(Some(retry_after));
            Status::with_error_details(Code::ResourceExhausted, bounded(&why), details)
        }
        Error::Internal(detail) => {
            tracing::error!(%detail, "internal error");
            Status::internal("internal error; the hub's log has the details")
        }
    }
}

/// Runs a handler body and maps its error to a status: the one exit of every unary handler.
pub async fn answer<T>(body: impl Future<Output = xinqiao_domain::Result<T>>) -> Result<tonic::Response<T>, Status> {
    body.await.map(tonic::Response::new).map_err(to_status)
}

#[cfg(test)]
mod tests {
    use super::*;
    use xinqiao_domain::FieldViolation;

    #[test]
    fn violations_travel_as_bad_request_details() {
        let status = to_status(Error::InvalidArgument(vec![FieldViolation::new(
            "code",
            "check character is 'E', expected 'D'",
        )]));
        assert_eq!(status.code(), Code::InvalidArgument);
        let bad = status.get_details_bad_request().expect("BadRequest details");
        assert_eq!(bad.field_violations[0].field, "code");
    }

    #[test]
    fn long_messages_and_many_violations_are_bounded() {
        let long = to_status(Error::NotFound("x".repeat(100_000)));
        assert_eq!(long.code(), Code::NotFound);
        assert!(
            long.message().chars().count() <= MAX_MESSAGE_CHARS + 1,
            "{}",
            long.message().len()
        );
        let many = to_status(Error::InvalidArgument(
            (0..100_000)
                .map(|i| FieldViolation::new(format!("fields[{i}]"), "unknown"))
                .collect(),
        ));
        assert_eq!(many.code(), Code::InvalidArgument);
        assert!(many.message().chars().count() <= MAX_MESSAGE_CHARS + 1);
        let bad = many.get_details_bad_request().expect("BadRequest details");
        assert_eq!(bad.field_violations.len(), MAX_DETAILS + 1);
        assert_eq!(
            bad.field_violations[MAX_DETAILS].description,
            format!("and {} more", 100_000 - MAX_DETAILS)
        );
        // What goes into the headers stays far below the 16 KiB clients accept, even in Chinese.
        let wide = to_status(Error::InvalidArgument(
            (0..100)
                .map(|_| FieldViolation::new("名".repeat(1000), "错".repeat(1000)))
                .collect(),
        ));
        let response = wide.into_http::<()>();
        let size: usize = response.headers().iter().map(|(k, v)| k.as_str().len() + v.len()).sum();
        let sizes: Vec<(String, usize)> = response
            .headers()
            .iter()
            .map(|(k, v)| (k.to_string(), v.len()))
            .collect();
        assert!(size < 12 * 1024, "{size} bytes of headers: {sizes:?}");
    }

    #[test]
    fn internal_details_are_not_sent() {
        let status = to_status(Error::Internal(
            "UNIQUE constraint failed: departments.code at /var/lib/x.db".into(),
        ));
        assert_eq!(status.code(), Code::Internal);
        assert!(!status.message().contains("UNIQUE"));
        assert!(!status.message().contains("/var"));
    }
}
