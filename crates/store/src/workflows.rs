//! Workflow runs as the store keeps them (workflow-protocol.md §1): each run's state and
//! trigger-time configuration, and its recorded messages in acceptance order. A run is created,
//! and its steps appended, by the inserts of the messages that carry them
//! ([`NewMessage::run`](crate::NewMessage::run), `MessageSpec::workflow`), in the same commit.

use crate::error::Result;
use crate::model::{Page, PageRequest};
use async_trait::async_trait;
use bytes::Bytes;
use tern_core::workflow::{RunConfig, RunState, StepRecord};
use tern_core::{AttemptResponse, HeaderList, Message, MessageId, MessageSpec, MessageState};

/// The run an Init message creates.
#[derive(Debug, Clone, PartialEq)]
pub struct NewRun {
    pub run_id: String,
    pub url: String,
    pub config: RunConfig,
    /// The run that invoked this one, if one did.
    pub invoker: Option<RunInvoker>,
    /// Replace the configuration of the run if it exists (an Init the SDK published again,
    /// `Upstash-Workflow-Trigger-By-Sdk`), instead of reporting a duplicate.
    pub replace: bool,
    /// The failed run this one takes up again, from the workflow DLQ.
    pub continues: Option<Continuation>,
}

/// A failed run taken up again by a new run (`/v2/workflows/dlq/resume`, `…/restart`): the
/// new run starts with the failed run's initial payload — and, resumed, with every step it
/// had recorded before the message that failed, which the new run's Init then carries again —
/// and the DLQ entry is removed, all in the commit that creates the new run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Continuation {
    pub dlq_id: String,
    pub resume: bool,
}

/// A failed run as the workflow DLQ shows it with its entry.
#[derive(Debug, Clone, PartialEq)]
pub struct FailedRun {
    pub run: RunRecord,
    /// The configuration of the message that failed (its body aside), while it is stored.
    pub failed_spec: Option<MessageSpec>,
    /// Whether the DLQ entry is still there (a resume or restart takes it out).
    pub in_dlq: bool,
    pub failure_callback: Option<FailureCallbackState>,
}

/// How the failure callback of a failed run is doing.
#[derive(Debug, Clone, PartialEq)]
pub struct FailureCallbackState {
    pub message_id: MessageId,
    pub url: String,
    pub state: MessageState,
    /// Its last answer, the body cut at [`FAILURE_RESPONSE_SHOWN`] bytes.
    pub response: Option<AttemptResponse>,
}

/// How much of a failure function's answer the DLQ shows with its entry.
pub const FAILURE_RESPONSE_SHOWN: usize = 64 << 10;

/// What one run may hold: messages recorded, and bytes of their bodies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunLimits {
    pub max_steps: usize,
    pub max_bytes: usize,
}

/// The run that invoked a run, and the reply its end gives it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunInvoker {
    /// The invoking run's id (its running run is the one replied to).
    pub run_id: String,
    /// Who invoked (`{workflowRunId, workflowUrl, workflowRunCreatedAt}`), for the logs.
    pub view: String,
    /// The invoker's invoke step (JSON), which the reply completes.
    pub step: String,
    /// What the reply says of the invoked run (`invokedWorkflowRunId` and the like, a JSON
    /// object).
    pub invoked: String,
    /// The reply's message, its body aside: built as a publish of the envelope's headers to the
    /// invoker's URL would be.
    pub reply: MessageSpec,
}

/// A run as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct RunRecord {
    pub user_id: String,
    pub run_id: String,
    pub url: String,
    pub created_at: i64,
    pub state: RunState,
    pub completed_at: Option<i64>,
    /// What the workflow returned (the body of its completing `DELETE`).
    pub response: Option<Bytes>,
    pub config: RunConfig,
    /// Who invoked the run (`{workflowRunId, workflowUrl, workflowRunCreatedAt}`), if one did.
    pub invoker: Option<String>,
    /// The DLQ entry of the message whose failure failed the run.
    pub dlq_id: Option<String>,
    pub caller_ip: Option<String>,
    /// Recorded messages and the bytes of their bodies.
    pub step_count: u64,
    pub step_bytes: u64,
}

/// Which of a run's records a read wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WantedRecords {
    None,
    /// The initial payload.
    Initial,
    /// From the first through the message's own record (a message without one — an Init
    /// delivered with the initial payload alone — gets the first).
    ThroughOwn,
    /// [`WantedRecords::ThroughOwn`] when the run's records take at most this many bytes, else
    /// none (the caller reads them again once it made room for them).
    ThroughOwnWithin(u64),
}

/// How a run ends on request.
#[derive(Debug, Clone, PartialEq)]
pub enum RunEnd {
    /// The workflow returned `response` (`DELETE …?cancel=false`).
    Success { response: Bytes },
    /// Cancelled by the user.
    Canceled,
}

/// What ending a run did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunEndOutcome {
    Ended,
    NotFound,
    /// The run had already ended in this state; nothing was written.
    AlreadyEnded(RunState),
}

/// Which runs a listing or a bulk cancel selects. Within a field values are alternatives;
/// fields combine with AND.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunFilter {
    pub run_ids: Vec<String>,
    /// Runs whose URL starts with one of these (or equals it, with `url_exact`).
    pub urls: Vec<String>,
    pub url_exact: bool,
    /// Runs that recorded one of these messages.
    pub message_ids: Vec<String>,
    /// Runs whose URL has one of these hosts (without port), or paths.
    pub hosts: Vec<String>,
    pub paths: Vec<String>,
    pub states: Vec<RunState>,
    pub labels: Vec<String>,
    /// The run's exact creation time (Unix ms), as the SDK names a run (`workflowCreatedAt`).
    pub created_at: Option<i64>,
    /// Inclusive bounds on the creation time, Unix ms.
    pub from_ms: Option<i64>,
    pub to_ms: Option<i64>,
    pub caller_ips: Vec<String>,
    pub flow_control_keys: Vec<String>,
}

/// One message of a run that has not (yet) continued it: waiting, retrying, failed or cancelled.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingStep {
    pub message_id: MessageId,
    pub state: MessageState,
    pub retried: u32,
    pub max_retries: u32,
    pub retry_delay: Option<String>,
    pub due_at: Option<i64>,
    pub created_at: i64,
    /// The attempts that failed so far, with when they failed.
    pub errors: Vec<(i64, AttemptResponse)>,
}

/// A run with its recorded messages, the messages still on their way, and the failure
/// callback of a failed run.
#[derive(Debug, Clone, PartialEq)]
pub struct RunWithSteps {
    pub run: RunRecord,
    pub steps: Vec<StepRecord>,
    pub pending: Vec<PendingStep>,
    pub failure_callback: Option<Message>,
}

/// A step waiting for an event (`context.waitForEvent`, `waitForWebhook`): when the event comes
/// (or its deadline passes) the step's result is published to the run, built from `step`.
#[derive(Debug, Clone, PartialEq)]
pub struct NewWaiter {
    pub user_id: String,
    pub event_id: String,
    pub run_id: String,
    pub created_at: i64,
    pub deadline: i64,
    /// The wait step as the SDK sent it (JSON): `stepId`, `stepName`, `stepType`, `concurrent`.
    pub step: String,
    /// The message the event publishes (its body is set then), and the one the deadline does.
    pub on_event: MessageSpec,
    pub on_timeout: MessageSpec,
    /// What `GET /v2/waiters/{eventId}` shows of it.
    pub view: WaiterView,
    /// The most waiters the user may have at once (this one refused at that many).
    pub max_waiters: usize,
    /// A wait for a webhook's call (`waitForWebhook`): webhook calls, which come without a
    /// token, may wake only such waits.
    pub webhook: bool,
    /// The limits of the run its result is appended to.
    pub run_limits: RunLimits,
}

/// A waiter as the API shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WaiterView {
    pub url: String,
    /// Unix seconds.
    pub deadline: i64,
    pub headers: HeaderList,
    pub timeout_url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_body: Option<String>,
    pub timeout_headers: HeaderList,
}

/// What registering a waiter did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitOutcome {
    Waiting,
    /// An event for the run had come before the wait: the step's result is published already.
    Resolved(MessageId),
    /// The run is unknown or has ended; nothing was stored.
    RunNotActive,
    /// The user has the most waiters it may; nothing was stored.
    TooManyWaiters,
}

/// An event for waiters: whose, which, for which run (every run waiting on it, without one),
/// its data, and whether it is a webhook's call (which came without a token).
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub user_id: String,
    pub event_id: String,
    pub run_id: Option<String>,
    pub data: Bytes,
    pub from_webhook: bool,
}

/// What a notify did.
#[derive(Debug, Clone, PartialEq)]
pub enum NotifyOutcome {
    Woke(Vec<Notified>),
    /// No waiter took the run-scoped event: it is stored for the run's next wait on it.
    Stored,
    /// No waiter took the run-scoped event, and the run holds the most events it may.
    TooManyStored,
    /// The run-scoped event names a run that is unknown or has ended.
    RunNotActive,
}

/// A waiter an event woke, with the message that carries the event to its run.
#[derive(Debug, Clone, PartialEq)]
pub struct Notified {
    pub waiter: WaiterView,
    pub message_id: MessageId,
    /// Why the message could not be published (its run ended meanwhile).
    pub error: Option<String>,
}

#[async_trait]
pub trait WorkflowStore: Send + Sync {
    /// The latest run with this id: a run id names one started run at a time, and a new run
    /// once the last one ended.
    async fn get_run(&self, user_id: &str, run_id: &str) -> Result<Option<RunRecord>>;

    /// Every record of the latest run with this id, with the run.
    async fn run_records(&self, user_id: &str, run_id: &str) -> Result<Option<(RunRecord, Vec<StepRecord>)>>;

    /// The run message `message_id` belongs to, with the records `wanted` (read on the engine's
    /// connections, which client reads cannot take: it builds deliveries).
    async fn message_run(
        &self,
        user_id: &str,
        message_id: MessageId,
        wanted: WantedRecords,
    ) -> Result<Option<(RunRecord, Vec<StepRecord>)>>;

    /// Ends a started run: records its state (and response), cancels its unfinished messages
    /// (on success, those not being delivered right now: the delivery that completes the run
    /// is usually still waiting for its answer) and its waiters, and publishes the reply to the
    /// run that invoked it, if one did — all in one commit. Durable on return.
    async fn end_run(&self, user_id: &str, run_id: &str, end: RunEnd, now: i64) -> Result<RunEndOutcome>;

    /// Cancels the started runs matching `filter`, oldest first, at most `limit`; returns how
    /// many. Durable on return.
    async fn cancel_runs(&self, user_id: &str, filter: RunFilter, limit: Option<usize>, now: i64) -> Result<u64>;

    /// Registers a waiter, or, when a run-scoped event for it was stored before (see
    /// [`WorkflowStore::notify`]), consumes that event and publishes the result at once. Durable
    /// on return.
    async fn add_waiter(&self, waiter: NewWaiter) -> Result<WaitOutcome>;

    /// Wakes the waiters of the event (those of its run only, when it names one; only waits
    /// for a webhook, when it is a webhook's call): each is removed and its result published to
    /// its run, within `run_limits`. A run-scoped event no waiter took is stored for the run's
    /// next wait on it (up to `max_stored` such events per run and kind). Durable on return.
    async fn notify(&self, event: Event, now: i64, max_stored: usize, run_limits: RunLimits) -> Result<NotifyOutcome>;

    /// The waiters of `event_id`, oldest first, at most `limit`, ending once their views take
    /// `max_bytes` (after at least one).
    async fn waiters(&self, user_id: &str, event_id: &str, limit: usize, max_bytes: usize) -> Result<Vec<WaiterView>>;

    /// Publishes the timeouts of waiters whose deadline is at or before `now` (at most `limit`)
    /// and removes them; returns how many. Durable on return.
    async fn expire_waiters(&self, now: i64, limit: usize, run_limits: RunLimits) -> Result<u64>;

    /// Calls the failure function of the run that failed with DLQ entry `dlq_id` again: its
    /// failure callback is stored anew, in that run. Returns the run's id and creation time;
    /// `None` when the entry is gone or the run had no failure callback. Durable on return.
    async fn call_failure_function_again(&self, user_id: &str, dlq_id: &str, now: i64)
    -> Result<Option<(String, i64)>>;

    /// The run that failed with the DLQ entry `dlq_id`.
    async fn failed_run(&self, user_id: &str, dlq_id: &str) -> Result<Option<FailedRun>>;

    /// The earliest deadline of any waiter.
    async fn next_waiter_deadline(&self) -> Result<Option<i64>>;

    /// A page of runs, latest first, each with its steps (whole: a step's body is the JSON its
    /// view is made of); ends by `page.max_bytes` too, counting the steps' bodies.
    async fn list_runs(&self, user_id: &str, filter: &RunFilter, page: &PageRequest) -> Result<Page<RunWithSteps>>;
}
