//! What the machine is, and this process's resident memory.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use serde_json::{Value, json};

fn proc_field(file: &str, field: &str) -> Option<String> {
    let text = std::fs::read_to_string(file).ok()?;
    text.lines().find_map(|l| {
        l.strip_prefix(field)
            .map(|rest| rest.trim_start().trim_start_matches(':').trim().to_string())
    })
}

/// Kibibytes in a `/proc` line such as `VmRSS:   12345 kB`.
fn kib(value: &str) -> Option<u64> {
    value.split_whitespace().next()?.parse().ok()
}

/// This process's resident set, in bytes (0 where /proc is not there).
pub fn rss_bytes() -> u64 {
    proc_field("/proc/self/status", "VmRSS")
        .and_then(|v| kib(&v))
        .unwrap_or(0)
        * 1024
}

/// CPU time this process has used, user and system, in seconds (0 where /proc is not there).
/// Linux reports it in clock ticks, which are 1/100 s on every platform it runs on here.
pub fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // The command name (field 2) is in parentheses and may hold spaces: count after it.
    let Some(after) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
        return 0.0;
    };
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the command name.
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    (ticks(11) + ticks(12)) as f64 / 100.0
}

pub struct Machine {
    pub nproc: usize,
    pub mem_total_bytes: u64,
    pub cpu: String,
    pub kernel: String,
}

impl Machine {
    pub fn read() -> Self {
        Machine {
            nproc: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            mem_total_bytes: proc_field("/proc/meminfo", "MemTotal")
                .and_then(|v| kib(&v))
                .unwrap_or(0)
                * 1024,
            cpu: proc_field("/proc/cpuinfo", "model name").unwrap_or_else(|| "unknown".into()),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|s| s.trim().to_string())
                .unwrap_or_else(|_| "unknown".into()),
        }
    }

    pub fn describe(&self) -> String {
        format!(
            "{} cores ({}), {:.1} GiB memory, Linux {}",
            self.nproc,
            self.cpu,
            self.mem_total_bytes as f64 / (1u64 << 30) as f64,
            self.kernel
        )
    }

    pub fn json(&self) -> Value {
        json!({
            "nproc": self.nproc,
            "mem_total_bytes": self.mem_total_bytes,
            "cpu": self.cpu,
            "kernel": self.kernel,
        })
    }
}

/// Samples the resident set every few milliseconds until stopped, keeping the highest.
pub struct RssSampler {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl RssSampler {
    pub fn start() -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(rss_bytes()));
        let task = tokio::spawn({
            let (stop, peak) = (stop.clone(), peak.clone());
            async move {
                while !stop.load(Ordering::Relaxed) {
                    peak.fetch_max(rss_bytes(), Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        });
        RssSampler { stop, peak, task }
    }

    /// The highest resident set seen.
    pub async fn finish(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.task.await;
        self.peak.load(Ordering::Relaxed).max(rss_bytes())
    }
}
