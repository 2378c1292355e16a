//! The wire shape of workflow runs in the logs (`WorkflowRunLog` of `@upstash/workflow`): a
//! run with its steps in groups — each step once, a plan of parallel steps merged with their
//! results, the messages of a `context.call` shown through its result — and a final `next`
//! group for the messages that have not continued the run yet (absent once it succeeded).

use crate::views::{Object, ShownBodies};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Map, Value, json};
use std::collections::{HashMap, HashSet};
use tern_core::workflow::{CallType, StepRecord, StepView};
use tern_core::{Message, MessageState};
use tern_store::{PendingStep, RunWithSteps};

pub fn run(run: &RunWithSteps, shown: ShownBodies) -> Value {
    let record = &run.run;
    let mut object = Object::new();
    object.set("workflowRunId", record.run_id.as_str());
    object.set("workflowUrl", record.url.as_str());
    object.set("workflowState", record.state.as_str());
    object.set("workflowRunCreatedAt", record.created_at);
    object.set_opt("workflowRunCompletedAt", record.completed_at);
    if let Some(response) = &record.response
        && !response.is_empty()
    {
        object.set("workflowRunResponse", shown_text(response, shown));
    }
    if let Some(invoker) = record.invoker.as_deref().and_then(|text| serde_json::from_str::<Value>(text).ok()) {
        object.set(
            "invoker",
            json!({
                "workflowRunId": invoker.get("workflowRunId").cloned().unwrap_or_default(),
                "workflowUrl": invoker.get("workflowUrl").cloned().unwrap_or_default(),
                "workflowRunCreatedAt": invoker.get("workflowRunCreatedAt").cloned().unwrap_or_default(),
            }),
        );
    }
    object.set_opt("dlqId", record.dlq_id.clone());
    if let Some(first) = record.config.labels.first() {
        object.set("label", first.as_str());
        object.set("labels", json!(record.config.labels));
    }
    object.set("steps", Value::Array(groups(&run.steps, &run.pending, shown)));
    if let Some(failure) = &run.failure_callback {
        object.set("failureFunction", failure_function(failure, record.dlq_id.as_deref(), shown));
    }
    object.into_value()
}

/// The failure callback of a failed run: where it went, how it is doing, and the failure it
/// reported (taken from the body it carries).
fn failure_function(message: &Message, dlq_id: Option<&str>, shown: ShownBodies) -> Value {
    let state = tern_core::workflow::callback_state(message.state);
    let reported: Value = serde_json::from_slice(&message.body).unwrap_or_default();
    let fail_response =
        reported.get("body").and_then(Value::as_str).and_then(|body| STANDARD.decode(body).ok()).unwrap_or_default();
    let mut object = Object::new();
    object.set("messageId", message.id.to_string());
    object.set("url", message.spec.url.as_str());
    object.set("state", state);
    object.set("failHeaders", reported.get("header").cloned().unwrap_or_else(|| json!({})));
    object.set("failStatus", reported.get("status").cloned().unwrap_or_default());
    object.set("failResponse", shown_text(&fail_response, shown));
    object.set_opt("dlqId", dlq_id);
    if let Some(response) = &message.last_response {
        object.set("responseStatus", response.status);
        object.set("responseHeaders", json!(response.headers.to_canonical_map()));
        object.set("responseBody", shown_text(&response.body, shown));
    }
    if let Some(due_at) = message.due_at.filter(|_| !message.state.is_terminal()) {
        object.set("nextDeliveryTime", due_at);
    }
    object.into_value()
}

/// The steps of a run in their groups.
fn groups(records: &[StepRecord], pending: &[PendingStep], shown: ShownBodies) -> Vec<Value> {
    let pending: HashMap<String, &PendingStep> = pending.iter().map(|p| (p.message_id.to_string(), p)).collect();
    let mut shown_pending: HashSet<&str> = HashSet::new();
    let mut groups = Vec::new();
    // The callbacks of calls, each with its place among the records: a call's result step
    // shows what the last callback before it reported.
    let callbacks: Vec<(usize, Value)> = records
        .iter()
        .enumerate()
        .filter(|(_, record)| record.call_type == CallType::FromCallback)
        .filter_map(|(index, record)| Some((index, serde_json::from_slice(&record.body).ok()?)))
        .collect();
    // A step published twice (a delivery repeated after a crash runs its step again; the SDK
    // goes on with the first result) is shown once.
    let mut seen: HashSet<(i64, i64)> = HashSet::new();
    let steps: Vec<(&StepRecord, StepView)> = records
        .iter()
        .enumerate()
        .filter(|(index, record)| *index == 0 || record.call_type == CallType::Step)
        .map(|(index, record)| {
            let mut view = StepView::of(record, index == 0);
            if view.fields.get("stepType").and_then(Value::as_str) == Some("Call") {
                add_call(&mut view, &callbacks[..callbacks.partition_point(|(at, _)| *at < index)]);
            }
            (record, view)
        })
        .filter(|(_, view)| {
            let target = view.fields.get("targetStep").and_then(Value::as_i64).unwrap_or_default();
            view.step_id().is_none_or(|id| seen.insert((id, target)))
        })
        .collect();
    let is_plan = |view: &StepView| view.step_id() == Some(0) && view.fields.contains_key("targetStep");
    // Results already shown in the parallel group of their plan; where each step with a step id
    // is (its first record), to find a branch's result without scanning.
    let mut consumed: HashSet<usize> = HashSet::new();
    let mut results_by_step: HashMap<(i64, i64), usize> = HashMap::new();
    for (offset, (_, view)) in steps.iter().enumerate() {
        if let Some(step_id) = view.step_id().filter(|id| *id > 0) {
            results_by_step.entry((step_id, view.concurrent())).or_insert(offset);
        }
    }
    let mut index = 0;
    while index < steps.len() {
        let (record, view) = &steps[index];
        if consumed.contains(&index) {
            index += 1;
            continue;
        }
        if index == 0 || !is_plan(view) {
            groups.push(json!({ "type": "sequential", "steps": [entry(record, view, STEP_SUCCESS, None, shown)] }));
            index += 1;
            continue;
        }
        // The plans of one parallel group come together; each branch's result follows later.
        let width = usize::try_from(view.concurrent()).unwrap_or(1).max(1);
        let plans = steps[index..].iter().take(width).take_while(|(_, view)| is_plan(view)).count();
        // Each branch's result: the step its plan targets, with the group's width, recorded
        // after the plans.
        let mut results: HashMap<i64, usize> = HashMap::new();
        for (_, plan_view) in &steps[index..index + plans] {
            let target = plan_view.fields.get("targetStep").and_then(Value::as_i64).unwrap_or_default();
            if let Some(offset) = results_by_step.get(&(target, view.concurrent())).copied()
                && offset >= index + plans
                && consumed.insert(offset)
            {
                results.insert(target, offset);
            }
        }
        let mut entries = Vec::with_capacity(plans);
        for (plan_record, plan_view) in &steps[index..index + plans] {
            let target = plan_view.fields.get("targetStep").and_then(Value::as_i64).unwrap_or_default();
            if let Some(offset) = results.get(&target) {
                let (result_record, result_view) = &steps[*offset];
                entries.push(entry(result_record, result_view, STEP_SUCCESS, None, shown));
                continue;
            }
            // A branch without a result: its plan's message is still under way, or failed.
            let waiting = pending.get(&plan_record.message_id).copied();
            if waiting.is_some() {
                shown_pending.insert(plan_record.message_id.as_str());
            }
            let state = waiting.map_or(STEP_PROGRESS, |p| step_state(p.state));
            entries.push(entry(plan_record, plan_view, state, waiting, shown));
        }
        groups.push(json!({ "type": "parallel", "steps": entries }));
        index += plans;
    }
    let mut next: Vec<&PendingStep> = pending
        .values()
        .copied()
        .filter(|p| !shown_pending.contains(p.message_id.to_string().as_str()))
        .filter(|p| p.state != MessageState::Canceled)
        .collect();
    next.sort_by_key(|p| (p.created_at, p.message_id));
    if !next.is_empty() {
        groups.push(
            json!({ "type": "next", "steps": next.into_iter().map(|step| next_step(step, shown)).collect::<Vec<_>>() }),
        );
    }
    groups
}

/// How many of the callbacks before a call's result are looked at to find its own: parallel
/// calls and retried ones interleave only a few.
const CALL_CALLBACKS_SEEN: usize = 16;

/// Adds to a call's result step what its callback reported: the request (`callUrl`,
/// `callMethod`, `callHeaders`, `callBody`) and the response (`callResponse*`). The callback is
/// the latest of the few before the result whose response is the one the result carries.
fn add_call(view: &mut StepView, callbacks: &[(usize, Value)]) {
    let callbacks = &callbacks[callbacks.len().saturating_sub(CALL_CALLBACKS_SEEN)..];
    let out: Value = view
        .fields
        .get("out")
        .and_then(Value::as_str)
        .and_then(|out| serde_json::from_str(out).ok())
        .unwrap_or_default();
    let decode = |value: Option<&Value>| {
        let bytes = value.and_then(Value::as_str).and_then(|text| STANDARD.decode(text).ok()).unwrap_or_default();
        String::from_utf8_lossy(&bytes).into_owned()
    };
    let matches = |callback: &Value| {
        callback.get("status") == out.get("status")
            && out.get("body").is_none_or(|body| body.as_str() == Some(&decode(callback.get("body"))))
    };
    let Some((_, callback)) = callbacks.iter().rev().find(|(_, callback)| matches(callback)).or(callbacks.last())
    else {
        return;
    };
    let fields = &mut view.fields;
    fields.insert("callUrl".into(), callback.get("url").cloned().unwrap_or_default());
    fields.insert("callMethod".into(), callback.get("method").cloned().unwrap_or_default());
    fields.insert("callHeaders".into(), callback.get("sourceHeader").cloned().unwrap_or_else(|| json!({})));
    fields.insert("callBody".into(), json!(decode(callback.get("sourceBody"))));
    fields.insert("callResponseStatus".into(), callback.get("status").cloned().unwrap_or_default());
    fields.insert("callResponseBody".into(), json!(decode(callback.get("body"))));
    fields.insert("callResponseHeaders".into(), callback.get("header").cloned().unwrap_or_else(|| json!({})));
}

const STEP_SUCCESS: &str = "STEP_SUCCESS";
const STEP_PROGRESS: &str = "STEP_PROGRESS";

fn step_state(state: MessageState) -> &'static str {
    match state {
        MessageState::Pending => STEP_PROGRESS,
        MessageState::Retry => "STEP_RETRY",
        MessageState::Failed => "STEP_FAILED",
        MessageState::Canceled | MessageState::CancelRequested => "STEP_CANCELED",
        MessageState::Delivered => STEP_SUCCESS,
    }
}

/// One step as the logs show it: the step the SDK published (`out` as text), its message, its
/// state, and for a step still under way its retries and errors.
fn entry(
    record: &StepRecord,
    view: &StepView,
    state: &str,
    waiting: Option<&PendingStep>,
    shown: ShownBodies,
) -> Value {
    let mut fields: Map<String, Value> = view.fields.clone();
    fields.remove("targetStep");
    if let Some(out) = fields.get("out").cloned() {
        let text = match out {
            Value::String(text) => text,
            other => other.to_string(),
        };
        fields.insert("out".into(), json!(shown_text(text.as_bytes(), shown)));
    }
    fields.insert("callType".into(), json!("step"));
    fields.insert("messageId".into(), json!(record.message_id));
    fields.insert("state".into(), json!(state));
    fields.insert("createdAt".into(), json!(record.created_at));
    fields.insert("retries".into(), json!(waiting.map_or(0, |p| p.retried)));
    fields.entry("concurrent").or_insert(json!(1));
    fields.insert("headers".into(), json!({}));
    if let Some(waiting) = waiting
        && !waiting.errors.is_empty()
    {
        fields.insert("errors".into(), errors(waiting, shown));
    }
    Value::Object(fields)
}

fn next_step(pending: &PendingStep, shown: ShownBodies) -> Value {
    let mut object = Object::new();
    object.set("messageId", pending.message_id.to_string());
    object.set("state", step_state(pending.state));
    object.set("retries", pending.retried);
    object.set_opt("retryDelay", pending.retry_delay.clone());
    if !pending.errors.is_empty() {
        object.set("errors", errors(pending, shown));
    }
    object.into_value()
}

fn errors(pending: &PendingStep, shown: ShownBodies) -> Value {
    Value::Array(
        pending
            .errors
            .iter()
            .map(|(time, response)| {
                json!({
                    "error": response.error.clone().unwrap_or_default(),
                    "body": shown_text(&response.body, shown),
                    "headers": response.headers.to_canonical_map(),
                    "status": response.status,
                    "time": time,
                })
            })
            .collect(),
    )
}

/// A stored body shown as text, within `trimBody`.
fn shown_text(body: &[u8], shown: ShownBodies) -> String {
    let shown = match shown {
        ShownBodies::Whole => body,
        ShownBodies::Prefix(limit) => &body[..limit.min(body.len())],
        ShownBodies::Excluded => &[],
    };
    String::from_utf8_lossy(shown).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use tern_core::workflow::{RunConfig, RunState};
    use tern_core::{AttemptResponse, MessageId};
    use tern_store::RunRecord;

    fn record(id: &str, call_type: CallType, body: &str) -> StepRecord {
        StepRecord { message_id: id.into(), call_type, body: Bytes::from(body.to_string()), created_at: 1 }
    }

    fn step(id: &str, body: serde_json::Value) -> StepRecord {
        record(id, CallType::Step, &body.to_string())
    }

    fn run(steps: Vec<StepRecord>, pending: Vec<PendingStep>, state: RunState) -> RunWithSteps {
        RunWithSteps {
            run: RunRecord {
                user_id: "u".into(),
                run_id: "wfr_1".into(),
                url: "http://127.0.0.1:1/wf".into(),
                created_at: 1,
                state,
                completed_at: None,
                response: None,
                config: RunConfig::default(),
                invoker: None,
                dlq_id: None,
                caller_ip: None,
                step_count: steps.len() as u64,
                step_bytes: 0,
            },
            steps,
            pending,
            failure_callback: None,
        }
    }

    fn pending(id: MessageId, state: MessageState, errors: usize) -> PendingStep {
        let error = AttemptResponse { status: 489, error: Some("boom".into()), ..AttemptResponse::default() };
        PendingStep {
            message_id: id,
            state,
            retried: errors as u32,
            max_retries: 0,
            retry_delay: None,
            due_at: None,
            created_at: 2,
            errors: vec![(3, error); errors],
        }
    }

    fn names(group: &Value) -> Vec<&str> {
        group["steps"].as_array().unwrap().iter().map(|s| s["stepName"].as_str().unwrap_or_default()).collect()
    }

    #[test]
    fn steps_come_once_each_and_a_finished_run_has_no_next_group() {
        let steps = vec![
            record("m0", CallType::Step, "payload"),
            step("m1", json!({"stepId": 1, "stepName": "one", "stepType": "Run", "out": "1", "concurrent": 1})),
            // The same step published again (a repeated delivery): shown once.
            step("m1b", json!({"stepId": 1, "stepName": "one", "stepType": "Run", "out": "1", "concurrent": 1})),
            record("m2", CallType::ToCallback, "call body"),
            record(
                "m3",
                CallType::FromCallback,
                &json!({"status": 201, "body": "b2s=", "url": "http://x/", "method": "POST", "sourceBody": "cQ=="})
                    .to_string(),
            ),
            step(
                "m4",
                json!({"stepId": 2, "stepName": "call", "stepType": "Call", "out": "{\"status\":201,\"body\":\"ok\"}", "concurrent": 1}),
            ),
        ];
        let view = super::run(&run(steps, Vec::new(), RunState::RunSuccess), ShownBodies::Whole);
        let groups = view["steps"].as_array().unwrap();
        assert_eq!(groups.len(), 3, "{groups:?}");
        assert_eq!(
            (names(&groups[0]), names(&groups[1]), names(&groups[2])),
            (vec!["init"], vec!["one"], vec!["call"])
        );
        assert_eq!(groups[0]["steps"][0]["out"], "payload");
        let call = &groups[2]["steps"][0];
        assert_eq!((call["callUrl"].clone(), call["callMethod"].clone()), (json!("http://x/"), json!("POST")));
        assert_eq!((call["callResponseStatus"].clone(), call["callBody"].clone()), (json!(201), json!("q")));
        assert!(groups.iter().all(|group| group["type"] != "next"));
    }

    #[test]
    fn a_parallel_group_merges_plans_with_results_and_keeps_a_failed_branch() {
        let failed = MessageId::generate();
        let plan = |id: &str, target: i64, name: &str| {
            step(id, json!({"stepId": 0, "stepName": name, "stepType": "Run", "concurrent": 2, "targetStep": target}))
        };
        let steps = vec![
            record("m0", CallType::Step, ""),
            plan("p1", 1, "a"),
            plan(&failed.to_string(), 2, "b"),
            step("r1", json!({"stepId": 1, "stepName": "a", "stepType": "Run", "out": "A", "concurrent": 2})),
        ];
        let view = super::run(
            &run(steps, vec![pending(failed, MessageState::Failed, 1)], RunState::RunFailed),
            ShownBodies::Whole,
        );
        let groups = view["steps"].as_array().unwrap();
        assert_eq!(groups.len(), 2, "the failure stays in its group, no next group: {groups:?}");
        assert_eq!(groups[1]["type"], "parallel");
        let branches = groups[1]["steps"].as_array().unwrap();
        assert_eq!((branches[0]["state"].clone(), branches[0]["out"].clone()), (json!("STEP_SUCCESS"), json!("A")));
        assert_eq!((branches[1]["stepName"].clone(), branches[1]["state"].clone()), (json!("b"), json!("STEP_FAILED")));
        assert_eq!(branches[1]["errors"][0]["status"], 489);
    }

    #[test]
    fn work_under_way_is_the_next_group_and_trim_applies_to_outs() {
        let waiting = MessageId::generate();
        let steps = vec![
            record("m0", CallType::Step, "a long payload"),
            step(
                &waiting.to_string(),
                json!({"stepId": 1, "stepName": "one", "stepType": "Run", "out": "result", "concurrent": 1}),
            ),
        ];
        let view = super::run(
            &run(steps, vec![pending(waiting, MessageState::Retry, 2)], RunState::RunStarted),
            ShownBodies::Prefix(3),
        );
        let groups = view["steps"].as_array().unwrap();
        assert_eq!(groups[0]["steps"][0]["out"], "a l");
        let next = groups.last().unwrap();
        assert_eq!(next["type"], "next");
        assert_eq!(
            (next["steps"][0]["state"].clone(), next["steps"][0]["retries"].clone()),
            (json!("STEP_RETRY"), json!(2))
        );
        assert_eq!(next["steps"][0]["errors"].as_array().unwrap().len(), 2);
    }
}
