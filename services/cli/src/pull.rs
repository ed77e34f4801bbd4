//! `xinqiao pull`: a dataset's records and changes as NDJSON, once, from a snapshot, or live.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Args;
use indicatif::ProgressBar;
use serde_json::{Value, json};
use tonic::{Code, Status};
use xinqiao_proto::v1 as pb;

use crate::client::{ClientArgs, explain};
use crate::exchange::{self, Client, Retry, is_transient};
use crate::{CliResult, out, output};

const HELP: &str = "\
Output:
  One JSON object per line:
    {\"sequence\":N,\"op\":\"upsert\",\"key\":[...],\"record\":{...}}
    {\"sequence\":N,\"op\":\"delete\",\"key\":[...]}
  A snapshot writes the latest upsert of every present key (ordered by key, each with the sequence
  number of that upsert), then the changes after the snapshot's sequence number follow in order.

Consumers (--consumer NAME):
  The hub keeps, per department, how far each named consumer has processed a dataset. The first
  run starts from --from, or with --snapshot from a snapshot; later runs resume after the
  consumer's acknowledged position (--from and --snapshot are then not needed and ignored).
  Each page is written and flushed (and synced to disk with -o) before its last sequence number is
  acknowledged, so a pull that is killed resumes without a gap. Delivery is at least once: the
  lines written after the last acknowledgement may be written again, so deduplicate by sequence.
  With -o, a resumed consumer appends to FILE (dropping a last line left incomplete by a kill);
  a consumer's first run, and any pull without --consumer, replaces FILE.

Purpose and grants:
  Reading another department's unconditionally shared (无条件共享) dataset needs --purpose TEXT
  (用途); it is recorded in the audit trail. A conditionally shared (有条件共享) dataset is read
  under an active grant (apply with `xinqiao access request`): its records carry only the granted
  fields, masked as the grant says. --grant ID names the grant when you hold several.";

#[derive(Args)]
#[command(after_long_help = HELP)]
pub struct PullArgs {
    #[command(flatten)]
    client: ClientArgs,
    /// The dataset (its catalogue entry's resource code).
    dataset: String,
    /// Start with the latest state of every record, then continue with the changes after it.
    #[arg(long, conflicts_with = "from")]
    snapshot: bool,
    /// Start after this sequence number [default: 0, the beginning].
    #[arg(long, value_name = "SEQ")]
    from: Option<u64>,
    /// Once caught up, keep writing changes as they are published (until Ctrl-C or --limit).
    #[arg(long)]
    follow: bool,
    /// A named consumer: resume from its acknowledged position, and acknowledge what is written.
    #[arg(long, value_name = "NAME")]
    consumer: Option<String>,
    /// Write to this file instead of stdout.
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Stop after this many changes (snapshot records not counted).
    #[arg(long, value_name = "N")]
    limit: Option<u64>,
    /// Changes asked for at a time.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    page: u32,
    /// No progress display.
    #[arg(short, long)]
    quiet: bool,
    #[command(flatten)]
    read: exchange::ReadArgs,
}

/// Why pulling stopped early.
enum Stop {
    /// Ctrl-C.
    Interrupted,
    /// The reader of stdout went away (`xinqiao pull … | head`).
    Closed,
    Failed(String),
}

impl From<String> for Stop {
    fn from(e: String) -> Self {
        Stop::Failed(e)
    }
}

fn io_stop(e: io::Error) -> Stop {
    if e.kind() == io::ErrorKind::BrokenPipe {
        Stop::Closed
    } else {
        Stop::Failed(format!("cannot write the output: {e}"))
    }
}

/// Where the lines go.
enum Sink {
    /// A file, and whether it can be synced (a regular file; not /dev/null or a FIFO).
    File(BufWriter<File>, bool),
    Stdout(BufWriter<io::Stdout>),
}

impl Sink {
    fn writer(&mut self) -> &mut dyn Write {
        match self {
            Sink::File(w, _) => w,
            Sink::Stdout(w) => w,
        }
    }

    /// Flushes what was written; a file is also synced, so an acknowledgement never runs ahead
    /// of the data on disk.
    fn commit(&mut self) -> io::Result<()> {
        match self {
            Sink::File(w, sync) => {
                w.flush()?;
                if *sync { w.get_ref().sync_data() } else { Ok(()) }
            }
            Sink::Stdout(w) => w.flush(),
        }
    }
}

/// Opens the output file: appended to when a consumer resumes (without a last line cut short by a
/// kill), else replaced.
fn open_output(path: &Path, append: bool) -> CliResult<File> {
    let fail = |e: io::Error| format!("cannot write {}: {e}", path.display());
    if !append {
        return File::create(path).map_err(fail);
    }
    if !std::fs::metadata(path).is_ok_and(|m| m.is_file()) {
        // Not a regular file (a FIFO, /dev/stdout): nothing to trim.
        return OpenOptions::new().append(true).create(true).open(path).map_err(fail);
    }
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(fail)?;
    let length = file.metadata().map_err(fail)?.len();
    // Find the end of the last complete line, reading backwards a block at a time.
    let mut end = length;
    let mut keep = 0;
    let mut block = vec![0u8; 64 * 1024];
    while end > 0 {
        let start = end.saturating_sub(block.len() as u64);
        let part = &mut block[..(end - start) as usize];
        file.seek(SeekFrom::Start(start)).map_err(fail)?;
        file.read_exact(part).map_err(fail)?;
        if let Some(i) = part.iter().rposition(|&b| b == b'\n') {
            keep = start + i as u64 + 1;
            break;
        }
        end = start;
    }
    if keep < length {
        eprintln!(
            "note: dropping an incomplete last line ({} bytes) of {}",
            length - keep,
            path.display()
        );
        file.set_len(keep).map_err(fail)?;
    }
    file.seek(SeekFrom::End(0)).map_err(fail)?;
    Ok(file)
}

/// Writes JSON text as it came from the hub, unless it spans lines.
fn write_json(w: &mut dyn Write, bytes: &[u8]) -> io::Result<()> {
    if bytes.is_empty() {
        return w.write_all(b"null");
    }
    if bytes.iter().any(|&b| b == b'\n' || b == b'\r') {
        let value: Value = serde_json::from_slice(bytes).map_err(io::Error::other)?;
        return serde_json::to_writer(w, &value).map_err(io::Error::other);
    }
    w.write_all(bytes)
}

pub(crate) fn write_change(w: &mut dyn Write, c: &pb::Change) -> io::Result<()> {
    let op = match pb::ChangeOp::try_from(c.op) {
        Ok(pb::ChangeOp::Upsert) => "upsert",
        Ok(pb::ChangeOp::Delete) => "delete",
        _ => "unknown",
    };
    write!(w, "{{\"sequence\":{},\"op\":\"{op}\",\"key\":", c.sequence)?;
    write_json(w, &c.key)?;
    if op != "delete" {
        w.write_all(b",\"record\":")?;
        write_json(w, &c.record)?;
    }
    w.write_all(b"}\n")
}

struct Puller<'a> {
    args: &'a PullArgs,
    client: Client,
    sink: Sink,
    progress: ProgressBar,
    retry: Retry,
    /// The last sequence number written and committed, or where pulling starts.
    position: u64,
    /// `position` still has to be acknowledged for the consumer.
    unacked: bool,
    snapshot_records: u64,
    changes: u64,
    snapshot_as_of: Option<u64>,
    /// Changes asked for at a time: --page, halved while the hub finds pages too large to send.
    page: u32,
}

/// The hub could not send (or this client refused) a message this large.
fn too_large(status: &Status) -> bool {
    let message = status.message().to_ascii_lowercase();
    matches!(status.code(), Code::ResourceExhausted | Code::OutOfRange)
        && (message.contains("too large") || message.contains("message length"))
}

impl Puller<'_> {
    /// Halves the page size after a page too large to travel; false when it cannot shrink.
    fn shrink_page(&mut self, status: &Status) -> bool {
        if !too_large(status) || self.page == 1 {
            return false;
        }
        self.page = (self.page / 2).max(1);
        let page = self.page;
        self.progress
            .suspend(|| eprintln!("a page of changes was too large to send; asking for {page} at a time"));
        true
    }

    fn remaining(&self) -> Option<u64> {
        self.args.limit.map(|limit| limit.saturating_sub(self.changes))
    }

    /// Waits and reconnects after a transient failure; any other failure ends the pull.
    async fn recover(&mut self, status: Status) -> Result<(), Stop> {
        if !is_transient(&status) {
            return Err(Stop::Failed(exchange::explain_read(status)));
        }
        self.retry.wait(&explain(status), &self.progress).await?;
        self.client = self.retry.reconnect(&self.args.client, &self.progress).await?;
        Ok(())
    }

    fn show_position(&self) {
        self.progress.set_message(format!("seq {}", self.position));
    }

    /// Writes changes after the current position, in order.
    fn write_changes(&mut self, changes: Vec<pb::Change>) -> Result<(), Stop> {
        for c in changes {
            if self.remaining() == Some(0) {
                break;
            }
            // A change at or below the position was written already.
            if c.sequence <= self.position {
                continue;
            }
            write_change(self.sink.writer(), &c).map_err(io_stop)?;
            self.position = c.sequence;
            self.changes += 1;
            self.unacked = true;
            self.progress.inc(1);
        }
        self.show_position();
        Ok(())
    }

    /// Flushes the output, then acknowledges the position for the consumer.
    async fn commit(&mut self) -> Result<(), Stop> {
        self.sink.commit().map_err(io_stop)?;
        if !self.unacked {
            return Ok(());
        }
        let Some(consumer) = &self.args.consumer else {
            self.unacked = false;
            return Ok(());
        };
        let request = pb::AcknowledgeRequest {
            dataset: self.args.dataset.clone(),
            consumer: consumer.clone(),
            sequence: self.position,
        };
        loop {
            match self.client.acknowledge(request.clone()).await {
                Ok(_) => {
                    self.unacked = false;
                    return Ok(());
                }
                Err(status) => self.recover(status).await?,
            }
        }
    }

    /// The latest state of every record, then the position moves to the snapshot's sequence.
    async fn snapshot(&mut self) -> Result<(), Stop> {
        let mut as_of: Option<u64> = None;
        // Records already written: a broken snapshot is asked for again at the same sequence
        // number, and its records come in the same (key) order.
        let mut written = 0u64;
        self.snapshot_records = 0;
        'attempt: loop {
            let request = pb::SnapshotRequest {
                dataset: self.args.dataset.clone(),
                as_of_sequence: as_of.unwrap_or(0),
                purpose: self.args.read.purpose(),
                grant_id: self.args.read.grant_id(),
            };
            let mut stream = match self.client.snapshot(request).await {
                Ok(response) => response.into_inner(),
                Err(status) => {
                    self.recover(status).await?;
                    continue;
                }
            };
            let mut seen = 0u64;
            loop {
                match stream.message().await {
                    Ok(Some(chunk)) => {
                        match as_of {
                            None => {
                                as_of = Some(chunk.as_of_sequence);
                                self.snapshot_as_of = as_of;
                            }
                            Some(n) if n != chunk.as_of_sequence => {
                                return Err(Stop::Failed(format!(
                                    "the hub resumed the snapshot at sequence {} instead of {n}",
                                    chunk.as_of_sequence
                                )));
                            }
                            Some(_) => {}
                        }
                        for record in &chunk.records {
                            seen += 1;
                            if seen <= written {
                                continue;
                            }
                            write_change(self.sink.writer(), record).map_err(io_stop)?;
                            written += 1;
                            self.snapshot_records = written;
                            self.progress.inc(1);
                        }
                        self.progress
                            .set_message(format!("snapshot at seq {}", as_of.unwrap_or(0)));
                        self.retry.reset();
                    }
                    Ok(None) => break 'attempt,
                    Err(status) => {
                        self.recover(status).await?;
                        continue 'attempt;
                    }
                }
            }
        }
        if let Some(as_of) = as_of {
            self.position = as_of;
        }
        self.unacked = true;
        self.show_position();
        self.commit().await
    }

    /// Fetches pages until caught up with the dataset (or --limit).
    async fn catch_up(&mut self) -> Result<(), Stop> {
        loop {
            let limit = match self.remaining() {
                Some(0) => return Ok(()),
                Some(left) => left.min(self.page as u64) as u32,
                None => self.page,
            };
            let request = pb::FetchRequest {
                dataset: self.args.dataset.clone(),
                after_sequence: self.position,
                limit,
                purpose: self.args.read.purpose(),
                grant_id: self.args.read.grant_id(),
            };
            let page = match self.client.fetch(request).await {
                Ok(page) => page.into_inner(),
                Err(status) if self.shrink_page(&status) => continue,
                Err(status) => {
                    self.recover(status).await?;
                    continue;
                }
            };
            self.retry.reset();
            if page.changes.is_empty() {
                return Ok(());
            }
            self.write_changes(page.changes)?;
            self.commit().await?;
            if self.position >= page.last_sequence {
                return Ok(());
            }
        }
    }

    /// A live tail from the position, reconnecting from the last written change.
    async fn follow(&mut self) -> Result<(), Stop> {
        loop {
            let max_batch = match self.remaining() {
                Some(0) => return Ok(()),
                Some(left) => left.min(self.page as u64) as u32,
                None => self.page,
            };
            let request = pb::SubscribeRequest {
                dataset: self.args.dataset.clone(),
                after_sequence: self.position,
                // The position is tracked here: it may be ahead of the consumer's acknowledgement.
                consumer: String::new(),
                max_batch,
                purpose: self.args.read.purpose(),
                grant_id: self.args.read.grant_id(),
            };
            let mut stream = match self.client.subscribe(request).await {
                Ok(response) => response.into_inner(),
                Err(status) => {
                    self.recover(status).await?;
                    continue;
                }
            };
            self.progress.set_message(format!("seq {}  following", self.position));
            loop {
                match stream.message().await {
                    Ok(Some(batch)) => {
                        self.write_changes(batch.changes)?;
                        self.commit().await?;
                        self.retry.reset();
                        if self.remaining() == Some(0) {
                            return Ok(());
                        }
                        self.progress.set_message(format!("seq {}  following", self.position));
                    }
                    Ok(None) => {
                        self.recover(Status::unavailable("the hub ended the subscription"))
                            .await?;
                        break;
                    }
                    Err(status) if self.shrink_page(&status) => break,
                    Err(status) => {
                        self.recover(status).await?;
                        break;
                    }
                }
            }
        }
    }

    async fn pull(&mut self, snapshot: bool) -> Result<(), Stop> {
        if snapshot {
            self.snapshot().await?;
        }
        self.catch_up().await?;
        if self.args.follow {
            self.follow().await?;
        }
        Ok(())
    }
}

pub async fn run(args: PullArgs) -> CliResult {
    let mut client = exchange::connect(&args.client).await?;
    let dataset = client
        .get_dataset(pb::GetDatasetRequest {
            dataset: args.dataset.clone(),
        })
        .await
        .map_err(explain)?
        .into_inner();
    let mut acknowledged = None;
    if let Some(consumer) = &args.consumer {
        let request = pb::GetConsumerRequest {
            dataset: dataset.dataset.clone(),
            consumer: consumer.clone(),
        };
        match client.get_consumer(request).await {
            Ok(cursor) => acknowledged = Some(cursor.into_inner().acknowledged_sequence),
            Err(status) if status.code() == Code::NotFound => {}
            Err(status) => return Err(explain(status)),
        }
    }
    if let (Some(consumer), Some(at)) = (&args.consumer, acknowledged)
        && (args.snapshot || args.from.is_some_and(|from| from != at))
    {
        eprintln!("consumer {consumer} resumes after sequence {at} (--from and --snapshot do not apply)");
    }
    let start = acknowledged.or(args.from).unwrap_or(0);
    let snapshot = args.snapshot && acknowledged.is_none();

    let sink = match &args.output {
        Some(path) => {
            let file = open_output(path, acknowledged.is_some())?;
            let regular = file.metadata().is_ok_and(|m| m.is_file());
            Sink::File(BufWriter::with_capacity(1 << 16, file), regular)
        }
        None => Sink::Stdout(BufWriter::with_capacity(1 << 16, io::stdout())),
    };
    let progress = exchange::progress(
        args.quiet,
        None,
        "{spinner} {elapsed_precise}  {human_pos} lines  {rate}  {msg}",
    );
    let started = Instant::now();
    let mut puller = Puller {
        args: &args,
        client,
        sink,
        progress: progress.clone(),
        retry: Retry::new(),
        position: start,
        unacked: false,
        snapshot_records: 0,
        changes: 0,
        snapshot_as_of: None,
        page: args.page,
    };
    let outcome = tokio::select! {
        outcome = puller.pull(snapshot) => outcome,
        _ = tokio::signal::ctrl_c() => Err(Stop::Interrupted),
    };
    progress.finish_and_clear();
    // Everything written so far is complete lines: flush it, and acknowledge it if that was cut
    // short (one attempt; the next run resumes from the last acknowledgement anyway).
    let mut failure = match outcome {
        Ok(()) | Err(Stop::Interrupted) => None,
        Err(Stop::Closed) => return Ok(()),
        Err(Stop::Failed(e)) => Some(e),
    };
    if let Err(e) = puller.sink.commit() {
        if e.kind() == io::ErrorKind::BrokenPipe {
            return Ok(());
        }
        failure.get_or_insert(format!("cannot write the output: {e}"));
    } else if puller.unacked
        && let Some(consumer) = &args.consumer
    {
        let request = pb::AcknowledgeRequest {
            dataset: args.dataset.clone(),
            consumer: consumer.clone(),
            sequence: puller.position,
        };
        let ack = tokio::time::timeout(Duration::from_secs(5), puller.client.acknowledge(request)).await;
        match ack {
            Ok(Ok(_)) => puller.unacked = false,
            Ok(Err(status)) => {
                failure.get_or_insert(explain(status));
            }
            Err(_) => {
                failure.get_or_insert("the last acknowledgement timed out".into());
            }
        }
    }
    summary(&args, &puller, started.elapsed());
    match failure {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

fn summary(args: &PullArgs, p: &Puller<'_>, elapsed: Duration) {
    let lines = p.snapshot_records + p.changes;
    let rate = exchange::per_second(lines, elapsed);
    let acknowledged = args.consumer.as_ref().filter(|_| !p.unacked).map(|_| p.position);
    let value = json!({
        "dataset": args.dataset,
        "snapshot_records": p.snapshot_records,
        "snapshot_as_of": p.snapshot_as_of,
        "changes": p.changes,
        "position": p.position,
        "consumer": args.consumer,
        "acknowledged": acknowledged,
        "elapsed_seconds": elapsed.as_secs_f64(),
        "lines_per_second": rate,
    });
    let mut text = format!("pulled {}: ", args.dataset);
    match p.snapshot_as_of {
        Some(as_of) if p.position < as_of => text.push_str(&format!(
            "{} records of an incomplete snapshot as of sequence {as_of}, ",
            p.snapshot_records
        )),
        Some(as_of) => text.push_str(&format!("{} records as of sequence {as_of}, then ", p.snapshot_records)),
        None => {}
    }
    text.push_str(&format!(
        "{} changes; at sequence {} after {:.1}s ({rate:.0} lines/s)",
        p.changes,
        p.position,
        elapsed.as_secs_f64()
    ));
    if let (Some(consumer), Some(at)) = (&args.consumer, acknowledged) {
        text.push_str(&format!("; consumer {consumer} acknowledged {at}"));
    }
    // With the records on stdout, the summary goes to stderr.
    if args.output.is_some() {
        output::emit(args.client.json, value, || out!("{text}"));
    } else if !args.quiet {
        eprintln!("{text}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(change: &pb::Change) -> String {
        let mut out = Vec::new();
        write_change(&mut out, change).expect("written");
        String::from_utf8(out).expect("UTF-8")
    }

    #[test]
    fn changes_are_one_line_each() {
        let upsert = pb::Change {
            sequence: 7,
            op: pb::ChangeOp::Upsert as i32,
            key: br#"["a"]"#.to_vec(),
            record: b"{\n  \"k\": \"a\"\n}".to_vec(),
            published_at: None,
        };
        assert_eq!(
            line(&upsert),
            "{\"sequence\":7,\"op\":\"upsert\",\"key\":[\"a\"],\"record\":{\"k\":\"a\"}}\n"
        );
        let delete = pb::Change {
            sequence: 8,
            op: pb::ChangeOp::Delete as i32,
            key: br#"["a"]"#.to_vec(),
            ..Default::default()
        };
        assert_eq!(line(&delete), "{\"sequence\":8,\"op\":\"delete\",\"key\":[\"a\"]}\n");
    }

    #[test]
    fn a_resumed_output_loses_only_its_incomplete_last_line() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("out.ndjson");
        std::fs::write(&path, "{\"sequence\":1}\n{\"sequence\":2}\n{\"seq").expect("written");
        let mut file = open_output(&path, true).expect("opened");
        file.write_all(b"{\"sequence\":3}\n").expect("appended");
        drop(file);
        let text = std::fs::read_to_string(&path).expect("read");
        assert_eq!(text, "{\"sequence\":1}\n{\"sequence\":2}\n{\"sequence\":3}\n");

        std::fs::write(&path, "no newline at all").expect("written");
        drop(open_output(&path, true).expect("opened"));
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "");

        std::fs::write(&path, "{}\n").expect("written");
        drop(open_output(&path, false).expect("opened"));
        assert_eq!(
            std::fs::read_to_string(&path).expect("read"),
            "",
            "a fresh pull replaces the file"
        );
    }
}
