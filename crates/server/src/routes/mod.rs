//! The HTTP API: one module per resource, each with its routes next to its handlers, merged
//! here behind a path normaliser and JSON fallbacks.

mod batch;
mod batch_items;
mod dlq;
mod flow;
mod header_json;
mod keys;
mod logs;
mod messages;
pub(crate) mod publish;
mod queues;
mod schedules;
mod topics;
mod trigger;
mod workflow_dlq;
mod workflow_events;
mod workflows;

use crate::AppState;
use crate::error::ApiError;
use axum::extract::Request;
use axum::http::{Method, Uri};
use axum::routing::get;
use axum::{Extension, Router};

pub fn router(state: AppState) -> Router {
    Router::new()
        .merge(publish::routes())
        .merge(batch::routes())
        .merge(messages::routes())
        .merge(dlq::routes())
        .merge(logs::routes())
        .merge(keys::routes())
        .merge(queues::routes())
        .merge(topics::routes())
        .merge(flow::routes())
        .merge(schedules::routes())
        .merge(workflows::routes())
        .merge(workflow_events::routes())
        .merge(trigger::routes())
        .merge(workflow_dlq::routes())
        .route("/healthz", get(|| async { axum::Json(serde_json::json!({ "status": "ok" })) }))
        .fallback(|method: Method, uri: Uri, requested: Option<Extension<RequestedPath>>| async move {
            let path = requested.map_or_else(|| uri.path().to_string(), |Extension(RequestedPath(path))| path);
            ApiError::not_found(format!("no such endpoint: {method} {path}"))
        })
        .method_not_allowed_fallback(|method: Method, uri: Uri| async move {
            ApiError::new(
                axum::http::StatusCode::METHOD_NOT_ALLOWED,
                format!("method {method} is not allowed on {}", uri.path()),
            )
        })
        .with_state(state)
}

/// The resource segments of `/v2/<resource>`, in their canonical spelling. Clients may send
/// any case (the Go SDK calls `/v2/Schedules/`).
const RESOURCES: &[&str] = &[
    "publish",
    "enqueue",
    "batch",
    "messages",
    "message",
    "queues",
    "schedules",
    "topics",
    "dlq",
    "logs",
    "events",
    "flowControl",
    "globalParallelism",
    "keys",
    "rotate",
    "workflows",
    "wait",
    "notify",
    "waiters",
    "trigger",
];

/// Other names of a resource: the docs' text calls URL groups `url-groups` and `urlgroups`
/// (spec §3 lets the server accept both for `topics`).
const ALIASES: &[(&str, &str)] = &[("url-groups", "topics"), ("urlgroups", "topics")];

/// The path as the client sent it, for error messages after [`normalize_path`].
#[derive(Debug, Clone)]
pub struct RequestedPath(pub String);

/// Where a request outside the configured prefix is sent: a path no route matches.
const OUTSIDE_PREFIX: &str = "/-outside-the-path-prefix-";

/// Strips the configured path prefix and canonicalises the case of `/v2/<resource>`, leaving
/// the rest of the raw path (destinations, ids) untouched. Runs before routing. With a prefix,
/// only `/healthz` is served outside it.
pub fn normalize_path(prefix: &str, mut request: Request) -> Request {
    let uri = request.uri().clone();
    request.extensions_mut().insert(RequestedPath(uri.path().to_string()));
    let path = match prefix.trim_end_matches('/') {
        "" => uri.path(),
        prefix => match uri.path().strip_prefix(prefix) {
            Some(rest) if rest.is_empty() || rest.starts_with('/') => rest,
            _ if uri.path() == "/healthz" => return request,
            _ => OUTSIDE_PREFIX,
        },
    };
    let mut rewritten = canonical_path(path);
    if let Some(query) = uri.query() {
        rewritten.push('?');
        rewritten.push_str(query);
    }
    if let Ok(new_uri) = rewritten.parse::<Uri>() {
        *request.uri_mut() = new_uri;
    }
    request
}

fn canonical_path(path: &str) -> String {
    let mut parts = path.splitn(4, '/');
    let (Some(""), Some(version), Some(resource)) = (parts.next(), parts.next(), parts.next()) else {
        return path.to_string();
    };
    if !version.eq_ignore_ascii_case("v2") {
        return path.to_string();
    }
    let resource = RESOURCES
        .iter()
        .find(|known| known.eq_ignore_ascii_case(resource))
        .copied()
        .or_else(|| {
            ALIASES.iter().find(|(alias, _)| alias.eq_ignore_ascii_case(resource)).map(|(_, canonical)| *canonical)
        })
        .unwrap_or(resource);
    match parts.next() {
        Some(rest) => format!("/v2/{resource}/{rest}"),
        None => format!("/v2/{resource}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonicalises_only_the_resource_segment() {
        assert_eq!(canonical_path("/V2/Schedules/scd_AbC"), "/v2/schedules/scd_AbC");
        assert_eq!(canonical_path("/v2/FLOWCONTROL/Key"), "/v2/flowControl/Key");
        assert_eq!(canonical_path("/v2/Publish/https://Example.com//A"), "/v2/publish/https://Example.com//A");
        assert_eq!(canonical_path("/v2/messages/"), "/v2/messages/");
        assert_eq!(canonical_path("/v2/url-groups/g/endpoints"), "/v2/topics/g/endpoints");
        assert_eq!(canonical_path("/v2/UrlGroups"), "/v2/topics");
        assert_eq!(canonical_path("/healthz"), "/healthz");
    }

    #[test]
    fn strips_the_prefix_and_keeps_the_query() {
        let request = Request::builder().uri("/qstash/v2/DLQ?count=5").body(axum::body::Body::empty()).unwrap();
        assert_eq!(normalize_path("/qstash/", request).uri(), "/v2/dlq?count=5");
        let request = Request::builder().uri("/v2/dlq").body(axum::body::Body::empty()).unwrap();
        assert_eq!(normalize_path("/qstash", request).uri(), OUTSIDE_PREFIX, "outside the prefix nothing is served");
        let request = Request::builder().uri("/healthz").body(axum::body::Body::empty()).unwrap();
        assert_eq!(normalize_path("/qstash", request).uri(), "/healthz");
    }
}
