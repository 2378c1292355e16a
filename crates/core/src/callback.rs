//! Callbacks and failure callbacks (spec §9): the body that reports an attempt, and the
//! configuration of the callback message that carries it.

use crate::headers::HeaderList;
use crate::message::{AttemptResponse, CallbackTarget, Message, MessageSpec, Origin};
use crate::options::{PublishLimits, PublishOptions};
use crate::redact::Redaction;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Map, Value, json};

/// A callback message ready to be stored: its spec, body and first delivery time.
#[derive(Debug, Clone, PartialEq)]
pub struct CallbackMessage {
    pub spec: MessageSpec,
    pub body: Vec<u8>,
    pub due_at: i64,
}

/// Builds the callback (or, with `dlq_id`, the failure callback) of one attempt of `source`.
/// `retried` is the `Upstash-Retried` value of that attempt.
pub fn callback_message(
    source: &Message,
    target: &CallbackTarget,
    retried: u32,
    response: &AttemptResponse,
    dlq_id: Option<&str>,
    now_ms: i64,
    limits: &PublishLimits,
) -> CallbackMessage {
    // The options were validated when the source was published; nothing here can fail.
    let mut options = PublishOptions::from_headers(target.options.iter(), true).unwrap_or_default();
    if options.retries.is_none() {
        options.retries = Some(source.spec.max_retries);
    }
    options.forward.remove("content-type");
    options.forward.push("Content-Type", "application/json");
    let mut spec = options.to_spec(target.url.clone(), source.spec.caller_ip.clone(), limits);
    spec.origin = match dlq_id {
        Some(_) => Origin::FailureCallback { source: source.id },
        None => Origin::Callback { source: source.id },
    };
    // The callback body quotes the source's headers and body: whatever the source hides in
    // reads, its callback hides too (its whole body; what is delivered is unchanged).
    if source.spec.redact != Redaction::default() {
        spec.redact.body = true;
    }
    let due_at = options.first_delivery_at(now_ms, limits).unwrap_or(now_ms);
    CallbackMessage { spec, body: callback_body(source, retried, response, dlq_id), due_at }
}

/// The JSON body of §9.2.
pub fn callback_body(source: &Message, retried: u32, response: &AttemptResponse, dlq_id: Option<&str>) -> Vec<u8> {
    let spec = &source.spec;
    let mut body = Map::new();
    body.insert("status".into(), json!(response.status));
    body.insert("header".into(), json!(response.headers.to_canonical_map()));
    body.insert("body".into(), json!(STANDARD.encode(&response.body)));
    body.insert("retried".into(), json!(retried));
    body.insert("maxRetries".into(), json!(spec.max_retries));
    if let Some(dlq_id) = dlq_id {
        body.insert("dlqId".into(), json!(dlq_id));
    }
    body.insert("sourceMessageId".into(), json!(source.id.to_string()));
    let mut optional = |key: &str, value: &Option<String>| {
        if let Some(value) = value {
            body.insert(key.into(), json!(value));
        }
    };
    optional("topicName", &spec.topic_name);
    optional("endpointName", &spec.endpoint_name);
    optional("scheduleId", &spec.schedule_id);
    optional("callerIP", &spec.caller_ip);
    optional("workflowRunId", &spec.passthrough.get("Upstash-Workflow-RunId").map(str::to_string));
    body.insert("url".into(), json!(spec.url));
    body.insert("method".into(), json!(spec.method));
    body.insert("sourceHeader".into(), json!(spec.headers.to_canonical_map()));
    body.insert("sourceBody".into(), json!(STANDARD.encode(&source.body)));
    body.insert("notBefore".into(), json!(source.not_before));
    body.insert("createdAt".into(), json!(source.created_at));
    if let Some(error) = &response.error {
        body.insert("error".into(), json!(error));
    }
    serde_json::to_vec(&Value::Object(body)).expect("callback body serialises")
}

/// Headers of a callback target as shown in `callbackHeader` / `failureCallbackHeader`.
pub fn forwarded_callback_headers(target: Option<&CallbackTarget>) -> HeaderList {
    target.map(CallbackTarget::forwarded_headers).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::MessageId;
    use crate::message::MessageState;

    fn source() -> Message {
        let options = PublishOptions::from_headers(
            [
                ("Content-Type", "text/plain"),
                ("Upstash-Retries", "2"),
                ("Upstash-Callback", "http://127.0.0.1:1/cb"),
                ("Upstash-Callback-Method", "PUT"),
                ("Upstash-Callback-Delay", "5s"),
                ("Upstash-Callback-Forward-X-Cb", "1"),
            ],
            true,
        )
        .unwrap();
        let mut spec =
            options.to_spec("http://127.0.0.1:1/dest".into(), Some("10.0.0.1".into()), &PublishLimits::default());
        spec.topic_name = Some("group".into());
        Message {
            id: MessageId::generate(),
            user_id: "u".into(),
            spec,
            body: "hello".into(),
            created_at: 1000,
            not_before: 2000,
            state: MessageState::Pending,
            retried: 0,
            due_at: Some(2000),
            finished_at: None,
            dlq_id: None,
            last_response: None,
        }
    }

    #[test]
    fn callback_carries_the_attempt_and_the_source() {
        let source = source();
        let mut response = AttemptResponse { status: 500, ..Default::default() };
        response.headers.push("x-r", "1");
        response.body = "oops".into();
        let target = source.spec.callback.clone().unwrap();
        let callback = callback_message(&source, &target, 1, &response, None, 10_000, &PublishLimits::default());
        assert_eq!(callback.spec.url, "http://127.0.0.1:1/cb");
        assert_eq!(callback.spec.method, "PUT");
        assert_eq!(callback.spec.max_retries, 2);
        assert_eq!(callback.due_at, 15_000);
        assert_eq!(callback.spec.headers.get("content-type"), Some("application/json"));
        assert_eq!(callback.spec.headers.get("x-cb"), Some("1"));
        assert_eq!(callback.spec.origin, Origin::Callback { source: source.id });
        let body: Value = serde_json::from_slice(&callback.body).unwrap();
        assert_eq!(body["status"], 500);
        assert_eq!(body["body"], "b29wcw==");
        assert_eq!(body["header"]["X-R"], json!(["1"]));
        assert_eq!(body["retried"], 1);
        assert_eq!(body["maxRetries"], 2);
        assert_eq!(body["sourceMessageId"], source.id.to_string());
        assert_eq!(body["sourceBody"], "aGVsbG8=");
        assert_eq!(body["sourceHeader"]["Content-Type"], json!(["text/plain"]));
        assert_eq!(body["topicName"], "group");
        assert_eq!(body["callerIP"], "10.0.0.1");
        assert_eq!(body["notBefore"], 2000);
        assert_eq!(body["createdAt"], 1000);
        assert!(body.get("dlqId").is_none());
        assert!(!callback.spec.redact.body, "nothing to hide");
    }

    #[test]
    fn a_callback_hides_its_body_when_the_source_redacts_anything() {
        let mut source = source();
        source.spec.redact = Redaction::parse("header[Authorization]").unwrap();
        let target = source.spec.callback.clone().unwrap();
        let response = AttemptResponse { status: 200, ..Default::default() };
        let callback = callback_message(&source, &target, 0, &response, None, 10_000, &PublishLimits::default());
        assert!(callback.spec.redact.body);
        let body: Value = serde_json::from_slice(&callback.body).unwrap();
        assert_eq!(body["sourceBody"], "aGVsbG8=", "the destination still gets the real values");
    }

    #[test]
    fn failure_callback_names_the_dlq_entry() {
        let source = source();
        let target = CallbackTarget { url: "http://127.0.0.1:1/failed".into(), options: HeaderList::new() };
        let response = AttemptResponse { status: 0, error: Some("timeout".into()), ..Default::default() };
        let callback = callback_message(&source, &target, 2, &response, Some("1-0"), 10_000, &PublishLimits::default());
        assert_eq!(callback.spec.origin, Origin::FailureCallback { source: source.id });
        assert_eq!(callback.due_at, 10_000);
        let body: Value = serde_json::from_slice(&callback.body).unwrap();
        assert_eq!(body["dlqId"], "1-0");
        assert_eq!(body["status"], 0);
        assert_eq!(body["error"], "timeout");
    }
}
