//! The embedded backend: SQLite in WAL mode with `synchronous=FULL`, one writer thread doing
//! group commit, a small pool of reader connections, and an in-memory due index rebuilt from
//! the database at start. One process owns a data directory (an exclusive lock file), so claims
//! need no leases: a crash releases them all, and every unfinished message is due again.

mod index;
mod query;
mod rows;
mod schema;
mod writer;

use crate::error::{Result, StoreError};
use crate::model::*;
use crate::{DlqStore, KeyStore, LogStore, Maintenance, MessageStore, WorkQueue};
use async_trait::async_trait;
use index::DueIndex;
use rusqlite::Connection;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tern_core::{LogState, Message, MessageId, MessageState};
use tokio::sync::{Notify, mpsc, oneshot};
use writer::{WriteOp, Writer};

/// How the embedded store is opened.
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    /// The data directory; created if missing.
    pub data_dir: PathBuf,
    /// fsync every commit (`synchronous=FULL`). Off only for throwaway data.
    pub durable: bool,
    /// Bytes of message bodies the due index may cache for messages due soon.
    pub cache_budget: usize,
}

impl SqliteOptions {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        SqliteOptions { data_dir: data_dir.into(), durable: true, cache_budget: 64 << 20 }
    }
}

const DATABASE_FILE: &str = "tern.sqlite3";
const LOCK_FILE: &str = "tern.lock";
const READERS: usize = 4;
const WRITE_QUEUE: usize = 65_536;

pub struct SqliteStore {
    sender: mpsc::Sender<WriteOp>,
    index: Arc<Mutex<DueIndex>>,
    signal: Arc<Notify>,
    readers: Arc<Readers>,
    writer_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl SqliteStore {
    /// Opens (or creates) the store, recovers unfinished messages into the due index and starts
    /// the writer. `now` finalises cancels that were waiting for an attempt cut off by a crash.
    pub fn open(options: SqliteOptions, now: i64) -> Result<Self> {
        std::fs::create_dir_all(&options.data_dir)
            .map_err(|e| StoreError::Backend(format!("cannot create {}: {e}", options.data_dir.display())))?;
        let lock = File::create(options.data_dir.join(LOCK_FILE))
            .map_err(|e| StoreError::Backend(format!("cannot create the lock file: {e}")))?;
        lock.try_lock().map_err(|_| {
            StoreError::Backend(format!("{} is in use by another tern process", options.data_dir.display()))
        })?;
        let path = options.data_dir.join(DATABASE_FILE);
        let mut connection = open_connection(&path, options.durable)?;
        schema::migrate(&mut connection)?;
        let mut index = DueIndex::new(options.cache_budget);
        recover(&mut connection, &mut index, now)?;
        tracing::info!(pending = index.len(), path = %path.display(), "store opened");

        let index = Arc::new(Mutex::new(index));
        let signal = Arc::new(Notify::new());
        let (sender, receiver) = mpsc::channel(WRITE_QUEUE);
        let writer = Writer { connection, index: Arc::clone(&index), signal: Arc::clone(&signal), lock };
        let writer_thread = std::thread::Builder::new()
            .name("tern-store-writer".into())
            .spawn(move || writer.run(receiver))
            .map_err(|e| StoreError::Backend(format!("cannot start the writer thread: {e}")))?;
        Ok(SqliteStore {
            sender,
            index,
            signal,
            readers: Arc::new(Readers { path, durable: options.durable, idle: Mutex::new(Vec::new()) }),
            writer_thread: Mutex::new(Some(writer_thread)),
        })
    }

    async fn send(&self, op: WriteOp) -> Result<()> {
        self.sender.send(op).await.map_err(|_| StoreError::Closed)
    }

    async fn request<T>(&self, make: impl FnOnce(oneshot::Sender<Result<T>>) -> WriteOp) -> Result<T> {
        let (reply, answer) = oneshot::channel();
        self.send(make(reply)).await?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    /// Pending messages in the due index (for metrics and benchmarks).
    pub fn pending_count(&self) -> usize {
        self.index.lock().expect("index lock").len()
    }
}

fn open_connection(path: &Path, durable: bool) -> Result<Connection> {
    let connection = Connection::open(path)?;
    schema::configure(&connection, durable)?;
    Ok(connection)
}

/// Rebuilds the due index from unfinished rows. Cancels that waited for an attempt the crash
/// cut off are finished now.
fn recover(connection: &mut Connection, index: &mut DueIndex, now: i64) -> Result<()> {
    let transaction = connection.transaction()?;
    let waiting: Vec<(String, String)> = transaction
        .prepare("SELECT id, user_id FROM messages WHERE state = ?1")?
        .query_map([MessageState::CancelRequested.code()], |row| Ok((row.get(0)?, row.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    for (id, user_id) in waiting {
        transaction.execute(
            "UPDATE messages SET state = ?2, finished_at = ?3, due_at = NULL WHERE id = ?1",
            rusqlite::params![id, MessageState::Canceled.code(), now],
        )?;
        transaction.execute(
            "INSERT INTO logs (user_id, message_id, time, state) VALUES (?1, ?2, ?3, ?4)",
            rusqlite::params![user_id, id, now, LogState::Canceled.code()],
        )?;
    }
    transaction.commit()?;
    let mut statement = connection.prepare("SELECT due_at, id FROM messages WHERE state < 3 AND due_at IS NOT NULL")?;
    let mut rows = statement.query([])?;
    while let Some(row) = rows.next()? {
        let id: String = row.get(1)?;
        let id: MessageId = id.parse().map_err(|()| StoreError::Corrupt(format!("message id {id:?}")))?;
        index.insert(row.get(0)?, id, None, now);
    }
    Ok(())
}

/// Reader connections, used from blocking tasks.
struct Readers {
    path: PathBuf,
    durable: bool,
    idle: Mutex<Vec<Connection>>,
}

impl Readers {
    async fn read<T: Send + 'static>(
        self: &Arc<Self>,
        query: impl FnOnce(&Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let readers = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let idle = readers.idle.lock().expect("reader pool lock").pop();
            let connection = match idle {
                Some(connection) => connection,
                None => open_connection(&readers.path, readers.durable)?,
            };
            let result = query(&connection);
            let mut idle = readers.idle.lock().expect("reader pool lock");
            if idle.len() < READERS {
                idle.push(connection);
            }
            result
        })
        .await
        .map_err(|e| StoreError::Backend(format!("reader task failed: {e}")))?
    }
}

#[async_trait]
impl MessageStore for SqliteStore {
    async fn insert_messages(&self, messages: Vec<NewMessage>) -> Result<Vec<InsertOutcome>> {
        self.request(|reply| WriteOp::Insert { messages, reply }).await
    }

    async fn get_message(&self, user_id: &str, id: MessageId) -> Result<Option<Message>> {
        let user_id = user_id.to_string();
        self.readers.read(move |c| query::get_message(c, &user_id, id)).await
    }

    async fn cancel_messages(&self, user_id: &str, selection: CancelSelection, now: i64) -> Result<CancelOutcome> {
        let user_id = user_id.to_string();
        self.request(|reply| WriteOp::Cancel { user_id, selection, now, reply }).await
    }

    async fn record_attempt_started(&self, message: &Message, at: i64) -> Result<()> {
        self.send(WriteOp::AttemptStarted { user_id: message.user_id.clone(), id: message.id, at }).await
    }

    async fn record_attempt_outcome(&self, outcome: AttemptOutcome) -> Result<()> {
        self.send(WriteOp::AttemptFinished(Box::new(outcome))).await
    }
}

#[async_trait]
impl WorkQueue for SqliteStore {
    async fn claim_due(&self, now: i64, limit: usize) -> Result<Vec<Arc<Message>>> {
        let claimed = self.index.lock().expect("index lock").claim(now, limit);
        let mut messages = claimed.cached;
        if claimed.to_load.is_empty() {
            return Ok(messages);
        }
        let ids = claimed.to_load;
        let wanted = ids.clone();
        let loaded = self.readers.read(move |c| query::load_messages(c, &wanted)).await;
        let loaded = match loaded {
            Ok(loaded) => loaded,
            Err(error) => {
                // Put the claims back so the messages are not lost until restart.
                let mut index = self.index.lock().expect("index lock");
                for id in ids {
                    index.release(id);
                    index.insert(now, id, None, now);
                }
                return Err(error);
            }
        };
        let mut index = self.index.lock().expect("index lock");
        for id in &ids {
            if !loaded.iter().any(|message| message.id == *id && !message.state.is_terminal()) {
                index.release(*id);
            }
        }
        messages.extend(loaded.into_iter().filter(|m| !m.state.is_terminal()).map(Arc::new));
        Ok(messages)
    }

    fn next_due_at(&self) -> Option<i64> {
        self.index.lock().expect("index lock").next_due_at()
    }

    fn work_signal(&self) -> Arc<Notify> {
        Arc::clone(&self.signal)
    }
}

#[async_trait]
impl LogStore for SqliteStore {
    async fn list_logs(&self, user_id: &str, filter: &MessageFilter, page: &PageRequest) -> Result<Page<LogEntry>> {
        let (user_id, filter, page) = (user_id.to_string(), filter.clone(), page.clone());
        self.readers.read(move |c| query::list_logs(c, &user_id, &filter, &page)).await
    }
}

#[async_trait]
impl DlqStore for SqliteStore {
    async fn list_dlq(&self, user_id: &str, filter: &MessageFilter, page: &PageRequest) -> Result<Page<Message>> {
        let (user_id, filter, page) = (user_id.to_string(), filter.clone(), page.clone());
        self.readers.read(move |c| query::list_dlq(c, &user_id, &filter, &page)).await
    }

    async fn get_dlq(&self, user_id: &str, dlq_id: &str) -> Result<Option<Message>> {
        let (user_id, dlq_id) = (user_id.to_string(), dlq_id.to_string());
        self.readers.read(move |c| query::get_dlq(c, &user_id, &dlq_id)).await
    }

    async fn delete_dlq(&self, user_id: &str, dlq_ids: Vec<String>) -> Result<u64> {
        let user_id = user_id.to_string();
        self.request(|reply| WriteOp::DeleteDlq { user_id, dlq_ids, reply }).await
    }
}

#[async_trait]
impl KeyStore for SqliteStore {
    async fn load_keys(&self, user_id: &str) -> Result<Option<StoredKeys>> {
        let user_id = user_id.to_string();
        self.readers.read(move |c| query::load_keys(c, &user_id)).await
    }

    async fn save_keys(&self, user_id: &str, keys: StoredKeys) -> Result<()> {
        let user_id = user_id.to_string();
        self.request(|reply| WriteOp::SaveKeys { user_id, keys, reply }).await
    }
}

#[async_trait]
impl Maintenance for SqliteStore {
    async fn purge(&self, now: i64, retention: Retention) -> Result<PurgeStats> {
        self.request(|reply| WriteOp::Purge { now, retention, reply }).await
    }

    async fn shutdown(&self) -> Result<()> {
        self.request(|reply| WriteOp::Stop { reply }).await?;
        let thread = self.writer_thread.lock().expect("writer thread lock").take();
        if let Some(thread) = thread {
            tokio::task::spawn_blocking(move || thread.join())
                .await
                .map_err(|e| StoreError::Backend(format!("writer thread: {e}")))?
                .map_err(|_| StoreError::Backend("the writer thread panicked".into()))?;
        }
        Ok(())
    }
}
