//! The storage baselines: the same rows written straight into the hub's own `changes` table by the
//! database's fastest native path, and read back by one plain scan. The rows carry a dataset id of
//! their own, so they share the table, its indexes and its durability settings with the hub's.

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{QueryBuilder, Row, Sqlite};
use tokio_stream::StreamExt;

use crate::report::{Ctx, Res};

const COLUMNS: &str = "dataset, sequence, op, key, record, published_at";
/// Microseconds from the Unix epoch to PostgreSQL's, 2000-01-01.
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

pub enum Raw {
    Sqlite { writer: SqlitePool, reader: SqlitePool },
    Pg { pool: PgPool },
}

impl Raw {
    /// The hub's SQLite file, with the hub's settings: WAL, synchronous=NORMAL, a busy timeout.
    pub async fn sqlite(url: &str) -> Res<Raw> {
        let options = SqliteConnectOptions::from_str(url)
            .ctx("SQLite URL")?
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(5));
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(
                options
                    .clone()
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Normal),
            )
            .await
            .ctx("opening the SQLite file")?;
        let reader = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await
            .ctx("opening the SQLite file")?;
        Ok(Raw::Sqlite { writer, reader })
    }

    /// The hub's PostgreSQL schema (its search_path), with the server's default durability.
    pub async fn pg(url: &str, schema: &str) -> Res<Raw> {
        let options = PgConnectOptions::from_str(url)
            .ctx("PostgreSQL URL")?
            .options([("search_path", schema)]);
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await
            .ctx("connecting to PostgreSQL")?;
        Ok(Raw::Pg { pool })
    }

    pub fn method(&self) -> &'static str {
        match self {
            Raw::Sqlite { .. } => "prepared multi-row INSERT, one transaction per batch",
            Raw::Pg { .. } => "binary COPY FROM STDIN, one transaction per batch",
        }
    }

    pub fn scan_method(&self) -> &'static str {
        "one SELECT of every column ordered by sequence, streamed and decoded"
    }

    /// Inserts one batch as upserts numbered from `first`, committing it.
    pub async fn insert_batch(&self, dataset: &str, first: i64, rows: &[(&str, &str)]) -> Res<()> {
        let at = Utc::now();
        match self {
            Raw::Sqlite { writer, .. } => {
                let mut tx = writer.begin_with("BEGIN IMMEDIATE").await.ctx("BEGIN")?;
                let mut query = QueryBuilder::<Sqlite>::new(format!("INSERT INTO changes ({COLUMNS}) "));
                query.push_values(rows.iter().zip(first..), |mut row, ((key, record), sequence)| {
                    row.push_bind(dataset)
                        .push_bind(sequence)
                        .push_bind("upsert")
                        .push_bind(*key)
                        .push_bind(*record)
                        .push_bind(at);
                });
                query.build().execute(&mut *tx).await.ctx("INSERT")?;
                tx.commit().await.ctx("COMMIT")
            }
            Raw::Pg { pool } => {
                let data = copy_binary(dataset, first, rows, at);
                let mut tx = pool.begin().await.ctx("BEGIN")?;
                let mut copy = tx
                    .copy_in_raw(&format!("COPY changes ({COLUMNS}) FROM STDIN (FORMAT binary)"))
                    .await
                    .ctx("COPY")?;
                copy.send(data).await.ctx("COPY data")?;
                copy.finish().await.ctx("COPY end")?;
                tx.commit().await.ctx("COMMIT")
            }
        }
    }

    /// Reads every change of `dataset` in order, decoding each column as the hub does. Returns the
    /// rows and record bytes read.
    pub async fn scan(&self, dataset: &str) -> Res<(u64, u64)> {
        let (mut rows, mut bytes) = (0u64, 0u64);
        macro_rules! drain {
            ($pool:expr, $sql:expr) => {{
                let sql = concat!(
                    "SELECT sequence, op, key, record, published_at FROM changes WHERE dataset = ",
                    $sql,
                    " ORDER BY sequence"
                );
                let mut stream = sqlx::query(sql).bind(dataset).fetch($pool);
                while let Some(row) = stream.next().await {
                    let row = row.ctx("scan")?;
                    let _sequence: i64 = row.try_get(0).ctx("sequence")?;
                    let _op: String = row.try_get(1).ctx("op")?;
                    let _key: String = row.try_get(2).ctx("key")?;
                    let record: Option<String> = row.try_get(3).ctx("record")?;
                    let _at: DateTime<Utc> = row.try_get(4).ctx("published_at")?;
                    rows += 1;
                    bytes += record.map_or(0, |r| r.len() as u64);
                }
            }};
        }
        match self {
            Raw::Sqlite { reader, .. } => drain!(reader, "?"),
            Raw::Pg { pool } => drain!(pool, "$1"),
        }
        Ok((rows, bytes))
    }

    /// The rows of `dataset` and the bytes of their records, as stored: the check that a writer
    /// wrote what it was given.
    pub async fn stored(&self, dataset: &str) -> Res<(u64, u64)> {
        let (rows, bytes): (i64, i64) = match self {
            Raw::Sqlite { reader, .. } => sqlx::query_as(
                "SELECT count(*), coalesce(sum(length(CAST(record AS BLOB))), 0) FROM changes WHERE dataset = ?",
            )
            .bind(dataset)
            .fetch_one(reader)
            .await
            .ctx("counting rows")?,
            Raw::Pg { pool } => sqlx::query_as(
                "SELECT count(*), coalesce(sum(octet_length(record)), 0)::bigint FROM changes WHERE dataset = $1",
            )
            .bind(dataset)
            .fetch_one(pool)
            .await
            .ctx("counting rows")?,
        };
        Ok((rows as u64, bytes as u64))
    }

    pub async fn close(&self) {
        match self {
            Raw::Sqlite { writer, reader } => {
                reader.close().await;
                writer.close().await;
            }
            Raw::Pg { pool } => pool.close().await,
        }
    }
}

/// One batch in PostgreSQL's binary COPY format.
pub fn copy_binary(dataset: &str, first: i64, rows: &[(&str, &str)], at: DateTime<Utc>) -> Vec<u8> {
    let size: usize = rows.iter().map(|(k, r)| k.len() + r.len() + dataset.len() + 60).sum();
    let mut out = Vec::with_capacity(size + 32);
    out.extend_from_slice(b"PGCOPY\n\xff\r\n\0");
    out.extend_from_slice(&0u32.to_be_bytes()); // flags
    out.extend_from_slice(&0u32.to_be_bytes()); // header extension
    let text = |out: &mut Vec<u8>, s: &str| {
        out.extend_from_slice(&(s.len() as i32).to_be_bytes());
        out.extend_from_slice(s.as_bytes());
    };
    let micros = at.timestamp_micros() - PG_EPOCH_MICROS;
    for ((key, record), sequence) in rows.iter().zip(first..) {
        out.extend_from_slice(&6i16.to_be_bytes());
        text(&mut out, dataset);
        out.extend_from_slice(&8i32.to_be_bytes());
        out.extend_from_slice(&sequence.to_be_bytes());
        text(&mut out, "upsert");
        text(&mut out, key);
        text(&mut out, record);
        out.extend_from_slice(&8i32.to_be_bytes());
        out.extend_from_slice(&micros.to_be_bytes());
    }
    out.extend_from_slice(&(-1i16).to_be_bytes());
    out
}
