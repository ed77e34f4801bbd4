//! The change feed: wakes live subscriptions when a dataset's last sequence number moves.
//!
//! Publishing on this node notifies directly. Other nodes' commits arrive through the store's
//! change listener (PostgreSQL LISTEN/NOTIFY). Notifications can be lost while a connection is
//! down, so the heads of watched datasets are also re-read periodically.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use xinqiao_store::Store;

/// How often the heads of watched datasets are re-read, to catch notifications that were lost.
pub const REPOLL_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Default)]
pub struct ChangeFeed {
    heads: Mutex<HashMap<String, watch::Sender<u64>>>,
}

impl ChangeFeed {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Records that `dataset` now ends at `sequence`, waking its watchers if that is news.
    pub fn notify(&self, dataset: &str, sequence: u64) {
        let heads = self.heads.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(head) = heads.get(dataset) {
            head.send_if_modified(|known| {
                let newer = sequence > *known;
                if newer {
                    *known = sequence;
                }
                newer
            });
        }
    }

    /// A receiver that changes whenever the dataset's head moves past what it last saw.
    pub fn watch(&self, dataset: &str, current: u64) -> watch::Receiver<u64> {
        let mut heads = self.heads.lock().unwrap_or_else(PoisonError::into_inner);
        let head = heads
            .entry(dataset.to_string())
            .or_insert_with(|| watch::channel(current).0);
        head.send_if_modified(|known| {
            let newer = current > *known;
            if newer {
                *known = current;
            }
            newer
        });
        head.subscribe()
    }

    /// The datasets someone is watching; forgets the others.
    fn watched(&self) -> Vec<String> {
        let mut heads = self.heads.lock().unwrap_or_else(PoisonError::into_inner);
        heads.retain(|_, head| head.receiver_count() > 0);
        heads.keys().cloned().collect()
    }

    /// Runs the listener for other nodes' commits and the periodic re-poll until `stopping`.
    pub fn start(self: &Arc<Self>, store: Arc<dyn Store>, mut stopping: watch::Receiver<bool>) {
        let (sink, mut heard) = mpsc::channel::<(String, u64)>(1024);
        let listener_store = store.clone();
        tokio::spawn(async move {
            if let Err(e) = listener_store.listen_changes(sink).await {
                tracing::warn!(error = %e, "cannot listen for other hub nodes' changes; relying on re-polling");
            }
        });
        let feed = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(REPOLL_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    Some((dataset, sequence)) = heard.recv() => feed.notify(&dataset, sequence),
                    _ = tick.tick() => {
                        let watched = feed.watched();
                        if watched.is_empty() {
                            continue;
                        }
                        match store.dataset_heads(&watched).await {
                            Ok(heads) => heads.iter().for_each(|(dataset, sequence)| feed.notify(dataset, *sequence)),
                            Err(e) => tracing::warn!(error = %e, "re-reading dataset heads failed"),
                        }
                    }
                    _ = stopping.changed() => break,
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn watchers_wake_only_for_newer_heads() {
        let feed = ChangeFeed::new();
        let mut rx = feed.watch("102/000001", 5);
        feed.notify("102/000001", 5);
        assert!(!rx.has_changed().unwrap());
        feed.notify("102/000001", 3);
        assert!(!rx.has_changed().unwrap());
        feed.notify("102/000001", 9);
        assert!(rx.has_changed().unwrap());
        assert_eq!(*rx.borrow_and_update(), 9);
        feed.notify("other", 100);
        assert!(!rx.has_changed().unwrap());
    }

    #[tokio::test]
    async fn unwatched_datasets_are_forgotten() {
        let feed = ChangeFeed::new();
        let rx = feed.watch("a", 0);
        assert_eq!(feed.watched(), ["a"]);
        drop(rx);
        assert!(feed.watched().is_empty());
    }
}
