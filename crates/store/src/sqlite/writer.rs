//! The single writer thread and its group commit.
//!
//! Every write is a [`WriteOp`] sent over one channel. The writer takes everything queued,
//! applies each op inside its own savepoint of one transaction, commits once (one fsync for the
//! whole batch), then updates the in-memory index and answers the waiting callers. An op that
//! fails is rolled back alone; the rest of the batch still commits.

use super::index::DueIndex;
use super::query::{SqlFilter, message_filter};
use super::rows::{LogRow, insert_log, insert_message};
use super::schema::FIRST_TERMINAL_STATE;
use crate::error::{Result, StoreError};
use crate::model::*;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params, params_from_iter};
use std::sync::{Arc, Mutex};
use tern_core::{LogState, Message, MessageId, MessageState};
use tokio::sync::{Notify, mpsc, oneshot};

/// The most ops one commit takes; more wait for the next commit.
const MAX_BATCH: usize = 4096;

/// The most rows one purge op deletes per table, so the writer never stalls for long.
const PURGE_CHUNK: usize = 5000;

type Reply<T> = oneshot::Sender<Result<T>>;

pub enum WriteOp {
    Insert {
        messages: Vec<NewMessage>,
        reply: Reply<Vec<InsertOutcome>>,
    },
    AttemptStarted {
        user_id: String,
        id: MessageId,
        at: i64,
    },
    AttemptFinished(Box<AttemptOutcome>),
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
    Purge {
        now: i64,
        retention: Retention,
        reply: Reply<PurgeStats>,
    },
    /// Commits everything queued before it, then ends the writer (closing the database).
    Stop {
        reply: Reply<()>,
    },
}

/// Index changes an op makes visible once its commit is durable.
#[derive(Default)]
struct Effects {
    add: Vec<(i64, MessageId, Option<Arc<Message>>, i64)>,
    release: Vec<MessageId>,
    /// Entries already removed from the index, to put back if the commit fails.
    removed: Vec<(i64, MessageId)>,
}

impl Effects {
    fn merge(&mut self, other: Effects) {
        self.add.extend(other.add);
        self.release.extend(other.release);
        self.removed.extend(other.removed);
    }
}

/// An answer waiting for the commit.
enum Pending {
    Insert(Reply<Vec<InsertOutcome>>, Result<Vec<InsertOutcome>>),
    Cancel(Reply<CancelOutcome>, Result<CancelOutcome>),
    Count(Reply<u64>, Result<u64>),
    Unit(Reply<()>, Result<()>),
    Purge(Reply<PurgeStats>, Result<PurgeStats>),
    Nothing,
}

impl Pending {
    fn send(self, commit: &Result<(), String>) {
        fn finish<T>(reply: Reply<T>, result: Result<T>, commit: &Result<(), String>) {
            let result = match commit {
                Ok(()) => result,
                Err(error) => Err(StoreError::Backend(error.clone())),
            };
            let _ = reply.send(result);
        }
        match self {
            Pending::Insert(reply, result) => finish(reply, result, commit),
            Pending::Cancel(reply, result) => finish(reply, result, commit),
            Pending::Count(reply, result) => finish(reply, result, commit),
            Pending::Unit(reply, result) => finish(reply, result, commit),
            Pending::Purge(reply, result) => finish(reply, result, commit),
            Pending::Nothing => {}
        }
    }
}

pub struct Writer {
    pub connection: Connection,
    pub index: Arc<Mutex<DueIndex>>,
    pub signal: Arc<Notify>,
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
        }
    }

    fn commit_batch(&mut self, batch: Vec<WriteOp>) {
        let mut effects = Effects::default();
        let mut pending = Vec::with_capacity(batch.len());
        let index = Arc::clone(&self.index);
        let commit = (|| -> rusqlite::Result<()> {
            let mut transaction = self.connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
            for op in batch {
                let mut op_effects = Effects::default();
                let savepoint = transaction.savepoint()?;
                let (answer, ok) = apply(&savepoint, &index, op, &mut op_effects);
                if ok {
                    savepoint.commit()?;
                    effects.merge(op_effects);
                } else {
                    drop(savepoint);
                    restore(&index, &op_effects.removed);
                }
                pending.push(answer);
            }
            transaction.commit()
        })()
        .map_err(|error| error.to_string());

        match &commit {
            Ok(()) => {
                let mut index = self.index.lock().expect("index lock");
                let wake = !effects.add.is_empty();
                for (due_at, id, message, now) in effects.add {
                    index.insert(due_at, id, message, now);
                }
                for id in effects.release {
                    index.release(id);
                }
                drop(index);
                if wake {
                    self.signal.notify_one();
                }
            }
            Err(error) => {
                tracing::error!(%error, "commit failed; the batch's writes are lost and their callers get an error");
                restore(&self.index, &effects.removed);
            }
        }
        for answer in pending {
            answer.send(&commit);
        }
    }
}

fn restore(index: &Mutex<DueIndex>, removed: &[(i64, MessageId)]) {
    if removed.is_empty() {
        return;
    }
    let mut index = index.lock().expect("index lock");
    for (due_at, id) in removed {
        index.insert(*due_at, *id, None, 0);
    }
}

/// Applies one op; returns its pending answer and whether it succeeded.
fn apply(connection: &Connection, index: &Mutex<DueIndex>, op: WriteOp, effects: &mut Effects) -> (Pending, bool) {
    fn settle<T>(result: Result<T>, make: impl FnOnce(Result<T>) -> Pending) -> (Pending, bool) {
        let ok = result.is_ok();
        (make(result), ok)
    }
    match op {
        WriteOp::Insert { messages, reply } => {
            settle(insert_messages(connection, messages, effects), |r| Pending::Insert(reply, r))
        }
        WriteOp::AttemptStarted { user_id, id, at } => {
            let result = insert_log(connection, log(&user_id, id, at, LogState::Active));
            if let Err(error) = &result {
                tracing::error!(%error, message_id = %id, "could not log an attempt start");
            }
            (Pending::Nothing, result.is_ok())
        }
        WriteOp::AttemptFinished(outcome) => {
            let id = outcome.message.id;
            let result = finish_attempt(connection, *outcome, effects);
            if let Err(error) = &result {
                tracing::error!(%error, message_id = %id, "could not record an attempt; it will be retried after restart");
                effects.release.push(id);
            }
            // The claim is released even when recording failed, so the index stays consistent.
            (Pending::Nothing, true)
        }
        WriteOp::Cancel { user_id, selection, now, reply } => {
            settle(cancel(connection, index, &user_id, selection, now, effects), |r| Pending::Cancel(reply, r))
        }
        WriteOp::DeleteDlq { user_id, dlq_ids, reply } => {
            settle(delete_dlq(connection, &user_id, &dlq_ids), |r| Pending::Count(reply, r))
        }
        WriteOp::SaveKeys { user_id, keys, reply } => {
            settle(save_keys(connection, &user_id, &keys), |r| Pending::Unit(reply, r))
        }
        WriteOp::Purge { now, retention, reply } => {
            settle(purge(connection, now, retention), |r| Pending::Purge(reply, r))
        }
        WriteOp::Stop { reply } => (Pending::Unit(reply, Ok(())), true),
    }
}

fn log(user_id: &str, message_id: MessageId, time: i64, state: LogState) -> LogRow<'_> {
    LogRow { user_id, message_id, time, state, error: None, next_delivery_time: None, response: None }
}

fn insert_messages(
    connection: &Connection,
    messages: Vec<NewMessage>,
    effects: &mut Effects,
) -> Result<Vec<InsertOutcome>> {
    let mut outcomes = Vec::with_capacity(messages.len());
    for message in messages {
        if let Some(dedup) = &message.dedup {
            let existing: Option<String> = connection
                .prepare_cached("SELECT message_id FROM dedup WHERE user_id = ?1 AND key = ?2 AND expires_at > ?3")?
                .query_row(params![message.user_id, dedup.key, message.created_at], |row| row.get(0))
                .optional()?;
            if let Some(id) = existing.and_then(|id| id.parse().ok()) {
                outcomes.push(InsertOutcome::Duplicate(id));
                continue;
            }
        }
        if let Some(dlq_id) = &message.consumes_dlq_entry {
            let removed = connection
                .prepare_cached("UPDATE messages SET dlq_id = NULL, dlq_at = NULL WHERE user_id = ?1 AND dlq_id = ?2")?
                .execute(params![message.user_id, dlq_id])?;
            if removed == 0 {
                outcomes.push(InsertOutcome::DlqEntryGone);
                continue;
            }
        }
        if let Some(dedup) = &message.dedup {
            connection
                .prepare_cached(
                    "INSERT OR REPLACE INTO dedup (user_id, key, message_id, expires_at) VALUES (?1, ?2, ?3, ?4)",
                )?
                .execute(params![message.user_id, dedup.key, message.id.to_string(), dedup.expires_at])?;
        }
        store_new_message(connection, message, effects)?;
        outcomes.push(InsertOutcome::Created);
    }
    Ok(outcomes)
}

/// Inserts the row, logs `CREATED` and schedules the message once committed.
fn store_new_message(connection: &Connection, message: NewMessage, effects: &mut Effects) -> Result<()> {
    insert_message(connection, &message)?;
    insert_log(
        connection,
        LogRow {
            next_delivery_time: Some(message.due_at),
            ..log(&message.user_id, message.id, message.created_at, LogState::Created)
        },
    )?;
    let cached = (message.due_at <= message.created_at + super::index::CACHE_HORIZON_MS).then(|| {
        Arc::new(Message {
            id: message.id,
            user_id: message.user_id.clone(),
            spec: message.spec.clone(),
            body: message.body.clone(),
            created_at: message.created_at,
            not_before: message.due_at,
            state: MessageState::Pending,
            retried: 0,
            due_at: Some(message.due_at),
            finished_at: None,
            dlq_id: None,
            last_response: None,
        })
    });
    effects.add.push((message.due_at, message.id, cached, message.created_at));
    Ok(())
}

fn finish_attempt(connection: &Connection, outcome: AttemptOutcome, effects: &mut Effects) -> Result<()> {
    let message = &outcome.message;
    let id = message.id.to_string();
    effects.release.push(message.id);
    let state: Option<i64> = connection
        .prepare_cached("SELECT state FROM messages WHERE id = ?1")?
        .query_row([&id], |row| row.get(0))
        .optional()?;
    let Some(state) = state.and_then(MessageState::from_code) else {
        return Ok(());
    };
    if state.is_terminal() {
        return Ok(());
    }
    let cancelled = state == MessageState::CancelRequested;
    let at = outcome.finished_at;
    let response = &outcome.response;
    let retried = message.retried + 1;
    let user_id = message.user_id.as_str();
    let update = |state: MessageState, due_at: Option<i64>, dlq_id: Option<&str>| -> Result<()> {
        let finished_at = state.is_terminal().then_some(at);
        connection
            .prepare_cached(
                "UPDATE messages SET state = ?2, due_at = ?3, retried = ?4, finished_at = ?5, dlq_id = ?6,
                    dlq_at = CASE WHEN ?6 IS NULL THEN NULL ELSE ?5 END,
                    response_status = ?7, response_headers = ?8, response_body = ?9, response_error = ?10
                 WHERE id = ?1",
            )?
            .execute(params![
                id,
                state.code(),
                due_at,
                retried,
                finished_at,
                dlq_id,
                response.status,
                super::rows::headers_json(&response.headers),
                response.body.as_ref(),
                response.error,
            ])?;
        Ok(())
    };
    let error_log = || LogRow {
        error: Some(response.error.as_deref().unwrap_or("delivery failed")),
        response: Some(response),
        ..log(user_id, message.id, at, LogState::Error)
    };

    if outcome.next == NextStep::Delivered {
        update(MessageState::Delivered, None, None)?;
        insert_log(
            connection,
            LogRow { response: Some(response), ..log(user_id, message.id, at, LogState::Delivered) },
        )?;
    } else if cancelled {
        update(MessageState::Canceled, None, None)?;
        insert_log(connection, error_log())?;
        insert_log(connection, log(user_id, message.id, at, LogState::Canceled))?;
        return Ok(());
    } else if let NextStep::Retry { at: retry_at } = outcome.next {
        update(MessageState::Retry, Some(retry_at), None)?;
        insert_log(connection, error_log())?;
        insert_log(
            connection,
            LogRow { next_delivery_time: Some(retry_at), ..log(user_id, message.id, at, LogState::Retry) },
        )?;
        let mut retrying = Message::clone(message);
        retrying.state = MessageState::Retry;
        retrying.retried = retried;
        retrying.due_at = Some(retry_at);
        retrying.last_response = Some(response.clone());
        effects.add.push((retry_at, message.id, Some(Arc::new(retrying)), at));
    } else if let NextStep::Failed { dlq_id } = &outcome.next {
        update(MessageState::Failed, None, Some(dlq_id))?;
        insert_log(connection, error_log())?;
        insert_log(
            connection,
            LogRow {
                error: error_log().error,
                response: Some(response),
                ..log(user_id, message.id, at, LogState::Failed)
            },
        )?;
    }
    for callback in [outcome.callback, outcome.failure_callback].into_iter().flatten() {
        store_new_message(connection, callback, effects)?;
    }
    Ok(())
}

fn cancel(
    connection: &Connection,
    index: &Mutex<DueIndex>,
    user_id: &str,
    selection: CancelSelection,
    now: i64,
    effects: &mut Effects,
) -> Result<CancelOutcome> {
    let mut outcome = CancelOutcome::default();
    let candidates: Vec<(String, i64, Option<i64>)> = match selection {
        CancelSelection::Ids(ids) => {
            let mut statement =
                connection.prepare_cached("SELECT id, state, due_at FROM messages WHERE id = ?1 AND user_id = ?2")?;
            let mut found = Vec::new();
            for id in ids {
                let row = statement
                    .query_row(params![id.to_string(), user_id], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
                    .optional()?;
                found.extend(row);
            }
            found
        }
        CancelSelection::Filter { filter, limit } => {
            let mut sql = SqlFilter::new("m.user_id = ?", user_id.to_string());
            sql.push_raw(&format!("m.state < {FIRST_TERMINAL_STATE}"));
            message_filter(&mut sql, &filter, "m", Some("m.created_at"));
            let limit = limit.map(|n| n as i64).unwrap_or(-1);
            let query = format!(
                "SELECT m.id, m.state, m.due_at FROM messages m WHERE {} ORDER BY m.created_at LIMIT {limit}",
                sql.clause()
            );
            let mut statement = connection.prepare(&query)?;
            let rows = statement
                .query_map(params_from_iter(sql.params()), |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?;
            rows.collect::<rusqlite::Result<_>>()?
        }
    };
    for (id, state, due_at) in candidates {
        outcome.found += 1;
        let state = MessageState::from_code(state).ok_or_else(|| StoreError::Corrupt(format!("state {state}")))?;
        if state.is_terminal() {
            continue;
        }
        outcome.cancelled += 1;
        if state == MessageState::CancelRequested {
            continue;
        }
        let message_id: MessageId = id.parse().map_err(|()| StoreError::Corrupt(format!("message id {id:?}")))?;
        insert_log(connection, log(user_id, message_id, now, LogState::CancelRequested))?;
        let in_flight = {
            let mut index = index.lock().expect("index lock");
            let claimed = index.is_claimed(message_id);
            if !claimed
                && let Some(due_at) = due_at
                && index.remove(due_at, message_id)
            {
                effects.removed.push((due_at, message_id));
            }
            claimed
        };
        let new_state = if in_flight { MessageState::CancelRequested } else { MessageState::Canceled };
        connection
            .prepare_cached(
                "UPDATE messages SET state = ?2, finished_at = ?3, due_at = CASE WHEN ?4 THEN due_at END WHERE id = ?1",
            )?
            .execute(params![id, new_state.code(), (!in_flight).then_some(now), in_flight])?;
        if !in_flight {
            insert_log(connection, log(user_id, message_id, now, LogState::Canceled))?;
        }
    }
    Ok(outcome)
}

fn delete_dlq(connection: &Connection, user_id: &str, dlq_ids: &[String]) -> Result<u64> {
    let mut statement = connection
        .prepare_cached("UPDATE messages SET dlq_id = NULL, dlq_at = NULL WHERE user_id = ?1 AND dlq_id = ?2")?;
    let mut deleted = 0;
    for dlq_id in dlq_ids {
        deleted += statement.execute(params![user_id, dlq_id])? as u64;
    }
    Ok(deleted)
}

fn save_keys(connection: &Connection, user_id: &str, keys: &StoredKeys) -> Result<()> {
    connection
        .prepare_cached(
            "INSERT OR REPLACE INTO signing_keys (user_id, current, next, configured_current, configured_next)
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )?
        .execute(params![user_id, keys.current, keys.next, keys.configured_current, keys.configured_next])?;
    Ok(())
}

fn purge(connection: &Connection, now: i64, retention: Retention) -> Result<PurgeStats> {
    let log_cutoff = now.saturating_sub(retention.logs.as_millis() as i64);
    let dlq_cutoff = now.saturating_sub(retention.dlq.as_millis() as i64);
    let chunk = PURGE_CHUNK as i64;
    let dlq_entries = connection.execute(
        "UPDATE messages SET dlq_id = NULL, dlq_at = NULL WHERE id IN
            (SELECT id FROM messages WHERE dlq_id IS NOT NULL AND dlq_at < ?1 LIMIT ?2)",
        params![dlq_cutoff, chunk],
    )? as u64;
    let messages = connection.execute(
        "DELETE FROM messages WHERE id IN
            (SELECT id FROM messages WHERE finished_at IS NOT NULL AND dlq_id IS NULL AND finished_at < ?1 LIMIT ?2)",
        params![log_cutoff, chunk],
    )? as u64;
    // Log sequence numbers grow with time, so the oldest entries are at the start of the table:
    // find the last expired one among the first chunk instead of scanning every entry.
    let last_expired: Option<i64> = connection.query_row(
        "SELECT max(seq) FROM (SELECT seq, time FROM logs ORDER BY seq LIMIT ?2) WHERE time < ?1",
        params![log_cutoff, chunk],
        |row| row.get(0),
    )?;
    let logs = match last_expired {
        Some(seq) => {
            connection.execute("DELETE FROM logs WHERE seq <= ?1 AND time < ?2", params![seq, log_cutoff])? as u64
        }
        None => 0,
    };
    let dedup_keys = connection.execute(
        "DELETE FROM dedup WHERE (user_id, key) IN (SELECT user_id, key FROM dedup WHERE expires_at <= ?1 LIMIT ?2)",
        params![now, chunk],
    )? as u64;
    let more = [logs, messages, dlq_entries, dedup_keys].iter().any(|count| *count >= chunk as u64);
    Ok(PurgeStats { logs, messages, dlq_entries, dedup_keys, more })
}
