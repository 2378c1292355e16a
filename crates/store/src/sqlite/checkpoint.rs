//! Checkpoints off the writer's path. The writer never checkpoints on its own
//! (`wal_autocheckpoint = 0`); this thread copies committed WAL frames into the database file
//! every few hundred milliseconds with a PASSIVE checkpoint, which does not block the writer,
//! so commits (and the publishes waiting on them) do not pay for it.
//!
//! Under a steady stream of commits a PASSIVE checkpoint never reaches the WAL's end (more
//! frames land while it copies), and SQLite starts the WAL over from its beginning only after
//! a checkpoint that did. The WAL then grows for as long as the load lasts — a gigabyte in a
//! dozen seconds at full speed — and every commit writes fresh file pages, which the kernel
//! allocates and zeroes. So once the WAL is long, this thread asks the writer to [`CatchUp`]:
//! between two batches, with no commit in flight, the writer checkpoints the few frames left
//! since the last background checkpoint, and its next commit starts the WAL over.

use super::open_connection;
use rusqlite::Connection;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::Duration;

const INTERVAL: Duration = Duration::from_millis(200);
/// WAL frames (4 KiB pages) past which the writer catches up at its next idle moment (64 MiB).
/// A catch-up takes a few to a few tens of milliseconds (the database file's fsync); the
/// commits arriving meanwhile wait, so it is kept to about one per second at full load.
const CATCH_UP_WHEN_IDLE: i64 = 16_384;
/// WAL frames past which it catches up after its next batch, idle or not (256 MiB), which
/// bounds the WAL however busy the writer stays. `journal_size_limit` is above this, so the
/// WAL file is reused as it is, never shrunk and regrown.
const CATCH_UP_NOW: i64 = 65_536;

/// What the checkpoint thread asks of the writer, from how long the WAL was at its last look.
#[derive(Default)]
pub struct CatchUp(AtomicU8);

const NOT_NEEDED: u8 = 0;
const WHEN_IDLE: u8 = 1;
const NOW: u8 = 2;

impl CatchUp {
    fn ask(&self, wal_frames: i64) {
        let level = match wal_frames {
            frames if frames > CATCH_UP_NOW => NOW,
            frames if frames > CATCH_UP_WHEN_IDLE => WHEN_IDLE,
            _ => NOT_NEEDED,
        };
        self.0.store(level, Ordering::Relaxed);
    }

    /// The writer's side, after a batch's callers have their answers: checkpoints what the
    /// background checkpoint left, if asked to. Should a reader still hold an older snapshot,
    /// the WAL is not started over this time; the checkpoint thread then asks again.
    pub fn run_if_asked(&self, connection: &Connection, writer_idle: bool) {
        let level = self.0.load(Ordering::Relaxed);
        if level == NOW || (level == WHEN_IDLE && writer_idle) {
            self.0.store(NOT_NEEDED, Ordering::Relaxed);
            if let Err(error) = passive_checkpoint(connection) {
                tracing::warn!(%error, "the writer's checkpoint failed; it is tried again");
            }
        }
    }
}

pub struct Checkpointer {
    stop: Sender<()>,
    thread: JoinHandle<()>,
}

impl Checkpointer {
    pub fn start(path: PathBuf, durable: bool, catch_up: Arc<CatchUp>) -> std::io::Result<Checkpointer> {
        let (stop, stopped) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new().name("tern-store-checkpoint".into()).spawn(move || {
            match open_connection(&path, durable) {
                Ok(connection) => run(&connection, &stopped, &catch_up),
                Err(error) => tracing::error!(%error, "the checkpoint thread cannot open the database"),
            }
        })?;
        Ok(Checkpointer { stop, thread })
    }

    /// Stops after one last checkpoint.
    pub fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.thread.join();
    }
}

fn run(connection: &Connection, stopped: &Receiver<()>, catch_up: &CatchUp) {
    loop {
        let last = matches!(stopped.recv_timeout(INTERVAL), Ok(()) | Err(RecvTimeoutError::Disconnected));
        // When the writer is to be asked, a second checkpoint right away leaves it only the
        // frames committed while that one ran, so its catch-up holds up commits briefly.
        let checkpoint = passive_checkpoint(connection)
            .and_then(|frames| if frames > CATCH_UP_WHEN_IDLE { passive_checkpoint(connection) } else { Ok(frames) });
        match checkpoint {
            Ok(wal_frames) => catch_up.ask(wal_frames),
            Err(error) => tracing::warn!(%error, "checkpoint failed; it is tried again"),
        }
        if last {
            return;
        }
    }
}

/// Runs a PASSIVE checkpoint and returns how many frames the WAL holds.
fn passive_checkpoint(connection: &Connection) -> rusqlite::Result<i64> {
    connection.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| row.get::<_, i64>(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer, the checkpoint thread's connection and a reader, as the store has them.
    struct Database {
        _directory: tempfile::TempDir,
        writer: Connection,
        checkpointer: Connection,
        reader: Connection,
    }

    impl Database {
        fn open() -> Database {
            let directory = tempfile::tempdir().expect("temporary directory");
            let path = directory.path().join("wal.sqlite3");
            let writer = open_connection(&path, false).expect("open");
            writer.pragma_update(None, "wal_autocheckpoint", 0).expect("pragma");
            writer.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, body BLOB)", []).expect("create");
            let checkpointer = open_connection(&path, false).expect("open");
            let reader = open_connection(&path, false).expect("open");
            Database { _directory: directory, writer, checkpointer, reader }
        }

        fn write(&self, rows: usize) {
            for _ in 0..rows {
                self.writer.execute("INSERT INTO t (body) VALUES (zeroblob(3000))", []).expect("insert");
            }
        }

        /// A background checkpoint while commits land, as under load: it copies what a reader
        /// still sees, not the commits after it. Returns the WAL's length in frames.
        fn background_checkpoint_under_load(&self) -> i64 {
            self.reader.execute_batch("BEGIN").expect("begin");
            self.reader.query_row("SELECT count(*) FROM t", [], |row| row.get::<_, i64>(0)).expect("read");
            self.write(5);
            let frames = passive_checkpoint(&self.checkpointer).expect("checkpoint");
            self.reader.execute_batch("COMMIT").expect("commit");
            frames
        }
    }

    #[test]
    fn under_load_only_the_writer_catching_up_starts_the_wal_over() {
        let database = Database::open();
        let catch_up = CatchUp::default();
        database.write(50);
        let before = database.background_checkpoint_under_load();
        database.write(1);
        let grown = database.background_checkpoint_under_load();
        assert!(grown > before, "background checkpoints alone let the WAL grow: {before} → {grown}");

        catch_up.ask(CATCH_UP_NOW + 1);
        catch_up.run_if_asked(&database.writer, false);
        database.write(1);
        let restarted = database.background_checkpoint_under_load();
        assert!(restarted < before, "the commit after a catch-up starts the WAL over: {restarted} frames");
    }

    #[test]
    fn a_long_wal_waits_for_an_idle_writer_and_a_very_long_one_does_not() {
        let database = Database::open();
        let catch_up = CatchUp::default();
        database.write(50);
        let mut frames = database.background_checkpoint_under_load();

        catch_up.ask(CATCH_UP_WHEN_IDLE + 1);
        catch_up.run_if_asked(&database.writer, false);
        database.write(1);
        let busy = database.background_checkpoint_under_load();
        assert!(busy > frames, "a busy writer does not catch up yet: {frames} → {busy}");
        catch_up.run_if_asked(&database.writer, true);
        database.write(1);
        frames = database.background_checkpoint_under_load();
        assert!(frames < busy, "an idle writer catches up: {busy} → {frames}");

        database.write(50);
        let short = database.background_checkpoint_under_load();
        catch_up.ask(CATCH_UP_WHEN_IDLE - 1);
        catch_up.run_if_asked(&database.writer, true);
        database.write(1);
        let left = database.background_checkpoint_under_load();
        assert!(left > short, "a short WAL is left to the background checkpoint: {short} → {left}");
    }
}
