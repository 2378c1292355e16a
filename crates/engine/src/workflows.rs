//! Upstash Workflow in the engine (workflow-protocol.md): what a publish of a run's message
//! takes from the run (its trigger configuration, an invoked run's envelope), the errors of
//! messages a run refuses, and the operations on runs the API offers (end, cancel, fetch, list).
//! What a delivery carries is `workflow_delivery`; waits are `waiters`; the DLQ `workflow_dlq`.

use crate::error::{EngineError, Result};
use crate::publish::{NewResources, PublishRequest, message_spec};
use crate::{Engine, Shared};
use bytes::Bytes;
use tern_core::Invalid;
use tern_core::workflow::{CallType, InvokeEnvelope, RunConfig, RunState, StepRecord, WorkflowHeaders};
use tern_store::{
    InsertOutcome, NewRun, Page, PageRequest, RunEnd, RunEndOutcome, RunFilter, RunInvoker, RunWithSteps,
};

/// How deep invoked runs may nest (`Upstash-Workflow-Invoke-Count`), as the Workflow docs say.
pub const MAX_INVOKE_DEPTH: u32 = 100;

/// Fits a publish into its run: an Init creates the run with the publish's configuration (the
/// run's trigger configuration) — an invoked run's Init also carries the invoker's envelope,
/// whose body becomes the run's payload — and any other message of a started run takes what it
/// does not say from that configuration. `url` is where the message goes. Whether the run may
/// take the message is decided when it is stored.
pub(crate) async fn join_run(
    shared: &Shared,
    user_id: &str,
    url: &str,
    request: &mut PublishRequest,
    now: i64,
    created: &mut NewResources,
) -> Result<Option<NewRun>> {
    let options = &mut request.options;
    let headers = WorkflowHeaders::parse(&options.passthrough);
    let Some(run_id) = headers.run_id.clone() else { return Ok(None) };
    if run_id.len() > 256 {
        return Err(Invalid::new("Upstash-Workflow-RunId is longer than 256 bytes").into());
    }
    let config = &shared.config;
    if let Some(retries) = options.retries.filter(|retries| *retries > config.limits.max_retries) {
        // Lowered silently for a plain message; a workflow's SDK turns this refusal into a
        // non-retryable failure of its step, which its logs show.
        return Err(EngineError::LimitExceeded(format!(
            "retries {retries} exceed the most a message may have ({})",
            config.limits.max_retries
        )));
    }
    if headers.starts_run() {
        let config = RunConfig::from_trigger(options);
        let invoker = match headers.invoke {
            true => {
                let depth =
                    options.forward.get("Upstash-Workflow-Invoke-Count").and_then(|n| n.trim().parse::<u32>().ok());
                if depth.is_some_and(|depth| depth > MAX_INVOKE_DEPTH) {
                    return Err(Invalid::new(format!(
                        "workflows may invoke each other at most {MAX_INVOKE_DEPTH} deep"
                    ))
                    .into());
                }
                let envelope = InvokeEnvelope::parse(&request.body)?;
                request.body = Bytes::from(envelope.body.clone().unwrap_or_default());
                let caller_ip = request.caller_ip.clone();
                let reply =
                    message_spec(shared, user_id, &envelope.workflow_url, &envelope.headers, caller_ip, now, created);
                let reply = Box::pin(reply).await?;
                let invoked = envelope.invoked_view(&run_id, url, now);
                Some(RunInvoker {
                    run_id: envelope.workflow_run_id.clone(),
                    view: envelope.invoker_view(),
                    step: envelope.step.to_string(),
                    invoked,
                    reply,
                })
            }
            false => None,
        };
        return Ok(Some(NewRun {
            run_id,
            url: headers.url.clone().filter(|url| !url.is_empty()).unwrap_or_else(|| url.to_string()),
            config,
            invoker,
            replace: headers.trigger_by_sdk,
            continues: None,
        }));
    }
    if let Some(run) = shared.store.get_run(user_id, &run_id).await? {
        let options = &mut request.options;
        match headers.call_type {
            CallType::Step | CallType::FromCallback | CallType::FailureCall => run.config.apply(options),
            CallType::ToCallback => run.config.apply_to_callback(options),
        }
    }
    Ok(None)
}

/// The error of a publish into a run that is unknown or has ended (the SDK treats it as the
/// end of its work).
pub(crate) fn run_not_active(run_id: &str) -> EngineError {
    Invalid::new(format!("workflow run {run_id} does not exist or has already ended (cancelled, failed or finished)"))
        .into()
}

/// The error of a publish its run refused (`InsertOutcome::refuses_insert`).
pub(crate) fn refusal(outcome: InsertOutcome, run_id: &str, config: &crate::config::EngineConfig) -> EngineError {
    match outcome {
        InsertOutcome::RunStepLimit => EngineError::LimitExceeded(format!(
            "workflow run {run_id} has recorded the most messages a run may ({})",
            config.max_workflow_steps
        )),
        InsertOutcome::RunByteLimit => EngineError::TooLarge(format!(
            "workflow run {run_id} would hold more than {} bytes of records",
            config.max_workflow_run_bytes
        )),
        _ => run_not_active(run_id),
    }
}

impl Engine {
    /// Ends a run: `cancel` (`DELETE …?cancel=true`) cancels it, otherwise the workflow
    /// returned `response`. Ending a run that already ended is not an error.
    pub async fn end_run(&self, user_id: &str, run_id: &str, cancel: bool, response: Bytes) -> Result<RunEndOutcome> {
        let now = self.shared.clock.now_ms();
        let end = if cancel { RunEnd::Canceled } else { RunEnd::Success { response } };
        let outcome = self.shared.store.end_run(user_id, run_id, end, now).await?;
        if outcome == RunEndOutcome::NotFound {
            return Err(EngineError::NotFound(format!("workflow run {run_id} not found")));
        }
        Ok(outcome)
    }

    /// Cancels the started runs matching `filter`, at most `limit`; returns how many.
    pub async fn cancel_runs(&self, user_id: &str, filter: RunFilter, limit: Option<usize>) -> Result<u64> {
        let now = self.shared.clock.now_ms();
        Ok(self.shared.store.cancel_runs(user_id, filter, limit, now).await?)
    }

    /// Every record of a started run (the SDK's lazy fetch); 404 once it ended.
    pub async fn run_records(&self, user_id: &str, run_id: &str) -> Result<Vec<StepRecord>> {
        let not_found = || EngineError::NotFound(format!("workflow run {run_id} not found or already ended"));
        let (run, steps) = self.shared.store.run_records(user_id, run_id).await?.ok_or_else(not_found)?;
        if run.state != RunState::RunStarted {
            return Err(not_found());
        }
        Ok(steps)
    }

    /// About how many bytes [`Engine::run_records`] reads, to reserve first.
    pub async fn run_records_bytes(&self, user_id: &str, run_id: &str) -> Result<usize> {
        let run = self.shared.store.get_run(user_id, run_id).await?;
        let run = run.ok_or_else(|| EngineError::NotFound(format!("workflow run {run_id} not found")))?;
        Ok(run.step_bytes as usize * 4 / 3 + run.step_count as usize * 96)
    }

    pub async fn runs(&self, user_id: &str, filter: &RunFilter, page: &PageRequest) -> Result<Page<RunWithSteps>> {
        Ok(self.shared.store.list_runs(user_id, filter, page).await?)
    }
}
