//! Xinqiao's domain: the rules of government information-resource sharing, with no I/O.
//!
//! Everything here is a plain value or a pure function, tested beside its code. The hub and the
//! store speak in these types; `tonic::Status` and SQL never appear here.

pub mod access;
pub mod audit;
pub mod catalogue;
pub mod compatibility;
pub mod dcat;
pub mod department;
pub mod error;
pub mod exchange;
pub mod federation;
pub mod fingerprint;
pub mod identifiers;
pub mod identity;
pub mod interface;
pub mod lifecycle;
pub mod masking;
pub mod paging;
pub mod policy;
pub mod schema;
pub mod scorecard;
pub mod search;
pub mod text;
pub mod workdays;

pub use error::{Error, FieldViolation, Result};
