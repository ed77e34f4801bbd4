//! Record validation against the shared JSON Schemas of the registry.
//!
//! - [`formats`]: the identifier formats `uscc`, `cn-resident-id`, `cn-division-code` and
//!   `cn-mobile`, checked by the rules in `xinqiao_domain::identifiers`, strictly or leniently.
//! - [`references`]: `$ref` to `xinqiao://schemas/<subject>/<version>` through a [`SchemaSource`];
//!   nothing is fetched from the network or the filesystem.
//! - [`compile`] and [`CompiledSchema`]: draft 2020-12 (default) or draft-07, `format` asserted.
//! - [`ValidatorCache`]: one compilation per subject, version and mode, shared by the hub's tasks.
//! - [`records`]: streaming NDJSON and CSV readers for the offline `xinqiao validate` command.

pub mod cache;
pub mod compiled;
pub mod error;
pub mod formats;
pub mod records;
pub mod references;

pub use cache::ValidatorCache;
pub use compiled::{CompiledSchema, DEFAULT_MAX_ERRORS, RecordOutcome, Violation, compile};
pub use error::SchemaError;
pub use formats::{FormatMode, IdentifierFormat};
pub use references::{NoReferences, SchemaSource, parse_reference, reference_uri, references};
