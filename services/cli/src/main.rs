//! `xinqiao`: run a hub, manage its development PKI, and act on a hub as a department or the admin.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod access;
mod audit;
mod catalog;
mod certs;
mod client;
mod console;
mod demo;
mod dept;
mod entry_file;
mod exchange;
mod files;
mod interface;
mod ops;
mod output;
mod peer;
mod publish;
mod pull;
mod report;
mod schema;
mod scorecard;
mod serve;
mod validate;

#[derive(Parser)]
#[command(
    name = "xinqiao",
    version,
    about = "信桥 Xinqiao: the government data-exchange and sharing hub"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a hub.
    Serve(serve::ServeArgs),
    /// Start a hub on a temporary database and walk through a sharing scenario.
    Demo,
    /// Create or extend the development PKI (CA, hub, admin and department certificates).
    #[command(subcommand)]
    Certs(certs::CertsCommand),
    /// Show who the hub takes this client's certificate to be.
    Whoami(client::ClientArgs),
    /// Print a one-time link that signs a browser in to the hub's web console as this client's
    /// identity (e.g. `xinqiao console --as admin`).
    Console(client::ClientArgs),
    /// Departments (admin: register, update, deactivate, reactivate; anyone: list, show).
    Dept(dept::DeptArgs),
    /// The resource directory: compile, review and search catalogue entries.
    Catalog(catalog::CatalogArgs),
    /// Peer hubs of other levels (平台级联, admin): add, list, show, remove, sync.
    Peer(peer::PeerArgs),
    /// The shared schema registry: register, evolve, bind and validate against schemas.
    Schema(schema::SchemaArgs),
    /// Check a file of records (NDJSON or CSV) against a schema file, offline.
    Validate(validate::ValidateArgs),
    /// The exchange catalogue: open, show, list and upgrade datasets.
    Dataset(exchange::DatasetArgs),
    /// Publish a file of records (NDJSON or CSV) to a table dataset, in idempotent batches.
    Publish(publish::PublishArgs),
    /// Pull a dataset's records and changes as NDJSON: once, from a snapshot, or following live.
    Pull(pull::PullArgs),
    /// Upload and download the files of a file dataset.
    File(files::FileArgs),
    /// Access to conditionally shared (有条件共享) datasets: requests, answers and grants.
    Access(access::AccessArgs),
    /// Service interfaces (接口共享): register, list, show and disable the live services behind 接口 entries.
    Interface(interface::InterfaceArgs),
    /// Call an operation of a service interface through the hub and print its JSON answer.
    Call(interface::CallArgs),
    /// Error reports (纠错): flag a record you believe wrong; the provider resolves the report.
    Report(report::ReportArgs),
    /// The audit trail: list events, verify the hash chain.
    Audit(audit::AuditArgs),
    /// The sharing scorecard (共享评价): the ranking, each department's parts and indicators, an HTML report.
    Scorecard(scorecard::ScorecardArgs),
    /// Bring the database to this build's schema, as a step of its own (refused while a running
    /// hub node would not know the new schema).
    Migrate(ops::MigrateArgs),
    /// Check configuration, certificates' expiry, the database, its schema and the audit chain
    /// head; exit 0 when well, 1 on a warning, 2 on a critical finding.
    Check(ops::CheckArgs),
    /// Write an online, consistent, checked copy of a SQLite hub's database.
    Backup(ops::BackupArgs),
    /// Put a backup in place of a SQLite hub's database (no hub may run on it; the old one is kept).
    Restore(ops::RestoreArgs),
}

/// mimalloc rather than the C library's allocator: a hub's calls allocate many small values
/// (decoded messages, copied entries) on one worker thread and free them on another, where
/// glibc's arenas take a lock; in B5 (README Performance) malloc and free were a third of the
/// profile, and mimalloc served 44% more searches a second.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The demo narrates on stdout; the hub inside it only speaks up about errors.
    let default_level = if matches!(cli.command, Command::Demo) {
        "error"
    } else {
        "info"
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("XINQIAO_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level)),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let done = match cli.command {
            Command::Serve(args) => serve::run(args).await,
            Command::Demo => demo::run().await,
            Command::Certs(cmd) => certs::run(cmd),
            Command::Whoami(args) => client::whoami(args).await,
            Command::Console(args) => console::run(args).await,
            Command::Dept(args) => dept::run(args).await,
            Command::Catalog(args) => catalog::run(args).await,
            Command::Peer(args) => peer::run(args).await,
            Command::Schema(args) => schema::run(args).await,
            Command::Validate(args) => validate::run(args),
            Command::Dataset(args) => exchange::run(args).await,
            Command::Publish(args) => publish::run(args).await,
            Command::Pull(args) => pull::run(args).await,
            Command::File(args) => files::run(args).await,
            Command::Access(args) => access::run(args).await,
            Command::Interface(args) => interface::run(args).await,
            Command::Call(args) => interface::call(args).await,
            Command::Report(args) => report::run(args).await,
            Command::Audit(args) => audit::run(args).await,
            Command::Scorecard(args) => scorecard::run(args).await,
            Command::Migrate(args) => ops::migrate(args).await,
            Command::Backup(args) => ops::backup(args).await,
            Command::Restore(args) => ops::restore(args).await,
            // The one command whose exit code says more than success or failure.
            Command::Check(args) => return ops::check(args).await,
        };
        done.map(|()| ExitCode::SUCCESS)
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Prints a line on stdout. A closed pipe (`xinqiao … | head`) ends the command quietly instead
/// of panicking as `println!` would.
macro_rules! out {
    ($($arg:tt)*) => { $crate::output::write_line(format_args!($($arg)*)) };
}
pub(crate) use out;

/// Errors end the command with one readable line.
pub type CliResult<T = ()> = Result<T, String>;
