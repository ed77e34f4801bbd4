//! The hub under load: `xinqiao serve --dev` as a process of its own, so that the memory and CPU
//! read from /proc are the hub's alone. Killed when dropped, however the load program ends.

use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::Res;

/// How long the hub may take to start (migrations on a fresh PostgreSQL schema included).
const START_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a SIGTERM may take before the hub is killed; the hub's own grace is 30 s.
const STOP_TIMEOUT: Duration = Duration::from_secs(40);

/// A running `xinqiao serve --dev` on 127.0.0.1.
pub struct HubProcess {
    child: Option<Child>,
    pub pid: u32,
    pub addr: SocketAddr,
    pub pki: PathBuf,
    pub log: PathBuf,
}

/// Resident and peak memory of a process, from /proc/PID/status.
#[derive(Debug, Clone, Copy, Default)]
pub struct Memory {
    pub rss: u64,
    pub hwm: u64,
}

impl HubProcess {
    /// Starts `binary serve --dev` with its data (and the development PKI) under `data`, on
    /// `database_url`, listening on a free loopback port, logging to `data/hub.log`.
    pub fn start(binary: &Path, data: &Path, database_url: &str, log_level: &str) -> Res<HubProcess> {
        std::fs::create_dir_all(data).map_err(|e| format!("creating {}: {e}", data.display()))?;
        let log = data.join("hub.log");
        let out = File::create(&log).map_err(|e| format!("creating {}: {e}", log.display()))?;
        let err = out.try_clone().map_err(|e| format!("{}: {e}", log.display()))?;
        let mut command = Command::new(binary);
        command
            .arg("serve")
            .arg("--dev")
            .arg("--data")
            .arg(data)
            .args(["--listen", "127.0.0.1:0", "--database-url", database_url])
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        // Only what is given here configures the hub: no stray XINQIAO_* setting of this shell.
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("XINQIAO_") {
                command.env_remove(name);
            }
        }
        command.env("XINQIAO_LOG", log_level);
        let child = command
            .spawn()
            .map_err(|e| format!("starting {}: {e}", binary.display()))?;
        let mut hub = HubProcess {
            pid: child.id(),
            child: Some(child),
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            pki: data.join("pki"),
            log,
        };
        let started = Instant::now();
        loop {
            if let Some(status) = hub.try_wait() {
                return Err(format!(
                    "the hub exited at start ({status}); its log:\n{}",
                    hub.log_tail(30)
                ));
            }
            let text = std::fs::read_to_string(&hub.log).unwrap_or_default();
            if let Some(addr) = serving_address(&text)
                && hub.pki.join("admin.crt").exists()
            {
                hub.addr = addr;
                return Ok(hub);
            }
            if started.elapsed() > START_TIMEOUT {
                return Err(format!(
                    "the hub did not say it was serving within {}s; its log:\n{}",
                    START_TIMEOUT.as_secs(),
                    hub.log_tail(30)
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.as_mut().and_then(|c| c.try_wait().ok().flatten())
    }

    /// Whether the process is still there.
    pub fn alive(&mut self) -> bool {
        self.child.is_some() && self.try_wait().is_none()
    }

    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// VmRSS and VmHWM of the hub, or zero once it is gone.
    pub fn memory(&self) -> Memory {
        memory_of(self.pid)
    }

    /// The last `lines` lines of the hub's log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Lines of the hub's log at WARN or ERROR (the log level is `warn` unless asked otherwise).
    pub fn log_problems(&self) -> Vec<String> {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        text.lines()
            .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
            .map(str::to_string)
            .collect()
    }

    /// Stops the hub with SIGTERM, as an operator would, and kills it if it does not stop in time.
    /// Returns how it ended.
    pub fn stop(&mut self) -> String {
        let Some(mut child) = self.child.take() else {
            return "already stopped".into();
        };
        if let Ok(Some(status)) = child.try_wait() {
            return format!("had exited by itself ({status})");
        }
        let termed = Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        let started = Instant::now();
        if termed {
            while started.elapsed() < STOP_TIMEOUT {
                if let Ok(Some(status)) = child.try_wait() {
                    return format!(
                        "stopped on SIGTERM in {:.1}s ({status})",
                        started.elapsed().as_secs_f64()
                    );
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        if termed {
            format!("did not stop within {}s of SIGTERM: killed", STOP_TIMEOUT.as_secs())
        } else {
            "killed (SIGTERM could not be sent)".into()
        }
    }
}

impl Drop for HubProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The address in the hub's "xinqiao hub serving on 127.0.0.1:PORT (…)" line.
fn serving_address(log: &str) -> Option<SocketAddr> {
    log.lines().find_map(|line| {
        let rest = &line[line.find("serving on ")? + "serving on ".len()..];
        rest.split_whitespace().next()?.parse().ok()
    })
}

fn status_kib(status: &str, field: &str) -> u64 {
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// VmRSS and VmHWM of process `pid`, zero when it is gone.
pub fn memory_of(pid: u32) -> Memory {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    Memory {
        rss: status_kib(&text, "VmRSS:") * 1024,
        hwm: status_kib(&text, "VmHWM:") * 1024,
    }
}

/// Whether process `pid` runs (is there and not a zombie).
pub fn alive(pid: u32) -> bool {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    match text.rfind(')').and_then(|i| text[i + 1..].split_whitespace().next()) {
        Some(state) => state != "Z" && state != "X",
        None => false,
    }
}

/// utime + stime of a /proc/…/stat file, in seconds.
pub fn cpu_seconds(stat_file: &str) -> f64 {
    let text = std::fs::read_to_string(stat_file).unwrap_or_default();
    // The fields after the command name (which is in parentheses and may hold spaces): state is
    // field 3, utime 14 and stime 15 of the whole line.
    let Some(after) = text.rfind(')').map(|i| &text[i + 1..]) else {
        return 0.0;
    };
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    (ticks(11) + ticks(12)) as f64 / clock_ticks()
}

fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .filter(|t: &f64| *t > 0.0)
            .unwrap_or(100.0)
    })
}

/// CPU seconds the whole machine has been busy (all cores: user, nice, system, irq, softirq,
/// steal), from /proc/stat.
pub fn machine_busy_seconds() -> f64 {
    let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = text.lines().find(|l| l.starts_with("cpu ")) else {
        return 0.0;
    };
    let f: Vec<u64> = line.split_whitespace().skip(1).filter_map(|v| v.parse().ok()).collect();
    let at = |i: usize| f.get(i).copied().unwrap_or(0);
    // user nice system idle iowait irq softirq steal
    (at(0) + at(1) + at(2) + at(5) + at(6) + at(7)) as f64 / clock_ticks()
}

/// The 1, 5 and 15 minute load averages.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|t| t.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// Bytes free for an unprivileged user on the file system holding `path` (`df`), if known.
/// The soft limit on open files of this process (and of the hub it starts).
pub fn open_file_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

pub fn free_bytes(path: &Path) -> Option<u64> {
    let out = Command::new("df").arg("-Pk").arg(path).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().nth(1)?;
    let available: u64 = line.split_whitespace().nth(3)?.parse().ok()?;
    Some(available * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_serving_line_and_proc_fields() {
        let log =
            "2026-01-01 INFO created a development PKI\nxinqiao hub serving on 127.0.0.1:41234 (mutual TLS; CA x)\n";
        assert_eq!(serving_address(log), Some("127.0.0.1:41234".parse().expect("addr")));
        assert_eq!(serving_address("nothing yet"), None);
        assert_eq!(
            status_kib("Name:\tx\nVmHWM:\t  2048 kB\nVmRSS:\t 1024 kB\n", "VmRSS:"),
            1024
        );
        assert!(memory_of(std::process::id()).rss > 0);
        assert!(alive(std::process::id()));
        assert!(cpu_seconds("/proc/self/stat") >= 0.0);
        assert!(machine_busy_seconds() > 0.0);
        assert_eq!(load_average().split(' ').count(), 3);
        assert!(open_file_limit().is_some_and(|n| n > 0));
    }
}
