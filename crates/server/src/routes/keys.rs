//! Signing keys (spec §5.11): get, and rotate on both paths the SDKs use. The keys are secrets
//! (whoever holds them can sign requests to the user's receivers), so reading them takes the
//! full token, like rotating them.

use crate::AppState;
use crate::error::ApiResult;
use crate::extract::Writer;
use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};
use tern_engine::SigningKeys;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v2/keys", get(get_keys))
        .route("/v2/keys/rotate", post(rotate_keys))
        .route("/v2/rotate", post(rotate_keys))
}

fn keys_json(keys: &SigningKeys) -> Json<Value> {
    Json(json!({ "current": keys.current, "next": keys.next }))
}

async fn get_keys(State(state): State<AppState>, Writer(caller): Writer) -> ApiResult<Json<Value>> {
    Ok(keys_json(&state.engine.signing_keys(&caller.user_id)?))
}

async fn rotate_keys(State(state): State<AppState>, Writer(caller): Writer) -> ApiResult<Json<Value>> {
    Ok(keys_json(&state.engine.rotate_signing_keys(&caller.user_id).await?))
}
