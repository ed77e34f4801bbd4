//! The one error type of the domain. The hub maps it to a gRPC status in one place.

use std::fmt;

/// One invalid field of a request, reported back to the caller (google.rpc.BadRequest).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    /// Where the problem is, for example `content.items[2].name`.
    pub field: String,
    /// What is wrong, in words the caller can act on.
    pub description: String,
}

impl FieldViolation {
    pub fn new(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            description: description.into(),
        }
    }
}

impl fmt::Display for FieldViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.description)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0} already exists")]
    AlreadyExists(String),
    #[error("invalid request: {}", join(.0))]
    InvalidArgument(Vec<FieldViolation>),
    /// The operation is not allowed in the current state (for example a lifecycle transition).
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),
    #[error("{0}")]
    ResourceExhausted(String),
    /// A schema change that the subject's compatibility mode does not allow, with every reason.
    #[error("incompatible schema: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Incompatible(Vec<crate::compatibility::Incompatibility>),
    /// A concurrent change won; the caller may re-read and retry.
    #[error("{0}")]
    Aborted(String),
    #[error("{0}")]
    Unavailable(String),
    /// Something the hub waits on (an upstream service) did not answer in time.
    #[error("{0}")]
    DeadlineExceeded(String),
    /// A limit of calls per time: the caller may try again after `retry_after`.
    #[error("{why}")]
    Throttled {
        why: String,
        retry_after: std::time::Duration,
    },
    /// Something failed inside the hub. The text is for the log, never for the caller.
    #[error("internal error: {0}")]
    Internal(String),
}

fn join(violations: &[FieldViolation]) -> String {
    violations
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

impl Error {
    pub fn invalid(field: impl Into<String>, description: impl Into<String>) -> Self {
        Error::InvalidArgument(vec![FieldViolation::new(field, description)])
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Collects field violations while a request is checked, so the caller learns every problem at once.
#[derive(Debug, Default)]
pub struct Violations(Vec<FieldViolation>);

impl Violations {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn add(&mut self, field: impl Into<String>, description: impl Into<String>) {
        self.0.push(FieldViolation::new(field, description));
    }

    /// Records the violation of a check that returned one.
    pub fn check(&mut self, field: impl Into<String>, outcome: std::result::Result<(), String>) {
        if let Err(description) = outcome {
            self.add(field, description);
        }
    }

    pub fn into_result(self) -> Result<()> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(Error::InvalidArgument(self.0))
        }
    }
}
