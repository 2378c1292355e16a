//! Makes committed batches durable off the writer's path.
//!
//! With `synchronous=FULL` every commit waits for an fsync of the WAL inside the writer, and
//! nothing else gets written meanwhile: at C = 32 two thirds of the writer's time per batch
//! went to the commit, most of it that wait. So the writer commits with `synchronous=NORMAL`
//! (SQLite writes the WAL frames and does not sync them) and hands the batch here; this thread
//! syncs the WAL file once for every batch committed since its last sync, and only then tells
//! the scheduler what changed and answers the callers. The writer meanwhile applies and commits
//! the next batch, so fsync and the work of the following batch overlap.
//!
//! Why this is as durable as `FULL`: a caller hears back only after an `fdatasync` of the WAL
//! that began after its batch's frames were written. After a crash SQLite recovers the WAL's
//! frames up to the last whole commit whose checksums hold, so every synced commit is
//! recovered, and a commit written later cannot be recovered without the ones before it.
//! Checkpoints and WAL restarts keep their own syncs under `NORMAL` (the WAL before a
//! checkpoint, the database file after it, the WAL header when the file is reused).
//!
//! Readers can see a batch between its commit and its sync (a log search, say); should the
//! machine lose power right then, what they saw may be gone, but nobody was told it was stored:
//! callers hear back after the sync, and the scheduler, too, learns of a batch's messages only
//! once they are durable. A cancel (also a queue delete's), the one write that asks the
//! scheduler about running attempts, first waits until every earlier batch has landed
//! ([`Syncer::wait_landed`]). A failed sync is final: from then on every write fails until
//! tern is restarted ([`land`] says why).

use super::writer::Pending;
use crate::error::StoreError;
use crate::model::{Change, Scheduling};
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;

/// A committed (or rolled back) batch, waiting to be made durable and reported.
pub struct Committed {
    pub scheduling: Option<Arc<dyn Scheduling>>,
    /// What the scheduler learns: the batch's changes (none if it was rolled back).
    pub changes: Vec<Change>,
    pub answers: Vec<Pending>,
    pub commit: Result<(), StoreError>,
}

enum Job {
    Land(Committed),
    /// Answered once everything handed over before it has landed.
    Barrier(Sender<()>),
}

pub struct Syncer {
    jobs: Sender<Job>,
    thread: JoinHandle<()>,
    failure: Arc<OnceLock<StoreError>>,
}

impl Syncer {
    /// `wal`: the WAL file to sync, or `None` when the store is not durable.
    pub fn start(wal: Option<PathBuf>) -> std::io::Result<Syncer> {
        match wal {
            Some(path) => {
                let mut wal = WalFile::new(path);
                Self::start_with(move || wal.sync())
            }
            None => Self::start_with(|| Ok(())),
        }
    }

    pub(super) fn start_with(sync: impl FnMut() -> std::io::Result<()> + Send + 'static) -> std::io::Result<Syncer> {
        let (jobs, received) = std::sync::mpsc::channel();
        let failure = Arc::new(OnceLock::new());
        let failed = Arc::clone(&failure);
        let thread =
            std::thread::Builder::new().name("tern-store-sync".into()).spawn(move || run(&received, sync, &failed))?;
        Ok(Syncer { jobs, thread, failure })
    }

    /// Why the store refuses writes, once a sync has failed (see [`land`]).
    pub fn failure(&self) -> Option<StoreError> {
        self.failure.get().cloned()
    }

    /// Queues a batch to be synced and reported. Should this thread be gone (it never ends
    /// before the writer), the batch's callers get an error.
    pub fn hand_over(&self, batch: Committed) {
        if let Err(std::sync::mpsc::SendError(Job::Land(batch))) = self.jobs.send(Job::Land(batch)) {
            land(batch, Some(&StoreError::Unavailable("the store's sync thread has stopped".to_string())));
        }
    }

    /// Returns once every batch handed over so far has been synced and reported.
    pub fn wait_landed(&self) {
        let (done, landed) = std::sync::mpsc::channel();
        if self.jobs.send(Job::Barrier(done)).is_ok() {
            let _ = landed.recv();
        }
    }

    /// Lands what is queued, then ends the thread.
    pub fn stop(self) {
        drop(self.jobs);
        let _ = self.thread.join();
    }
}

/// The WAL file, opened on first use (SQLite creates it) and again should it be replaced.
struct WalFile {
    path: PathBuf,
    open: Option<(File, u64)>,
}

impl WalFile {
    fn new(path: PathBuf) -> WalFile {
        WalFile { path, open: None }
    }

    fn sync(&mut self) -> std::io::Result<()> {
        // SQLite keeps the WAL file while any connection is open, so the inode stays the same;
        // the check costs one stat and covers a file replaced anyway.
        let inode = std::fs::metadata(&self.path)?.ino();
        if self.open.as_ref().is_none_or(|(_, open_inode)| *open_inode != inode) {
            let file = File::open(&self.path)?;
            let opened = file.metadata()?.ino();
            self.open = Some((file, opened));
        }
        let (file, _) = self.open.as_ref().expect("opened above");
        file.sync_data()
    }
}

fn run(jobs: &Receiver<Job>, mut sync: impl FnMut() -> std::io::Result<()>, failure: &OnceLock<StoreError>) {
    while let Ok(first) = jobs.recv() {
        let mut group = vec![first];
        group.extend(jobs.try_iter());
        let needs_sync = group.iter().any(|job| matches!(job, Job::Land(batch) if batch.commit.is_ok()));
        let started = std::time::Instant::now();
        if needs_sync
            && failure.get().is_none()
            && let Err(error) = sync()
        {
            tracing::error!(%error, "the WAL could not be synced: tern refuses every write until it is restarted");
            let _ = failure.set(StoreError::Unavailable(format!("the store could not sync its log to disk ({error})")));
        }
        let (batches, synced) = (group.len(), started.elapsed());
        for job in group {
            match job {
                Job::Land(batch) => land(batch, failure.get()),
                Job::Barrier(done) => {
                    let _ = done.send(());
                }
            }
        }
        tracing::trace!(
            batches,
            sync_micros = synced.as_micros() as u64,
            land_micros = (started.elapsed() - synced).as_micros() as u64,
            "synced and landed"
        );
    }
}

/// Reports a batch once it is durable: the scheduler first, so that a published message is
/// known to it before its publisher hears back. After a failed sync nothing is reported any
/// more and every caller gets the error: Linux reports a failed writeback only once and
/// forgets the pages, so frames that did not reach the disk never will, and after a crash
/// every commit after them is lost too, however well its own sync went. Only a restart (which
/// recovers the WAL up to the hole) makes writes trustworthy again.
fn land(batch: Committed, failure: Option<&StoreError>) {
    let outcome = match (failure, batch.commit) {
        (Some(error), _) => Err(error.clone()),
        (None, commit) => {
            if let Some(scheduling) = &batch.scheduling
                && commit.is_ok()
                && !batch.changes.is_empty()
            {
                scheduling.committed(batch.changes);
            }
            commit
        }
    };
    for answer in batch.answers {
        answer.send(&outcome);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::sync::mpsc::channel;
    use std::time::Duration;
    use tern_core::MessageId;
    use tokio::sync::oneshot;

    /// Records what the scheduler was told.
    #[derive(Default)]
    struct Recorder(Mutex<Vec<MessageId>>);

    impl Scheduling for Recorder {
        fn committed(&self, changes: Vec<Change>) {
            let mut seen = self.0.lock().unwrap();
            seen.extend(changes.iter().filter_map(|change| match change {
                Change::Finished { id } => Some(*id),
                _ => None,
            }));
        }
        fn hold_for_cancel(&self, _: MessageId) -> bool {
            false
        }
        fn release_hold(&self, _: MessageId) {}
    }

    /// A sync that waits for the test's go-ahead and counts how often it ran.
    fn gated_sync(result: fn() -> std::io::Result<()>) -> (Syncer, Sender<()>, Arc<Mutex<usize>>, Receiver<()>) {
        let (go, gate) = channel::<()>();
        let (entered, syncing) = channel::<()>();
        let count = Arc::new(Mutex::new(0));
        let counted = Arc::clone(&count);
        let syncer = Syncer::start_with(move || {
            let _ = entered.send(());
            gate.recv().expect("the test lets the sync finish");
            *counted.lock().unwrap() += 1;
            result()
        })
        .expect("start");
        (syncer, go, count, syncing)
    }

    fn batch(
        scheduler: &Arc<Recorder>,
        commit: Result<(), StoreError>,
    ) -> (Committed, MessageId, oneshot::Receiver<crate::Result<()>>) {
        let id = MessageId::generate();
        let (reply, answer) = oneshot::channel();
        let scheduling: Arc<dyn Scheduling> = scheduler.clone();
        let committed = Committed {
            scheduling: Some(scheduling),
            changes: vec![Change::Finished { id }],
            answers: vec![Pending::Unit(reply, Ok(()))],
            commit,
        };
        (committed, id, answer)
    }

    fn wait_answer(mut answer: oneshot::Receiver<crate::Result<()>>) -> crate::Result<()> {
        for _ in 0..2_000 {
            match answer.try_recv() {
                Ok(result) => return result,
                Err(oneshot::error::TryRecvError::Empty) => std::thread::sleep(Duration::from_millis(1)),
                Err(error) => panic!("no answer: {error}"),
            }
        }
        panic!("no answer within 2 s")
    }

    #[test]
    fn callers_and_the_scheduler_hear_of_a_batch_only_after_its_sync() {
        let scheduler = Arc::new(Recorder::default());
        let (syncer, go, count, syncing) = gated_sync(|| Ok(()));
        let (committed, id, mut answer) = batch(&scheduler, Ok(()));
        syncer.hand_over(committed);
        syncing.recv().expect("the sync started");
        assert!(matches!(answer.try_recv(), Err(oneshot::error::TryRecvError::Empty)), "answered before the sync");
        assert!(scheduler.0.lock().unwrap().is_empty(), "the scheduler heard before the sync");

        go.send(()).unwrap();
        assert!(wait_answer(answer).is_ok());
        assert_eq!(*scheduler.0.lock().unwrap(), vec![id]);
        assert_eq!(*count.lock().unwrap(), 1);
        syncer.stop();
    }

    #[test]
    fn batches_committed_during_a_sync_share_the_next_one_and_land_in_order() {
        let scheduler = Arc::new(Recorder::default());
        let (syncer, go, count, syncing) = gated_sync(|| Ok(()));
        let (first, first_id, first_answer) = batch(&scheduler, Ok(()));
        syncer.hand_over(first);
        syncing.recv().expect("the first sync started");
        let (second, second_id, second_answer) = batch(&scheduler, Ok(()));
        let (third, third_id, third_answer) = batch(&scheduler, Ok(()));
        syncer.hand_over(second);
        syncer.hand_over(third);
        go.send(()).unwrap();
        assert!(wait_answer(first_answer).is_ok());
        syncing.recv().expect("the second sync started");
        go.send(()).unwrap();
        assert!(wait_answer(second_answer).is_ok() && wait_answer(third_answer).is_ok());
        assert_eq!(*count.lock().unwrap(), 2, "one sync for the two batches committed during the first");
        assert_eq!(*scheduler.0.lock().unwrap(), vec![first_id, second_id, third_id]);
        syncer.stop();
    }

    #[test]
    fn a_rolled_back_batch_needs_no_sync() {
        let scheduler = Arc::new(Recorder::default());
        let (syncer, _go, count, _syncing) = gated_sync(|| Ok(()));
        let (rolled_back, _, answer) = batch(&scheduler, Err(StoreError::Backend("rolled back".into())));
        syncer.hand_over(rolled_back);
        assert!(wait_answer(answer).unwrap_err().to_string().contains("rolled back"));
        assert_eq!(*count.lock().unwrap(), 0, "nothing committed, nothing to sync");
        assert!(scheduler.0.lock().unwrap().is_empty(), "the scheduler hears of nothing rolled back");
        syncer.stop();
    }

    #[test]
    fn a_failed_sync_is_final() {
        let scheduler = Arc::new(Recorder::default());
        let (syncer, go, count, syncing) = gated_sync(|| Err(std::io::Error::other("disk gone")));
        let (committed, _, answer) = batch(&scheduler, Ok(()));
        syncer.hand_over(committed);
        syncing.recv().expect("the sync started");
        go.send(()).unwrap();
        let error = wait_answer(answer).expect_err("the sync failed");
        assert!(error.to_string().contains("disk gone"), "{error}");
        assert!(syncer.failure().is_some_and(|failure| failure.to_string().contains("disk gone")));

        // Later commits are not trusted however their own sync would go: the frames lost
        // before them make them unrecoverable after a crash.
        let (later, _, answer) = batch(&scheduler, Ok(()));
        syncer.hand_over(later);
        assert!(wait_answer(answer).unwrap_err().to_string().contains("disk gone"));
        assert_eq!(*count.lock().unwrap(), 1, "no sync after the failed one");
        assert!(scheduler.0.lock().unwrap().is_empty(), "the scheduler hears of nothing that may be lost");
        syncer.stop();
    }

    #[test]
    fn waiting_for_landed_batches_returns_after_they_are_reported() {
        let scheduler = Arc::new(Recorder::default());
        let (syncer, go, _count, syncing) = gated_sync(|| Ok(()));
        let (committed, id, _answer) = batch(&scheduler, Ok(()));
        syncer.hand_over(committed);
        syncing.recv().expect("the sync started");
        let syncer = Arc::new(syncer);
        let waiter = std::thread::spawn({
            let syncer = Arc::clone(&syncer);
            move || syncer.wait_landed()
        });
        std::thread::sleep(Duration::from_millis(50));
        assert!(!waiter.is_finished(), "returned while a batch was still syncing");
        go.send(()).unwrap();
        waiter.join().unwrap();
        assert_eq!(*scheduler.0.lock().unwrap(), vec![id]);
    }

    #[test]
    fn the_wal_file_is_synced_by_path() {
        let directory = tempfile::tempdir().expect("temporary directory");
        let path = directory.path().join("x.sqlite3-wal");
        let mut wal = WalFile::new(path.clone());
        assert!(wal.sync().is_err(), "no file yet");
        std::fs::write(&path, b"frames").unwrap();
        wal.sync().expect("sync");
        // A replaced file is opened again.
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, b"new frames").unwrap();
        let before = wal.open.as_ref().map(|(_, inode)| *inode);
        wal.sync().expect("sync");
        assert_ne!(before, wal.open.as_ref().map(|(_, inode)| *inode));
    }
}
