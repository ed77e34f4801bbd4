//! The native-driver floor (issue #16): the raw baselines again, but through each engine's own
//! driver rather than sqlx, which the hub and the raw baselines share. SQLite: rusqlite stepping
//! one prepared single-row INSERT in transactions of a batch each; PostgreSQL: tokio-postgres
//! binary COPY. Same file or schema, same `changes` table, same rows and record bytes, so the
//! report can say how much of the raw baseline is the driver's own cost.

use std::path::Path;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use futures_util::SinkExt;
use rusqlite::{Connection, TransactionBehavior};
use tokio_postgres::{Client, NoTls, Statement};
use tokio_stream::StreamExt;

use crate::raw::copy_binary;
use crate::report::{Ctx, Res};

const INSERT_SQLITE: &str =
    "INSERT INTO changes (dataset, sequence, op, key, record, published_at) VALUES (?1, ?2, 'upsert', ?3, ?4, ?5)";
const COPY_PG: &str = "COPY changes (dataset, sequence, op, key, record, published_at) FROM STDIN (FORMAT binary)";
/// The raw baseline's scan, word for word.
const SCAN_SQLITE: &str =
    "SELECT sequence, op, key, record, published_at FROM changes WHERE dataset = ?1 ORDER BY sequence";
const SCAN_PG: &str =
    "SELECT sequence, op, key, record, published_at FROM changes WHERE dataset = $1 ORDER BY sequence";

pub enum Native {
    Sqlite {
        writer: Connection,
        reader: Connection,
    },
    Pg {
        client: Client,
        connection: tokio::task::JoinHandle<()>,
        copy: Statement,
        scan: Statement,
    },
}

impl Native {
    /// The hub's SQLite file, with the pragmas the hub's writer sets: WAL, synchronous=NORMAL,
    /// foreign keys and a 5 s busy timeout (the readers leave the journal mode alone).
    pub fn sqlite(path: &Path) -> Res<Native> {
        let open = || -> Res<Connection> {
            let conn = Connection::open(path).ctx("opening the SQLite file with rusqlite")?;
            conn.busy_timeout(Duration::from_secs(5)).ctx("busy_timeout")?;
            conn.pragma_update(None, "foreign_keys", "ON").ctx("foreign_keys")?;
            Ok(conn)
        };
        let writer = open()?;
        writer.pragma_update(None, "journal_mode", "WAL").ctx("journal_mode")?;
        writer.pragma_update(None, "synchronous", "NORMAL").ctx("synchronous")?;
        Ok(Native::Sqlite {
            writer,
            reader: open()?,
        })
    }

    /// The hub's PostgreSQL schema, on a connection of its own with the server's defaults (no
    /// TLS: the benchmark's server is on loopback).
    pub async fn pg(url: &str, schema: &str) -> Res<Native> {
        let (client, connection) = tokio_postgres::connect(url, NoTls)
            .await
            .ctx("connecting to PostgreSQL with tokio-postgres")?;
        let connection = tokio::spawn(async move {
            if let Err(e) = connection.await {
                eprintln!("warning: the tokio-postgres connection ended: {e}");
            }
        });
        client
            .batch_execute(&format!("SET search_path TO \"{schema}\""))
            .await
            .ctx("SET search_path")?;
        let copy = client.prepare(COPY_PG).await.ctx("preparing COPY")?;
        let scan = client.prepare(SCAN_PG).await.ctx("preparing the scan")?;
        Ok(Native::Pg {
            client,
            connection,
            copy,
            scan,
        })
    }

    /// What the floor is, for the table's "what" column.
    pub fn what(&self, read: bool) -> &'static str {
        match (self, read) {
            (Native::Sqlite { .. }, false) => "native insert, rusqlite",
            (Native::Sqlite { .. }, true) => "native scan, rusqlite",
            (Native::Pg { .. }, false) => "native COPY, tokio-postgres",
            (Native::Pg { .. }, true) => "native scan, tokio-postgres",
        }
    }

    pub fn method(&self) -> &'static str {
        match self {
            Native::Sqlite { .. } => {
                "rusqlite, one prepared single-row INSERT stepped per row, BEGIN IMMEDIATE … COMMIT per batch, the \
                 whole round on one thread"
            }
            Native::Pg { .. } => {
                "tokio-postgres, a prepared COPY FROM STDIN (FORMAT binary) sent the same bytes as the sqlx baseline in \
                 one message, one transaction per batch"
            }
        }
    }

    pub fn scan_method(&self) -> &'static str {
        match self {
            Native::Sqlite { .. } => {
                "rusqlite stepping the same SELECT, each column decoded into the same owned values"
            }
            Native::Pg { .. } => {
                "tokio-postgres query_raw of the same prepared SELECT (binary results), streamed, each column decoded \
                 into owned values"
            }
        }
    }

    /// What the server says of `synchronous_commit` on this connection (PostgreSQL only).
    pub async fn synchronous_commit(&self) -> Res<Option<String>> {
        match self {
            Native::Sqlite { .. } => Ok(None),
            Native::Pg { client, .. } => {
                let row = client
                    .query_one("SHOW synchronous_commit", &[])
                    .await
                    .ctx("SHOW synchronous_commit")?;
                Ok(Some(row.try_get(0).ctx("synchronous_commit")?))
            }
        }
    }

    /// Inserts `rows` as upserts numbered from `first`, committing every `batch` rows; fails
    /// unless the driver reports every row written.
    pub async fn insert(&mut self, dataset: &str, first: i64, rows: &[(&str, &str)], batch: usize) -> Res<()> {
        let at = Utc::now();
        let batch = batch.max(1);
        let mut written = 0u64;
        match self {
            Native::Sqlite { writer, .. } => {
                // Blocking calls on this worker thread; the runtime moves its other tasks away.
                tokio::task::block_in_place(|| -> Res<()> {
                    let at = at.to_rfc3339_opts(SecondsFormat::AutoSi, false);
                    for (chunk, start) in rows.chunks(batch).zip((first..).step_by(batch)) {
                        let tx = writer
                            .transaction_with_behavior(TransactionBehavior::Immediate)
                            .ctx("BEGIN IMMEDIATE")?;
                        {
                            let mut insert = tx.prepare(INSERT_SQLITE).ctx("preparing INSERT")?;
                            for ((key, record), sequence) in chunk.iter().zip(start..) {
                                written += insert.execute((dataset, sequence, key, record, &at)).ctx("INSERT")? as u64;
                            }
                        }
                        tx.commit().ctx("COMMIT")?;
                    }
                    Ok(())
                })?;
            }
            Native::Pg { client, copy, .. } => {
                for (chunk, start) in rows.chunks(batch).zip((first..).step_by(batch)) {
                    // The bytes the sqlx baseline sends, in one message, so that only the driver
                    // differs. (BinaryCopyInWriter, row by row, hands the connection a message
                    // every 4 KiB: about 0.7 of the sqlx baseline over a Unix socket.)
                    let data = Bytes::from(copy_binary(dataset, start, chunk, at));
                    let tx = client.transaction().await.ctx("BEGIN")?;
                    let sink = tx.copy_in(&*copy).await.ctx("COPY")?;
                    let mut sink = std::pin::pin!(sink);
                    sink.send(data).await.ctx("COPY data")?;
                    written += sink.as_mut().finish().await.ctx("COPY end")?;
                    tx.commit().await.ctx("COMMIT")?;
                }
            }
        }
        if written != rows.len() as u64 {
            return Err(format!(
                "the native insert wrote {written} rows of {} into {dataset}",
                rows.len()
            ));
        }
        Ok(())
    }

    /// Reads every change of `dataset` in order, decoding each column as the raw baseline does.
    /// Returns the rows and record bytes read.
    pub async fn scan(&mut self, dataset: &str) -> Res<(u64, u64)> {
        let (mut rows, mut bytes) = (0u64, 0u64);
        let mut count = |record: Option<String>| {
            rows += 1;
            bytes += record.map_or(0, |r| r.len() as u64);
        };
        match self {
            Native::Sqlite { reader, .. } => tokio::task::block_in_place(|| -> Res<()> {
                let mut select = reader.prepare(SCAN_SQLITE).ctx("preparing the scan")?;
                let mut found = select.query([dataset]).ctx("scan")?;
                while let Some(row) = found.next().ctx("scan")? {
                    let _sequence: i64 = row.get(0).ctx("sequence")?;
                    let _op: String = row.get(1).ctx("op")?;
                    let _key: String = row.get(2).ctx("key")?;
                    let record: Option<String> = row.get(3).ctx("record")?;
                    let at: String = row.get(4).ctx("published_at")?;
                    let _at: DateTime<Utc> = DateTime::parse_from_rfc3339(&at).ctx("published_at")?.to_utc();
                    count(record);
                }
                Ok(())
            })?,
            Native::Pg { client, scan, .. } => {
                let found = client.query_raw(&*scan, [dataset]).await.ctx("scan")?;
                let mut found = std::pin::pin!(found);
                while let Some(row) = found.next().await {
                    let row = row.ctx("scan")?;
                    let _sequence: i64 = row.try_get(0).ctx("sequence")?;
                    let _op: String = row.try_get(1).ctx("op")?;
                    let _key: String = row.try_get(2).ctx("key")?;
                    let record: Option<String> = row.try_get(3).ctx("record")?;
                    let _at: SystemTime = row.try_get(4).ctx("published_at")?;
                    count(record);
                }
            }
        }
        Ok((rows, bytes))
    }

    pub async fn close(self) {
        match self {
            Native::Sqlite { writer, reader } => {
                drop(reader);
                if let Err((_, e)) = writer.close() {
                    eprintln!("warning: closing the rusqlite connection: {e}");
                }
            }
            Native::Pg { client, connection, .. } => {
                drop(client);
                let _ = connection.await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use xinqiao_store::{PgStore, SqliteStore};

    use super::*;
    use crate::raw::Raw;
    use crate::records;

    const ROWS: u64 = 1_200;

    /// Writes 1200 records in batches of 500 (the last one short) through the native floor, then
    /// reads them back through it and through sqlx; a repeated sequence must fail, not vanish.
    async fn round_trip(mut native: Native, raw: &Raw) {
        let keys: Vec<String> = (0..ROWS).map(records::key).collect();
        let texts: Vec<String> = (0..ROWS).map(records::record).collect();
        let rows: Vec<(&str, &str)> = keys.iter().zip(&texts).map(|(k, t)| (k.as_str(), t.as_str())).collect();
        let bytes = ROWS * records::TARGET_BYTES as u64;
        native.insert("native-test", 1, &rows, 500).await.expect("insert");
        assert_eq!(raw.stored("native-test").await, Ok((ROWS, bytes)));
        assert_eq!(native.scan("native-test").await, Ok((ROWS, bytes)));
        assert_eq!(raw.scan("native-test").await, Ok((ROWS, bytes)));
        let again = native.insert("native-test", ROWS as i64, &rows[..1], 500).await;
        assert!(again.is_err(), "{again:?}");
        assert_eq!(raw.stored("native-test").await, Ok((ROWS, bytes)));
        native.close().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_sqlite_floor_writes_what_sqlx_reads() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("floor.db");
        let url = format!("sqlite://{}", path.display());
        let store = SqliteStore::open(&url).await.expect("store");
        let raw = Raw::sqlite(&url).await.expect("raw");
        round_trip(Native::sqlite(&path).expect("native"), &raw).await;
        raw.close().await;
        store.close().await;
    }

    /// Runs where XINQIAO_TEST_DATABASE_URL names a PostgreSQL database (CI sets it).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_postgres_floor_writes_what_sqlx_reads() {
        let Ok(url) = std::env::var("XINQIAO_TEST_DATABASE_URL") else {
            eprintln!("skipped: XINQIAO_TEST_DATABASE_URL is not set");
            return;
        };
        let schema = format!("xq_bench_native_test_{}", std::process::id());
        let store = PgStore::open_in_schema(&url, &schema).await.expect("store");
        let raw = Raw::pg(&url, &schema).await.expect("raw");
        round_trip(Native::pg(&url, &schema).await.expect("native"), &raw).await;
        if let Raw::Pg { pool } = &raw {
            sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA \"{schema}\" CASCADE")))
                .execute(pool)
                .await
                .expect("dropping the schema");
        }
        raw.close().await;
        store.close().await;
    }
}
