//! Workflow runs on SQLite: the reads behind [`WorkflowStore`] (a run, its steps, pages of runs
//! with their steps and pending messages) and the writer ops that end runs
//! (`workflow_ops`).

use super::SqliteStore;
use super::listing::PageFill;
use super::query::{SqlFilter, get_message, message_bytes, paginate};
use super::rows::response_from_row;
use super::workflow_ops::run_filter;
use super::writer::WriteOp;
use crate::error::{Result, StoreError};
use crate::model::{Page, PageRequest};
use crate::workflows::*;
use async_trait::async_trait;
use bytes::Bytes;
use rusqlite::{Connection, OptionalExtension, Row, params, params_from_iter};
use tern_core::workflow::{CallType, RunState, StepRecord};
use tern_core::{LogState, MessageId, MessageSpec, MessageState};

const RUN_COLUMNS: &str =
    "r.run_key, r.user_id, r.run_id, r.url, r.created_at, r.state, r.completed_at, r.response, r.config,
    r.invoker, r.dlq_id, r.caller_ip, r.step_count, r.step_bytes, r.failure_message_id, r.failed_message_id";

/// A run and its key.
fn run_from_row(row: &Row<'_>) -> Result<(i64, RunRecord)> {
    let state: i64 = row.get(5)?;
    let config: String = row.get(8)?;
    let run = RunRecord {
        user_id: row.get(1)?,
        run_id: row.get(2)?,
        url: row.get(3)?,
        created_at: row.get(4)?,
        state: RunState::from_code(state).ok_or_else(|| StoreError::Corrupt(format!("run state {state}")))?,
        completed_at: row.get(6)?,
        response: row.get::<_, Option<Vec<u8>>>(7)?.map(Bytes::from),
        config: serde_json::from_str(&config)?,
        invoker: row.get(9)?,
        dlq_id: row.get(10)?,
        caller_ip: row.get(11)?,
        step_count: row.get::<_, i64>(12)?.max(0) as u64,
        step_bytes: row.get::<_, i64>(13)?.max(0) as u64,
    };
    Ok((row.get(0)?, run))
}

/// The latest run with this id, and its key.
fn latest_run(connection: &Connection, user_id: &str, run_id: &str) -> Result<Option<(i64, RunRecord)>> {
    connection
        .prepare_cached(&format!(
            "SELECT {RUN_COLUMNS} FROM workflow_runs r WHERE r.user_id = ?1 AND r.run_id = ?2
             ORDER BY r.run_key DESC LIMIT 1"
        ))?
        .query_row(params![user_id, run_id], |row| Ok(run_from_row(row)))
        .optional()?
        .transpose()
}

fn get_run(connection: &Connection, user_id: &str, run_id: &str) -> Result<Option<RunRecord>> {
    Ok(latest_run(connection, user_id, run_id)?.map(|(_, run)| run))
}

/// The records of run `key` from the first through position `last`.
fn steps(connection: &Connection, run_key: i64, last: i64) -> Result<Vec<StepRecord>> {
    let mut statement = connection.prepare_cached(
        "SELECT message_id, call_type, created_at, body FROM workflow_steps
         WHERE run_key = ?1 AND position <= ?2 ORDER BY position",
    )?;
    let rows = statement.query_map(params![run_key, last], |row| {
        Ok(StepRecord {
            message_id: row.get(0)?,
            call_type: CallType::from_code(row.get(1)?),
            created_at: row.get(2)?,
            body: Bytes::from(row.get::<_, Vec<u8>>(3)?),
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// The messages of run `key` that have not continued it: its unfinished ones, and `failed`,
/// the one whose failure failed it.
fn pending(connection: &Connection, key: i64, failed: Option<&str>) -> Result<Vec<PendingStep>> {
    let mut statement = connection.prepare_cached(
        "SELECT id, state, retried, due_at, created_at, spec FROM messages INDEXED BY messages_workflow_run
         WHERE workflow_run_key = ?1 AND state < 3
         UNION ALL
         SELECT id, state, retried, due_at, created_at, spec FROM messages WHERE id = ?2",
    )?;
    let rows = statement.query_map(params![key, failed], |row| {
        Ok((
            row.get::<_, String>(0)?,
            row.get::<_, i64>(1)?,
            row.get::<_, u32>(2)?,
            row.get::<_, Option<i64>>(3)?,
            row.get::<_, i64>(4)?,
            row.get::<_, String>(5)?,
        ))
    })?;
    let mut pending = Vec::new();
    for row in rows {
        let (id, state, retried, due_at, created_at, spec) = row?;
        let spec: MessageSpec = serde_json::from_str(&spec)?;
        if spec.workflow.as_ref().is_none_or(|link| !link.call_type.continues_run()) {
            continue;
        }
        let state = MessageState::from_code(state).ok_or_else(|| StoreError::Corrupt(format!("state {state}")))?;
        pending.push(PendingStep {
            message_id: id.parse().map_err(|()| StoreError::Corrupt(format!("message id {id:?}")))?,
            state,
            retried,
            max_retries: spec.max_retries,
            retry_delay: spec.retry_delay,
            due_at,
            created_at,
            errors: errors(connection, &id)?,
        });
    }
    Ok(pending)
}

/// How much of each failed attempt's answer the run logs show.
pub const ERROR_BODY_SHOWN: usize = 4 << 10;

/// The failed attempts of a message, oldest first, each answer's body cut at
/// [`ERROR_BODY_SHOWN`] bytes.
fn errors(connection: &Connection, message_id: &str) -> Result<Vec<(i64, tern_core::AttemptResponse)>> {
    let mut statement = connection.prepare_cached(
        "SELECT time, response_status, response_headers, substr(response_body, 1, ?3), error FROM logs
         WHERE message_id = ?1 AND state = ?2 ORDER BY seq",
    )?;
    let rows = statement.query_map(params![message_id, LogState::Error.code(), ERROR_BODY_SHOWN as i64], |row| {
        Ok((row.get::<_, i64>(0)?, response_from_row(row, 1, Some(4))))
    })?;
    let mut errors = Vec::new();
    for row in rows {
        let (time, response) = row?;
        errors.push((time, response?.unwrap_or_default()));
    }
    Ok(errors)
}

/// About how many bytes the view of `pending` takes.
fn pending_bytes(pending: &[PendingStep]) -> usize {
    pending
        .iter()
        .map(|step| {
            256 + step
                .errors
                .iter()
                .map(|(_, error)| 128 + error.body.len() + error.error.as_ref().map_or(0, String::len))
                .sum::<usize>()
        })
        .sum()
}

fn failed_run(connection: &Connection, user_id: &str, dlq_id: &str) -> Result<Option<FailedRun>> {
    let found = connection
        .prepare_cached(&format!(
            "SELECT {RUN_COLUMNS} FROM workflow_runs r INDEXED BY workflow_runs_dlq WHERE r.dlq_id = ?1 AND r.user_id = ?2"
        ))?
        .query_row(params![dlq_id, user_id], |row| {
            Ok(run_from_row(row).map(|run| (run, row.get::<_, Option<String>>(14), row.get::<_, Option<String>>(15))))
        })
        .optional()?;
    let Some(found) = found else { return Ok(None) };
    let ((_, run), failure_id, failed_id) = found?;
    let (failure_id, failed_id) = (failure_id?, failed_id?);
    let failed: Option<(String, Option<String>)> = match &failed_id {
        Some(id) => connection
            .prepare_cached("SELECT spec, dlq_id FROM messages WHERE id = ?1 AND user_id = ?2")?
            .query_row(params![id, user_id], |row| Ok((row.get(0)?, row.get(1)?)))
            .optional()?,
        None => None,
    };
    let in_dlq = failed.as_ref().is_some_and(|(_, entry)| entry.as_deref() == Some(dlq_id));
    let failed_spec = failed.map(|(spec, _)| serde_json::from_str(&spec)).transpose()?;
    let failure_callback = match failure_id {
        Some(id) => connection
            .prepare_cached(
                "SELECT id, url, state, response_status, response_headers, substr(response_body, 1, ?3), response_error
                 FROM messages WHERE id = ?1 AND user_id = ?2",
            )?
            .query_row(params![id, user_id, FAILURE_RESPONSE_SHOWN as i64], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, i64>(2)?,
                    response_from_row(row, 3, Some(6)),
                ))
            })
            .optional()?
            .map(|(id, url, state, response)| -> Result<FailureCallbackState> {
                Ok(FailureCallbackState {
                    message_id: id.parse().map_err(|()| StoreError::Corrupt(format!("message id {id:?}")))?,
                    url,
                    state: MessageState::from_code(state)
                        .ok_or_else(|| StoreError::Corrupt(format!("state {state}")))?,
                    response: response?,
                })
            })
            .transpose()?,
        None => None,
    };
    Ok(Some(FailedRun { run, failed_spec, in_dlq, failure_callback }))
}

fn list_runs(
    connection: &Connection,
    user_id: &str,
    filter: &RunFilter,
    page: &PageRequest,
) -> Result<Page<RunWithSteps>> {
    let mut sql = SqlFilter::new("r.user_id = ?", user_id.to_string());
    run_filter(&mut sql, filter, "r");
    let order = paginate(&mut sql, page, "r.created_at", "r.run_id", false)?;
    let query = format!("SELECT {RUN_COLUMNS} FROM workflow_runs r WHERE {} {order}", sql.clause());
    let mut statement = connection.prepare(&query)?;
    let mut rows = statement.query(params_from_iter(sql.params()))?;
    let mut fill = PageFill::new(page);
    let (mut runs, mut cursor, mut last_key) = (Vec::new(), None, None);
    while let Some(row) = rows.next()? {
        let (key, run) = run_from_row(row)?;
        // Steps are read whole (each is the JSON its view is made of; a trim applies to what the
        // view shows); each step's view and state take about this much besides its body.
        let failure_id: Option<MessageId> = row.get::<_, Option<String>>(14)?.and_then(|id| id.parse().ok());
        let failure_bytes = match failure_id {
            Some(id) => message_bytes(connection, user_id, id)?.unwrap_or(0),
            None => 0,
        };
        // What the run has under way is read first: its errors are cut short, but a run may have
        // many branches under way.
        let failed: Option<String> = row.get(15)?;
        // A run that succeeded has nothing under way (the delivery that completed it may still
        // be recording its answer).
        let pending = match run.state {
            RunState::RunSuccess => Vec::new(),
            _ => pending(connection, key, failed.as_deref())?,
        };
        let bytes = run.step_bytes as usize
            + run.response.as_ref().map_or(0, Bytes::len)
            + 256 * run.step_count as usize
            + failure_bytes
            + pending_bytes(&pending);
        if !fill.take(bytes) {
            cursor = last_key;
            break;
        }
        last_key = Some(format!("{}-{}", run.created_at, run.run_id));
        let steps = steps(connection, key, i64::MAX)?;
        let failure_callback = match failure_id {
            Some(id) => get_message(connection, user_id, id)?,
            None => None,
        };
        runs.push(RunWithSteps { run, steps, pending, failure_callback });
    }
    Ok(fill.page(runs, cursor))
}

#[async_trait]
impl WorkflowStore for SqliteStore {
    async fn get_run(&self, user_id: &str, run_id: &str) -> Result<Option<RunRecord>> {
        let (user_id, run_id) = (user_id.to_string(), run_id.to_string());
        self.readers.read(move |c| get_run(c, &user_id, &run_id)).await
    }

    async fn run_records(&self, user_id: &str, run_id: &str) -> Result<Option<(RunRecord, Vec<StepRecord>)>> {
        let (user_id, run_id) = (user_id.to_string(), run_id.to_string());
        let query = move |c: &Connection| -> Result<Option<(RunRecord, Vec<StepRecord>)>> {
            let Some((key, run)) = latest_run(c, &user_id, &run_id)? else { return Ok(None) };
            Ok(Some((run, steps(c, key, i64::MAX)?)))
        };
        self.readers.read(query).await
    }

    async fn message_run(
        &self,
        user_id: &str,
        message_id: MessageId,
        wanted: WantedRecords,
    ) -> Result<Option<(RunRecord, Vec<StepRecord>)>> {
        let user_id = user_id.to_string();
        let query = move |c: &Connection| -> Result<Option<(RunRecord, Vec<StepRecord>)>> {
            let id = message_id.to_string();
            let Some(key) = super::run_records::run_of_message(c, &id)? else { return Ok(None) };
            let found = c
                .prepare_cached(&format!(
                    "SELECT {RUN_COLUMNS} FROM workflow_runs r WHERE r.run_key = ?1 AND r.user_id = ?2"
                ))?
                .query_row(params![key, user_id], |row| Ok(run_from_row(row)))
                .optional()?
                .transpose()?;
            let Some((_, run)) = found else { return Ok(None) };
            let last = match wanted {
                WantedRecords::None => return Ok(Some((run, Vec::new()))),
                WantedRecords::ThroughOwnWithin(max) if run.step_bytes > max => return Ok(Some((run, Vec::new()))),
                WantedRecords::Initial => 0,
                WantedRecords::ThroughOwn | WantedRecords::ThroughOwnWithin(_) => c
                    .prepare_cached("SELECT position FROM workflow_steps WHERE message_id = ?1 AND run_key = ?2")?
                    .query_row(params![id, key], |row| row.get(0))
                    .optional()?
                    .unwrap_or(0),
            };
            Ok(Some((run, steps(c, key, last)?)))
        };
        self.readers.read_for_engine(query).await
    }

    async fn end_run(&self, user_id: &str, run_id: &str, end: RunEnd, now: i64) -> Result<RunEndOutcome> {
        let (user_id, run_id) = (user_id.to_string(), run_id.to_string());
        self.request(|reply| WriteOp::EndRun { user_id, run_id, end, now, reply }).await
    }

    async fn cancel_runs(&self, user_id: &str, filter: RunFilter, limit: Option<usize>, now: i64) -> Result<u64> {
        let user_id = user_id.to_string();
        self.request(|reply| WriteOp::CancelRuns { user_id, filter, limit, now, reply }).await
    }

    async fn add_waiter(&self, waiter: NewWaiter) -> Result<WaitOutcome> {
        self.request(|reply| WriteOp::AddWaiter { waiter: Box::new(waiter), reply }).await
    }

    async fn notify(&self, event: Event, now: i64, max_stored: usize, run_limits: RunLimits) -> Result<NotifyOutcome> {
        let event = Box::new(event);
        self.request(|reply| WriteOp::Notify { event, now, max_stored, run_limits, reply }).await
    }

    async fn waiters(&self, user_id: &str, event_id: &str, limit: usize, max_bytes: usize) -> Result<Vec<WaiterView>> {
        let (user_id, event_id) = (user_id.to_string(), event_id.to_string());
        self.readers.read(move |c| super::waiters::waiters(c, &user_id, &event_id, limit, max_bytes)).await
    }

    async fn expire_waiters(&self, now: i64, limit: usize, run_limits: RunLimits) -> Result<u64> {
        self.request(|reply| WriteOp::ExpireWaiters { now, limit, run_limits, reply }).await
    }

    async fn call_failure_function_again(
        &self,
        user_id: &str,
        dlq_id: &str,
        now: i64,
    ) -> Result<Option<(String, i64)>> {
        let (user_id, dlq_id) = (user_id.to_string(), dlq_id.to_string());
        self.request(|reply| WriteOp::CallFailureFunctionAgain { user_id, dlq_id, now, reply }).await
    }

    async fn failed_run(&self, user_id: &str, dlq_id: &str) -> Result<Option<FailedRun>> {
        let (user_id, dlq_id) = (user_id.to_string(), dlq_id.to_string());
        self.readers.read(move |c| failed_run(c, &user_id, &dlq_id)).await
    }

    async fn next_waiter_deadline(&self) -> Result<Option<i64>> {
        self.readers.read_for_engine(super::waiters::next_deadline).await
    }

    async fn list_runs(&self, user_id: &str, filter: &RunFilter, page: &PageRequest) -> Result<Page<RunWithSteps>> {
        let (user_id, filter, page) = (user_id.to_string(), filter.clone(), page.clone());
        self.readers.read(move |c| list_runs(c, &user_id, &filter, &page)).await
    }
}
