//! Admitting and recording the messages of workflow runs, inside the insert's transaction: an
//! Init starts its run (or replaces the configuration of the running one, or takes up a failed
//! run from the DLQ), a message continuing a run is appended to its records. Every message of a
//! run keeps the run's key in its row: a run id names one running run at a time and a new run
//! once the last ended, so what a message does later (its delivery, its failure, its callbacks)
//! must reach its own run, never a later one with the same id.

use super::client::GenericClient;
use super::rows::labels_column;
use crate::error::{Result, StoreError};
use crate::model::{InsertOutcome, NewMessage};
use crate::workflows::Continuation;
use tern_core::workflow::{CallType, RunState};

/// The latest run with this id (its key and state), if there is one.
pub async fn latest_run(c: &impl GenericClient, user_id: &str, run_id: &str) -> Result<Option<(i64, RunState)>> {
    let row = c
        .query_opt(
            "SELECT run_key, state FROM workflow_runs WHERE user_id = $1 AND run_id = $2
             ORDER BY run_key DESC LIMIT 1",
            &[&user_id, &run_id],
        )
        .await?;
    match row {
        Some(row) => Ok(Some((row.try_get(0)?, state_of(row.try_get(1)?)?))),
        None => Ok(None),
    }
}

fn state_of(code: i64) -> Result<RunState> {
    RunState::from_code(code).ok_or_else(|| StoreError::Corrupt(format!("run state {code}")))
}

/// The run a stored message belongs to.
pub async fn run_of_message(c: &impl GenericClient, message_id: &str) -> Result<Option<i64>> {
    let row = c.query_opt("SELECT workflow_run_key FROM messages WHERE id = $1", &[&message_id]).await?;
    Ok(row.map(|row| row.try_get::<_, Option<i64>>(0)).transpose()?.flatten())
}

async fn run_state(c: &impl GenericClient, key: i64) -> Result<Option<RunState>> {
    let row = c.query_opt("SELECT state FROM workflow_runs WHERE run_key = $1", &[&key]).await?;
    row.map(|row| state_of(row.try_get(0)?)).transpose()
}

/// What the run a message names says to it.
pub enum Admission {
    /// Store it: it belongs to run `key` (an Init: to the run it starts, known once recorded).
    Admitted(Option<i64>),
    Refused(InsertOutcome),
}

/// Whether `message` may be stored. `own_run` is the run of a message the store makes itself
/// for another (a callback, a wait's result, an invoke's reply): it goes to that run, not to
/// the latest with the id. An Init names a new run or replaces the running one's configuration;
/// any other message continues a running run, within the run's limits when it carries them — a
/// failure callback reports on a run that has just failed.
pub async fn admit(c: &impl GenericClient, message: &NewMessage, own_run: Option<i64>) -> Result<Admission> {
    let Some(link) = &message.spec.workflow else {
        return Ok(Admission::Admitted(None));
    };
    if let Some(run) = &message.run {
        let latest = latest_run(c, &message.user_id, &link.run_id).await?;
        if let Some((key, RunState::RunStarted)) = latest {
            return Ok(match run.replace {
                true => Admission::Admitted(Some(key)),
                false => Admission::Refused(InsertOutcome::RunExists),
            });
        }
        if let Some(continuation) = &run.continues
            && failed_run_key(c, &message.user_id, &continuation.dlq_id).await?.is_none()
        {
            return Ok(Admission::Refused(InsertOutcome::DlqEntryGone));
        }
        return Ok(Admission::Admitted(None));
    }
    let (key, state) = match own_run {
        Some(key) => (Some(key), run_state(c, key).await?),
        None => match latest_run(c, &message.user_id, &link.run_id).await? {
            Some((key, state)) => (Some(key), Some(state)),
            None => (None, None),
        },
    };
    if link.call_type == CallType::FailureCall {
        return Ok(Admission::Admitted(key));
    }
    let Some(key) = key.filter(|_| state == Some(RunState::RunStarted)) else {
        return Ok(Admission::Refused(InsertOutcome::RunNotActive));
    };
    if let Some(limits) = &message.run_limits {
        // Locked until the commit: another node appending to the run waits, then reads the
        // counts this message's record leaves (the check and the append are one step).
        let row = c
            .query_one("SELECT step_count, step_bytes FROM workflow_runs WHERE run_key = $1 FOR UPDATE", &[&key])
            .await?;
        let (steps, bytes): (i64, i64) = (row.try_get(0)?, row.try_get(1)?);
        if steps as usize >= limits.max_steps {
            return Ok(Admission::Refused(InsertOutcome::RunStepLimit));
        }
        if (bytes as usize).saturating_add(message.body.len()) > limits.max_bytes {
            return Ok(Admission::Refused(InsertOutcome::RunByteLimit));
        }
    }
    Ok(Admission::Admitted(Some(key)))
}

/// Starts the run of an admitted Init, or (replacing the running run's configuration) finds
/// it; returns its key. `None` for any other message.
pub async fn start_run(c: &impl GenericClient, message: &NewMessage, admitted: Option<i64>) -> Result<Option<i64>> {
    let Some(run) = &message.run else { return Ok(admitted) };
    if let Some(key) = admitted {
        // The run keeps its records; only its configuration changes.
        c.execute(
            "UPDATE workflow_runs SET config = $2, labels = $3 WHERE run_key = $1",
            &[&key, &serde_json::to_string(&run.config)?, &labels_column(&run.config.labels)],
        )
        .await?;
        return Ok(Some(key));
    }
    let invoker_key = match &run.invoker {
        Some(invoker) => latest_run(c, &message.user_id, &invoker.run_id)
            .await?
            .filter(|(_, state)| *state == RunState::RunStarted)
            .map(|(key, _)| key),
        None => None,
    };
    let (host, path) = tern_core::message::url_host_and_path(&run.url);
    let row = c
        .query_one(
            "INSERT INTO workflow_runs (user_id, run_id, url, created_at, state, config, labels, invoker,
                caller_ip, flow_control_key, invoker_reply, invoker_run_key, host, path)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
             RETURNING run_key",
            &[
                &message.user_id,
                &run.run_id,
                &run.url,
                &message.created_at,
                &RunState::RunStarted.code(),
                &serde_json::to_string(&run.config)?,
                &labels_column(&run.config.labels),
                &run.invoker.as_ref().map(|invoker| &invoker.view),
                &message.spec.caller_ip,
                &run.config.flow_control.as_ref().map(|flow| &flow.key),
                &run.invoker.as_ref().map(serde_json::to_string).transpose()?,
                &invoker_key,
                &host,
                &path,
            ],
        )
        .await?;
    Ok(Some(row.try_get(0)?))
}

/// Records a stored message of run `key`: an Init's body is the run's first record (or the
/// failed run it takes up gives the first ones); a failure callback is noted as the run's; any
/// other message is appended to the run's records.
pub async fn record(c: &impl GenericClient, message: &NewMessage, id: &str, key: Option<i64>) -> Result<()> {
    let (Some(link), Some(key)) = (&message.spec.workflow, key) else {
        return Ok(());
    };
    match &message.run {
        Some(run) if run.replace => return Ok(()),
        Some(run) => {
            if let Some(continuation) = &run.continues {
                return take_up(c, &message.user_id, continuation, key, id).await;
            }
        }
        None if link.call_type == CallType::FailureCall => {
            c.execute("UPDATE workflow_runs SET failure_message_id = $2 WHERE run_key = $1", &[&key, &id]).await?;
            return Ok(());
        }
        None => {}
    }
    append(c, key, id, link.call_type, message.created_at, &message.body).await
}

/// Appends a record to run `key`'s records.
pub async fn append(
    c: &impl GenericClient,
    key: i64,
    id: &str,
    call_type: CallType,
    at: i64,
    body: &[u8],
) -> Result<()> {
    // The update locks the run's row, so appends from several nodes take positions in turn.
    let row = c
        .query_one(
            "UPDATE workflow_runs SET step_count = step_count + 1, step_bytes = step_bytes + $2
             WHERE run_key = $1 RETURNING step_count - 1",
            &[&key, &(body.len() as i64)],
        )
        .await?;
    let position: i64 = row.try_get(0)?;
    c.execute(
        "INSERT INTO workflow_steps (run_key, position, message_id, call_type, created_at, body)
         VALUES ($1, $2, $3, $4, $5, $6)",
        &[&key, &position, &id, &call_type.code(), &at, &body],
    )
    .await?;
    Ok(())
}

/// The run that failed with the DLQ entry `dlq_id`, while the entry exists.
pub async fn failed_run_key(c: &impl GenericClient, user_id: &str, dlq_id: &str) -> Result<Option<i64>> {
    // The first row, as the embedded store reads it (a DLQ id names one run).
    let rows = c
        .query(
            "SELECT r.run_key FROM workflow_runs r
             WHERE r.dlq_id = $1 AND r.user_id = $2
               AND EXISTS (SELECT 1 FROM messages m WHERE m.dlq_id = $1 AND m.user_id = $2)
             LIMIT 1",
            &[&dlq_id, &user_id],
        )
        .await?;
    rows.first().map(|row| row.try_get(0)).transpose().map_err(Into::into)
}

/// Starts run `key` (whose Init is message `id`) where the failed run of `continuation` was:
/// with its initial payload (restart), or with every record before the message that failed and
/// that message's own again as the Init's (resume). The Init's body is copied from there, never
/// read out, and the DLQ entry is removed.
async fn take_up(c: &impl GenericClient, user_id: &str, continuation: &Continuation, key: i64, id: &str) -> Result<()> {
    let failed = failed_run_key(c, user_id, &continuation.dlq_id)
        .await?
        .ok_or_else(|| StoreError::Corrupt("a DLQ entry admitted for a resume is gone".into()))?;
    let rows = c
        .query(
            "SELECT s.position FROM workflow_steps s JOIN messages m ON m.id = s.message_id
             WHERE s.run_key = $1 AND m.dlq_id = $2 LIMIT 1",
            &[&failed, &continuation.dlq_id],
        )
        .await?;
    let failed_position: Option<i64> = rows.first().map(|row| row.try_get(0)).transpose()?;
    // Resumed: the records before the failed message, and that message's again (with the new
    // Init's id, which delivers it). Restarted (or failed at its Init): the initial payload.
    let (copied, again) = match failed_position {
        Some(position) if continuation.resume && position > 0 => (position, Some(position)),
        _ => (1, None),
    };
    c.execute(
        "INSERT INTO workflow_steps (run_key, position, message_id, call_type, created_at, body)
         SELECT $1::BIGINT, position, message_id, call_type, created_at, body FROM workflow_steps
         WHERE run_key = $2 AND position < $3",
        &[&key, &failed, &copied],
    )
    .await?;
    let body_from = match again {
        Some(position) => {
            c.execute(
                "INSERT INTO workflow_steps (run_key, position, message_id, call_type, created_at, body)
                 SELECT $1::BIGINT, position, $4::TEXT, call_type, created_at, body FROM workflow_steps
                 WHERE run_key = $2 AND position = $3",
                &[&key, &failed, &position, &id],
            )
            .await?;
            position
        }
        None => 0,
    };
    c.execute(
        "UPDATE messages SET body = (SELECT body FROM workflow_steps WHERE run_key = $2 AND position = $3)
         WHERE id = $1",
        &[&id, &key, &body_from],
    )
    .await?;
    c.execute(
        "UPDATE workflow_runs SET (step_count, step_bytes) =
            (SELECT count(*), coalesce(sum(octet_length(body)), 0)::BIGINT FROM workflow_steps WHERE run_key = $1)
         WHERE run_key = $1",
        &[&key],
    )
    .await?;
    c.execute(
        "UPDATE messages SET dlq_id = NULL, dlq_at = NULL WHERE user_id = $1 AND dlq_id = $2",
        &[&user_id, &continuation.dlq_id],
    )
    .await?;
    Ok(())
}
