//! The one place where domain errors become gRPC statuses.

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};
use xinqiao_domain::Error;

/// Maps a domain error to the status a caller sees. Internal details (SQL, paths) are logged
/// here and never sent.
pub fn to_status(error: Error) -> Status {
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
            for v in &violations {
                details.add_bad_request_violation(v.field.clone(), v.description.clone());
            }
            Status::with_error_details(Code::InvalidArgument, message, details)
        }
        Error::FailedPrecondition(why) => Status::failed_precondition(why),
        Error::Incompatible(reasons) => {
            let message = format!(
                "the schema is not compatible: {}",
                reasons.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
            );
            let mut details = ErrorDetails::new();
            for r in &reasons {
                details.add_precondition_failure_violation("COMPATIBILITY", r.pointer.clone(), r.reason.clone());
            }
            Status::with_error_details(Code::FailedPrecondition, message, details)
        }
        Error::PermissionDenied(why) => Status::permission_denied(why),
        Error::Unauthenticated(why) => Status::unauthenticated(why),
        Error::ResourceExhausted(why) => Status::resource_exhausted(why),
        Error::Aborted(why) => Status::aborted(why),
        Error::Unavailable(why) => Status::unavailable(why),
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
    fn internal_details_are_not_sent() {
        let status = to_status(Error::Internal(
            "UNIQUE constraint failed: departments.code at /var/lib/x.db".into(),
        ));
        assert_eq!(status.code(), Code::Internal);
        assert!(!status.message().contains("UNIQUE"));
        assert!(!status.message().contains("/var"));
    }
}
