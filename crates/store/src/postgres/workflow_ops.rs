//! The writer's operations that end workflow runs: failing a run with its message, ending or
//! cancelling runs — each with their unfinished messages, their waits, and the reply to the run
//! that invoked them. (Admitting and recording a run's messages is `run_records`.)

use super::client::GenericClient;
use super::query::{SqlFilter, param};
use super::rows::parse_id;
use super::schema::FIRST_TERMINAL_STATE;
use super::writer::Context;
use super::{ops, run_records};
use crate::batch::Effects;
use crate::error::Result;
use crate::model::*;
use crate::workflows::{RunEnd, RunEndOutcome, RunFilter, RunInvoker};
use tern_core::MessageId;
use tern_core::MessageState;
use tern_core::workflow::{CallType, InvokedEnd, RunState, invoke_result_body};

/// Run `key` fails with its message `failed` that failed for good (unless it ended already):
/// its other unfinished messages are cancelled, its waits forgotten and its invoker told.
pub async fn fail_run(
    context: Context<'_>,
    key: i64,
    failed: &str,
    dlq_id: &str,
    at: i64,
    effects: &mut Effects,
) -> Result<()> {
    let row = context
        .tx
        .query_opt(
            "UPDATE workflow_runs SET state = $2, completed_at = $3, dlq_id = $4, failed_message_id = $5
             WHERE run_key = $1 AND state = $6 RETURNING user_id",
            &[&key, &RunState::RunFailed.code(), &at, &dlq_id, &failed, &RunState::RunStarted.code()],
        )
        .await?;
    let Some(row) = row else { return Ok(()) };
    let user_id: String = row.try_get(0)?;
    super::waiters::forget_run(context.tx, key).await?;
    cancel_run_messages(context, &user_id, key, at, false, effects).await?;
    reply_to_invoker(context, key, InvokedEnd::Failed, at, effects).await
}

/// Calls the failure function of the run that failed with DLQ entry `dlq_id` again: its failure
/// callback is stored anew (the body copied), in that run. Returns the run's id and creation
/// time; `None` when the entry is gone or the run had no failure callback.
pub async fn call_failure_function_again(
    context: Context<'_>,
    user_id: &str,
    dlq_id: &str,
    now: i64,
    effects: &mut Effects,
) -> Result<Option<(String, i64)>> {
    let tx = context.tx;
    let Some(key) = run_records::failed_run_key(tx, user_id, dlq_id).await? else { return Ok(None) };
    let row = tx
        .query_one("SELECT run_id, created_at, failure_message_id FROM workflow_runs WHERE run_key = $1", &[&key])
        .await?;
    let (run_id, created_at, failure): (String, i64, Option<String>) =
        (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
    let found: Option<(String, String)> = match failure {
        Some(id) => tx
            .query_opt("SELECT id, spec FROM messages WHERE id = $1 AND user_id = $2", &[&id, &user_id])
            .await?
            .map(|row| -> Result<_> { Ok((row.try_get(0)?, row.try_get(1)?)) })
            .transpose()?,
        None => None,
    };
    let Some((body_from, spec)) = found else { return Ok(None) };
    let message = NewMessage {
        id: MessageId::generate(),
        user_id: user_id.to_string(),
        spec: serde_json::from_str(&spec)?,
        body: bytes::Bytes::new(),
        created_at: now,
        due_at: now,
        dedup: None,
        consumes_dlq_entry: None,
        run: None,
        run_limits: None,
    };
    ops::insert_copy(context, message, &body_from, key, effects).await?;
    Ok(Some((run_id, created_at)))
}

/// Tells the run that invoked run `key` (if one did) how it ended: publishes the invoker's
/// step result (dropped when the invoker's run has ended too).
async fn reply_to_invoker(
    context: Context<'_>,
    key: i64,
    end: InvokedEnd<'_>,
    now: i64,
    effects: &mut Effects,
) -> Result<()> {
    let row = context
        .tx
        .query_one("SELECT user_id, invoker_reply, invoker_run_key FROM workflow_runs WHERE run_key = $1", &[&key])
        .await?;
    let (user_id, reply, invoker_key): (String, Option<String>, Option<i64>) =
        (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
    let (Some(reply), Some(invoker_key)) = (reply, invoker_key) else { return Ok(()) };
    let invoker: RunInvoker = serde_json::from_str(&reply)?;
    let invoked: serde_json::Value = serde_json::from_str(&invoker.invoked)?;
    let message = NewMessage {
        id: MessageId::generate(),
        user_id,
        spec: invoker.reply,
        body: invoke_result_body(&invoker.step, &invoked, end).into(),
        created_at: now,
        due_at: now,
        dedup: None,
        consumes_dlq_entry: None,
        run: None,
        run_limits: None,
    };
    let (id, body, at) = (message.id.to_string(), message.body.clone(), message.created_at);
    let outcomes = ops::insert_into_run(context, vec![message], Some(invoker_key), effects).await?;
    if outcomes.first() == Some(&InsertOutcome::RunNotActive) {
        // The invoker has ended: nothing continues it, but its logs show how the run it
        // invoked ended (the reply as a record, never delivered).
        run_records::append(context.tx, invoker_key, &id, CallType::Step, at, &body).await?;
    }
    Ok(())
}

/// Ends a started run (see `WorkflowStore::end_run`).
pub async fn end_run(
    context: Context<'_>,
    user_id: &str,
    run_id: &str,
    end: RunEnd,
    now: i64,
    effects: &mut Effects,
) -> Result<RunEndOutcome> {
    let tx = context.tx;
    let key = match run_records::latest_run(tx, user_id, run_id).await? {
        None => return Ok(RunEndOutcome::NotFound),
        Some((key, RunState::RunStarted)) => key,
        Some((_, state)) => return Ok(RunEndOutcome::AlreadyEnded(state)),
    };
    let (state, response, spare_running, invoked_end) = match &end {
        RunEnd::Success { response } => {
            (RunState::RunSuccess, Some(response.as_ref()), true, InvokedEnd::Returned(response.as_ref()))
        }
        RunEnd::Canceled => (RunState::RunCanceled, None, false, InvokedEnd::Canceled),
    };
    tx.execute(
        "UPDATE workflow_runs SET state = $2, completed_at = $3, response = $4 WHERE run_key = $1",
        &[&key, &state.code(), &now, &response],
    )
    .await?;
    super::waiters::forget_run(tx, key).await?;
    cancel_run_messages(context, user_id, key, now, spare_running, effects).await?;
    reply_to_invoker(context, key, invoked_end, now, effects).await?;
    Ok(RunEndOutcome::Ended)
}

/// Cancels the started runs matching `filter`, oldest first, at most `limit` of them.
pub async fn cancel_runs(
    context: Context<'_>,
    user_id: &str,
    filter: &RunFilter,
    limit: Option<usize>,
    now: i64,
    effects: &mut Effects,
) -> Result<u64> {
    let mut sql = SqlFilter::new("r.user_id = ?", user_id.to_string());
    let started = RunFilter { states: vec![RunState::RunStarted], ..filter.clone() };
    run_filter(&mut sql, &started, "r");
    // Bound (`LIMIT NULL` is no limit), so that the statement's text stays the same.
    let limit = format!("LIMIT {}", sql.bind(limit.map(super::query::limit)));
    // The run id compared byte by byte, as SQLite orders text.
    let query = format!(
        "SELECT r.run_id FROM workflow_runs r WHERE {} ORDER BY r.created_at, r.run_id COLLATE \"C\" {limit}",
        sql.clause()
    );
    let run_ids: Vec<String> =
        context.tx.query(&query, &sql.params()).await?.iter().map(|row| row.try_get(0)).collect::<Result<_, _>>()?;
    let mut cancelled = 0;
    for run_id in run_ids {
        if end_run(context, user_id, &run_id, RunEnd::Canceled, now, effects).await? == RunEndOutcome::Ended {
            cancelled += 1;
        }
    }
    Ok(cancelled)
}

/// The conditions of `filter` on the runs table (aliased `alias`).
pub fn run_filter(sql: &mut SqlFilter, filter: &RunFilter, alias: &str) {
    sql.push_in(&format!("{alias}.run_id"), &filter.run_ids);
    if !filter.urls.is_empty() {
        // One condition over an array, however many URLs: no deep OR chain.
        let test = match filter.url_exact {
            true => format!("{alias}.url = wanted.url"),
            false => format!("starts_with({alias}.url, wanted.url)"),
        };
        sql.push(
            &format!("EXISTS (SELECT 1 FROM unnest(?::TEXT[]) AS wanted(url) WHERE {test})"),
            [param(filter.urls.clone())],
        );
    }
    if !filter.message_ids.is_empty() {
        sql.push(
            &format!(
                "EXISTS (SELECT 1 FROM workflow_steps s
                 WHERE s.message_id = ANY(?::TEXT[]) AND s.run_key = {alias}.run_key)"
            ),
            [param(filter.message_ids.clone())],
        );
    }
    sql.push_in(&format!("{alias}.host"), &filter.hosts);
    sql.push_in(&format!("{alias}.path"), &filter.paths);
    let states: Vec<i64> = filter.states.iter().map(|state| state.code()).collect();
    sql.push_in(&format!("{alias}.state"), &states);
    if !filter.labels.is_empty() {
        sql.push(
            &format!(
                "EXISTS (SELECT 1 FROM unnest(?::TEXT[]) AS wanted(label)
                 WHERE strpos({alias}.labels, ',' || wanted.label || ',') > 0)"
            ),
            [param(filter.labels.clone())],
        );
    }
    if let Some(created_at) = filter.created_at {
        sql.push(&format!("{alias}.created_at = ?"), [param(created_at)]);
    }
    if let Some(from) = filter.from_ms {
        sql.push(&format!("{alias}.created_at >= ?"), [param(from)]);
    }
    if let Some(to) = filter.to_ms {
        sql.push(&format!("{alias}.created_at <= ?"), [param(to)]);
    }
    sql.push_in(&format!("{alias}.caller_ip"), &filter.caller_ips);
    sql.push_in(&format!("{alias}.flow_control_key"), &filter.flow_control_keys);
}

/// Cancels the unfinished messages of a run; with `spare_running`, not those whose attempt is
/// running (the delivery that ends the run successfully waits for its own answer).
async fn cancel_run_messages(
    context: Context<'_>,
    user_id: &str,
    key: i64,
    now: i64,
    spare_running: bool,
    effects: &mut Effects,
) -> Result<()> {
    let rows = context
        .tx
        .query(
            &format!(
                "SELECT id FROM messages
                 WHERE workflow_run_key = $1 AND state < {FIRST_TERMINAL_STATE} AND state <> $2 ORDER BY seq"
            ),
            &[&key, &MessageState::CancelRequested.code()],
        )
        .await?;
    let mut selected = Vec::with_capacity(rows.len());
    for row in &rows {
        let id: MessageId = parse_id(row.try_get(0)?)?;
        // Asking holds a message that is not running, as the cancel itself would.
        let running = spare_running && context.scheduling.is_some_and(|scheduling| scheduling.hold_for_cancel(id));
        if !running {
            selected.push(id);
        }
    }
    if !selected.is_empty() {
        ops::cancel(context, user_id, CancelSelection::Ids(selected), now, effects).await?;
    }
    Ok(())
}
