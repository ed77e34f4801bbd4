//! Database errors leave the store as domain errors. The detail of anything unexpected goes to
//! the log; the caller only learns the kind, since the hub never shows `Internal` text.

use sqlx::migrate::MigrateError;
use xinqiao_domain::Error;

/// SQLSTATEs PostgreSQL uses when a transaction lost to a concurrent one: serialization_failure
/// and deadlock_detected. The caller may retry.
const PG_CONFLICTS: [&str; 2] = ["40001", "40P01"];

/// SQLite's primary result codes for "the database is locked by someone else" (SQLITE_BUSY,
/// SQLITE_LOCKED), which the extended codes carry in their low byte. Seen after busy_timeout ran
/// out, or from another process writing the same file.
const SQLITE_BUSY: i64 = 5;
const SQLITE_LOCKED: i64 = 6;
/// SQLite's "database or disk is full" (SQLITE_FULL), and its I/O error class (SQLITE_IOERR).
const SQLITE_FULL: i64 = 13;
const SQLITE_IOERR: i64 = 10;

/// PostgreSQL's SQLSTATEs for "the server went away": the connection exception class (08…),
/// and admin_shutdown, crash_shutdown, cannot_connect_now (the server restarting).
const PG_GONE_CLASS: &str = "08";
const PG_GONE: [&str; 3] = ["57P01", "57P02", "57P03"];
/// PostgreSQL's disk_full; the rest of class 53 (insufficient resources: memory, connections)
/// passes with time, like an unreachable server.
const PG_DISK_FULL: &str = "53100";
const PG_RESOURCES_CLASS: &str = "53";

/// Translates an error from a write; `subject` names what was written (for example
/// "department 11100000000013127D") and becomes the ALREADY_EXISTS message on a unique violation
/// (SQLSTATE 23505 on PostgreSQL, SQLITE_CONSTRAINT_UNIQUE 2067 / _PRIMARYKEY 1555 on SQLite).
pub(crate) fn translate(err: sqlx::Error, subject: &str) -> Error {
    if let sqlx::Error::Database(db) = &err {
        if db.is_unique_violation() {
            return Error::AlreadyExists(subject.to_string());
        }
        let code = db.code();
        let code = code.as_deref().unwrap_or_default();
        if PG_CONFLICTS.contains(&code) {
            return Error::Aborted(format!("{subject} was changed concurrently; read it again and retry"));
        }
        if is_sqlite_busy(db.as_ref(), code) {
            tracing::error!(error = %err, "database busy");
            return unavailable();
        }
        if sqlite_code(db.as_ref(), code) == Some(SQLITE_FULL) || code == PG_DISK_FULL {
            tracing::error!(error = %err, "database storage full");
            return Error::ResourceExhausted(
                "the hub's database storage is full; nothing was written. Try again once the operators have made room"
                    .into(),
            );
        }
        if sqlite_code(db.as_ref(), code) == Some(SQLITE_IOERR)
            || code.starts_with(PG_GONE_CLASS)
            || code.starts_with(PG_RESOURCES_CLASS)
            || PG_GONE.contains(&code)
        {
            tracing::error!(error = %err, "database unavailable");
            return unavailable();
        }
    }
    match err {
        // Connections ran out or the server cannot be reached: transient, worth a retry.
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
            tracing::error!(error = %err, "database unavailable");
            unavailable()
        }
        err => {
            tracing::error!(error = %err, "database error");
            Error::Internal(format!("database: {err}"))
        }
    }
}

/// Translates an error from a write into a row that refers to a dataset: a foreign key
/// violation means the dataset does not exist.
pub(crate) fn dataset_write_error(err: sqlx::Error, dataset: &str, subject: &str) -> Error {
    match &err {
        sqlx::Error::Database(db) if db.is_foreign_key_violation() => Error::NotFound(format!("dataset {dataset}")),
        _ => translate(err, subject),
    }
}

/// Translates an error from a read, where no constraint can be violated.
pub(crate) fn db_error(err: sqlx::Error) -> Error {
    translate(err, "the record")
}

/// Translates a failure to bring the schema up to date at start-up.
pub(crate) fn migrate_error(err: MigrateError) -> Error {
    match err {
        MigrateError::Execute(err) => db_error(err),
        MigrateError::VersionMissing(version) => Error::FailedPrecondition(format!(
            "the database has migration {version}, which this build does not know: a newer hub migrated it; run that hub's version"
        )),
        MigrateError::VersionMismatch(version) => Error::FailedPrecondition(format!(
            "migration {version} applied to the database differs from this build's: the database or the build was altered"
        )),
        MigrateError::Dirty(version) => Error::FailedPrecondition(format!(
            "migration {version} failed part-way earlier; repair the database by hand (or restore a backup) before migrating again"
        )),
        err => {
            tracing::error!(error = %err, "database migration failed");
            Error::Internal(format!("migration: {err}"))
        }
    }
}

/// A value read back that the domain does not accept (an unknown enumeration text, a negative
/// version): the database was changed behind the store's back.
pub(crate) fn corrupt(column: &str, detail: impl std::fmt::Display) -> Error {
    tracing::error!(column, %detail, "unreadable value in the database");
    Error::Internal(format!("unreadable {column}: {detail}"))
}

fn unavailable() -> Error {
    Error::Unavailable("the database is busy or unreachable; try again".into())
}

fn is_sqlite_busy(db: &dyn sqlx::error::DatabaseError, code: &str) -> bool {
    sqlite_code(db, code).is_some_and(|c| matches!(c, SQLITE_BUSY | SQLITE_LOCKED))
}

/// The primary result code of a SQLite error (the low byte of its extended code).
fn sqlite_code(db: &dyn sqlx::error::DatabaseError, code: &str) -> Option<i64> {
    db.try_downcast_ref::<sqlx::sqlite::SqliteError>()?;
    code.parse::<i64>().ok().map(|c| c & 0xff)
}
