//! Publishing: one request (or every item of a batch) becomes one message per destination
//! URL — one for a URL, one per endpoint for a URL group — stored durably in one commit.

use crate::error::{EngineError, Result};
use crate::{Engine, Shared};
use bytes::Bytes;
use std::collections::HashSet;
use std::sync::Arc;
use tern_core::dedup::{content_key, explicit_key};
use tern_core::destination::{Destination, validate_name};
use tern_core::{HeaderList, Invalid, MessageId, PublishOptions, sizes};
use tern_store::{DedupClaim, InsertOutcome, NewMessage, UrlGroup};

/// Where a publish goes, its URL group read once: the group's default headers and its
/// endpoints come from the same version of it. Shared, so that the items of a batch naming one
/// group hold one copy of it (a group may take megabytes: its endpoints' URLs and defaults).
#[derive(Debug, Clone)]
pub enum Recipients {
    Url(String),
    UrlGroup(Arc<UrlGroup>),
}

impl Recipients {
    /// Adds a URL group's default headers under a publish's own `headers`, before they are
    /// classified (`Upstash-Header-Forward` may be among them).
    pub fn add_defaults(&self, headers: &mut HeaderList) {
        if let Recipients::UrlGroup(group) = self {
            headers.add_defaults(&group.default_headers);
        }
    }
}

/// A validated publish, enqueue or batch item.
#[derive(Debug, Clone)]
pub struct PublishRequest {
    pub recipients: Recipients,
    pub options: PublishOptions,
    pub body: Bytes,
    pub caller_ip: Option<String>,
    /// Enqueue into this FIFO queue (created on first use).
    pub queue: Option<String>,
}

impl PublishRequest {
    /// The publish of `headers` to `recipients`: the one way from a request's headers to its
    /// configuration, for a client's publish, enqueue or batch item, a schedule's tick and the
    /// messages the engine publishes itself (a waiter's result, an invoked run's reply). A URL
    /// group's default headers apply under the publish's own (`Upstash-Header-Forward` may be
    /// among them); `authorization_is_token` says whether an `Authorization` header carried
    /// the QStash token, which is then never forwarded.
    pub fn from_headers(
        recipients: Recipients,
        mut headers: HeaderList,
        authorization_is_token: bool,
        body: Bytes,
        caller_ip: Option<String>,
        queue: Option<String>,
    ) -> Result<PublishRequest> {
        recipients.add_defaults(&mut headers);
        let options = PublishOptions::from_headers(headers.iter(), authorization_is_token)?;
        Ok(PublishRequest { recipients, options, body, caller_ip, queue })
    }
}

/// One message a publish created, or the earlier one it duplicated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub message_id: MessageId,
    pub url: String,
    pub deduplicated: bool,
}

/// The messages of one request; `fan_out` when it went to a URL group (answered as an array).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishResult {
    pub fan_out: bool,
    pub messages: Vec<Published>,
    /// When the messages were created (a workflow run an Init starts is created then too).
    pub created_at: i64,
}

impl Engine {
    /// Who a publish to `destination` reaches: its URL, or its URL group as stored now (404
    /// when there is none).
    pub async fn recipients(&self, user_id: &str, destination: Destination) -> Result<Recipients> {
        recipients(&self.shared, user_id, destination, ReadFor::Client).await
    }

    /// Stores the message(s) of a publish durably; returns once they survive a crash.
    pub async fn publish(&self, user_id: &str, request: PublishRequest) -> Result<PublishResult> {
        let mut results = self.store_all(user_id, vec![request]).await.map_err(|(_, error)| error)?;
        Ok(results.remove(0))
    }

    /// Validates every request first, then stores all their messages in one commit: an
    /// invalid item means nothing is stored. The error names the item (`batch item <i>: …`)
    /// and keeps its kind (an unknown URL group is a 404, as for a publish).
    pub async fn publish_batch(&self, user_id: &str, requests: Vec<PublishRequest>) -> Result<Vec<PublishResult>> {
        self.store_all(user_id, requests).await.map_err(|(index, error)| {
            let Some(index) = index else { return error };
            match error {
                EngineError::Invalid(Invalid(message)) => Invalid::new(format!("batch item {index}: {message}")).into(),
                EngineError::NotFound(message) => EngineError::NotFound(format!("batch item {index}: {message}")),
                EngineError::LimitExceeded(message) => {
                    EngineError::LimitExceeded(format!("batch item {index}: {message}"))
                }
                EngineError::TooLarge(message) => EngineError::TooLarge(format!("batch item {index}: {message}")),
                other => other,
            }
        })
    }

    /// Validates and stores; a validation error comes with the index of its request.
    async fn store_all(
        &self,
        user_id: &str,
        requests: Vec<PublishRequest>,
    ) -> Result<Vec<PublishResult>, (Option<usize>, EngineError)> {
        let now = self.shared.clock.now_ms();
        let mut created = NewResources::default();
        let mut plans = Vec::with_capacity(requests.len());
        let mut count = 0;
        let max = self.shared.config.max_batch_messages;
        let single = requests.len() == 1;
        for (index, request) in requests.into_iter().enumerate() {
            let plan = prepare(&self.shared, user_id, request, now, &mut created)
                .await
                .map_err(|error| (Some(index), error))?;
            // A publish is bounded by its URL group's size; a batch by this.
            count += plan.1.len();
            if count > max && !single {
                return Err((None, too_many_batch_messages(max)));
            }
            plans.push(plan);
        }
        let mut summaries = Vec::with_capacity(plans.len());
        let mut messages = Vec::new();
        for (fan_out, plan) in plans {
            summaries.push((fan_out, plan.iter().map(|m| (m.id, m.spec.url.clone())).collect::<Vec<_>>()));
            messages.extend(plan);
        }
        let runs: Vec<Option<String>> =
            messages.iter().map(|m| m.spec.workflow.as_ref().map(|link| link.run_id.clone())).collect();
        let outcomes = self.shared.store.insert_messages(messages).await.map_err(|error| (None, error.into()))?;
        // A message its run refuses refuses the whole publish or batch: the store stored none.
        if let Some(index) = outcomes.iter().position(|outcome| outcome.refuses_insert()) {
            let run_id = runs[index].as_deref().unwrap_or_default();
            return Err((None, crate::workflows::refusal(outcomes[index], run_id, &self.shared.config)));
        }
        let mut outcomes = outcomes.into_iter();
        create_flow_keys(&self.shared, user_id, &created);
        let results = summaries
            .into_iter()
            .map(|(fan_out, targets)| PublishResult {
                fan_out,
                created_at: now,
                messages: targets
                    .into_iter()
                    .map(|(id, url)| match outcomes.next() {
                        Some(InsertOutcome::Duplicate(existing)) => {
                            Published { message_id: existing, url, deduplicated: true }
                        }
                        Some(InsertOutcome::RunExists) => Published { message_id: id, url, deduplicated: true },
                        _ => Published { message_id: id, url, deduplicated: false },
                    })
                    .collect(),
            })
            .collect();
        Ok(results)
    }
}

/// The refusal of a batch that would create more than `max` messages
/// (`limits.max_batch_messages`).
pub fn too_many_batch_messages(max: usize) -> EngineError {
    EngineError::TooLarge(format!("a batch may create at most {max} messages (URL groups' endpoints counted)"))
}

/// Whose request a URL-group read serves: a client's, or the engine's own (a schedule's tick,
/// which must not wait behind client reads).
pub(crate) enum ReadFor {
    Client,
    Engine,
}

/// [`Engine::recipients`], for the engine's own publishes too (schedule ticks).
pub(crate) async fn recipients(
    shared: &Shared,
    user_id: &str,
    destination: Destination,
    read_for: ReadFor,
) -> Result<Recipients> {
    match destination {
        Destination::Url(url) => Ok(Recipients::Url(url)),
        Destination::UrlGroup(name) => {
            let group = match read_for {
                ReadFor::Client => shared.store.get_group(user_id, &name).await?,
                ReadFor::Engine => shared.store.get_group_for_engine(user_id, &name).await?,
            };
            group
                .map(|group| Recipients::UrlGroup(Arc::new(group)))
                .ok_or_else(|| EngineError::NotFound(format!("topic {name} not found")))
        }
        Destination::Api(_) => Err(Invalid::new("api destinations are not supported").into()),
    }
}

/// What the requests of one call would create, for the limits on how many a user may have.
#[derive(Debug, Default)]
pub(crate) struct NewResources {
    queues: HashSet<String>,
    flow_keys: HashSet<String>,
}

/// Checks that `user_id` may use the flow-control key `key`: one it has, or one more while it
/// has fewer than `limits.max_flow_control_keys` (counting the keys `created` would add).
pub(crate) fn admit_flow_key(shared: &Shared, user_id: &str, key: &str, created: &mut NewResources) -> Result<()> {
    let scheduler = shared.scheduler.lock();
    if scheduler.has_flow(user_id, key) || created.flow_keys.contains(key) {
        return Ok(());
    }
    let max = shared.config.max_flow_control_keys;
    if scheduler.flow_count(user_id) + created.flow_keys.len() >= max {
        return Err(EngineError::LimitExceeded(format!("flow-control key limit reached: at most {max} keys")));
    }
    created.flow_keys.insert(key.to_string());
    Ok(())
}

/// Creates the flow-control keys stored messages name, once they are stored: a callback's key
/// too, whose first message comes only later, so that it counts against the limit from now on.
pub(crate) fn create_flow_keys(shared: &Shared, user_id: &str, created: &NewResources) {
    if !created.flow_keys.is_empty() {
        // Not `update`: a key without messages gives the dispatcher nothing to do.
        let now = shared.clock.now_ms();
        let mut scheduler = shared.scheduler.lock();
        for key in &created.flow_keys {
            scheduler.touch_flow(user_id, key, now);
        }
    }
}

/// The messages of one request (a publish, a batch item or a schedule's tick), validated
/// against the limits; nothing is stored here. `created` collects the queues and flow-control
/// keys the request list would create, for the limits on them.
pub(crate) async fn prepare(
    shared: &Shared,
    user_id: &str,
    mut request: PublishRequest,
    now: i64,
    created: &mut NewResources,
) -> Result<(bool, Vec<NewMessage>)> {
    let config = &shared.config;
    let run = match &request.recipients {
        Recipients::Url(url) => {
            let url = url.clone();
            Box::pin(crate::workflows::join_run(shared, user_id, &url, &mut request, now, created)).await?
        }
        Recipients::UrlGroup(_) => None,
    };
    let options = &request.options;
    if options.cron.is_some() {
        return Err(Invalid::new("Upstash-Cron is only accepted when creating schedules (POST /v2/schedules)").into());
    }
    if let Recipients::Url(url) = &request.recipients {
        sizes::check_url(url, "destination", &config.limits)?;
    }
    sizes::check_options(options, &config.limits)?;
    if let Some(queue) = &request.queue {
        validate_name(queue, "queue")?;
        let known = shared.scheduler.lock().has_queue(user_id, queue) || created.queues.contains(queue);
        if !known {
            let count = shared.scheduler.lock().queue_count(user_id) + created.queues.len();
            if count >= config.max_queues {
                return Err(EngineError::LimitExceeded(format!(
                    "queue limit reached: at most {} queues",
                    config.max_queues
                )));
            }
            created.queues.insert(queue.clone());
        }
    }
    for key in options.flow_control_keys() {
        admit_flow_key(shared, user_id, &key, created)?;
    }
    let (fan_out, destination, targets): (bool, &str, Vec<(&str, Option<&String>)>) = match &request.recipients {
        Recipients::Url(url) => (false, url, vec![(url, None)]),
        Recipients::UrlGroup(group) => {
            let targets = group.endpoints.iter().map(|endpoint| (endpoint.url.as_str(), endpoint.name.as_ref()));
            (true, &group.name, targets.collect())
        }
    };
    let due_at = options.first_delivery_at(now, &config.limits)?;
    let dedup_expiry = now + config.dedup_window.as_millis() as i64;
    let mut messages = Vec::with_capacity(targets.len());
    for (url, endpoint_name) in targets {
        let mut spec = options.to_spec(url.to_string(), request.caller_ip.clone(), &config.limits);
        if !config.allow_private_destinations {
            crate::destinations::check_public_spec(&spec)?;
        }
        spec.endpoint_name = endpoint_name.cloned();
        spec.topic_name = fan_out.then(|| destination.to_string());
        spec.queue_name = request.queue.clone();
        let dedup_key = match (&options.deduplication_id, options.content_based_deduplication) {
            (Some(id), _) => Some(explicit_key(id, url)),
            (None, true) => Some(content_key(destination, url, &spec.headers, &request.body)),
            (None, false) => None,
        };
        let run_limits = spec_run_limits(&spec, config);
        messages.push(NewMessage {
            id: MessageId::generate(),
            user_id: user_id.to_string(),
            spec,
            body: request.body.clone(),
            created_at: now,
            due_at,
            dedup: dedup_key.map(|key| DedupClaim { key, expires_at: dedup_expiry }),
            consumes_dlq_entry: None,
            run: run.clone(),
            run_limits,
        });
    }
    Ok((fan_out, messages))
}

/// The limits of the run a client's message continues, checked when it is appended (an Init
/// starts its run, a failure callback reports on an ended one).
fn spec_run_limits(
    spec: &tern_core::MessageSpec,
    config: &crate::config::EngineConfig,
) -> Option<tern_store::RunLimits> {
    let link = spec.workflow.as_ref()?;
    let appended = !link.init && link.call_type != tern_core::workflow::CallType::FailureCall;
    appended.then_some(tern_store::RunLimits {
        max_steps: config.max_workflow_steps,
        max_bytes: config.max_workflow_run_bytes,
    })
}

/// The spec of the message a publish of `headers` to `url` would store, its body aside: how the
/// engine builds the messages it publishes itself later (a waiter's result, an invoked run's
/// reply to its invoker), through the same pipeline as a client's publish.
pub(crate) async fn message_spec(
    shared: &Shared,
    user_id: &str,
    url: &str,
    headers: &HeaderList,
    caller_ip: Option<String>,
    now: i64,
    created: &mut NewResources,
) -> Result<tern_core::MessageSpec> {
    let destination = tern_core::destination::checked_url(url, "destination")?;
    let request = PublishRequest::from_headers(
        Recipients::Url(destination),
        headers.clone(),
        true,
        Bytes::new(),
        caller_ip,
        None,
    )?;
    let (_, mut messages) = prepare(shared, user_id, request, now, created).await?;
    Ok(messages.pop().expect("a publish to a URL makes one message").spec)
}
