//! Logs (spec §5.9): `GET /v2/logs` and its alias `/v2/events`, answering with both the
//! `events` key the SDKs read and the `logs` key the newer docs name.

use crate::AppState;
use crate::error::ApiResult;
use crate::extract::Caller;
use crate::query::Query;
use crate::views;
use axum::extract::State;
use axum::http::Uri;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

pub fn routes() -> Router<AppState> {
    Router::new().route("/v2/logs", get(list_logs)).route("/v2/events", get(list_logs))
}

async fn list_logs(State(state): State<AppState>, caller: Caller, uri: Uri) -> ApiResult<Json<Value>> {
    // Unknown keys are ignored here (the Go SDK still sends the retired `api` filter).
    let query = Query::parse(uri.query());
    let mut filter = query.filter()?;
    filter.dlq_ids.clear();
    filter.response_statuses.clear();
    let page = query.page(state.api.logs_page_size)?;
    let logs = state.engine.logs(&caller.user_id, &filter, &page).await?;
    let entries: Vec<Value> = logs.items.iter().map(views::log_entry).collect();
    let mut body = json!({ "events": entries, "logs": entries });
    if let Some(cursor) = logs.cursor {
        body["cursor"] = json!(cursor);
    }
    Ok(Json(body))
}
