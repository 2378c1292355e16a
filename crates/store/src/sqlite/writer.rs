//! The single writer thread and its group commit.
//!
//! Every write is a [`WriteOp`] sent over one channel. The writer takes everything queued,
//! applies them in one transaction, commits once, and hands the batch to the sync thread, which
//! syncs the WAL (one fsync for every batch committed meanwhile), then reports the committed
//! scheduling changes to the scheduler and answers the waiting callers — in that order, so that
//! a published message is known to the scheduler before its publisher hears back (`syncer`).
//! Ops never fail for business reasons (duplicates, missing DLQ entries are outcomes), so an op
//! error means a storage failure: the whole batch is rolled back and every caller in it gets
//! the error, which keeps savepoints (and their statement journals) off the hot path.
//! The exception is the rare op whose statement a client shapes (a filtered cancel, a queue
//! delete): it runs in its own savepoint, so that its failure fails only itself.

use super::syncer::{Committed, Syncer};
use super::{checkpoint, ops, recovery, resources, schedules, waiters, workflow_ops};
pub(crate) use crate::batch::{Effects, MAX_BATCH, Pending, WriteOp};
use crate::error::{Result, StoreError};
use crate::model::*;
use rusqlite::{Connection, TransactionBehavior};
use std::sync::Arc;
use tern_core::MessageId;
use tokio::sync::mpsc;

pub struct Writer {
    pub connection: Connection,
    pub scheduling: Option<Arc<dyn Scheduling>>,
    /// The next enqueue sequence number.
    pub next_seq: u64,
    /// Set by the checkpoint thread when the WAL has grown long.
    pub catch_up: Arc<checkpoint::CatchUp>,
    /// Syncs each committed batch, then reports it.
    pub syncer: Syncer,
    /// The data directory's lock, held for as long as the database is open for writing.
    #[expect(dead_code, reason = "held, never read: dropping it releases the directory")]
    pub lock: std::fs::File,
}

impl Writer {
    pub fn run(mut self, mut receiver: mpsc::Receiver<WriteOp>) {
        while let Some(first) = receiver.blocking_recv() {
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match receiver.try_recv() {
                    Ok(op) => batch.push(op),
                    Err(_) => break,
                }
            }
            let stop = batch.iter().any(|op| matches!(op, WriteOp::Stop { .. }));
            self.commit_batch(batch);
            if stop {
                break;
            }
            self.catch_up.run_if_asked(&self.connection, receiver.is_empty());
        }
        self.syncer.stop();
    }

    fn commit_batch(&mut self, batch: Vec<WriteOp>) {
        let started = std::time::Instant::now();
        let ops = batch.len();
        if let Some(error) = self.syncer.failure() {
            // A failed sync is final (see `syncer`): nothing more is written or reported.
            let answers = batch.into_iter().map(|op| Pending::failed(op, &error)).collect();
            self.syncer.hand_over(Committed { scheduling: None, changes: Vec::new(), answers, commit: Err(error) });
            return;
        }
        let seq_before = self.next_seq;
        if batch.iter().any(WriteOp::cancels) {
            // A cancel asks the scheduler which attempts run; it must know every earlier batch.
            self.syncer.wait_landed();
        }
        let mut effects = Effects::default();
        let mut pending = Vec::with_capacity(batch.len());
        let mut attached = None;
        let commit = (|| -> Result<()> {
            let mut transaction = self.connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let mut failure: Option<StoreError> = None;
            for op in batch {
                if let Some(error) = &failure {
                    pending.push(Pending::failed(op, error));
                    continue;
                }
                if matches!(op, WriteOp::Attach { .. }) {
                    // The recovery scan reads everything committed so far, earlier ops included.
                    effects.changes.clear();
                }
                if op.needs_savepoint() {
                    // Client-shaped statements (filters) get a savepoint, so that one of them
                    // failing fails only itself, never the publishes sharing its commit.
                    let before = (effects.changes.len(), effects.held.len(), self.next_seq);
                    let savepoint = transaction.savepoint()?;
                    let context = Context {
                        connection: &savepoint,
                        scheduling: self.scheduling.as_deref(),
                        next_seq: &mut self.next_seq,
                    };
                    let (answer, error) = apply(context, op, &mut effects, &mut attached);
                    if let Some(error) = error {
                        drop(savepoint);
                        pending.push(answer);
                        if transaction.is_autocommit() {
                            // SQLite rolled the whole transaction back (a full disk, an I/O
                            // error): the ops before this one are gone too, so all of it fails.
                            failure = Some(error);
                            continue;
                        }
                        release(self.scheduling.as_deref(), &effects.held[before.1..]);
                        effects.changes.truncate(before.0);
                        effects.held.truncate(before.1);
                        self.next_seq = before.2;
                    } else {
                        savepoint.commit()?;
                        pending.push(answer);
                    }
                    continue;
                }
                let context = Context {
                    connection: &transaction,
                    scheduling: self.scheduling.as_deref(),
                    next_seq: &mut self.next_seq,
                };
                let (answer, error) = apply(context, op, &mut effects, &mut attached);
                failure = error;
                pending.push(answer);
            }
            match failure {
                // No savepoints on the hot path: one failed statement fails the whole batch.
                Some(error) => Err(error),
                None => Ok(transaction.commit()?),
            }
        })();

        let changes = match &commit {
            Ok(()) => {
                if let Some(scheduling) = attached.take() {
                    self.scheduling = Some(scheduling);
                }
                effects.changes
            }
            Err(error) => {
                tracing::error!(%error, ops, "a write batch failed and was rolled back; its callers get an error");
                self.next_seq = seq_before;
                release(self.scheduling.as_deref(), &effects.held);
                // Nothing to report: a recorded attempt's outcome goes back to the engine with
                // the error (its message stays claimed until the engine records it again).
                Vec::new()
            }
        };
        self.syncer.hand_over(Committed { scheduling: self.scheduling.clone(), changes, answers: pending, commit });
        tracing::trace!(ops, micros = started.elapsed().as_micros() as u64, "write batch");
    }
}

fn release(scheduling: Option<&dyn Scheduling>, held: &[MessageId]) {
    if let Some(scheduling) = scheduling {
        for id in held {
            scheduling.release_hold(*id);
        }
    }
}

/// What an op may use: the transaction, the scheduler (for cancels) and the sequence.
pub struct Context<'a> {
    pub connection: &'a Connection,
    pub scheduling: Option<&'a dyn Scheduling>,
    pub next_seq: &'a mut u64,
}

/// Applies one op; returns its pending answer and, if it failed, why (which fails the batch).
fn apply(
    context: Context<'_>,
    op: WriteOp,
    effects: &mut Effects,
    attached: &mut Option<Arc<dyn Scheduling>>,
) -> (Pending, Option<StoreError>) {
    fn settle<T>(result: Result<T>, make: impl FnOnce(Result<T>) -> Pending) -> (Pending, Option<StoreError>) {
        let error = result.as_ref().err().cloned();
        (make(result), error)
    }
    let connection = context.connection;
    match op {
        WriteOp::Attach { scheduling, now, reply } => {
            let result = recovery::scan(connection, now, effects);
            if result.is_ok() {
                *attached = Some(scheduling);
            }
            settle(result, |r| Pending::Unit(reply, r))
        }
        WriteOp::Insert { messages, reply } => {
            let result = ops::insert_messages(context, messages, effects);
            if let Ok(outcomes) = &result
                && outcomes.iter().any(|outcome| outcome.refuses_insert())
            {
                // Rolls back the op's savepoint (`needs_savepoint`): nothing of it is stored, and
                // the caller reads why from the outcomes.
                let refused = StoreError::InvalidInput("a workflow run refused a message of the insert".into());
                return (Pending::Insert(reply, result), Some(refused));
            }
            settle(result, |r| Pending::Insert(reply, r))
        }
        WriteOp::AttemptStarted { user_id, id, at } => {
            settle(ops::log_attempt_started(connection, &user_id, id, at), |_| Pending::Nothing)
        }
        WriteOp::SaveFlowWindows(windows) => {
            settle(resources::save_flow_windows(connection, &windows), |_| Pending::Nothing)
        }
        WriteOp::AttemptFinished { outcome, reply } => {
            settle(ops::finish_attempt(context, &outcome, effects), |r| Pending::Recorded(reply, outcome, r))
        }
        WriteOp::Cancel { user_id, selection, now, reply } => {
            settle(ops::cancel(context, &user_id, selection, now, effects), |r| Pending::Cancel(reply, r))
        }
        WriteOp::DeleteDlq { user_id, dlq_ids, reply } => {
            settle(resources::delete_dlq(connection, &user_id, &dlq_ids), |r| Pending::Count(reply, r))
        }
        WriteOp::SaveKeys { user_id, keys, reply } => {
            settle(resources::save_keys(connection, &user_id, &keys), |r| Pending::Unit(reply, r))
        }
        WriteOp::UpsertQueue { user_id, name, parallelism, paused, now, reply } => {
            settle(resources::upsert_queue(connection, &user_id, &name, parallelism, paused, now), |r| {
                Pending::Unit(reply, r)
            })
        }
        WriteOp::DeleteQueue { user_id, name, now, reply } => {
            settle(ops::delete_queue(context, &user_id, &name, now, effects), |r| Pending::Flag(reply, r))
        }
        WriteOp::SaveFlow { user_id, key, settings, reply } => {
            settle(resources::save_flow(connection, &user_id, &key, &settings), |r| Pending::Unit(reply, r))
        }
        WriteOp::ForgetFlows { keys, reply } => {
            settle(resources::forget_flows(connection, &keys), |r| Pending::Unit(reply, r))
        }
        WriteOp::AddEndpoints { user_id, group, endpoints, now, limits, reply } => {
            settle(resources::add_endpoints(connection, &user_id, &group, &endpoints, now, limits), |r| {
                Pending::Endpoints(reply, r)
            })
        }
        WriteOp::RemoveEndpoints { user_id, group, endpoints, now, reply } => {
            settle(resources::remove_endpoints(connection, &user_id, &group, &endpoints, now), |r| {
                Pending::Unit(reply, r)
            })
        }
        WriteOp::SetGroupHeaders { user_id, group, headers, now, reply } => {
            settle(resources::set_group_headers(connection, &user_id, &group, &headers, now), |r| {
                Pending::Flag(reply, r)
            })
        }
        WriteOp::DeleteGroup { user_id, group, reply } => {
            settle(resources::delete_group(connection, &user_id, &group), |r| Pending::Flag(reply, r))
        }
        WriteOp::UpsertSchedule { schedule, limit, dedup, reply } => {
            settle(schedules::upsert(connection, &schedule, limit, dedup.as_ref()), |r| Pending::Upsert(reply, r))
        }
        WriteOp::DeleteSchedule { user_id, id, reply } => {
            settle(schedules::delete(connection, &user_id, &id), |r| Pending::Flag(reply, r))
        }
        WriteOp::PauseSchedule { user_id, id, paused, next_tick_at, reply } => {
            settle(schedules::set_paused(connection, &user_id, &id, paused, next_tick_at), |r| Pending::Flag(reply, r))
        }
        WriteOp::FireSchedules { fires, reply } => {
            settle(schedules::fire(context, fires, effects), |r| Pending::Flags(reply, r))
        }
        WriteOp::Purge { now, retention, reply } => {
            settle(resources::purge(connection, now, retention), |r| Pending::Purge(reply, r))
        }
        WriteOp::EndRun { user_id, run_id, end, now, reply } => {
            let result = workflow_ops::end_run(context, &user_id, &run_id, end, now, effects);
            settle(result, |r| Pending::RunEnded(reply, r))
        }
        WriteOp::CancelRuns { user_id, filter, limit, now, reply } => {
            let result = workflow_ops::cancel_runs(context, &user_id, &filter, limit, now, effects);
            settle(result, |r| Pending::Count(reply, r))
        }
        WriteOp::AddWaiter { waiter, reply } => {
            settle(waiters::add_waiter(context, &waiter, effects), |r| Pending::Waited(reply, r))
        }
        WriteOp::Notify { event, now, max_stored, run_limits, reply } => {
            let result = waiters::notify(context, &event, now, max_stored, run_limits, effects);
            settle(result, |r| Pending::Notified(reply, r))
        }
        WriteOp::CallFailureFunctionAgain { user_id, dlq_id, now, reply } => {
            let result = workflow_ops::call_failure_function_again(context, &user_id, &dlq_id, now, effects);
            settle(result, |r| Pending::RunNamed(reply, r))
        }
        WriteOp::ExpireWaiters { now, limit, run_limits, reply } => {
            settle(waiters::expire(context, now, limit, run_limits, effects), |r| Pending::Count(reply, r))
        }
        WriteOp::Stop { reply } => (Pending::Unit(reply, Ok(())), None),
    }
}

#[cfg(test)]
#[path = "writer_tests.rs"]
mod tests;
