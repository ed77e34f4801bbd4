//! `xinqiao-load`: N publishers and M followers held against a hub process for a set time (issue
//! #15, item 4). The hub is `xinqiao serve --dev` started as a process of its own, so that the
//! memory and CPU figures are the hub's alone; over a temporary SQLite file or a fresh schema of
//! `--database-url postgres://…` (dropped at the end). Every publisher and follower has its own
//! mutual-TLS connection on 127.0.0.1.
//!
//! Every interval a row: records published and delivered per second, publish latency p50/p99 per
//! batch, the slowest follower's lag, errors by gRPC code, the hub's VmRSS/VmHWM and CPU, the
//! database's size. At the end a summary with the memory trend, and the delivery check: every
//! follower received every sequence number of the dataset once, in order. The exit code is 0 only
//! when there was no error of any kind and delivery was gap-free and complete.
//!
//! `--peak` runs the publishers unthrottled for a short time, except that they wait while the
//! slowest follower is more than `--peak-lag` changes behind, and reports the sustainable rate
//! (the lower of the publish rate and the slowest follower's rate, after the first interval): the
//! rate at which publishers and followers keep up together. `--rate 70%` measures that first,
//! restarts the hub, and runs at 70 % of it; `--rate 20000` runs at an absolute rate.

#[path = "../chart.rs"]
mod chart;
#[allow(dead_code)]
#[path = "../records.rs"]
mod records;
#[allow(dead_code)]
#[path = "../sys.rs"]
mod sys;

mod hubproc;
mod run;
mod svg;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::json;
use tokio::sync::watch;

use crate::hubproc::HubProcess;
use crate::run::{DbSize, PhaseConfig, PhaseReport, Target, mib, round};

pub type Res<T> = Result<T, String>;

/// Holds N publishers and M followers against a hub process and reports throughput, latency,
/// errors and the hub's memory over time (issue #15, item 4).
#[derive(Parser, Debug)]
#[command(name = "xinqiao-load", version)]
struct Args {
    /// A few seconds for CI: 2 publishers, 2 followers, batches of 50, a 2 s peak and 4 s at 70 %
    /// of it; fails on any error or delivery fault. Explicit flags override these sizes.
    #[arg(long)]
    quick: bool,
    /// Only measure the peak: publishers unthrottled (but within --peak-lag of the slowest
    /// follower) for --peak-duration, then report the sustainable rate.
    #[arg(long, conflicts_with = "rate")]
    peak: bool,
    /// Publishing connections (each as the provider department) [default: 4; quick: 2].
    #[arg(long)]
    publishers: Option<usize>,
    /// Following connections (named consumers, acknowledging) [default: 4; quick: 2].
    #[arg(long)]
    followers: Option<usize>,
    /// How long the load runs: 90s, 2m, 30m, 1h [default: 60s; quick: 4s].
    #[arg(long, value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Records per second for all publishers together: an absolute rate (20000, 20000/s, 20k) or a
    /// percentage of the peak measured first in the same run (70%) [default: unthrottled; quick:
    /// 70%].
    #[arg(long)]
    rate: Option<Rate>,
    /// How long the peak is measured, with --peak or --rate N% [default: 60s; quick: 2s].
    #[arg(long, value_parser = parse_duration)]
    peak_duration: Option<Duration>,
    /// In the peak phase, publishers wait while the slowest follower is more than this many
    /// changes behind, so that the peak is a rate the followers keep up with; 0: publishers never
    /// wait (the publish-only peak, followers fall behind).
    #[arg(long, default_value_t = 100_000, value_name = "CHANGES")]
    peak_lag: u64,
    /// Records (of about 1 KiB, `legal-entity`) per published batch [default: 500; quick: 50].
    #[arg(long)]
    batch: Option<usize>,
    /// Batches each publisher has in flight at once [default: 2; quick: 1].
    #[arg(long)]
    in_flight: Option<usize>,
    /// Further mutual-TLS connections held open through the load phase (the sample departments
    /// in turn), each making a call when opened and another at the end; every one must be
    /// answered. Needs two file descriptors per connection across this program and the hub.
    #[arg(long, default_value_t = 0, value_name = "N")]
    held_connections: usize,
    /// Time between rows [default: 10s; quick: 1s].
    #[arg(long, value_parser = parse_duration)]
    interval: Option<Duration>,
    /// How long followers may take to catch up once publishing stops [default: 60s].
    #[arg(long, value_parser = parse_duration)]
    drain_timeout: Option<Duration>,
    /// Changes per Subscribe message asked for (max_batch).
    #[arg(long, default_value_t = 1000)]
    follow_page: u32,
    /// Followers acknowledge their position after every N messages.
    #[arg(long, default_value_t = 1)]
    ack_every: u32,
    /// postgres://… to run the hub on PostgreSQL, each phase in a fresh schema xq_load_<pid>_<phase>
    /// dropped when the phase is over [default: a SQLite file per phase in a temporary directory].
    #[arg(long)]
    database_url: Option<String>,
    /// The `xinqiao` binary to start [default: the one next to this program].
    #[arg(long)]
    hub_binary: Option<PathBuf>,
    /// The hub's log filter (XINQIAO_LOG); the log is hub/hub.log in the temporary directory (see --keep).
    #[arg(long, default_value = "warn")]
    hub_log: String,
    /// Fail when the hub's VmRSS at the end exceeds its VmRSS at 10 % of the run by more than this
    /// many percent [default: reported, not judged].
    #[arg(long, value_name = "PERCENT")]
    max_rss_growth: Option<f64>,
    /// Stop a phase when less than this many GiB are free where the database is.
    #[arg(long, default_value_t = 2.0, value_name = "GIB")]
    min_free_gib: f64,
    /// Start even when the database is expected to outgrow the free disk space.
    #[arg(long)]
    no_disk_check: bool,
    /// Keep the temporary directory (hub log, SQLite databases) and the PostgreSQL schemas.
    #[arg(long)]
    keep: bool,
    /// Write the rows and summaries as JSON to this file.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Draw throughput and the hub's memory over time as SVG into this file.
    #[arg(long, value_name = "FILE")]
    svg: Option<PathBuf>,
}

/// The publishers' aggregate rate.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Rate {
    PerSecond(f64),
    PercentOfPeak(f64),
}

impl FromStr for Rate {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if let Some(p) = s.strip_suffix('%') {
            let p: f64 = p.trim().parse().map_err(|_| format!("{s}: not a percentage"))?;
            if !(p > 0.0 && p <= 1000.0) {
                return Err(format!("{s}: the percentage must be above 0"));
            }
            return Ok(Rate::PercentOfPeak(p));
        }
        let n = s.strip_suffix("/s").unwrap_or(s).trim();
        let (n, factor) = match n.strip_suffix(['k', 'K']) {
            Some(n) => (n, 1000.0),
            None => (n, 1.0),
        };
        let v: f64 = n
            .trim()
            .parse()
            .map_err(|_| format!("{s}: not a rate (20000, 20k/s or 70%)"))?;
        if !(v > 0.0 && v.is_finite()) {
            return Err(format!("{s}: the rate must be above 0"));
        }
        Ok(Rate::PerSecond(v * factor))
    }
}

/// "90", "90s", "500ms", "2m", "1h", "1m30s".
fn parse_duration(s: &str) -> Result<Duration, String> {
    let text = s.trim();
    let mut total = 0.0f64;
    let mut number = String::new();
    let mut chars = text.chars().peekable();
    let mut any = false;
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() || c == '.' {
            number.push(c);
            continue;
        }
        let unit = if c == 'm' && chars.peek() == Some(&'s') {
            chars.next();
            0.001
        } else {
            match c {
                's' => 1.0,
                'm' => 60.0,
                'h' => 3600.0,
                _ => return Err(format!("{s}: not a duration (90s, 2m, 30m, 1h)")),
            }
        };
        let v: f64 = number.parse().map_err(|_| format!("{s}: not a duration"))?;
        total += v * unit;
        number.clear();
        any = true;
    }
    if !number.is_empty() {
        let v: f64 = number.parse().map_err(|_| format!("{s}: not a duration"))?;
        total += v;
        any = true;
    }
    if !any || total <= 0.0 {
        return Err(format!("{s}: the duration must be above 0"));
    }
    Ok(Duration::from_secs_f64(total))
}

fn seconds(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s >= 60.0 && (s % 60.0).abs() < 1e-9 {
        format!("{}m", s / 60.0)
    } else {
        format!("{s}s")
    }
}

struct Settings {
    quick: bool,
    publishers: usize,
    followers: usize,
    duration: Duration,
    peak_duration: Duration,
    rate: Option<Rate>,
    batch: usize,
    in_flight: usize,
    interval: Duration,
    drain_timeout: Duration,
}

impl Settings {
    fn from(a: &Args) -> Res<Settings> {
        let q = a.quick;
        let s = Settings {
            quick: q,
            publishers: a.publishers.unwrap_or(if q { 2 } else { 4 }),
            followers: a.followers.unwrap_or(if q { 2 } else { 4 }),
            duration: a.duration.unwrap_or(Duration::from_secs(if q { 4 } else { 60 })),
            peak_duration: a.peak_duration.unwrap_or(Duration::from_secs(if q { 2 } else { 60 })),
            rate: a.rate.or(if q && !a.peak {
                Some(Rate::PercentOfPeak(70.0))
            } else {
                None
            }),
            batch: a.batch.unwrap_or(if q { 50 } else { 500 }),
            in_flight: a.in_flight.unwrap_or(if q { 1 } else { 2 }),
            interval: a.interval.unwrap_or(Duration::from_secs(if q { 1 } else { 10 })),
            drain_timeout: a.drain_timeout.unwrap_or(Duration::from_secs(60)),
        };
        if s.publishers == 0 || s.publishers > 256 {
            return Err("--publishers must be 1 to 256".into());
        }
        if s.followers > 256 {
            return Err("--followers must be at most 256".into());
        }
        if s.batch == 0 || s.batch > 10_000 {
            return Err("--batch must be 1 to 10000 (the hub's max_batch_records)".into());
        }
        if s.in_flight == 0 || s.in_flight > 64 {
            return Err("--in-flight must be 1 to 64".into());
        }
        // Each held connection costs one descriptor here and one in the hub, which inherits
        // this limit; a run that would hit it fails at the start instead of halfway.
        let needed = a.held_connections as u64 + 1000;
        let limit = hubproc::open_file_limit();
        if a.held_connections > 0 && limit.is_some_and(|limit| needed > limit) {
            return Err(format!(
                "--held-connections {} needs about {needed} open files; the limit is {} (ulimit -n)",
                a.held_connections,
                limit.unwrap_or(0)
            ));
        }
        if s.interval < Duration::from_millis(100) {
            return Err("--interval must be at least 100ms".into());
        }
        Ok(s)
    }

    fn phase(&self, name: &str, rate: Option<f64>, duration: Duration, args: &Args) -> PhaseConfig {
        PhaseConfig {
            name: name.into(),
            publishers: self.publishers,
            followers: self.followers,
            batch: self.batch,
            in_flight: self.in_flight,
            rate,
            duration,
            interval: self.interval,
            drain_timeout: self.drain_timeout,
            follow_page: args.follow_page,
            ack_every: args.ack_every.max(1),
            require_complete: name != "peak",
            max_lag: (name == "peak" && args.peak_lag > 0).then_some(args.peak_lag),
            held_connections: if name == "peak" { 0 } else { args.held_connections },
        }
    }
}

/// Where the hub keeps its data: each phase in a database of its own (a SQLite file, or a
/// PostgreSQL schema), removed when the phase is over.
enum Backend {
    Sqlite {
        dir: PathBuf,
    },
    Pg {
        url: String,
        prefix: String,
        pool: sqlx::PgPool,
    },
}

/// The database of one phase.
struct PhaseDb {
    hub_url: String,
    size: DbSize,
    /// The SQLite file, or the PostgreSQL schema.
    name: String,
}

impl Backend {
    fn name(&self) -> &'static str {
        match self {
            Backend::Sqlite { .. } => "sqlite",
            Backend::Pg { .. } => "postgres",
        }
    }

    /// A fresh database for `phase`: a new SQLite file, or a new schema (made and migrated here;
    /// the hub finds it through the search_path its URL sets).
    async fn open(&self, phase: &str) -> Res<PhaseDb> {
        match self {
            Backend::Sqlite { dir } => {
                let file = dir.join(format!("hub-{phase}.db"));
                Ok(PhaseDb {
                    hub_url: format!("sqlite://{}", file.display()),
                    size: DbSize::Sqlite(file.clone()),
                    name: file.display().to_string(),
                })
            }
            Backend::Pg { url, prefix, pool } => {
                let schema = format!("{prefix}_{phase}");
                let store = xinqiao_store::PgStore::open_in_schema(url, &schema)
                    .await
                    .map_err(|e| format!("making PostgreSQL schema {schema}: {e}"))?;
                store.close().await;
                let separator = if url.contains('?') { '&' } else { '?' };
                Ok(PhaseDb {
                    hub_url: format!("{url}{separator}options=-c%20search_path%3D{schema}"),
                    size: DbSize::Pg(pool.clone(), schema.clone()),
                    name: schema,
                })
            }
        }
    }

    /// Removes a phase's database (its SQLite files, or its schema).
    async fn discard(&self, db: &PhaseDb) {
        match self {
            Backend::Sqlite { .. } => {
                for suffix in ["", "-wal", "-shm"] {
                    let path = format!("{}{suffix}", db.name);
                    if let Err(e) = std::fs::remove_file(&path)
                        && e.kind() != std::io::ErrorKind::NotFound
                    {
                        eprintln!("warning: could not remove {path}: {e}");
                    }
                }
            }
            Backend::Pg { url, .. } => drop_schema_with(url, &db.name).await,
        }
    }

    /// A directory on the file system that holds the database, for the free-space check.
    async fn disk(&self) -> Option<PathBuf> {
        match self {
            Backend::Sqlite { dir } => Some(dir.clone()),
            Backend::Pg { pool, .. } => sqlx::query_scalar::<_, String>("SHOW data_directory")
                .fetch_one(pool)
                .await
                .ok()
                .map(PathBuf::from),
        }
    }
}

fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let user = &url[scheme + 3..at];
            let user = user.split(':').next().unwrap_or("");
            format!("{}{user}@{}", &url[..scheme + 3], &url[at + 1..])
        }
        _ => url.to_string(),
    }
}

fn progress(text: &str) {
    eprintln!("[{}] {text}", chrono::Local::now().format("%H:%M:%S"));
}

fn hub_binary(args: &Args) -> Res<PathBuf> {
    if let Some(path) = &args.hub_binary {
        return if path.is_file() {
            Ok(path.clone())
        } else {
            Err(format!("--hub-binary {}: no such file", path.display()))
        };
    }
    let exe = std::env::current_exe().map_err(|e| format!("where is this program: {e}"))?;
    let dir = exe.parent().ok_or("this program has no directory")?;
    let candidate = dir.join("xinqiao");
    if candidate.is_file() {
        Ok(candidate)
    } else {
        let profile = if cfg!(debug_assertions) { "" } else { " --release" };
        Err(format!(
            "no hub binary at {}: build it first (cargo build{profile} -p xinqiao-cli) or give --hub-binary",
            candidate.display()
        ))
    }
}

/// When the file was last written, for the header (a stale hub binary is easy to measure by mistake).
fn modified(path: &Path) -> String {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .map(|t| {
            chrono::DateTime::<chrono::Local>::from(t)
                .format("%Y-%m-%d %H:%M:%S")
                .to_string()
        })
        .unwrap_or_else(|_| "?".into())
}

/// What the run holds on to until the end.
struct Load {
    args: Args,
    s: Settings,
    binary: PathBuf,
    data: PathBuf,
    backend: Backend,
    cancel: watch::Receiver<bool>,
    phases: Vec<PhaseReport>,
    notes: Vec<String>,
    /// The hub's stop, per phase.
    stops: Vec<String>,
    hub_warnings: Vec<String>,
    peak: Option<f64>,
}

impl Load {
    /// Starts a hub process, opens a dataset and runs one phase; the hub is stopped afterwards
    /// (or killed, if anything goes wrong, when the guard drops).
    async fn phase(&mut self, config: PhaseConfig) -> Res<()> {
        let db = self.backend.open(&config.name).await?;
        let result = self.phase_on(config, &db).await;
        if self.args.keep {
            println!("kept the database {}", db.name);
        } else {
            self.backend.discard(&db).await;
        }
        result
    }

    async fn phase_on(&mut self, config: PhaseConfig, db: &PhaseDb) -> Res<()> {
        progress(&format!(
            "{}: starting {} serve --dev on {}",
            config.name,
            self.binary.display(),
            db.name
        ));
        let mut hub = HubProcess::start(&self.binary, &self.data, &db.hub_url, &self.args.hub_log)?;
        progress(&format!(
            "{}: hub pid {} on {}, VmRSS {}",
            config.name,
            hub.pid,
            hub.addr,
            mib(hub.memory().rss)
        ));
        let target = Target {
            url: hub.url(),
            pki: hub.pki.clone(),
        };
        let dataset = run::open_dataset(&target, &config.name).await?;
        let rate = match (config.rate, config.max_lag) {
            (Some(r), _) => format!("at {r:.0} records/s"),
            (None, Some(lag)) if config.followers > 0 => {
                format!("unthrottled but never more than {lag} changes ahead of the slowest follower")
            }
            (None, _) => "unthrottled".to_string(),
        };
        println!();
        println!(
            "== {}: {} publishers ({} in flight each, batches of {}), {} followers, {rate}, for {} (dataset {dataset}) ==",
            config.name,
            config.publishers,
            config.in_flight,
            config.batch,
            config.followers,
            seconds(config.duration)
        );
        println!("{}", run::Row::header());
        let probe = run::Probe {
            hub_pid: hub.pid,
            db: db.size.clone(),
            disk: self.backend.disk().await,
            min_free: (self.args.min_free_gib * 1073741824.0) as u64,
        };
        let report = run::run_phase(config, &target, dataset, &probe, self.cancel.clone()).await;
        let alive = hub.alive();
        let stop = hub.stop();
        progress(&format!("hub {stop}"));
        let warnings = hub.log_problems();
        if !warnings.is_empty() {
            self.hub_warnings.extend(warnings.iter().take(20).cloned());
        }
        let mut report = report?;
        if !alive && !report.hub_died {
            report.hub_died = true;
            report.problems.push("the hub process had exited by the end".into());
        }
        if !stop.starts_with("stopped on SIGTERM") {
            report.problems.push(format!("the hub {stop}"));
        }
        if !warnings.is_empty() {
            report.notes.push(format!(
                "the hub logged {} warnings or errors (first: {})",
                warnings.len(),
                warnings[0]
            ));
        }
        self.stops.push(stop);
        print_summary(&report);
        self.phases.push(report);
        Ok(())
    }

    async fn run(&mut self) -> Res<()> {
        let measure_peak = self.args.peak || matches!(self.s.rate, Some(Rate::PercentOfPeak(_)));
        if measure_peak {
            let config = self.s.phase("peak", None, self.s.peak_duration, &self.args);
            self.phase(config).await?;
            let peak = self.phases.last().ok_or("no peak phase")?;
            if !peak.problems.is_empty() {
                return Err("the peak phase failed; not going on".into());
            }
            let steady = peak.steady();
            let sustainable = steady.published.min(steady.slowest);
            self.peak = Some(sustainable);
            println!(
                "peak: sustainable {:.0} records/s = the lower of published {:.0}/s and slowest follower {:.0}/s \
                 between {:.0}s and {:.0}s",
                sustainable, steady.published, steady.slowest, steady.from, steady.to
            );
        }
        if self.args.peak || *self.cancel.borrow() {
            return Ok(());
        }
        let rate = match self.s.rate {
            None => None,
            Some(Rate::PerSecond(r)) => Some(r),
            Some(Rate::PercentOfPeak(p)) => {
                let peak = self.peak.ok_or("no peak measured")?;
                if peak <= 0.0 {
                    return Err("the measured peak is 0 records/s".into());
                }
                println!("load rate: {p}% of {peak:.0} = {:.0} records/s", peak * p / 100.0);
                Some(peak * p / 100.0)
            }
        };
        self.check_disk(rate).await?;
        let config = self.s.phase("load", rate, self.s.duration, &self.args);
        self.phase(config).await
    }

    /// Refuses a run whose database would not fit on the disk, from the bytes per record the
    /// peak phase took.
    async fn check_disk(&mut self, rate: Option<f64>) -> Res<()> {
        let Some(peak) = self.phases.last() else {
            return Ok(());
        };
        let (Some(start), Some(end)) = (peak.db_bytes_at_start, peak.db_bytes_at_end) else {
            return Ok(());
        };
        if peak.published == 0 {
            return Ok(());
        }
        let per_record = end.saturating_sub(start) as f64 / peak.published as f64;
        let rate = rate.unwrap_or_else(|| peak.publish_rate());
        let expected = per_record * rate * self.s.duration.as_secs_f64();
        let free = match self.backend.disk().await {
            Some(dir) => hubproc::free_bytes(&dir),
            None => None,
        };
        let note = format!(
            "the database took {:.0} bytes per record in the peak phase: {:.1} GiB expected for {} at {rate:.0}/s; {} free",
            per_record,
            expected / 1073741824.0,
            seconds(self.s.duration),
            free.map_or("unknown".into(), |f| format!("{:.1} GiB", f as f64 / 1073741824.0))
        );
        println!("disk: {note}");
        self.notes.push(note);
        if let Some(free) = free
            && expected > free as f64 * 0.9
            && !self.args.no_disk_check
        {
            return Err(format!(
                "the load phase would fill the disk ({:.1} GiB expected, {:.1} GiB free): lower --rate or \
                 --duration, or pass --no-disk-check",
                expected / 1073741824.0,
                free as f64 / 1073741824.0
            ));
        }
        Ok(())
    }
}

fn print_summary(r: &PhaseReport) {
    let c = &r.config;
    let steady = r.steady();
    println!("-- {} summary --", c.name);
    println!(
        "published  {} records in {} batches in {:.1}s = {:.0}/s (after the first row: {:.0}/s){}{}",
        r.published,
        r.batches,
        r.publish_seconds,
        r.publish_rate(),
        steady.published,
        c.rate.map_or(String::new(), |t| format!("; target {t:.0}/s")),
        if r.replayed > 0 {
            format!("; {} replayed after a retry", r.replayed)
        } else {
            String::new()
        }
    );
    let ms = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.1} ms"));
    println!(
        "latency    Publish per batch of {}: p50 {}, p99 {}, max {}; Acknowledge ({} calls): p50 {}, p99 {}",
        c.batch,
        ms(r.p50_ms),
        ms(r.p99_ms),
        ms(r.max_ms),
        r.acks,
        ms(r.ack_p50_ms),
        ms(r.ack_p99_ms)
    );
    let faults: u64 = r.followers.iter().map(|f| f.gaps + f.duplicates).sum();
    if !c.require_complete {
        let reached: Vec<String> = r.followers.iter().map(|f| f.position.to_string()).collect();
        println!(
            "followers  stopped with the publishers at sequences {} of {}, {}; slowest after the first row {:.0}/s; lag \
             max {}",
            reached.join(", "),
            r.last_sequence,
            if faults > 0 {
                format!("{faults} gaps or duplicates")
            } else {
                "each gap-free and without duplicates".into()
            },
            steady.slowest,
            r.max_lag
        );
    } else {
        let complete = r
            .followers
            .iter()
            .filter(|f| f.position == r.last_sequence && f.delivered == r.last_sequence)
            .count();
        println!(
            "followers  {} of {} received sequences 1..={} exactly once each in order{}; slowest after the first row {:.0}/s; \
         lag max {}, {} when publishing stopped; {}",
            complete,
            r.followers.len(),
            r.last_sequence,
            if faults > 0 {
                format!(" ({faults} gaps or duplicates)")
            } else {
                String::new()
            },
            steady.slowest,
            r.max_lag,
            r.lag_at_end,
            r.drain_seconds.map_or("not all caught up in time".into(), |d| format!(
                "caught up {d:.1}s later"
            ))
        );
    }
    let errors: u64 = r.errors.values().sum();
    if errors == 0 {
        println!("errors     none");
    } else {
        println!(
            "errors     {errors}: {}",
            r.errors
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" ")
        );
        for s in r.error_samples.iter().take(5) {
            println!("           {s}");
        }
    }
    let m = r.memory_trend();
    let growth = m.end as f64 / (m.at10 as f64).max(1.0) * 100.0 - 100.0;
    println!(
        "hub memory VmRSS {} at 10% of the run, {} at the end ({growth:+.1}%), max {}, VmHWM {}; slope after 10%: {}",
        mib(m.at10),
        mib(m.end),
        mib(m.max),
        mib(m.hwm),
        m.slope_per_minute
            .map_or("-".into(), |s| format!("{:+.2} MiB/min", s / 1048576.0))
    );
    if !r.rows.is_empty() {
        let mean = |f: fn(&run::Row) -> f64| r.rows.iter().map(f).sum::<f64>() / r.rows.len() as f64;
        println!(
            "cpu        hub {:.0}%, load generator {:.0}%, whole machine {:.0}% of {}% (mean of the rows; 100% is one core)",
            mean(|row| row.hub_cpu),
            mean(|row| row.load_cpu),
            mean(|row| row.machine_cpu),
            std::thread::available_parallelism().map_or(1, |n| n.get()) * 100
        );
    }
    if let (Some(a), Some(b)) = (r.db_bytes_at_start, r.db_bytes_at_end) {
        println!(
            "database   {} at the start, {} at the end ({:.0} bytes per record published)",
            mib(a),
            mib(b),
            b.saturating_sub(a) as f64 / (r.published as f64).max(1.0)
        );
    }
    if r.held.connections > 0 {
        println!(
            "held       {} connections open through the phase: opened and answered in {:.1}s (hub VmRSS {} with all \
             open); answered at the end: {}",
            r.held.connections,
            r.held.opened_seconds,
            mib(r.held.hub_rss_opened),
            r.held.answered_at_end
        );
    }
    for n in &r.notes {
        println!("note       {n}");
    }
    if r.problems.is_empty() {
        println!("result     PASS");
    } else {
        println!("result     FAIL");
        for p in &r.problems {
            println!("           - {p}");
        }
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(start(args))
}

async fn start(args: Args) -> ExitCode {
    let s = match Settings::from(&args) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let binary = match hub_binary(&args) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let tmp = match tempfile::Builder::new().prefix("xinqiao-load-").tempdir() {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: cannot create a temporary directory: {e}");
            return ExitCode::FAILURE;
        }
    };
    let pid = std::process::id();
    let backend = match &args.database_url {
        None => Backend::Sqlite {
            dir: tmp.path().to_path_buf(),
        },
        Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
            let pool = match sqlx::postgres::PgPoolOptions::new()
                .max_connections(1)
                .connect(url)
                .await
            {
                Ok(p) => p,
                Err(e) => {
                    eprintln!("error: connecting to PostgreSQL: {e}");
                    return ExitCode::FAILURE;
                }
            };
            Backend::Pg {
                url: url.clone(),
                prefix: format!("xq_load_{pid}"),
                pool,
            }
        }
        Some(_) => {
            eprintln!("error: --database-url must be postgres://… (SQLite is the default)");
            return ExitCode::from(2);
        }
    };

    // Ctrl-C or SIGTERM end the run early; the hub is still stopped and the schema dropped.
    let (cancel_tx, cancel) = watch::channel(false);
    let cancel_tx = Arc::new(cancel_tx);
    tokio::spawn({
        let cancel_tx = cancel_tx.clone();
        async move {
            let term = async {
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(mut s) => {
                        s.recv().await;
                    }
                    Err(_) => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {},
                () = term => {},
            }
            eprintln!("interrupted: stopping the phase, the hub and cleaning up");
            cancel_tx.send_replace(true);
        }
    });

    let date = chrono::Local::now();
    let machine = sys::Machine::read();
    let build = if cfg!(debug_assertions) { "debug" } else { "release" };
    let database = match &backend {
        Backend::Sqlite { dir } => format!("SQLite files hub-<phase>.db in {}", dir.display()),
        Backend::Pg { url, prefix, .. } => {
            let version: String = match &backend {
                Backend::Pg { pool, .. } => sqlx::query_scalar("SHOW server_version")
                    .fetch_one(pool)
                    .await
                    .unwrap_or_default(),
                Backend::Sqlite { .. } => String::new(),
            };
            let sync: String = match &backend {
                Backend::Pg { pool, .. } => sqlx::query_scalar("SHOW synchronous_commit")
                    .fetch_one(pool)
                    .await
                    .unwrap_or_default(),
                Backend::Sqlite { .. } => String::new(),
            };
            format!(
                "PostgreSQL {version} {} schemas {prefix}_<phase> (synchronous_commit = {sync})",
                redact(url)
            )
        }
    };
    let rate_text = match s.rate {
        None if args.peak => "peak only".to_string(),
        None => "unthrottled".into(),
        Some(Rate::PerSecond(r)) => format!("{r:.0} records/s"),
        Some(Rate::PercentOfPeak(p)) => format!(
            "{p}% of the peak measured for {} (lag bound {})",
            seconds(s.peak_duration),
            args.peak_lag
        ),
    };
    let settings_text = format!(
        "{}{} publishers x {} in flight, batches of {} records of {} bytes, {} followers (pages of {}, ack every {} \
         message(s)), {rate_text}, {}, rows every {}",
        if s.quick { "quick: " } else { "" },
        s.publishers,
        s.in_flight,
        s.batch,
        records::TARGET_BYTES,
        s.followers,
        args.follow_page,
        args.ack_every.max(1),
        if args.peak {
            format!("peak for {} (lag bound {})", seconds(s.peak_duration), args.peak_lag)
        } else {
            format!("for {}", seconds(s.duration))
        },
        seconds(s.interval)
    );
    println!("xinqiao-load {}  ({build} build)", date.format("%Y-%m-%d %H:%M:%S %z"));
    println!("hub:      {} (built {})", binary.display(), modified(&binary));
    println!("backend:  {} — {database}", backend.name());
    let load_before = hubproc::load_average();
    println!("machine:  {}; load average {load_before}", machine.describe());
    println!("settings: {settings_text}");
    println!("data:     {}", tmp.path().display());

    let started = Instant::now();
    let mut load = Load {
        data: tmp.path().join("hub"),
        args,
        s,
        binary,
        backend,
        cancel,
        phases: Vec::new(),
        notes: Vec::new(),
        stops: Vec::new(),
        hub_warnings: Vec::new(),
        peak: None,
    };
    let result = load.run().await;
    if let Err(e) = &result {
        eprintln!("error: {e}");
    }
    let interrupted = *load.cancel.borrow();
    let mut failed = result.is_err() || interrupted || load.phases.iter().any(|p| !p.problems.is_empty());
    let mut growth_problems = Vec::new();
    if let (Some(limit), Some(last)) = (load.args.max_rss_growth, load.phases.last()) {
        let m = last.memory_trend();
        let growth = m.end as f64 / (m.at10 as f64).max(1.0) * 100.0 - 100.0;
        if growth > limit {
            growth_problems.push(format!(
                "the hub's VmRSS grew {growth:.1}% from 10% of the run to its end (limit {limit}%)"
            ));
            failed = true;
        }
    }
    for p in &growth_problems {
        println!("FAIL: {p}");
    }
    if !load.hub_warnings.is_empty() {
        println!(
            "hub log warnings and errors (first {}):",
            load.hub_warnings.len().min(20)
        );
        for w in load.hub_warnings.iter().take(20) {
            println!("  {w}");
        }
    }

    if let Some(path) = &load.args.json {
        let doc = json!({
            "date": date.to_rfc3339(),
            "build": build,
            "hub_binary": load.binary.display().to_string(),
            "hub_binary_modified": modified(&load.binary),
            "backend": load.backend.name(),
            "database": database,
            "machine": machine.json(),
            "load_average_at_start": load_before,
            "load_average_at_end": hubproc::load_average(),
            "settings": settings_text,
            "peak_sustainable_per_s": load.peak.map(|p| round(p, 1)),
            "phases": load.phases.iter().map(PhaseReport::json).collect::<Vec<_>>(),
            "hub_stops": load.stops,
            "hub_log_problems": load.hub_warnings,
            "notes": load.notes,
            "memory_growth_problems": growth_problems,
            "elapsed_seconds": round(started.elapsed().as_secs_f64(), 1),
            "error": result.as_ref().err(),
            "interrupted": interrupted,
            "passed": !failed,
        });
        match serde_json::to_string_pretty(&doc) {
            Ok(text) => {
                if let Err(e) = std::fs::write(path, text + "\n") {
                    eprintln!("error: cannot write {}: {e}", path.display());
                    failed = true;
                }
            }
            Err(e) => {
                eprintln!("error: {e}");
                failed = true;
            }
        }
    }
    if let Some(path) = &load.args.svg {
        let title = format!(
            "xinqiao-load {} — {}, {build} build",
            date.format("%Y-%m-%d %H:%M"),
            load.backend.name()
        );
        let phases: Vec<&PhaseReport> = load.phases.iter().collect();
        if let Err(e) = std::fs::write(path, svg::render(&title, &phases)) {
            eprintln!("error: cannot write {}: {e}", path.display());
            failed = true;
        }
    }

    // Clean up: the hub processes are stopped already (and killed on drop whatever happened).
    if let Backend::Pg { pool, .. } = &load.backend {
        pool.close().await;
    }
    if load.args.keep {
        let kept = tmp.keep();
        println!("kept {}", kept.display());
    } else {
        drop(tmp);
    }
    println!(
        "finished in {:.1}s: {}",
        started.elapsed().as_secs_f64(),
        if failed { "FAIL" } else { "PASS" }
    );
    if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS }
}

async fn drop_schema_with(url: &str, schema: &str) {
    match sqlx::PgPool::connect(url).await {
        Ok(pool) => {
            if let Err(e) = sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"
            )))
            .execute(&pool)
            .await
            {
                eprintln!("warning: could not drop schema {schema}: {e}");
            }
            pool.close().await;
        }
        Err(e) => eprintln!("warning: could not connect to drop schema {schema}: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_and_durations_parse() {
        assert_eq!("70%".parse::<Rate>(), Ok(Rate::PercentOfPeak(70.0)));
        assert_eq!("20000".parse::<Rate>(), Ok(Rate::PerSecond(20000.0)));
        assert_eq!("20000/s".parse::<Rate>(), Ok(Rate::PerSecond(20000.0)));
        assert_eq!("20k/s".parse::<Rate>(), Ok(Rate::PerSecond(20000.0)));
        assert!("0".parse::<Rate>().is_err());
        assert!("fast".parse::<Rate>().is_err());
        assert_eq!(parse_duration("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("soon").is_err());
        assert_eq!(seconds(Duration::from_secs(1800)), "30m");
    }
}
