//! The dead-letter queue (spec §5.8): list, get, delete one or many, retry one or many.

use super::publish::publish_options;
use super::workflow_dlq::{WORKFLOW_DLQ_KEYS, entries_json, workflow_filter};
use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Caller, JsonBody, PathParam, Writer};
use crate::query::{self, COMMON_FILTERS, Query};
use crate::{paging, views};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Value, json};
use tern_core::PublishOptions;
use tern_engine::DlqSelection;
use tern_store::{MessageFilter, PageRequest};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v2/dlq", get(list).delete(delete_many))
        .route("/v2/dlq/", get(list).delete(delete_many))
        .route("/v2/dlq/{dlq_id}", get(get_one).delete(delete_one))
        .route("/v2/dlq/retry", post(retry_many))
        .route("/v2/dlq/retry/", post(retry_many))
        .route("/v2/dlq/retry/{dlq_id}", post(retry_one))
}

/// Keys of the DLQ endpoints besides the common filters. `host` and `path` are not DLQ filters
/// and are refused like any unknown key; `api` is the Go SDK's retired filter, ignored.
const DLQ_KEYS: &[&str] = &["dlqIds", "responseStatus", "count", "cursor", "order", "api"];

/// Keys only the listing takes.
const LIST_KEYS: &[&str] = &["trimBody"];

/// Pages end by size too (`limits.list_page_bytes`); `trimBody` trims or leaves out the bodies.
async fn list(State(state): State<AppState>, caller: Caller, uri: Uri) -> ApiResult<Response> {
    let query = Query::parse(uri.query());
    query.only(&[COMMON_FILTERS, DLQ_KEYS, LIST_KEYS, WORKFLOW_DLQ_KEYS])?;
    let (page, shown) = query.listing(state.api.dlq_page_size, state.api.list_page_bytes)?;
    let filter = workflow_filter(&query, false)?;
    let (engine, user_id, filter) = (&state.engine, &caller.user_id, &filter);
    let read = &mut |page: PageRequest| async move { engine.dlq_list(user_id, filter, &page).await };
    let (entries, held) = paging::read_page(&caller.budget(&state.api.listings), &page, read).await?;
    // Entries of workflow runs come with their runs' fields.
    let messages = views::json_array(entries_json(&state, &caller, entries.items, shown).await?);
    let end = match entries.cursor {
        Some(cursor) => format!(",\"cursor\":{}}}", Value::String(cursor)),
        None => "}".to_string(),
    };
    Ok(views::json_pieces(vec![Bytes::from_static(b"{\"messages\":"), messages, Bytes::from(end)], held))
}

/// Read within the listing budget, as a page of one (`paging`).
async fn get_one(State(state): State<AppState>, caller: Caller, PathParam(dlq_id): PathParam) -> ApiResult<Response> {
    let filter = MessageFilter { dlq_ids: vec![dlq_id.clone()], ..MessageFilter::default() };
    let page = PageRequest { max_bytes: state.api.list_page_bytes, ..PageRequest::first(1) };
    let (engine, user_id, filter) = (&state.engine, &caller.user_id, &filter);
    let read = &mut |page: PageRequest| async move { engine.dlq_list(user_id, filter, &page).await };
    let (page, held) = paging::read_page(&caller.budget(&state.api.listings), &page, read).await?;
    let message =
        page.items.first().ok_or_else(|| ApiError::not_found(format!("message {dlq_id} not found in the DLQ")))?;
    let json = serde_json::to_vec(&views::dlq_message(message, views::ShownBodies::Whole)).expect("JSON serialises");
    Ok(views::json_pieces(vec![json.into()], held))
}

async fn delete_one(
    State(state): State<AppState>,
    Writer(caller): Writer,
    PathParam(dlq_id): PathParam,
) -> ApiResult<()> {
    let (deleted, _) = state.engine.dlq_delete(&caller.user_id, DlqSelection::Ids(vec![dlq_id.clone()])).await?;
    if deleted == 0 {
        return Err(ApiError::not_found(format!("message {dlq_id} not found in the DLQ")));
    }
    Ok(())
}

/// The JSON body Python and Go send for bulk operations.
#[derive(Debug, Default, Deserialize)]
pub(super) struct IdsBody {
    /// Present (even as `null`) means "exactly these ids".
    #[serde(default, rename = "dlqIds", deserialize_with = "crate::extract::present")]
    pub(super) dlq_ids: Option<Option<Vec<String>>>,
}

/// Explicit ids (query or body, at most `query::MAX_IDS`) win over filters; otherwise one page
/// of filtered entries.
fn selection(state: &AppState, query: &Query, body: IdsBody) -> ApiResult<DlqSelection> {
    query.only(&[COMMON_FILTERS, DLQ_KEYS])?;
    let mut ids = query.values("dlqIds");
    let body_ids = body.dlq_ids.is_some();
    ids.extend(body.dlq_ids.flatten().unwrap_or_default());
    query::check_ids(&ids, "DLQ")?;
    if !ids.is_empty() || body_ids || query.has("dlqIds") {
        return Ok(DlqSelection::Ids(ids));
    }
    Ok(DlqSelection::Filter { filter: Box::new(query.filter()?), page: query.page(state.api.dlq_page_size)? })
}

async fn delete_many(
    State(state): State<AppState>,
    Writer(caller): Writer,
    uri: Uri,
    JsonBody(body, _held): JsonBody<IdsBody>,
) -> ApiResult<Json<Value>> {
    let selection = selection(&state, &Query::parse(uri.query()), body)?;
    let (deleted, cursor) = state.engine.dlq_delete(&caller.user_id, selection).await?;
    let mut body = json!({ "deleted": deleted });
    if let Some(cursor) = cursor {
        body["cursor"] = json!(cursor);
    }
    Ok(Json(body))
}

/// The configuration headers of a DLQ retry request. Its own `Content-Type` describes the
/// request (a JSON filter, or nothing), not the messages: they keep theirs unless
/// `Upstash-Forward-Content-Type` says otherwise.
fn retry_overrides(mut headers: HeaderMap, caller: &Caller) -> ApiResult<PublishOptions> {
    headers.remove(axum::http::header::CONTENT_TYPE);
    publish_options(&headers, &[], caller.token_in_authorization)
}

async fn retry_one(
    State(state): State<AppState>,
    Writer(caller): Writer,
    PathParam(dlq_id): PathParam,
    headers: HeaderMap,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let overrides = retry_overrides(headers, &caller)?;
    let (ids, _) = state.engine.dlq_retry(&caller.user_id, DlqSelection::Ids(vec![dlq_id.clone()]), &overrides).await?;
    let id = ids.first().ok_or_else(|| ApiError::not_found(format!("message {dlq_id} not found in the DLQ")))?;
    Ok((StatusCode::CREATED, Json(json!({ "messageId": id.to_string() }))))
}

async fn retry_many(
    State(state): State<AppState>,
    Writer(caller): Writer,
    uri: Uri,
    headers: HeaderMap,
    JsonBody(body, _held): JsonBody<IdsBody>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let selection = selection(&state, &Query::parse(uri.query()), body)?;
    let overrides = retry_overrides(headers, &caller)?;
    let (ids, cursor) = state.engine.dlq_retry(&caller.user_id, selection, &overrides).await?;
    let responses: Vec<Value> = ids.iter().map(|id| json!({ "messageId": id.to_string() })).collect();
    let mut body = json!({ "responses": responses });
    if let Some(cursor) = cursor {
        body["cursor"] = json!(cursor);
    }
    Ok((StatusCode::CREATED, Json(body)))
}
