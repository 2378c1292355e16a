//! The embedded backend: SQLite in WAL mode, one writer thread doing group commit, a sync
//! thread that makes each commit durable before anyone hears of it, and a small pool of reader
//! connections. One process owns a data directory (an exclusive lock file), so the engine's
//! in-memory scheduler is the only claimer: a crash forgets every claim, and every unfinished
//! message is due again at start.

mod checkpoint;
mod listing;
mod ops;
mod query;
mod recovery;
mod resources;
mod rows;
mod run_records;
mod schedules;
mod schema;
mod syncer;
mod waiters;
mod workflow_ops;
mod workflows;
mod writer;

use crate::error::{NotRecorded, Result, StoreError};
use crate::model::*;
use crate::{
    DlqStore, FlowStore, KeyStore, LogStore, Maintenance, MessageStore, QueueStore, ScheduleStore, SchedulingSource,
    UrlGroupStore,
};
use async_trait::async_trait;
use rusqlite::Connection;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tern_core::{HeaderList, Message, MessageId};
use tokio::sync::{mpsc, oneshot};
use writer::{WriteOp, Writer};

/// How the embedded store is opened.
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    /// The data directory; created if missing.
    pub data_dir: PathBuf,
    /// fsync every commit before anyone hears of it (see `syncer`). Off only for throwaway
    /// data.
    pub durable: bool,
}

impl SqliteOptions {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        SqliteOptions { data_dir: data_dir.into(), durable: true }
    }
}

const DATABASE_FILE: &str = "tern.sqlite3";
const LOCK_FILE: &str = "tern.lock";
/// Client reads running at once (each on its own connection, with its own page cache); more
/// wait.
const CLIENT_READERS: usize = 6;
/// Reads of the engine itself (messages due now, schedules due now), with permits of their
/// own: a burst of client log searches must not hold up deliveries.
const ENGINE_READERS: usize = 2;
const WRITE_QUEUE: usize = 65_536;

pub struct SqliteStore {
    sender: mpsc::Sender<WriteOp>,
    readers: Arc<Readers>,
    writer_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    checkpointer: Mutex<Option<checkpoint::Checkpointer>>,
}

impl SqliteStore {
    /// Opens (or creates) the store and starts the writer. Nothing is scheduled until the
    /// engine attaches its scheduler ([`SchedulingSource::attach`]).
    pub fn open(options: SqliteOptions) -> Result<Self> {
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
        // The checkpoint thread does this work; the writer only appends to the WAL, and catches
        // up when asked to (see `checkpoint`). The limit is above the WAL's length at that
        // point, so the file is reused, not shrunk and grown again page by page.
        connection.pragma_update(None, "wal_autocheckpoint", 0)?;
        connection.pragma_update(None, "journal_size_limit", 512 << 20)?;
        if options.durable {
            // The writer's commits write the WAL without syncing it; the sync thread syncs
            // it before anyone hears of them (see `syncer`).
            connection.pragma_update(None, "synchronous", "NORMAL")?;
        }
        let next_seq = recovery::next_seq(&connection)?;
        tracing::info!(path = %path.display(), "store opened");

        let (sender, receiver) = mpsc::channel(WRITE_QUEUE);
        let catch_up = Arc::new(checkpoint::CatchUp::default());
        // SQLite follows a symlinked database file and keeps the WAL beside its target, so
        // that is the WAL to sync (the file exists now that the connection is open).
        let real_path = std::fs::canonicalize(&path)
            .map_err(|e| StoreError::Backend(format!("cannot resolve {}: {e}", path.display())))?;
        let wal = options.durable.then(|| {
            let mut wal = real_path.into_os_string();
            wal.push("-wal");
            PathBuf::from(wal)
        });
        let syncer = syncer::Syncer::start(wal)
            .map_err(|e| StoreError::Backend(format!("cannot start the sync thread: {e}")))?;
        let writer = Writer { connection, scheduling: None, next_seq, catch_up: catch_up.clone(), syncer, lock };
        let checkpointer = checkpoint::Checkpointer::start(path.clone(), options.durable, catch_up)
            .map_err(|e| StoreError::Backend(format!("cannot start the checkpoint thread: {e}")))?;
        let writer_thread = std::thread::Builder::new()
            .name("tern-store-writer".into())
            .spawn(move || writer.run(receiver))
            .map_err(|e| StoreError::Backend(format!("cannot start the writer thread: {e}")))?;
        Ok(SqliteStore {
            sender,
            readers: Arc::new(Readers {
                path,
                durable: options.durable,
                idle: Mutex::new(Vec::new()),
                client_permits: Arc::new(tokio::sync::Semaphore::new(CLIENT_READERS)),
                engine_permits: Arc::new(tokio::sync::Semaphore::new(ENGINE_READERS)),
            }),
            writer_thread: Mutex::new(Some(writer_thread)),
            checkpointer: Mutex::new(Some(checkpointer)),
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
}

fn open_connection(path: &Path, durable: bool) -> Result<Connection> {
    let connection = Connection::open(path)?;
    schema::configure(&connection, durable)?;
    Ok(connection)
}

/// Reader connections, used from blocking tasks. At most [`CLIENT_READERS`] plus
/// [`ENGINE_READERS`] exist: a burst of reads waits for a permit instead of opening a
/// connection (and a blocking thread) per request.
struct Readers {
    path: PathBuf,
    durable: bool,
    idle: Mutex<Vec<Connection>>,
    client_permits: Arc<tokio::sync::Semaphore>,
    engine_permits: Arc<tokio::sync::Semaphore>,
}

impl Readers {
    /// A read for a client's request.
    async fn read<T: Send + 'static>(
        self: &Arc<Self>,
        query: impl FnOnce(&Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        self.read_with(&self.client_permits, query).await
    }

    /// A read the engine needs to deliver or fire.
    async fn read_for_engine<T: Send + 'static>(
        self: &Arc<Self>,
        query: impl FnOnce(&Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        self.read_with(&self.engine_permits, query).await
    }

    async fn read_with<T: Send + 'static>(
        self: &Arc<Self>,
        permits: &Arc<tokio::sync::Semaphore>,
        query: impl FnOnce(&Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        // The permit moves into the blocking task: a read whose caller went away still holds
        // it until the query ends, so the bound holds for connections, not just for callers.
        let permit =
            Arc::clone(permits).acquire_owned().await.map_err(|_| StoreError::Backend("the store is closed".into()))?;
        let readers = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let idle = readers.idle.lock().expect("reader pool lock").pop();
            let connection = match idle {
                Some(connection) => connection,
                None => open_connection(&readers.path, readers.durable)?,
            };
            let result = query(&connection);
            readers.idle.lock().expect("reader pool lock").push(connection);
            drop(permit);
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

    async fn message_bytes(&self, user_id: &str, id: MessageId) -> Result<Option<usize>> {
        let user_id = user_id.to_string();
        self.readers.read(move |c| query::message_bytes(c, &user_id, id)).await
    }

    async fn cancel_messages(&self, user_id: &str, selection: CancelSelection, now: i64) -> Result<CancelOutcome> {
        let user_id = user_id.to_string();
        self.request(|reply| WriteOp::Cancel { user_id, selection, now, reply }).await
    }

    async fn record_attempt_started(&self, message: &Message, at: i64) -> Result<()> {
        self.send(WriteOp::AttemptStarted { user_id: message.user_id.clone(), id: message.id, at }).await
    }

    async fn record_attempt_outcome(&self, outcome: AttemptOutcome) -> Result<(), NotRecorded> {
        let (reply, answer) = oneshot::channel();
        let op = WriteOp::AttemptFinished { outcome: Box::new(outcome), reply };
        if let Err(mpsc::error::SendError(WriteOp::AttemptFinished { outcome, .. })) = self.sender.send(op).await {
            return Err(NotRecorded { error: StoreError::Closed, outcome: Some(outcome) });
        }
        answer.await.unwrap_or(Err(NotRecorded { error: StoreError::Closed, outcome: None }))
    }
}

#[async_trait]
impl SchedulingSource for SqliteStore {
    async fn attach(&self, scheduling: Arc<dyn Scheduling>, now: i64) -> Result<()> {
        self.request(|reply| WriteOp::Attach { scheduling, now, reply }).await
    }

    async fn load_messages(&self, ids: Vec<MessageId>) -> Result<Vec<Message>> {
        self.readers.read_for_engine(move |c| query::load_messages(c, &ids)).await
    }
}

#[async_trait]
impl QueueStore for SqliteStore {
    async fn upsert_queue(&self, user_id: &str, name: &str, parallelism: u32, paused: bool, now: i64) -> Result<()> {
        let (user_id, name) = (user_id.to_string(), name.to_string());
        self.request(|reply| WriteOp::UpsertQueue { user_id, name, parallelism, paused, now, reply }).await
    }

    async fn delete_queue(&self, user_id: &str, name: &str, now: i64) -> Result<bool> {
        let (user_id, name) = (user_id.to_string(), name.to_string());
        self.request(|reply| WriteOp::DeleteQueue { user_id, name, now, reply }).await
    }

    async fn get_queue(&self, user_id: &str, name: &str) -> Result<Option<QueueRecord>> {
        let (user_id, name) = (user_id.to_string(), name.to_string());
        self.readers.read(move |c| query::get_queue(c, &user_id, &name)).await
    }

    async fn list_queues(&self, user_id: &str) -> Result<Vec<QueueRecord>> {
        let user_id = user_id.to_string();
        self.readers.read(move |c| query::list_queues(c, &user_id)).await
    }

    async fn all_queues(&self) -> Result<Vec<(String, QueueRecord)>> {
        self.readers.read_for_engine(query::all_queues).await
    }
}

#[async_trait]
impl FlowStore for SqliteStore {
    async fn save_flow(&self, user_id: &str, key: &str, settings: FlowSettings) -> Result<()> {
        let (user_id, key) = (user_id.to_string(), key.to_string());
        self.request(|reply| WriteOp::SaveFlow { user_id, key, settings, reply }).await
    }

    async fn all_flows(&self) -> Result<Vec<(String, String, FlowSettings)>> {
        self.readers.read_for_engine(query::all_flows).await
    }

    async fn save_flow_windows(&self, windows: Vec<FlowWindow>) -> Result<()> {
        self.send(WriteOp::SaveFlowWindows(windows)).await
    }

    async fn forget_flows(&self, keys: Vec<(String, String)>) -> Result<()> {
        self.request(|reply| WriteOp::ForgetFlows { keys, reply }).await
    }
}

#[async_trait]
impl UrlGroupStore for SqliteStore {
    async fn add_endpoints(
        &self,
        user_id: &str,
        group: &str,
        endpoints: Vec<Endpoint>,
        now: i64,
        limits: GroupLimits,
    ) -> Result<EndpointsAdded> {
        let (user_id, group) = (user_id.to_string(), group.to_string());
        self.request(|reply| WriteOp::AddEndpoints { user_id, group, endpoints, now, limits, reply }).await
    }

    async fn remove_endpoints(&self, user_id: &str, group: &str, endpoints: Vec<Endpoint>, now: i64) -> Result<()> {
        let (user_id, group) = (user_id.to_string(), group.to_string());
        self.request(|reply| WriteOp::RemoveEndpoints { user_id, group, endpoints, now, reply }).await
    }

    async fn delete_group(&self, user_id: &str, group: &str) -> Result<bool> {
        let (user_id, group) = (user_id.to_string(), group.to_string());
        self.request(|reply| WriteOp::DeleteGroup { user_id, group, reply }).await
    }

    async fn set_group_headers(&self, user_id: &str, group: &str, headers: HeaderList, now: i64) -> Result<bool> {
        let (user_id, group) = (user_id.to_string(), group.to_string());
        self.request(|reply| WriteOp::SetGroupHeaders { user_id, group, headers, now, reply }).await
    }

    async fn get_group(&self, user_id: &str, group: &str) -> Result<Option<UrlGroup>> {
        let (user_id, group) = (user_id.to_string(), group.to_string());
        self.readers.read(move |c| query::get_group(c, &user_id, &group)).await
    }

    async fn get_group_for_engine(&self, user_id: &str, group: &str) -> Result<Option<UrlGroup>> {
        let (user_id, group) = (user_id.to_string(), group.to_string());
        self.readers.read_for_engine(move |c| query::get_group(c, &user_id, &group)).await
    }

    async fn group_bytes(&self, user_id: &str, group: &str) -> Result<Option<usize>> {
        let (user_id, group) = (user_id.to_string(), group.to_string());
        self.readers.read(move |c| query::group_bytes(c, &user_id, &group)).await
    }

    async fn list_groups(&self, user_id: &str, page: &PageRequest) -> Result<Page<UrlGroup>> {
        let (user_id, page) = (user_id.to_string(), page.clone());
        self.readers.read(move |c| query::list_groups(c, &user_id, &page)).await
    }
}

#[async_trait]
impl ScheduleStore for SqliteStore {
    async fn upsert_schedule(
        &self,
        schedule: ScheduleRecord,
        limit: usize,
        dedup: Option<DedupClaim>,
    ) -> Result<ScheduleUpsert> {
        self.request(|reply| WriteOp::UpsertSchedule { schedule: Box::new(schedule), limit, dedup, reply }).await
    }

    async fn get_schedule(&self, user_id: &str, id: &str) -> Result<Option<ScheduleWithStates>> {
        let (user_id, id) = (user_id.to_string(), id.to_string());
        self.readers.read(move |c| schedules::get(c, &user_id, &id)).await
    }

    async fn schedule_bytes(&self, user_id: &str, id: &str) -> Result<Option<usize>> {
        let (user_id, id) = (user_id.to_string(), id.to_string());
        self.readers.read(move |c| schedules::bytes(c, &user_id, &id)).await
    }

    async fn list_schedules(&self, user_id: &str, page: &PageRequest) -> Result<Page<ScheduleWithStates>> {
        let (user_id, page) = (user_id.to_string(), page.clone());
        self.readers.read(move |c| schedules::list(c, &user_id, &page)).await
    }

    async fn delete_schedule(&self, user_id: &str, id: &str) -> Result<bool> {
        let (user_id, id) = (user_id.to_string(), id.to_string());
        self.request(|reply| WriteOp::DeleteSchedule { user_id, id, reply }).await
    }

    async fn set_schedule_paused(
        &self,
        user_id: &str,
        id: &str,
        paused: bool,
        next_tick_at: Option<i64>,
    ) -> Result<bool> {
        let (user_id, id) = (user_id.to_string(), id.to_string());
        self.request(|reply| WriteOp::PauseSchedule { user_id, id, paused, next_tick_at, reply }).await
    }

    async fn due_schedules(&self, now: i64, limit: usize) -> Result<Vec<ScheduleRecord>> {
        self.readers.read_for_engine(move |c| schedules::due(c, now, limit)).await
    }

    async fn next_schedule_tick(&self) -> Result<Option<i64>> {
        self.readers.read_for_engine(schedules::next_tick).await
    }

    async fn fire_schedules(&self, fires: Vec<ScheduleFire>) -> Result<Vec<bool>> {
        self.request(|reply| WriteOp::FireSchedules { fires, reply }).await
    }
}

#[async_trait]
impl LogStore for SqliteStore {
    async fn list_logs(&self, user_id: &str, filter: &MessageFilter, page: &PageRequest) -> Result<Page<LogEntry>> {
        let (user_id, filter, page) = (user_id.to_string(), filter.clone(), page.clone());
        self.readers.read(move |c| listing::list_logs(c, &user_id, &filter, &page)).await
    }
}

#[async_trait]
impl DlqStore for SqliteStore {
    async fn list_dlq(&self, user_id: &str, filter: &MessageFilter, page: &PageRequest) -> Result<Page<Message>> {
        let (user_id, filter, page) = (user_id.to_string(), filter.clone(), page.clone());
        self.readers.read(move |c| listing::list_dlq(c, &user_id, &filter, &page)).await
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
        let checkpointer = self.checkpointer.lock().expect("checkpointer lock").take();
        if let Some(checkpointer) = checkpointer {
            tokio::task::spawn_blocking(move || checkpointer.stop())
                .await
                .map_err(|e| StoreError::Backend(format!("checkpoint thread: {e}")))?;
        }
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

#[cfg(test)]
#[path = "mod_tests.rs"]
mod tests;
