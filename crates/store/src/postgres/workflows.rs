//! Workflow runs on PostgreSQL: the reads behind [`WorkflowStore`] (a run, its steps, pages of
//! runs with their steps and pending messages) and the writer ops that end runs
//! (`workflow_ops`).

use super::client::GenericClient;
use super::listing::PageFill;
use super::query::{SqlFilter, get_message, message_bytes, paginate};
use super::rows::{parse_id, response_from_row};
use super::workflow_ops::run_filter;
use super::{PostgresStore, client};
use crate::batch::WriteOp;
use crate::error::{Result, StoreError};
use crate::model::*;
use crate::workflows::*;
use async_trait::async_trait;
use bytes::Bytes;
use tern_core::workflow::{CallType, RunState, StepRecord};
use tern_core::{LogState, MessageId, MessageSpec, MessageState};
use tokio_postgres::Row;

const RUN_COLUMNS: &str =
    "r.run_key, r.user_id, r.run_id, r.url, r.created_at, r.state, r.completed_at, r.response, r.config,
    r.invoker, r.dlq_id, r.caller_ip, r.step_count, r.step_bytes, r.failure_message_id, r.failed_message_id";

/// A run and its key.
fn run_from_row(row: &Row) -> Result<(i64, RunRecord)> {
    let state: i64 = row.try_get(5)?;
    let config: String = row.try_get(8)?;
    let run = RunRecord {
        user_id: row.try_get(1)?,
        run_id: row.try_get(2)?,
        url: row.try_get(3)?,
        created_at: row.try_get(4)?,
        state: RunState::from_code(state).ok_or_else(|| StoreError::Corrupt(format!("run state {state}")))?,
        completed_at: row.try_get(6)?,
        response: row.try_get::<_, Option<Vec<u8>>>(7)?.map(Bytes::from),
        config: serde_json::from_str(&config)?,
        invoker: row.try_get(9)?,
        dlq_id: row.try_get(10)?,
        caller_ip: row.try_get(11)?,
        step_count: row.try_get::<_, i64>(12)?.max(0) as u64,
        step_bytes: row.try_get::<_, i64>(13)?.max(0) as u64,
    };
    Ok((row.try_get(0)?, run))
}

/// The latest run with this id, and its key.
async fn latest_run(c: &impl GenericClient, user_id: &str, run_id: &str) -> Result<Option<(i64, RunRecord)>> {
    let row = c
        .query_opt(
            &format!(
                "SELECT {RUN_COLUMNS} FROM workflow_runs r WHERE r.user_id = $1 AND r.run_id = $2
                 ORDER BY r.run_key DESC LIMIT 1"
            ),
            &[&user_id, &run_id],
        )
        .await?;
    row.as_ref().map(run_from_row).transpose()
}

async fn get_run(c: &impl GenericClient, user_id: &str, run_id: &str) -> Result<Option<RunRecord>> {
    Ok(latest_run(c, user_id, run_id).await?.map(|(_, run)| run))
}

/// The records of run `key` from the first through position `last`.
async fn steps(c: &impl GenericClient, run_key: i64, last: i64) -> Result<Vec<StepRecord>> {
    let rows = c
        .query(
            "SELECT message_id, call_type, created_at, body FROM workflow_steps
             WHERE run_key = $1 AND position <= $2 ORDER BY position",
            &[&run_key, &last],
        )
        .await?;
    rows.iter()
        .map(|row| {
            Ok(StepRecord {
                message_id: row.try_get(0)?,
                call_type: CallType::from_code(row.try_get(1)?),
                created_at: row.try_get(2)?,
                body: Bytes::from(row.try_get::<_, Vec<u8>>(3)?),
            })
        })
        .collect()
}

/// The messages of run `key` that have not continued it: its unfinished ones, and `failed`,
/// the one whose failure failed it.
async fn pending(c: &impl GenericClient, key: i64, failed: Option<&str>) -> Result<Vec<PendingStep>> {
    let rows = c
        .query(
            "SELECT id, state, retried, due_at, created_at, spec FROM messages
             WHERE workflow_run_key = $1 AND state < 3
             UNION ALL
             SELECT id, state, retried, due_at, created_at, spec FROM messages WHERE id = $2",
            &[&key, &failed],
        )
        .await?;
    let mut pending = Vec::new();
    for row in &rows {
        let (id, state, retried): (String, i64, i64) = (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
        let spec: MessageSpec = serde_json::from_str(row.try_get(5)?)?;
        if spec.workflow.as_ref().is_none_or(|link| !link.call_type.continues_run()) {
            continue;
        }
        let state = MessageState::from_code(state).ok_or_else(|| StoreError::Corrupt(format!("state {state}")))?;
        pending.push(PendingStep {
            message_id: parse_id(&id)?,
            state,
            retried: u32::try_from(retried).map_err(|_| StoreError::Corrupt(format!("retried {retried}")))?,
            max_retries: spec.max_retries,
            retry_delay: spec.retry_delay,
            due_at: row.try_get(3)?,
            created_at: row.try_get(4)?,
            errors: errors(c, &id).await?,
        });
    }
    Ok(pending)
}

/// How much of each failed attempt's answer the run logs show.
pub const ERROR_BODY_SHOWN: usize = 4 << 10;

/// The failed attempts of a message, oldest first, each answer's body cut at
/// [`ERROR_BODY_SHOWN`] bytes.
async fn errors(c: &impl GenericClient, message_id: &str) -> Result<Vec<(i64, tern_core::AttemptResponse)>> {
    let rows = c
        .query(
            &format!(
                "SELECT time, response_status, response_headers, substring(response_body FROM 1 FOR {ERROR_BODY_SHOWN}),
                    error FROM logs
                 WHERE message_id = $1 AND state = $2 ORDER BY seq"
            ),
            &[&message_id, &LogState::Error.code()],
        )
        .await?;
    rows.iter()
        .map(|row| Ok((row.try_get::<_, i64>(0)?, response_from_row(row, 1, Some(4))?.unwrap_or_default())))
        .collect()
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

async fn failed_run(c: &impl GenericClient, user_id: &str, dlq_id: &str) -> Result<Option<FailedRun>> {
    let found = c
        .query_opt(
            // The first, as the embedded store reads it (a DLQ id names one run).
            &format!(
                "SELECT {RUN_COLUMNS} FROM workflow_runs r WHERE r.dlq_id = $1 AND r.user_id = $2
                 ORDER BY r.run_key LIMIT 1"
            ),
            &[&dlq_id, &user_id],
        )
        .await?;
    let Some(found) = found else { return Ok(None) };
    let (_, run) = run_from_row(&found)?;
    let failure_id: Option<String> = found.try_get(14)?;
    let failed_id: Option<String> = found.try_get(15)?;
    let failed: Option<(String, Option<String>)> = match &failed_id {
        Some(id) => c
            .query_opt("SELECT spec, dlq_id FROM messages WHERE id = $1 AND user_id = $2", &[id, &user_id])
            .await?
            .map(|row| -> Result<_> { Ok((row.try_get(0)?, row.try_get(1)?)) })
            .transpose()?,
        None => None,
    };
    let in_dlq = failed.as_ref().is_some_and(|(_, entry)| entry.as_deref() == Some(dlq_id));
    let failed_spec = failed.map(|(spec, _)| serde_json::from_str(&spec)).transpose()?;
    let failure_callback = match failure_id {
        Some(id) => c
            .query_opt(
                &format!(
                    "SELECT id, url, state, response_status, response_headers,
                        substring(response_body FROM 1 FOR {FAILURE_RESPONSE_SHOWN}), response_error
                     FROM messages WHERE id = $1 AND user_id = $2"
                ),
                &[&id, &user_id],
            )
            .await?
            .map(|row| -> Result<FailureCallbackState> {
                let (id, state): (String, i64) = (row.try_get(0)?, row.try_get(2)?);
                Ok(FailureCallbackState {
                    message_id: parse_id(&id)?,
                    url: row.try_get(1)?,
                    state: MessageState::from_code(state)
                        .ok_or_else(|| StoreError::Corrupt(format!("state {state}")))?,
                    response: response_from_row(&row, 3, Some(6))?,
                })
            })
            .transpose()?,
        None => None,
    };
    Ok(Some(FailedRun { run, failed_spec, in_dlq, failure_callback }))
}

/// [`RUN_COLUMNS`] as a page of runs reads them, followed by the response's length: the
/// response is read once the page has taken its run, so that a page never loads what it does
/// not show. (The page's rows are read before its runs' records, on the same connection, so
/// they come without any response at all.)
fn listed_run_columns() -> String {
    let columns = RUN_COLUMNS.replacen("r.response,", "NULL::BYTEA,", 1);
    format!("{columns}, octet_length(r.response)::BIGINT")
}

async fn list_runs(
    c: &impl GenericClient,
    user_id: &str,
    filter: &RunFilter,
    page: &PageRequest,
) -> Result<Page<RunWithSteps>> {
    let mut sql = SqlFilter::new("r.user_id = ?", user_id.to_string());
    run_filter(&mut sql, filter, "r");
    let order = paginate(&mut sql, page, "r.created_at", "r.run_id", false)?;
    let query = format!("SELECT {} FROM workflow_runs r WHERE {} {order}", listed_run_columns(), sql.clause());
    let rows = c.query(&query, &sql.params()).await?;
    let mut fill = PageFill::new(page);
    let (mut runs, mut cursor, mut last_key) = (Vec::new(), None, None);
    for row in &rows {
        let (key, mut run) = run_from_row(row)?;
        let response_bytes = row.try_get::<_, Option<i64>>(16)?.map(|length| length.max(0) as usize);
        // Steps are read whole (each is the JSON its view is made of; a trim applies to what the
        // view shows); each step's view and state take about this much besides its body.
        let failure_id: Option<MessageId> = row.try_get::<_, Option<String>>(14)?.and_then(|id| id.parse().ok());
        let failure_bytes = match failure_id {
            Some(id) => message_bytes(c, user_id, id).await?.unwrap_or(0),
            None => 0,
        };
        // What the run has under way is read first: its errors are cut short, but a run may have
        // many branches under way.
        let failed: Option<String> = row.try_get(15)?;
        // A run that succeeded has nothing under way (the delivery that completed it may still
        // be recording its answer).
        let pending = match run.state {
            RunState::RunSuccess => Vec::new(),
            _ => pending(c, key, failed.as_deref()).await?,
        };
        let bytes = run.step_bytes as usize
            + response_bytes.unwrap_or(0)
            + 256 * run.step_count as usize
            + failure_bytes
            + pending_bytes(&pending);
        if !fill.take(bytes) {
            cursor = last_key;
            break;
        }
        last_key = Some(format!("{}-{}", run.created_at, run.run_id));
        if run.response.is_none() && response_bytes.is_some() {
            let row = c.query_one("SELECT response FROM workflow_runs WHERE run_key = $1", &[&key]).await?;
            run.response = row.try_get::<_, Option<Vec<u8>>>(0)?.map(Bytes::from);
        }
        let steps = steps(c, key, i64::MAX).await?;
        let failure_callback = match failure_id {
            Some(id) => get_message(c, user_id, id).await?,
            None => None,
        };
        runs.push(RunWithSteps { run, steps, pending, failure_callback });
    }
    Ok(fill.page(runs, cursor))
}

#[async_trait]
impl WorkflowStore for PostgresStore {
    async fn get_run(&self, user_id: &str, run_id: &str) -> Result<Option<RunRecord>> {
        get_run(client(&self.reader().await?), user_id, run_id).await
    }

    async fn run_records(&self, user_id: &str, run_id: &str) -> Result<Option<(RunRecord, Vec<StepRecord>)>> {
        let connection = self.reader().await?;
        let c = client(&connection);
        let Some((key, run)) = latest_run(c, user_id, run_id).await? else { return Ok(None) };
        Ok(Some((run, steps(c, key, i64::MAX).await?)))
    }

    async fn message_run(
        &self,
        user_id: &str,
        message_id: MessageId,
        wanted: WantedRecords,
    ) -> Result<Option<(RunRecord, Vec<StepRecord>)>> {
        let connection = self.engine_reader().await?;
        let c = client(&connection);
        let id = message_id.to_string();
        let Some(key) = super::run_records::run_of_message(c, &id).await? else { return Ok(None) };
        let found = c
            .query_opt(
                &format!("SELECT {RUN_COLUMNS} FROM workflow_runs r WHERE r.run_key = $1 AND r.user_id = $2"),
                &[&key, &user_id],
            )
            .await?;
        let Some((_, run)) = found.as_ref().map(run_from_row).transpose()? else { return Ok(None) };
        let last = match wanted {
            WantedRecords::None => return Ok(Some((run, Vec::new()))),
            WantedRecords::ThroughOwnWithin(max) if run.step_bytes > max => return Ok(Some((run, Vec::new()))),
            WantedRecords::Initial => 0,
            // The first of the message's records, as the embedded store reads it.
            WantedRecords::ThroughOwn | WantedRecords::ThroughOwnWithin(_) => c
                .query_opt(
                    "SELECT position FROM workflow_steps WHERE message_id = $1 AND run_key = $2
                     ORDER BY position LIMIT 1",
                    &[&id, &key],
                )
                .await?
                .map(|row| row.try_get(0))
                .transpose()?
                .unwrap_or(0),
        };
        Ok(Some((run, steps(c, key, last).await?)))
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
        super::waiters::waiters(client(&self.reader().await?), user_id, event_id, limit, max_bytes).await
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
        failed_run(client(&self.reader().await?), user_id, dlq_id).await
    }

    async fn next_waiter_deadline(&self) -> Result<Option<i64>> {
        super::waiters::next_deadline(client(&self.engine_reader().await?)).await
    }

    async fn list_runs(&self, user_id: &str, filter: &RunFilter, page: &PageRequest) -> Result<Page<RunWithSteps>> {
        list_runs(client(&self.reader().await?), user_id, filter, page).await
    }
}
