//! `xinqiao publish`: stream a file of records into a table dataset, in idempotent batches.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Instant, UNIX_EPOCH};

use clap::Args;
use indicatif::ProgressBar;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use xinqiao_proto::v1 as pb;
use xinqiao_proto::v1::schema_service_client::SchemaServiceClient;
use xinqiao_schema::records::{RecordReport, UNREADABLE};
use xinqiao_schema::{RecordOutcome, Violation};

use crate::client::{ClientArgs, explain};
use crate::exchange::{self, Client, Retry, is_transient};
use crate::validate::{RecordFormat, open_records, print_report};
use crate::{CliResult, out, output};

/// A batch is closed early when its records reach this many bytes, so that it fits the hub's
/// default 4 MiB message limit. Part of the batch layout, hence of the idempotency keys.
const MAX_BATCH_BYTES: usize = 3 * 1024 * 1024;
/// Rejections kept in detail for --json; the rest are only counted.
const MAX_JSON_REJECTIONS: usize = 100_000;

const HELP: &str = "\
Batches and retries:
  The file is read as a stream and cut into batches of --batch records (fewer when a batch would
  exceed 3 MiB). Each batch is committed atomically and carries an idempotency key derived from
    - the run: the file's canonical path, size and modification time, or --run-id when given,
    - the dataset, the format, --batch and --delete,
    - the batch's number and the exact content of its records.
  Up to --in-flight batches are sent ahead of their acknowledgement. When the connection breaks or
  the hub is unavailable, the command reconnects and sends the unacknowledged batches again with
  the same keys (up to 30 attempts over about two minutes): a batch the hub had already committed
  is answered from its first commit (counted as replayed) and written nothing twice.

  After a crash or Ctrl-C, run the same command on the unchanged file: committed batches are
  replayed, the rest are published. --lenient and --accept-valid are not part of the keys, so a
  batch already committed is not re-published with other options.

  Publishing the same unchanged file again therefore writes nothing. To publish it again on
  purpose (say after deleting its records), give a new --run-id. With --run-id you may also resume
  from a copy of the file elsewhere; a batch whose content changed gets a new key and is published.

Rejections:
  By default a batch holding any invalid record is rejected whole and nothing of it is stored; the
  other batches are still published. --accept-valid stores the valid records of each batch instead.
  Every rejected record is reported with its line in the file, and the command exits non-zero.";

#[derive(Args)]
#[command(after_long_help = HELP)]
pub struct PublishArgs {
    #[command(flatten)]
    client: ClientArgs,
    /// The dataset (its catalogue entry's resource code).
    dataset: String,
    /// The records: NDJSON (one JSON document per line) or CSV with a header row.
    file: PathBuf,
    /// ndjson or csv [default: by the file's extension, else ndjson].
    #[arg(long)]
    format: Option<RecordFormat>,
    /// Records per batch; each batch is committed atomically.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    batch: u32,
    /// Store the valid records of each batch and report the invalid ones [default: a batch with
    /// any invalid record is rejected whole].
    #[arg(long)]
    accept_valid: bool,
    /// Accept a wrong identifier check character, reporting it as a warning.
    #[arg(long)]
    lenient: bool,
    /// The file holds key objects (e.g. {"uscc": "…"}) of the records to delete.
    #[arg(long)]
    delete: bool,
    /// Name this run instead of deriving it from the file's path, size and modification time.
    /// The same run id and content resume a run; a new one publishes again.
    #[arg(long)]
    run_id: Option<String>,
    /// Batches sent ahead of their acknowledgement.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=16))]
    in_flight: u32,
    /// No progress bar.
    #[arg(short, long)]
    quiet: bool,
}

/// One batch as read from the file.
struct Batch {
    /// From 1.
    number: u64,
    key: String,
    changes: Vec<pb::RecordChange>,
    /// The line of each change.
    lines: Vec<u64>,
    /// Records that could not be read here, with their lines; never sent.
    unreadable: Vec<(u64, String)>,
    /// Records read, unreadable ones included.
    records: u64,
    first_line: u64,
    last_line: u64,
}

/// Reads the file into batches on a blocking thread.
struct Reader {
    path: PathBuf,
    format: RecordFormat,
    /// The schema document, for typing CSV cells.
    schema: Value,
    run: [u8; 32],
    batch: usize,
    delete: bool,
}

impl Reader {
    /// Opens the file (reporting whether that worked on `opened`), then sends its batches.
    fn run(self, opened: oneshot::Sender<CliResult>, sink: mpsc::Sender<Arc<Batch>>) {
        // The record iterator is not `Send`: it is made and used on this thread.
        let mut records = match open_records(&self.path, self.format, &self.schema) {
            Ok(records) => {
                let _ = opened.send(Ok(()));
                records
            }
            Err(e) => {
                let _ = opened.send(Err(e));
                return;
            }
        };
        let mut number = 0;
        let mut carried: Option<(u64, Vec<u8>)> = None;
        loop {
            number += 1;
            let mut b = Batch {
                number,
                key: String::new(),
                changes: Vec::new(),
                lines: Vec::new(),
                unreadable: Vec::new(),
                records: 0,
                first_line: 0,
                last_line: 0,
            };
            let mut bytes = 0;
            let mut hasher = Sha256::new();
            hasher.update(self.run);
            hasher.update(number.to_be_bytes());
            let add = |b: &mut Batch, line: u64, data: Vec<u8>, hasher: &mut Sha256| {
                hasher.update((data.len() as u64).to_be_bytes());
                hasher.update(&data);
                b.lines.push(line);
                b.changes.push(pb::RecordChange {
                    change: Some(if self.delete {
                        pb::record_change::Change::Delete(data)
                    } else {
                        pb::record_change::Change::Upsert(data)
                    }),
                });
            };
            if let Some((line, data)) = carried.take() {
                bytes += data.len();
                b.records += 1;
                b.first_line = line;
                b.last_line = line;
                add(&mut b, line, data, &mut hasher);
            }
            while (b.records as usize) < self.batch {
                let Some((line, record)) = records.next() else {
                    break;
                };
                let data = match record.and_then(|v| serde_json::to_vec(&v).map_err(|e| e.to_string())) {
                    Ok(data) if data.len() > MAX_BATCH_BYTES => Err(format!(
                        "the record is {} bytes; at most {MAX_BATCH_BYTES} fit in a batch",
                        data.len()
                    )),
                    other => other,
                };
                match data {
                    Ok(data) if bytes + data.len() > MAX_BATCH_BYTES && !b.changes.is_empty() => {
                        // The batch is full by size: this record opens the next one.
                        carried = Some((line, data));
                        break;
                    }
                    Ok(data) => {
                        bytes += data.len();
                        add(&mut b, line, data, &mut hasher);
                    }
                    Err(message) => b.unreadable.push((line, message)),
                }
                b.records += 1;
                if b.first_line == 0 {
                    b.first_line = line;
                }
                b.last_line = line;
            }
            if b.records == 0 {
                return;
            }
            let digest = hex(&hasher.finalize());
            let run = hex(&self.run);
            b.key = format!("xq-{}-{number}-{}", &run[..12], &digest[..24]);
            if sink.blocking_send(Arc::new(b)).is_err() {
                return;
            }
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What identifies a run: see HELP.
fn run_identity(args: &PublishArgs, format: RecordFormat) -> CliResult<[u8; 32]> {
    let mut hasher = Sha256::new();
    hasher.update(b"xinqiao-publish/1\0");
    match &args.run_id {
        Some(id) => {
            hasher.update(b"run-id\0");
            hasher.update(id.as_bytes());
        }
        None => {
            let path =
                std::fs::canonicalize(&args.file).map_err(|e| format!("cannot read {}: {e}", args.file.display()))?;
            let meta = std::fs::metadata(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            let modified = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            hasher.update(b"file\0");
            hasher.update(path.as_os_str().as_encoded_bytes());
            hasher.update(b"\0");
            hasher.update(meta.len().to_be_bytes());
            hasher.update(modified.to_be_bytes());
        }
    }
    hasher.update(b"\0");
    hasher.update(args.dataset.as_bytes());
    hasher.update(b"\0");
    hasher.update(if format == RecordFormat::Csv { b"csv" } else { b"njs" });
    hasher.update((args.batch as u64).to_be_bytes());
    hasher.update((MAX_BATCH_BYTES as u64).to_be_bytes());
    hasher.update([u8::from(args.delete)]);
    Ok(hasher.finalize().into())
}

enum Attempt {
    Done,
    Failed(tonic::Status),
    Fatal(String),
}

/// A batch on its way: sent (or to be sent) until the hub answers.
struct Slot {
    batch: Arc<Batch>,
    answer: Option<pb::PublishResponse>,
}

#[derive(Default)]
struct Tally {
    records: u64,
    batches: u64,
    accepted: u64,
    rejected: u64,
    unreadable: u64,
    /// Valid records of batches rejected whole.
    not_stored: u64,
    replayed: u64,
    /// Accepted records of replayed batches: stored by an earlier run.
    replayed_accepted: u64,
    rejected_batches: Vec<(u64, u64, u64)>,
    rejections: Vec<Value>,
    more_rejections: u64,
}

struct Publisher<'a> {
    args: &'a PublishArgs,
    progress: ProgressBar,
    tally: Tally,
}

impl Publisher<'_> {
    fn request(&self, batch: &Batch) -> pb::PublishRequest {
        pb::PublishRequest {
            dataset: self.args.dataset.clone(),
            idempotency_key: batch.key.clone(),
            changes: batch.changes.clone(),
            policy: if self.args.accept_valid {
                pb::BatchPolicy::AcceptValid
            } else {
                pb::BatchPolicy::RejectAll
            } as i32,
            lenient: self.args.lenient,
        }
    }

    /// Counts and reports a batch the hub answered, in file order.
    fn settle(&mut self, batch: &Batch, answer: pb::PublishResponse) {
        let t = &mut self.tally;
        t.records += batch.records;
        t.batches += 1;
        t.accepted += answer.accepted as u64;
        t.unreadable += batch.unreadable.len() as u64;
        t.rejected += answer.rejected.len() as u64;
        if answer.replayed {
            t.replayed += 1;
            t.replayed_accepted += answer.accepted as u64;
        }
        let whole = !self.args.accept_valid && !answer.rejected.is_empty();
        if whole {
            t.not_stored += (batch.changes.len() - answer.rejected.len().min(batch.changes.len())) as u64;
            t.rejected_batches
                .push((batch.number, batch.first_line, batch.last_line));
        }
        let mut reports: Vec<RecordReport> = batch
            .unreadable
            .iter()
            .map(|(line, message)| RecordReport {
                line: *line,
                outcome: RecordOutcome {
                    errors: vec![Violation {
                        instance_pointer: String::new(),
                        keyword: UNREADABLE.into(),
                        message: message.clone(),
                    }],
                    ..Default::default()
                },
            })
            .collect();
        for r in answer.rejected {
            let line = batch.lines.get(r.index as usize).copied().unwrap_or(0);
            let errors = r
                .errors
                .into_iter()
                .map(|v| Violation {
                    instance_pointer: v.instance_pointer,
                    keyword: v.keyword,
                    message: v.message,
                })
                .collect();
            reports.push(RecordReport {
                line,
                outcome: RecordOutcome {
                    errors,
                    ..Default::default()
                },
            });
        }
        reports.sort_by_key(|r| r.line);
        if self.args.client.json {
            for r in reports {
                if t.rejections.len() >= MAX_JSON_REJECTIONS {
                    t.more_rejections += 1;
                    continue;
                }
                t.rejections.push(json!({
                    "line": r.line,
                    "batch": batch.number,
                    "errors": r.outcome.errors.iter().map(|v| json!({
                        "pointer": v.instance_pointer, "keyword": v.keyword, "message": v.message,
                    })).collect::<Vec<_>>(),
                }));
            }
        } else if !reports.is_empty() {
            self.progress.suspend(|| {
                if whole {
                    out!(
                        "batch {} (lines {}–{}) rejected whole; nothing of it was stored:",
                        batch.number,
                        batch.first_line,
                        batch.last_line
                    );
                }
                reports.iter().for_each(print_report);
            });
        }
        self.progress.set_position(t.records);
        self.progress.set_message(format!(
            "accepted {}  rejected {}",
            t.accepted,
            t.rejected + t.unreadable + t.not_stored
        ));
    }

    /// Sends every batch and settles each answer, retrying transient failures.
    async fn run(&mut self, mut client: Client, mut batches: mpsc::Receiver<Arc<Batch>>) -> CliResult {
        let mut queue: VecDeque<Slot> = VecDeque::new();
        let mut reader_done = false;
        let mut retry = Retry::new();
        loop {
            let failure = match self
                .attempt(&mut client, &mut queue, &mut batches, &mut reader_done, &mut retry)
                .await
            {
                Attempt::Done => return Ok(()),
                Attempt::Fatal(e) => return Err(self.failed(&queue, &e, false)),
                Attempt::Failed(status) => status,
            };
            if !is_transient(&failure) {
                return Err(self.failed(&queue, &explain(failure), false));
            }
            if let Err(e) = retry.wait(&explain(failure), &self.progress).await {
                return Err(self.failed(&queue, &e, true));
            }
            client = match retry.reconnect(&self.args.client, &self.progress).await {
                Ok(client) => client,
                Err(e) => return Err(self.failed(&queue, &e, true)),
            };
        }
    }

    /// One PublishStream call: first the batches not yet answered (with their keys), then new
    /// ones, at most --in-flight unanswered at a time.
    async fn attempt(
        &mut self,
        client: &mut Client,
        queue: &mut VecDeque<Slot>,
        batches: &mut mpsc::Receiver<Arc<Batch>>,
        reader_done: &mut bool,
        retry: &mut Retry,
    ) -> Attempt {
        let in_flight = self.args.in_flight as usize;
        // Holds at most the unanswered batches, so sending to it never waits.
        let (tx, rx) = mpsc::channel::<pb::PublishRequest>(in_flight + 1);
        for slot in queue.iter().filter(|s| s.answer.is_none()) {
            let _ = tx.try_send(self.request(&slot.batch));
        }
        // Closing the request stream once everything is sent lets the hub finish the call.
        let mut tx = if *reader_done { None } else { Some(tx) };
        let mut responses = match client.publish_stream(ReceiverStream::new(rx)).await {
            Ok(response) => response.into_inner(),
            Err(status) => return Attempt::Failed(status),
        };
        loop {
            let waiting = queue.iter().filter(|s| s.answer.is_none()).count();
            if *reader_done && waiting == 0 {
                self.drain(queue);
                return Attempt::Done;
            }
            tokio::select! {
                next = batches.recv(), if !*reader_done && waiting < in_flight => match next {
                    Some(batch) => {
                        let answer = if batch.changes.is_empty() {
                            // Nothing readable in it: nothing to send.
                            Some(pb::PublishResponse::default())
                        } else {
                            if let Some(tx) = &tx {
                                let _ = tx.try_send(self.request(&batch));
                            }
                            None
                        };
                        queue.push_back(Slot { batch, answer });
                        self.drain(queue);
                    }
                    None => {
                        *reader_done = true;
                        tx = None;
                    }
                },
                message = responses.message() => match message {
                    Ok(Some(answer)) => {
                        let Some(slot) = queue.iter_mut().find(|s| s.answer.is_none()) else {
                            return Attempt::Fatal("the hub answered a batch that was not sent".into());
                        };
                        if answer.idempotency_key != slot.batch.key {
                            return Attempt::Fatal(format!(
                                "the hub answered batch {} with the key {}",
                                slot.batch.number, answer.idempotency_key
                            ));
                        }
                        slot.answer = Some(answer);
                        self.drain(queue);
                        retry.reset();
                    }
                    Ok(None) => {
                        return Attempt::Failed(tonic::Status::unavailable(
                            "the hub ended the stream before answering every batch",
                        ));
                    }
                    Err(status) => return Attempt::Failed(status),
                }
            }
        }
    }

    /// Settles the answered batches at the front of the queue.
    fn drain(&mut self, queue: &mut VecDeque<Slot>) {
        while queue.front().is_some_and(|s| s.answer.is_some()) {
            if let Some(Slot {
                batch,
                answer: Some(answer),
            }) = queue.pop_front()
            {
                self.settle(&batch, answer);
            }
        }
    }

    /// The error that ended the run, with how far it got. `resumable`: the failure was transient
    /// (the retries ran out), so running the command again picks up where this one stopped.
    fn failed(&self, queue: &VecDeque<Slot>, error: &str, resumable: bool) -> String {
        let t = &self.tally;
        let mut text = error.to_string();
        if t.batches > 0 {
            let from = queue.front().map(|s| s.batch.first_line).unwrap_or(0);
            text.push_str(&format!(
                "\nthe first {} batches ({} records, {} accepted) were answered; from line {from} on, nothing is confirmed",
                t.batches, t.records, t.accepted
            ));
        }
        if resumable {
            text.push_str("\nrun the same command again to resume: committed batches are replayed, not written twice");
        }
        text
    }
}

/// The dataset's schema document, which the CSV reader needs to type the cells.
async fn schema_document(args: &PublishArgs, dataset: &pb::Dataset) -> CliResult<Value> {
    let mut schemas = SchemaServiceClient::new(args.client.channel().await?);
    let request = pb::GetSchemaRequest {
        subject: dataset.schema_subject.clone(),
        version: dataset.schema_version,
        include_deleted: true,
    };
    let schema = schemas.get_schema(request).await.map_err(explain)?.into_inner();
    serde_json::from_str(&schema.schema_json).map_err(|e| format!("the hub sent a schema that is not JSON: {e}"))
}

pub async fn run(args: PublishArgs) -> CliResult {
    let format = RecordFormat::of(&args.file, args.format);
    let mut client = exchange::connect(&args.client).await?;
    let dataset = client
        .get_dataset(pb::GetDatasetRequest {
            dataset: args.dataset.clone(),
        })
        .await
        .map_err(explain)?
        .into_inner();
    if dataset.kind == pb::DatasetKind::File as i32 {
        return Err(format!(
            "{} is a file dataset: upload files with `xinqiao file put`",
            dataset.dataset
        ));
    }
    let schema = if format == RecordFormat::Csv {
        schema_document(&args, &dataset).await?
    } else {
        Value::Null
    };
    let run_id = run_identity(&args, format)?;
    let reader = Reader {
        path: args.file.clone(),
        format,
        schema,
        run: run_id,
        batch: args.batch as usize,
        delete: args.delete,
    };
    let (sink, batches) = mpsc::channel(args.in_flight as usize * 2);
    let (opened, open_result) = oneshot::channel();
    let reading = tokio::task::spawn_blocking(move || reader.run(opened, sink));
    open_result.await.map_err(|_| "the file reader stopped".to_string())??;

    let progress = exchange::progress(
        args.quiet,
        None,
        "{spinner} {elapsed_precise}  {human_pos} records  {rate}  {msg}",
    );
    let started = Instant::now();
    let mut publisher = Publisher {
        args: &args,
        progress: progress.clone(),
        tally: Tally::default(),
    };
    let outcome = publisher.run(client, batches).await;
    progress.finish_and_clear();
    drop(publisher.progress);
    let _ = reading.await;
    outcome?;
    report(&args, &dataset, &hex(&run_id), &publisher.tally, started.elapsed())
}

fn lines_of(batches: &[(u64, u64, u64)]) -> Vec<String> {
    batches
        .iter()
        .map(|(number, first, last)| format!("batch {number} (lines {first}–{last})"))
        .collect()
}

/// The closing report; an error when any record was rejected or not stored.
fn report(args: &PublishArgs, dataset: &pb::Dataset, run: &str, t: &Tally, elapsed: std::time::Duration) -> CliResult {
    let rate = exchange::per_second(t.records, elapsed);
    let value = json!({
        "dataset": dataset.dataset,
        "file": args.file.display().to_string(),
        "run": run,
        "operation": if args.delete { "delete" } else { "upsert" },
        "policy": if args.accept_valid { "accept_valid" } else { "reject_all" },
        "records": t.records,
        "accepted": t.accepted,
        "rejected": t.rejected,
        "unreadable": t.unreadable,
        "not_stored": t.not_stored,
        "batches": t.batches,
        "replayed_batches": t.replayed,
        "replayed_accepted": t.replayed_accepted,
        "rejected_batches": t.rejected_batches.iter().map(|(number, first, last)| json!({
            "batch": number, "first_line": first, "last_line": last,
        })).collect::<Vec<_>>(),
        "elapsed_seconds": elapsed.as_secs_f64(),
        "records_per_second": rate,
        "rejections": t.rejections,
        "rejections_not_listed": t.more_rejections,
    });
    output::emit(args.client.json, value, || {
        let verb = if args.delete { "deletions" } else { "records" };
        out!(
            "published {} to {} (run {})",
            args.file.display(),
            dataset.dataset,
            &run[..16]
        );
        out!("  {:<20}{}", format!("{verb} read"), t.records);
        if t.replayed_accepted > 0 {
            out!(
                "  accepted            {}  ({} stored by an earlier run)",
                t.accepted,
                t.replayed_accepted
            );
        } else {
            out!("  accepted            {}", t.accepted);
        }
        out!("  rejected            {}", t.rejected);
        if t.unreadable > 0 {
            out!("  unreadable          {}  (not sent)", t.unreadable);
        }
        if t.not_stored > 0 {
            out!(
                "  not stored          {}  (valid, in batches rejected whole)",
                t.not_stored
            );
        }
        out!(
            "  batches             {}  ({} replayed: committed before, not written again)",
            t.batches,
            t.replayed
        );
        out!(
            "  elapsed             {:.1}s  ({rate:.0} records/s)",
            elapsed.as_secs_f64()
        );
        if !t.rejected_batches.is_empty() {
            let listed = lines_of(&t.rejected_batches[..t.rejected_batches.len().min(50)]);
            out!("  rejected whole:     {}", listed.join(", "));
            if t.rejected_batches.len() > 50 {
                out!(
                    "                      … and {} more batches",
                    t.rejected_batches.len() - 50
                );
            }
        }
    });
    let bad = t.rejected + t.unreadable;
    if bad == 0 && t.not_stored == 0 {
        return Ok(());
    }
    let mut message = format!("{bad} records rejected");
    if t.unreadable > 0 {
        message.push_str(&format!(" ({} could not be read)", t.unreadable));
    }
    if !t.rejected_batches.is_empty() {
        message.push_str(&format!(
            "; {} batches were rejected whole, leaving {} valid records unstored: fix the records and publish \
             again, or publish with --accept-valid",
            t.rejected_batches.len(),
            t.not_stored
        ));
    }
    Err(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batches(path: &std::path::Path, batch: usize, run: [u8; 32]) -> Vec<Arc<Batch>> {
        let reader = Reader {
            path: path.to_path_buf(),
            format: RecordFormat::Ndjson,
            schema: Value::Null,
            run,
            batch,
            delete: false,
        };
        let (opened, _) = oneshot::channel();
        let (sink, mut received) = mpsc::channel(100);
        reader.run(opened, sink);
        let mut out = Vec::new();
        while let Ok(b) = received.try_recv() {
            out.push(b);
        }
        out
    }

    #[test]
    fn batches_keep_lines_and_have_content_keys() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("records.ndjson");
        std::fs::write(&path, "{\"a\":1}\n\n{\"a\":2}\nnot json\n{\"a\":3}\n").expect("written");
        let first = batches(&path, 2, [1; 32]);
        assert_eq!(first.len(), 2);
        assert_eq!(first[0].lines, vec![1, 3]);
        assert_eq!((first[1].first_line, first[1].last_line), (4, 5));
        assert_eq!(first[1].lines, vec![5]);
        assert_eq!(first[1].unreadable.len(), 1);
        assert_eq!(first[1].unreadable[0].0, 4);
        assert_eq!(first[1].records, 2);

        // The same run and content give the same keys; another run, or changed content, new ones.
        let again = batches(&path, 2, [1; 32]);
        assert_eq!(first[0].key, again[0].key);
        let other = batches(&path, 2, [2; 32]);
        assert_ne!(first[0].key, other[0].key);
        std::fs::write(&path, "{\"a\":1}\n\n{\"a\":2}\nnot json\n{\"a\":4}\n").expect("written");
        let changed = batches(&path, 2, [1; 32]);
        assert_eq!(first[0].key, changed[0].key);
        assert_ne!(first[1].key, changed[1].key);
    }

    #[test]
    fn large_records_close_a_batch_early() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("records.ndjson");
        let big = "x".repeat(MAX_BATCH_BYTES / 2);
        let text = (0..5)
            .map(|i| format!("{{\"i\":{i},\"s\":\"{big}\"}}\n"))
            .collect::<String>();
        std::fs::write(&path, text).expect("written");
        let all = batches(&path, 500, [0; 32]);
        assert_eq!(
            all.iter().map(|b| b.changes.len()).collect::<Vec<_>>(),
            vec![1, 1, 1, 1, 1]
        );
        assert_eq!(
            all.iter().map(|b| b.first_line).collect::<Vec<_>>(),
            vec![1, 2, 3, 4, 5]
        );
    }
}
