//! The dispatcher: asks the scheduler which messages may start, loads those whose payload is
//! not at hand, and runs their attempts, at most `max_concurrent_deliveries` at a time. It sleeps
//! until the scheduler's next wake-up or a signal; it never polls.

use crate::Shared;
use crate::delivery::{attempt, classify, timeout_ms};
use crate::recording::record_outcome;
use crate::scheduler::Start;
use std::collections::HashMap;
use std::sync::Arc;
use tern_core::callback::callback_message;
use tern_core::ids::new_dlq_id;
use tern_core::message::CallbackTarget;
use tern_core::{AttemptResponse, Message, MessageId};
use tern_store::{AttemptOutcome, NewMessage, NextStep};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The most messages started in one round.
const START_BATCH: usize = 256;

/// How long a message whose payload could not be read waits before it is tried again.
const LOAD_RETRY_MS: i64 = 1000;

/// How long a message whose attempt found no free file descriptor waits before it is tried
/// again (not counted as an attempt).
const NO_DESCRIPTOR_RETRY_MS: i64 = 1000;

/// How long an attempt runs before its `ACTIVE` log entry is written on its own; a shorter one
/// has it written with its outcome, so log readers may learn of an attempt this much late.
const ACTIVE_LOGGED_AFTER: std::time::Duration = std::time::Duration::from_millis(200);

pub async fn run(shared: Arc<Shared>, stop: CancellationToken, attempts: TaskTracker) {
    let slots = Arc::new(Semaphore::new(shared.config.max_concurrent_deliveries));
    loop {
        if shared.write_health.is_failing() {
            // New attempts' outcomes could not be written either (see `recording`).
            tokio::select! {
                () = shared.write_health.recovered() => continue,
                () = stop.cancelled() => return,
            }
        }
        let free = slots.available_permits();
        if free > 0 {
            let limit = free.min(START_BATCH);
            let (starts, windows) = {
                let mut scheduler = shared.scheduler.lock();
                (scheduler.poll(shared.clock.now_ms(), limit), scheduler.take_flow_windows())
            };
            let full = starts.len() == limit;
            // Queued ahead of the attempts' own records, so that a restart continues the windows.
            if !windows.is_empty()
                && let Err(error) = shared.store.save_flow_windows(windows).await
            {
                tracing::error!(%error, "recording rate windows failed");
            }
            let (cached, uncached): (Vec<Start>, Vec<Start>) = starts.into_iter().partition(|s| s.message.is_some());
            for message in cached.into_iter().filter_map(|start| start.message) {
                let slot = Arc::clone(&slots).try_acquire_owned().expect("a slot was free");
                spawn_attempt(&shared, &attempts, &stop, message, slot);
            }
            if !uncached.is_empty() {
                // Reading payloads must not hold up the dispatcher: the read gets the slots of
                // its messages and starts their attempts when it is done.
                let mut slots =
                    Arc::clone(&slots).try_acquire_many_owned(uncached.len() as u32).expect("slots were free");
                let (shared, tracker, stop) = (Arc::clone(&shared), attempts.clone(), stop.clone());
                attempts.spawn(async move {
                    for message in load(&shared, uncached).await {
                        let slot = slots.split(1).expect("a slot per message");
                        spawn_attempt(&shared, &tracker, &stop, message, slot);
                    }
                });
            }
            if full {
                continue;
            }
        }
        // With every slot taken nothing can start however due it is, so only a freed slot (or
        // a signal) wakes the loop: waiting for a due time already past would spin.
        let next_wake = if free > 0 { shared.scheduler.lock().next_wake() } else { None };
        tokio::select! {
            () = shared.scheduler.wake.notified() => {}
            () = shared.clock.sleep_until(next_wake.unwrap_or(i64::MAX)), if next_wake.is_some() => {}
            permit = Arc::clone(&slots).acquire_owned(), if free == 0 => drop(permit),
            () = stop.cancelled() => return,
        }
    }
}

fn spawn_attempt(
    shared: &Arc<Shared>,
    attempts: &TaskTracker,
    stop: &CancellationToken,
    message: Arc<Message>,
    slot: OwnedSemaphorePermit,
) {
    let (shared, stop) = (Arc::clone(shared), stop.clone());
    attempts.spawn(async move {
        // The slot is held until the outcome is recorded: while the store refuses outcomes,
        // the attempts waiting to be recorded hold their slots too.
        attempt_and_record(&shared, message, &stop).await;
        drop(slot);
    });
}

/// The messages of `starts` read from the store. Messages that vanished (or finished) are
/// forgotten; a failed read puts them back for a little later.
async fn load(shared: &Shared, starts: Vec<Start>) -> Vec<Arc<Message>> {
    let missing: Vec<MessageId> = starts.into_iter().map(|start| start.id).collect();
    let mut messages = Vec::with_capacity(missing.len());
    match shared.store.load_messages(missing.clone()).await {
        Ok(loaded) => {
            let mut loaded: HashMap<MessageId, Message> = loaded.into_iter().map(|m| (m.id, m)).collect();
            for id in missing {
                match loaded.remove(&id).filter(|message| !message.state.is_terminal()) {
                    Some(message) => messages.push(Arc::new(message)),
                    None => shared.scheduler.update(|scheduler, now| scheduler.abandon(id, now)),
                }
            }
        }
        Err(error) => {
            tracing::error!(%error, "reading due messages failed; they are tried again shortly");
            shared.scheduler.update(|scheduler, now| {
                for id in missing {
                    scheduler.defer(id, now + LOAD_RETRY_MS, now);
                }
            });
        }
    }
    messages
}

/// Runs one attempt and records its outcome (see `recording` for when the store refuses it).
async fn attempt_and_record(shared: &Shared, message: Arc<Message>, stop: &CancellationToken) {
    let Some(keys) = shared.keyring.get(&message.user_id) else {
        // The user was removed from the configuration; the message can never be signed.
        tracing::warn!(message_id = %message.id, user = %message.user_id, "message of an unknown user left undelivered");
        shared.scheduler.update(|scheduler, now| scheduler.abandon(message.id, now));
        return;
    };
    if shared.write_health.is_failing() {
        // Started in the same round as the first refused outcome: its outcome could not be
        // written either (see `recording`).
        shared.scheduler.update(|scheduler, now| scheduler.defer(message.id, now + LOAD_RETRY_MS, now));
        return;
    }
    // A step's body is built (waiting for room in its budget) before the attempt starts, and
    // holds its share of the budget until the attempt ends.
    let (delivered, _body_held) = crate::workflow_delivery::delivered(shared, Arc::clone(&message)).await;
    let started = shared.clock.now_ms();
    let deadline = started + timeout_ms(&shared.config, &message);
    shared.scheduler.lock().exchange_started(message.id, deadline);
    // Most attempts end within milliseconds: their ACTIVE entry is logged with the outcome, one
    // write instead of two. A longer one gets it logged on its own, while it is in flight.
    let (response, active_at) = {
        let clients = shared.http.get();
        let exchange = attempt(&clients, &*shared.clock, &shared.config, &keys, &delivered, started);
        tokio::pin!(exchange);
        tokio::select! {
            response = &mut exchange => (response, Some(started)),
            // Real time, not the engine's clock: this only decides when a log row is written,
            // nothing a message's timing depends on.
            () = tokio::time::sleep(ACTIVE_LOGGED_AFTER) => {
                // Should that fail, the attempt goes on and its outcome logs ACTIVE.
                let logged = shared.store.record_attempt_started(&message, started).await.is_ok();
                (exchange.await, (!logged).then_some(started))
            }
        }
    };
    let response = match response {
        Ok(response) => response,
        Err(error) => {
            tracing::warn!(%error, message_id = %message.id, "attempt deferred: this process is out of file descriptors");
            shared.http.drop_idle_connections();
            shared.scheduler.update(|scheduler, now| {
                scheduler.exchange_dropped(message.id, deadline);
                scheduler.defer(message.id, now + NO_DESCRIPTOR_RETRY_MS, now);
            });
            return;
        }
    };
    let finished = shared.clock.now_ms();
    shared.scheduler.update(|scheduler, now| scheduler.exchange_ended(message.id, deadline, now));
    let mut response = response;
    let next = match crate::trigger::refused_answer(&message, &response) {
        // The run cannot go on: retrying would reach the same endpoint.
        Some(refusal) => {
            response.error = Some(refusal.to_string());
            NextStep::Failed { dlq_id: new_dlq_id(finished) }
        }
        None => classify(&message, &response, finished, || new_dlq_id(finished)),
    };
    let spec = &message.spec;
    let callback =
        spec.callback.as_ref().map(|target| callback_new_message(shared, &message, target, &response, None, finished));
    let failure_callback = match (&next, &spec.failure_callback) {
        (NextStep::Failed { dlq_id }, Some(target)) => {
            let mut failure = callback_new_message(shared, &message, target, &response, Some(dlq_id), finished);
            crate::workflow_delivery::describe_failed_run(shared, &message, &mut failure).await;
            Some(failure)
        }
        _ => None,
    };
    tracing::debug!(message_id = %message.id, status = response.status, ?next, "attempt finished");
    let outcome =
        AttemptOutcome { message, active_at, finished_at: finished, response, next, callback, failure_callback };
    record_outcome(shared, outcome, stop).await;
}

fn callback_new_message(
    shared: &Shared,
    source: &Message,
    target: &CallbackTarget,
    response: &AttemptResponse,
    dlq_id: Option<&str>,
    now: i64,
) -> NewMessage {
    let callback = callback_message(source, target, source.retried, response, dlq_id, now, &shared.config.limits);
    NewMessage {
        id: MessageId::generate(),
        user_id: source.user_id.clone(),
        spec: callback.spec,
        body: callback.body.into(),
        created_at: now,
        due_at: callback.due_at,
        dedup: None,
        consumes_dlq_entry: None,
        run: None,
        run_limits: None,
    }
}

/// Applies retention every `purge_interval`, in chunks so the writer is never held for long.
pub async fn run_retention(shared: Arc<Shared>, stop: CancellationToken) {
    loop {
        let wake_at = shared.clock.now_ms() + shared.config.purge_interval.as_millis() as i64;
        tokio::select! {
            () = shared.clock.sleep_until(wake_at) => {}
            () = stop.cancelled() => return,
        }
        loop {
            match shared.store.purge(shared.clock.now_ms(), shared.config.retention).await {
                Ok(stats) if stats.more => {}
                Ok(_) => break,
                Err(error) => {
                    tracing::error!(%error, "applying retention failed");
                    break;
                }
            }
        }
        if let Err(error) = forget_idle_flow_keys(&shared).await {
            tracing::error!(%error, "forgetting idle flow-control keys failed");
        }
    }
}

/// A flow-control key unused this long, with nothing waiting and no pause or pin, is forgotten
/// (memory and store): keys made per tenant or per request would otherwise pile up forever.
pub const FLOW_KEY_IDLE_MS: i64 = 24 * 3600 * 1000;

async fn forget_idle_flow_keys(shared: &Shared) -> crate::error::Result<()> {
    // Under the settings lock, so that no pause or pin lands between the two steps.
    let _change = shared.settings_changes.lock().await;
    let forgotten = shared.scheduler.update(|scheduler, now| scheduler.forget_idle_flows(now, FLOW_KEY_IDLE_MS));
    if !forgotten.is_empty() {
        tracing::debug!(count = forgotten.len(), "forgetting idle flow-control keys");
        shared.store.forget_flows(forgotten).await?;
    }
    Ok(())
}
