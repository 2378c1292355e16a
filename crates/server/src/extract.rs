//! Request extractors: who is calling (token → user, read-only or not), from which IP, and
//! bodies read within the configured limit, with QStash-shaped rejections. A body is read
//! only once its bytes are reserved in the request-body budget (`budget`), which the handler
//! holds until it returns; the caller is known by then (the body extractor runs last).

use crate::AppState;
use crate::budget::{ByteBudget, Reservation, UserBudget};
use crate::error::ApiError;
use crate::listener::WaitOnClient;
use axum::body::Bytes;
use axum::body::HttpBody;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::header::CONNECTION;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use bytes::BytesMut;
use http_body_util::BodyExt;
use serde::de::DeserializeOwned;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

/// Tokens of the configured users.
#[derive(Default)]
pub struct Users {
    by_token: HashMap<String, (Arc<str>, bool)>,
    /// Users by the id a webhook URL names (see [`HookCaller`]).
    by_hook_id: HashMap<String, Arc<str>>,
}

/// Shows how many tokens there are, never one of them.
impl std::fmt::Debug for Users {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Users").field("tokens", &self.by_token.len()).finish()
    }
}

impl Users {
    pub fn new(users: &[crate::config::UserConfig]) -> Self {
        let mut by_token = HashMap::new();
        let mut by_hook_id = HashMap::new();
        for user in users {
            let id: Arc<str> = Arc::from(user.id.as_str());
            by_token.insert(user.token.clone(), (Arc::clone(&id), false));
            by_hook_id.insert(user.id.clone(), Arc::clone(&id));
            if let Some(token_id) = token_user_id(&user.token) {
                by_hook_id.insert(token_id, Arc::clone(&id));
            }
            if let Some(readonly) = &user.readonly_token {
                by_token.insert(readonly.clone(), (id, true));
            }
        }
        Users { by_token, by_hook_id }
    }
}

/// The `UserID` of a token shaped like QStash's (base64 of `{"UserID": …, "Password": …}`),
/// which the Workflow SDK puts in the webhook URLs it makes.
pub fn token_user_id(token: &str) -> Option<String> {
    use base64::Engine as _;
    let decoded = base64::engine::general_purpose::STANDARD.decode(token.trim()).ok()?;
    let value: serde_json::Value = serde_json::from_slice(&decoded).ok()?;
    value.get("UserID")?.as_str().map(str::to_string)
}

/// The user a workflow webhook URL (`/v2/workflows/hooks/{user}/{run}/{event}`) names: such a
/// URL is called by third parties without a token, so the URL itself (with the run's id and a
/// random event id in it) is what admits the call.
#[derive(Debug, Clone)]
pub struct HookCaller(pub Caller);

impl FromRequestParts<AppState> for HookCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let named = parts.uri.path().strip_prefix("/v2/workflows/hooks/").and_then(|rest| rest.split('/').next());
        let user_id = named
            .and_then(|id| state.users.by_hook_id.get(id))
            .cloned()
            .ok_or_else(|| ApiError::not_found("no such webhook"))?;
        let waits = parts.extensions.get::<WaitOnClient>().cloned();
        let caller = Caller { user_id, read_only: false, token_in_authorization: false, waits };
        parts.extensions.insert(caller.clone());
        Ok(HookCaller(caller))
    }
}

/// An authenticated caller (spec §1): `Authorization: Bearer <token>` or `?qstash_token=`.
#[derive(Debug, Clone)]
pub struct Caller {
    pub user_id: Arc<str>,
    pub read_only: bool,
    /// Whether the token came in the `Authorization` header (which is then never forwarded).
    pub token_in_authorization: bool,
    /// Tells the connection when the request waits on its user's own share of a budget.
    waits: Option<WaitOnClient>,
}

impl Caller {
    /// `budget` as this caller reserves from it.
    pub fn budget(&self, budget: &ByteBudget) -> UserBudget {
        budget.for_user(&self.user_id, self.waits.clone())
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        // A webhook sender may carry its own Authorization header and put the QStash token in
        // the query, so the first candidate that names a user wins.
        let header = parts.headers.get(axum::http::header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        let bearer = header.and_then(|value| {
            let (scheme, token) = value.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim().to_string())
        });
        let query = parts.uri.query().unwrap_or_default();
        let query_token = url::form_urlencoded::parse(query.as_bytes())
            .find(|(key, _)| key == "qstash_token")
            .map(|(_, value)| value.into_owned());
        if bearer.is_none() && query_token.is_none() {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "missing token: send Authorization: Bearer <QSTASH_TOKEN>",
            ));
        }
        let ((user_id, read_only), token_in_authorization) = [(bearer, true), (query_token, false)]
            .into_iter()
            .find_map(|(token, in_header)| Some((state.users.by_token.get(&token?)?.clone(), in_header)))
            .ok_or_else(|| ApiError::new(StatusCode::UNAUTHORIZED, "invalid token"))?;
        let waits = parts.extensions.get::<WaitOnClient>().cloned();
        let caller = Caller { user_id, read_only, token_in_authorization, waits };
        // For the body extractor, which reserves the body's bytes in the caller's name.
        parts.extensions.insert(caller.clone());
        Ok(caller)
    }
}

/// A caller with the full token, which changing anything and reading secrets (the signing keys)
/// need: read-only tokens get 403.
#[derive(Debug, Clone)]
pub struct Writer(pub Caller);

impl FromRequestParts<AppState> for Writer {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let caller = Caller::from_request_parts(parts, state).await?;
        if caller.read_only {
            return Err(ApiError::new(StatusCode::FORBIDDEN, "this token is read-only"));
        }
        Ok(Writer(caller))
    }
}

/// The publisher's IP: the peer address, or the last `X-Forwarded-For` entry when the
/// operator trusts a proxy — the one that proxy appended; entries before it are whatever the
/// client sent.
#[derive(Debug, Clone)]
pub struct CallerIp(pub Option<String>);

impl FromRequestParts<AppState> for CallerIp {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if state.api.trust_forwarded_for
            // A proxy may append its own header line instead of extending the client's.
            && let Some(forwarded) = parts.headers.get_all("x-forwarded-for").iter().next_back().and_then(|v| v.to_str().ok())
            && let Some(last) = forwarded.rsplit(',').map(str::trim).find(|ip| !ip.is_empty())
        {
            return Ok(CallerIp(Some(last.to_string())));
        }
        let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|info| info.0.ip().to_string());
        Ok(CallerIp(peer))
    }
}

/// The request body, at most `max_body_bytes` (413 beyond), arrived within
/// `request_body_timeout` (408 beyond), and its place in the request-body budget (hold it
/// until the body is no longer needed).
pub struct Body(pub Bytes, pub Reservation);

impl FromRequest<AppState> for Body {
    type Rejection = Response;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Response> {
        let (bytes, held) = read_body(request, state, state.api.max_body_bytes).await?;
        Ok(Body(bytes, held))
    }
}

/// A batch's raw JSON body, at most `max_batch_bytes` (413 beyond): a batch carries many
/// messages, each of whose bodies is held to `max_body_bytes` on its own. The handler parses
/// it (the messages' bodies then share its buffer).
pub struct BatchBody(pub Bytes, pub Reservation);

impl FromRequest<AppState> for BatchBody {
    type Rejection = Response;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Response> {
        let (bytes, held) = read_body(request, state, state.api.max_batch_bytes).await?;
        Ok(BatchBody(bytes, held))
    }
}

/// Reads a whole body of at most `limit` bytes within the request-body timeout, once its
/// length (or, not known in advance, `limit`) is reserved in the caller's name in the
/// request-body budget; the wait for room is not counted against the timeout.
async fn read_body(request: Request, state: &AppState, limit: usize) -> Result<(Bytes, Reservation), Response> {
    let timeout = state.api.request_body_timeout;
    // Every route with a body names its caller first; a nameless one would share one name.
    let budget = match request.extensions().get::<Caller>() {
        Some(caller) => caller.budget(&state.api.request_bodies),
        None => state.api.request_bodies.for_user(&Arc::from(""), None),
    };
    let mut body = request.into_body();
    let expected = body.size_hint().exact().map_or(limit, |length| usize::try_from(length).unwrap_or(usize::MAX));
    if expected > limit {
        return Err(too_large(body, tokio::time::Instant::now() + timeout, limit));
    }
    let mut held = budget.reserve(expected).await;
    let deadline = tokio::time::Instant::now() + timeout;
    match tokio::time::timeout_at(deadline, read_limited(&mut body, limit)).await {
        Ok(Ok(Some(bytes))) => {
            held.shrink_to(bytes.len());
            Ok((bytes, held))
        }
        Ok(Ok(None)) => Err(too_large(body, deadline, limit)),
        Ok(Err(error)) => {
            Err(ApiError::bad_request(format!("could not read the request body: {error}")).into_response())
        }
        Err(_elapsed) => {
            let message = format!("the request body did not arrive within {} s", timeout.as_secs_f64());
            Err(([(CONNECTION, "close")], ApiError::new(StatusCode::REQUEST_TIMEOUT, message)).into_response())
        }
    }
}

/// The 413 for a body beyond `limit`. The rest is read and dropped while the answer goes out
/// (until the body's deadline): a client still sending when the connection closed would get a
/// broken pipe instead of the 413.
fn too_large(body: axum::body::Body, deadline: tokio::time::Instant, limit: usize) -> Response {
    tokio::spawn(drain(body, deadline));
    ([(CONNECTION, "close")], ApiError::too_large(limit)).into_response()
}

/// Reads `body` to its end or until `deadline`, keeping nothing.
async fn drain(mut body: axum::body::Body, deadline: tokio::time::Instant) {
    let _ = tokio::time::timeout_at(deadline, async { while let Some(Ok(_)) = body.frame().await {} }).await;
}

/// The body, or `None` as soon as it is known to be longer than `limit` bytes.
async fn read_limited(body: &mut axum::body::Body, limit: usize) -> Result<Option<Bytes>, axum::Error> {
    if body.size_hint().lower() > limit as u64 {
        return Ok(None);
    }
    // Sized once when the length is known: growing by doubling would take up to twice the body.
    let mut bytes = BytesMut::with_capacity(body.size_hint().exact().map_or(0, |length| length as usize));
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            if bytes.len() + data.len() > limit {
                return Ok(None);
            }
            bytes.extend_from_slice(&data);
        }
    }
    Ok(Some(bytes.freeze()))
}

/// JSON whatever the `Content-Type`; an empty body is `T::default()`.
fn parse_json<T: DeserializeOwned + Default>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(bytes).map_err(|error| ApiError::bad_request(format!("invalid JSON body: {error}")))
}

/// A JSON body, parsed whatever the `Content-Type`; an empty body is `T::default()`. The body's
/// place in the request-body budget is held while the value lives.
pub struct JsonBody<T>(pub T, pub Reservation);

impl<T: DeserializeOwned + Default> FromRequest<AppState> for JsonBody<T> {
    type Rejection = Response;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Response> {
        let (bytes, held) = read_body(request, state, state.api.max_body_bytes).await?;
        parse_json(&bytes).map(|value| JsonBody(value, held)).map_err(IntoResponse::into_response)
    }
}

/// Deserialises a field that is `Some` whenever the key is present, even with `null`
/// (use with `#[serde(default)]`, so that an absent key stays `None`).
pub fn present<'de, D: serde::Deserializer<'de>, T: serde::Deserialize<'de>>(
    deserializer: D,
) -> Result<Option<T>, D::Error> {
    T::deserialize(deserializer).map(Some)
}

/// A single path parameter, with a QStash-shaped rejection (axum's own is plain text), e.g.
/// for a name whose percent-encoding is not UTF-8.
pub struct PathParam(pub String);

impl<S: Send + Sync> FromRequestParts<S> for PathParam {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let axum::extract::Path(value) = axum::extract::Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|rejection| ApiError::bad_request(format!("invalid path: {}", rejection.body_text())))?;
        no_nul(&value)?;
        Ok(PathParam(value))
    }
}

/// A percent-decoded path parameter holding a NUL character names nothing: refused here, for
/// every backend alike (PostgreSQL cannot even compare such text).
fn no_nul(value: &str) -> Result<(), ApiError> {
    match value.contains('\0') {
        true => Err(ApiError::bad_request("invalid path: a path parameter contains a NUL character (%00)")),
        false => Ok(()),
    }
}

/// Several path parameters, with a QStash-shaped rejection (see [`PathParam`]).
pub struct PathParams<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned + Send> FromRequestParts<S> for PathParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let raw = axum::extract::RawPathParams::from_request_parts(parts, state)
            .await
            .map_err(|rejection| ApiError::bad_request(format!("invalid path: {}", rejection.body_text())))?;
        for (_, value) in &raw {
            no_nul(value)?;
        }
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(value)| PathParams(value))
            .map_err(|rejection| ApiError::bad_request(format!("invalid path: {}", rejection.body_text())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_hides_the_tokens() {
        let users = Users::new(&crate::dev::dev_users());
        let printed = format!("{users:?}");
        for user in crate::dev::dev_users() {
            assert!(!printed.contains(&user.token), "{printed}");
        }
    }
}
