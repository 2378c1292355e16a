//! Workflow runs (workflow-protocol.md §2): ending a run (`DELETE /v2/workflows/runs/{id}`,
//! which the SDKs call when the workflow returns, and to cancel), cancelling runs in bulk, the
//! lazy fetch of a run's records (`GET /v2/workflows/runs/{id}`), and the run logs
//! (`GET /v2/workflows/events`, `/v2/workflows/logs`).

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Body, Caller, PathParam, Writer};
use crate::query::{self, Query};
use crate::{paging, views, workflow_views};
use axum::Router;
use axum::extract::State;
use axum::http::Uri;
use axum::response::Response;
use axum::routing::get;
use bytes::Bytes;
use serde_json::{Value, json};
use tern_core::workflow::{RunState, steps_body};
use tern_store::{PageRequest, RunFilter};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v2/workflows/runs", axum::routing::delete(cancel_runs))
        .route("/v2/workflows/runs/{id}", get(run_records).delete(end_run))
        .route("/v2/workflows/events", get(list_runs))
        .route("/v2/workflows/logs", get(list_runs))
}

/// `?cancel=true` cancels the run; otherwise the workflow returned the body.
async fn end_run(
    State(state): State<AppState>,
    Writer(caller): Writer,
    PathParam(run_id): PathParam,
    uri: Uri,
    Body(body, _held): Body,
) -> ApiResult<axum::Json<Value>> {
    let query = Query::parse(uri.query());
    let cancel = match query.single("cancel").map(str::trim) {
        None | Some("") | Some("false") => false,
        Some("true") => true,
        Some(other) => return Err(ApiError::bad_request(format!("cancel must be true or false, got {other:?}"))),
    };
    state.engine.end_run(&caller.user_id, &run_id, cancel, body).await?;
    Ok(axum::Json(json!({})))
}

/// Keys the run logs understand.
const LOG_KEYS: &[&str] = &[
    "groupBy",
    "cursor",
    "count",
    "trimBody",
    "workflowRunId",
    "workflowUrl",
    "workflowCreatedAt",
    "state",
    "label",
    "fromDate",
    "toDate",
    "callerIp",
    "callerIP",
    "flowControlKey",
    "messageId",
    "host",
    "path",
];

/// The most runs one bulk cancel cancels (call again for more).
const MAX_CANCELLED_RUNS: usize = 1000;

/// Keys `DELETE /v2/workflows/runs` understands.
const CANCEL_KEYS: &[&str] = &[
    "workflowRunIds",
    "workflowRunId",
    "workflowUrl",
    "workflowUrlExactMatch",
    "label",
    "fromDate",
    "toDate",
    "callerIp",
    "callerIP",
    "flowControlKey",
    "count",
    "workflowCreatedAt",
    "host",
    "path",
];

/// Cancels the started runs the query selects (every one of the user's when it selects
/// nothing, as the SDK's `cancel({all: true})` asks): `{"cancelled": n}`.
async fn cancel_runs(State(state): State<AppState>, Writer(caller): Writer, uri: Uri) -> ApiResult<axum::Json<Value>> {
    let query = Query::parse(uri.query());
    query.only(&[CANCEL_KEYS])?;
    let filter = run_filter(&query)?;
    query::check_ids(&filter.run_ids, "workflow run")?;
    // `count` bounds how many one call cancels (the SDK sends 100 unless told otherwise); one
    // call cancels at most MAX_CANCELLED_RUNS, one commit that every other write waits for.
    let limit = query.count(MAX_CANCELLED_RUNS)?.unwrap_or(MAX_CANCELLED_RUNS);
    let cancelled = state.engine.cancel_runs(&caller.user_id, filter, Some(limit)).await?;
    Ok(axum::Json(json!({ "cancelled": cancelled })))
}

/// Every record of a started run, for the SDK's lazy fetch; 404 once it ended (the SDK then
/// knows the run is over).
async fn run_records(
    State(state): State<AppState>,
    caller: Caller,
    PathParam(run_id): PathParam,
) -> ApiResult<Response> {
    let bytes = state.engine.run_records_bytes(&caller.user_id, &run_id).await?;
    let held = caller.budget(&state.api.listings).reserve(bytes.saturating_mul(paging::RESERVED_PER_BYTE_READ)).await;
    let records = state.engine.run_records(&caller.user_id, &run_id).await?;
    Ok(views::json_pieces(vec![Bytes::from(steps_body(&records))], held))
}

async fn list_runs(State(state): State<AppState>, caller: Caller, uri: Uri) -> ApiResult<Response> {
    let query = Query::parse(uri.query());
    query.only(&[LOG_KEYS])?;
    // The logs match a workflow URL exactly (the SDK's docs say so); a cancel by prefix.
    let filter = RunFilter { url_exact: true, ..run_filter(&query)? };
    let (page, shown) = query.listing(state.api.logs_page_size, state.api.list_page_bytes)?;
    let (engine, user_id, filter) = (&state.engine, &caller.user_id, &filter);
    let read = &mut |page: PageRequest| async move { engine.runs(user_id, filter, &page).await };
    let (runs, held) = paging::read_page(&caller.budget(&state.api.listings), &page, read).await?;
    let items = views::json_array(runs.items.iter().map(|run| workflow_views::run(run, shown)));
    let end = match runs.cursor {
        Some(cursor) => format!(",\"cursor\":{}}}", Value::String(cursor)),
        None => "}".to_string(),
    };
    Ok(views::json_pieces(vec![Bytes::from_static(b"{\"runs\":"), items, Bytes::from(end)], held))
}

/// The run filters of the Workflow API's query strings.
fn run_filter(query: &Query) -> ApiResult<RunFilter> {
    let mut run_ids = query.values("workflowRunIds");
    run_ids.extend(query.values("workflowRunId"));
    let mut states = Vec::new();
    for value in query.values("state") {
        states.push(RunState::parse(&value).ok_or_else(|| ApiError::bad_request(format!("unknown state {value:?}")))?);
    }
    let mut caller_ips = query.values("callerIp");
    caller_ips.extend(query.values("callerIP"));
    let url_exact = match query.single("workflowUrlExactMatch").map(str::trim) {
        None | Some("") | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!("workflowUrlExactMatch must be true or false, got {other:?}")));
        }
    };
    Ok(RunFilter {
        run_ids,
        urls: query.values("workflowUrl"),
        url_exact,
        message_ids: query.values("messageId"),
        hosts: query.values("host"),
        paths: query.values("path"),
        states,
        labels: query.values("label"),
        created_at: integer(query, "workflowCreatedAt")?,
        from_ms: integer(query, "fromDate")?,
        to_ms: integer(query, "toDate")?,
        caller_ips,
        flow_control_keys: query.values("flowControlKey"),
    })
}

fn integer(query: &Query, key: &str) -> ApiResult<Option<i64>> {
    query
        .single(key)
        .map(str::trim)
        .filter(|value| !value.is_empty())
        .map(|value| {
            value.parse().map_err(|_| ApiError::bad_request(format!("{key} must be an integer, got {value:?}")))
        })
        .transpose()
}
