//! The embedded SQLite backend against the conformance suite, plus what only it promises.

mod conformance;

use conformance::Backend;
use std::path::PathBuf;
use std::sync::Arc;
use tern_store::Store;
use tern_store::sqlite::{SqliteOptions, SqliteStore};

struct Sqlite {
    directories: Vec<tempfile::TempDir>,
}

impl Sqlite {
    fn current(&self) -> PathBuf {
        self.directories.last().expect("a directory").path().to_path_buf()
    }
}

#[async_trait::async_trait]
impl Backend for Sqlite {
    async fn open(&mut self) -> Arc<dyn Store> {
        self.directories.push(tempfile::tempdir().unwrap());
        Arc::new(SqliteStore::open(SqliteOptions::new(self.current())).unwrap())
    }

    async fn reopen(&mut self, store: Arc<dyn Store>) -> Arc<dyn Store> {
        store.shutdown().await.unwrap();
        drop(store);
        Arc::new(SqliteStore::open(SqliteOptions::new(self.current())).unwrap())
    }
}

#[tokio::test]
async fn sqlite_passes_the_conformance_suite() {
    conformance::run_all(&mut Sqlite { directories: Vec::new() }).await;
}

#[tokio::test]
async fn a_data_directory_has_one_owner() {
    let directory = tempfile::tempdir().unwrap();
    let first = SqliteStore::open(SqliteOptions::new(directory.path())).unwrap();
    let error = SqliteStore::open(SqliteOptions::new(directory.path())).err().unwrap();
    assert!(error.to_string().contains("in use"), "{error}");
    tern_store::Maintenance::shutdown(&first).await.unwrap();
    drop(first);
    SqliteStore::open(SqliteOptions::new(directory.path())).unwrap();
}

#[tokio::test]
async fn concurrent_inserts_share_commits_and_all_survive() {
    let directory = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(SqliteOptions::new(directory.path())).unwrap());
    let mut tasks = Vec::new();
    for i in 0..200 {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            let message = conformance::new_message("alice", &format!("http://127.0.0.1:1/{i}"), 0, 0, &[]);
            let id = message.id;
            tern_store::MessageStore::insert_messages(&*store, vec![message]).await.unwrap();
            id
        }));
    }
    let mut ids = Vec::new();
    for task in tasks {
        ids.push(task.await.unwrap());
    }
    tern_store::Maintenance::shutdown(&*store).await.unwrap();
    drop(store);
    let reopened = Arc::new(SqliteStore::open(SqliteOptions::new(directory.path())).unwrap());
    let recorder = Arc::new(conformance::Recorder::default());
    tern_store::SchedulingSource::attach(&*reopened, recorder.clone(), 0).await.unwrap();
    assert_eq!(recorder.changes.lock().unwrap().len(), 200, "every message is reported at start");
    for id in ids {
        assert!(tern_store::MessageStore::get_message(&*reopened, "alice", id).await.unwrap().is_some());
    }
}

#[tokio::test]
async fn a_database_file_that_is_a_symlink_is_synced_where_sqlite_keeps_its_wal() {
    // SQLite follows the link and keeps the WAL beside the file it points to; the sync thread
    // must sync that WAL, or every durable write fails.
    let directory = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let target = elsewhere.path().join("kept-here.sqlite3");
    std::fs::File::create(&target).unwrap();
    std::os::unix::fs::symlink(&target, directory.path().join("tern.sqlite3")).unwrap();

    let store = SqliteStore::open(SqliteOptions::new(directory.path())).unwrap();
    let message = conformance::new_message("alice", "http://127.0.0.1:1/", 0, 0, &[]);
    let id = message.id;
    tern_store::MessageStore::insert_messages(&store, vec![message]).await.expect("a durable write succeeds");
    assert!(elsewhere.path().join("kept-here.sqlite3-wal").exists(), "the WAL is beside the link's target");
    tern_store::Maintenance::shutdown(&store).await.unwrap();
    drop(store);

    let reopened = SqliteStore::open(SqliteOptions::new(directory.path())).unwrap();
    assert!(tern_store::MessageStore::get_message(&reopened, "alice", id).await.unwrap().is_some());
}
