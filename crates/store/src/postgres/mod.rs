//! The PostgreSQL backend: the same data model and group commit as the embedded store, on a
//! database several tern nodes can share. Writes go through one writer task per node (its own
//! connection, one transaction per batch); reads take a pooled connection, the engine's from a
//! small pool of its own so that a burst of client searches never holds up deliveries.

mod client;
mod listing;
mod node_lock;
mod ops;
mod query;
mod recovery;
mod resources;
mod rows;
mod run_records;
mod schedules;
mod schema;
pub mod testing;
mod waiters;
mod workflow_ops;
mod workflows;
mod writer;

use crate::batch::WriteOp;
use crate::error::{NotRecorded, Result, StoreError};
use crate::model::*;
use crate::{
    DlqStore, FlowStore, KeyStore, LogStore, Maintenance, MessageStore, QueueStore, ScheduleStore, SchedulingSource,
    UrlGroupStore,
};
use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod};
use std::sync::Mutex;
use std::time::Duration;
use tern_core::{HeaderList, Message, MessageId};
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::NoTls;

/// How the PostgreSQL store is opened.
#[derive(Clone)]
pub struct PostgresOptions {
    /// `postgres://user:password@host:port/database` (or the key=value form).
    pub url: String,
    /// Connections for client reads (logs, listings, lookups); more reads wait.
    pub pool_size: usize,
    /// How long opening a connection may take.
    pub connect_timeout: Duration,
}

impl std::fmt::Debug for PostgresOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may carry a password.
        f.debug_struct("PostgresOptions")
            .field("url", &tern_core::redact::SECRET)
            .field("pool_size", &self.pool_size)
            .field("connect_timeout", &self.connect_timeout)
            .finish()
    }
}

impl PostgresOptions {
    pub fn new(url: impl Into<String>) -> Self {
        PostgresOptions { url: url.into(), pool_size: 8, connect_timeout: Duration::from_secs(10) }
    }
}

/// Reads of the engine itself (messages due now, schedules due now), on connections of
/// their own.
const ENGINE_CONNECTIONS: usize = 2;
const WRITE_QUEUE: usize = 65_536;

/// Opens connections to the configured database.
#[derive(Clone)]
pub struct Connector {
    config: tokio_postgres::Config,
}

impl Connector {
    fn new(options: &PostgresOptions) -> Result<Self> {
        let mut config: tokio_postgres::Config = options
            .url
            .parse()
            .map_err(|e| StoreError::InvalidInput(format!("storage.postgres_url is not a PostgreSQL URL: {e}")))?;
        config.connect_timeout(options.connect_timeout);
        // Notice a database host gone silent within about half a minute, not the system
        // default of hours, whether the connection is idle (keepalives) or waiting for an
        // answer to data sent (the TCP user timeout): as soon as the database gives up on
        // this node's session (`node_lock`), and another node may take over.
        config
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(10))
            .keepalives_interval(Duration::from_secs(5))
            .keepalives_retries(3)
            .tcp_user_timeout(Duration::from_secs(25));
        if config.get_application_name().is_none() {
            config.application_name("tern");
        }
        Ok(Connector { config })
    }

    pub async fn connect(&self) -> Result<tokio_postgres::Client> {
        let (client, connection) = self.config.connect(NoTls).await?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::warn!(%error, "a PostgreSQL connection ended");
            }
        });
        Ok(client)
    }

    fn pool(&self, size: usize) -> Result<Pool> {
        let manager =
            Manager::from_config(self.config.clone(), NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
        Pool::builder(manager)
            .max_size(size.max(1))
            .build()
            .map_err(|e| StoreError::Backend(format!("cannot build the PostgreSQL pool: {e}")))
    }
}

pub struct PostgresStore {
    sender: mpsc::Sender<WriteOp>,
    client_pool: Pool,
    engine_pool: Pool,
    writer_task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl PostgresStore {
    /// Connects, brings the schema to the newest version, waits until this node is the active
    /// one on the database (`node_lock`: another node may be active; this one then stands by)
    /// and starts the writer. Nothing is scheduled until the engine attaches its scheduler
    /// ([`SchedulingSource::attach`]).
    pub async fn open(options: PostgresOptions) -> Result<Self> {
        let connector = Connector::new(&options)?;
        let mut client = connector.connect().await?;
        schema::migrate(&mut client).await?;
        let epoch = node_lock::become_active(&client).await?;
        let (sender, receiver) = mpsc::channel(WRITE_QUEUE);
        let writer = writer::Writer {
            connector: connector.clone(),
            client: Some(client),
            statements: Default::default(),
            scheduling: None,
            epoch,
            taken_over: None,
            batches: 0,
        };
        let writer_task = tokio::spawn(writer.run(receiver));
        tracing::info!("PostgreSQL store opened");
        Ok(PostgresStore {
            sender,
            client_pool: connector.pool(options.pool_size)?,
            engine_pool: connector.pool(ENGINE_CONNECTIONS)?,
            writer_task: Mutex::new(Some(writer_task)),
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

    /// A connection for a client's read.
    async fn reader(&self) -> Result<Object> {
        Ok(self.client_pool.get().await?)
    }

    /// A connection for a read the engine needs to deliver or fire.
    async fn engine_reader(&self) -> Result<Object> {
        Ok(self.engine_pool.get().await?)
    }
}

/// A pooled connection, with its statement cache.
fn client(object: &Object) -> &deadpool_postgres::ClientWrapper {
    object
}

#[async_trait]
impl MessageStore for PostgresStore {
    async fn insert_messages(&self, messages: Vec<NewMessage>) -> Result<Vec<InsertOutcome>> {
        self.request(|reply| WriteOp::Insert { messages, reply }).await
    }

    async fn get_message(&self, user_id: &str, id: MessageId) -> Result<Option<Message>> {
        query::get_message(client(&self.reader().await?), user_id, id).await
    }

    async fn message_bytes(&self, user_id: &str, id: MessageId) -> Result<Option<usize>> {
        query::message_bytes(client(&self.reader().await?), user_id, id).await
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
impl SchedulingSource for PostgresStore {
    async fn attach(&self, scheduling: std::sync::Arc<dyn Scheduling>, now: i64) -> Result<()> {
        self.request(|reply| WriteOp::Attach { scheduling, now, reply }).await
    }

    async fn load_messages(&self, ids: Vec<MessageId>) -> Result<Vec<Message>> {
        query::load_messages(client(&self.engine_reader().await?), &ids).await
    }
}

#[async_trait]
impl QueueStore for PostgresStore {
    async fn upsert_queue(&self, user_id: &str, name: &str, parallelism: u32, paused: bool, now: i64) -> Result<()> {
        let (user_id, name) = (user_id.to_string(), name.to_string());
        self.request(|reply| WriteOp::UpsertQueue { user_id, name, parallelism, paused, now, reply }).await
    }

    async fn delete_queue(&self, user_id: &str, name: &str, now: i64) -> Result<bool> {
        let (user_id, name) = (user_id.to_string(), name.to_string());
        self.request(|reply| WriteOp::DeleteQueue { user_id, name, now, reply }).await
    }

    async fn get_queue(&self, user_id: &str, name: &str) -> Result<Option<QueueRecord>> {
        query::get_queue(client(&self.reader().await?), user_id, name).await
    }

    async fn list_queues(&self, user_id: &str) -> Result<Vec<QueueRecord>> {
        query::list_queues(client(&self.reader().await?), user_id).await
    }

    async fn all_queues(&self) -> Result<Vec<(String, QueueRecord)>> {
        query::all_queues(client(&self.engine_reader().await?)).await
    }
}

#[async_trait]
impl FlowStore for PostgresStore {
    async fn save_flow(&self, user_id: &str, key: &str, settings: FlowSettings) -> Result<()> {
        let (user_id, key) = (user_id.to_string(), key.to_string());
        self.request(|reply| WriteOp::SaveFlow { user_id, key, settings, reply }).await
    }

    async fn all_flows(&self) -> Result<Vec<(String, String, FlowSettings)>> {
        query::all_flows(client(&self.engine_reader().await?)).await
    }

    async fn save_flow_windows(&self, windows: Vec<FlowWindow>) -> Result<()> {
        self.send(WriteOp::SaveFlowWindows(windows)).await
    }

    async fn forget_flows(&self, keys: Vec<(String, String)>) -> Result<()> {
        self.request(|reply| WriteOp::ForgetFlows { keys, reply }).await
    }
}

#[async_trait]
impl UrlGroupStore for PostgresStore {
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
        query::get_group(client(&self.reader().await?), user_id, group).await
    }

    async fn get_group_for_engine(&self, user_id: &str, group: &str) -> Result<Option<UrlGroup>> {
        query::get_group(client(&self.engine_reader().await?), user_id, group).await
    }

    async fn group_bytes(&self, user_id: &str, group: &str) -> Result<Option<usize>> {
        query::group_bytes(client(&self.reader().await?), user_id, group).await
    }

    async fn list_groups(&self, user_id: &str, page: &PageRequest) -> Result<Page<UrlGroup>> {
        query::list_groups(client(&self.reader().await?), user_id, page).await
    }
}

#[async_trait]
impl ScheduleStore for PostgresStore {
    async fn upsert_schedule(
        &self,
        schedule: ScheduleRecord,
        limit: usize,
        dedup: Option<DedupClaim>,
    ) -> Result<ScheduleUpsert> {
        self.request(|reply| WriteOp::UpsertSchedule { schedule: Box::new(schedule), limit, dedup, reply }).await
    }

    async fn get_schedule(&self, user_id: &str, id: &str) -> Result<Option<ScheduleWithStates>> {
        schedules::get(client(&self.reader().await?), user_id, id).await
    }

    async fn schedule_bytes(&self, user_id: &str, id: &str) -> Result<Option<usize>> {
        schedules::bytes(client(&self.reader().await?), user_id, id).await
    }

    async fn list_schedules(&self, user_id: &str, page: &PageRequest) -> Result<Page<ScheduleWithStates>> {
        schedules::list(client(&self.reader().await?), user_id, page).await
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
        schedules::due(client(&self.engine_reader().await?), now, limit).await
    }

    async fn next_schedule_tick(&self) -> Result<Option<i64>> {
        schedules::next_tick(client(&self.engine_reader().await?)).await
    }

    async fn fire_schedules(&self, fires: Vec<ScheduleFire>) -> Result<Vec<bool>> {
        self.request(|reply| WriteOp::FireSchedules { fires, reply }).await
    }
}

#[async_trait]
impl LogStore for PostgresStore {
    async fn list_logs(&self, user_id: &str, filter: &MessageFilter, page: &PageRequest) -> Result<Page<LogEntry>> {
        listing::list_logs(client(&self.reader().await?), user_id, filter, page).await
    }
}

#[async_trait]
impl DlqStore for PostgresStore {
    async fn list_dlq(&self, user_id: &str, filter: &MessageFilter, page: &PageRequest) -> Result<Page<Message>> {
        listing::list_dlq(client(&self.reader().await?), user_id, filter, page).await
    }

    async fn get_dlq(&self, user_id: &str, dlq_id: &str) -> Result<Option<Message>> {
        query::get_dlq(client(&self.reader().await?), user_id, dlq_id).await
    }

    async fn delete_dlq(&self, user_id: &str, dlq_ids: Vec<String>) -> Result<u64> {
        let user_id = user_id.to_string();
        self.request(|reply| WriteOp::DeleteDlq { user_id, dlq_ids, reply }).await
    }
}

#[async_trait]
impl KeyStore for PostgresStore {
    async fn load_keys(&self, user_id: &str) -> Result<Option<StoredKeys>> {
        query::load_keys(client(&self.reader().await?), user_id).await
    }

    async fn save_keys(&self, user_id: &str, keys: StoredKeys) -> Result<()> {
        let user_id = user_id.to_string();
        self.request(|reply| WriteOp::SaveKeys { user_id, keys, reply }).await
    }
}

#[async_trait]
impl Maintenance for PostgresStore {
    async fn purge(&self, now: i64, retention: Retention) -> Result<PurgeStats> {
        self.request(|reply| WriteOp::Purge { now, retention, reply }).await
    }

    async fn shutdown(&self) -> Result<()> {
        self.request(|reply| WriteOp::Stop { reply }).await?;
        let task = self.writer_task.lock().expect("writer task lock").take();
        if let Some(task) = task {
            task.await.map_err(|e| StoreError::Backend(format!("the writer task failed: {e}")))?;
        }
        self.client_pool.close();
        self.engine_pool.close();
        Ok(())
    }
}
