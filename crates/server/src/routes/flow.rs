//! Flow control (spec §5.10): keys with their live counters, pause, resume, pin, unpin, rate
//! reset, and the user-wide parallelism.

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Caller, PathParam, Writer};
use crate::query::Query;
use crate::views;
use axum::extract::State;
use axum::http::Uri;
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};
use tern_core::options::parse_bool;
use tern_engine::{FlowInfo, FlowPin};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v2/flowControl", get(list))
        .route("/v2/flowControl/", get(list))
        .route("/v2/flowControl/{key}", get(get_one))
        .route("/v2/flowControl/{key}/pause", post(pause))
        .route("/v2/flowControl/{key}/resume", post(resume))
        .route("/v2/flowControl/{key}/pin", post(pin))
        .route("/v2/flowControl/{key}/unpin", post(unpin))
        .route("/v2/flowControl/{key}/resetRate", post(reset_rate))
        .route("/v2/flowControl/{key}/reset", post(reset_rate))
        .route("/v2/globalParallelism", get(global))
}

fn flow_json(info: &FlowInfo) -> Value {
    json!({
        "flowControlKey": info.key,
        "waitListSize": info.wait_list_size,
        "parallelismMax": info.parallelism_max,
        "parallelismCount": info.parallelism_count,
        "rateMax": info.rate_max,
        "rateCount": info.rate_count,
        "ratePeriod": info.rate_period_secs,
        "ratePeriodStart": info.rate_period_start_secs,
        "isPaused": info.paused,
        "isPinnedParallelism": info.pinned_parallelism,
        "isPinnedRate": info.pinned_rate,
    })
}

/// Every key at once, within the listing budget: the user's keys are bounded in number and
/// length, and the answer is built only once its size is reserved.
async fn list(State(state): State<AppState>, caller: Caller, uri: Uri) -> ApiResult<Response> {
    let query = Query::parse(uri.query());
    let held = caller.budget(&state.api.listings).reserve(state.engine.flow_controls_bytes(&caller.user_id)).await;
    let infos = state.engine.flow_controls(&caller.user_id, query.single("search"));
    let array = views::json_array(infos.iter().map(flow_json));
    drop(infos);
    Ok(views::json_pieces(vec![array], held))
}

async fn get_one(State(state): State<AppState>, caller: Caller, PathParam(key): PathParam) -> ApiResult<Json<Value>> {
    Ok(Json(flow_json(&state.engine.flow_control(&caller.user_id, &key)?)))
}

async fn pause(State(state): State<AppState>, Writer(caller): Writer, PathParam(key): PathParam) -> ApiResult<()> {
    Ok(state.engine.set_flow_paused(&caller.user_id, &key, true).await?)
}

async fn resume(State(state): State<AppState>, Writer(caller): Writer, PathParam(key): PathParam) -> ApiResult<()> {
    Ok(state.engine.set_flow_paused(&caller.user_id, &key, false).await?)
}

fn positive(query: &Query, name: &str) -> ApiResult<Option<u64>> {
    query
        .single(name)
        .filter(|value| !value.trim().is_empty())
        .map(|value| {
            value
                .trim()
                .parse::<u64>()
                .ok()
                .filter(|n| *n > 0 && *n <= u64::from(u32::MAX))
                .ok_or_else(|| ApiError::bad_request(format!("{name} must be a positive integer, got {value:?}")))
        })
        .transpose()
}

async fn pin(
    State(state): State<AppState>,
    Writer(caller): Writer,
    PathParam(key): PathParam,
    uri: Uri,
) -> ApiResult<()> {
    let query = Query::parse(uri.query());
    query.only(&[&["parallelism", "rate", "period"]])?;
    let pin = FlowPin {
        parallelism: positive(&query, "parallelism")?.map(|n| n as u32),
        rate: positive(&query, "rate")?.map(|n| n as u32),
        period_secs: positive(&query, "period")?,
    };
    if pin == FlowPin::default() {
        return Err(ApiError::bad_request("give at least one of parallelism, rate and period to pin"));
    }
    Ok(state.engine.pin_flow(&caller.user_id, &key, pin).await?)
}

async fn unpin(
    State(state): State<AppState>,
    Writer(caller): Writer,
    PathParam(key): PathParam,
    uri: Uri,
) -> ApiResult<()> {
    let query = Query::parse(uri.query());
    query.only(&[&["parallelism", "rate"]])?;
    let flag = |name: &str| -> ApiResult<bool> {
        match query.single(name) {
            None => Ok(false),
            Some(value) => parse_bool(value)
                .ok_or_else(|| ApiError::bad_request(format!("{name} must be true or false, got {value:?}"))),
        }
    };
    Ok(state.engine.unpin_flow(&caller.user_id, &key, flag("parallelism")?, flag("rate")?).await?)
}

async fn reset_rate(State(state): State<AppState>, Writer(caller): Writer, PathParam(key): PathParam) -> ApiResult<()> {
    Ok(state.engine.reset_flow_rate(&caller.user_id, &key).await?)
}

async fn global(State(state): State<AppState>, caller: Caller) -> Json<Value> {
    let (max, count) = state.engine.global_parallelism(&caller.user_id);
    Json(json!({ "parallelismMax": max, "parallelismCount": count }))
}
