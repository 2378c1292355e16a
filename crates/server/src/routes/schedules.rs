//! Schedules (spec §5.6): `POST /v2/schedules/{destination}` with `Upstash-Cron` creates (or,
//! with an existing `Upstash-Schedule-Id`, overwrites) one; list, get, delete; pause and resume by
//! `PATCH` (the SDKs) and `POST` (the OpenAPI). `POST` paths are told apart as §3.3 says.

use super::publish::request_pairs;
use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Body, Caller, CallerIp, PathParam, Writer};
use crate::paging;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use serde_json::{Value, json};
use tern_core::destination::parse_target;
use tern_core::headers::strip_prefix_ignore_case;
use tern_core::{HeaderList, PublishOptions};
use tern_engine::{ScheduleRequest, ScheduleView};
use tern_store::{Order, PageRequest};

pub fn routes() -> Router<AppState> {
    Router::new()
        // `POST` without a destination is a create that fails with §3.1's message.
        .route("/v2/schedules", get(list).post(create_or_act))
        .route("/v2/schedules/", get(list).post(create_or_act))
        .route("/v2/schedules/{*rest}", post(create_or_act).get(get_one).delete(delete_one).patch(patch_action))
}

/// Headers a schedule keeps out of what it repeats: they describe the schedule itself (the
/// deduplication headers deduplicate its creation, not every tick's message).
const SCHEDULE_HEADERS: &[&str] = &[
    "upstash-cron",
    "upstash-schedule-id",
    "upstash-queue-name",
    "upstash-deduplication-id",
    "upstash-content-based-deduplication",
];

async fn create_or_act(
    State(state): State<AppState>,
    Writer(caller): Writer,
    CallerIp(caller_ip): CallerIp,
    uri: Uri,
    headers: HeaderMap,
    Body(body, _held): Body,
) -> ApiResult<Response> {
    let rest = uri.path().strip_prefix("/v2/schedules/").unwrap_or_default();
    let lower = rest.to_ascii_lowercase();
    let has_cron = headers.contains_key("upstash-cron")
        || uri.query().is_some_and(|query| query.to_ascii_lowercase().contains("upstash-cron="));
    if !has_cron
        && !lower.starts_with("http://")
        && !lower.starts_with("https://")
        && let Some((id, action)) = rest.split_once('/')
        && !id.is_empty()
    {
        match action.to_ascii_lowercase().as_str() {
            "pause" => return Ok(set_paused(&state, &caller.user_id, id, true).await?.into_response()),
            "resume" => return Ok(set_paused(&state, &caller.user_id, id, false).await?.into_response()),
            _ => {}
        }
    }
    create(&state, &caller, caller_ip, rest, uri.query(), &headers, body).await
}

/// Creates a schedule from a create request or a publish carrying `Upstash-Cron`: `200
/// {"scheduleId"}`, or `202` with the first schedule's id when deduplicated (spec §5.6, §16).
pub async fn create(
    state: &AppState,
    caller: &crate::extract::Caller,
    caller_ip: Option<String>,
    raw_destination: &str,
    query: Option<&str>,
    headers: &HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let target = parse_target(raw_destination, query)?;
    let pairs = request_pairs(headers, &target.query_options)?;
    let options = PublishOptions::from_headers(
        pairs.iter().map(|(name, value)| (name.as_str(), value.as_str())),
        caller.token_in_authorization,
    )?;
    let cron = options.cron.clone().ok_or_else(|| ApiError::bad_request("the Upstash-Cron header is required"))?;
    let kept: HeaderList = pairs
        .into_iter()
        .filter(|(name, _)| {
            let lower = name.to_ascii_lowercase();
            !SCHEDULE_HEADERS.contains(&lower.as_str())
                && strip_prefix_ignore_case(name, "upstash-telemetry-").is_none()
                && !(caller.token_in_authorization && lower == "authorization")
        })
        .collect();
    let request = ScheduleRequest {
        cron,
        destination: target.destination,
        schedule_id: options.schedule_id.clone().filter(|id| !id.is_empty()),
        queue: options.queue_name.clone().filter(|queue| !queue.is_empty()),
        headers: kept,
        body,
        caller_ip,
        deduplication_id: options.deduplication_id.clone(),
        content_based_deduplication: options.content_based_deduplication,
    };
    let created = state.engine.create_schedule(&caller.user_id, request).await?;
    Ok(if created.deduplicated {
        (StatusCode::ACCEPTED, Json(json!({ "scheduleId": created.id, "deduplicated": true }))).into_response()
    } else {
        Json(json!({ "scheduleId": created.id })).into_response()
    })
}

async fn set_paused(state: &AppState, user_id: &str, id: &str, paused: bool) -> ApiResult<()> {
    Ok(state.engine.set_schedule_paused(user_id, id, paused).await?)
}

/// `PATCH /v2/schedules/{id}/pause` and `…/resume`.
async fn patch_action(
    State(state): State<AppState>,
    Writer(caller): Writer,
    PathParam(rest): PathParam,
) -> ApiResult<()> {
    let (id, action) = rest.split_once('/').unwrap_or((&rest, ""));
    match action.to_ascii_lowercase().as_str() {
        "pause" => set_paused(&state, &caller.user_id, id, true).await,
        "resume" => set_paused(&state, &caller.user_id, id, false).await,
        _ => Err(ApiError::not_found(format!("no such endpoint: PATCH /v2/schedules/{rest}"))),
    }
}

/// Schedules read per piece of the listing (a piece also ends at `limits.list_page_bytes`).
const SCHEDULES_PER_PIECE: usize = 256;

/// The whole list as one JSON array, streamed a piece at a time within the listing budget
/// (`paging::stream_array`): each piece is one read of the store (no connection is held while
/// the client reads), so memory holds one piece whatever the number and size of the schedules.
async fn list(State(state): State<AppState>, caller: Caller) -> ApiResult<Response> {
    let request = PageRequest {
        order: Order::EarliestFirst,
        max_bytes: state.api.list_page_bytes,
        ..PageRequest::first(SCHEDULES_PER_PIECE)
    };
    let engine = state.engine.clone();
    let budget = caller.budget(&state.api.listings);
    let read = move |page: PageRequest| {
        let (engine, user_id) = (engine.clone(), caller.user_id.clone());
        async move { engine.schedules(&user_id, &page).await }
    };
    let body = paging::stream_array(budget, request, read, schedule_json).await?;
    Ok(([(CONTENT_TYPE, "application/json")], body).into_response())
}

/// Read within the listing budget, as a page of one (`paging`): a schedule's body alone may
/// take megabytes, and its answer is held until the client reads it.
async fn get_one(State(state): State<AppState>, caller: Caller, PathParam(id): PathParam) -> ApiResult<Response> {
    let bytes = state.engine.schedule_bytes(&caller.user_id, &id).await?;
    let held = caller.budget(&state.api.listings).reserve(bytes.saturating_mul(paging::RESERVED_PER_BYTE_READ)).await;
    let schedule = state.engine.schedule(&caller.user_id, &id).await?;
    let json = serde_json::to_vec(&schedule_json(&schedule)).expect("a JSON value serialises");
    Ok(crate::views::json_pieces(vec![json.into()], held))
}

async fn delete_one(State(state): State<AppState>, Writer(caller): Writer, PathParam(id): PathParam) -> ApiResult<()> {
    Ok(state.engine.delete_schedule(&caller.user_id, &id).await?)
}

/// The schedule shape of §6.3, with redaction applied.
fn schedule_json(view: &ScheduleView) -> Value {
    let record = &view.record;
    let spec = &view.template;
    let mut object = crate::views::Object::new();
    object.set("scheduleId", record.id.as_str());
    object.set("cron", record.cron.as_str());
    object.set("destination", record.destination.as_str());
    object.set("createdAt", record.created_at);
    object.set("method", spec.method.as_str());
    object.set("retries", spec.max_retries);
    crate::views::set_spec_headers(&mut object, spec);
    crate::views::set_body(&mut object, "body", &spec.redact.body(&record.body));
    if view.delay_secs > 0 {
        object.set("delay", view.delay_secs);
    }
    object.set_opt("timeout", spec.timeout_ms.map(|ms| ms / 1000));
    object.set_opt("callback", spec.callback.as_ref().map(|c| c.url.as_str()));
    object.set_opt("failureCallback", spec.failure_callback.as_ref().map(|c| c.url.as_str()));
    object.set_opt("queueName", record.queue_name.as_deref());
    object.set_opt("callerIP", record.caller_ip.as_deref());
    object.set_opt("callerIp", record.caller_ip.as_deref());
    object.set("isPaused", record.paused);
    crate::views::set_flow_and_labels(&mut object, spec);
    object.set_opt("retryDelayExpression", spec.retry_delay.as_deref());
    object.set_opt("lastScheduleTime", record.last_tick_at);
    object.set_opt("nextScheduleTime", view.next_schedule_time);
    if !view.last_states.is_empty() {
        let states: serde_json::Map<String, Value> =
            view.last_states.iter().map(|(id, state)| (id.to_string(), json!(state))).collect();
        object.set("lastScheduleStates", Value::Object(states));
    }
    object.set_opt("error", record.error.as_deref());
    object.into_value()
}
