//! Checkpoints off the writer's path. The writer never checkpoints (`wal_autocheckpoint = 0`);
//! this thread copies committed WAL frames into the database file every few hundred
//! milliseconds with a PASSIVE checkpoint, which does not block the writer, so commits (and
//! the publishes waiting on them) never pay for it.

use super::open_connection;
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::Duration;

const INTERVAL: Duration = Duration::from_millis(200);

pub struct Checkpointer {
    stop: Sender<()>,
    thread: JoinHandle<()>,
}

impl Checkpointer {
    pub fn start(path: PathBuf, durable: bool) -> std::io::Result<Checkpointer> {
        let (stop, stopped) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new().name("tern-store-checkpoint".into()).spawn(move || {
            match open_connection(&path, durable) {
                Ok(connection) => run(&connection, &stopped),
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

fn run(connection: &rusqlite::Connection, stopped: &Receiver<()>) {
    loop {
        let last = matches!(stopped.recv_timeout(INTERVAL), Ok(()) | Err(RecvTimeoutError::Disconnected));
        let result = connection.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| row.get::<_, i64>(0));
        if let Err(error) = result {
            tracing::warn!(%error, "checkpoint failed; it is tried again");
        }
        if last {
            return;
        }
    }
}
