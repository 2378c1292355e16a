//! What the engine can be tuned with. The server fills it from its layered configuration.

use std::time::Duration;
use tern_core::PublishLimits;
use tern_store::Retention;

#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub limits: PublishLimits,
    /// The largest accepted message body; destination responses are kept up to this size.
    pub max_body_bytes: usize,
    /// Attempts running at once across all users.
    pub max_concurrent_deliveries: usize,
    /// Attempts running at once for one user (`/v2/globalParallelism`).
    pub user_parallelism: u32,
    /// Queues per user, and the largest queue parallelism (412 beyond).
    pub max_queues: usize,
    pub max_queue_parallelism: u32,
    /// URL groups per user, and endpoints per group (412 beyond).
    pub max_url_groups: usize,
    pub max_endpoints_per_group: usize,
    /// Schedules per user (412 beyond).
    pub max_schedules: usize,
    /// Flow-control keys per user, each kept in memory (412 beyond).
    pub max_flow_control_keys: usize,
    /// Messages one batch may create, endpoints of URL groups counted (413 beyond).
    pub max_batch_messages: usize,
    /// Messages a workflow run may record (412 beyond), and bytes of their bodies (413 beyond).
    pub max_workflow_steps: usize,
    pub max_workflow_run_bytes: usize,
    /// Waiters (waits for events) a user may have at once (412 beyond).
    pub max_workflow_waiters: usize,
    /// Bytes the step bodies of running attempts may take at once (a run's records, built for
    /// each delivery of its steps): attempts wait for room.
    pub workflow_body_budget: usize,
    /// Bytes of message bodies the scheduler keeps for messages due soon.
    pub payload_cache_bytes: usize,
    /// How long a deduplication id (or content hash) suppresses duplicates.
    pub dedup_window: Duration,
    /// How long `GET /v2/messages/{id}` still shows a finished message.
    pub finished_message_visibility: Duration,
    pub retention: Retention,
    /// How often retention is applied.
    pub purge_interval: Duration,
    /// Sign with `nbf = iat` instead of `nbf = 0`.
    pub jwt_nbf_is_iat: bool,
    /// Deliver to loopback, private and link-local addresses (needed for local development).
    pub allow_private_destinations: bool,
    /// How long shutdown waits for running attempts before leaving them to be retried.
    pub shutdown_grace: Duration,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            limits: PublishLimits::default(),
            max_body_bytes: 10 << 20,
            max_concurrent_deliveries: 1024,
            user_parallelism: 1000,
            max_queues: 1000,
            max_queue_parallelism: 1000,
            max_url_groups: 1000,
            max_endpoints_per_group: 1000,
            max_schedules: 1000,
            max_flow_control_keys: 10_000,
            max_batch_messages: 10_000,
            max_workflow_steps: 10_000,
            max_workflow_run_bytes: 64 << 20,
            max_workflow_waiters: 10_000,
            workflow_body_budget: 256 << 20,
            payload_cache_bytes: 64 << 20,
            dedup_window: Duration::from_secs(600),
            finished_message_visibility: Duration::from_secs(3600),
            retention: Retention { logs: Duration::from_secs(3 * 86_400), dlq: Duration::from_secs(7 * 86_400) },
            purge_interval: Duration::from_secs(60),
            jwt_nbf_is_iat: false,
            allow_private_destinations: true,
            shutdown_grace: Duration::from_secs(10),
        }
    }
}
