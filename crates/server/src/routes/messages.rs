//! Messages (spec §5.4): get, cancel one, and bulk cancel by ids or filters.

use crate::AppState;
use crate::error::ApiResult;
use crate::extract::{Caller, JsonBody, PathParam, Writer};
use crate::query::{self, COMMON_FILTERS, Query};
use crate::{paging, views};
use axum::extract::State;
use axum::http::Uri;
use axum::response::Response;
use axum::routing::{delete, get};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use tern_core::MessageId;
use tern_store::CancelSelection;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v2/messages/{id}", get(get_message).delete(cancel_message))
        .route("/v2/message/{id}", get(get_message).delete(cancel_message))
        .route("/v2/messages", delete(cancel_messages))
        .route("/v2/messages/", delete(cancel_messages))
}

/// Read within the listing budget, as a page of one (`paging`).
async fn get_message(State(state): State<AppState>, caller: Caller, PathParam(id): PathParam) -> ApiResult<Response> {
    let bytes = state.engine.message_bytes(&caller.user_id, &id).await?;
    let held = caller.budget(&state.api.listings).reserve(bytes.saturating_mul(paging::RESERVED_PER_BYTE_READ)).await;
    let message = state.engine.message(&caller.user_id, &id).await?;
    let json = serde_json::to_vec(&views::message(&message)).expect("a JSON value serialises");
    Ok(views::json_pieces(vec![json.into()], held))
}

async fn cancel_message(
    State(state): State<AppState>,
    Writer(caller): Writer,
    PathParam(id): PathParam,
) -> ApiResult<Json<Value>> {
    let cancelled = state.engine.cancel(&caller.user_id, &id).await?;
    Ok(Json(json!({ "cancelled": cancelled })))
}

/// The legacy JSON body of bulk cancel (Python and Go send ids this way).
#[derive(Debug, Default, Deserialize)]
struct CancelBody {
    /// Present (even as `null`) means "exactly these ids", so an empty list cancels nothing.
    #[serde(default, rename = "messageIds", deserialize_with = "crate::extract::present")]
    message_ids: Option<Option<Vec<String>>>,
}

/// Keys bulk cancel accepts besides the common filters. `count` and `cursor` are accepted and
/// ignored: a filtered cancel covers every match in one call. The TS SDK (2.12.0) sends
/// `count=100` with every filter and "all" cancel and documents that QStash ignores it ("no
/// batching loop is needed"): honouring it would leave all but 100 messages pending.
const CANCEL_KEYS: &[&str] = &["messageIds", "host", "path", "count", "cursor"];

async fn cancel_messages(
    State(state): State<AppState>,
    Writer(caller): Writer,
    uri: Uri,
    JsonBody(body, _held): JsonBody<CancelBody>,
) -> ApiResult<Json<Value>> {
    let query = Query::parse(uri.query());
    query.only(&[COMMON_FILTERS, CANCEL_KEYS])?;
    let mut ids = query.values("messageIds");
    // A `messageIds` list that is present but empty selects nothing, never everything.
    let body_ids = body.message_ids.is_some();
    ids.extend(body.message_ids.clone().flatten().unwrap_or_default());
    query::check_ids(&ids, "message")?;
    // Checked like everywhere else (a typo must not pass silently), then ignored (CANCEL_KEYS).
    query.count(usize::MAX)?;
    let selection = if ids.is_empty() && !body_ids && !query.has("messageIds") {
        // Every filter narrows (`messageId` included); only no filter at all means "all".
        CancelSelection::Filter { filter: Box::new(query.filter()?), limit: None }
    } else {
        // Ids that cannot name a message are skipped like unknown ones.
        CancelSelection::Ids(ids.iter().filter_map(|id| id.parse::<MessageId>().ok()).collect())
    };
    let cancelled = state.engine.cancel_many(&caller.user_id, selection).await?;
    Ok(Json(json!({ "cancelled": cancelled })))
}
