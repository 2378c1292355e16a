//! A run's recorded messages and the bodies built from them (protocol §4.2, §4.6): the step
//! array a step delivery carries, and the step a waiter's notify or timeout produces.

use super::CallType;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use serde_json::{Map, Value, json};

/// One recorded message of a run, in acceptance order; the first is the initial payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepRecord {
    pub message_id: String,
    pub call_type: CallType,
    pub body: Bytes,
    pub created_at: i64,
}

/// The body of a step delivery (and of a lazy fetch): a JSON array of
/// `{messageId, body (base64), callType}`, initial payload first.
pub fn steps_body(records: &[StepRecord]) -> Vec<u8> {
    let capacity = records.iter().map(|record| record.body.len() * 4 / 3 + 96).sum();
    let mut out = Vec::with_capacity(capacity);
    out.push(b'[');
    for (index, record) in records.iter().enumerate() {
        if index > 0 {
            out.push(b',');
        }
        let item = json!({
            "messageId": record.message_id,
            "body": STANDARD.encode(&record.body),
            "callType": record.call_type.as_str(),
        });
        serde_json::to_writer(&mut out, &item).expect("a JSON value serialises");
    }
    out.push(b']');
    out
}

/// What the logs show of a recorded step: the fields of the step JSON the SDK published
/// (`stepId`, `stepName`, `stepType`, `out`, `concurrent`, `targetStep`, call and wait
/// fields), or, for the initial payload, `stepName: "init"`, `stepType: "Initial"` with the
/// payload as `out`.
#[derive(Debug, Clone, PartialEq)]
pub struct StepView {
    pub fields: Map<String, Value>,
}

impl StepView {
    /// The view of `record`; `initial` for the run's first record.
    pub fn of(record: &StepRecord, initial: bool) -> Self {
        let mut fields = Map::new();
        if initial {
            fields.insert("stepId".into(), json!(0));
            fields.insert("stepName".into(), json!("init"));
            fields.insert("stepType".into(), json!("Initial"));
            fields.insert("concurrent".into(), json!(1));
            fields.insert("out".into(), json!(String::from_utf8_lossy(&record.body)));
        } else if let Ok(Value::Object(step)) = serde_json::from_slice::<Value>(&record.body) {
            fields = step;
        } else {
            fields.insert("out".into(), json!(String::from_utf8_lossy(&record.body)));
        }
        StepView { fields }
    }

    pub fn step_id(&self) -> Option<i64> {
        self.fields.get("stepId").and_then(Value::as_i64)
    }

    pub fn concurrent(&self) -> i64 {
        self.fields.get("concurrent").and_then(Value::as_i64).unwrap_or(1)
    }
}

/// The step a waiter's end produces: the wait request's step with `out` (the event's data in
/// base64, which the SDK decodes; absent on a timeout, which the SDK tells by it) and
/// `waitTimeout`, published to the run like any step result.
pub fn wait_step_body(step: &Value, event_id: &str, data: Option<&[u8]>, timed_out: bool) -> Vec<u8> {
    let mut step = match step {
        Value::Object(fields) => fields.clone(),
        _ => Map::new(),
    };
    match data {
        Some(data) => step.insert("out".into(), json!(STANDARD.encode(data))),
        None => step.remove("out"),
    };
    step.insert("waitEventId".into(), json!(event_id));
    step.insert("waitTimeout".into(), json!(timed_out));
    serde_json::to_vec(&Value::Object(step)).expect("a JSON value serialises")
}

/// The failure callback body of a run's failed message, completed with what the SDK's failure
/// function reads of the run: its id and creation time, its URL, and its initial payload as
/// `sourceBody` (the SDK passes it on as the workflow's request payload).
pub fn failure_body(callback: &[u8], run_id: &str, created_at: i64, url: &str, initial: &[u8]) -> Vec<u8> {
    let Ok(Value::Object(mut body)) = serde_json::from_slice::<Value>(callback) else {
        return callback.to_vec();
    };
    body.insert("sourceBody".into(), json!(STANDARD.encode(initial)));
    body.insert("workflowRunId".into(), json!(run_id));
    body.insert("workflowCreatedAt".into(), json!(created_at));
    body.insert("url".into(), json!(url));
    serde_json::to_vec(&Value::Object(body)).expect("a JSON object serialises")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, body: &str, call_type: CallType) -> StepRecord {
        StepRecord { message_id: id.into(), call_type, body: Bytes::from(body.to_string()), created_at: 0 }
    }

    #[test]
    fn the_step_array_encodes_each_body_in_base64() {
        let records = [record("msg_1", "{\"a\":1}", CallType::Step), record("msg_2", "", CallType::FromCallback)];
        let parsed: Value = serde_json::from_slice(&steps_body(&records)).unwrap();
        assert_eq!(
            parsed,
            json!([
                {"messageId": "msg_1", "body": STANDARD.encode("{\"a\":1}"), "callType": "step"},
                {"messageId": "msg_2", "body": "", "callType": "fromCallback"},
            ])
        );
        assert_eq!(steps_body(&[]), b"[]");
    }

    #[test]
    fn views_show_the_initial_payload_and_the_published_step() {
        let initial = StepView::of(&record("msg_1", "hello", CallType::Step), true);
        assert_eq!(initial.fields["stepName"], "init");
        assert_eq!(initial.fields["out"], "hello");
        let step =
            StepView::of(&record("msg_2", r#"{"stepId":2,"stepName":"s","concurrent":3}"#, CallType::Step), false);
        assert_eq!((step.step_id(), step.concurrent()), (Some(2), 3));
        let plain = StepView::of(&record("msg_3", "not json", CallType::Step), false);
        assert_eq!((plain.step_id(), plain.concurrent()), (None, 1));
    }

    #[test]
    fn a_failure_body_describes_the_run() {
        let callback = br#"{"status":500,"sourceBody":"c3RlcA==","url":"http://x/step"}"#;
        let body: Value = serde_json::from_slice(&failure_body(callback, "wfr_1", 7, "http://x/wf", b"init")).unwrap();
        assert_eq!(body["status"], 500);
        assert_eq!(body["sourceBody"], STANDARD.encode("init"));
        assert_eq!((body["workflowRunId"].clone(), body["workflowCreatedAt"].clone()), (json!("wfr_1"), json!(7)));
        assert_eq!(body["url"], "http://x/wf");
    }

    #[test]
    fn a_wait_step_carries_the_event_or_the_timeout() {
        let step = json!({"stepId": 3, "stepName": "wait", "stepType": "Wait", "concurrent": 1});
        let notified: Value = serde_json::from_slice(&wait_step_body(&step, "evt", Some(b"data"), false)).unwrap();
        assert_eq!((notified["out"].clone(), notified["waitTimeout"].clone()), (json!("ZGF0YQ=="), json!(false)));
        let timed_out: Value = serde_json::from_slice(&wait_step_body(&step, "evt", None, true)).unwrap();
        assert!(timed_out.get("out").is_none());
        assert_eq!((timed_out["waitTimeout"].clone(), timed_out["stepId"].clone()), (json!(true), json!(3)));
    }
}
