//! The writer task and its group commit, as in the embedded store (`sqlite/writer.rs`): every
//! write is a [`WriteOp`] on one channel; the writer takes everything queued, applies it in one
//! transaction on its own connection, commits (PostgreSQL makes the commit durable before it
//! returns), reports the committed scheduling changes, then answers the callers — in that order,
//! so that a published message is known to the scheduler before its publisher hears back.
//! An op error fails the whole batch, except for ops in a savepoint of their own
//! ([`WriteOp::needs_savepoint`]).

use super::client::{Cached, StatementCache};
use super::{Connector, node_lock, ops, recovery, resources, schedules, waiters, workflow_ops};
use crate::batch::{Effects, MAX_BATCH, Pending, WriteOp};
use crate::error::{Result, StoreError};
use crate::model::*;
use futures_util::FutureExt;
use std::sync::Arc;
use tern_core::MessageId;
use tokio::sync::mpsc;
use tokio_postgres::Client;

/// What an op may use: the writer's connection, inside the batch's transaction (and the op's
/// savepoint, if it has one), and the scheduler (for cancels).
#[derive(Clone, Copy)]
pub struct Context<'a> {
    pub tx: &'a Cached<'a, Client>,
    pub scheduling: Option<&'a dyn Scheduling>,
}

pub struct Writer {
    pub connector: Connector,
    pub client: Option<Client>,
    /// The statements prepared on `client`.
    pub statements: StatementCache,
    pub scheduling: Option<Arc<dyn Scheduling>>,
    /// The epoch at which this node became the active one (see `node_lock`).
    pub epoch: i64,
    /// Set when another node took over: every later write fails with it.
    pub taken_over: Option<StoreError>,
    /// The number of the last batch begun, written in its transaction (`tern_nodes.batch`), so
    /// that a batch whose `COMMIT` got no answer can learn whether it committed.
    pub batches: i64,
}

/// How a batch ended, when it failed.
enum Failed {
    /// Rolled back (or never begun): nothing of it is stored.
    RolledBack(StoreError),
    /// `COMMIT` was sent and got no answer: it may or may not have committed.
    Unknown(StoreError),
}

impl Writer {
    pub async fn run(mut self, mut receiver: mpsc::Receiver<WriteOp>) {
        while let Some(first) = receiver.recv().await {
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match receiver.try_recv() {
                    Ok(op) => batch.push(op),
                    Err(_) => break,
                }
            }
            let stop = batch.iter().any(|op| matches!(op, WriteOp::Stop { .. }));
            self.commit_batch(batch).await;
            if stop {
                break;
            }
        }
    }

    /// The writer's connection, opened again when the last one broke (the database
    /// restarted, the network dropped): the batch that found it broken failed, the next one
    /// tries again.
    async fn connection(&mut self) -> Result<&mut Client> {
        if let Some(error) = &self.taken_over {
            return Err(error.clone());
        }
        if self.client.as_ref().is_none_or(Client::is_closed) {
            self.client = None;
            let client = self.connector.connect().await?;
            // The old connection's lock went with it: this node is still the active one only
            // if nobody took over meanwhile.
            if let Err(error) = node_lock::resume(&client, self.epoch).await {
                if matches!(error, StoreError::Unavailable(_)) {
                    tracing::error!(%error, "this node refuses writes until it is restarted");
                    self.taken_over = Some(error.clone());
                }
                return Err(error);
            }
            self.client = Some(client);
            self.statements = StatementCache::default();
        }
        Ok(self.client.as_mut().expect("connected above"))
    }

    /// Whether batch `number`, whose `COMMIT` got no answer, committed: read on a new
    /// connection once this node holds its lock again (so the old session, and its commit,
    /// are over). If that cannot be told, nothing more is written until a restart loads what
    /// the database holds.
    async fn committed_after_all(&mut self, number: i64, error: StoreError) -> Result<()> {
        self.client = None;
        let written = match self.connection().await {
            Ok(client) => match client.query_one("SELECT batch FROM tern_nodes WHERE id = 1", &[]).await {
                Ok(row) => row.try_get::<_, i64>(0).ok(),
                Err(_) => None,
            },
            Err(_) => None,
        };
        match written {
            Some(written) if written == number => Ok(()),
            Some(_) => Err(error),
            None => {
                let unknown = StoreError::Unavailable(format!(
                    "the database connection broke while a commit was sent ({error}) and whether it \
                     committed cannot be told"
                ));
                tracing::error!(%unknown, "this node refuses writes until it is restarted");
                self.taken_over = Some(unknown.clone());
                Err(unknown)
            }
        }
    }

    async fn commit_batch(&mut self, batch: Vec<WriteOp>) {
        let started = std::time::Instant::now();
        let ops = batch.len();
        let scheduling = self.scheduling.clone();
        let mut effects = Effects::default();
        let mut pending = Vec::with_capacity(batch.len());
        let mut attached = None;
        self.batches += 1;
        let number = self.batches;
        let applied = match self.connection().await {
            Ok(_) => {
                let client = self.client.as_mut().expect("connected");
                let statements = &self.statements;
                let context = (scheduling.as_deref(), &mut effects, &mut pending, &mut attached);
                apply_batch(client, statements, number, batch, context).await
            }
            Err(error) => {
                pending.extend(batch.into_iter().map(|op| Pending::failed(op, &error)));
                Err(Failed::RolledBack(error))
            }
        };
        let commit = match applied {
            Ok(()) => Ok(()),
            Err(Failed::RolledBack(error)) => Err(error),
            Err(Failed::Unknown(error)) => self.committed_after_all(number, error).await,
        };
        let changes = match &commit {
            Ok(()) => {
                if let Some(attached) = attached.take() {
                    self.scheduling = Some(attached);
                }
                effects.changes
            }
            Err(error) => {
                tracing::error!(%error, ops, "a write batch failed and was rolled back; its callers get an error");
                release(self.scheduling.as_deref(), &effects.held);
                Vec::new()
            }
        };
        if let Some(scheduling) = &self.scheduling
            && !changes.is_empty()
        {
            scheduling.committed(changes);
        }
        for answer in pending {
            answer.send(&commit);
        }
        tracing::trace!(ops, micros = started.elapsed().as_micros() as u64, "write batch");
    }
}

/// What ops record into while a batch is applied.
type Outputs<'a> =
    (Option<&'a dyn Scheduling>, &'a mut Effects, &'a mut Vec<Pending>, &'a mut Option<Arc<dyn Scheduling>>);

async fn apply_batch(
    client: &mut Client,
    statements: &StatementCache,
    number: i64,
    batch: Vec<WriteOp>,
    (scheduling, effects, pending, attached): Outputs<'_>,
) -> Result<(), Failed> {
    let client = &*client;
    // `BEGIN` (and the batch's number) goes out with the first op's statements instead of a
    // round trip of its own: one poll queues it on the connection, ahead of everything sent
    // after it; its answer is read before the commit.
    let begin_sql = format!("BEGIN; UPDATE tern_nodes SET batch = {number} WHERE id = 1");
    let mut begin = Box::pin(client.batch_execute(&begin_sql));
    let begun = begin.as_mut().now_or_never();
    if let Some(Err(error)) = begun {
        let error = StoreError::from(error);
        pending.extend(batch.into_iter().map(|op| Pending::failed(op, &error)));
        return Err(Failed::RolledBack(error));
    }
    let cached = Cached { inner: client, cache: statements };
    let context = Context { tx: &cached, scheduling };
    let mut failure: Option<StoreError> = None;
    let mut ops = batch.into_iter().peekable();
    while let Some(op) = ops.next() {
        if let Some(error) = &failure {
            pending.push(Pending::failed(op, error));
            continue;
        }
        if independent(&op) {
            // Ops on rows of their own run together: their statements go out in one stream
            // (the driver pipelines them on the connection) instead of one round trip after
            // another. The database runs them in the order sent, each op's first statement in
            // op order.
            let mut group = vec![op];
            while let Some(next) = ops.next_if(independent) {
                group.push(next);
            }
            let applied = futures_util::future::join_all(group.into_iter().map(|op| async move {
                let mut effects = Effects::default();
                let mut unused = None;
                let (answer, error) = apply(context, op, &mut effects, &mut unused).await;
                (answer, error, effects)
            }))
            .await;
            for (answer, error, op_effects) in applied {
                // The statements after a failed one fail as "transaction aborted": keep the
                // error that says why.
                failure = match (failure, error) {
                    (Some(first), Some(next)) if aborted(&first) && !aborted(&next) => Some(next),
                    (first, next) => first.or(next),
                };
                pending.push(answer);
                effects.changes.extend(op_effects.changes);
                effects.held.extend(op_effects.held);
            }
            continue;
        }
        if matches!(op, WriteOp::Attach { .. }) {
            // The recovery scan reads everything committed so far, earlier ops included.
            effects.changes.clear();
        }
        if isolated(&op) {
            // Client-shaped statements (filters, values) and workflow inserts get a savepoint,
            // so that one of them failing fails only itself, never the publishes sharing its
            // commit.
            let before = (effects.changes.len(), effects.held.len());
            if let Err(error) = client.batch_execute("SAVEPOINT op").await {
                let error = StoreError::from(error);
                pending.push(Pending::failed(op, &error));
                failure = Some(error);
                continue;
            }
            let (answer, error) = apply(context, op, effects, attached).await;
            pending.push(answer);
            let ended = match error {
                Some(_) => {
                    release(scheduling, &effects.held[before.1..]);
                    effects.changes.truncate(before.0);
                    effects.held.truncate(before.1);
                    client.batch_execute("ROLLBACK TO SAVEPOINT op").await
                }
                None => client.batch_execute("RELEASE SAVEPOINT op").await,
            };
            if let Err(error) = ended {
                // The connection itself failed: the ops before this one are gone too.
                failure = Some(error.into());
            }
            continue;
        }
        let (answer, error) = apply(context, op, effects, attached).await;
        failure = error;
        pending.push(answer);
    }
    // A future that already answered must not be polled again.
    let begin = match begun {
        Some(answer) => answer,
        None => begin.await,
    };
    if let Err(error) = begin {
        failure = failure.or(Some(error.into()));
    }
    match failure {
        Some(error) => {
            let _ = client.batch_execute("ROLLBACK").await;
            Err(Failed::RolledBack(error))
        }
        None => match client.batch_execute("COMMIT").await {
            Ok(()) => Ok(()),
            Err(error) if error.code().is_none() => Err(Failed::Unknown(error.into())),
            // The database answered: it did not commit.
            Err(error) => Err(Failed::RolledBack(error.into())),
        },
    }
}

/// Whether `op` touches only rows of its own (its messages, their log entries, callbacks and
/// queue or flow-control rows it creates idempotently), whatever runs beside it: the ops of
/// the hot path, without deduplication, DLQ entries or workflow runs, which read what other
/// ops may write.
fn independent(op: &WriteOp) -> bool {
    match op {
        WriteOp::AttemptStarted { .. } => true,
        WriteOp::Insert { messages, .. } => messages.iter().all(plain),
        WriteOp::AttemptFinished { outcome, .. } => {
            outcome.message.spec.workflow.is_none()
                && outcome.callback.as_ref().is_none_or(plain)
                && outcome.failure_callback.as_ref().is_none_or(plain)
        }
        _ => false,
    }
}

/// Whether `error` is PostgreSQL refusing a statement because an earlier one failed.
fn aborted(error: &StoreError) -> bool {
    match error {
        StoreError::Driver(source) => source
            .downcast_ref::<tokio_postgres::Error>()
            .is_some_and(|error| error.code() == Some(&tokio_postgres::error::SqlState::IN_FAILED_SQL_TRANSACTION)),
        _ => false,
    }
}

/// A message whose insert reads nothing another op writes, and whose statements may run in
/// any order with other ops' (a flow-control key's settings are the last message's, so their
/// upserts keep op order).
fn plain(message: &NewMessage) -> bool {
    message.dedup.is_none()
        && message.consumes_dlq_entry.is_none()
        && message.run.is_none()
        && message.spec.workflow.is_none()
        && message.spec.flow_control.is_none()
}

/// Ops with a savepoint of their own on this backend: besides the shared ones
/// ([`WriteOp::needs_savepoint`]), those whose values a client chose, which PostgreSQL may
/// refuse (a NUL character in a text value): their failure must fail only themselves.
fn isolated(op: &WriteOp) -> bool {
    op.needs_savepoint()
        || matches!(
            op,
            WriteOp::Notify { .. }
                | WriteOp::AddWaiter { .. }
                | WriteOp::DeleteDlq { .. }
                | WriteOp::CallFailureFunctionAgain { .. }
                | WriteOp::UpsertQueue { .. }
                | WriteOp::SaveFlow { .. }
                | WriteOp::SaveKeys { .. }
                | WriteOp::AddEndpoints { .. }
                | WriteOp::RemoveEndpoints { .. }
                | WriteOp::SetGroupHeaders { .. }
                | WriteOp::DeleteGroup { .. }
                | WriteOp::UpsertSchedule { .. }
                | WriteOp::DeleteSchedule { .. }
                | WriteOp::PauseSchedule { .. }
        )
}

fn release(scheduling: Option<&dyn Scheduling>, held: &[MessageId]) {
    if let Some(scheduling) = scheduling {
        for id in held {
            scheduling.release_hold(*id);
        }
    }
}

/// Applies one op; returns its pending answer and, if it failed, why (which fails the batch).
async fn apply(
    context: Context<'_>,
    op: WriteOp,
    effects: &mut Effects,
    attached: &mut Option<Arc<dyn Scheduling>>,
) -> (Pending, Option<StoreError>) {
    fn settle<T>(result: Result<T>, make: impl FnOnce(Result<T>) -> Pending) -> (Pending, Option<StoreError>) {
        let error = result.as_ref().err().cloned();
        (make(result), error)
    }
    let tx = context.tx;
    match op {
        WriteOp::Attach { scheduling, now, reply } => {
            let result = recovery::scan(tx, now, effects).await;
            if result.is_ok() {
                *attached = Some(scheduling);
            }
            settle(result, |r| Pending::Unit(reply, r))
        }
        WriteOp::Insert { messages, reply } => {
            let result = ops::insert_messages(context, messages, effects).await;
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
            settle(ops::log_attempt_started(tx, &user_id, id, at).await, |_| Pending::Nothing)
        }
        WriteOp::SaveFlowWindows(windows) => {
            settle(resources::save_flow_windows(tx, &windows).await, |_| Pending::Nothing)
        }
        WriteOp::AttemptFinished { outcome, reply } => {
            settle(ops::finish_attempt(context, &outcome, effects).await, |r| Pending::Recorded(reply, outcome, r))
        }
        WriteOp::Cancel { user_id, selection, now, reply } => {
            settle(ops::cancel(context, &user_id, selection, now, effects).await, |r| Pending::Cancel(reply, r))
        }
        WriteOp::DeleteDlq { user_id, dlq_ids, reply } => {
            settle(resources::delete_dlq(tx, &user_id, &dlq_ids).await, |r| Pending::Count(reply, r))
        }
        WriteOp::SaveKeys { user_id, keys, reply } => {
            settle(resources::save_keys(tx, &user_id, &keys).await, |r| Pending::Unit(reply, r))
        }
        WriteOp::UpsertQueue { user_id, name, parallelism, paused, now, reply } => {
            settle(resources::upsert_queue(tx, &user_id, &name, parallelism, paused, now).await, |r| {
                Pending::Unit(reply, r)
            })
        }
        WriteOp::DeleteQueue { user_id, name, now, reply } => {
            settle(ops::delete_queue(context, &user_id, &name, now, effects).await, |r| Pending::Flag(reply, r))
        }
        WriteOp::SaveFlow { user_id, key, settings, reply } => {
            settle(resources::save_flow(tx, &user_id, &key, &settings).await, |r| Pending::Unit(reply, r))
        }
        WriteOp::ForgetFlows { keys, reply } => {
            settle(resources::forget_flows(tx, &keys).await, |r| Pending::Unit(reply, r))
        }
        WriteOp::AddEndpoints { user_id, group, endpoints, now, limits, reply } => {
            settle(resources::add_endpoints(tx, &user_id, &group, &endpoints, now, limits).await, |r| {
                Pending::Endpoints(reply, r)
            })
        }
        WriteOp::RemoveEndpoints { user_id, group, endpoints, now, reply } => {
            settle(resources::remove_endpoints(tx, &user_id, &group, &endpoints, now).await, |r| {
                Pending::Unit(reply, r)
            })
        }
        WriteOp::SetGroupHeaders { user_id, group, headers, now, reply } => {
            settle(resources::set_group_headers(tx, &user_id, &group, &headers, now).await, |r| Pending::Flag(reply, r))
        }
        WriteOp::DeleteGroup { user_id, group, reply } => {
            settle(resources::delete_group(tx, &user_id, &group).await, |r| Pending::Flag(reply, r))
        }
        WriteOp::UpsertSchedule { schedule, limit, dedup, reply } => {
            settle(schedules::upsert(tx, &schedule, limit, dedup.as_ref()).await, |r| Pending::Upsert(reply, r))
        }
        WriteOp::DeleteSchedule { user_id, id, reply } => {
            settle(schedules::delete(tx, &user_id, &id).await, |r| Pending::Flag(reply, r))
        }
        WriteOp::PauseSchedule { user_id, id, paused, next_tick_at, reply } => {
            settle(schedules::set_paused(tx, &user_id, &id, paused, next_tick_at).await, |r| Pending::Flag(reply, r))
        }
        WriteOp::FireSchedules { fires, reply } => {
            settle(schedules::fire(context, fires, effects).await, |r| Pending::Flags(reply, r))
        }
        WriteOp::Purge { now, retention, reply } => {
            settle(resources::purge(tx, now, retention).await, |r| Pending::Purge(reply, r))
        }
        WriteOp::EndRun { user_id, run_id, end, now, reply } => {
            let result = workflow_ops::end_run(context, &user_id, &run_id, end, now, effects).await;
            settle(result, |r| Pending::RunEnded(reply, r))
        }
        WriteOp::CancelRuns { user_id, filter, limit, now, reply } => {
            let result = workflow_ops::cancel_runs(context, &user_id, &filter, limit, now, effects).await;
            settle(result, |r| Pending::Count(reply, r))
        }
        WriteOp::AddWaiter { waiter, reply } => {
            settle(waiters::add_waiter(context, &waiter, effects).await, |r| Pending::Waited(reply, r))
        }
        WriteOp::Notify { event, now, max_stored, run_limits, reply } => {
            let result = waiters::notify(context, &event, now, max_stored, run_limits, effects).await;
            settle(result, |r| Pending::Notified(reply, r))
        }
        WriteOp::CallFailureFunctionAgain { user_id, dlq_id, now, reply } => {
            let result = workflow_ops::call_failure_function_again(context, &user_id, &dlq_id, now, effects).await;
            settle(result, |r| Pending::RunNamed(reply, r))
        }
        WriteOp::ExpireWaiters { now, limit, run_limits, reply } => {
            settle(waiters::expire(context, now, limit, run_limits, effects).await, |r| Pending::Count(reply, r))
        }
        WriteOp::Stop { reply } => (Pending::Unit(reply, Ok(())), None),
    }
}
