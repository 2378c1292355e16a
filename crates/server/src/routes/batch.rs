//! `POST /v2/batch` (spec §5.3): many publishes in one request, validated together and stored in
//! one commit. The request is parsed into items without copying their bodies (`batch_items`);
//! the items then become publish requests one after another, each item's headers read only
//! then (`header_json`).
//!
//! What a batch expands into is counted as it is built, and the batch is refused (413) as soon
//! as it passes a limit, before the rest is built: the messages it creates
//! (`limits.max_batch_messages`, a URL group's endpoints counted), and what those messages hold
//! of URLs and header lines (`limits.max_batch_bytes`). A URL group is read once per batch and
//! shared by the items naming it; its endpoints and default headers are counted once as read,
//! then again for each message made from them, since each message keeps its own URL and
//! headers. Without this, a small batch naming a large group thousands of times would build
//! copies of it by the gigabyte before any count refused it.

use super::batch_items::{self, BatchItem, BatchLimits};
use super::{header_json, publish};
use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::{BatchBody, Caller, CallerIp, Writer};
use crate::views;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::post;
use serde_json::Value;
use std::collections::HashMap;
use tern_core::destination::{Destination, Target, parse_target};
use tern_core::{HeaderList, PublishOptions, sizes};
use tern_engine::{PublishRequest, Recipients, too_many_batch_messages};

pub fn routes() -> Router<AppState> {
    Router::new().route("/v2/batch", post(batch))
}

async fn batch(
    State(state): State<AppState>,
    Writer(caller): Writer,
    CallerIp(caller_ip): CallerIp,
    BatchBody(raw, _held): BatchBody,
) -> ApiResult<Response> {
    let config = state.engine.config();
    let limits = BatchLimits { max_items: config.max_batch_messages, max_body_bytes: state.api.max_body_bytes };
    let items = batch_items::parse(&raw, limits)?;
    let mut expansion = Expansion {
        groups: HashMap::new(),
        messages: 0,
        bytes: 0,
        max_messages: config.max_batch_messages,
        max_bytes: state.api.max_batch_bytes,
        max_header_bytes: config.limits.max_header_bytes,
    };
    let mut requests = Vec::with_capacity(items.len());
    for (index, item) in items.into_iter().enumerate() {
        // The item's error keeps its status (an unknown URL group is a 404, as for a publish).
        let item_error =
            |error: ApiError| ApiError::new(error.status, format!("batch item {index}: {}", error.message));
        let request = expansion.request(&state, &caller, item, caller_ip.clone(), item_error).await?;
        requests.push(request);
    }
    // The answer (one `{messageId, url}` per message) is reserved before anything is stored, so
    // that a batch waiting for room holds no built answer; it stays reserved until it is sent.
    let answer: usize = requests.iter().map(|request| publish::answer_bytes(&request.recipients)).sum();
    let held = caller.budget(&state.api.listings).reserve(answer).await;
    let results = state.engine.publish_batch(&caller.user_id, requests).await?;
    let json = serde_json::to_vec(&Value::Array(results.iter().map(publish::published_json).collect()))
        .expect("a JSON value serialises");
    Ok(views::json_pieces(vec![json.into()], held))
}

/// Memory one header line takes beyond its name and value: the two strings' own fields.
const LINE_BYTES: usize = std::mem::size_of::<(String, String)>();

/// What the batch built so far holds, and the URL groups it read.
struct Expansion {
    groups: HashMap<String, Recipients>,
    messages: usize,
    bytes: usize,
    max_messages: usize,
    max_bytes: usize,
    max_header_bytes: usize,
}

impl Expansion {
    /// The publish request of `item`, counted against the batch's limits. Errors of the item
    /// itself go through `item_error`; a limit passed is the batch's.
    async fn request(
        &mut self,
        state: &AppState,
        caller: &Caller,
        item: BatchItem,
        caller_ip: Option<String>,
        item_error: impl Fn(ApiError) -> ApiError,
    ) -> ApiResult<PublishRequest> {
        let (path, query) = match item.destination.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (item.destination.as_str(), None),
        };
        let Target { destination, query_options } = parse_target(path, query).map_err(|e| item_error(e.into()))?;
        let recipients = self.recipients(state, caller, destination).await.map_err(&item_error)?;
        self.messages += message_count(&recipients);
        if self.messages > self.max_messages {
            return Err(too_many_batch_messages(self.max_messages).into());
        }
        let mut pairs = match &item.headers {
            Some(raw) => header_json::parse(raw, self.max_header_bytes).map_err(&item_error)?,
            None => HeaderList::new(),
        };
        pairs.add_defaults(&HeaderList(query_options));
        let queue = item.queue.filter(|queue| !queue.is_empty());
        let request = PublishRequest::from_headers(recipients, pairs, true, item.body, caller_ip, queue)
            .map_err(|e| item_error(e.into()))?;
        self.count_bytes(message_bytes(&request.recipients, &request.options))?;
        Ok(request)
    }

    /// Who `destination` reaches; a URL group is read at its first mention only (and counted
    /// then), so that every item naming it shares one copy.
    async fn recipients(
        &mut self,
        state: &AppState,
        caller: &Caller,
        destination: Destination,
    ) -> ApiResult<Recipients> {
        let Destination::UrlGroup(name) = &destination else {
            return Ok(state.engine.recipients(&caller.user_id, destination).await?);
        };
        if let Some(recipients) = self.groups.get(name) {
            return Ok(recipients.clone());
        }
        let name = name.clone();
        let recipients = state.engine.recipients(&caller.user_id, destination).await?;
        if let Recipients::UrlGroup(group) = &recipients {
            let endpoints: usize =
                group.endpoints.iter().map(|e| e.url.len() + e.name.as_ref().map_or(0, String::len)).sum();
            let defaults: usize =
                group.default_headers.iter().map(|(name, value)| name.len() + value.len() + LINE_BYTES).sum();
            self.count_bytes(endpoints + defaults)?;
        }
        self.groups.insert(name, recipients.clone());
        Ok(recipients)
    }

    fn count_bytes(&mut self, bytes: usize) -> ApiResult<()> {
        self.bytes = self.bytes.saturating_add(bytes);
        if self.bytes > self.max_bytes {
            let message = format!(
                "a batch's messages may hold at most {} bytes of URLs and headers (a URL group's counted for each of its messages)",
                self.max_bytes
            );
            return Err(ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, message));
        }
        Ok(())
    }
}

/// What the messages of one request hold of URLs and header lines: each its URL and a copy of
/// the options' lines (the request's own options, held until the batch is stored, are about one
/// more copy for a URL and a fraction of a group's).
fn message_bytes(recipients: &Recipients, options: &PublishOptions) -> usize {
    let lines = sizes::kept_header_bytes(options) + sizes::kept_header_lines(options) * LINE_BYTES;
    let callbacks = [&options.callback, &options.failure_callback]
        .iter()
        .filter_map(|url| url.as_ref())
        .map(String::len)
        .sum::<usize>();
    let per_message = lines + callbacks;
    let urls: usize = match recipients {
        Recipients::Url(url) => url.len(),
        Recipients::UrlGroup(group) => group.endpoints.iter().map(|endpoint| endpoint.url.len()).sum(),
    };
    per_message.saturating_mul(message_count(recipients)).saturating_add(urls)
}

/// The messages a request to `recipients` creates.
fn message_count(recipients: &Recipients) -> usize {
    match recipients {
        Recipients::Url(_) => 1,
        Recipients::UrlGroup(group) => group.endpoints.len(),
    }
}
