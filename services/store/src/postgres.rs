//! PostgreSQL, for production and for several hub nodes over one database.
//!
//! Nothing here assumes this hub is alone: resource codes come from a counter row locked inside
//! the creating transaction, entry versions are compare-and-set on the version column, and the
//! schema is migrated under an advisory lock so that hubs may start together.

use std::str::FromStr;
use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgListener, PgPool, PgPoolOptions, PgRow};
use sqlx::{Connection, Decode, Postgres, Row, Type};
use xinqiao_domain::{Error, Result};

use crate::StoredChange;
use crate::error::{db_error, migrate_error};
// PostgreSQL keeps microseconds (rounding the rest); truncating first makes the value stored
// exactly the value given, on both backends.
use crate::exchange::bound;
use crate::interface::stored_time;

// What the drain (`drain.rs`, the backend's own read of a dataset's changes) shares with the rest
// of the exchange.
use crate::access::stored_u64;
use crate::exchange::dataset_not_found;
use exchange::stored_change;

mod access;
mod audit;
mod catalog;
mod departments;
mod drain;
mod exchange;
mod operations;
mod schemas;

const MAX_CONNECTIONS: u32 = 16;
/// How long a request waits for a pooled connection before UNAVAILABLE. It is also how long a call
/// waits for a database that went away (the pool keeps trying to connect), and a failed call's
/// audit event may wait as long again: short enough that a caller hears UNAVAILABLE well before
/// its own deadline, long enough for a fast restart of PostgreSQL to go unnoticed.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// The row locks a transaction takes on a row it reads and then changes (FOR UPDATE) or relies on
/// staying as it is (FOR SHARE), so that the transactions of every hub node touching it take turns.
const FOR_UPDATE: &str = "FOR UPDATE";
const FOR_SHARE: &str = "FOR SHARE";

/// The store on a PostgreSQL database, shared by every hub node.
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
    /// How to connect for migrations, which run on a connection of their own.
    options: PgConnectOptions,
    /// The schema every table is kept in, when not the search_path's default.
    schema: Option<String>,
}

impl PgStore {
    /// Connects to `postgres://…` and brings the schema up to date. The tables go where the
    /// connection's search_path puts them (normally `public`).
    pub async fn open(url: &str) -> Result<Self> {
        let store = Self::connect(url)?;
        store.migrate().await?;
        Ok(store)
    }

    /// Like [`PgStore::open`], but keeps every table in `schema` (created if missing) by setting
    /// the search_path of each connection: several hubs, or tests, can share one database
    /// without seeing each other. `schema` is a plain lower-case SQL identifier.
    pub async fn open_in_schema(url: &str, schema: &str) -> Result<Self> {
        let store = Self::connect_in_schema(url, schema)?;
        store.migrate().await?;
        Ok(store)
    }

    /// Like [`PgStore::open`], but leaves the schema as it is (see `OperationsStore`). Connections
    /// are made when first needed.
    pub fn connect(url: &str) -> Result<Self> {
        Ok(Self::connect_with(parse_url(url)?, None))
    }

    /// Like [`PgStore::open_in_schema`], but leaves the schema as it is.
    pub fn connect_in_schema(url: &str, schema: &str) -> Result<Self> {
        let valid = schema.len() <= 63
            && schema.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
            && schema
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !valid {
            return Err(Error::invalid(
                "schema",
                "must be 1 to 63 of a-z, 0-9 and _, not starting with a digit",
            ));
        }
        let options = parse_url(url)?.options([("search_path", schema)]);
        Ok(Self::connect_with(options, Some(schema)))
    }

    fn connect_with(options: PgConnectOptions, schema: Option<&str>) -> Self {
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_lazy_with(options.clone());
        PgStore {
            pool,
            options,
            schema: schema.map(str::to_owned),
        }
    }

    /// The migrations this build carries.
    fn migrator() -> Migrator {
        sqlx::migrate!("migrations/postgres")
    }

    async fn migrate(&self) -> Result<()> {
        // sqlx's PostgreSQL migrator (sqlx-postgres 0.9 `migrate.rs`, `Migrate::lock`) holds
        // `pg_advisory_lock` on a key derived from the database name from before it creates its
        // bookkeeping table until every migration is applied, so hubs starting together apply
        // each migration once. Creating the schema is done under the same lock, since concurrent
        // `CREATE SCHEMA IF NOT EXISTS` can still collide.
        let mut migrator = Self::migrator();
        if let Some(schema) = &self.schema {
            migrator.create_schema(schema.clone());
        }
        // The lock belongs to the session, and the migrator does not release it when a migration
        // fails: migrating on a connection of its own, closed afterwards, never leaves a pooled
        // connection holding it.
        let mut conn = PgConnection::connect_with(&self.options).await.map_err(db_error)?;
        let migrated = migrator.run_direct(None, &mut conn, false).await;
        // Closing only says goodbye politely; dropping the connection releases the lock as well.
        let _ = conn.close().await;
        migrated.map_err(migrate_error)
    }

    /// Closes every connection of the pool.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// A write transaction, as SQLite's store begins one (there, IMMEDIATE). Under READ COMMITTED;
    /// concurrent writers are kept apart by row locks (`FOR_UPDATE`) and compare-and-set updates.
    async fn begin_write(&self) -> Result<sqlx::Transaction<'static, Postgres>> {
        self.pool.begin().await.map_err(db_error)
    }

    /// Begins a read-only transaction whose statements all see one snapshot, for reads that take
    /// more than one query.
    async fn begin_snapshot(&self) -> Result<sqlx::Transaction<'static, Postgres>> {
        self.pool
            .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await
            .map_err(db_error)
    }
}

fn parse_url(url: &str) -> Result<PgConnectOptions> {
    PgConnectOptions::from_str(url).map_err(|e| Error::invalid("database_url", format!("is not a PostgreSQL URL: {e}")))
}

fn get<'r, T: Decode<'r, Postgres> + Type<Postgres>>(row: &'r PgRow, column: &str) -> Result<T> {
    row.try_get(column).map_err(db_error)
}

// ---------------------------------------------------------------------------------------------
// Announcements between hub nodes

/// The channel on which committed batches are announced to every hub node. Channels are
/// database-wide, so the payload names the schema first: `<schema> <last sequence> <dataset>`.
const CHANGES_CHANNEL: &str = "xinqiao_changes";

/// How long the listener waits before trying again after losing the database, at first and at
/// most.
const LISTEN_RETRY: Duration = Duration::from_millis(100);
const LISTEN_RETRY_MAX: Duration = Duration::from_secs(10);

/// Reads a notification's payload, `<schema> <last sequence> <dataset>`, if it comes from the
/// store in `schema`.
fn parse_notification<'p>(payload: &'p str, schema: &str) -> Option<(&'p str, u64)> {
    let rest = payload.strip_prefix(schema)?.strip_prefix(' ')?;
    let (sequence, dataset) = rest.split_once(' ')?;
    Some((dataset, sequence.parse().ok()?))
}

/// Departments changed by any hub node, as `<schema> <code>` (see `listen_for_departments`).
const DEPARTMENTS_CHANNEL: &str = "xinqiao_departments";

impl PgStore {
    /// Tells every hub node that a department changed, after the change committed. A lost
    /// notification only delays the other nodes until their cached copy expires, so a failure is
    /// logged, not returned.
    async fn notify_department(&self, code: &str) {
        let sent = sqlx::query("SELECT pg_notify($1, current_schema() || ' ' || $2)")
            .bind(DEPARTMENTS_CHANNEL)
            .bind(code)
            .execute(&self.pool)
            .await;
        if let Err(error) = sent {
            tracing::warn!(%error, code, "could not tell the other hub nodes that a department changed");
        }
    }

    /// The schema this store works in: notifications name it, since several stores (tests, or
    /// several hubs' schemas) may share one database.
    async fn schema_name(&self) -> Result<String> {
        let schema: Option<String> = sqlx::query_scalar("SELECT current_schema()::text")
            .fetch_one(&self.pool)
            .await
            .map_err(db_error)?;
        schema.ok_or_else(|| Error::Internal("the connection has no current schema".into()))
    }

    /// A listener on `channel` over a pool of one kept open, through which PgListener reconnects.
    async fn listener(&self, channel: &str) -> Result<PgListener> {
        let connection = PgPoolOptions::new()
            .max_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_lazy_with((*self.pool.connect_options()).clone());
        let mut listener = PgListener::connect_with(&connection).await.map_err(db_error)?;
        listener.listen(channel).await.map_err(db_error)?;
        Ok(listener)
    }
}

/// Forwards what other hub nodes announce on `listener` into `sink` until it closes or the store
/// does: each payload that `read` accepts (it refuses those of stores in other schemas). A lost
/// connection is reopened on the next receive; announcements made meanwhile are lost, which is
/// why the hub also re-reads now and then. `what` names the announcements in the log.
async fn forward<T>(
    mut listener: PgListener,
    sink: tokio::sync::mpsc::Sender<T>,
    closed: sqlx::pool::CloseEvent,
    what: &str,
    read: impl Fn(&str) -> Option<T>,
) {
    let mut retry = LISTEN_RETRY;
    tokio::pin!(closed);
    loop {
        let received = tokio::select! {
            received = listener.recv() => received,
            () = sink.closed() => break,
            () = &mut closed => break,
        };
        match received {
            Ok(notification) => {
                retry = LISTEN_RETRY;
                let Some(announced) = read(notification.payload()) else {
                    continue;
                };
                if sink.send(announced).await.is_err() {
                    break;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?retry, "listening for {what} failed");
                tokio::select! {
                    () = tokio::time::sleep(retry) => {}
                    () = sink.closed() => break,
                }
                retry = (retry * 2).min(LISTEN_RETRY_MAX);
            }
        }
    }
}

/// Forwards the codes of departments that other nodes changed in this schema.
async fn forward_departments(
    listener: PgListener,
    schema: String,
    sink: tokio::sync::mpsc::Sender<String>,
    closed: sqlx::pool::CloseEvent,
) {
    let read = |payload: &str| {
        let (from, code) = payload.split_once(' ')?;
        (from == schema).then(|| code.to_string())
    };
    forward(listener, sink, closed, "department changes", read).await;
}

/// Forwards the heads (dataset, last sequence) that other nodes committed in this schema.
async fn forward_changes(
    listener: PgListener,
    schema: String,
    sink: tokio::sync::mpsc::Sender<(String, u64)>,
    closed: sqlx::pool::CloseEvent,
) {
    let read =
        |payload: &str| parse_notification(payload, &schema).map(|(dataset, sequence)| (dataset.to_string(), sequence));
    forward(listener, sink, closed, "other hub nodes' changes", read).await;
}

crate::interface::interface_store!(PgStore, sqlx::Postgres, pool, pool);
crate::federation::federation_store!(PgStore, sqlx::Postgres, pool, pool);
crate::console::console_store!(PgStore, sqlx::Postgres, pool, pool);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notifications_are_read_for_their_schema_only() {
        assert_eq!(
            parse_notification("xq_a 42 102/000001", "xq_a"),
            Some(("102/000001", 42))
        );
        assert_eq!(parse_notification("public 7 a b", "public"), Some(("a b", 7)));
        assert_eq!(parse_notification("xq_a 42 102/000001", "xq_b"), None);
        assert_eq!(parse_notification("xq_ab 42 102/000001", "xq_a"), None);
        assert_eq!(parse_notification("xq_a x 102/000001", "xq_a"), None);
        assert_eq!(parse_notification("xq_a 42", "xq_a"), None);
    }
}
