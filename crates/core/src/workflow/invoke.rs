//! `context.invoke` (workflow-protocol.md §4.8): the envelope the invoking run publishes as the
//! body of the invoked run's Init message, and the step the invoked run's end gives back to the
//! invoker.

use crate::error::{Invalid, Result};
use crate::headers::HeaderList;
use serde_json::{Map, Value, json};

/// What an invoking run sends along with the invoked run's Init.
#[derive(Debug, Clone, PartialEq)]
pub struct InvokeEnvelope {
    /// The invoked run's initial payload (absent: empty).
    pub body: Option<String>,
    /// The publish headers of the result step (the invoker's run id, URL, features…).
    pub headers: HeaderList,
    pub workflow_run_id: String,
    pub workflow_run_created_at: i64,
    pub workflow_url: String,
    /// The invoke step of the invoker (JSON object).
    pub step: Value,
}

impl InvokeEnvelope {
    pub fn parse(body: &[u8]) -> Result<Self> {
        let invalid = |why: &str| Invalid::new(format!("invalid invoke body: {why}"));
        let value: Value = serde_json::from_slice(body).map_err(|e| invalid(&e.to_string()))?;
        let text = |key: &str| value.get(key).and_then(Value::as_str).map(str::to_string);
        let mut headers = HeaderList::new();
        for (name, values) in value.get("headers").and_then(Value::as_object).into_iter().flatten() {
            match values {
                Value::Array(values) => {
                    for value in values.iter().filter_map(Value::as_str) {
                        headers.push(name.clone(), value);
                    }
                }
                Value::String(value) => headers.push(name.clone(), value.clone()),
                _ => {}
            }
        }
        let step = value.get("step").filter(|step| step.is_object()).cloned().ok_or_else(|| invalid("no step"))?;
        Ok(InvokeEnvelope {
            body: text("body"),
            headers,
            workflow_run_id: text("workflowRunId").ok_or_else(|| invalid("no workflowRunId"))?,
            workflow_run_created_at: value.get("workflowRunCreatedAt").and_then(Value::as_i64).unwrap_or_default(),
            workflow_url: text("workflowUrl").ok_or_else(|| invalid("no workflowUrl"))?,
            step,
        })
    }

    /// What the invoker's logs show of the run invoked (`invokedWorkflow*` of its invoke step),
    /// a JSON object.
    pub fn invoked_view(&self, run_id: &str, url: &str, created_at: i64) -> String {
        json!({
            "invokedWorkflowRunId": run_id,
            "invokedWorkflowUrl": url,
            "invokedWorkflowCreatedAt": created_at,
            "invokedWorkflowRunBody": self.body.clone().unwrap_or_default(),
            "invokedWorkflowRunHeaders": {},
        })
        .to_string()
    }

    /// Who invoked, as the logs show it (`invoker`).
    pub fn invoker_view(&self) -> String {
        json!({
            "workflowRunId": self.workflow_run_id,
            "workflowUrl": self.workflow_url,
            "workflowRunCreatedAt": self.workflow_run_created_at,
        })
        .to_string()
    }
}

/// How an invoked run ended, for its invoker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvokedEnd<'a> {
    /// It returned this (the body of its completing `DELETE`).
    Returned(&'a [u8]),
    Failed,
    Canceled,
}

/// The invoker's step when the invoked run ends: its invoke step with `out`, the JSON text of
/// `{body, isFailed, isCanceled}` (`body` only when the run returned: the SDK tells a failure by
/// its absence), and the invoked run's identity for the logs.
pub fn invoke_result_body(step: &str, invoked: &Value, end: InvokedEnd<'_>) -> Vec<u8> {
    let mut step: Map<String, Value> = match serde_json::from_str(step) {
        Ok(Value::Object(fields)) => fields,
        _ => Map::new(),
    };
    let mut out = Map::new();
    if let InvokedEnd::Returned(body) = end {
        out.insert("body".into(), json!(String::from_utf8_lossy(body)));
    }
    out.insert("isFailed".into(), json!(end == InvokedEnd::Failed));
    out.insert("isCanceled".into(), json!(end == InvokedEnd::Canceled));
    step.insert("out".into(), json!(Value::Object(out).to_string()));
    if let Value::Object(fields) = invoked {
        step.extend(fields.clone());
    }
    serde_json::to_vec(&Value::Object(step)).expect("a JSON object serialises")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_envelope_the_sdk_publishes() {
        let body =
            br#"{"body":"{\"n\":1}","headers":{"Upstash-Workflow-Runid":["wfr_p"],"Upstash-Feature-Set":["LazyFetch"]},
            "workflowRunId":"wfr_p","workflowRunCreatedAt":5,"workflowUrl":"http://127.0.0.1:1/p",
            "step":{"stepId":2,"stepName":"call child","stepType":"Invoke","concurrent":1}}"#;
        let envelope = InvokeEnvelope::parse(body).unwrap();
        assert_eq!(envelope.body.as_deref(), Some("{\"n\":1}"));
        assert_eq!(envelope.headers.get("upstash-workflow-runid"), Some("wfr_p"));
        assert_eq!((envelope.workflow_run_created_at, envelope.workflow_url.as_str()), (5, "http://127.0.0.1:1/p"));
        let view: Value = serde_json::from_str(&envelope.invoker_view()).unwrap();
        assert_eq!(view["workflowRunId"], "wfr_p");
        assert!(InvokeEnvelope::parse(b"{}").is_err());
        assert!(InvokeEnvelope::parse(b"not json").is_err());
    }

    #[test]
    fn the_result_carries_the_end_as_the_sdk_compares_it() {
        let step = r#"{"stepId":2,"stepName":"call child","stepType":"Invoke","concurrent":1}"#;
        let invoked = json!({"invokedWorkflowRunId": "wfr_c"});
        let out = |end| {
            let body: Value = serde_json::from_slice(&invoke_result_body(step, &invoked, end)).unwrap();
            assert_eq!((body["stepId"].clone(), body["invokedWorkflowRunId"].clone()), (json!(2), json!("wfr_c")));
            serde_json::from_str::<Value>(body["out"].as_str().unwrap()).unwrap()
        };
        assert_eq!(
            out(InvokedEnd::Returned(b"\"ok\"")),
            json!({"body": "\"ok\"", "isFailed": false, "isCanceled": false})
        );
        assert_eq!(out(InvokedEnd::Failed), json!({"isFailed": true, "isCanceled": false}));
        assert_eq!(out(InvokedEnd::Canceled), json!({"isFailed": false, "isCanceled": true}));
    }
}
