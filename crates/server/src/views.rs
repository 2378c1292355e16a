//! Wire shapes of responses (spec §6): messages, DLQ entries and log entries as the SDKs parse
//! them. Optional fields are omitted, never `null`; redacted values are hidden here.

use axum::body::Body;
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use futures_util::StreamExt;
use serde_json::{Map, Value, json};
use tern_core::callback::forwarded_callback_headers;
use tern_core::{AttemptResponse, Message, MessageSpec};
use tern_store::LogEntry;

/// A JSON object under construction; optional fields are left out, never `null`.
pub struct Object(Map<String, Value>);

impl Object {
    pub fn new() -> Self {
        Object(Map::new())
    }

    pub fn set(&mut self, key: &str, value: impl Into<Value>) {
        self.0.insert(key.to_string(), value.into());
    }

    pub fn set_opt<T: Into<Value>>(&mut self, key: &str, value: Option<T>) {
        if let Some(value) = value {
            self.set(key, value);
        }
    }

    pub fn into_value(self) -> Value {
        Value::Object(self.0)
    }
}

/// Raw text when the bytes are UTF-8, otherwise base64 under the `…Base64` key; nothing when
/// empty.
pub fn set_body(object: &mut Object, key: &str, bytes: &[u8]) {
    if bytes.is_empty() {
        return;
    }
    match std::str::from_utf8(bytes) {
        Ok(text) => object.set(key, text),
        Err(_) => object.set(&format!("{key}Base64"), STANDARD.encode(bytes)),
    }
}

/// How much of each stored body a listing shows: `trimBody` (the Workflow API's; QStash's own
/// listings show whole bodies, which tern pages by size instead).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShownBodies {
    Whole,
    /// The first bytes of each body (`trimBody=n`).
    Prefix(usize),
    /// No body at all (`trimBody=-1`): the body fields are left out.
    Excluded,
}

impl ShownBodies {
    /// How far the store needs to read each body.
    pub fn read_limit(self) -> Option<usize> {
        match self {
            ShownBodies::Whole => None,
            ShownBodies::Prefix(limit) => Some(limit),
            ShownBodies::Excluded => Some(0),
        }
    }

    /// The part of `body` shown, if any.
    fn apply(self, body: &[u8]) -> Option<&[u8]> {
        match self {
            ShownBodies::Whole => Some(body),
            ShownBodies::Excluded => None,
            ShownBodies::Prefix(limit) => Some(&body[..limit.min(body.len())]),
        }
    }

    /// [`ShownBodies::apply`] for a body shown as text when it is UTF-8: a prefix that may have
    /// been cut inside a character (by the store or here) ends before it, so that a text body
    /// stays text.
    fn apply_to_text(self, body: &[u8]) -> Option<&[u8]> {
        let shown = self.apply(body)?;
        let maybe_cut = matches!(self, ShownBodies::Prefix(limit) if shown.len() == limit);
        match std::str::from_utf8(shown) {
            Err(error) if maybe_cut && error.error_len().is_none() => Some(&shown[..error.valid_up_to()]),
            _ => Some(shown),
        }
    }
}

/// A JSON array serialised one item at a time: no tree of the whole array is ever built.
pub fn json_array(items: impl IntoIterator<Item = Value>) -> Bytes {
    let mut array = vec![b'['];
    for (index, item) in items.into_iter().enumerate() {
        if index > 0 {
            array.push(b',');
        }
        serde_json::to_writer(&mut array, &item).expect("a JSON value serialises");
    }
    array.push(b']');
    Bytes::from(array)
}

/// A JSON response sent as `pieces`, which may share buffers (the logs' two keys hold one
/// serialised array): nothing is copied to join them. `held` (the listing's reservation) is
/// given back once the body is sent or dropped.
pub fn json_pieces(pieces: Vec<Bytes>, held: crate::budget::Reservation) -> Response {
    let length: usize = pieces.iter().map(Bytes::len).sum();
    let stream = futures_util::stream::iter(pieces).map(move |piece| {
        let _held = &held;
        Ok::<_, std::convert::Infallible>(piece)
    });
    ([(CONTENT_TYPE, "application/json".to_string()), (CONTENT_LENGTH, length.to_string())], Body::from_stream(stream))
        .into_response()
}

/// The fields every message-shaped object shares (§6.1), with redaction applied.
fn message_fields(message: &Message, object: &mut Object, shown: ShownBodies) {
    let spec = &message.spec;
    object.set("messageId", message.id.to_string());
    object.set("url", spec.url.as_str());
    object.set_opt("topicName", spec.topic_name.as_deref());
    object.set_opt("urlGroup", spec.topic_name.as_deref());
    object.set_opt("endpointName", spec.endpoint_name.as_deref());
    object.set_opt("queueName", spec.queue_name.as_deref());
    object.set_opt("scheduleId", spec.schedule_id.as_deref());
    object.set("method", spec.method.as_str());
    set_spec_headers(object, spec);
    if let Some(body) = shown.apply_to_text(&spec.redact.body(&message.body)) {
        set_body(object, "body", body);
    }
    object.set("maxRetries", spec.max_retries);
    object.set_opt("retryDelayExpression", spec.retry_delay.as_deref());
    object.set("notBefore", message.not_before);
    object.set("createdAt", message.created_at);
    object.set_opt("callback", spec.callback.as_ref().map(|c| c.url.as_str()));
    object.set_opt("failureCallback", spec.failure_callback.as_ref().map(|c| c.url.as_str()));
    object.set_opt("callerIP", spec.caller_ip.as_deref());
    object.set_opt("callerIp", spec.caller_ip.as_deref());
    set_flow_and_labels(object, spec);
}

/// `header` (redacted), `callbackHeader` and `failureCallbackHeader` of a message or schedule,
/// each left out when empty (§0.2: never an empty placeholder).
pub fn set_spec_headers(object: &mut Object, spec: &MessageSpec) {
    if !spec.headers.is_empty() {
        object.set("header", json!(spec.redact.headers(&spec.headers).to_canonical_map()));
    }
    let callback_headers = forwarded_callback_headers(spec.callback.as_ref());
    if !callback_headers.is_empty() {
        object.set("callbackHeader", json!(callback_headers.to_canonical_map()));
    }
    let failure_headers = forwarded_callback_headers(spec.failure_callback.as_ref());
    if !failure_headers.is_empty() {
        object.set("failureCallbackHeader", json!(failure_headers.to_canonical_map()));
    }
}

/// Labels and flow-control settings; `parallelism` and `rate` only when set.
pub fn set_flow_and_labels(object: &mut Object, spec: &MessageSpec) {
    object.set_opt("label", spec.labels.first().map(String::as_str));
    if !spec.labels.is_empty() {
        object.set("labels", json!(spec.labels));
    }
    if let Some(flow) = &spec.flow_control {
        object.set("flowControlKey", flow.key.as_str());
        object.set_opt("parallelism", flow.parallelism);
        object.set_opt("rate", flow.rate);
        object.set("period", flow.period_secs);
    }
}

/// `GET /v2/messages/{id}`.
pub fn message(message: &Message) -> Value {
    let mut object = Object::new();
    message_fields(message, &mut object, ShownBodies::Whole);
    Value::Object(object.0)
}

/// A DLQ entry: the message plus its last response (§6.2), its bodies as `shown`.
pub fn dlq_message(message: &Message, shown: ShownBodies) -> Value {
    let mut object = Object::new();
    message_fields(message, &mut object, shown);
    object.set_opt("dlqId", message.dlq_id.as_deref());
    let response = message.last_response.clone().unwrap_or_default();
    object.set("responseStatus", response.status);
    if !response.headers.is_empty() {
        object.set("responseHeader", json!(response.headers.to_canonical_map()));
    }
    if let Some(body) = shown.apply_to_text(&response.body) {
        set_body(&mut object, "responseBody", body);
    }
    Value::Object(object.0)
}

/// A log entry (§6.6): bodies in base64 as `shown`, both spellings of the renamed fields.
pub fn log_entry(entry: &LogEntry, shown: ShownBodies) -> Value {
    let message = &entry.message;
    let spec = &message.spec;
    let mut object = Object::new();
    object.set("time", entry.time);
    object.set("messageId", message.id.to_string());
    object.set("state", entry.state.as_str());
    object.set("url", spec.url.as_str());
    object.set_opt("error", entry.error.as_deref());
    object.set_opt("nextDeliveryTime", entry.next_delivery_time);
    object.set_opt("topicName", spec.topic_name.as_deref());
    object.set_opt("endpointName", spec.endpoint_name.as_deref());
    object.set_opt("queueName", spec.queue_name.as_deref());
    object.set_opt("scheduleId", spec.schedule_id.as_deref());
    if !spec.headers.is_empty() {
        object.set("header", json!(spec.redact.headers(&spec.headers).to_canonical_map()));
    }
    if let Some(body) = shown.apply(&spec.redact.body(&message.body)) {
        object.set("body", STANDARD.encode(body));
    }
    if let Some(response) = &entry.response {
        log_response(&mut object, response, shown);
    }
    object.set_opt("timeout", spec.timeout_ms);
    object.set("method", spec.method.as_str());
    object.set_opt("callback", spec.callback.as_ref().map(|c| c.url.as_str()));
    object.set_opt("failureCallback", spec.failure_callback.as_ref().map(|c| c.url.as_str()));
    let callback_headers = forwarded_callback_headers(spec.callback.as_ref());
    if !callback_headers.is_empty() {
        object.set("callbackHeaders", json!(callback_headers.to_canonical_map()));
    }
    let failure_headers = forwarded_callback_headers(spec.failure_callback.as_ref());
    if !failure_headers.is_empty() {
        object.set("failureCallbackHeaders", json!(failure_headers.to_canonical_map()));
    }
    object.set("maxRetries", spec.max_retries);
    object.set_opt("retryDelayExpr", spec.retry_delay.as_deref());
    object.set_opt("retryDelayExpression", spec.retry_delay.as_deref());
    set_flow_and_labels(&mut object, spec);
    object.set_opt("callerIP", spec.caller_ip.as_deref());
    object.set_opt("callerIp", spec.caller_ip.as_deref());
    Value::Object(object.0)
}

/// The attempt's response; `responseStatus` is 0 when none arrived (timeout, connection error).
fn log_response(object: &mut Object, response: &AttemptResponse, shown: ShownBodies) {
    object.set("responseStatus", response.status);
    if !response.headers.is_empty() {
        let headers = json!(response.headers.to_canonical_map());
        object.set("responseHeader", headers.clone());
        object.set("responseHeaders", headers);
    }
    if let Some(body) = shown.apply(&response.body).filter(|body| !body.is_empty()) {
        object.set("responseBody", STANDARD.encode(body));
    }
}
