//! The writes every backend's writer takes, batched into one transaction: the ops, their
//! pending answers (sent once the commit is durable) and what they change for scheduling.

use crate::error::{NotRecorded, Result, StoreError};
use crate::model::*;
use crate::workflows::{Event, NewWaiter, NotifyOutcome, RunEnd, RunEndOutcome, RunFilter, RunLimits, WaitOutcome};
use std::sync::Arc;
use tern_core::{HeaderList, MessageId};
use tokio::sync::oneshot;

/// The most ops one commit takes; more wait for the next commit.
pub const MAX_BATCH: usize = 4096;

pub type Reply<T> = oneshot::Sender<Result<T>>;

/// The answer to an attempt's outcome: recorded, or handed back.
pub type RecordReply = oneshot::Sender<Result<(), NotRecorded>>;

pub enum WriteOp {
    /// Connects the scheduler: reports every unfinished message, then every later change.
    Attach {
        scheduling: Arc<dyn Scheduling>,
        now: i64,
        reply: Reply<()>,
    },
    Insert {
        messages: Vec<NewMessage>,
        reply: Reply<Vec<InsertOutcome>>,
    },
    AttemptStarted {
        user_id: String,
        id: MessageId,
        at: i64,
    },
    AttemptFinished {
        outcome: Box<AttemptOutcome>,
        reply: RecordReply,
    },
    SaveFlowWindows(Vec<FlowWindow>),
    Cancel {
        user_id: String,
        selection: CancelSelection,
        now: i64,
        reply: Reply<CancelOutcome>,
    },
    DeleteDlq {
        user_id: String,
        dlq_ids: Vec<String>,
        reply: Reply<u64>,
    },
    SaveKeys {
        user_id: String,
        keys: StoredKeys,
        reply: Reply<()>,
    },
    UpsertQueue {
        user_id: String,
        name: String,
        parallelism: u32,
        paused: bool,
        now: i64,
        reply: Reply<()>,
    },
    DeleteQueue {
        user_id: String,
        name: String,
        now: i64,
        reply: Reply<bool>,
    },
    SaveFlow {
        user_id: String,
        key: String,
        settings: FlowSettings,
        reply: Reply<()>,
    },
    ForgetFlows {
        keys: Vec<(String, String)>,
        reply: Reply<()>,
    },
    AddEndpoints {
        user_id: String,
        group: String,
        endpoints: Vec<Endpoint>,
        now: i64,
        limits: GroupLimits,
        reply: Reply<EndpointsAdded>,
    },
    RemoveEndpoints {
        user_id: String,
        group: String,
        endpoints: Vec<Endpoint>,
        now: i64,
        reply: Reply<()>,
    },
    SetGroupHeaders {
        user_id: String,
        group: String,
        headers: HeaderList,
        now: i64,
        reply: Reply<bool>,
    },
    DeleteGroup {
        user_id: String,
        group: String,
        reply: Reply<bool>,
    },
    UpsertSchedule {
        schedule: Box<ScheduleRecord>,
        limit: usize,
        dedup: Option<DedupClaim>,
        reply: Reply<ScheduleUpsert>,
    },
    DeleteSchedule {
        user_id: String,
        id: String,
        reply: Reply<bool>,
    },
    PauseSchedule {
        user_id: String,
        id: String,
        paused: bool,
        next_tick_at: Option<i64>,
        reply: Reply<bool>,
    },
    FireSchedules {
        fires: Vec<ScheduleFire>,
        reply: Reply<Vec<bool>>,
    },
    Purge {
        now: i64,
        retention: Retention,
        reply: Reply<PurgeStats>,
    },
    EndRun {
        user_id: String,
        run_id: String,
        end: RunEnd,
        now: i64,
        reply: Reply<RunEndOutcome>,
    },
    CancelRuns {
        user_id: String,
        filter: RunFilter,
        limit: Option<usize>,
        now: i64,
        reply: Reply<u64>,
    },
    AddWaiter {
        waiter: Box<NewWaiter>,
        reply: Reply<WaitOutcome>,
    },
    Notify {
        event: Box<Event>,
        now: i64,
        max_stored: usize,
        run_limits: RunLimits,
        reply: Reply<NotifyOutcome>,
    },
    CallFailureFunctionAgain {
        user_id: String,
        dlq_id: String,
        now: i64,
        reply: Reply<Option<(String, i64)>>,
    },
    ExpireWaiters {
        now: i64,
        limit: usize,
        run_limits: RunLimits,
        reply: Reply<u64>,
    },
    /// Commits everything queued before it, then ends the writer (closing the database).
    Stop {
        reply: Reply<()>,
    },
}

impl WriteOp {
    /// Whether the op may cancel messages: it asks the scheduler which attempts run, so the
    /// scheduler must have heard of every earlier batch. A workflow message failing for good
    /// cancels the rest of its run.
    pub fn cancels(&self) -> bool {
        match self {
            WriteOp::Cancel { .. }
            | WriteOp::DeleteQueue { .. }
            | WriteOp::EndRun { .. }
            | WriteOp::CancelRuns { .. } => true,
            WriteOp::AttemptFinished { outcome, .. } => {
                outcome.message.spec.workflow.is_some() && matches!(outcome.next, NextStep::Failed { .. })
            }
            _ => false,
        }
    }

    /// Whether the op runs in a savepoint of its own, so that its failure fails only itself:
    /// statements a client shapes (filters), and inserts of workflow messages, which store all
    /// or nothing when a run refuses one of them.
    pub fn needs_savepoint(&self) -> bool {
        match self {
            WriteOp::Cancel { .. }
            | WriteOp::DeleteQueue { .. }
            | WriteOp::EndRun { .. }
            | WriteOp::CancelRuns { .. } => true,
            WriteOp::Insert { messages, .. } => messages.iter().any(|message| message.spec.workflow.is_some()),
            _ => false,
        }
    }
}

/// What an op changed for scheduling, made visible once its commit is durable.
#[derive(Default)]
pub struct Effects {
    pub changes: Vec<Change>,
    /// Messages held from starting while their cancel commits (released if it fails).
    pub held: Vec<MessageId>,
}

/// An answer waiting for the commit (and its sync).
pub enum Pending {
    Insert(Reply<Vec<InsertOutcome>>, Result<Vec<InsertOutcome>>),
    Cancel(Reply<CancelOutcome>, Result<CancelOutcome>),
    Count(Reply<u64>, Result<u64>),
    Flag(Reply<bool>, Result<bool>),
    Unit(Reply<()>, Result<()>),
    Purge(Reply<PurgeStats>, Result<PurgeStats>),
    Upsert(Reply<ScheduleUpsert>, Result<ScheduleUpsert>),
    Endpoints(Reply<EndpointsAdded>, Result<EndpointsAdded>),
    Flags(Reply<Vec<bool>>, Result<Vec<bool>>),
    RunEnded(Reply<RunEndOutcome>, Result<RunEndOutcome>),
    Waited(Reply<WaitOutcome>, Result<WaitOutcome>),
    RunNamed(Reply<Option<(String, i64)>>, Result<Option<(String, i64)>>),
    Notified(Reply<NotifyOutcome>, Result<NotifyOutcome>),
    /// An attempt's outcome, kept until the commit is known so that a failure can hand it back.
    Recorded(RecordReply, Box<AttemptOutcome>, Result<()>),
    Nothing,
}

impl Pending {
    /// The answer of an op skipped because an earlier op of its batch failed.
    pub fn failed(op: WriteOp, message: &StoreError) -> Pending {
        fn error<T>(failure: &StoreError) -> Result<T> {
            Err(failure.clone())
        }
        match op {
            WriteOp::Insert { reply, .. } => Pending::Insert(reply, error(message)),
            WriteOp::Cancel { reply, .. } => Pending::Cancel(reply, error(message)),
            WriteOp::AddWaiter { reply, .. } => Pending::Waited(reply, error(message)),
            WriteOp::CallFailureFunctionAgain { reply, .. } => Pending::RunNamed(reply, error(message)),
            WriteOp::Notify { reply, .. } => Pending::Notified(reply, error(message)),
            WriteOp::DeleteDlq { reply, .. }
            | WriteOp::CancelRuns { reply, .. }
            | WriteOp::ExpireWaiters { reply, .. } => Pending::Count(reply, error(message)),
            WriteOp::EndRun { reply, .. } => Pending::RunEnded(reply, error(message)),
            WriteOp::DeleteQueue { reply, .. }
            | WriteOp::DeleteGroup { reply, .. }
            | WriteOp::SetGroupHeaders { reply, .. }
            | WriteOp::DeleteSchedule { reply, .. }
            | WriteOp::PauseSchedule { reply, .. } => Pending::Flag(reply, error(message)),
            WriteOp::UpsertSchedule { reply, .. } => Pending::Upsert(reply, error(message)),
            WriteOp::AddEndpoints { reply, .. } => Pending::Endpoints(reply, error(message)),
            WriteOp::FireSchedules { reply, .. } => Pending::Flags(reply, error(message)),
            WriteOp::Purge { reply, .. } => Pending::Purge(reply, error(message)),
            WriteOp::Attach { reply, .. }
            | WriteOp::SaveKeys { reply, .. }
            | WriteOp::UpsertQueue { reply, .. }
            | WriteOp::SaveFlow { reply, .. }
            | WriteOp::ForgetFlows { reply, .. }
            | WriteOp::RemoveEndpoints { reply, .. }
            | WriteOp::Stop { reply } => Pending::Unit(reply, error(message)),
            WriteOp::AttemptFinished { outcome, reply } => Pending::Recorded(reply, outcome, error(message)),
            WriteOp::AttemptStarted { .. } | WriteOp::SaveFlowWindows(_) => Pending::Nothing,
        }
    }

    pub fn send(self, commit: &Result<()>) {
        fn finish<T>(reply: Reply<T>, result: Result<T>, commit: &Result<()>) {
            let result = match commit {
                Ok(()) => result,
                Err(error) => Err(error.clone()),
            };
            let _ = reply.send(result);
        }
        match self {
            Pending::Insert(reply, result) => finish(reply, result, commit),
            Pending::Cancel(reply, result) => finish(reply, result, commit),
            Pending::Count(reply, result) => finish(reply, result, commit),
            Pending::Flag(reply, result) => finish(reply, result, commit),
            Pending::Unit(reply, result) => finish(reply, result, commit),
            Pending::Purge(reply, result) => finish(reply, result, commit),
            Pending::Upsert(reply, result) => finish(reply, result, commit),
            Pending::Endpoints(reply, result) => finish(reply, result, commit),
            Pending::Flags(reply, result) => finish(reply, result, commit),
            Pending::RunEnded(reply, result) => finish(reply, result, commit),
            Pending::Waited(reply, result) => finish(reply, result, commit),
            Pending::RunNamed(reply, result) => finish(reply, result, commit),
            Pending::Notified(reply, result) => finish(reply, result, commit),
            Pending::Recorded(reply, outcome, result) => {
                let answer = match commit.clone().and(result) {
                    Ok(()) => Ok(()),
                    Err(error) => Err(NotRecorded { error, outcome: Some(outcome) }),
                };
                let _ = reply.send(answer);
            }
            Pending::Nothing => {}
        }
    }
}
