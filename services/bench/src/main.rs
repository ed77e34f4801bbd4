//! `xinqiao-bench`: the hub measured against its baselines, side by side in one run.
//!
//! Each pair (B1–B7 of issue #7, B8 of issue #12) runs its contenders alternately for several rounds; the table
//! gives each side's median and spread (min–max over the rounds), the ratio of the medians and
//! whether the goal is met. `--json FILE` writes the same. The hubs run in this process over a
//! temporary SQLite file (or a fresh schema of `--database-url postgres://…`), and clients reach
//! them over loopback with real mutual TLS.

mod catalogue;
mod chart;
mod curve;
mod hub;
mod interfaces;
mod native;
mod nats;
mod raw;
mod records;
mod report;
mod skim;
mod sys;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::json;
use tonic_health::pb::health_client::HealthClient;
use xinqiao_domain::identity::Principal;
use xinqiao_hub::config::BenchmarkSwitches;
use xinqiao_hub::sample_upstream::Behaviour;
use xinqiao_proto::v1 as pb;
use xinqiao_store::{PgStore, SqliteStore, Store};

use crate::hub::{Catalog, Exchange, Hub, PROVIDER, Unary};
use crate::native::Native;
use crate::nats::{DurableNats, Nats};
use crate::raw::Raw;
use crate::report::{Ctx, Goal, Res, Row, Unit, summary};

/// Measures the hub against raw storage, a message broker and the gRPC floor (issue #7).
#[derive(Parser, Debug)]
#[command(name = "xinqiao-bench", version)]
struct Args {
    /// Small sizes, for CI: checks that every pair still runs; asserts no threshold.
    #[arg(long)]
    quick: bool,
    /// postgres://… to measure on PostgreSQL (in a fresh schema xq_bench_<pid>, dropped at the
    /// end) [default: SQLite in a temporary directory].
    #[arg(long)]
    database_url: Option<String>,
    /// Records each publish contender writes per round (B1, B2, B4, B6) [full: 100000, quick: 2000].
    #[arg(long)]
    records: Option<u64>,
    /// Rounds of every pair [full: 5, quick: 2].
    #[arg(long)]
    rounds: Option<u32>,
    /// Records in the dataset that B3 drains [full: 1000000, quick: 3000].
    #[arg(long)]
    b3_records: Option<u64>,
    /// Records already in B7's large dataset, e.g. 10000000 [full: 1000000, quick: 4000].
    #[arg(long)]
    b7_records: Option<u64>,
    /// Records already in B7's small dataset (its baseline) [full: 100000, quick: 1000].
    #[arg(long)]
    b7_base: Option<u64>,
    /// Records B7 publishes into each dataset per round [full: 20000, quick: 1000].
    #[arg(long)]
    b7_window: Option<u64>,
    /// Seconds each B5 contender runs per round [full: 2, quick: 0.2].
    #[arg(long)]
    b5_seconds: Option<f64>,
    /// Catalogue entries B5 searches [full: 100000, quick: 200]; GetEntry reads the first 200 (quick: 12).
    #[arg(long)]
    catalog_entries: Option<usize>,
    /// The upstream's own service times B8 is measured at, in milliseconds: 0 is an upstream that
    /// answers at once (the hub's whole cost shows); 5 and 20 ms are a provider's lookup in its
    /// own database and a typical national verification service [default: 0,5,20].
    #[arg(long, value_delimiter = ',')]
    b8_service_ms: Vec<u64>,
    /// Concurrent unary calls on the one channel in B5.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Records per published batch.
    #[arg(long, default_value_t = 500)]
    batch: usize,
    /// Batches sent ahead of their acknowledgement (`xinqiao publish --in-flight`, default 4).
    #[arg(long, default_value_t = 4)]
    in_flight: usize,
    /// The NATS server of the broker baselines.
    #[arg(long, default_value = "127.0.0.1:4222")]
    nats: String,
    /// Run only these pairs, e.g. `--only B1,B3`.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Run only the hub's side of each pair, for a profiler: no baselines, no ratios.
    #[arg(long)]
    ours_only: bool,
    /// Write the results as JSON to this file.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// The scale curve's largest dataset (`--only CURVE`) [full: 10000000, quick: 3000].
    #[arg(long)]
    curve_records: Option<u64>,
    /// Where the scale curve's SVG chart is written.
    #[arg(long, value_name = "FILE", default_value = "target/bench-curve.svg")]
    curve_svg: PathBuf,
}

#[derive(Debug, Clone)]
struct Settings {
    quick: bool,
    records: u64,
    rounds: u32,
    b3_records: u64,
    b7_records: u64,
    b7_base: u64,
    b7_window: u64,
    b5_seconds: f64,
    b8_service_ms: Vec<u64>,
    catalog_entries: usize,
    concurrency: usize,
    batch: usize,
    in_flight: usize,
    only: Vec<String>,
    ours_only: bool,
}

impl Settings {
    fn from(args: &Args) -> Res<Settings> {
        let q = args.quick;
        let s = Settings {
            quick: q,
            records: args.records.unwrap_or(if q { 2_000 } else { 100_000 }),
            rounds: args.rounds.unwrap_or(if q { 2 } else { 5 }),
            b3_records: args.b3_records.unwrap_or(if q { 3_000 } else { 1_000_000 }),
            b7_records: args.b7_records.unwrap_or(if q { 4_000 } else { 1_000_000 }),
            b7_base: args.b7_base.unwrap_or(if q { 1_000 } else { 100_000 }),
            b7_window: args.b7_window.unwrap_or(if q { 1_000 } else { 20_000 }),
            b5_seconds: args.b5_seconds.unwrap_or(if q { 0.2 } else { 2.0 }),
            b8_service_ms: if args.b8_service_ms.is_empty() {
                vec![0, 5, 20]
            } else {
                args.b8_service_ms.clone()
            },
            catalog_entries: args.catalog_entries.unwrap_or(if q { 200 } else { 100_000 }),
            concurrency: args.concurrency.max(1),
            batch: args.batch.clamp(1, 10_000),
            in_flight: args.in_flight.clamp(1, 64),
            only: args.only.iter().map(|s| s.trim().to_ascii_uppercase()).collect(),
            ours_only: args.ours_only,
        };
        if s.rounds == 0 || s.records == 0 || s.b3_records == 0 || s.b7_window == 0 || s.b7_base == 0 {
            return Err("--rounds, --records, --b3-records, --b7-base and --b7-window must be above 0".into());
        }
        if s.b8_service_ms.iter().any(|&ms| ms > 1_000) {
            return Err("--b8-service-ms: at most 1000 ms (the interface's timeout is 10 s)".into());
        }
        if s.b7_records < s.b7_base {
            return Err("--b7-records must be at least --b7-base".into());
        }
        Ok(s)
    }

    fn wants(&self, id: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|o| o == id)
    }

    fn json(&self) -> serde_json::Value {
        json!({
            "quick": self.quick,
            "records_per_round": self.records,
            "rounds": self.rounds,
            "b3_records": self.b3_records,
            "b7_records": self.b7_records,
            "b7_base": self.b7_base,
            "b7_window": self.b7_window,
            "b5_seconds": self.b5_seconds,
            "b8_service_ms": self.b8_service_ms,
            "catalog_entries": self.catalog_entries,
            "concurrency": self.concurrency,
            "batch": self.batch,
            "in_flight": self.in_flight,
            "record_bytes": records::TARGET_BYTES,
            "only": self.only,
            "ours_only": self.ours_only,
        })
    }
}

/// Where the stores live.
enum Backend {
    Sqlite,
    Pg { url: String },
}

/// A store opened for the benchmark, and what it takes to clean it up.
struct Opened {
    store: Arc<dyn Store>,
    url: String,
    schema: Option<String>,
    pg: Option<PgStore>,
    sqlite: Option<SqliteStore>,
}

/// Rates, p50s and p99s of a unary contender's rounds.
type LoadSamples = (Vec<f64>, Vec<f64>, Vec<f64>);

struct Bench {
    s: Settings,
    tmp: tempfile::TempDir,
    backend: Backend,
    pid: u32,
    nats_addr: String,
    nats: Result<Nats, String>,
    /// B4's second baseline: a JetStream of the benchmark's own that flushes every message.
    nats_durable: Result<DurableNats, String>,
    opened: Vec<Opened>,
    rows: Vec<Row>,
    info: Vec<String>,
    /// The scale curve's settings when it is asked for (`CURVE` or `C1` in `--only`, or no `--only`).
    curve_settings: Option<curve::CurveSettings>,
    curve: Option<curve::Curve>,
}

fn rate(count: u64, started: Instant) -> f64 {
    count as f64 / started.elapsed().as_secs_f64().max(1e-9)
}

fn progress(text: &str) {
    eprintln!("[{}] {text}", chrono::Local::now().format("%H:%M:%S"));
}

/// "1000000" → "1M", for sizes in the table.
fn count(n: u64) -> String {
    if n >= 1_000_000 && n.is_multiple_of(100_000) {
        format!("{}M", n as f64 / 1e6)
    } else if n >= 1_000 && n.is_multiple_of(100) {
        format!("{}k", n as f64 / 1e3)
    } else {
        n.to_string()
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

impl Bench {
    fn dir(&self) -> &Path {
        self.tmp.path()
    }

    fn backend_name(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite => "sqlite",
            Backend::Pg { .. } => "postgres",
        }
    }

    /// Opens a store named `name`: a SQLite file in the temporary directory, or a schema
    /// `xq_bench_<pid>[_name]` on PostgreSQL.
    async fn open_store(&mut self, name: &str) -> Res<usize> {
        let opened = match &self.backend {
            Backend::Sqlite => {
                let url = format!("sqlite://{}", self.tmp.path().join(format!("{name}.db")).display());
                let store = SqliteStore::open(&url).await.ctx("opening SQLite")?;
                Opened {
                    store: Arc::new(store.clone()),
                    url,
                    schema: None,
                    pg: None,
                    sqlite: Some(store),
                }
            }
            Backend::Pg { url } => {
                let schema = if name == "main" {
                    format!("xq_bench_{}", self.pid)
                } else {
                    format!("xq_bench_{}_{name}", self.pid)
                };
                let store = PgStore::open_in_schema(url, &schema).await.ctx("opening PostgreSQL")?;
                Opened {
                    store: Arc::new(store.clone()),
                    url: url.clone(),
                    schema: Some(schema),
                    pg: Some(store),
                    sqlite: None,
                }
            }
        };
        self.opened.push(opened);
        Ok(self.opened.len() - 1)
    }

    async fn raw_for(&self, store: usize) -> Res<Raw> {
        let o = &self.opened[store];
        match &o.schema {
            None => Raw::sqlite(&o.url).await,
            Some(schema) => Raw::pg(&o.url, schema).await,
        }
    }

    /// The native-driver floor on the same file or schema as [`Bench::raw_for`].
    async fn native_for(&self, store: usize) -> Res<Native> {
        let o = &self.opened[store];
        match &o.schema {
            None => {
                let path = o.url.strip_prefix("sqlite://").ok_or("not a SQLite file URL")?;
                Native::sqlite(Path::new(path))
            }
            Some(schema) => Native::pg(&o.url, schema).await,
        }
    }

    async fn start_hub(&self, store: usize, switches: BenchmarkSwitches) -> Res<Hub> {
        Hub::start(self.dir(), self.opened[store].store.clone(), switches).await
    }

    async fn run(&mut self) -> Res<()> {
        xinqiao_hub::pki::init(&self.dir().join("pki"), &[]).ctx("creating the development PKI")?;
        let main = self.open_store("main").await?;
        let hub = self.start_hub(main, BenchmarkSwitches::default()).await?;
        let mut catalog = Catalog::prepare(&hub, self.opened[main].store.as_ref()).await?;
        let raw = self.raw_for(main).await?;
        let mut native = if (self.s.wants("B1") || self.s.wants("B3")) && !self.s.ours_only {
            Some(self.native_for(main).await?)
        } else {
            None
        };
        let floor = if native.is_some() {
            ", the raw baseline and the native floor"
        } else {
            " and the raw baseline"
        };
        if let Raw::Pg { pool } = &raw {
            let sync: String = sqlx::query_scalar("SHOW synchronous_commit")
                .fetch_one(pool)
                .await
                .ctx("SHOW synchronous_commit")?;
            let native_sync = match &native {
                Some(n) => n.synchronous_commit().await?,
                None => None,
            };
            self.info.push(match native_sync {
                Some(other) if other != sync => format!(
                    "PostgreSQL synchronous_commit = {sync} for the hub and the raw baseline, {other} for the native floor"
                ),
                _ => format!("PostgreSQL synchronous_commit = {sync} for the hub{floor} alike"),
            });
        } else {
            self.info.push(format!(
                "SQLite: WAL, synchronous=NORMAL, for the hub{floor} alike (same file, same table)"
            ));
        }
        let plain_needed = self.s.wants("B6");
        let plain = if plain_needed {
            let switches = BenchmarkSwitches {
                plaintext_as: Some(Principal::Department(PROVIDER.into())),
                ..Default::default()
            };
            Some(self.start_hub(main, switches).await?)
        } else {
            None
        };

        if ["B1", "B2", "B4", "B6"].iter().any(|id| self.s.wants(id)) {
            self.publish_pairs(&hub, plain.as_ref(), main, &mut catalog, &raw, native.as_mut())
                .await?;
        }
        if self.s.wants("B5") || self.s.wants("B6") {
            let store = self.opened[main].store.clone();
            self.unary_pairs(&hub, plain.as_ref(), &mut catalog, store).await?;
        }
        if self.s.wants("B3") {
            self.drain_pairs(&hub, &mut catalog, &raw, native.as_mut()).await?;
        }
        if self.s.wants("B8") {
            self.b8(&hub).await?;
        }
        raw.close().await;
        if let Some(native) = native {
            native.close().await;
        }
        if let Some(plain) = plain {
            plain.stop().await?;
        }
        hub.stop().await?;
        if self.s.wants("B7") {
            self.b7().await?;
        }
        if let Some(cs) = self.curve_settings.clone() {
            let store = self.open_store("curve").await?;
            let hub = self.start_hub(store, BenchmarkSwitches::default()).await?;
            let mut catalog = Catalog::prepare(&hub, self.opened[store].store.as_ref()).await?;
            self.curve = Some(curve::run(&hub, &mut catalog, &cs).await?);
            hub.stop().await?;
        }
        Ok(())
    }

    /// B8: a service interface called through the hub against its upstream called directly, at 16
    /// concurrent callers, the two in turn each round; once for each of the upstream's service
    /// times (`--b8-service-ms`).
    async fn b8(&mut self, hub: &Hub) -> Res<()> {
        const CALLERS: usize = 16;
        let s = self.s.clone();
        progress("B8: starting the sample 身份核验 upstream and registering it");
        let setup = interfaces::setup(hub, &self.dir().join("pki"), CALLERS as u32).await?;
        let duration = Duration::from_secs_f64(s.b5_seconds);
        // The gRPC floor's CPU per call: what any call to the hub costs.
        progress("B8: the gRPC floor (Health/Check)");
        let floor = [interfaces::load(&setup.floor, CALLERS, duration).await?];
        for &service_ms in &s.b8_service_ms {
            setup.upstream.behave(if service_ms == 0 {
                Behaviour::Serve
            } else {
                Behaviour::Slow(Duration::from_millis(service_ms))
            });
            let (mut ours, mut direct) = (Vec::new(), Vec::new());
            for round in 0..s.rounds {
                let mut pair = [("hub", &setup.hub), ("direct", &setup.direct)];
                if round % 2 == 1 {
                    pair.reverse();
                }
                for (name, caller) in pair {
                    progress(&format!(
                        "B8: upstream {service_ms} ms: round {}/{}: {name}",
                        round + 1,
                        s.rounds
                    ));
                    let load = interfaces::load(caller, CALLERS, duration).await?;
                    if name == "hub" { &mut ours } else { &mut direct }.push(load);
                }
                if s.ours_only {
                    direct.clear();
                }
            }
            self.b8_rows(service_ms, &ours, &direct, &floor);
        }
        Ok(())
    }

    /// B8's two rows for one service time of the upstream.
    fn b8_rows(
        &mut self,
        service_ms: u64,
        ours: &[interfaces::Load],
        direct: &[interfaces::Load],
        floor: &[interfaces::Load],
    ) {
        let size = format!("16 x {:.1}s x {}", self.s.b5_seconds, self.s.rounds);
        let upstream = if service_ms == 0 {
            "upstream at once".to_string()
        } else {
            format!("upstream {service_ms} ms")
        };
        let rates = |v: &[interfaces::Load]| v.iter().map(|l| l.rate).collect::<Vec<_>>();
        let p99s = |v: &[interfaces::Load]| v.iter().map(|l| l.p99_ms).collect::<Vec<_>>();
        let cpu = |v: &[interfaces::Load]| {
            summary(&v.iter().map(|l| l.cpu_us_per_call).collect::<Vec<_>>())
                .map(|x| format!("{:.0} µs", x.median))
                .unwrap_or_default()
        };
        let p50 = |v: &[interfaces::Load]| {
            summary(&v.iter().map(|l| l.p50_ms).collect::<Vec<_>>())
                .map(|x| format!("{:.2} ms", x.median))
                .unwrap_or_default()
        };
        self.rows.push(
            Row::new(
                "B8",
                format!("Invoke rate, {upstream}"),
                "the upstream called directly",
                Unit::RequestsPerSec,
                Goal::AtLeast(0.7),
            )
            .size(size.clone())
            .samples(rates(ours), rates(direct))
            .note(format!(
                "POST /verify of the sample 身份核验 upstream (HTTPS, client certificate required) in this process, \
                 answering after {service_ms} ms of its own; through the hub: mTLS gRPC, the read gate, request and \
                 answer schema checks, the audit trail"
            )),
        );
        self.rows.push(
            Row::new(
                "B8",
                format!("Invoke p99, {upstream}"),
                "direct p99",
                Unit::Millis,
                Goal::AtMost(2.0),
            )
            .size(size)
            .samples(p99s(ours), p99s(direct))
            .note(format!(
                "p50: through the hub {}, direct {}; CPU of the whole process (callers, hub, upstream) per call: \
                 through the hub {}, direct {}, a Health/Check on the hub (the gRPC floor) {}",
                p50(ours),
                p50(direct),
                cpu(ours),
                cpu(direct),
                cpu(floor)
            )),
        );
    }

    /// B1, B2, B4 and the publish half of B6: one loop, the contenders in turn each round, the
    /// same records for each.
    async fn publish_pairs(
        &mut self,
        hub: &Hub,
        plain: Option<&Hub>,
        main: usize,
        catalog: &mut Catalog,
        raw: &Raw,
        mut native: Option<&mut Native>,
    ) -> Res<()> {
        #[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
        enum C {
            Hub,
            Raw,
            Native,
            NoValidation,
            Plain,
            Nats,
            NatsDurable,
        }
        let s = self.s.clone();
        let mut contenders = vec![C::Hub];
        if s.wants("B1") {
            contenders.push(C::Raw);
            if native.is_some() {
                contenders.push(C::Native);
            }
        }
        let mut novalidation = None;
        let b2_note = "both over mTLS; the second hub (BenchmarkSwitches.skip_validation) parses and keys records \
                       but skips schema validation"
            .to_string();
        if s.wants("B2") {
            let switches = BenchmarkSwitches {
                skip_validation: true,
                ..Default::default()
            };
            let h = self.start_hub(main, switches).await?;
            let dataset = catalog.dataset().await?;
            let mut client = hub::exchange(h.provider_channel().await?);
            let (works, answer) = probe_skip_validation(&mut client, &dataset, "switch").await?;
            if !works {
                return Err(format!(
                    "the hub started with BenchmarkSwitches.skip_validation still validated ({answer})"
                ));
            }
            novalidation = Some((h, dataset, client));
            contenders.push(C::NoValidation);
        }
        let mut plaintext = None;
        if let (true, Some(p)) = (s.wants("B6"), plain) {
            plaintext = Some((catalog.dataset().await?, hub::exchange(p.provider_channel().await?)));
            contenders.push(C::Plain);
        }
        let nats_ok = self.nats.is_ok();
        if s.wants("B4") && nats_ok {
            contenders.push(C::Nats);
        }
        if s.wants("B4") && self.nats_durable.is_ok() {
            contenders.push(C::NatsDurable);
        }
        if s.ours_only {
            contenders.retain(|c| *c == C::Hub);
        }
        let dataset = catalog.dataset().await?;
        let mut client = hub::exchange(hub.provider_channel().await?);
        let raw_dataset = format!("raw-b1-{}", self.pid);
        let mut raw_sequence = 0i64;
        let native_dataset = format!("native-b1-{}", self.pid);
        let mut native_sequence = 0i64;
        let mut samples: HashMap<C, Vec<f64>> = HashMap::new();
        let n = s.records;
        for round in 0..s.rounds {
            let from = u64::from(round) * n;
            let texts: Vec<String> = (from..from + n).map(records::record).collect();
            let keys: Vec<String> = (from..from + n).map(records::key).collect();
            let mut order = contenders.clone();
            let turn = round as usize % order.len();
            order.rotate_left(turn);
            for c in order {
                progress(&format!("publish pairs: round {}/{}: {c:?}", round + 1, s.rounds));
                let tag = format!("{c:?}-r{round}");
                let r = match c {
                    C::Hub | C::NoValidation | C::Plain => {
                        let (ds, cl) = match c {
                            C::Hub => (&dataset, &mut client),
                            C::NoValidation => {
                                let (_, ds, cl) = novalidation.as_mut().ok_or("no second hub")?;
                                (&*ds, cl)
                            }
                            _ => {
                                let (ds, cl) = plaintext.as_mut().ok_or("no plaintext hub")?;
                                (&*ds, cl)
                            }
                        };
                        let batches = hub::requests_from(ds, &tag, from, &texts, s.batch);
                        let started = Instant::now();
                        hub::publish_stream(cl, batches.into_iter(), s.in_flight, n).await?;
                        rate(n, started)
                    }
                    C::Raw => {
                        let rows: Vec<(&str, &str)> =
                            keys.iter().zip(&texts).map(|(k, t)| (k.as_str(), t.as_str())).collect();
                        let started = Instant::now();
                        for chunk in rows.chunks(s.batch) {
                            raw.insert_batch(&raw_dataset, raw_sequence + 1, chunk).await?;
                            raw_sequence += chunk.len() as i64;
                        }
                        rate(n, started)
                    }
                    C::Native => {
                        let native = native.as_deref_mut().ok_or("no native floor")?;
                        let rows: Vec<(&str, &str)> =
                            keys.iter().zip(&texts).map(|(k, t)| (k.as_str(), t.as_str())).collect();
                        let started = Instant::now();
                        native
                            .insert(&native_dataset, native_sequence + 1, &rows, s.batch)
                            .await?;
                        native_sequence += rows.len() as i64;
                        rate(n, started)
                    }
                    C::Nats | C::NatsDurable => {
                        let nats = match c {
                            C::Nats => self.nats.as_ref().map_err(Clone::clone)?,
                            _ => &self.nats_durable.as_ref().map_err(Clone::clone)?.nats,
                        };
                        let payloads: Vec<Vec<u8>> = texts.iter().map(|t| t.clone().into_bytes()).collect();
                        let started = Instant::now();
                        nats.publish("b4", payloads.into_iter(), s.batch * s.in_flight).await?;
                        rate(n, started)
                    }
                };
                samples.entry(c).or_default().push(r);
            }
        }
        if let Some((h, _, _)) = novalidation {
            h.stop().await?;
        }
        // Both raw writers are read back through sqlx: every row, every record byte.
        for (c, dataset, written) in [
            (C::Raw, &raw_dataset, raw_sequence),
            (C::Native, &native_dataset, native_sequence),
        ] {
            if !contenders.contains(&c) {
                continue;
            }
            let expected = (
                s.records * u64::from(s.rounds),
                s.records * u64::from(s.rounds) * records::TARGET_BYTES as u64,
            );
            let stored = raw.stored(dataset).await?;
            if written as u64 != expected.0 || stored != expected {
                return Err(format!(
                    "B1 {c:?} stored {} rows of {} record bytes in {dataset}, expected {} of {}",
                    stored.0, stored.1, expected.0, expected.1
                ));
            }
        }
        let take = |c: C| samples.get(&c).cloned().unwrap_or_default();
        let size = format!("{} rec x {}", count(n), s.rounds);
        let how = format!(
            "PublishStream, {} x {} records in flight, as `xinqiao publish`",
            s.in_flight, s.batch
        );
        if s.wants("B1") {
            self.rows.push(
                Row::new(
                    "B1",
                    "validated publish, mTLS",
                    "raw insert, same table",
                    Unit::RecordsPerSec,
                    Goal::AtLeast(0.5),
                )
                .size(size.clone())
                .samples(take(C::Hub), take(C::Raw))
                .note(format!(
                    "ours: {how}; baseline: {} (same rows, same database)",
                    raw.method()
                )),
            );
            if let Some(native) = native.as_deref() {
                let row = floor_row(native, false, &size, &take(C::Hub), take(C::Native), take(C::Raw));
                self.rows.push(row);
            }
        }
        if s.wants("B2") {
            let mut row = Row::new(
                "B2",
                "publish with validation",
                "validation off (2nd hub)",
                Unit::RecordsPerSec,
                Goal::AtLeast(0.8),
            )
            .size(size.clone())
            .samples(take(C::Hub), take(C::NoValidation));
            row = row.note(b2_note.clone());
            self.rows.push(row);
        }
        if s.wants("B4") {
            let row = Row::new(
                "B4",
                "validated publish, mTLS",
                "JetStream async publish",
                Unit::RecordsPerSec,
                Goal::AtLeast(1.0),
            )
            .size(size.clone());
            self.rows.push(match &self.nats {
                Ok(nats) => row.samples(take(C::Hub), take(C::Nats)).note(format!(
                    "baseline: {}, {} acknowledgements outstanding at most (the hub's {} x {}); JetStream's file store \
                     does not fsync per message by default",
                    nats.describe(),
                    s.batch * s.in_flight,
                    s.in_flight,
                    s.batch
                )),
                Err(why) => row.not_measured(format!("not measured: {why}")),
            });
            // The hub acknowledges a batch once its transaction commits: on PostgreSQL
            // (synchronous_commit on) that is after the WAL reached the disk, which JetStream
            // gives only with sync_interval: always; on SQLite (WAL, synchronous=NORMAL) it
            // survives the process, not a power cut, like JetStream's default.
            let row = Row::new(
                "B4",
                "validated publish, mTLS",
                "JetStream, sync always",
                Unit::RecordsPerSec,
                Goal::AtLeast(1.0),
            )
            .size(size.clone());
            self.rows.push(match &self.nats_durable {
                Ok(durable) => row.samples(take(C::Hub), take(C::NatsDurable)).note(format!(
                    "baseline: {} at {} (started by the benchmark), the same window; the durability the hub gives on \
                     PostgreSQL (each commit flushed); on SQLite the hub flushes at checkpoints, as the first B4 row's \
                     JetStream does",
                    durable.nats.describe(),
                    durable.addr
                )),
                Err(why) => row.not_measured(format!("not measured: {why}")),
            });
        }
        if s.wants("B6") {
            self.rows.push(
                Row::new(
                    "B6",
                    "publish over mTLS",
                    "same over plaintext",
                    Unit::RecordsPerSec,
                    Goal::AtLeast(0.8),
                )
                .size(size)
                .samples(take(C::Hub), take(C::Plain))
                .note("B1's publish; the baseline hub serves plaintext with a fixed identity (BenchmarkSwitches.plaintext_as)"),
            );
        }
        Ok(())
    }

    /// B5 and the unary half of B6.
    async fn unary_pairs(
        &mut self,
        hub: &Hub,
        plain: Option<&Hub>,
        catalog: &mut Catalog,
        store: Arc<dyn Store>,
    ) -> Res<()> {
        let s = self.s.clone();
        // GetEntry reads entries made through the hub; the search runs over a catalogue grown to
        // `catalog_entries` through the hub's store (src/catalogue.rs), with keywords from a list.
        let read = if s.quick { 12 } else { 200 }.min(s.catalog_entries);
        progress(&format!("B5: publishing {read} catalogue entries through the hub"));
        let mut codes = Vec::with_capacity(read);
        for _ in 0..read {
            codes.push(catalog.published_entry().await?);
        }
        let codes = Arc::new(codes);
        let grown = s.catalog_entries.saturating_sub(catalog.made());
        progress(&format!(
            "B5: writing {grown} more catalogue entries into the hub's store"
        ));
        let started = Instant::now();
        catalogue::grow(store, PROVIDER, grown, 16).await?;
        progress(&format!(
            "B5: {grown} entries written in {:.1}s",
            started.elapsed().as_secs_f64()
        ));
        let total = catalog.made() + grown;
        progress("B5: waiting for the hubs' search indexes to take in the catalogue");
        let started = Instant::now();
        hub.index_settled(total, Duration::from_secs(120)).await?;
        // B6's plaintext hub serves the same store, and so takes in the same catalogue.
        if let Some(plain) = plain {
            plain.index_settled(total, Duration::from_secs(120)).await?;
        }
        progress(&format!(
            "B5: the indexes hold the catalogue after {:.1}s",
            started.elapsed().as_secs_f64()
        ));
        let keywords: Arc<Vec<String>> = Arc::new(catalogue::KEYWORDS.iter().map(|k| k.to_string()).collect());
        let ops = |channel: tonic::transport::Channel| {
            let directory = hub::Directory::new(channel.clone());
            [
                Unary::GetEntry(directory.clone(), codes.clone()),
                Unary::Search(directory, keywords.clone()),
                Unary::Health(HealthClient::new(channel)),
            ]
        };
        // (name, op): the mTLS ones on one channel, the plaintext ones on another.
        let mut contenders: Vec<(String, Unary)> = Vec::new();
        let names = ["get", "search", "health"];
        let channel = hub.provider_channel().await?;
        for (name, op) in names.iter().zip(ops(channel.clone())) {
            contenders.push((format!("tls-{name}"), op));
        }
        let skimmed = Unary::SearchSkimmed(tonic::client::Grpc::new(channel), keywords.clone());
        contenders.push(("tls-skim".into(), skimmed));
        if let (true, Some(p)) = (s.wants("B6"), plain) {
            for (name, op) in names.iter().zip(ops(p.provider_channel().await?)) {
                contenders.push((format!("plain-{name}"), op));
            }
        }
        if s.ours_only {
            contenders.retain(|(name, _)| name.starts_with("tls-") && name != "tls-health");
        }
        let duration = Duration::from_secs_f64(s.b5_seconds);
        // Per contender: rates, p50s and p99s of the rounds.
        let mut results: HashMap<String, LoadSamples> = HashMap::new();
        for round in 0..s.rounds {
            let mut order: Vec<usize> = (0..contenders.len()).collect();
            let turn = round as usize % order.len();
            order.rotate_left(turn);
            for i in order {
                let (name, op) = &contenders[i];
                progress(&format!("B5/B6 unary: round {}/{}: {name}", round + 1, s.rounds));
                let load = hub::unary_load(op, s.concurrency, duration).await?;
                let e = results.entry(name.clone()).or_default();
                e.0.push(load.rate);
                e.1.push(load.p50_ms);
                e.2.push(load.p99_ms);
            }
        }
        let get = |name: &str| results.get(name).cloned().unwrap_or_default();
        let size = format!("{} x {:.1}s x {}", s.concurrency, s.b5_seconds, s.rounds);
        let p50 = |v: &[f64]| summary(v).map(|x| format!("{:.2} ms", x.median)).unwrap_or_default();
        if s.wants("B5") {
            let health = get("tls-health");
            for (what, name) in [
                ("GetEntry", "tls-get"),
                ("SearchEntries", "tls-search"),
                ("SearchEntries, skimmed", "tls-skim"),
            ] {
                let ours = get(name);
                self.rows.push(
                    Row::new(
                        "B5",
                        format!("{what} rate"),
                        "Health/Check rate",
                        Unit::RequestsPerSec,
                        Goal::AtLeast(0.5),
                    )
                    .size(size.clone())
                    .samples(ours.0.clone(), health.0.clone())
                    .note(format!(
                        "{} concurrent calls on one mTLS channel, same server; {}",
                        s.concurrency,
                        if name == "tls-search" {
                            format!(
                                "{} keywords in turn (src/catalogue.rs), a page of 20, {total} entries in all; {}",
                                keywords.len(),
                                catalogue::index_figures(s.catalog_entries)
                            )
                        } else if name == "tls-skim" {
                            "the same searches, the client counting each answer's entries rather than building them \
                             (src/skim.rs): the hub's side of a search, without the client's decoding on the same cores"
                                .to_string()
                        } else {
                            format!("{} entries read in turn", s.catalog_entries)
                        }
                    )),
                );
                self.rows.push(
                    Row::new(
                        "B5",
                        format!("{what} p99"),
                        "Health/Check p99",
                        Unit::Millis,
                        Goal::AtMost(2.0),
                    )
                    .size(size.clone())
                    .samples(ours.2.clone(), health.2.clone())
                    .note(format!("p50: ours {}, Health/Check {}", p50(&ours.1), p50(&health.1))),
                );
            }
        }
        if let (true, Some(_)) = (s.wants("B6"), plain) {
            for (what, name) in [
                ("GetEntry", "get"),
                ("SearchEntries", "search"),
                ("Health/Check", "health"),
            ] {
                let (tls, pt) = (get(&format!("tls-{name}")), get(&format!("plain-{name}")));
                self.rows.push(
                    Row::new(
                        "B6",
                        format!("{what} rate, mTLS"),
                        "same over plaintext",
                        Unit::RequestsPerSec,
                        Goal::AtLeast(0.8),
                    )
                    .size(size.clone())
                    .samples(tls.0, pt.0),
                );
            }
        }
        Ok(())
    }

    /// B3: draining a subscription of the whole dataset, against a plain SELECT of the same rows
    /// and a JetStream consumer of the same records.
    async fn drain_pairs(
        &mut self,
        hub: &Hub,
        catalog: &mut Catalog,
        raw: &Raw,
        mut native: Option<&mut Native>,
    ) -> Res<()> {
        let s = self.s.clone();
        let m = s.b3_records;
        let dataset = catalog.dataset().await?;
        let mut client = hub::exchange(hub.provider_channel().await?);
        progress(&format!("B3: publishing {m} records through the hub"));
        let started = Instant::now();
        let batches = hub::requests(&dataset, "b3", 0, m, s.batch);
        hub::publish_stream(&mut client, batches, s.in_flight, m).await?;
        self.info.push(format!(
            "B3 load: {m} records published through the hub at {:.0} records/s (not a measured pair)",
            rate(m, started)
        ));
        let nats_ok = match &self.nats {
            Ok(_) if s.ours_only => false,
            Ok(nats) => {
                progress(&format!("B3: publishing {m} records to JetStream"));
                let started = Instant::now();
                nats.publish(
                    "b3",
                    (0..m).map(|i| records::record(i).into_bytes()),
                    s.batch * s.in_flight,
                )
                .await?;
                self.info.push(format!(
                    "B3 load: {m} records published to JetStream at {:.0} records/s",
                    rate(m, started)
                ));
                true
            }
            Err(_) => false,
        };
        #[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
        enum C {
            Subscribe,
            Select,
            Native,
            Nats,
        }
        let mut contenders = vec![C::Subscribe, C::Select];
        if native.is_some() {
            contenders.push(C::Native);
        }
        if nats_ok {
            contenders.push(C::Nats);
        }
        if s.ours_only {
            contenders.retain(|c| *c == C::Subscribe);
        }
        let mut samples: HashMap<C, Vec<f64>> = HashMap::new();
        for round in 0..s.rounds {
            let mut order = contenders.clone();
            let turn = round as usize % order.len();
            order.rotate_left(turn);
            for c in order {
                progress(&format!("B3: round {}/{}: {c:?}", round + 1, s.rounds));
                let started = Instant::now();
                let (n, bytes) = match c {
                    C::Subscribe => hub::drain(&mut client, &dataset, m).await?,
                    C::Select => raw.scan(&dataset).await?,
                    C::Native => native.as_deref_mut().ok_or("no native floor")?.scan(&dataset).await?,
                    C::Nats => self.nats.as_ref().map_err(Clone::clone)?.consume("b3", m).await?,
                };
                let r = rate(n, started);
                if n != m || bytes != m * records::TARGET_BYTES as u64 {
                    return Err(format!("B3 {c:?} read {n} records of {bytes} bytes, expected {m}"));
                }
                samples.entry(c).or_default().push(r);
            }
        }
        let take = |c: C| samples.get(&c).cloned().unwrap_or_default();
        let size = format!("{} rec x {}", count(m), s.rounds);
        self.rows.push(
            Row::new(
                "B3",
                "subscribe drain, mTLS",
                "raw SELECT scan",
                Unit::RecordsPerSec,
                Goal::AtLeast(0.5),
            )
            .size(size.clone())
            .samples(take(C::Subscribe), take(C::Select))
            .note(format!(
                "ours: Subscribe from 0, pages of {} (as `xinqiao pull`), client in this process only counts; \
                     baseline: {}",
                hub::DRAIN_PAGE,
                raw.scan_method()
            )),
        );
        if let Some(native) = native.as_deref() {
            let row = floor_row(
                native,
                true,
                &size,
                &take(C::Subscribe),
                take(C::Native),
                take(C::Select),
            );
            self.rows.push(row);
        }
        let row = Row::new(
            "B3",
            "subscribe drain, mTLS",
            "JetStream ordered consumer",
            Unit::RecordsPerSec,
            Goal::AtLeast(1.0),
        )
        .size(size);
        self.rows.push(match &self.nats {
            Ok(nats) => row.samples(take(C::Subscribe), take(C::Nats)).note(format!(
                "baseline: an ordered pull consumer (no acks, flow control) on {}",
                nats.describe()
            )),
            Err(why) => row.not_measured(format!("not measured: {why}")),
        });
        Ok(())
    }

    /// B7: publishing into a dataset that already holds many records against one that holds few,
    /// each in a database of its own; and the process's memory while each is streamed.
    async fn b7(&mut self) -> Res<()> {
        let s = self.s.clone();
        let small_store = self.open_store("b7s").await?;
        let large_store = self.open_store("b7l").await?;
        let small = self.start_hub(small_store, BenchmarkSwitches::default()).await?;
        let large = self.start_hub(large_store, BenchmarkSwitches::default()).await?;
        let mut sides = Vec::new();
        for (hub, store, filled) in [(&small, small_store, s.b7_base), (&large, large_store, s.b7_records)] {
            let mut catalog = Catalog::prepare(hub, self.opened[store].store.as_ref()).await?;
            let dataset = catalog.dataset().await?;
            let mut client = hub::exchange(hub.provider_channel().await?);
            progress(&format!("B7: filling a dataset with {filled} records"));
            let started = Instant::now();
            hub::publish_stream(
                &mut client,
                hub::requests(&dataset, "fill", 0, filled, s.batch),
                s.in_flight,
                filled,
            )
            .await?;
            self.info.push(format!(
                "B7 fill: {filled} records published through the hub at {:.0} records/s",
                rate(filled, started)
            ));
            sides.push((dataset, client, filled));
        }
        let mut rates: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
        for round in 0..s.rounds {
            let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
            for side in order {
                let (dataset, client, filled) = &mut sides[side];
                progress(&format!(
                    "B7: round {}/{}: publishing {} records after {} ",
                    round + 1,
                    s.rounds,
                    s.b7_window,
                    *filled
                ));
                let batches: Vec<pb::PublishRequest> =
                    hub::requests(dataset, &format!("r{round}"), *filled, *filled + s.b7_window, s.batch).collect();
                let started = Instant::now();
                hub::publish_stream(client, batches.into_iter(), s.in_flight, s.b7_window).await?;
                rates[side].push(rate(s.b7_window, started));
                *filled += s.b7_window;
            }
        }
        let mut peaks = Vec::new();
        let mut notes = Vec::new();
        for (dataset, client, filled) in &mut sides {
            progress(&format!("B7: streaming {} records while sampling VmRSS", *filled));
            let before = sys::rss_bytes();
            let sampler = sys::RssSampler::start();
            let started = Instant::now();
            let (n, _) = hub::drain(client, dataset, *filled).await?;
            let r = rate(n, started);
            let peak = sampler.finish().await;
            notes.push(format!(
                "{}: {:.0} MiB before, peak {:.0} MiB (+{:.0}) at {:.0} records/s",
                count(*filled),
                before as f64 / 1048576.0,
                peak as f64 / 1048576.0,
                peak.saturating_sub(before) as f64 / 1048576.0,
                r
            ));
            peaks.push(peak as f64);
        }
        small.stop().await?;
        large.stop().await?;
        let (base, big) = (s.b7_base, s.b7_records);
        self.rows.push(
            Row::new(
                "B7",
                format!("publish rate at {}", count(big)),
                format!("rate at {}", count(base)),
                Unit::RecordsPerSec,
                Goal::AtLeast(0.8),
            )
            .size(format!("{} rec x {}", count(s.b7_window), s.rounds))
            .samples(rates[1].clone(), rates[0].clone())
            .note(format!(
                "each dataset in a database of its own (filled through the hub), published to alternately; the sizes \
                 grow by {} per round",
                count(s.b7_window)
            )),
        );
        self.rows.push(
            Row::new(
                "B7",
                format!("peak VmRSS streaming {}", count(big)),
                format!("streaming {}", count(base)),
                Unit::Bytes,
                Goal::AtMost(1.2),
            )
            .size("1 drain each")
            .samples(vec![peaks[1]], vec![peaks[0]])
            .note(format!(
                "\"flat\" taken as at most 1.2x. VmRSS of this whole process: the hub and the draining client (which \
                 only counts) share it, and the allocator keeps what earlier phases freed. {}",
                notes.join("; ")
            )),
        );
        Ok(())
    }

    async fn cleanup(&mut self) {
        if let Ok(nats) = &self.nats {
            nats.cleanup().await;
        }
        // Stops the benchmark's own nats-server and removes its files.
        self.nats_durable = Err("stopped".into());
        for o in &self.opened {
            if let Some(store) = &o.sqlite {
                store.close().await;
            }
            if let Some(store) = &o.pg {
                store.close().await;
            }
        }
        if let Backend::Pg { url } = &self.backend {
            let schemas: Vec<String> = self.opened.iter().filter_map(|o| o.schema.clone()).collect();
            if schemas.is_empty() {
                return;
            }
            match sqlx::PgPool::connect(url).await {
                Ok(pool) => {
                    for schema in schemas {
                        if let Err(e) = sqlx::query(sqlx::AssertSqlSafe(format!(
                            "DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"
                        )))
                        .execute(&pool)
                        .await
                        {
                            eprintln!("warning: could not drop schema {schema}: {e}");
                        }
                    }
                    pool.close().await;
                }
                Err(e) => eprintln!("warning: could not connect to drop the benchmark schemas: {e}"),
            }
        }
    }
}

/// B1's raw insert (or, when `read`, B3's raw scan) through sqlx against the native driver's
/// floor, measured in the same rounds: no goal, only the ratio; the note says how far the hub's
/// own side of the pair is from the floor.
fn floor_row(native: &Native, read: bool, size: &str, hub: &[f64], floor: Vec<f64>, sqlx: Vec<f64>) -> Row {
    let (id, against, baseline, how, who) = if read {
        (
            "B3",
            "raw SELECT scan, sqlx",
            "B3's raw SELECT scan through sqlx, of the same rows (the hub's)",
            native.scan_method(),
            "The hub's drain",
        )
    } else {
        (
            "B1",
            "raw insert, sqlx",
            "B1's raw insert through sqlx into the same table, of the same rows and record bytes",
            native.method(),
            "The hub's publish",
        )
    };
    let share = match (summary(hub), summary(&floor)) {
        (Some(h), Some(f)) if f.median > 0.0 => format!(" {who} reaches {:.3} of this floor.", h.median / f.median),
        _ => String::new(),
    };
    Row::new(id, native.what(read), against, Unit::RecordsPerSec, Goal::None)
        .size(size)
        .samples(floor, sqlx)
        .note(format!(
            "ours: {how}; baseline: {baseline}, alternating with it in the same rounds (a ratio above 1 is what sqlx \
             costs).{share}"
        ))
}

/// Publishes one record with a wrong check character to a hub that should skip validation:
/// true when it was accepted, that is when the switch works; and the answer, for the report.
async fn probe_skip_validation(client: &mut Exchange, dataset: &str, tag: &str) -> Res<(bool, String)> {
    let mut value: serde_json::Value = serde_json::from_str(&records::record(999_999_998)).ctx("record")?;
    let code = records::uscc(999_999_998);
    let wrong = if code.ends_with('0') { '1' } else { '0' };
    value["uscc"] = json!(format!("{}{wrong}", &code[..17]));
    let answer = client
        .publish(pb::PublishRequest {
            dataset: dataset.into(),
            idempotency_key: format!("probe-skip-validation-{tag}"),
            changes: vec![pb::RecordChange {
                change: Some(pb::record_change::Change::Upsert(value.to_string().into_bytes())),
            }],
            policy: pb::BatchPolicy::RejectAll as i32,
            lenient: false,
        })
        .await
        .map_err(|s| format!("probing skip_validation: {s}"))?
        .into_inner();
    let text = format!(
        "accepted {}, rejected {:?}",
        answer.accepted,
        answer
            .rejected
            .iter()
            .flat_map(|r| r
                .errors
                .iter()
                .map(|e| format!("{} [{}] {}", e.instance_pointer, e.keyword, e.message)))
            .collect::<Vec<_>>()
    );
    Ok((answer.accepted == 1, text))
}

/// The `xinqiao` binary's allocator (services/cli/src/main.rs): the hub in here is the hub shipped.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new("warn,xinqiao_hub::server=error,sqlx::query=error")
            }),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let settings = match Settings::from(&args) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let backend = match &args.database_url {
        None => Backend::Sqlite,
        Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
            Backend::Pg { url: url.clone() }
        }
        Some(url) if url.starts_with("sqlite:") => {
            eprintln!("note: SQLite runs in a temporary directory; {url} is not used");
            Backend::Sqlite
        }
        Some(_) => {
            eprintln!("error: --database-url must be postgres://… (SQLite is the default)");
            return ExitCode::from(2);
        }
    };
    let tmp = match tempfile::Builder::new().prefix("xinqiao-bench-").tempdir() {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: cannot create a temporary directory: {e}");
            return ExitCode::FAILURE;
        }
    };
    let wants_nats = settings.wants("B3") || settings.wants("B4");
    let nats = if wants_nats {
        Nats::connect(&args.nats).await
    } else {
        Err("not asked for".into())
    };
    let nats_durable = if settings.wants("B4") {
        DurableNats::start().await
    } else {
        Err("not asked for".into())
    };
    let curve_settings = if settings.wants("CURVE") || settings.wants("C1") {
        match curve::CurveSettings::new(settings.quick, args.curve_records, settings.batch, settings.in_flight) {
            Ok(c) => Some(c),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        }
    } else {
        None
    };
    let started = Instant::now();
    let date = chrono::Local::now();
    let mut bench = Bench {
        s: settings,
        tmp,
        backend,
        pid: std::process::id(),
        nats_addr: args.nats.clone(),
        nats,
        nats_durable,
        opened: Vec::new(),
        rows: Vec::new(),
        info: Vec::new(),
        curve_settings,
        curve: None,
    };
    let machine = sys::Machine::read();
    let build = if cfg!(debug_assertions) { "debug" } else { "release" };
    let database = match &bench.backend {
        Backend::Sqlite => format!("SQLite files in {}", bench.dir().display()),
        Backend::Pg { url } => format!("PostgreSQL {} in schemas xq_bench_{}*", redact(url), bench.pid),
    };
    let s = &bench.s;
    let settings_text = format!(
        "{} mode; rounds {}; publish pairs (B1 B2 B4 B6): {} records per contender per round, batches of {}, {} in \
         flight; B3: {} records; B5: {} concurrent calls for {}s, {} entries; B7: {} vs {} records, {} per round; \
         records of {} bytes{}",
        if s.quick { "quick" } else { "full" },
        s.rounds,
        s.records,
        s.batch,
        s.in_flight,
        s.b3_records,
        s.concurrency,
        s.b5_seconds,
        s.catalog_entries,
        s.b7_records,
        s.b7_base,
        s.b7_window,
        records::TARGET_BYTES,
        if s.only.is_empty() {
            String::new()
        } else {
            format!("; only {}", s.only.join(","))
        }
    );
    let nats_text = match &bench.nats {
        Ok(n) => format!("{} at {}", n.describe(), bench.nats_addr),
        Err(e) => e.clone(),
    };
    println!("xinqiao-bench {}  ({build} build)", date.format("%Y-%m-%d %H:%M:%S %z"));
    println!("backend:  {} — {database}", bench.backend_name());
    println!("machine:  {}", machine.describe());
    println!("settings: {settings_text}");
    println!("NATS:     {nats_text}");
    match &bench.nats_durable {
        Ok(d) => println!("          {} at {} (B4's durable baseline)", d.nats.describe(), d.addr),
        Err(e) => println!("          B4's durable baseline: {e}"),
    }
    println!();

    let result = bench.run().await;
    bench.cleanup().await;
    if let Err(e) = &result {
        eprintln!("error: {e}");
    }
    let elapsed = started.elapsed().as_secs_f64();
    report::print_table(&bench.rows);
    println!();
    if bench.s.quick {
        println!("- quick mode: this shows that every pair still runs; at these sizes the verdicts mean nothing");
    }
    for line in &bench.info {
        println!("- {line}");
    }
    if let Some(c) = &bench.curve {
        println!();
        println!(
            "Scale curve (issue #16): publishers each to its own dataset over its own connection, sharing {} records; \
             followers each over its own connection reading one dataset of {} from the start; sizes: {} records \
             published just before each size, then the last {} read; one measurement a point",
            c.settings.publish_total, c.settings.drain_records, c.settings.window, c.settings.drain_window
        );
        print!("{}", c.table());
        for (from, to, r) in &c.fills {
            println!("- curve fill {from}..{to}: {r:.0} records/s");
        }
        let title = format!(
            "xinqiao-bench scale curve, {}, {} ({build} build)",
            bench.backend_name(),
            date.format("%Y-%m-%d %H:%M")
        );
        match std::fs::write(&args.curve_svg, c.svg(&title)) {
            Ok(()) => println!("- curve chart: {}", args.curve_svg.display()),
            Err(e) => eprintln!("warning: cannot write {}: {e}", args.curve_svg.display()),
        }
    }
    println!("- finished in {elapsed:.1}s; other work on this machine makes the figures noisy: read the spreads");
    if let Some(path) = &args.json {
        let doc = json!({
            "date": date.to_rfc3339(),
            "build": build,
            "backend": bench.backend_name(),
            "database": database,
            "machine": machine.json(),
            "settings": bench.s.json(),
            "nats": nats_text,
            "rows": bench.rows.iter().map(Row::json).collect::<Vec<_>>(),
            "info": bench.info,
            "curve": bench.curve.as_ref().map(curve::Curve::json),
            "elapsed_seconds": elapsed,
            "error": result.as_ref().err(),
        });
        match serde_json::to_string_pretty(&doc) {
            Ok(text) => {
                if let Err(e) = std::fs::write(path, text + "\n") {
                    eprintln!("error: cannot write {}: {e}", path.display());
                    return ExitCode::FAILURE;
                }
            }
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    if result.is_err() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
