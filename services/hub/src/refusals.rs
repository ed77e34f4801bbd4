//! Refused TLS handshakes in the audit trail, bounded: each peer address gets one event per refusal
//! up to a limit a minute; past it, refusals are counted and recorded as one summary event for
//! that address and minute. A flood of bad connections then costs the trail a few events a
//! minute, not one per connection, and nothing about it is lost.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use xinqiao_domain::audit::AuditEvent;

use crate::audit::AuditLog;

/// The window a limit counts in.
pub const WINDOW: Duration = Duration::from_secs(60);
/// Addresses tracked at once; refusals from further addresses are counted together, so that many
/// addresses cannot grow this table without bound either.
const MAX_PEERS: usize = 10_000;
/// How often finished windows are summarised.
const SUMMARISE_EVERY: Duration = Duration::from_secs(10);

/// Whether a refusal gets an event of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Record,
    /// Counted, for the window's summary.
    Count,
}

#[derive(Debug)]
struct Window {
    started: DateTime<Utc>,
    recorded: u32,
    counted: u64,
    last_reason: String,
}

/// Refusals counted past the limit for one address (`None`: the addresses beyond `MAX_PEERS`)
/// in one window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub peer: Option<IpAddr>,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub refusals: u64,
    pub last_reason: String,
}

#[derive(Debug)]
pub struct RefusalLimiter {
    per_window: u32,
    windows: Mutex<HashMap<Option<IpAddr>, Window>>,
}

impl RefusalLimiter {
    pub fn new(per_window: u32) -> Self {
        Self {
            per_window,
            windows: Mutex::new(HashMap::new()),
        }
    }

    /// Takes note of a refusal from `peer` at `now`.
    pub fn on_refusal(&self, peer: IpAddr, reason: &str, now: DateTime<Utc>) -> Verdict {
        let mut windows = self.windows.lock().unwrap_or_else(PoisonError::into_inner);
        let key = if windows.contains_key(&Some(peer)) || windows.len() < MAX_PEERS {
            Some(peer)
        } else {
            None
        };
        let window = windows.entry(key).or_insert_with(|| Window {
            started: now,
            recorded: 0,
            counted: 0,
            last_reason: String::new(),
        });
        if key.is_some() && window.recorded < self.per_window {
            window.recorded += 1;
            Verdict::Record
        } else {
            window.counted += 1;
            window.last_reason = reason.to_string();
            Verdict::Count
        }
    }

    /// The summaries of windows that have ended by `now` (every window, when `all`), which are
    /// then forgotten.
    pub fn due(&self, now: DateTime<Utc>, all: bool) -> Vec<Summary> {
        let mut windows = self.windows.lock().unwrap_or_else(PoisonError::into_inner);
        let window = chrono::Duration::from_std(WINDOW).unwrap_or_default();
        let ended: Vec<Option<IpAddr>> = windows
            .iter()
            .filter(|(_, w)| all || now - w.started >= window)
            .map(|(peer, _)| *peer)
            .collect();
        let mut summaries: Vec<Summary> = ended
            .into_iter()
            .filter_map(|peer| {
                let w = windows.remove(&peer)?;
                (w.counted > 0).then_some(Summary {
                    peer,
                    from: w.started,
                    to: now,
                    refusals: w.counted,
                    last_reason: w.last_reason,
                })
            })
            .collect();
        summaries.sort_by_key(|s| (s.from, s.peer));
        summaries
    }
}

/// The summary as an audit event.
pub fn summary_event(summary: &Summary) -> AuditEvent {
    let peer = summary.peer.map_or("*".to_string(), |ip| ip.to_string());
    AuditEvent {
        sequence: 0,
        at: crate::clock::now(),
        actor: format!("peer:{peer}"),
        action: "authenticate_summary".into(),
        target: String::new(),
        about: String::new(),
        outcome: "UNAUTHENTICATED".into(),
        request_id: uuid::Uuid::now_v7().to_string(),
        detail: serde_json::json!({
            "refusals": summary.refusals,
            "from": summary.from.to_rfc3339(),
            "to": summary.to.to_rfc3339(),
            "last_reason": summary.last_reason,
        })
        .to_string(),
    }
}

/// Records the summaries of ended windows every few seconds, and every remaining one when the
/// hub stops.
pub fn keep_summarising(
    limiter: Arc<RefusalLimiter>,
    audit: AuditLog,
    mut stopping: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let stop = tokio::select! {
                () = tokio::time::sleep(SUMMARISE_EVERY) => false,
                _ = stopping.wait_for(|stop| *stop) => true,
            };
            let events: Vec<AuditEvent> = limiter.due(Utc::now(), stop).iter().map(summary_event).collect();
            if !events.is_empty()
                && let Err(error) = audit.record_all(events).await
            {
                tracing::error!(%error, "refused handshakes could not be summarised in the audit trail");
            }
            if stop {
                break;
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_790_000_000 + seconds, 0).unwrap_or_default()
    }

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[test]
    fn each_address_is_recorded_up_to_the_limit_then_counted() {
        let limiter = RefusalLimiter::new(3);
        let verdicts: Vec<Verdict> = (0..5)
            .map(|i| limiter.on_refusal(ip(1), &format!("r{i}"), at(i)))
            .collect();
        assert_eq!(
            verdicts,
            [
                Verdict::Record,
                Verdict::Record,
                Verdict::Record,
                Verdict::Count,
                Verdict::Count
            ]
        );
        // Another address has its own allowance.
        assert_eq!(limiter.on_refusal(ip(2), "r", at(5)), Verdict::Record);
        assert!(limiter.due(at(30), false).is_empty(), "no window has ended");
        let due = limiter.due(at(61), false);
        assert_eq!(
            due,
            [Summary {
                peer: Some(ip(1)),
                from: at(0),
                to: at(61),
                refusals: 2,
                last_reason: "r4".into(),
            }]
        );
        // A new window starts afresh; ip(2)'s window had nothing counted and is gone too.
        assert_eq!(limiter.on_refusal(ip(1), "r", at(62)), Verdict::Record);
        assert!(limiter.due(at(63), true).is_empty());
    }

    #[test]
    fn addresses_past_the_table_size_are_counted_together() {
        let limiter = RefusalLimiter::new(1);
        for n in 0..MAX_PEERS {
            let peer = IpAddr::from((n as u32).to_be_bytes());
            assert_eq!(limiter.on_refusal(peer, "r", at(0)), Verdict::Record);
        }
        let late = IpAddr::from([255, 255, 255, 1]);
        assert_eq!(limiter.on_refusal(late, "late", at(1)), Verdict::Count);
        assert_eq!(limiter.on_refusal(ip(7), "later", at(2)), Verdict::Count);
        let due = limiter.due(at(3), true);
        assert_eq!(due.len(), 1);
        assert_eq!((due[0].peer, due[0].refusals), (None, 2));
        assert_eq!(summary_event(&due[0]).actor, "peer:*");
    }
}
