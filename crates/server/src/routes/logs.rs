//! Logs (spec §5.9): `GET /v2/logs` and its alias `/v2/events`, answering with both the
//! `events` key the SDKs read and the `logs` key the newer docs name (one serialised array,
//! sent twice). Pages end by size too (`limits.list_page_bytes`); `trimBody` trims or leaves
//! out the bodies.

use crate::AppState;
use crate::error::ApiResult;
use crate::extract::Caller;
use crate::query::Query;
use crate::{paging, views};
use axum::Router;
use axum::extract::State;
use axum::http::Uri;
use axum::response::Response;
use axum::routing::get;
use bytes::Bytes;
use serde_json::Value;
use tern_store::PageRequest;

pub fn routes() -> Router<AppState> {
    Router::new().route("/v2/logs", get(list_logs)).route("/v2/events", get(list_logs))
}

async fn list_logs(State(state): State<AppState>, caller: Caller, uri: Uri) -> ApiResult<Response> {
    // Unknown keys are ignored here (the Go SDK still sends the retired `api` filter).
    let query = Query::parse(uri.query());
    let mut filter = query.filter()?;
    filter.dlq_ids.clear();
    filter.response_statuses.clear();
    let (page, shown) = query.listing(state.api.logs_page_size, state.api.list_page_bytes)?;
    let (engine, user_id, filter) = (&state.engine, &caller.user_id, &filter);
    let read = &mut |page: PageRequest| async move { engine.logs(user_id, filter, &page).await };
    let (logs, held) = paging::read_page(&caller.budget(&state.api.listings), &page, read).await?;
    // Serialised once, sent under both keys; each entry is let go once serialised.
    let entries = views::json_array(logs.items.into_iter().map(|entry| views::log_entry(&entry, shown)));
    let end = match logs.cursor {
        Some(cursor) => format!(",\"cursor\":{}}}", Value::String(cursor)),
        None => "}".to_string(),
    };
    let pieces = vec![
        Bytes::from_static(b"{\"events\":"),
        entries.clone(),
        Bytes::from_static(b",\"logs\":"),
        entries,
        Bytes::from(end),
    ];
    Ok(views::json_pieces(pieces, held))
}
