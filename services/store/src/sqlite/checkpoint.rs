//! Checkpoints of the write-ahead log, off the writer's path.
//!
//! By default SQLite checkpoints inside the commit that takes the log past 1,000 pages: that
//! commit syncs the log, copies it into the database file and syncs that (about 13 ms on the
//! development machine), and every write queued behind the one writer waits with it. Under a
//! steady stream of audited calls that happened several times a second and was the whole p99 of
//! an interface call (README Performance, B8). So a thread of the store's own checkpoints the log
//! every [`EVERY`] in PASSIVE mode, which never blocks the writer or the readers (it copies what
//! no reader still needs, and the writer starts the log over once all of it is copied), and the
//! writer's own checkpoint is left as a backstop for a log that outgrows [`BACKSTOP_PAGES`] (a
//! checkpointer that fell behind or stopped).

use std::path::Path;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

/// How often the log is checkpointed.
const EVERY: Duration = Duration::from_millis(200);
/// The writer checkpoints by itself past this many pages of log (64 MiB at 4 KiB a page).
pub(super) const BACKSTOP_PAGES: u32 = 16_384;

/// The checkpointing thread; stopped (and joined) by [`Checkpointer::stop`] or when dropped.
#[derive(Debug)]
pub(super) struct Checkpointer {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    /// Starts checkpointing the database at `path`, which the writer has already opened in WAL
    /// mode. A connection that cannot be opened leaves the writer's own checkpoints in charge.
    pub(super) fn start(path: &Path) -> Checkpointer {
        let conn = match Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        ) {
            Ok(conn) => conn,
            Err(e) => {
                tracing::warn!(error = %e, "cannot open the database for checkpoints; the writer checkpoints");
                return Checkpointer {
                    stop: None,
                    thread: None,
                };
            }
        };
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || {
                // A sender dropped or a stop sent both end the loop.
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(EVERY) {
                    // PASSIVE: as much as can be copied without waiting for anyone. A busy
                    // database or a full disk is tried again next time; the backstop remains.
                    if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                        tracing::debug!(error = %e, "a checkpoint of the write-ahead log failed");
                    }
                }
            });
        match thread {
            Ok(thread) => Checkpointer {
                stop: Some(stop),
                thread: Some(thread),
            },
            Err(e) => {
                tracing::warn!(error = %e, "cannot start the checkpoint thread; the writer checkpoints");
                Checkpointer {
                    stop: None,
                    thread: None,
                }
            }
        }
    }

    /// Stops the thread and closes its connection, so that the store's last connection can
    /// checkpoint and remove the log.
    pub(super) fn stop(&mut self) {
        self.stop.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_is_copied_into_the_database_without_the_writer_doing_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hub.db");
        let writer = Connection::open(&path).unwrap();
        writer.pragma_update(None, "journal_mode", "WAL").unwrap();
        // The writer never checkpoints: pages reach the database file only through the thread.
        writer.pragma_update(None, "wal_autocheckpoint", 0).unwrap();
        writer.execute_batch("CREATE TABLE t (x BLOB)").unwrap();
        let written = 50 * 8192;
        for _ in 0..50 {
            writer.execute("INSERT INTO t VALUES (zeroblob(8192))", []).unwrap();
        }
        let size = || std::fs::metadata(&path).unwrap().len();
        assert!(size() < written, "nothing is in the database file before a checkpoint");
        let mut checkpointer = Checkpointer::start(&path);
        let mut copied = false;
        for _ in 0..50 {
            std::thread::sleep(EVERY);
            if size() >= written {
                copied = true;
                break;
            }
        }
        checkpointer.stop();
        assert!(
            copied,
            "the log was not copied into the database file ({} bytes)",
            size()
        );
        assert_eq!(
            writer
                .query_row("SELECT count(*) FROM t", [], |r| r.get::<_, i64>(0))
                .unwrap(),
            50
        );
    }
}
