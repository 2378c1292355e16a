//! The writer's message operations: inserts (deduplication, DLQ replacement, workflow runs),
//! the record of attempts, and cancels. Sequence numbers come from the database's sequence.

use super::client::GenericClient;
use super::query::{SqlFilter, message_filter};
use super::rows::{LogRow, LoggedResponse, callback_source, headers_json, insert_logs, insert_message, parse_id};
use super::run_records::{self, Admission};
use super::schema::FIRST_TERMINAL_STATE;
use super::workflow_ops;
use super::writer::Context;
use crate::batch::Effects;
use crate::error::{Result, StoreError};
use crate::model::*;
use std::collections::HashSet;
use std::sync::Arc;
use tern_core::{AttemptResponse, LogState, Message, MessageId, MessageState};

/// Messages due within this horizon of their insertion hand their payload to the scheduler.
const PAYLOAD_HORIZON_MS: i64 = 5_000;

/// The class of the advisory locks on deduplication keys (`dedp`), apart from every other lock.
const DEDUP_LOCK_CLASS: i32 = 0x6465_6470;

fn log<'a>(user_id: &'a str, message_id: &'a str, time: i64, state: LogState) -> LogRow<'a> {
    LogRow { user_id, message_id, time, state, error: None, next_delivery_time: None, response: None }
}

pub async fn log_attempt_started(c: &impl GenericClient, user_id: &str, id: MessageId, at: i64) -> Result<()> {
    insert_logs(c, &[log(user_id, &id.to_string(), at, LogState::Active)]).await
}

/// Who holds the user's deduplication key at `now` (a message id, or a schedule id for the
/// schedule keys), if its claim has not expired.
///
/// The key is locked until the transaction ends (an advisory lock on its hash, which also holds
/// when no claim exists yet): a node that checks the same key waits for this one's commit and
/// then reads its claim, so a check followed by [`claim_dedup`] is never raced by another node.
pub async fn claimed_dedup(c: &impl GenericClient, user_id: &str, key: &str, now: i64) -> Result<Option<String>> {
    c.execute(
        "SELECT pg_advisory_xact_lock($1, hashtext($2::TEXT || ':' || $3::TEXT))",
        &[&DEDUP_LOCK_CLASS, &user_id, &key],
    )
    .await?;
    // A statement of its own: its snapshot is taken once the lock is held.
    let row = c
        .query_opt(
            "SELECT message_id FROM dedup WHERE user_id = $1 AND key = $2 AND expires_at > $3",
            &[&user_id, &key, &now],
        )
        .await?;
    Ok(row.map(|row| row.try_get(0)).transpose()?)
}

/// Claims the key for `holder` until the claim's expiry.
pub async fn claim_dedup(c: &impl GenericClient, user_id: &str, claim: &DedupClaim, holder: &str) -> Result<()> {
    c.execute(
        "INSERT INTO dedup (user_id, key, message_id, expires_at) VALUES ($1, $2, $3, $4)
         ON CONFLICT (user_id, key) DO UPDATE SET message_id = excluded.message_id, expires_at = excluded.expires_at",
        &[&user_id, &claim.key, &holder, &claim.expires_at],
    )
    .await?;
    Ok(())
}

pub async fn insert_messages(
    context: Context<'_>,
    messages: Vec<NewMessage>,
    effects: &mut Effects,
) -> Result<Vec<InsertOutcome>> {
    insert_into_run(context, messages, None, effects).await
}

/// [`insert_messages`] for messages the store makes itself for run `own_run` (a wait's result,
/// an invoke's reply): they go to that run, not to the latest with their run id.
pub async fn insert_into_run(
    context: Context<'_>,
    messages: Vec<NewMessage>,
    own_run: Option<i64>,
    effects: &mut Effects,
) -> Result<Vec<InsertOutcome>> {
    let c = context.tx;
    let mut outcomes = Vec::with_capacity(messages.len());
    for message in messages {
        let run_key = match run_records::admit(c, &message, own_run).await? {
            Admission::Admitted(key) => key,
            Admission::Refused(refused) => {
                outcomes.push(refused);
                continue;
            }
        };
        if let Some(dedup) = &message.dedup {
            let existing = claimed_dedup(c, &message.user_id, &dedup.key, message.created_at).await?;
            if let Some(id) = existing.and_then(|id| id.parse().ok()) {
                outcomes.push(InsertOutcome::Duplicate(id));
                continue;
            }
        }
        let mut body_from = None;
        if let Some(dlq_id) = &message.consumes_dlq_entry {
            // The update locks the entry's row: of two nodes retrying it at once, the second
            // finds it gone once the first commits.
            let entry = c
                .query(
                    "UPDATE messages SET dlq_id = NULL, dlq_at = NULL WHERE user_id = $1 AND dlq_id = $2 RETURNING id",
                    &[&message.user_id, dlq_id],
                )
                .await?;
            let Some(entry) = entry.first() else {
                outcomes.push(InsertOutcome::DlqEntryGone);
                continue;
            };
            body_from = Some(entry.try_get::<_, String>(0)?);
        }
        if let Some(dedup) = &message.dedup {
            claim_dedup(c, &message.user_id, dedup, &message.id.to_string()).await?;
        }
        store_new_message(c, message, body_from.as_deref(), run_key, effects).await?;
        outcomes.push(InsertOutcome::Created);
    }
    Ok(outcomes)
}

/// Stores `message` (its spec's) with the body of the stored message `body_from` (its id),
/// copied within the database, in workflow run `run_key`: the store's own copy of a message (a
/// failure callback called again).
pub async fn insert_copy(
    context: Context<'_>,
    message: NewMessage,
    body_from: &str,
    run_key: i64,
    effects: &mut Effects,
) -> Result<()> {
    store_new_message(context.tx, message, Some(body_from), Some(run_key), effects).await
}

/// Inserts the row (creating its queue and flow-control key on first use, recording it in its
/// workflow run `run_key` as admitted), logs `CREATED` and schedules the message once committed.
/// With `body_from` (a message id), the body is that row's, copied within the database (a DLQ
/// retry): the scheduler then gets no payload, the body being read from the store when the
/// message is due; so too for a run's Init that takes up a failed run, whose body the store
/// copies from its records.
async fn store_new_message(
    c: &impl GenericClient,
    message: NewMessage,
    body_from: Option<&str>,
    run_key: Option<i64>,
    effects: &mut Effects,
) -> Result<()> {
    let id = message.id.to_string();
    let run_key = run_records::start_run(c, &message, run_key).await?;
    // The row and its `CREATED` entry go out together (pipelined), in one round trip.
    let created = [LogRow {
        next_delivery_time: Some(message.due_at),
        ..log(&message.user_id, &id, message.created_at, LogState::Created)
    }];
    let (seq, ()) =
        futures_util::future::try_join(insert_message(c, &message, &id, run_key), insert_logs(c, &created)).await?;
    run_records::record(c, &message, &id, run_key).await?;
    let body_copied = body_from.is_some() || message.run.as_ref().is_some_and(|run| run.continues.is_some());
    if let Some(source) = body_from {
        c.execute(
            "UPDATE messages SET body = (SELECT body FROM messages WHERE id = $1) WHERE id = $2",
            &[&source, &id],
        )
        .await?;
    }
    let spec = &message.spec;
    if let Some(queue) = &spec.queue_name {
        c.execute(
            "INSERT INTO queues (user_id, name, parallelism, paused, created_at, updated_at)
             VALUES ($1, $2, 1, FALSE, $3, $3) ON CONFLICT DO NOTHING",
            &[&message.user_id, queue, &message.created_at],
        )
        .await?;
    }
    if let Some(flow) = &spec.flow_control {
        c.execute(
            "INSERT INTO flow_keys (user_id, key, parallelism, rate, period_secs) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (user_id, key) DO UPDATE SET
                parallelism = CASE WHEN flow_keys.pinned_parallelism THEN flow_keys.parallelism
                                   ELSE excluded.parallelism END,
                rate = CASE WHEN flow_keys.pinned_rate THEN flow_keys.rate ELSE excluded.rate END,
                period_secs = CASE WHEN flow_keys.pinned_rate THEN flow_keys.period_secs
                                   ELSE excluded.period_secs END",
            &[
                &message.user_id,
                &flow.key,
                &flow.parallelism.map(i64::from),
                &flow.rate.map(i64::from),
                &(flow.period_secs as i64),
            ],
        )
        .await?;
    }
    let payload = (!body_copied && message.due_at <= message.created_at + PAYLOAD_HORIZON_MS).then(|| {
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
    effects.changes.push(Change::Scheduled(Scheduled {
        id: message.id,
        source: callback_source(&message.spec),
        user_id: message.user_id,
        due_at: message.due_at,
        seq,
        queue_name: message.spec.queue_name,
        flow_control: message.spec.flow_control,
        is_new: true,
        message: payload,
    }));
    Ok(())
}

/// What an attempt writes to its message's row.
struct AttemptUpdate<'a> {
    id: &'a str,
    at: i64,
    retried: i64,
    response: &'a AttemptResponse,
    headers: Option<&'a str>,
}

impl AttemptUpdate<'_> {
    /// Moves the row from one of the states `from` to `state`; false if it was in neither.
    async fn apply(
        &self,
        c: &impl GenericClient,
        from: [MessageState; 2],
        state: MessageState,
        due_at: Option<i64>,
        dlq_id: Option<&str>,
    ) -> Result<bool> {
        let finished_at = state.is_terminal().then_some(self.at);
        let response = self.response;
        let rows = c
            .execute(
                "UPDATE messages SET state = $2, due_at = $3, retried = $4, finished_at = $5, dlq_id = $6,
                    dlq_at = CASE WHEN $6::TEXT IS NULL THEN NULL ELSE $5::BIGINT END,
                    response_status = $7, response_headers = $8, response_body = $9, response_error = $10
                 WHERE id = $1 AND state IN ($11, $12)",
                &[
                    &self.id,
                    &state.code(),
                    &due_at,
                    &self.retried,
                    &finished_at,
                    &dlq_id,
                    &(response.status as i64),
                    &self.headers,
                    &response.body.as_ref(),
                    &response.error,
                    &from[0].code(),
                    &from[1].code(),
                ],
            )
            .await?;
        Ok(rows > 0)
    }
}

/// Records how an attempt ended: the message's new state and response, and its log entries.
///
/// The row is updated only from the states an attempt can end in, so no read comes first: a
/// pending or retrying row takes the outcome; failing that, a row whose cancel waited for this
/// attempt (`CANCEL_REQUESTED`) becomes `CANCELED`, with no retry and no callback; a row that
/// is gone or already finished is left alone.
pub async fn finish_attempt(context: Context<'_>, outcome: &AttemptOutcome, effects: &mut Effects) -> Result<()> {
    let c = context.tx;
    let message = &outcome.message;
    let id = message.id.to_string();
    let at = outcome.finished_at;
    let response = &outcome.response;
    let retried = message.retried + 1;
    let user_id = message.user_id.as_str();
    let headers = headers_json(&response.headers);
    let update = AttemptUpdate { id: &id, at, retried: i64::from(retried), response, headers: headers.as_deref() };
    let (state, due_at, dlq_id) = match &outcome.next {
        NextStep::Delivered => (MessageState::Delivered, None, None),
        NextStep::Retry { at: retry_at } => (MessageState::Retry, Some(*retry_at), None),
        NextStep::Failed { dlq_id } => (MessageState::Failed, None, Some(dlq_id.as_str())),
    };
    let cancelled = if update.apply(c, [MessageState::Pending, MessageState::Retry], state, due_at, dlq_id).await? {
        false
    } else if update.apply(c, [MessageState::CancelRequested; 2], MessageState::Canceled, None, None).await? {
        true
    } else {
        effects.changes.push(Change::Finished { id: message.id });
        return Ok(());
    };
    let logged = LoggedResponse { status: response.status, headers: headers.as_deref(), body: &response.body };
    // ACTIVE (unless logged while the attempt ran), then what the attempt led to, appended in
    // one call.
    let mut logs = Vec::with_capacity(3);
    if let Some(active_at) = outcome.active_at {
        logs.push(log(user_id, &id, active_at, LogState::Active));
    }
    let error_log = LogRow {
        error: Some(response.error.as_deref().unwrap_or("delivery failed")),
        response: Some(logged),
        ..log(user_id, &id, at, LogState::Error)
    };

    if cancelled {
        if outcome.next != NextStep::Delivered {
            logs.push(error_log);
        }
        logs.push(log(user_id, &id, at, LogState::Canceled));
        insert_logs(c, &logs).await?;
        effects.changes.push(Change::Finished { id: message.id });
        return Ok(());
    }
    match &outcome.next {
        NextStep::Delivered => {
            logs.push(LogRow { response: Some(logged), ..log(user_id, &id, at, LogState::Delivered) });
            effects.changes.push(Change::Finished { id: message.id });
        }
        NextStep::Retry { at: retry_at } => {
            let retry_at = *retry_at;
            logs.push(error_log);
            logs.push(LogRow { next_delivery_time: Some(retry_at), ..log(user_id, &id, at, LogState::Retry) });
            let mut retrying = Message::clone(message);
            retrying.state = MessageState::Retry;
            retrying.retried = retried;
            retrying.due_at = Some(retry_at);
            retrying.last_response = Some(response.clone());
            let payload = (retry_at <= at + PAYLOAD_HORIZON_MS).then(|| Arc::new(retrying));
            effects.changes.push(Change::Scheduled(scheduled(message, retry_at, payload)));
        }
        NextStep::Failed { .. } => {
            logs.push(error_log);
            logs.push(LogRow { state: LogState::Failed, ..error_log });
            effects.changes.push(Change::Finished { id: message.id });
        }
    }
    insert_logs(c, &logs).await?;
    // What the message does to its run, and its callbacks, reach its own run.
    let run_key = match &message.spec.workflow {
        Some(_) => run_records::run_of_message(c, &id).await?,
        None => None,
    };
    if let (NextStep::Failed { dlq_id }, Some(link), Some(key)) = (&outcome.next, &message.spec.workflow, run_key)
        && link.call_type.continues_run()
    {
        let finished = effects.changes.pop();
        workflow_ops::fail_run(context, key, &id, dlq_id, at, effects).await?;
        effects.changes.extend(finished);
    }
    // The scheduler must learn of the callbacks before the source's final change, so that a
    // queue message keeps its place until its callbacks finished.
    let callbacks: Vec<NewMessage> =
        [&outcome.callback, &outcome.failure_callback].into_iter().flatten().cloned().collect();
    if !callbacks.is_empty() {
        let finished = effects.changes.pop();
        for callback in callbacks {
            // A callback continuing a run that has ended meanwhile has nothing left to do.
            if let Admission::Admitted(key) = run_records::admit(c, &callback, run_key).await? {
                store_new_message(c, callback, None, key, effects).await?;
            }
        }
        effects.changes.extend(finished);
    }
    Ok(())
}

/// A message's scheduling facts for a retry (or a re-attempt), keeping its place and payload.
fn scheduled(message: &Message, due_at: i64, payload: Option<Arc<Message>>) -> Scheduled {
    Scheduled {
        id: message.id,
        user_id: message.user_id.clone(),
        due_at,
        seq: 0,
        queue_name: message.spec.queue_name.clone(),
        flow_control: message.spec.flow_control.clone(),
        source: callback_source(&message.spec),
        is_new: false,
        message: payload,
    }
}

pub async fn cancel(
    context: Context<'_>,
    user_id: &str,
    selection: CancelSelection,
    now: i64,
    effects: &mut Effects,
) -> Result<CancelOutcome> {
    let c = context.tx;
    let candidates: Vec<(String, i64)> = match selection {
        CancelSelection::Ids(ids) => {
            let mut found = Vec::new();
            for id in ids {
                let row = c
                    .query_opt(
                        "SELECT id, state FROM messages WHERE id = $1 AND user_id = $2",
                        &[&id.to_string(), &user_id],
                    )
                    .await?;
                if let Some(row) = row {
                    found.push((row.try_get(0)?, row.try_get(1)?));
                }
            }
            found
        }
        CancelSelection::Filter { filter, limit } => {
            let mut sql = SqlFilter::new("m.user_id = ?", user_id.to_string());
            sql.push_raw(&format!("m.state < {FIRST_TERMINAL_STATE}"));
            // A message whose cancel already waits for its running attempt is not selected (nor
            // counted) again: a `limit` always reaches the next message, and a caller who
            // cancels until nothing is left gets there.
            sql.push_raw(&format!("m.state <> {}", MessageState::CancelRequested.code()));
            message_filter(&mut sql, &filter, "m", Some("m.created_at"));
            // Bound (`LIMIT NULL` is no limit), so that the statement's text stays the same.
            let limit = sql.bind(limit.map(super::query::limit));
            let query =
                format!("SELECT m.id, m.state FROM messages m WHERE {} ORDER BY m.seq LIMIT {limit}", sql.clause());
            let rows = c.query(&query, &sql.params()).await?;
            rows.iter().map(|row| Ok((row.try_get(0)?, row.try_get(1)?))).collect::<Result<_>>()?
        }
    };
    // An attempt whose retry was recorded earlier in this batch has ended, although the
    // scheduler (which hears of the batch only after the commit) still counts it running.
    let retried_in_batch: HashSet<MessageId> = effects
        .changes
        .iter()
        .filter_map(|change| match change {
            Change::Scheduled(scheduled) if !scheduled.is_new => Some(scheduled.id),
            _ => None,
        })
        .collect();
    let mut outcome = CancelOutcome::default();
    for (id, state) in candidates {
        outcome.found += 1;
        let state = MessageState::from_code(state).ok_or_else(|| StoreError::Corrupt(format!("state {state}")))?;
        if state.is_terminal() {
            continue;
        }
        outcome.cancelled += 1;
        if state == MessageState::CancelRequested {
            continue;
        }
        let message_id = parse_id(&id)?;
        insert_logs(c, &[log(user_id, &id, now, LogState::CancelRequested)]).await?;
        let running = !retried_in_batch.contains(&message_id)
            && context.scheduling.is_some_and(|scheduling| scheduling.hold_for_cancel(message_id));
        if running {
            c.execute("UPDATE messages SET state = $2 WHERE id = $1", &[&id, &MessageState::CancelRequested.code()])
                .await?;
        } else {
            effects.held.push(message_id);
            c.execute(
                "UPDATE messages SET state = $2, finished_at = $3, due_at = NULL WHERE id = $1",
                &[&id, &MessageState::Canceled.code(), &now],
            )
            .await?;
            insert_logs(c, &[log(user_id, &id, now, LogState::Canceled)]).await?;
            effects.changes.push(Change::Finished { id: message_id });
        }
    }
    Ok(outcome)
}

/// Deletes a queue and cancels its unfinished messages. Returns whether it existed.
pub async fn delete_queue(
    context: Context<'_>,
    user_id: &str,
    name: &str,
    now: i64,
    effects: &mut Effects,
) -> Result<bool> {
    let existed =
        context.tx.execute("DELETE FROM queues WHERE user_id = $1 AND name = $2", &[&user_id, &name]).await? > 0;
    let filter = MessageFilter { queue_names: vec![name.to_string()], ..MessageFilter::default() };
    cancel(context, user_id, CancelSelection::Filter { filter: Box::new(filter), limit: None }, now, effects).await?;
    Ok(existed)
}
