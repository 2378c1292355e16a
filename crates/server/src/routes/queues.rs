//! FIFO queues (spec §5.5): upsert, list, get, delete, pause and resume.

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Caller, JsonBody, PathParam, Writer};
use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use tern_engine::QueueView;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v2/queues", get(list).post(upsert))
        .route("/v2/queues/", get(list).post(upsert))
        .route("/v2/queues/{name}", get(get_one).delete(delete_one))
        .route("/v2/queues/{name}/pause", post(pause))
        .route("/v2/queues/{name}/resume", post(resume))
}

pub fn queue_json(view: &QueueView) -> Value {
    json!({
        "name": view.record.name,
        "parallelism": view.record.parallelism,
        "lag": view.lag,
        "paused": view.record.paused,
        "createdAt": view.record.created_at,
        "updatedAt": view.record.updated_at,
    })
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct UpsertBody {
    queue_name: Option<String>,
    parallelism: Option<u32>,
    paused: Option<bool>,
}

async fn upsert(
    State(state): State<AppState>,
    Writer(caller): Writer,
    JsonBody(body, _held): JsonBody<UpsertBody>,
) -> ApiResult<()> {
    let name = body
        .queue_name
        .filter(|name| !name.is_empty())
        .ok_or_else(|| ApiError::bad_request("queueName is required"))?;
    let parallelism = body.parallelism.unwrap_or(1);
    state.engine.upsert_queue(&caller.user_id, &name, parallelism, body.paused.unwrap_or(false)).await?;
    Ok(())
}

async fn list(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Value>> {
    let queues = state.engine.queues(&caller.user_id).await?;
    Ok(Json(Value::Array(queues.iter().map(queue_json).collect())))
}

async fn get_one(State(state): State<AppState>, caller: Caller, PathParam(name): PathParam) -> ApiResult<Json<Value>> {
    Ok(Json(queue_json(&state.engine.queue(&caller.user_id, &name).await?)))
}

async fn delete_one(
    State(state): State<AppState>,
    Writer(caller): Writer,
    PathParam(name): PathParam,
) -> ApiResult<()> {
    state.engine.delete_queue(&caller.user_id, &name).await?;
    Ok(())
}

async fn pause(State(state): State<AppState>, Writer(caller): Writer, PathParam(name): PathParam) -> ApiResult<()> {
    state.engine.set_queue_paused(&caller.user_id, &name, true).await?;
    Ok(())
}

async fn resume(State(state): State<AppState>, Writer(caller): Writer, PathParam(name): PathParam) -> ApiResult<()> {
    state.engine.set_queue_paused(&caller.user_id, &name, false).await?;
    Ok(())
}
