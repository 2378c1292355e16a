//! Waiting for events (workflow-protocol.md §4.6, §4.7): a wait step registers a waiter whose
//! result messages — one for the event, one for the deadline — are built through the publish
//! pipeline when it registers, so that resolving it later is one store operation; notify wakes
//! waiters; a ticker publishes the timeouts of waiters whose deadline passed.

use crate::error::{EngineError, Result};
use crate::publish::{NewResources, create_flow_keys, message_spec};
use crate::{Engine, Shared};
use bytes::Bytes;
use std::sync::Arc;
use std::time::Duration;
use tern_core::{HeaderList, Invalid, MessageSpec};
use tern_store::{Event, NewWaiter, Notified, NotifyOutcome, RunLimits, WaitOutcome, WaiterView};
use tokio_util::sync::CancellationToken;

/// The most run-scoped events a run keeps for waits to come (each is a notify body).
pub const MAX_STORED_EVENTS_PER_RUN: usize = 100;

/// How many timeouts one store operation publishes.
const EXPIRE_BATCH: usize = 256;

/// A wait step's registration (`POST /v2/wait/{eventId}`).
#[derive(Debug, Clone)]
pub struct WaitRequest {
    pub event_id: String,
    /// Where the result goes (the workflow URL), with the request's headers as its publish
    /// headers.
    pub url: String,
    pub headers: HeaderList,
    /// The wait step (JSON text).
    pub step: String,
    pub timeout: Duration,
    pub timeout_url: String,
    pub timeout_body: Option<String>,
    pub timeout_headers: HeaderList,
    pub caller_ip: Option<String>,
    /// A wait for a webhook's call (`waitForWebhook`).
    pub webhook: bool,
}

/// What a notify did: the waiters it woke (empty when none waited), or that the run-scoped
/// event was kept for the run's next wait.
#[derive(Debug, Clone)]
pub enum NotifyResult {
    Woke(Vec<Notified>),
    Stored,
}

impl Engine {
    pub async fn wait(&self, user_id: &str, request: WaitRequest) -> Result<()> {
        let shared = &self.shared;
        let now = shared.clock.now_ms();
        let mut created = NewResources::default();
        let on_event =
            result_spec(shared, user_id, &request.url, &request.headers, &request, now, &mut created).await?;
        let Some(run_id) = on_event.workflow.as_ref().map(|link| link.run_id.clone()) else {
            return Err(Invalid::new("a wait needs the Upstash-Workflow-RunId header of its run").into());
        };
        // The SDK sends the timeout's headers; without them the timeout goes as the event would.
        let timeout_headers = match request.timeout_headers.is_empty() {
            true => &request.headers,
            false => &request.timeout_headers,
        };
        let on_timeout =
            result_spec(shared, user_id, &request.timeout_url, timeout_headers, &request, now, &mut created).await?;
        let timeout_ms = i64::try_from(request.timeout.as_millis()).unwrap_or(i64::MAX);
        if request.timeout > shared.config.limits.max_delay {
            return Err(Invalid::new("a wait's timeout may be at most the longest delay (limits.max_delay)").into());
        }
        let deadline = now.saturating_add(timeout_ms);
        let mut shown_headers = request.headers.clone();
        shown_headers.remove("authorization");
        let waiter = NewWaiter {
            user_id: user_id.to_string(),
            event_id: request.event_id.clone(),
            run_id: run_id.clone(),
            created_at: now,
            deadline,
            step: request.step.clone(),
            on_event,
            on_timeout,
            view: WaiterView {
                url: request.url.clone(),
                deadline: deadline / 1000,
                headers: shown_headers,
                timeout_url: request.timeout_url.clone(),
                timeout_body: request.timeout_body.clone(),
                timeout_headers: request.timeout_headers.clone(),
            },
            max_waiters: shared.config.max_workflow_waiters,
            webhook: request.webhook,
            run_limits: run_limits(&shared.config),
        };
        match shared.store.add_waiter(waiter).await? {
            WaitOutcome::RunNotActive => return Err(crate::workflows::run_not_active(&run_id)),
            WaitOutcome::Waiting => shared.waiter_wake.notify_one(),
            WaitOutcome::Resolved(_) => {}
            WaitOutcome::TooManyWaiters => {
                return Err(EngineError::LimitExceeded(format!(
                    "waiter limit reached: at most {} waits at once",
                    shared.config.max_workflow_waiters
                )));
            }
        }
        create_flow_keys(shared, user_id, &created);
        Ok(())
    }

    /// Wakes the waiters of `event_id` (of `run_id` only, when given) with `data`; a webhook's
    /// call (`from_webhook`, which came without a token) wakes only waits for a webhook.
    pub async fn notify(
        &self,
        user_id: &str,
        event_id: &str,
        run_id: Option<&str>,
        data: Bytes,
        from_webhook: bool,
    ) -> Result<NotifyResult> {
        let now = self.shared.clock.now_ms();
        let event = Event {
            user_id: user_id.to_string(),
            event_id: event_id.to_string(),
            run_id: run_id.map(str::to_string),
            data,
            from_webhook,
        };
        let limits = run_limits(&self.shared.config);
        let outcome = self.shared.store.notify(event, now, MAX_STORED_EVENTS_PER_RUN, limits).await?;
        match outcome {
            NotifyOutcome::Woke(woke) => Ok(NotifyResult::Woke(woke)),
            NotifyOutcome::Stored => Ok(NotifyResult::Stored),
            NotifyOutcome::RunNotActive => Err(EngineError::NotFound(format!(
                "workflow run {} not found or already ended",
                run_id.unwrap_or_default()
            ))),
            NotifyOutcome::TooManyStored => Err(EngineError::LimitExceeded(format!(
                "workflow run {} already holds {MAX_STORED_EVENTS_PER_RUN} events no wait has taken",
                run_id.unwrap_or_default()
            ))),
        }
    }

    /// The waiters of `event_id`, at most `limit`, their views taking about `max_bytes`.
    pub async fn waiters(
        &self,
        user_id: &str,
        event_id: &str,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Vec<WaiterView>> {
        Ok(self.shared.store.waiters(user_id, event_id, limit, max_bytes).await?)
    }
}

/// The limits a wait's result is appended to its run within.
fn run_limits(config: &crate::config::EngineConfig) -> RunLimits {
    RunLimits { max_steps: config.max_workflow_steps, max_bytes: config.max_workflow_run_bytes }
}

/// The message a wait's end publishes to `url` with `headers`, built (body aside) exactly as a
/// publish of them would be: it continues the run, so it inherits the run's configuration.
async fn result_spec(
    shared: &Shared,
    user_id: &str,
    url: &str,
    headers: &HeaderList,
    request: &WaitRequest,
    now: i64,
    created: &mut NewResources,
) -> Result<MessageSpec> {
    let spec = message_spec(shared, user_id, url, headers, request.caller_ip.clone(), now, created).await?;
    if spec.workflow.is_none() {
        return Err(Invalid::new("a wait's result needs the Upstash-Workflow-RunId header of its run").into());
    }
    Ok(spec)
}

/// Publishes the timeouts of waiters whose deadline passed, then sleeps until the next deadline
/// or until a waiter is added.
pub async fn run_timeouts(shared: Arc<Shared>, stop: CancellationToken) {
    loop {
        let now = shared.clock.now_ms();
        match shared.store.expire_waiters(now, EXPIRE_BATCH, run_limits(&shared.config)).await {
            Ok(count) if count as usize == EXPIRE_BATCH => continue,
            Ok(_) => {}
            Err(error) => {
                tracing::error!(%error, "publishing the timeouts of waiters failed; trying again in a second");
                tokio::select! {
                    () = shared.clock.sleep_until(now + 1000) => {}
                    () = stop.cancelled() => return,
                }
                continue;
            }
        }
        let next = shared.store.next_waiter_deadline().await.unwrap_or_else(|error| {
            tracing::error!(%error, "reading the next waiter deadline failed");
            Some(now + 1000)
        });
        tokio::select! {
            () = shared.waiter_wake.notified() => {}
            () = shared.clock.sleep_until(next.unwrap_or(i64::MAX)), if next.is_some() => {}
            () = stop.cancelled() => return,
        }
    }
}
