//! Starting runs from the REST API (workflow-protocol.md §4.11): `POST /v2/trigger/{url}` and
//! `/v2/batch/trigger` make the Init message an SDK's `trigger` would publish, and go through
//! the same publish as it; and what a run's first delivery must answer to count as reaching a
//! workflow endpoint.

use crate::Engine;
use crate::error::Result;
use crate::publish::{PublishRequest, Recipients};
use bytes::Bytes;
use tern_core::workflow::{RUN_ID_HEADER, SDK_VERSION_HEADER, WorkflowHeaders};
use tern_core::{AttemptResponse, HeaderList, Message, PublishOptions};

/// The features of a run the REST API starts: those of the SDK's own trigger.
const FEATURES: &str = "LazyFetch,InitialBody,WF_DetectTrigger,WF_TriggerOnConfig";

/// Marks the Init of a run the REST API started, whose endpoint must answer as an SDK of v1 or
/// later does.
pub const REST_TRIGGER_HEADER: &str = "Upstash-Workflow-Rest-Trigger";

/// The error of a run whose first delivery reached an endpoint that is not a workflow.
pub const NOT_A_WORKFLOW: &str = "detected a non-workflow destination for trigger/invoke. make sure you are sending the request to the correct endpoint";

/// The error of a REST-triggered run whose endpoint runs an SDK older than v1.
pub const SDK_TOO_OLD: &str = "trigger rest api is only usable with sdk versions after v1.0.0 major version";

/// One run to start.
#[derive(Debug, Clone)]
pub struct TriggerRequest {
    /// The workflow URL.
    pub url: String,
    /// The request's headers: the run's configuration, its id if chosen, forwarded headers.
    pub headers: HeaderList,
    pub body: Bytes,
    pub caller_ip: Option<String>,
}

/// A run started (or found in flight under the same id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Triggered {
    pub run_id: String,
    pub created_at: i64,
    pub deduplicated: bool,
}

impl Engine {
    /// Starts the runs, all stored in one commit (none when one is invalid).
    pub async fn trigger(&self, user_id: &str, requests: Vec<TriggerRequest>) -> Result<Vec<Triggered>> {
        let mut publishes = Vec::with_capacity(requests.len());
        let mut run_ids = Vec::with_capacity(requests.len());
        for request in requests {
            let mut headers = request.headers;
            let run_id = headers
                .get(RUN_ID_HEADER)
                .map(str::trim)
                .filter(|id| !id.is_empty())
                .map(str::to_string)
                .unwrap_or_else(tern_core::ids::new_run_id);
            let unknown_sdk =
                headers.get("Upstash-Workflow-Unknown-Sdk").is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
            // A run is deduplicated by its id, never by a message's deduplication key (which would
            // answer the id of a run that was never started).
            for name in [
                RUN_ID_HEADER,
                "Upstash-Workflow-Init",
                "Upstash-Workflow-Url",
                "Upstash-Feature-Set",
                "Upstash-Deduplication-Id",
                "Upstash-Content-Based-Deduplication",
            ] {
                headers.remove(name);
            }
            headers.push(RUN_ID_HEADER, run_id.clone());
            headers.push("Upstash-Workflow-Init", "true");
            headers.push("Upstash-Workflow-Url", request.url.clone());
            headers.push("Upstash-Feature-Set", FEATURES);
            headers.push(REST_TRIGGER_HEADER, "true");
            // The endpoint then reads the body as the run's steps, the initial payload alone.
            headers.push(format!("Upstash-Forward-{SDK_VERSION_HEADER}"), "1");
            if unknown_sdk {
                headers.push("Upstash-Forward-Upstash-Workflow-Unknown-Sdk", "true");
            }
            let options = PublishOptions::from_headers(headers.iter(), true)?;
            let destination = tern_core::destination::checked_url(&request.url, "workflow")?;
            publishes.push(PublishRequest {
                recipients: Recipients::Url(destination),
                options,
                body: request.body,
                caller_ip: request.caller_ip,
                queue: None,
            });
            run_ids.push(run_id);
        }
        let results = match publishes.len() {
            1 => vec![self.publish(user_id, publishes.remove(0)).await?],
            _ => self.publish_batch(user_id, publishes).await?,
        };
        let mut triggered = Vec::with_capacity(results.len());
        for (result, run_id) in results.into_iter().zip(run_ids) {
            let deduplicated = result.messages.iter().all(|message| message.deduplicated);
            let created_at = match deduplicated {
                true => {
                    self.shared.store.get_run(user_id, &run_id).await?.map_or(result.created_at, |run| run.created_at)
                }
                false => result.created_at,
            };
            triggered.push(Triggered { run_id, created_at, deduplicated });
        }
        Ok(triggered)
    }
}

/// Why the answer to `message` fails its run although it is a 2xx: the first delivery of a run
/// that detects its endpoint (`WF_DetectTrigger`) must reach a workflow SDK, which marks every
/// answer with `Upstash-Workflow-Sdk-Version`; a run the REST API started needs an SDK of v1 or
/// later, which also sends `Upstash-Workflow-Sdk`.
pub(crate) fn refused_answer(message: &Message, response: &AttemptResponse) -> Option<&'static str> {
    let link = message.spec.workflow.as_ref()?;
    if !link.init || !(200..300).contains(&response.status) {
        return None;
    }
    let headers = WorkflowHeaders::parse(&message.spec.passthrough);
    if headers.has_feature("WF_DetectTrigger") && response.headers.get(SDK_VERSION_HEADER).is_none() {
        return Some(NOT_A_WORKFLOW);
    }
    let rest = message.spec.passthrough.get(REST_TRIGGER_HEADER).is_some();
    if rest && response.headers.get("Upstash-Workflow-Sdk").is_none() {
        return Some(SDK_TOO_OLD);
    }
    None
}
