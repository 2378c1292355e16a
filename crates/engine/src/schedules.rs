//! Schedules (spec §5.6, §14): create or overwrite, read, pause, resume, delete — and the
//! ticker that fires them. The ticker keeps nothing per schedule in memory: it asks the store for
//! the schedules due now (an index range) and sleeps until the earliest next tick. Each tick is
//! stored together with the messages it produces and only if the schedule still waits for that
//! tick, so a restart or a slow tick never fires twice.

use crate::error::{EngineError, Result};
use crate::publish::{NewResources, PublishRequest, admit_flow_key, prepare};
use crate::{Engine, Shared};
use bytes::Bytes;
use std::sync::Arc;
use tern_core::cron::CronSchedule;
use tern_core::dedup::{content_key, explicit_key};
use tern_core::destination::{Destination, parse_target, validate_name};
use tern_core::headers::strip_prefix_ignore_case;
use tern_core::{HeaderList, Invalid, MessageId, MessageSpec, MessageState, PublishOptions, sizes};
use tern_store::{DedupClaim, Page, PageRequest, ScheduleFire, ScheduleRecord, ScheduleUpsert, ScheduleWithStates};
use tokio_util::sync::CancellationToken;

/// A tick missed by more than this (tern was down) is skipped rather than fired late.
pub const MISSED_TICK_GRACE_MS: i64 = 60_000;
const DUE_BATCH: usize = 256;

/// A validated schedule creation.
#[derive(Debug, Clone)]
pub struct ScheduleRequest {
    pub cron: String,
    pub destination: Destination,
    pub schedule_id: Option<String>,
    pub queue: Option<String>,
    /// The publish headers to repeat (without `Upstash-Cron`, `-Schedule-Id`, `-Queue-Name`).
    pub headers: HeaderList,
    pub body: Bytes,
    pub caller_ip: Option<String>,
    /// `Upstash-Deduplication-Id`: applies to the creation, not to the messages it produces.
    pub deduplication_id: Option<String>,
    /// `Upstash-Content-Based-Deduplication`: likewise.
    pub content_based_deduplication: bool,
}

/// What creating a schedule answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedSchedule {
    pub id: String,
    /// A creation with the same deduplication key came first (within the window): `id` is its
    /// schedule, and nothing was written.
    pub deduplicated: bool,
}

/// A schedule as the API shows it (§6.3).
#[derive(Debug, Clone)]
pub struct ScheduleView {
    pub record: ScheduleRecord,
    /// What each produced message is configured with (its `url` is the destination).
    pub template: MessageSpec,
    pub delay_secs: u64,
    pub next_schedule_time: Option<i64>,
    /// The last tick's messages: `IN_PROGRESS`, `SUCCESS` or `FAIL`.
    pub last_states: Vec<(MessageId, &'static str)>,
}

/// The deduplication key of a creation, apart from every message's key (those are bare hashes).
/// Content-based, it covers what the schedule is: cron, id, queue, destination, body and the
/// headers that configure or are forwarded (`Upstash-*`, `Content-Type`, and with
/// `Upstash-Header-Forward` every plain header, `forwarded`) — not those a client or proxy adds
/// to every request (`User-Agent`, `X-Forwarded-For`…) when they are not forwarded.
fn schedule_dedup_key(request: &ScheduleRequest, destination: &str, forwarded: &HeaderList) -> Option<String> {
    let key = match (&request.deduplication_id, request.content_based_deduplication) {
        (Some(id), _) => explicit_key(id, destination),
        (None, true) => {
            let schedule = format!(
                "{}\0{}\0{}",
                request.cron,
                request.schedule_id.as_deref().unwrap_or_default(),
                request.queue.as_deref().unwrap_or_default()
            );
            let configuring: HeaderList = request
                .headers
                .iter()
                .filter(|(name, _)| {
                    name.eq_ignore_ascii_case("content-type") || strip_prefix_ignore_case(name, "upstash-").is_some()
                })
                .chain(forwarded.iter())
                .map(|(name, value)| (name.to_string(), value.to_string()))
                .collect();
            content_key(&schedule, destination, &configuring, &request.body)
        }
        (None, false) => return None,
    };
    Some(format!("schedule:{key}"))
}

fn options(headers: &HeaderList) -> Result<PublishOptions> {
    Ok(PublishOptions::from_headers(headers.iter(), true)?)
}

impl Engine {
    /// Creates a schedule (or overwrites the one with the same id) and returns its id; it is
    /// live at once. A duplicate creation (spec §5.6, §16) answers the first one's id.
    pub async fn create_schedule(&self, user_id: &str, request: ScheduleRequest) -> Result<CreatedSchedule> {
        let now = self.shared.clock.now_ms();
        let (cron, next_tick_at) = CronSchedule::parse_with_next(&request.cron, now)?;
        let options = options(&request.headers)?;
        if options.not_before.is_some() {
            return Err(Invalid::new("Upstash-Not-Before is not allowed on schedules; use Upstash-Delay").into());
        }
        let limits = &self.shared.config.limits;
        options.first_delivery_at(0, limits)?;
        if let Destination::Url(url) = &request.destination {
            sizes::check_url(url, "destination", limits)?;
        }
        sizes::check_options(&options, limits)?;
        for key in options.flow_control_keys() {
            admit_flow_key(&self.shared, user_id, &key, &mut NewResources::default())?;
        }
        if !self.shared.config.allow_private_destinations {
            // Refused now, like a publish, rather than failing at every tick.
            if let Destination::Url(url) = &request.destination {
                crate::destinations::check_public_url(url)?;
            }
            crate::destinations::check_public_callbacks(&options)?;
        }
        let destination = match &request.destination {
            Destination::Url(url) => url.clone(),
            Destination::UrlGroup(name) => {
                self.url_group(user_id, name).await?;
                name.clone()
            }
            Destination::Api(_) => return Err(Invalid::new("api destinations are not allowed for schedules").into()),
        };
        if let Some(queue) = &request.queue {
            validate_name(queue, "queue")?;
        }
        let dedup = schedule_dedup_key(&request, &destination, &options.forward)
            .map(|key| DedupClaim { key, expires_at: now + self.shared.config.dedup_window.as_millis() as i64 });
        let id = match request.schedule_id {
            Some(id) => {
                validate_name(&id, "schedule id")?;
                id
            }
            None => format!("scd_{}", ulid_text()),
        };
        let record = ScheduleRecord {
            id: id.clone(),
            user_id: user_id.to_string(),
            cron: cron.source().to_string(),
            destination,
            queue_name: request.queue,
            headers: request.headers,
            body: request.body,
            caller_ip: request.caller_ip,
            created_at: now,
            paused: false,
            next_tick_at: Some(next_tick_at),
            last_tick_at: None,
            last_message_ids: Vec::new(),
            error: None,
        };
        let max = self.shared.config.max_schedules;
        match self.shared.store.upsert_schedule(record, max, dedup).await? {
            ScheduleUpsert::LimitReached => {
                Err(EngineError::LimitExceeded(format!("schedule limit reached: at most {max} schedules")))
            }
            ScheduleUpsert::Deduplicated(id) => Ok(CreatedSchedule { id, deduplicated: true }),
            ScheduleUpsert::Created | ScheduleUpsert::Replaced => {
                self.shared.wake_ticker();
                Ok(CreatedSchedule { id, deduplicated: false })
            }
        }
    }

    pub async fn schedule(&self, user_id: &str, id: &str) -> Result<ScheduleView> {
        let stored = self
            .shared
            .store
            .get_schedule(user_id, id)
            .await?
            .ok_or_else(|| EngineError::NotFound("Schedule not found".to_string()))?;
        self.view(stored)
    }

    /// About how many bytes reading a schedule of this user takes ([`Engine::schedule`]), to
    /// reserve first.
    pub async fn schedule_bytes(&self, user_id: &str, id: &str) -> Result<usize> {
        let not_found = || EngineError::NotFound("Schedule not found".to_string());
        self.shared.store.schedule_bytes(user_id, id).await?.ok_or_else(not_found)
    }

    /// A page of the user's schedules in creation order. The store reads each with its last
    /// tick's states in one query, on a client's reader (never the engine's).
    pub async fn schedules(&self, user_id: &str, page: &PageRequest) -> Result<Page<ScheduleView>> {
        let page = self.shared.store.list_schedules(user_id, page).await?;
        let items = page.items.into_iter().map(|stored| self.view(stored)).collect::<Result<_>>()?;
        Ok(Page { items, cursor: page.cursor, next_item_bytes: page.next_item_bytes })
    }

    fn view(&self, stored: ScheduleWithStates) -> Result<ScheduleView> {
        let record = stored.schedule;
        let options = options(&record.headers)?;
        let mut template =
            options.to_spec(record.destination.clone(), record.caller_ip.clone(), &self.shared.config.limits);
        template.queue_name = record.queue_name.clone();
        let last_states = stored
            .last_states
            .into_iter()
            .map(|(id, state)| {
                let state = match state {
                    MessageState::Delivered => "SUCCESS",
                    MessageState::Failed | MessageState::Canceled => "FAIL",
                    _ => "IN_PROGRESS",
                };
                (id, state)
            })
            .collect();
        Ok(ScheduleView {
            next_schedule_time: (!record.paused).then_some(record.next_tick_at).flatten(),
            delay_secs: options.delay.map_or(0, |delay| delay.as_secs()),
            template,
            last_states,
            record,
        })
    }

    /// Deletes a schedule; idempotent. Messages it already produced are not affected.
    pub async fn delete_schedule(&self, user_id: &str, id: &str) -> Result<()> {
        self.shared.store.delete_schedule(user_id, id).await?;
        Ok(())
    }

    /// Pauses (ticks are skipped, not queued up) or resumes (from the next tick after now).
    pub async fn set_schedule_paused(&self, user_id: &str, id: &str, paused: bool) -> Result<()> {
        let record = self
            .shared
            .store
            .get_schedule(user_id, id)
            .await?
            .ok_or_else(|| EngineError::NotFound("Schedule not found".to_string()))?
            .schedule;
        let next = match paused {
            true => record.next_tick_at,
            false => CronSchedule::parse(&record.cron)?.next_after(self.shared.clock.now_ms()),
        };
        self.shared.store.set_schedule_paused(user_id, id, paused, next).await?;
        self.shared.wake_ticker();
        Ok(())
    }
}

fn ulid_text() -> String {
    MessageId::generate().to_string().trim_start_matches("msg_").to_string()
}

/// Fires due schedules until stopped.
pub async fn run_ticker(shared: Arc<Shared>, stop: CancellationToken) {
    loop {
        shared.ticker.pass_started();
        let now = shared.clock.now_ms();
        let full = match tick(&shared, now).await {
            Ok(count) => count == DUE_BATCH,
            Err(error) => {
                // The failed schedules are still due: without a pause this would spin.
                tracing::error!(%error, "firing schedules failed; trying again in a second");
                shared.ticker.pass_ended(Some(now + 1000));
                tokio::select! {
                    () = shared.clock.sleep_until(now + 1000) => {}
                    () = stop.cancelled() => return,
                }
                continue;
            }
        };
        if full {
            continue;
        }
        let next = shared.store.next_schedule_tick().await.unwrap_or_else(|error| {
            tracing::error!(%error, "reading the next schedule tick failed");
            Some(now + 1000)
        });
        shared.ticker.pass_ended(next);
        tokio::select! {
            () = shared.schedule_wake.notified() => {}
            () = shared.clock.sleep_until(next.unwrap_or(i64::MAX)), if next.is_some() => {}
            () = stop.cancelled() => return,
        }
    }
}

/// Fires the schedules due at `now`; returns how many were due.
async fn tick(shared: &Shared, now: i64) -> Result<usize> {
    let due = shared.store.due_schedules(now, DUE_BATCH).await?;
    let count = due.len();
    let mut fires = Vec::with_capacity(count);
    for schedule in due {
        fires.push(fire(shared, schedule, now).await);
    }
    if !fires.is_empty() {
        shared.store.fire_schedules(fires).await?;
    }
    Ok(count)
}

/// What processing the tick at `tick_at` at `now` does: whether it fires, and the tick to wait
/// for next. A tick missed by more than [`MISSED_TICK_GRACE_MS`] (tern was down) is skipped with
/// every later one except the latest that is not that old: that one is next, already due, and
/// fires on the ticker's next pass — at most one late tick, none back-filled (spec §14). Ticks
/// that passed while a tick was fired late are skipped.
fn plan_tick(cron: Option<&CronSchedule>, tick_at: i64, now: i64) -> (bool, Option<i64>) {
    let Some(cron) = cron else { return (now - tick_at <= MISSED_TICK_GRACE_MS, None) };
    if now - tick_at <= MISSED_TICK_GRACE_MS {
        return (true, cron.next_after(now.max(tick_at)));
    }
    let mut next = cron.next_after(now - MISSED_TICK_GRACE_MS - 1);
    while let Some(due) = next
        && let Some(later) = cron.next_after(due)
        && later <= now
    {
        next = Some(later);
    }
    (false, next)
}

/// One tick of `schedule`: its messages, or the error that prevented them.
async fn fire(shared: &Shared, schedule: ScheduleRecord, now: i64) -> ScheduleFire {
    let tick_at = schedule.next_tick_at.unwrap_or(now);
    let cron = CronSchedule::parse(&schedule.cron).ok();
    let (fires, next_tick_at) = plan_tick(cron.as_ref(), tick_at, now);
    let mut fire = ScheduleFire {
        user_id: schedule.user_id.clone(),
        id: schedule.id.clone(),
        tick_at,
        next_tick_at,
        messages: Vec::new(),
        fired: false,
        error: None,
    };
    if !fires {
        return fire;
    }
    fire.fired = true;
    match produce(shared, &schedule, tick_at).await {
        Ok(messages) => fire.messages = messages,
        // A storage failure is the operator's to read, in the log; the schedule shows that the
        // tick failed without the internals.
        Err(EngineError::Store(error)) => {
            tracing::error!(%error, schedule = %schedule.id, "a schedule's tick could not be prepared");
            fire.error = Some("internal error while firing this tick; see the server log".into());
        }
        Err(error) => fire.error = Some(error.to_string()),
    }
    fire
}

/// The messages a tick produces: exactly what a publish with the stored configuration would.
async fn produce(shared: &Shared, schedule: &ScheduleRecord, tick_at: i64) -> Result<Vec<tern_store::NewMessage>> {
    let target = parse_target(&schedule.destination, None)?;
    let recipients =
        crate::publish::recipients(shared, &schedule.user_id, target.destination, crate::publish::ReadFor::Engine)
            .await?;
    let (body, caller_ip, queue) = (schedule.body.clone(), schedule.caller_ip.clone(), schedule.queue_name.clone());
    let mut request = PublishRequest::from_headers(recipients, schedule.headers.clone(), true, body, caller_ip, queue)?;
    // Deduplication applies to a schedule's creation, never to its ticks: the stored headers are
    // without it already, so at a tick it can only come from URL-group defaults.
    request.options.deduplication_id = None;
    request.options.content_based_deduplication = false;
    let (_, mut messages) = prepare(shared, &schedule.user_id, request, tick_at, &mut NewResources::default()).await?;
    for message in &mut messages {
        message.spec.schedule_id = Some(schedule.id.clone());
    }
    Ok(messages)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: i64 = 60_000;
    /// 2026-11-23 10:00 UTC.
    const BASE: i64 = 1_795_428_000_000;

    fn plan(expression: &str, tick_at: i64, now: i64) -> (bool, Option<i64>) {
        plan_tick(Some(&CronSchedule::parse(expression).unwrap()), tick_at, now)
    }

    #[test]
    fn a_tick_on_time_or_late_by_less_than_the_grace_fires_and_the_next_is_after_now() {
        assert_eq!(plan("* * * * *", BASE, BASE), (true, Some(BASE + MINUTE)));
        assert_eq!(plan("* * * * *", BASE, BASE + 59_000), (true, Some(BASE + MINUTE)));
        // Late by the whole grace (a slow tick): fired, and the tick passed meanwhile is skipped.
        assert_eq!(plan("* * * * *", BASE, BASE + MINUTE), (true, Some(BASE + 2 * MINUTE)));
    }

    #[test]
    fn a_tick_missed_long_ago_gives_way_to_the_last_tick_within_the_grace() {
        // Down for 3.5 minutes: the tick 30 s ago is next (and due), the older ones are skipped.
        let now = BASE + 3 * MINUTE + 30_000;
        assert_eq!(plan("* * * * *", BASE, now), (false, Some(BASE + 3 * MINUTE)));
        let (fires, next) = plan("* * * * *", BASE + 3 * MINUTE, now);
        assert_eq!((fires, next), (true, Some(BASE + 4 * MINUTE)), "which then fires once");
        // Of two ticks within the grace (one a minute ago, one due now) the later one is next.
        assert_eq!(plan("* * * * *", BASE, BASE + 3 * MINUTE), (false, Some(BASE + 3 * MINUTE)));
        assert_eq!(plan("*/2 * * * *", BASE, BASE + 5 * MINUTE), (false, Some(BASE + 4 * MINUTE)));
        // No tick within the last minute: the next one in the future.
        assert_eq!(plan("0 * * * *", BASE, BASE + 90 * MINUTE), (false, Some(BASE + 2 * 60 * MINUTE)));
        assert_eq!(plan("0 10 * * *", BASE, BASE + 5 * MINUTE), (false, Some(BASE + 24 * 60 * MINUTE)));
    }

    #[test]
    fn an_unreadable_cron_fires_its_stored_tick_and_has_no_next() {
        assert_eq!(plan_tick(None, BASE, BASE), (true, None));
        assert_eq!(plan_tick(None, BASE, BASE + 5 * MINUTE), (false, None));
    }
}
