//! Upstash Workflow in the engine (workflow-protocol.md): what a publish of a run's message
//! takes from the run (its trigger configuration), what a delivery of one carries (the step
//! array built from the run's records, the run id and creation time), and the operations on
//! runs the API offers (end, cancel, fetch, list).

use crate::error::{EngineError, Result};
use crate::publish::{NewResources, PublishRequest, message_spec};
use crate::{Engine, Shared};
use bytes::Bytes;
use std::sync::Arc;
use tern_core::workflow::{
    CallType, InvokeEnvelope, RunConfig, RunState, SDK_VERSION_HEADER, StepRecord, WorkflowHeaders, failure_body,
    steps_body,
};
use tern_core::{Invalid, Message};
use tern_store::{NewRun, Page, PageRequest, RunEnd, RunEndOutcome, RunFilter, RunInvoker, RunWithSteps};

/// A run whose recorded bodies take more than this is delivered with an empty body to SDKs that
/// fetch the steps themselves (`LazyFetch`): the fetch is a client read, bounded by the listing
/// budget, while a delivery's body is held for as long as its attempt runs.
pub const LAZY_FETCH_BYTES: u64 = 1 << 20;

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
    if headers.init && headers.call_type == CallType::Step {
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
                Some(RunInvoker { view: envelope.invoker_view(), step: envelope.step.to_string(), invoked, reply })
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
        if headers.call_type != CallType::FailureCall {
            check_run_room(config, &run, request.body.len())?;
        }
        let options = &mut request.options;
        match headers.call_type {
            CallType::Step | CallType::FromCallback | CallType::FailureCall => run.config.apply(options),
            CallType::ToCallback => run.config.apply_to_callback(options),
        }
    }
    Ok(None)
}

/// Refuses a message that would take a run past its limits (checked before the message is
/// stored: messages stored at the same moment may pass them by a few).
fn check_run_room(config: &crate::config::EngineConfig, run: &tern_store::RunRecord, body: usize) -> Result<()> {
    if run.step_count as usize >= config.max_workflow_steps {
        return Err(EngineError::LimitExceeded(format!(
            "workflow run {} has recorded the most messages a run may ({})",
            run.run_id, config.max_workflow_steps
        )));
    }
    if (run.step_bytes as usize).saturating_add(body) > config.max_workflow_run_bytes {
        return Err(EngineError::TooLarge(format!(
            "workflow run {} would hold more than {} bytes of step bodies",
            run.run_id, config.max_workflow_run_bytes
        )));
    }
    Ok(())
}

/// The error of a publish into a run that is unknown or has ended (the SDK treats it as the
/// end of its work).
pub(crate) fn run_not_active(run_id: &str) -> EngineError {
    Invalid::new(format!("workflow run {run_id} does not exist or has already ended (cancelled, failed or finished)"))
        .into()
}

/// The message as its attempt sends it: a step of a run carries the run's records up to its
/// own as its body (or nothing, when the run is large and the SDK fetches them itself), and
/// every message to the workflow URL carries the run's creation time.
pub(crate) async fn delivered(shared: &Shared, message: Arc<Message>) -> Arc<Message> {
    let Some(link) = message.spec.workflow.clone() else { return message };
    if link.call_type == CallType::ToCallback {
        // A third party: the protocol headers of the publish were for the server alone.
        let mut delivered = Message::clone(&message);
        delivered.spec.passthrough = tern_core::HeaderList::new();
        return Arc::new(delivered);
    }
    let is_step = link.call_type == CallType::Step && message.spec.headers.get(SDK_VERSION_HEADER).is_some();
    let store = &shared.store;
    let read = if is_step {
        store.run_steps(&message.user_id, &link.run_id, Some(message.id), true).await
    } else {
        store.get_run_for_engine(&message.user_id, &link.run_id).await.map(|run| run.map(|run| (run, Vec::new())))
    };
    let (run, steps) = match read {
        Ok(Some(found)) => found,
        Ok(None) => return message,
        Err(error) => {
            // Delivered without the run's records: the SDK answers with an error, and the
            // attempt is retried like any failed one.
            tracing::error!(%error, message_id = %message.id, "reading a workflow run for a delivery failed");
            return message;
        }
    };
    let mut delivered = Message::clone(&message);
    // The protocol headers of the publish were for the server: the endpoint hears of its run
    // through these two only (what the SDK reads through `Upstash-Forward-*` is forwarded).
    delivered.spec.passthrough = tern_core::HeaderList::new();
    delivered.spec.passthrough.push(tern_core::workflow::RUN_ID_HEADER, run.run_id.clone());
    delivered.spec.passthrough.push("Upstash-Workflow-CreatedAt", run.created_at.to_string());
    if is_step {
        // The Python SDK (2.0.0) announces LazyFetch but refuses an empty body: only the SDK
        // that also announces WF_TriggerOnConfig (JS v1) gets one.
        let features = WorkflowHeaders::parse(&message.spec.passthrough);
        let lazy = features.has_feature("LazyFetch") && features.has_feature("WF_TriggerOnConfig");
        delivered.body =
            if lazy && run.step_bytes > LAZY_FETCH_BYTES { Bytes::new() } else { steps_body(&steps).into() };
    }
    Arc::new(delivered)
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
        let (run, steps) = self.shared.store.run_steps(user_id, run_id, None, false).await?.ok_or_else(not_found)?;
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

/// Completes the failure callback of a run's failed message with what the SDK's failure
/// function needs of the run: its creation time, and its initial payload as `sourceBody` (the
/// SDK reads it as the workflow's request payload).
pub(crate) async fn describe_failed_run(shared: &Shared, source: &Message, failure: &mut tern_store::NewMessage) {
    let Some(link) = source.spec.workflow.as_ref().filter(|link| link.call_type.continues_run()) else { return };
    // A message without a record of its own reads the initial payload only.
    let read = shared.store.run_steps(&source.user_id, &link.run_id, Some(tern_core::MessageId::generate()), true);
    let (run, steps) = match read.await {
        Ok(Some(found)) => found,
        Ok(None) => return,
        Err(error) => {
            tracing::error!(%error, run_id = %link.run_id, "reading a failed workflow run failed; its failure callback describes the failed step only");
            return;
        }
    };
    let initial = steps.first().map(|step| step.body.clone()).unwrap_or_default();
    failure.body = failure_body(&failure.body, &run.run_id, run.created_at, &run.url, &initial).into();
}
