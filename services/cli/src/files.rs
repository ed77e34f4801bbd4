//! `xinqiao file`: upload (resumable) and download (verified) the files of a file dataset.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Instant, UNIX_EPOCH};

use clap::{Args, Subcommand};
use indicatif::ProgressBar;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Status};
use xinqiao_proto::v1 as pb;

use crate::client::{ClientArgs, explain};
use crate::exchange::{self, Client, Retry, is_transient};
use crate::{CliResult, out, output};

/// Bytes per uploaded chunk.
const CHUNK: usize = 1024 * 1024;
const BAR: &str =
    "{spinner} {elapsed_precise} [{bar:30}] {binary_bytes}/{binary_total_bytes}  {binary_bytes_per_sec}  {msg}";

#[derive(Args)]
pub struct FileArgs {
    #[command(flatten)]
    client: ClientArgs,
    /// No progress bar.
    #[arg(short, long, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: FileCommand,
}

#[derive(Subcommand)]
enum FileCommand {
    /// Upload a file to a file dataset. An interrupted upload resumes where the hub stopped
    /// receiving: its id is kept in PATH.xinqiao-upload until the upload completes, and running
    /// the same command again continues it.
    Put {
        dataset: String,
        path: PathBuf,
        /// The file's name in the dataset [default: PATH's file name].
        #[arg(long)]
        name: Option<String>,
    },
    /// Download the current version of a file. It is written beside the target and moved into
    /// place only once its SHA-256 matches the hub's.
    Get {
        dataset: String,
        name: String,
        /// Where to write it [default: NAME in the current directory]; a directory means DIR/NAME.
        #[arg(short, long)]
        output: Option<PathBuf>,
        #[command(flatten)]
        read: exchange::ReadArgs,
    },
}

pub async fn run(args: FileArgs) -> CliResult {
    match &args.command {
        FileCommand::Put { dataset, path, name } => put(&args, dataset, path, name.as_deref()).await,
        FileCommand::Get {
            dataset,
            name,
            output,
            read,
        } => get(&args, dataset, name, output.as_deref(), read).await,
    }
}

/// What resuming an upload needs, kept beside the file.
#[derive(Serialize, Deserialize, PartialEq, Eq)]
struct UploadState {
    hub: String,
    dataset: String,
    file_name: String,
    size: u64,
    modified_ns: u64,
    sha256: String,
    upload_id: String,
}

fn state_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push(".xinqiao-upload");
    PathBuf::from(name)
}

fn read_state(path: &Path) -> Option<UploadState> {
    let text = std::fs::read_to_string(path).ok()?;
    serde_json::from_str(&text).ok()
}

fn remove_state(path: &Path) {
    if let Err(e) = std::fs::remove_file(path)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        eprintln!("warning: cannot remove {}: {e}", path.display());
    }
}

/// SHA-256 of a file, read on a blocking thread.
async fn hash_file(path: &Path, progress: &ProgressBar) -> CliResult<String> {
    let path = path.to_path_buf();
    let bar = progress.clone();
    let task = tokio::task::spawn_blocking(move || -> CliResult<String> {
        let fail = |e: std::io::Error| format!("cannot read {}: {e}", path.display());
        let mut file = std::fs::File::open(&path).map_err(fail)?;
        let mut hasher = Sha256::new();
        let mut buffer = vec![0u8; CHUNK];
        loop {
            let n = file.read(&mut buffer).map_err(fail)?;
            if n == 0 {
                break;
            }
            hasher.update(&buffer[..n]);
            bar.inc(n as u64);
        }
        Ok(hex(&hasher.finalize()))
    });
    task.await.map_err(|e| format!("hashing stopped: {e}"))?
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Sends the file from `offset` as chunks; the hub's answer once the stream ends, or (outer
/// error) why the file could not be read.
async fn send_from(
    client: &mut Client,
    path: &Path,
    upload_id: &str,
    offset: u64,
    size: u64,
    progress: &ProgressBar,
) -> CliResult<Result<pb::UploadStatus, Status>> {
    let (tx, rx) = mpsc::channel::<pb::FileChunk>(4);
    let path = path.to_path_buf();
    let id = upload_id.to_string();
    let bar = progress.clone();
    let reader = tokio::spawn(async move {
        let mut file = tokio::fs::File::open(&path).await?;
        file.seek(std::io::SeekFrom::Start(offset)).await?;
        let mut offset = offset;
        if offset >= size {
            // Every byte is there but the upload was not finished (the call that sent the last
            // chunk was cut off while the hub checked the digest): an empty chunk at the end
            // makes the hub finish it.
            let chunk = pb::FileChunk {
                upload_id: id.clone(),
                offset,
                data: Vec::new(),
            };
            let _ = tx.send(chunk).await;
        }
        while offset < size {
            let want = CHUNK.min((size - offset) as usize);
            let mut data = vec![0u8; want];
            let mut filled = 0;
            while filled < want {
                let n = file.read(&mut data[filled..]).await?;
                if n == 0 {
                    // The file shrank: the hub will not see it complete.
                    break;
                }
                filled += n;
            }
            data.truncate(filled);
            if data.is_empty() {
                break;
            }
            let length = data.len() as u64;
            let chunk = pb::FileChunk {
                upload_id: id.clone(),
                offset,
                data,
            };
            if tx.send(chunk).await.is_err() {
                break;
            }
            offset += length;
            bar.set_position(offset);
        }
        std::io::Result::Ok(())
    });
    let answer = client.upload_chunks(ReceiverStream::new(rx)).await;
    // The reader ends once the call has: its channel is closed.
    match reader.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(format!("cannot read the file: {e}")),
        Err(e) => return Err(format!("the file reader stopped: {e}")),
    }
    Ok(answer.map(tonic::Response::into_inner))
}

async fn put(args: &FileArgs, dataset: &str, path: &Path, name: Option<&str>) -> CliResult {
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if !meta.is_file() {
        return Err(format!("{} is not a file", path.display()));
    }
    let file_name = match name {
        Some(name) => name.to_string(),
        None => path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| format!("{} has no usable file name: give one with --name", path.display()))?
            .to_string(),
    };
    let size = meta.len();
    let modified_ns = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let state_file = state_path(path);
    let mut client = exchange::connect(&args.client).await?;
    let progress = exchange::progress(args.quiet, Some(size), BAR);
    let started = Instant::now();

    // Resume the upload named in the state file when it is for this same file.
    let mut resumed = None;
    if let Some(state) = read_state(&state_file) {
        let same = state.hub == args.client.hub
            && state.dataset == dataset
            && state.file_name == file_name
            && state.size == size
            && state.modified_ns == modified_ns;
        if same {
            let request = pb::GetUploadStatusRequest {
                upload_id: state.upload_id.clone(),
            };
            match client.get_upload_status(request).await {
                Ok(status) => resumed = Some((state, status.into_inner())),
                Err(status) if status.code() == Code::NotFound => {}
                Err(status) => return Err(explain(status)),
            }
        }
        if resumed.is_none() {
            progress.suspend(|| eprintln!("starting over: {} is for another upload", state_file.display()));
            remove_state(&state_file);
        }
    }
    let (state, mut status) = match resumed {
        Some((state, status)) => {
            progress.suspend(|| {
                eprintln!(
                    "resuming upload {} at {} of {} bytes",
                    state.upload_id, status.received, status.size
                )
            });
            (state, status)
        }
        None => {
            progress.set_message("hashing");
            let sha256 = hash_file(path, &progress).await?;
            progress.set_position(0);
            let request = pb::StartUploadRequest {
                dataset: dataset.to_string(),
                file_name: file_name.clone(),
                size,
                sha256: sha256.clone(),
            };
            let status = client.start_upload(request).await.map_err(explain)?.into_inner();
            let state = UploadState {
                hub: args.client.hub.clone(),
                dataset: dataset.to_string(),
                file_name: file_name.clone(),
                size,
                modified_ns,
                sha256,
                upload_id: status.upload_id.clone(),
            };
            let text = serde_json::to_string(&state).map_err(|e| e.to_string())?;
            if let Err(e) = std::fs::write(&state_file, text) {
                progress.suspend(|| {
                    eprintln!(
                        "warning: cannot write {} ({e}); an interrupted upload will start over",
                        state_file.display()
                    )
                });
            }
            (state, status)
        }
    };

    let mut retry = Retry::new();
    progress.set_message("uploading");
    while !status.complete {
        progress.set_position(status.received);
        let sent = send_from(&mut client, path, &state.upload_id, status.received, size, &progress)
            .await
            .map_err(|e| format!("{}: {e}", path.display()))?;
        match sent {
            Ok(answer) => {
                if !answer.complete && answer.received >= size {
                    return Err("the hub received every byte but did not complete the upload".into());
                }
                if !answer.complete && answer.received == status.received {
                    return Err(format!(
                        "{} changed while it was being uploaded (the hub has {} of {} bytes): run the command again",
                        path.display(),
                        answer.received,
                        size
                    ));
                }
                status = answer;
                retry.reset();
            }
            Err(failure) if is_transient(&failure) => {
                retry.wait(&explain(failure), &progress).await?;
                client = retry.reconnect(&args.client, &progress).await?;
                let request = pb::GetUploadStatusRequest {
                    upload_id: state.upload_id.clone(),
                };
                match client.get_upload_status(request).await {
                    Ok(s) => {
                        status = s.into_inner();
                        let at = status.received;
                        progress.suspend(|| eprintln!("resuming at {at} of {size} bytes"));
                    }
                    Err(s) if is_transient(&s) => continue,
                    Err(s) => return Err(explain(s)),
                }
            }
            Err(failure) => {
                progress.finish_and_clear();
                if failure.code() == Code::FailedPrecondition && failure.message().contains("SHA-256") {
                    // The bytes the hub holds are not this file: the upload cannot be resumed.
                    remove_state(&state_file);
                }
                return Err(explain(failure));
            }
        }
    }
    progress.finish_and_clear();
    remove_state(&state_file);
    let elapsed = started.elapsed();
    let value = json!({
        "dataset": status.dataset, "file_name": status.file_name, "size": status.size,
        "sha256": state.sha256, "sequence": status.sequence, "upload_id": status.upload_id,
        "elapsed_seconds": elapsed.as_secs_f64(),
    });
    output::emit(args.client.json, value, || {
        out!(
            "uploaded {} to {} as '{}': {} bytes, SHA-256 {}, sequence {} ({:.1}s)",
            path.display(),
            status.dataset,
            status.file_name,
            status.size,
            state.sha256,
            status.sequence,
            elapsed.as_secs_f64()
        )
    });
    Ok(())
}

/// Streams one download into a temporary file beside the target; the verified temporary file.
/// What a download has received so far: kept across reconnections, so that a broken download
/// resumes where it stopped instead of from the first byte.
struct Partial {
    temp: tempfile::NamedTempFile,
    hasher: Sha256,
    received: u64,
    /// The file's size and SHA-256, from the first answer.
    expected: Option<(u64, String)>,
}

impl Partial {
    fn new(dir: &Path) -> Result<Partial, String> {
        let temp = tempfile::Builder::new()
            .prefix(".xinqiao-")
            .suffix(".part")
            .tempfile_in(dir)
            .map_err(|e| format!("cannot write in {}: {e}", dir.display()))?;
        Ok(Partial {
            temp,
            hasher: Sha256::new(),
            received: 0,
            expected: None,
        })
    }
}

/// Downloads into `partial`, from the bytes it already holds. `Err(status)` for a broken
/// connection (worth a retry, which resumes); `Ok(Err(..))` for a download that cannot succeed.
async fn download(
    client: &mut Client,
    dataset: &str,
    name: &str,
    read: &exchange::ReadArgs,
    dir: &Path,
    partial: &mut Partial,
    progress: &ProgressBar,
) -> Result<Result<(u64, String), String>, Status> {
    let request = pb::DownloadFileRequest {
        dataset: dataset.to_string(),
        file_name: name.to_string(),
        purpose: read.purpose(),
        grant_id: read.grant_id(),
        offset: partial.received,
    };
    let mut stream = client.download_file(request).await?.into_inner();
    let mut first = true;
    {
        let mut writer = std::io::BufWriter::with_capacity(1 << 20, partial.temp.as_file_mut());
        while let Some(message) = stream.message().await? {
            if first {
                first = false;
                let now = (message.size, message.sha256.to_ascii_lowercase());
                match &partial.expected {
                    None => partial.expected = Some(now),
                    // A new version of the file replaced the one being resumed: its first
                    // bytes are not these.
                    Some(before) if *before != now => {
                        return Ok(Err(format!(
                            "{name} changed on the hub during the download; run the command again"
                        )));
                    }
                    Some(_) => {}
                }
                progress.set_length(message.size);
            }
            partial.hasher.update(&message.data);
            if let Err(e) = writer.write_all(&message.data) {
                return Ok(Err(format!("cannot write in {}: {e}", dir.display())));
            }
            partial.received += message.data.len() as u64;
            progress.set_position(partial.received);
        }
        if let Err(e) = writer.flush() {
            return Ok(Err(format!("cannot write in {}: {e}", dir.display())));
        }
    }
    let Some((size, sha256)) = partial.expected.clone() else {
        return Err(Status::unavailable("the download ended before its first message"));
    };
    if partial.received < size {
        return Err(Status::unavailable(format!(
            "the download ended after {} of {size} bytes",
            partial.received
        )));
    }
    let actual = hex(&partial.hasher.clone().finalize());
    if partial.received != size {
        return Ok(Err(format!(
            "received {} bytes of a {size}-byte file",
            partial.received
        )));
    }
    if actual != sha256 {
        return Ok(Err(format!(
            "the received bytes have SHA-256 {actual}, not the hub's {sha256}"
        )));
    }
    if let Err(e) = partial.temp.as_file().sync_all() {
        return Ok(Err(format!("cannot write in {}: {e}", dir.display())));
    }
    Ok(Ok((size, actual)))
}

async fn get(
    args: &FileArgs,
    dataset: &str,
    name: &str,
    output: Option<&Path>,
    read: &exchange::ReadArgs,
) -> CliResult {
    // The default target is NAME here; only its last component, whatever the hub allows.
    let plain = Path::new(name)
        .file_name()
        .map(PathBuf::from)
        .ok_or_else(|| format!("'{name}' is not a file name: give a target with -o"))?;
    let target = match output {
        Some(path) if path.is_dir() => path.join(&plain),
        Some(path) => path.to_path_buf(),
        None => plain,
    };
    let dir = match target.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut client = exchange::connect(&args.client).await?;
    let progress = exchange::progress(args.quiet, Some(0), BAR);
    let started = Instant::now();
    let mut retry = Retry::new();
    let mut partial = Partial::new(&dir)?;
    let (size, sha256) = loop {
        match download(&mut client, dataset, name, read, &dir, &mut partial, &progress).await {
            Ok(Ok(done)) => break done,
            Ok(Err(e)) => {
                progress.finish_and_clear();
                return Err(e);
            }
            Err(status) if is_transient(&status) => {
                retry.wait(&explain(status), &progress).await?;
                client = retry.reconnect(&args.client, &progress).await?;
            }
            Err(status) => {
                progress.finish_and_clear();
                return Err(exchange::explain_read(status));
            }
        }
    };
    progress.finish_and_clear();
    let temp = partial.temp;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = temp.as_file().set_permissions(std::fs::Permissions::from_mode(0o644));
    }
    temp.persist(&target)
        .map_err(|e| format!("cannot move the download to {}: {}", target.display(), e.error))?;
    let elapsed = started.elapsed();
    let value = json!({
        "dataset": dataset, "file_name": name, "path": target.display().to_string(), "size": size,
        "sha256": sha256, "elapsed_seconds": elapsed.as_secs_f64(),
    });
    output::emit(args.client.json, value, || {
        out!(
            "downloaded '{name}' from {dataset} to {}: {size} bytes, SHA-256 {sha256} verified ({:.1}s)",
            target.display(),
            elapsed.as_secs_f64()
        )
    });
    Ok(())
}
