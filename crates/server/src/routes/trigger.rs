//! Starting workflow runs from the REST API (workflow-protocol.md §2, §4.11): `POST
//! /v2/trigger/{workflowUrl}` (the raw path after the prefix, with the request's query, is the
//! URL, as for a publish) and `POST /v2/batch/trigger` (`[{destination, body?, headers?}]`).

use super::batch_items::{self, BatchLimits};
use super::{header_json, publish::request_pairs};
use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::{BatchBody, Body, CallerIp, Writer};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{Value, json};
use tern_core::HeaderList;
use tern_core::destination::{Destination, parse_target};
use tern_engine::{TriggerRequest, Triggered};

pub fn routes() -> Router<AppState> {
    Router::new().route("/v2/trigger/{*url}", post(trigger)).route("/v2/batch/trigger", post(batch_trigger))
}

/// `{workflowRunId, workflowCreatedAt}` of the run started (or already in flight under the id).
async fn trigger(
    State(state): State<AppState>,
    Writer(caller): Writer,
    CallerIp(caller_ip): CallerIp,
    uri: Uri,
    headers: HeaderMap,
    Body(body, _held): Body,
) -> ApiResult<Json<Value>> {
    let raw = uri.path().strip_prefix("/v2/trigger/").unwrap_or_default();
    let url = workflow_url(raw, uri.query())?;
    let headers = HeaderList(request_pairs(&headers, &[])?);
    let request = TriggerRequest { url, headers, body, caller_ip };
    let triggered = state.engine.trigger(&caller.user_id, vec![request]).await?;
    let Triggered { run_id, created_at, .. } = &triggered[0];
    Ok(Json(json!({ "workflowRunId": run_id, "workflowCreatedAt": created_at })))
}

/// 201 with `[{workflowRunId, workflowCreatedAt, deduplicated}]` in request order.
async fn batch_trigger(
    State(state): State<AppState>,
    Writer(caller): Writer,
    CallerIp(caller_ip): CallerIp,
    BatchBody(raw, _held): BatchBody,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let config = state.engine.config();
    let limits = BatchLimits { max_items: config.max_batch_messages, max_body_bytes: state.api.max_body_bytes };
    let mut requests = Vec::new();
    for (index, item) in batch_items::parse(&raw, limits)?.into_iter().enumerate() {
        let item_error =
            |error: ApiError| ApiError::new(error.status, format!("batch item {index}: {}", error.message));
        let (path, query) = match item.destination.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (item.destination.as_str(), None),
        };
        let url = workflow_url(path, query).map_err(item_error)?;
        let headers = match &item.headers {
            Some(raw) => header_json::parse(raw, config.limits.max_header_bytes).map_err(item_error)?,
            None => HeaderList::new(),
        };
        requests.push(TriggerRequest { url, headers, body: item.body, caller_ip: caller_ip.clone() });
    }
    let triggered = state.engine.trigger(&caller.user_id, requests).await?;
    let answer = triggered
        .iter()
        .map(
            |t| json!({ "workflowRunId": t.run_id, "workflowCreatedAt": t.created_at, "deduplicated": t.deduplicated }),
        )
        .collect();
    Ok((StatusCode::CREATED, Json(Value::Array(answer))))
}

/// The workflow URL a trigger names: a URL (not a URL group), its query kept.
fn workflow_url(raw: &str, query: Option<&str>) -> ApiResult<String> {
    match parse_target(raw, query)?.destination {
        Destination::Url(url) => Ok(url),
        _ => Err(ApiError::bad_request(format!("a workflow is triggered at a URL, not {raw:?}"))),
    }
}
