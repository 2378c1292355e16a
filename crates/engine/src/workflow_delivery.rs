//! What a delivery of a workflow run's message carries (workflow-protocol.md §3.2, §4.2): a
//! step's body is the run's records up to its own, built when its attempt starts, within a byte
//! budget shared by every attempt; every message to the workflow URL carries its run's id and
//! creation time, and no protocol header of its publish.

use crate::Shared;
use bytes::Bytes;
use std::sync::Arc;
use tern_core::workflow::{CallType, RUN_ID_HEADER, SDK_VERSION_HEADER, WorkflowHeaders, failure_body, steps_body};
use tern_core::{HeaderList, Message};
use tern_store::{NewMessage, WantedRecords};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// A run whose records take more than this is delivered with an empty body to the SDK that
/// fetches them itself: the fetch is a client read within the listing budget, while a
/// delivery's body is held for as long as its attempt runs.
pub const LAZY_FETCH_BYTES: u64 = 1 << 20;

/// The budget's unit: permits count KiB, so that a budget of gigabytes fits a semaphore.
const UNIT: usize = 1 << 10;

/// The bytes the step bodies of running attempts may take at once.
pub struct BodyBudget(Arc<Semaphore>, usize);

impl BodyBudget {
    pub fn new(bytes: usize) -> Self {
        let units = (bytes / UNIT).clamp(1, Semaphore::MAX_PERMITS);
        BodyBudget(Arc::new(Semaphore::new(units)), units)
    }

    /// Waits until `bytes` fit (a body larger than the whole budget takes all of it).
    async fn reserve(&self, bytes: usize) -> Option<OwnedSemaphorePermit> {
        let units = u32::try_from(bytes.div_ceil(UNIT).clamp(1, self.1)).unwrap_or(u32::MAX);
        Arc::clone(&self.0).acquire_many_owned(units).await.ok()
    }
}

/// The message as its attempt sends it, and what it holds of the body budget until the attempt
/// ends. A step of a run (a message carrying the SDK-version header) gets its run's records up
/// to its own; every message of a run to the workflow URL gets the run's id and creation time in
/// place of its publish's protocol headers; a third party (`context.call`) gets none of them.
pub(crate) async fn delivered(shared: &Shared, message: Arc<Message>) -> (Arc<Message>, Option<OwnedSemaphorePermit>) {
    let Some(link) = message.spec.workflow.clone() else { return (message, None) };
    let mut delivered = Message::clone(&message);
    delivered.spec.passthrough = HeaderList::new();
    if link.call_type == CallType::ToCallback {
        return (Arc::new(delivered), None);
    }
    let store = &shared.store;
    let is_step = link.call_type == CallType::Step && message.spec.headers.get(SDK_VERSION_HEADER).is_some();
    // Most runs are small: their records come with the run, read once, within a small
    // reservation; a larger run's are read again once its whole size is reserved.
    let (wanted, mut held) = match is_step {
        true => (
            WantedRecords::ThroughOwnWithin(SMALL_RUN_BYTES),
            shared.delivery_bodies.reserve(body_bytes(SMALL_RUN_BYTES, 0)).await,
        ),
        false => (WantedRecords::None, None),
    };
    let (run, mut steps) = match store.message_run(&message.user_id, message.id, wanted).await {
        Ok(Some(found)) => found,
        Ok(None) => return (Arc::new(delivered), None),
        Err(error) => {
            // Delivered without its run's records: the SDK answers with an error, and the
            // attempt is retried like any failed one.
            tracing::error!(%error, message_id = %message.id, "reading a workflow run for a delivery failed");
            return (Arc::new(delivered), None);
        }
    };
    delivered.spec.passthrough.push(RUN_ID_HEADER, run.run_id.clone());
    delivered.spec.passthrough.push("Upstash-Workflow-CreatedAt", run.created_at.to_string());
    if !is_step {
        return (Arc::new(delivered), None);
    }
    if run.step_bytes > SMALL_RUN_BYTES {
        // The Python SDK (2.0.0) announces LazyFetch but refuses an empty body: only the SDK
        // that also announces WF_TriggerOnConfig (JS v1) gets one.
        let features = WorkflowHeaders::parse(&message.spec.passthrough);
        if features.has_feature("LazyFetch")
            && features.has_feature("WF_TriggerOnConfig")
            && run.step_bytes > LAZY_FETCH_BYTES
        {
            delivered.body = Bytes::new();
            return (Arc::new(delivered), None);
        }
        drop(held);
        held = shared.delivery_bodies.reserve(body_bytes(run.step_bytes, run.step_count)).await;
        steps = match store.message_run(&message.user_id, message.id, WantedRecords::ThroughOwn).await {
            Ok(Some((_, steps))) => steps,
            Ok(None) => Vec::new(),
            Err(error) => {
                tracing::error!(%error, message_id = %message.id, "reading a workflow run's records failed");
                Vec::new()
            }
        };
    }
    delivered.body = steps_body(&steps).into();
    (Arc::new(delivered), held)
}

/// A run whose records take at most this is read with its run in one go.
const SMALL_RUN_BYTES: u64 = 64 << 10;

/// What a step body of a run whose records take `bytes` holds: base64 takes 4/3 of the bodies,
/// each record some JSON besides; read, then built.
fn body_bytes(bytes: u64, records: u64) -> usize {
    (bytes as usize * 4 / 3 + records as usize * 128) * 2
}

/// Completes the failure callback of a run's failed message with what the SDK's failure
/// function needs of the run: its creation time, and its initial payload as `sourceBody` (the
/// SDK reads it as the workflow's request payload).
pub(crate) async fn describe_failed_run(shared: &Shared, source: &Message, failure: &mut NewMessage) {
    if source.spec.workflow.as_ref().is_none_or(|link| !link.call_type.continues_run()) {
        return;
    }
    let (run, steps) = match shared.store.message_run(&source.user_id, source.id, WantedRecords::Initial).await {
        Ok(Some(found)) => found,
        Ok(None) => return,
        Err(error) => {
            tracing::error!(%error, message_id = %source.id, "reading a failed workflow run failed; its failure callback describes the failed step only");
            return;
        }
    };
    let initial = steps.first().map(|step| step.body.clone()).unwrap_or_default();
    failure.body = failure_body(&failure.body, &run.run_id, run.created_at, &run.url, &initial).into();
}
