//! Certificate and CA rotation without downtime (issue #14, item 3), with one real `xinqiao serve`
//! process on SQLite whose `[tls]` files the test rewrites while the hub serves, as an operator
//! (or a Kubernetes Secret update) would: every file replaced atomically (written aside, then
//! renamed over), and no signal sent — the hub is expected to notice changed files by itself.
//!
//! - Start: the hub trusts CA A (`[tls] ca` is a bundle [A]), serves a certificate from A, and
//!   checks client certificates against the CRL file (a bundle of lists, one per trusted CA).
//! - Step 1: the bundle becomes [A, B] and the CRL file [A's list, B's list]: a client with a
//!   certificate from B is accepted, clients of A still are.
//! - Step 2: the hub's certificate and key are replaced by ones from B: a client that trusts only
//!   B can connect; clients that trust [A, B] still can, and connections opened before go on.
//! - Step 3: the bundle becomes [B] and the CRL file [B's list]: a client with a certificate from A
//!   is refused at the handshake and an open connection with one is closed; clients of B go on.
//!
//! Both CAs come from `xinqiao certs init`, so they carry the same subject name, as a renewed CA
//! often does: the hub must tell them (and their revocation lists) apart by their keys.
//!
//! Throughout, a steady client calls WhoAmI every 50 ms on one long-lived connection, and every
//! fifth time on a fresh one too. It trusts [A] at first and [A, B] from step 1 on, and takes its
//! certificate from B before step 3. None of its calls may fail.

mod support;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::*;
use tokio::time::{Instant, timeout};
use xinqiao_hub::pki::{self, CertFiles};
use xinqiao_proto::v1 as pb;

/// How often the steady client calls.
const STEADY_EVERY: Duration = Duration::from_millis(50);
/// Every so many calls, the steady client also calls on a fresh connection.
const FRESH_EVERY: u64 = 5;
/// Failure guards: one call or connection; the hub taking up changed files (it looks at them
/// every two seconds); the whole test.
const CALL_GUARD: Duration = Duration::from_secs(5);
const RELOAD_GUARD: Duration = Duration::from_secs(15);
const TEST_GUARD: Duration = Duration::from_secs(150);

/// Replaces `path` with `contents` atomically: a reader sees the old file or the new one.
fn replace_file(path: &Path, contents: &[u8]) {
    let aside = path.with_extension("new");
    std::fs::write(&aside, contents).unwrap_or_else(|e| panic!("write {}: {e}", aside.display()));
    std::fs::rename(&aside, path).unwrap_or_else(|e| panic!("rename to {}: {e}", path.display()));
}

/// The files concatenated (PEM bundles).
fn bundle(parts: &[PathBuf]) -> Vec<u8> {
    let mut all = Vec::new();
    for part in parts {
        let mut bytes = std::fs::read(part).unwrap_or_else(|e| panic!("read {}: {e}", part.display()));
        if !bytes.ends_with(b"\n") {
            bytes.push(b'\n');
        }
        all.extend(bytes);
    }
    all
}

/// A client's view: who it is and which CAs it trusts for the hub's certificate.
#[derive(Debug, Clone)]
struct Client {
    trust: PathBuf,
    identity: CertFiles,
}

async fn open(port: u16, client: &Client) -> Result<Directory, String> {
    match timeout(CALL_GUARD, channel_trusting(port, &client.trust, &client.identity)).await {
        Ok(Ok(channel)) => Ok(Directory::new(channel)),
        Ok(Err(e)) => Err(format!("connect: {e}")),
        Err(_) => Err(format!("connect: no answer within {CALL_GUARD:?}")),
    }
}

/// WhoAmI on `directory`; the department it names.
async fn who_am_i(directory: &mut Directory) -> Result<String, String> {
    match timeout(CALL_GUARD, directory.who_am_i(pb::WhoAmIRequest {})).await {
        Ok(Ok(answer)) => match answer.into_inner().identity {
            Some(pb::who_am_i_response::Identity::Department(d)) => Ok(d.code),
            other => Err(format!("WhoAmI named {other:?}")),
        },
        Ok(Err(status)) => Err(format!("WhoAmI: {:?} {}", status.code(), status.message())),
        Err(_) => Err(format!("WhoAmI: no answer within {CALL_GUARD:?}")),
    }
}

/// A fresh connection and one WhoAmI on it.
async fn attempt(port: u16, client: &Client) -> Result<String, String> {
    who_am_i(&mut open(port, client).await?).await
}

/// Tries `client` until `accepted(outcome)` holds; how long that took.
async fn until(
    hub: &HubProcess,
    client: &Client,
    what: &str,
    accepted: impl Fn(&Result<String, String>) -> bool,
) -> Duration {
    let started = Instant::now();
    loop {
        let outcome = attempt(hub.port, client).await;
        if accepted(&outcome) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < RELOAD_GUARD,
            "{what}: not so within {RELOAD_GUARD:?}; last outcome {outcome:?}; the end of the hub's log:\n{}",
            log_tail(hub)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The last lines of the hub's output (refused handshakes can make it long).
fn log_tail(hub: &HubProcess) -> String {
    let log = hub.log_text();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// The steady client's phases: which identity and trust it uses.
const PHASE_A: u8 = 0;
/// Trusts [A, B] for new connections (from step 1).
const PHASE_TRUSTS_B: u8 = 1;
/// Also presents its certificate from B (before step 3).
const PHASE_IS_B: u8 = 2;

struct Steady {
    port: u16,
    /// Its identity and trust per phase.
    clients: [Client; 3],
    /// The phase the test asks for, and the phase of the last round the client completed.
    phase: AtomicU8,
    done_phase: AtomicU8,
    calls: AtomicU64,
    fresh_calls: AtomicU64,
    failures: Mutex<Vec<String>>,
    stop: AtomicBool,
    started: Instant,
}

impl Steady {
    fn fail(&self, what: String) {
        let at = self.started.elapsed().as_secs_f64();
        self.failures
            .lock()
            .expect("failures")
            .push(format!("{at:.2} s: {what}"));
    }

    /// Asks for `phase` and waits until a whole round ran in it.
    async fn enter(&self, phase: u8) {
        self.phase.store(phase, Ordering::SeqCst);
        let deadline = Instant::now() + RELOAD_GUARD;
        while self.done_phase.load(Ordering::SeqCst) < phase {
            assert!(
                Instant::now() < deadline,
                "the steady client did not reach phase {phase}"
            );
            tokio::time::sleep(STEADY_EVERY).await;
        }
    }

    /// Successful calls so far.
    fn successes(&self) -> u64 {
        self.calls.load(Ordering::SeqCst) + self.fresh_calls.load(Ordering::SeqCst)
    }
}

async fn keep_calling(state: Arc<Steady>) {
    let mut long_lived: Option<(u8, Directory)> = None;
    let mut round = 0u64;
    while !state.stop.load(Ordering::SeqCst) {
        round += 1;
        let phase = state.phase.load(Ordering::SeqCst);
        // The long-lived connection is opened once, and once more when the identity changes.
        let identity_phase = if phase >= PHASE_IS_B { PHASE_IS_B } else { PHASE_A };
        if long_lived.as_ref().is_none_or(|(p, _)| *p != identity_phase) {
            match open(state.port, &state.clients[identity_phase as usize]).await {
                Ok(directory) => long_lived = Some((identity_phase, directory)),
                Err(e) => state.fail(format!("phase {phase}: opening the long-lived connection: {e}")),
            }
        }
        if let Some((_, directory)) = long_lived.as_mut() {
            match who_am_i(directory).await {
                Ok(code) if code == POLICE => {
                    state.calls.fetch_add(1, Ordering::SeqCst);
                }
                outcome => state.fail(format!("phase {phase}: long-lived connection: {outcome:?}")),
            }
        }
        if round.is_multiple_of(FRESH_EVERY) {
            match attempt(state.port, &state.clients[phase as usize]).await {
                Ok(code) if code == POLICE => {
                    state.fresh_calls.fetch_add(1, Ordering::SeqCst);
                }
                outcome => state.fail(format!("phase {phase}: fresh connection: {outcome:?}")),
            }
        }
        state.done_phase.store(phase, Ordering::SeqCst);
        tokio::time::sleep(STEADY_EVERY).await;
    }
}

fn police(dir: &Path) -> CertFiles {
    pki::department_files(dir, POLICE)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn certificates_and_the_ca_rotate_without_a_failed_call() {
    timeout(TEST_GUARD, run())
        .await
        .expect("the rotation test finishes in time");
}

async fn run() {
    let began = Instant::now();
    let tmp = tempfile::tempdir().expect("temporary directory");
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    certs_init(&a);
    certs_init(&b);

    // What the hub reads, and what clients trust.
    let data = tmp.path().join("hub");
    let tls = data.join("tls");
    std::fs::create_dir_all(&tls).expect("the hub's TLS directory");
    let (ca_bundle, crl_bundle) = (tls.join("ca-bundle.pem"), tls.join("crl-bundle.pem"));
    let (hub_cert, hub_key) = (tls.join("server.crt"), tls.join("server.key"));
    replace_file(&ca_bundle, &bundle(&[pki::ca_cert_path(&a)]));
    replace_file(&crl_bundle, &bundle(&[pki::crl_path(&a)]));
    replace_file(&hub_cert, &bundle(&[pki::server_files(&a).cert]));
    replace_file(&hub_key, &bundle(&[pki::server_files(&a).key]));
    let trust = |name: &str, cas: &[&Path]| {
        let path = tmp.path().join(name);
        let cas: Vec<PathBuf> = cas.iter().map(|dir| pki::ca_cert_path(dir)).collect();
        replace_file(&path, &bundle(&cas));
        path
    };
    let (trusts_a, trusts_ab, trusts_b) = (
        trust("trust-a.pem", &[&a]),
        trust("trust-ab.pem", &[&a, &b]),
        trust("trust-b.pem", &[&b]),
    );
    let config = tmp.path().join("hub.toml");
    // Every refused handshake logged and recorded one by one (the default summarises those past
    // 20 a minute from one address, and every client here is 127.0.0.1): step 3 reads the log.
    std::fs::write(
        &config,
        format!(
            "data_dir = {}\n\n[limits]\nhandshake_refusals_per_minute = 100000\n\n[tls]\nca = {}\ncert = {}\nkey = {}\ncrl = {}\n",
            toml_literal(&data),
            toml_literal(&ca_bundle),
            toml_literal(&hub_cert),
            toml_literal(&hub_key),
            toml_literal(&crl_bundle),
        ),
    )
    .expect("write the hub's configuration");
    let port = free_port();
    let mut hub = HubProcess::start(port, &["--config".into(), config.into()], &tmp.path().join("hub.log")).await;

    // The department, registered by A's admin (a department is the same whichever CA vouches
    // for its code).
    let admin = Client {
        trust: trusts_a.clone(),
        identity: pki::admin_files(&a),
    };
    let mut directory = open(port, &admin).await.expect("connect as the admin");
    ok(directory
        .register_department(pb::RegisterDepartmentRequest {
            code: POLICE.into(),
            name: "市公安局".into(),
            division_code: "330100".into(),
            contact: String::new(),
        })
        .await);
    let client = |trust: &PathBuf, dir: &Path| Client {
        trust: trust.clone(),
        identity: police(dir),
    };
    assert_eq!(attempt(port, &client(&trusts_a, &a)).await, Ok(POLICE.to_string()));
    let before = attempt(port, &client(&trusts_a, &b)).await;
    assert!(
        before.is_err(),
        "a certificate from B before the hub trusts B: {before:?}"
    );

    let steady = Arc::new(Steady {
        port,
        clients: [client(&trusts_a, &a), client(&trusts_ab, &a), client(&trusts_ab, &b)],
        phase: AtomicU8::new(PHASE_A),
        done_phase: AtomicU8::new(PHASE_A),
        calls: AtomicU64::new(0),
        fresh_calls: AtomicU64::new(0),
        failures: Mutex::default(),
        stop: AtomicBool::new(false),
        started: Instant::now(),
    });
    let steady_task = tokio::spawn(keep_calling(steady.clone()));
    // A connection of A opened before the rotation: it must last through steps 1 and 2.
    let mut opened_before = open(port, &client(&trusts_a, &a)).await.expect("connect with A");
    assert_eq!(who_am_i(&mut opened_before).await, Ok(POLICE.to_string()));

    // Step 1: trust A and B.
    replace_file(&ca_bundle, &bundle(&[pki::ca_cert_path(&a), pki::ca_cert_path(&b)]));
    replace_file(&crl_bundle, &bundle(&[pki::crl_path(&a), pki::crl_path(&b)]));
    let step1 = until(
        &hub,
        &client(&trusts_a, &b),
        "step 1: a certificate from B accepted",
        |o| o.as_deref() == Ok(POLICE),
    )
    .await;
    steady.enter(PHASE_TRUSTS_B).await;
    assert_eq!(
        who_am_i(&mut opened_before).await,
        Ok(POLICE.to_string()),
        "step 1: the connection of A opened before"
    );

    // Step 2: the hub's own certificate from B (the key first: a reload between the two renames
    // finds a certificate that does not match its key, which must not replace a working pair).
    replace_file(&hub_key, &bundle(&[pki::server_files(&b).key]));
    replace_file(&hub_cert, &bundle(&[pki::server_files(&b).cert]));
    let step2 = until(
        &hub,
        &client(&trusts_b, &b),
        "step 2: the hub's new certificate (a client trusting only B connects)",
        |o| o.as_deref() == Ok(POLICE),
    )
    .await;
    assert_eq!(
        attempt(port, &client(&trusts_ab, &a)).await,
        Ok(POLICE.to_string()),
        "step 2: a new connection with a certificate from A"
    );
    assert_eq!(
        who_am_i(&mut opened_before).await,
        Ok(POLICE.to_string()),
        "step 2: the connection of A opened before"
    );
    let failures_steps_1_2 = steady.failures.lock().expect("failures").clone();
    let successes_steps_1_2 = steady.successes();
    steady.enter(PHASE_IS_B).await;

    // Step 3: trust B only.
    let log_before_step3 = hub.log_text().len();
    replace_file(&ca_bundle, &bundle(&[pki::ca_cert_path(&b)]));
    replace_file(&crl_bundle, &bundle(&[pki::crl_path(&b)]));
    let step3 = until(
        &hub,
        &client(&trusts_ab, &a),
        "step 3: a certificate from A refused",
        |o| o.is_err(),
    )
    .await;
    let closed = who_am_i(&mut opened_before).await;
    assert!(
        closed.is_err(),
        "step 3: the connection of A opened before is closed: {closed:?}"
    );
    assert_eq!(
        attempt(port, &client(&trusts_b, &b)).await,
        Ok(POLICE.to_string()),
        "step 3: a new connection with a certificate from B"
    );
    // The hub refused A at the TLS layer (not as a caller it knows): its log says so, for new
    // handshakes and for the connection it closed. A handshake that raced the reload completes
    // under the old configuration and is closed by the reload's check a moment later: either way
    // the refusal is the certificate's.
    let log = hub.log_text();
    let log = plain(log.get(log_before_step3..).unwrap_or_default());
    assert!(
        log.lines()
            .any(|l| l.contains("TLS handshake refused") && l.contains("invalid peer certificate: UnknownIssuer")),
        "step 3: a new handshake with A refused for its certificate; the hub's log since:\n{log}"
    );
    assert!(
        log.contains("no longer accepted after a TLS reload"),
        "step 3: the open connection of A closed by the reload; the hub's log since:\n{log}"
    );

    // A few more rounds of the steady client on B alone.
    let at_step3 = steady.successes();
    let deadline = Instant::now() + RELOAD_GUARD;
    while steady.successes() < at_step3 + 10 {
        assert!(Instant::now() < deadline, "the steady client stalled after step 3");
        tokio::time::sleep(STEADY_EVERY).await;
    }
    steady.stop.store(true, Ordering::SeqCst);
    timeout(RELOAD_GUARD, steady_task)
        .await
        .expect("the steady client stops")
        .expect("the steady client");

    assert!(
        failures_steps_1_2.is_empty(),
        "the steady client failed during steps 1-2: {failures_steps_1_2:#?}"
    );
    let failures = steady.failures.lock().expect("failures").clone();
    assert!(
        failures.is_empty(),
        "the steady client failed after switching to B: {failures:#?}"
    );
    assert!(successes_steps_1_2 > 0);
    println!(
        "rotation: {:.1} s; B accepted {:.1} s after the bundle [A, B], the hub's certificate from B served \
         after {:.1} s, A refused {:.1} s after the bundle [B]; steady client: {} calls on long-lived \
         connections, {} on fresh ones, none failed",
        began.elapsed().as_secs_f64(),
        step1.as_secs_f64(),
        step2.as_secs_f64(),
        step3.as_secs_f64(),
        steady.calls.load(Ordering::SeqCst),
        steady.fresh_calls.load(Ordering::SeqCst),
    );
    hub.kill();
}

/// The log without the terminal colours tracing may add around field names.
fn plain(log: &str) -> String {
    let mut out = String::with_capacity(log.len());
    let mut chars = log.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // An escape sequence: ESC [ parameters, ending with a letter.
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
