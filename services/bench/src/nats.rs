//! The broker baseline: NATS JetStream on the same machine, one stream with file storage and one
//! replica, holding the same records.

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
        })
    }

    pub fn describe(&self) -> String {
        format!("JetStream stream {} (file storage, 1 replica)", self.stream)
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
