//! URL groups, called topics in the API (spec §5.7): endpoints added and removed, get, list,
//! delete, and default publish headers set by `PATCH` (the webhook guide's way to configure
//! senders that cannot set headers).

use super::header_json;
use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Body, Caller, JsonBody, PathParam, Writer};
use crate::{paging, views};
use axum::Router;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use tern_store::{Endpoint, PageRequest, UrlGroup};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v2/topics", get(list))
        .route("/v2/topics/", get(list))
        .route("/v2/topics/{name}", get(get_one).delete(delete_one).patch(set_headers))
        .route("/v2/topics/{name}/endpoints", post(add).delete(remove))
}

fn group_json(group: &UrlGroup) -> Value {
    let endpoints: Vec<Value> = group
        .endpoints
        .iter()
        .map(|endpoint| match &endpoint.name {
            Some(name) => json!({ "name": name, "url": endpoint.url }),
            None => json!({ "url": endpoint.url }),
        })
        .collect();
    let mut object = json!({ "name": group.name, "createdAt": group.created_at, "updatedAt": group.updated_at, "endpoints": endpoints });
    if !group.default_headers.is_empty() {
        object["headers"] = json!(group.default_headers.to_canonical_map());
    }
    object
}

#[derive(Debug, Deserialize)]
struct EndpointJson {
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    name: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct EndpointsBody {
    #[serde(default)]
    endpoints: Vec<EndpointJson>,
}

fn endpoints(body: EndpointsBody) -> Vec<Endpoint> {
    body.endpoints
        .into_iter()
        .map(|endpoint| Endpoint {
            url: endpoint.url.unwrap_or_default(),
            name: endpoint.name.filter(|name| !name.is_empty()),
        })
        .collect()
}

async fn add(
    State(state): State<AppState>,
    Writer(caller): Writer,
    PathParam(name): PathParam,
    JsonBody(body, _held): JsonBody<EndpointsBody>,
) -> ApiResult<()> {
    let endpoints = endpoints(body);
    if endpoints.iter().any(|endpoint| endpoint.url.is_empty()) {
        return Err(ApiError::bad_request("every endpoint needs a url"));
    }
    state.engine.add_endpoints(&caller.user_id, &name, endpoints).await?;
    Ok(())
}

async fn remove(
    State(state): State<AppState>,
    Writer(caller): Writer,
    PathParam(name): PathParam,
    JsonBody(body, _held): JsonBody<EndpointsBody>,
) -> ApiResult<()> {
    state.engine.remove_endpoints(&caller.user_id, &name, endpoints(body)).await?;
    Ok(())
}

/// Groups read per piece of the listing (a piece also ends at `limits.list_page_bytes`).
const GROUPS_PER_PIECE: usize = 64;

/// The whole list as one JSON array, streamed a piece at a time within the listing budget
/// (`paging::stream_array`), so memory holds one piece whatever the number and size of the
/// groups.
async fn list(State(state): State<AppState>, caller: Caller) -> ApiResult<Response> {
    let request = PageRequest { max_bytes: state.api.list_page_bytes, ..PageRequest::first(GROUPS_PER_PIECE) };
    let engine = state.engine.clone();
    let budget = caller.budget(&state.api.listings);
    let read = move |page: PageRequest| {
        let (engine, user_id) = (engine.clone(), caller.user_id.clone());
        async move { engine.url_groups(&user_id, &page).await }
    };
    let body = paging::stream_array(budget, request, read, group_json).await?;
    Ok(([(CONTENT_TYPE, "application/json")], body).into_response())
}

/// Read within the listing budget, as a page of one (`paging`): a group may take megabytes
/// (its endpoints' URLs and its default headers).
async fn get_one(State(state): State<AppState>, caller: Caller, PathParam(name): PathParam) -> ApiResult<Response> {
    let bytes = state.engine.url_group_bytes(&caller.user_id, &name).await?;
    let held = state.api.listings.reserve(&caller.user_id, bytes.saturating_mul(paging::RESERVED_PER_BYTE_READ)).await;
    let group = state.engine.url_group(&caller.user_id, &name).await?;
    let json = serde_json::to_vec(&group_json(&group)).expect("a JSON value serialises");
    Ok(views::json_pieces(vec![json.into()], held))
}

/// The body of `PATCH /v2/topics/{name}`; `headers` is read into lines by `header_json`.
#[derive(Debug, Deserialize)]
struct HeadersBody<'a> {
    #[serde(borrow)]
    headers: &'a RawValue,
}

/// `PATCH /v2/topics/{name}` with `{"headers": {name: value or [values]}}`: replaces the group's
/// default headers (`{}` clears them). Every line counts against `limits.max_header_bytes`, not
/// only those a message keeps: the group is read with every publish to it.
async fn set_headers(
    State(state): State<AppState>,
    Writer(caller): Writer,
    PathParam(name): PathParam,
    Body(raw, _held): Body,
) -> ApiResult<()> {
    let shape = || ApiError::bad_request("the body must be {\"headers\": {...}}");
    if raw.iter().all(u8::is_ascii_whitespace) {
        return Err(shape());
    }
    let body: Option<HeadersBody> =
        serde_json::from_slice(&raw).map_err(|error| ApiError::bad_request(format!("invalid JSON body: {error}")))?;
    let body = body.ok_or_else(shape)?;
    let max_header_bytes = state.engine.config().limits.max_header_bytes;
    let headers = header_json::parse(body.headers.get().as_bytes(), max_header_bytes)?;
    state.engine.set_url_group_headers(&caller.user_id, &name, headers).await?;
    Ok(())
}

async fn delete_one(
    State(state): State<AppState>,
    Writer(caller): Writer,
    PathParam(name): PathParam,
) -> ApiResult<()> {
    state.engine.delete_url_group(&caller.user_id, &name).await?;
    Ok(())
}
