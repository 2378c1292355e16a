//! Waiting for events (workflow-protocol.md §4.6, §4.7): `POST /v2/wait/{eventId}` (a wait
//! step), `POST /v2/notify/{eventId}` and `/v2/notify/{runId}/{eventId}`, `GET
//! /v2/waiters/{eventId}`, and the webhook URLs of `createWebhook`
//! (`/v2/workflows/hooks/{user}/{runId}/{eventId}`, any method, no token).

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Body, Caller, CallerIp, HookCaller, JsonBody, PathParam, PathParams, Writer};
use crate::routes::{RequestedPath, publish::request_pairs};
use crate::{paging, views};
use axum::extract::State;
use axum::http::{HeaderMap, Method};
use axum::response::Response;
use axum::routing::{any, get, post};
use axum::{Json, Router};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::Duration;
use tern_core::HeaderList;
use tern_core::duration::parse_duration;
use tern_engine::{NotifyResult, WaitRequest};
use tern_store::{Notified, WaiterView};

/// The most waiters `GET /v2/waiters/{eventId}` lists.
const MAX_LISTED_WAITERS: usize = 1000;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v2/wait/{event_id}", post(wait))
        .route("/v2/notify/{event_id}", post(notify))
        .route("/v2/notify/{run_id}/{event_id}", post(notify_run))
        .route("/v2/waiters/{event_id}", get(waiters))
        .route("/v2/workflows/hooks/{user}/{run_id}/{event_id}", any(hook))
}

/// The body of `POST /v2/wait/{eventId}`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WaitBody {
    url: String,
    step: Value,
    #[serde(default)]
    timeout: Option<Value>,
    #[serde(default)]
    timeout_url: Option<String>,
    #[serde(default)]
    timeout_body: Option<Value>,
    #[serde(default)]
    timeout_headers: Option<BTreeMap<String, Vec<String>>>,
}

/// The longest `timeoutBody` a wait may have: it is kept with the waiter and shown with it.
const MAX_TIMEOUT_BODY: usize = 64 << 10;

/// How long a wait lasts when it does not say (the SDK's default).
const DEFAULT_WAIT: Duration = Duration::from_secs(7 * 86_400);

async fn wait(
    State(state): State<AppState>,
    Writer(caller): Writer,
    CallerIp(caller_ip): CallerIp,
    PathParam(event_id): PathParam,
    headers: HeaderMap,
    JsonBody(body, _held): JsonBody<WaitBody>,
) -> ApiResult<Json<Value>> {
    if body.url.is_empty() {
        return Err(ApiError::bad_request("a wait needs the url its result goes to"));
    }
    if !body.step.is_object() {
        return Err(ApiError::bad_request("a wait needs its step (an object)"));
    }
    let timeout = match &body.timeout {
        None | Some(Value::Null) => DEFAULT_WAIT,
        Some(Value::Number(seconds)) => Duration::try_from_secs_f64(seconds.as_f64().unwrap_or_default().max(0.0))
            .map_err(|_| ApiError::bad_request(format!("invalid timeout {seconds}")))?,
        Some(Value::String(text)) => {
            parse_duration(text).map_err(|e| ApiError::bad_request(format!("invalid timeout: {}", e.0)))?
        }
        Some(other) => return Err(ApiError::bad_request(format!("invalid timeout {other}"))),
    };
    let timeout_body = body.timeout_body.map(|value| match value {
        Value::String(text) => text,
        other => other.to_string(),
    });
    if timeout_body.as_ref().is_some_and(|text| text.len() > MAX_TIMEOUT_BODY) {
        return Err(ApiError::bad_request(format!("a wait's timeoutBody may take at most {MAX_TIMEOUT_BODY} bytes")));
    }
    let webhook = body.step.get("stepType").and_then(Value::as_str) == Some("WaitForWebhook");
    let mut timeout_headers = HeaderList::new();
    for (name, values) in body.timeout_headers.unwrap_or_default() {
        for value in values {
            timeout_headers.push(name.clone(), value);
        }
    }
    let request = WaitRequest {
        event_id,
        headers: HeaderList(request_pairs(&headers, &[])?),
        step: body.step.to_string(),
        timeout,
        timeout_url: body.timeout_url.unwrap_or_else(|| body.url.clone()),
        url: body.url,
        timeout_body,
        timeout_headers,
        caller_ip,
        webhook,
    };
    state.engine.wait(&caller.user_id, request).await?;
    Ok(Json(json!({})))
}

async fn notify(
    State(state): State<AppState>,
    Writer(caller): Writer,
    PathParam(event_id): PathParam,
    Body(data, _held): Body,
) -> ApiResult<Json<Value>> {
    let result = state.engine.notify(&caller.user_id, &event_id, None, data, false).await?;
    Ok(Json(notify_json(result)))
}

async fn notify_run(
    State(state): State<AppState>,
    Writer(caller): Writer,
    PathParams((run_id, event_id)): PathParams<(String, String)>,
    Body(data, _held): Body,
) -> ApiResult<Json<Value>> {
    let result = state.engine.notify(&caller.user_id, &event_id, Some(&run_id), data, false).await?;
    Ok(Json(notify_json(result)))
}

/// `[{waiter, messageId, error}]`, one per waiter woken; empty when none was (a run-scoped
/// event is then kept for the run's next wait on it). A waiter is shown without its timeout's
/// body and headers: a notify may wake thousands.
fn notify_json(result: NotifyResult) -> Value {
    let woke = match result {
        NotifyResult::Woke(woke) => woke,
        NotifyResult::Stored => Vec::new(),
    };
    Value::Array(
        woke.into_iter()
            .map(|Notified { waiter, message_id, error }| {
                let waiter = json!({
                    "url": waiter.url,
                    "deadline": waiter.deadline,
                    "headers": waiter.headers.to_canonical_map(),
                    "timeoutUrl": waiter.timeout_url,
                });
                json!({ "waiter": waiter, "messageId": message_id.to_string(), "error": error.unwrap_or_default() })
            })
            .collect(),
    )
}

/// Read within the listing budget, like a page of a listing.
async fn waiters(State(state): State<AppState>, caller: Caller, PathParam(event_id): PathParam) -> ApiResult<Response> {
    let page_bytes = state.api.list_page_bytes;
    let held =
        caller.budget(&state.api.listings).reserve(page_bytes.saturating_mul(paging::RESERVED_PER_BYTE_READ)).await;
    let waiters = state.engine.waiters(&caller.user_id, &event_id, MAX_LISTED_WAITERS, page_bytes).await?;
    Ok(views::json_pieces(vec![views::json_array(waiters.iter().map(waiter_json))], held))
}

fn waiter_json(waiter: &WaiterView) -> Value {
    let mut object = json!({
        "url": waiter.url,
        "deadline": waiter.deadline,
        "headers": waiter.headers.to_canonical_map(),
        "timeoutUrl": waiter.timeout_url,
        "timeoutHeaders": waiter.timeout_headers.to_canonical_map(),
    });
    if let Some(body) = &waiter.timeout_body {
        object["timeoutBody"] = json!(body);
    }
    object
}

/// A call of a webhook URL: a run-scoped event whose data describes the request, as the SDK
/// rebuilds it (`{method, header, body (base64), proto, host, url}`), the URL being the one the
/// caller used.
async fn hook(
    State(state): State<AppState>,
    HookCaller(caller): HookCaller,
    PathParams((_user, run_id, event_id)): PathParams<(String, String, String)>,
    method: Method,
    RequestedUrl(url): RequestedUrl,
    headers: HeaderMap,
    Body(body, _held): Body,
) -> ApiResult<Json<Value>> {
    let pairs = HeaderList(request_pairs(&headers, &[])?);
    let host = headers.get(axum::http::header::HOST).and_then(|host| host.to_str().ok()).unwrap_or_default();
    let event = json!({
        "method": method.as_str(),
        "header": pairs.to_canonical_map(),
        "body": STANDARD.encode(&body),
        "proto": "http",
        "host": host,
        "url": url,
    });
    let data = serde_json::to_vec(&event).expect("a JSON value serialises");
    // The caller holds only the URL: it learns nothing of the waits.
    state.engine.notify(&caller.user_id, &event_id, Some(&run_id), data.into(), true).await?;
    Ok(Json(json!({})))
}

/// The path and query of the request as the client sent them (before the path prefix was
/// taken off and the resource's case set).
struct RequestedUrl(String);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for RequestedUrl {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, _: &S) -> Result<Self, Self::Rejection> {
        let path = match parts.extensions.get::<RequestedPath>() {
            Some(RequestedPath(path)) => path.clone(),
            None => parts.uri.path().to_string(),
        };
        Ok(RequestedUrl(match parts.uri.query() {
            Some(query) => format!("{path}?{query}"),
            None => path,
        }))
    }
}
