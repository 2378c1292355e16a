//! tern-engine: everything that runs in the background — the scheduler (due times, FIFO
//! queues, flow control), the dispatcher, the signed HTTP delivery, retries, callbacks, DLQ
//! moves, retention and the schedule ticker — plus the operations the API offers on top of the
//! store. No HTTP server code lives here.

mod activity;
pub mod clock;
pub mod config;
mod delivery;
pub mod destinations;
mod dispatcher;
pub mod error;
pub mod keys;
mod operations;
mod publish;
mod recording;
mod resources;
pub mod scheduler;
mod schedules;
mod scheduling;
mod trigger;
mod waiters;
mod workflow_delivery;
mod workflow_dlq;
mod workflows;

use clock::Clock;
use config::EngineConfig;
use error::Result;
use keys::{Keyring, UserKeys};
use scheduler::{Scheduler, SlotSharing};
use scheduling::SharedScheduler;
use std::sync::Arc;
use tern_store::Store;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use activity::Activity;
pub use error::EngineError;
pub use keys::SigningKeys;
pub use operations::DlqSelection;
pub use publish::{PublishRequest, PublishResult, Published, Recipients, too_many_batch_messages};
pub use resources::QueueView;
pub use scheduler::FlowInfo;
pub use scheduler::flow::FlowPin;
pub use schedules::{CreatedSchedule, ScheduleRequest, ScheduleView};
pub use trigger::{TriggerRequest, Triggered};
pub use waiters::{NotifyResult, WaitRequest};

/// What the dispatcher, the attempts and the API operations share.
struct Shared {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    config: EngineConfig,
    keyring: Keyring,
    http: delivery::DeliveryClient,
    scheduler: Arc<SharedScheduler>,
    /// Whether attempts' outcomes can be written; delivery pauses while they cannot.
    write_health: recording::WriteHealth,
    /// Wakes the schedule ticker when a schedule was created, resumed or changed
    /// ([`Shared::wake_ticker`]).
    schedule_wake: tokio::sync::Notify,
    ticker: activity::TickerActivity,
    /// Held across each queue or flow-key settings change, from reading the current settings
    /// to applying the new ones to both the store and the scheduler: concurrent changes then
    /// land in the same order in both, and none overwrites another with stale values.
    settings_changes: tokio::sync::Mutex<()>,
    /// Wakes the waiter-timeout ticker when a waiter was added.
    waiter_wake: tokio::sync::Notify,
    /// What the step bodies of running attempts may hold at once.
    delivery_bodies: workflow_delivery::BodyBudget,
}

impl Shared {
    /// Has the schedule ticker look at the schedules again (one was created or resumed).
    fn wake_ticker(&self) {
        self.ticker.wake_asked();
        self.schedule_wake.notify_one();
    }
}

/// The running engine. Cheap to clone; [`Engine::shutdown`] stops it.
#[derive(Clone)]
pub struct Engine {
    shared: Arc<Shared>,
    stop: CancellationToken,
    background: TaskTracker,
    attempts: TaskTracker,
}

impl Engine {
    /// Loads the users' signing keys and every unfinished message, then starts the dispatcher
    /// and the retention task.
    pub async fn start(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        config: EngineConfig,
        users: &[UserKeys],
    ) -> Result<Engine> {
        let keyring = Keyring::load(Arc::clone(&store), users).await?;
        let http = delivery::DeliveryClient::new(&config)
            .map_err(|e| tern_store::StoreError::Backend(format!("cannot build the HTTP client: {e}")))?;
        let sharing = SlotSharing {
            slots: u32::try_from(config.max_concurrent_deliveries).unwrap_or(u32::MAX),
            users: u32::try_from(users.len()).unwrap_or(u32::MAX),
        };
        let mut scheduler = Scheduler::with_sharing(config.user_parallelism, sharing, config.payload_cache_bytes);
        for (user_id, queue) in store.all_queues().await? {
            scheduler.configure_queue(&user_id, &queue.name, queue.parallelism, queue.paused);
        }
        let started_at = clock.now_ms();
        for (user_id, key, settings) in store.all_flows().await? {
            scheduler.restore_flow(&user_id, &key, &settings);
            // When a key was last used is not stored: its idle day counts from this start.
            scheduler.touch_flow(&user_id, &key, started_at);
        }
        let scheduler = Arc::new(SharedScheduler::new(scheduler, Arc::clone(&clock)));
        store.attach(scheduler.clone(), clock.now_ms()).await?;
        tracing::info!(unfinished = scheduler.lock().len(), "scheduler ready");
        let schedule_wake = tokio::sync::Notify::new();
        let settings_changes = tokio::sync::Mutex::new(());
        let write_health = recording::WriteHealth::default();
        let delivery_bodies = workflow_delivery::BodyBudget::new(config.workflow_body_budget);
        let shared = Arc::new(Shared {
            store,
            clock,
            config,
            keyring,
            http,
            scheduler,
            write_health,
            schedule_wake,
            ticker: activity::TickerActivity::default(),
            settings_changes,
            waiter_wake: tokio::sync::Notify::new(),
            delivery_bodies,
        });
        let engine = Engine {
            shared: Arc::clone(&shared),
            stop: CancellationToken::new(),
            background: TaskTracker::new(),
            attempts: TaskTracker::new(),
        };
        engine.background.spawn(dispatcher::run(Arc::clone(&shared), engine.stop.clone(), engine.attempts.clone()));
        engine.background.spawn(schedules::run_ticker(Arc::clone(&shared), engine.stop.clone()));
        engine.background.spawn(waiters::run_timeouts(Arc::clone(&shared), engine.stop.clone()));
        engine.background.spawn(dispatcher::run_retention(shared, engine.stop.clone()));
        Ok(engine)
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.shared.clock
    }

    pub fn config(&self) -> &EngineConfig {
        &self.shared.config
    }

    /// Stops claiming work, gives running attempts `shutdown_grace` to finish (the rest are
    /// attempted again after restart), then commits everything recorded and closes the store.
    pub async fn shutdown(&self) -> Result<()> {
        self.stop.cancel();
        self.background.close();
        self.background.wait().await;
        self.attempts.close();
        if tokio::time::timeout(self.shared.config.shutdown_grace, self.attempts.wait()).await.is_err() {
            tracing::warn!("attempts still running at shutdown will be made again after restart");
        }
        self.shared.store.shutdown().await?;
        Ok(())
    }
}
