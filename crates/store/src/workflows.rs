//! Workflow runs as the store keeps them (workflow-protocol.md §1): each run's state and
//! trigger-time configuration, and its recorded messages in acceptance order. A run is created,
//! and its steps appended, by the inserts of the messages that carry them
//! ([`NewMessage::run`], `MessageSpec::workflow`), in the same commit.

use crate::error::Result;
use crate::model::{NewMessage, Page, PageRequest};
use async_trait::async_trait;
use bytes::Bytes;
use tern_core::workflow::{RunConfig, RunState, StepRecord};
use tern_core::{AttemptResponse, Message, MessageId, MessageState};

/// The run an Init message creates.
#[derive(Debug, Clone, PartialEq)]
pub struct NewRun {
    pub run_id: String,
    pub url: String,
    pub config: RunConfig,
    /// The envelope of the run that invoked this one (JSON text), if it was invoked.
    pub invoker: Option<String>,
    /// Replace the configuration of the run if it exists (an Init the SDK published again,
    /// `Upstash-Workflow-Trigger-By-Sdk`), instead of reporting a duplicate.
    pub replace: bool,
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
    pub invoker: Option<String>,
    /// The DLQ entry of the message whose failure failed the run.
    pub dlq_id: Option<String>,
    pub caller_ip: Option<String>,
    /// Recorded messages and the bytes of their bodies.
    pub step_count: u64,
    pub step_bytes: u64,
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
    /// Runs whose URL starts with this (or equals it, with `url_exact`).
    pub url: Option<String>,
    pub url_exact: bool,
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

#[async_trait]
pub trait WorkflowStore: Send + Sync {
    /// The latest run with this id: a run id names one started run at a time, and a new run
    /// once the last one ended.
    async fn get_run(&self, user_id: &str, run_id: &str) -> Result<Option<RunRecord>>;

    /// [`WorkflowStore::get_run`] for the engine itself (building a delivery), on connections
    /// client reads cannot take.
    async fn get_run_for_engine(&self, user_id: &str, run_id: &str) -> Result<Option<RunRecord>>;

    /// The latest run's recorded messages from the first through the one recorded for `through`
    /// (all of them when `None`; only the first when `through` has no record), with the run.
    /// `for_engine` reads on the engine's connections.
    async fn run_steps(
        &self,
        user_id: &str,
        run_id: &str,
        through: Option<MessageId>,
        for_engine: bool,
    ) -> Result<Option<(RunRecord, Vec<StepRecord>)>>;

    /// Ends a started run: records its state (and response), cancels its unfinished messages
    /// (on success, those not being delivered right now: the delivery that completes the run
    /// is usually still waiting for its answer), then stores `then` (messages the end
    /// produces, such as an invoker's result), all in one commit. Durable on return.
    async fn end_run(
        &self,
        user_id: &str,
        run_id: &str,
        end: RunEnd,
        now: i64,
        then: Vec<NewMessage>,
    ) -> Result<RunEndOutcome>;

    /// Cancels the started runs matching `filter`, oldest first, at most `limit`; returns how
    /// many. Durable on return.
    async fn cancel_runs(&self, user_id: &str, filter: RunFilter, limit: Option<usize>, now: i64) -> Result<u64>;

    /// A page of runs, latest first, each with its steps (whole: a step's body is the JSON its
    /// view is made of); ends by `page.max_bytes` too, counting the steps' bodies.
    async fn list_runs(&self, user_id: &str, filter: &RunFilter, page: &PageRequest) -> Result<Page<RunWithSteps>>;
}
