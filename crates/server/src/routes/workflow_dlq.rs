//! The workflow DLQ (workflow-protocol.md §2): the DLQ entries of failed runs, listed by `GET
//! /v2/dlq?source=workflow` and `/v2/workflows/dlq` with their runs' fields; one read or
//! deleted; resumed or restarted as new runs (in bulk, by `dlqIds` or filters, or one by id);
//! and the failure function called again.

use super::dlq::IdsBody;
use super::publish::publish_options;
use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Caller, JsonBody, PathParam, Writer};
use crate::query::{self, COMMON_FILTERS, Query};
use crate::{paging, views};
use axum::extract::State;
use axum::http::{HeaderMap, Uri};
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use serde_json::{Value, json};
use tern_core::workflow::{callback_state, callback_states};
use tern_core::{Message, PublishOptions};
use tern_engine::{DlqSelection, Triggered};
use tern_store::{FailedRun, MessageFilter, PageRequest};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v2/workflows/dlq", get(list).delete(delete_many))
        .route("/v2/workflows/dlq/{dlq_id}", get(get_one).delete(delete_one))
        .route("/v2/workflows/dlq/resume", post(resume_many))
        .route("/v2/workflows/dlq/restart", post(restart_many))
        .route("/v2/workflows/dlq/resume/{dlq_id}", post(resume_one))
        .route("/v2/workflows/dlq/restart/{dlq_id}", post(restart_one))
        .route("/v2/workflows/dlq/callback/{dlq_id}", post(retry_failure_function))
}

/// The workflow filters of the DLQ, besides the common ones.
pub const WORKFLOW_DLQ_KEYS: &[&str] = &[
    "source",
    "workflowUrl",
    "workflowRunId",
    "workflowCreatedAt",
    "failureFunctionState",
    "dlqIds",
    "responseStatus",
    "count",
    "cursor",
    "order",
    "trimBody",
];

/// The DLQ filter of `query`: the common filters, the workflow ones, and `source=workflow`
/// (or `workflow_only`) for the entries of workflow runs alone.
pub fn workflow_filter(query: &Query, workflow_only: bool) -> ApiResult<MessageFilter> {
    let mut filter = query.filter()?;
    filter.urls.extend(query.values("workflowUrl"));
    filter.workflow_only = workflow_only || query.single("source").is_some_and(|s| s.eq_ignore_ascii_case("workflow"));
    for value in query.values("failureFunctionState") {
        let states = callback_states(&value)
            .ok_or_else(|| ApiError::bad_request(format!("unknown failureFunctionState {value:?}")))?;
        filter.failure_callback_states.extend(states);
    }
    Ok(filter)
}

/// DLQ entries as JSON, each entry of a run with its run's fields.
pub async fn entries_json(
    state: &AppState,
    caller: &Caller,
    messages: Vec<Message>,
    shown: views::ShownBodies,
) -> ApiResult<Vec<Value>> {
    let mut entries = Vec::with_capacity(messages.len());
    for message in messages {
        let mut entry = views::dlq_message(&message, shown);
        if message.spec.workflow.is_some()
            && let Some(dlq_id) = &message.dlq_id
            && let Some(failed) = state.engine.failed_run(&caller.user_id, dlq_id).await?
        {
            add_run_fields(&mut entry, &failed);
        }
        entries.push(entry);
    }
    Ok(entries)
}

fn add_run_fields(entry: &mut Value, failed: &FailedRun) {
    entry["workflowRunId"] = json!(failed.run.run_id);
    entry["workflowCreatedAt"] = json!(failed.run.created_at);
    entry["workflowUrl"] = json!(failed.run.url);
    if let Some(callback) = &failed.failure_callback {
        entry["failureCallback"] = json!(callback.url);
        let state = callback_state(callback.state);
        let mut info = json!({ "state": state });
        if let Some(response) = &callback.response {
            info["responseStatus"] = json!(response.status);
            info["responseHeaders"] = json!(response.headers.to_canonical_map());
            info["responseBody"] = json!(String::from_utf8_lossy(&response.body));
        }
        entry["failureCallbackInfo"] = info;
    }
}

async fn list(State(state): State<AppState>, caller: Caller, uri: Uri) -> ApiResult<Response> {
    let query = Query::parse(uri.query());
    query.only(&[COMMON_FILTERS, WORKFLOW_DLQ_KEYS])?;
    let (page, shown) = query.listing(state.api.dlq_page_size, state.api.list_page_bytes)?;
    let filter = workflow_filter(&query, true)?;
    let (engine, user_id, filter) = (&state.engine, &caller.user_id, &filter);
    let read = &mut |page: PageRequest| async move { engine.dlq_list(user_id, filter, &page).await };
    let (entries, held) = paging::read_page(&caller.budget(&state.api.listings), &page, read).await?;
    let json = views::json_array(entries_json(&state, &caller, entries.items, shown).await?);
    let end = match entries.cursor {
        Some(cursor) => format!(",\"cursor\":{}}}", Value::String(cursor)),
        None => "}".to_string(),
    };
    Ok(views::json_pieces(vec![Bytes::from_static(b"{\"messages\":"), json, Bytes::from(end)], held))
}

async fn get_one(State(state): State<AppState>, caller: Caller, PathParam(dlq_id): PathParam) -> ApiResult<Response> {
    let filter = MessageFilter { dlq_ids: vec![dlq_id.clone()], workflow_only: true, ..MessageFilter::default() };
    let page = PageRequest { max_bytes: state.api.list_page_bytes, ..PageRequest::first(1) };
    let (engine, user_id, filter) = (&state.engine, &caller.user_id, &filter);
    let read = &mut |page: PageRequest| async move { engine.dlq_list(user_id, filter, &page).await };
    let (page, held) = paging::read_page(&caller.budget(&state.api.listings), &page, read).await?;
    let entry = entries_json(&state, &caller, page.items, views::ShownBodies::Whole).await?.pop();
    let entry = entry.ok_or_else(|| ApiError::not_found(format!("message {dlq_id} not found in the DLQ")))?;
    Ok(views::json_pieces(vec![serde_json::to_vec(&entry).expect("JSON serialises").into()], held))
}

async fn delete_one(
    State(state): State<AppState>,
    Writer(caller): Writer,
    PathParam(dlq_id): PathParam,
) -> ApiResult<Json<Value>> {
    let selection = DlqSelection::Ids(vec![dlq_id.clone()]);
    let (deleted, _) = state.engine.dlq_delete(&caller.user_id, selection).await?;
    if deleted == 0 {
        return Err(ApiError::not_found(format!("message {dlq_id} not found in the DLQ")));
    }
    Ok(Json(json!({ "deleted": deleted })))
}

/// `{deleted, cursor?}`: the entries named by `dlqIds`, or one page of those matching the
/// filters (every workflow entry when there is none: the SDK's `{all: true}` sends nothing but
/// `count`).
async fn delete_many(State(state): State<AppState>, Writer(caller): Writer, uri: Uri) -> ApiResult<Json<Value>> {
    let selection = selection(&state, &Query::parse(uri.query()), IdsBody::default())?;
    let (deleted, cursor) = state.engine.dlq_delete(&caller.user_id, selection).await?;
    Ok(Json(with_cursor(json!({ "deleted": deleted }), cursor)))
}

fn selection(state: &AppState, query: &Query, body: IdsBody) -> ApiResult<DlqSelection> {
    query.only(&[COMMON_FILTERS, WORKFLOW_DLQ_KEYS])?;
    let mut ids = query.values("dlqIds");
    let body_ids = body.dlq_ids.is_some();
    ids.extend(body.dlq_ids.flatten().unwrap_or_default());
    query::check_ids(&ids, "DLQ")?;
    if !ids.is_empty() || body_ids || query.has("dlqIds") {
        return Ok(DlqSelection::Ids(ids));
    }
    let filter = workflow_filter(query, true)?;
    Ok(DlqSelection::Filter { filter: Box::new(filter), page: query.page(state.api.dlq_page_size)? })
}

fn with_cursor(mut body: Value, cursor: Option<String>) -> Value {
    if let Some(cursor) = cursor {
        body["cursor"] = json!(cursor);
    }
    body
}

/// The headers of a resume or restart that change the new run's configuration.
fn overrides(mut headers: HeaderMap, caller: &Caller) -> ApiResult<PublishOptions> {
    headers.remove(axum::http::header::CONTENT_TYPE);
    publish_options(&headers, &[], caller.token_in_authorization)
}

fn runs_json(started: &[Triggered]) -> Vec<Value> {
    started.iter().map(|run| json!({ "workflowRunId": run.run_id, "workflowCreatedAt": run.created_at })).collect()
}

async fn take_up_many(
    state: AppState,
    caller: Caller,
    uri: Uri,
    headers: HeaderMap,
    body: IdsBody,
    resume: bool,
) -> ApiResult<Json<Value>> {
    let selection = selection(&state, &Query::parse(uri.query()), body)?;
    let overrides = overrides(headers, &caller)?;
    let (started, cursor) = state.engine.take_up_failed_runs(&caller.user_id, selection, &overrides, resume).await?;
    Ok(Json(with_cursor(json!({ "workflowRuns": runs_json(&started) }), cursor)))
}

async fn resume_many(
    State(state): State<AppState>,
    Writer(caller): Writer,
    uri: Uri,
    headers: HeaderMap,
    JsonBody(body, _held): JsonBody<IdsBody>,
) -> ApiResult<Json<Value>> {
    take_up_many(state, caller, uri, headers, body, true).await
}

async fn restart_many(
    State(state): State<AppState>,
    Writer(caller): Writer,
    uri: Uri,
    headers: HeaderMap,
    JsonBody(body, _held): JsonBody<IdsBody>,
) -> ApiResult<Json<Value>> {
    take_up_many(state, caller, uri, headers, body, false).await
}

async fn take_up_one(
    state: AppState,
    caller: Caller,
    dlq_id: String,
    headers: HeaderMap,
    resume: bool,
) -> ApiResult<Json<Value>> {
    let overrides = overrides(headers, &caller)?;
    let selection = DlqSelection::Ids(vec![dlq_id.clone()]);
    let (started, _) = state.engine.take_up_failed_runs(&caller.user_id, selection, &overrides, resume).await?;
    let run = started.first().ok_or_else(|| ApiError::not_found(format!("message {dlq_id} not found in the DLQ")))?;
    Ok(Json(json!({ "workflowRunId": run.run_id, "workflowCreatedAt": run.created_at })))
}

async fn resume_one(
    State(state): State<AppState>,
    Writer(caller): Writer,
    PathParam(dlq_id): PathParam,
    headers: HeaderMap,
) -> ApiResult<Json<Value>> {
    take_up_one(state, caller, dlq_id, headers, true).await
}

async fn restart_one(
    State(state): State<AppState>,
    Writer(caller): Writer,
    PathParam(dlq_id): PathParam,
    headers: HeaderMap,
) -> ApiResult<Json<Value>> {
    take_up_one(state, caller, dlq_id, headers, false).await
}

async fn retry_failure_function(
    State(state): State<AppState>,
    Writer(caller): Writer,
    PathParam(dlq_id): PathParam,
) -> ApiResult<Json<Value>> {
    let run = state.engine.retry_failure_function(&caller.user_id, &dlq_id).await?;
    Ok(Json(json!({ "workflowRunId": run.run_id, "workflowCreatedAt": run.created_at })))
}
