//! `POST /v2/publish/{destination}` (spec §5.1): the destination is the raw path after the
//! prefix with the request's query re-attached; configuration comes from headers and, in
//! webhook mode, `upstash-*` query keys (a header wins over the same key).

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Body, CallerIp, Writer};
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::json;
use tern_core::PublishOptions;
use tern_core::destination::parse_target;
use tern_engine::{PublishRequest, Published};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v2/publish", post(empty_destination))
        .route("/v2/publish/", post(empty_destination))
        .route("/v2/publish/{*destination}", post(publish))
}

async fn empty_destination(_writer: Writer) -> ApiError {
    ApiError::bad_request("a non-empty destination must be provided")
}

async fn publish(
    State(state): State<AppState>,
    Writer(caller): Writer,
    CallerIp(caller_ip): CallerIp,
    uri: Uri,
    headers: HeaderMap,
    Body(body): Body,
) -> ApiResult<Response> {
    let raw = uri.path().strip_prefix("/v2/publish/").unwrap_or_default();
    let target = parse_target(raw, uri.query())?;
    let options = publish_options(&headers, &target.query_options, caller.token_in_authorization)?;
    let request = PublishRequest { destination: target.destination, options, body, caller_ip };
    let published = state.engine.publish(&caller.user_id, request).await?;
    Ok(publish_response(&published))
}

/// Classifies request headers, plus webhook-mode query options, into publish options.
pub fn publish_options(
    headers: &HeaderMap,
    query_options: &[(String, String)],
    token_in_authorization: bool,
) -> ApiResult<PublishOptions> {
    let mut pairs = Vec::with_capacity(headers.len() + query_options.len());
    for (name, value) in headers {
        let value = std::str::from_utf8(value.as_bytes())
            .map_err(|_| ApiError::bad_request(format!("header {name} is not valid UTF-8")))?;
        pairs.push((name.as_str().to_string(), value.to_string()));
    }
    for (name, value) in query_options {
        if !headers.contains_key(name.as_str()) {
            pairs.push((name.clone(), value.clone()));
        }
    }
    Ok(PublishOptions::from_headers(
        pairs.iter().map(|(name, value)| (name.as_str(), value.as_str())),
        token_in_authorization,
    )?)
}

/// 200 with `{"messageId"}`, or 202 with `"deduplicated": true` for a duplicate.
fn publish_response(published: &[Published]) -> Response {
    let Some(first) = published.first() else {
        return ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "nothing was published").into_response();
    };
    let mut body = json!({ "messageId": first.message_id.to_string() });
    if first.deduplicated {
        body["deduplicated"] = json!(true);
        return (StatusCode::ACCEPTED, axum::Json(body)).into_response();
    }
    axum::Json(body).into_response()
}
