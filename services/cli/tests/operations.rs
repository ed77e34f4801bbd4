//! The operations commands against real `xinqiao serve` processes on SQLite: an online backup
//! taken while records are published restores to a consistent hub; `restore` waits for the hub
//! to stop and keeps the database it replaces; `migrate` (and a hub migrating at start) waits for
//! running nodes that would not know the new schema; `check` says what is wrong with its exit
//! code; the HTTP probes follow the hub's state.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use sqlx::Connection;
use support::*;

const BATCH: u64 = 50;

fn xinqiao(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_xinqiao"))
        .args(args)
        .env("XINQIAO_LOG", "error")
        .output()
        .expect("run xinqiao")
}

fn text(output: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn path_arg(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 path")
}

/// Runs statements on the hub's SQLite file from outside, as an operator's tool would.
async fn sql(database: &Path, statements: &[&str]) {
    let options = sqlx::sqlite::SqliteConnectOptions::from_str(&format!("sqlite://{}", database.display()))
        .expect("SQLite URL")
        .busy_timeout(Duration::from_secs(5));
    let mut conn = sqlx::SqliteConnection::connect_with(&options).await.expect("connect");
    for statement in statements {
        sqlx::query(sqlx::AssertSqlSafe(*statement))
            .execute(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("{statement}: {e}"));
    }
    let _ = conn.close().await;
}

/// Publishes batches of `BATCH` records until told to stop; the number of batches acknowledged.
async fn publish_until(port: u16, pki: PathBuf, dataset: String, stop: Arc<AtomicBool>, acked: Arc<AtomicU64>) {
    let mut client = exchange_when_up(port, &pki, SAMR).await;
    let mut b = 0;
    while !stop.load(Ordering::SeqCst) && b < 2_000 {
        let changes = (0..BATCH)
            .map(|i| upsert(record(b * BATCH + i, &format!("batch {b}"))))
            .collect();
        ok(client
            .publish(publish_request(&dataset, &format!("batch-{b}"), changes))
            .await);
        b += 1;
        acked.store(b, Ordering::SeqCst);
    }
}

async fn http_status(port: u16, path: &str) -> Option<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok()?;
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.ok()?;
    String::from_utf8_lossy(&answer).split(' ').nth(1)?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_online_backup_restores_a_consistent_hub_and_restore_keeps_what_it_replaces() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let data = dir.path().join("hub");
    let pki = data.join("pki");
    let (port, probes) = (free_port(), free_port());
    let args = vec![
        "--dev".into(),
        "--data".into(),
        data.as_os_str().to_owned(),
        "--metrics-listen".into(),
        format!("127.0.0.1:{probes}").into(),
    ];
    let mut hub = HubProcess::start(port, &args, &dir.path().join("hub.log")).await;
    // The gRPC port accepts as soon as it is bound; the probes' port a moment later. Alive,
    // then ready, as a load balancer's probe would find it.
    for probe in ["/healthz", "/readyz"] {
        let started = tokio::time::Instant::now();
        while http_status(probes, probe).await != Some(200) {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "{probe} never answered 200:\n{}",
                hub.log_text()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    let dataset = open_dataset(port, &pki, "备份测试 企业登记").await;
    let (stop, acked) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)));
    let publisher = tokio::spawn(publish_until(
        port,
        pki.clone(),
        dataset.clone(),
        stop.clone(),
        acked.clone(),
    ));
    // Some batches in, then the backup while the publisher goes on.
    let started = tokio::time::Instant::now();
    while acked.load(Ordering::SeqCst) < 10 {
        assert!(started.elapsed() < Duration::from_secs(60), "the publisher is stuck");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let before_backup = acked.load(Ordering::SeqCst);
    let backup = dir.path().join("backups").join("hub-1.db");
    std::fs::create_dir_all(backup.parent().expect("a parent")).expect("backup directory");
    let taken = xinqiao(&["backup", "--data", path_arg(&data), "--to", path_arg(&backup)]);
    assert!(taken.status.success(), "{}", text(&taken));
    assert!(
        String::from_utf8_lossy(&taken.stdout).contains("audit chain intact"),
        "{}",
        text(&taken)
    );
    // Never over an existing file.
    let again = xinqiao(&["backup", "--data", path_arg(&data), "--to", path_arg(&backup)]);
    assert_eq!(again.status.code(), Some(1), "{}", text(&again));

    // A restore is refused while the hub runs on the database, and changes nothing.
    let refused = xinqiao(&["restore", "--data", path_arg(&data), "--from", path_arg(&backup)]);
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("Stop it first"),
        "{}",
        text(&refused)
    );

    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::SeqCst);
    publisher.await.expect("publisher");
    let published = acked.load(Ordering::SeqCst);
    let mut client = exchange_when_up(port, &pki, POLICE).await;
    assert_eq!(fetch_all(&mut client, &dataset).await.len() as u64, published * BATCH);
    drop(client);

    // The probes follow the hub: a graceful stop, then nothing answers.
    assert!(hub.terminate().is_some_and(|s| s.success()), "{}", hub.log_text());
    assert_eq!(http_status(probes, "/healthz").await, None);

    let restored = xinqiao(&["restore", "--data", path_arg(&data), "--from", path_arg(&backup)]);
    assert!(restored.status.success(), "{}", text(&restored));
    let kept: Vec<_> = std::fs::read_dir(&data)
        .expect("data directory")
        .filter_map(|e| e.ok())
        .filter(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.starts_with("hub.db.replaced-") && !name.ends_with("-wal") && !name.ends_with("-shm")
        })
        .collect();
    assert_eq!(kept.len(), 1, "the replaced database is kept beside it");

    hub.restart().await;
    let mut client = exchange_when_up(port, &pki, POLICE).await;
    let changes = fetch_all(&mut client, &dataset).await;
    let n = changes.len() as u64;
    // The backup is one moment: whole batches only, every batch acknowledged before it began,
    // none acknowledged after the publisher stopped, and sequences without a gap.
    assert_eq!(n % BATCH, 0, "a batch was cut in two by the backup");
    assert!(
        n >= before_backup * BATCH && n < published * BATCH,
        "{n} records restored"
    );
    let sequences: Vec<u64> = changes.iter().map(|c| c.sequence).collect();
    assert_eq!(sequences, (1..=n).collect::<Vec<_>>());

    // The restored hub checks out, its audit chain included.
    let config = dir.path().join("probes.toml");
    std::fs::write(&config, format!("[metrics]\nlisten = \"127.0.0.1:{probes}\"\n")).expect("config");
    let checked = xinqiao(&["check", "--data", path_arg(&data), "--config", path_arg(&config)]);
    assert_eq!(checked.status.code(), Some(0), "{}", text(&checked));
    // Certificates within 100,000 days of expiry: a warning, exit 1.
    let warned = xinqiao(&["check", "--data", path_arg(&data), "--warn-days", "100000"]);
    assert_eq!(warned.status.code(), Some(1), "{}", text(&warned));
    assert!(
        String::from_utf8_lossy(&warned.stdout).contains("WARNING"),
        "{}",
        text(&warned)
    );
    // A missing hub certificate: critical, exit 2.
    std::fs::write(&config, "[tls]\ncert = \"/nonexistent/server.crt\"\n").expect("config");
    let broken = xinqiao(&["check", "--data", path_arg(&data), "--config", path_arg(&config)]);
    assert_eq!(broken.status.code(), Some(2), "{}", text(&broken));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn migrations_wait_for_running_nodes_that_would_not_know_them() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let data = dir.path().join("hub");
    let database = data.join("hub.db");
    let fresh = xinqiao(&["migrate", "--data", path_arg(&data)]);
    assert!(fresh.status.success(), "{}", text(&fresh));
    let target: i64 = String::from_utf8_lossy(&fresh.stdout)
        .split("to ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("the version migrated to: {}", text(&fresh)));
    let again = xinqiao(&["migrate", "--data", path_arg(&data)]);
    assert!(
        String::from_utf8_lossy(&again.stdout).contains("up to date"),
        "{}",
        text(&again)
    );

    // As if this build's last migration were new, while a node of the previous build runs on
    // another host.
    sql(
        &database,
        &[
            &format!("DELETE FROM _sqlx_migrations WHERE version = {target}"),
            &format!(
                "INSERT INTO hub_nodes (id, host, pid, listen, version, schema_known, started_at, seen_at) \
                 VALUES ('old-node', 'other-host', 1, '10.1.2.3:7443', '0.0.9', {}, \
                 strftime('%Y-%m-%dT%H:%M:%fZ', 'now'), strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))",
                target - 1
            ),
        ],
    )
    .await;
    let refused = xinqiao(&["migrate", "--data", path_arg(&data)]);
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused));
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(
        why.contains("other-host") && why.contains("10.1.2.3:7443"),
        "{}",
        text(&refused)
    );

    // A hub that migrates at start waits the same way; one that does not refuses the old schema.
    let port = free_port().to_string();
    let listen = format!("127.0.0.1:{port}");
    let serve = xinqiao(&["serve", "--dev", "--data", path_arg(&data), "--listen", &listen]);
    assert_eq!(serve.status.code(), Some(1), "{}", text(&serve));
    assert!(
        String::from_utf8_lossy(&serve.stderr).contains("other-host"),
        "{}",
        text(&serve)
    );
    let serve = xinqiao(&[
        "serve",
        "--dev",
        "--no-migrate",
        "--data",
        path_arg(&data),
        "--listen",
        &listen,
    ]);
    assert_eq!(serve.status.code(), Some(1), "{}", text(&serve));
    assert!(
        String::from_utf8_lossy(&serve.stderr).contains("run `xinqiao migrate` first"),
        "{}",
        text(&serve)
    );
    // check: pending migrations are a warning where hubs migrate at start.
    let checked = xinqiao(&["check", "--data", path_arg(&data)]);
    assert_eq!(checked.status.code(), Some(1), "{}", text(&checked));

    // The old node has not been seen for a minute: it stopped, and the migration goes ahead.
    sql(
        &database,
        &["UPDATE hub_nodes SET seen_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-60 seconds')"],
    )
    .await;
    let migrated = xinqiao(&["migrate", "--data", path_arg(&data)]);
    assert!(migrated.status.success(), "{}", text(&migrated));
    assert!(
        String::from_utf8_lossy(&migrated.stdout).contains(&format!("applied [{target}]")),
        "{}",
        text(&migrated)
    );

    // A database a newer build migrated: this hub refuses to serve it, and check says critical.
    sql(
        &database,
        &[
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
           VALUES (999, 'from a newer hub', 1, x'00', 0)",
        ],
    )
    .await;
    let serve = xinqiao(&["serve", "--dev", "--data", path_arg(&data), "--listen", &listen]);
    assert_eq!(serve.status.code(), Some(1), "{}", text(&serve));
    assert!(
        String::from_utf8_lossy(&serve.stderr).contains("newer"),
        "{}",
        text(&serve)
    );
    let checked = xinqiao(&["check", "--data", path_arg(&data)]);
    assert_eq!(checked.status.code(), Some(2), "{}", text(&checked));
}
