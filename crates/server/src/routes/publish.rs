//! Publishing (spec §5.1–§5.2): `POST /v2/publish/{destination}` and `POST
//! /v2/enqueue/{queue}/{destination}` (`POST /v2/batch` is `batch`). The destination is the raw path after
//! the prefix with the request's query re-attached; configuration comes from headers and, in
//! webhook mode, `upstash-*` query keys (a header wins over the same key).

use crate::AppState;
use crate::budget::Reservation;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Body, Caller, CallerIp, Writer};
use crate::views;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};
use tern_core::destination::{Target, parse_target};
use tern_core::{HeaderList, PublishOptions};
use tern_engine::{PublishRequest, PublishResult, Recipients};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v2/publish", post(empty_destination))
        .route("/v2/publish/", post(empty_destination))
        .route("/v2/publish/{*destination}", post(publish))
        .route("/v2/enqueue/{*queue_and_destination}", post(enqueue))
}

async fn empty_destination(_writer: Writer) -> ApiError {
    ApiError::bad_request("a non-empty destination must be provided")
}

async fn publish(
    State(state): State<AppState>,
    Writer(caller): Writer,
    CallerIp(caller_ip): CallerIp,
    uri: Uri,
    headers: HeaderMap,
    Body(body, _held): Body,
) -> ApiResult<Response> {
    let raw = uri.path().strip_prefix("/v2/publish/").unwrap_or_default();
    let target = parse_target(raw, uri.query())?;
    let request = publish_request(&state, &caller, &headers, target, body, caller_ip, None).await?;
    if request.options.cron.is_some() {
        // A publish with Upstash-Cron creates a schedule, as the older docs describe.
        let PublishRequest { body, caller_ip, .. } = request;
        return super::schedules::create(&state, &caller, caller_ip, raw, uri.query(), &headers, body).await;
    }
    let held = reserve_group_answer(&state, &caller, &request.recipients).await;
    let result = state.engine.publish(&caller.user_id, request).await?;
    Ok(publish_response(&result, held))
}

async fn enqueue(
    State(state): State<AppState>,
    Writer(caller): Writer,
    CallerIp(caller_ip): CallerIp,
    uri: Uri,
    headers: HeaderMap,
    Body(body, _held): Body,
) -> ApiResult<Response> {
    let raw = uri.path().strip_prefix("/v2/enqueue/").unwrap_or_default();
    let (queue, destination) = raw.split_once('/').unwrap_or((raw, ""));
    let target = parse_target(destination, uri.query())?;
    let queue = Some(queue.to_string());
    let request = publish_request(&state, &caller, &headers, target, body, caller_ip, queue).await?;
    let held = reserve_group_answer(&state, &caller, &request.recipients).await;
    let result = state.engine.publish(&caller.user_id, request).await?;
    Ok(publish_response(&result, held))
}

/// Classifies request headers, plus webhook-mode query options, into publish options.
pub fn publish_options(
    headers: &HeaderMap,
    query_options: &[(String, String)],
    token_in_authorization: bool,
) -> ApiResult<PublishOptions> {
    let pairs = request_pairs(headers, query_options)?;
    Ok(PublishOptions::from_headers(
        pairs.iter().map(|(name, value)| (name.as_str(), value.as_str())),
        token_in_authorization,
    )?)
}

/// The publish of a request to `target`: who it reaches, and its configuration from its
/// headers and webhook-mode query options ([`PublishRequest::from_headers`]).
async fn publish_request(
    state: &AppState,
    caller: &Caller,
    headers: &HeaderMap,
    target: Target,
    body: bytes::Bytes,
    caller_ip: Option<String>,
    queue: Option<String>,
) -> ApiResult<PublishRequest> {
    let pairs = HeaderList(request_pairs(headers, &target.query_options)?);
    let recipients = state.engine.recipients(&caller.user_id, target.destination).await?;
    Ok(PublishRequest::from_headers(recipients, pairs, caller.token_in_authorization, body, caller_ip, queue)?)
}

/// The request's headers as text, plus webhook-mode query options for names no header has.
pub fn request_pairs(headers: &HeaderMap, query_options: &[(String, String)]) -> ApiResult<Vec<(String, String)>> {
    let mut pairs = Vec::with_capacity(headers.len() + query_options.len());
    for (name, value) in headers {
        let value = std::str::from_utf8(value.as_bytes())
            .map_err(|_| ApiError::bad_request(format!("header {name} is not valid UTF-8")))?;
        pairs.push((name.as_str().to_string(), value.to_string()));
    }
    for (name, value) in query_options {
        if !headers.contains_key(name.as_str()) {
            pairs.push((name.clone(), value.clone()));
        }
    }
    Ok(pairs)
}

/// A publish's answer: `{"messageId"}`, or an array of `{messageId, url}` for a URL group.
pub(super) fn published_json(result: &PublishResult) -> Value {
    let element = |published: &tern_engine::Published, with_url: bool| {
        let mut object = json!({ "messageId": published.message_id.to_string() });
        if with_url {
            object["url"] = json!(published.url);
        }
        if published.deduplicated {
            object["deduplicated"] = json!(true);
        }
        object
    };
    if result.fan_out {
        Value::Array(result.messages.iter().map(|published| element(published, true)).collect())
    } else {
        result.messages.first().map(|published| element(published, false)).unwrap_or(Value::Null)
    }
}

/// Bytes an answer holds per message besides its URL: the id, the keys, the punctuation and
/// `"deduplicated"`; generous, since the answer is held whole until the client reads it.
const ANSWER_BYTES_PER_MESSAGE: usize = 100;

/// About how many bytes the answer for the messages to `recipients` takes while it is built and
/// sent: a URL group's answer names every endpoint's URL (twice: the JSON value, then its text),
/// so a group of long URLs answers megabytes to a publish of one byte.
pub(super) fn answer_bytes(recipients: &Recipients) -> usize {
    match recipients {
        Recipients::Url(_) => ANSWER_BYTES_PER_MESSAGE,
        Recipients::UrlGroup(group) => group
            .endpoints
            .iter()
            .map(|endpoint| endpoint.url.len().saturating_mul(2).saturating_add(ANSWER_BYTES_PER_MESSAGE))
            .fold(0, usize::saturating_add),
    }
}

/// Reserves the answer to a publish to a URL group in the caller's listing budget before the
/// messages are stored (a publish waiting for room holds no answer yet); the answer to one URL
/// is too small to be worth it.
async fn reserve_group_answer(state: &AppState, caller: &Caller, recipients: &Recipients) -> Option<Reservation> {
    match recipients {
        Recipients::UrlGroup(_) => Some(caller.budget(&state.api.listings).reserve(answer_bytes(recipients)).await),
        Recipients::Url(_) => None,
    }
}

/// 200 with `{"messageId"}` (an array for a URL group), or 202 when everything was a
/// duplicate of an earlier message; `held` stays reserved until the answer is sent.
fn publish_response(result: &PublishResult, held: Option<Reservation>) -> Response {
    let status = if !result.messages.is_empty() && result.messages.iter().all(|m| m.deduplicated) {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    let json = published_json(result);
    match held {
        Some(held) => {
            let text = serde_json::to_vec(&json).expect("a JSON value serialises");
            drop(json);
            (status, views::json_pieces(vec![text.into()], held)).into_response()
        }
        None => (status, axum::Json(json)).into_response(),
    }
}
