//! The operations on queues, flow-control keys and URL groups. Settings changes run one at a
//! time and reach both the store and the scheduler before they are answered.

use crate::Engine;
use crate::error::{EngineError, Result};
use crate::scheduler::FlowInfo;
use crate::scheduler::flow::FlowPin;
use tern_core::destination::{checked_url, validate_name};
use tern_core::{HeaderList, Invalid, PublishOptions, sizes};
use tern_store::{Endpoint, EndpointsAdded, GroupLimits, Page, PageRequest, QueueRecord, UrlGroup};

/// A queue with its lag (unfinished messages, waiting and in flight).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueView {
    pub record: QueueRecord,
    pub lag: u64,
}

impl Engine {
    fn queue_view(&self, user_id: &str, record: QueueRecord) -> QueueView {
        let lag = self.shared.scheduler.lock().queue_figures(user_id, &record.name).lag;
        QueueView { record, lag }
    }

    /// Creates or updates a queue. Updating an existing queue works even at the queue limit.
    pub async fn upsert_queue(&self, user_id: &str, name: &str, parallelism: u32, paused: bool) -> Result<()> {
        validate_name(name, "queue")?;
        let config = &self.shared.config;
        if parallelism == 0 {
            return Err(Invalid::new("parallelism must be at least 1").into());
        }
        if parallelism > config.max_queue_parallelism {
            return Err(EngineError::LimitExceeded(format!(
                "queue parallelism limit reached: at most {}",
                config.max_queue_parallelism
            )));
        }
        let _change = self.shared.settings_changes.lock().await;
        let (known, count) = {
            let scheduler = self.shared.scheduler.lock();
            (scheduler.has_queue(user_id, name), scheduler.queue_count(user_id))
        };
        if !known && count >= config.max_queues {
            return Err(EngineError::LimitExceeded(format!(
                "queue limit reached: at most {} queues",
                config.max_queues
            )));
        }
        let now = self.shared.clock.now_ms();
        self.shared.store.upsert_queue(user_id, name, parallelism, paused, now).await?;
        self.shared.scheduler.update(|scheduler, _| scheduler.configure_queue(user_id, name, parallelism, paused));
        Ok(())
    }

    pub async fn queue(&self, user_id: &str, name: &str) -> Result<QueueView> {
        validate_name(name, "queue")?;
        let record = self
            .shared
            .store
            .get_queue(user_id, name)
            .await?
            .ok_or_else(|| EngineError::NotFound(format!("queue {name} not found")))?;
        Ok(self.queue_view(user_id, record))
    }

    pub async fn queues(&self, user_id: &str) -> Result<Vec<QueueView>> {
        let records = self.shared.store.list_queues(user_id).await?;
        Ok(records.into_iter().map(|record| self.queue_view(user_id, record)).collect())
    }

    /// Deletes a queue and cancels its waiting messages (running ones finish first).
    pub async fn delete_queue(&self, user_id: &str, name: &str) -> Result<()> {
        validate_name(name, "queue")?;
        let _change = self.shared.settings_changes.lock().await;
        let now = self.shared.clock.now_ms();
        self.shared.store.delete_queue(user_id, name, now).await?;
        self.shared.scheduler.update(|scheduler, _| scheduler.delete_queue(user_id, name));
        Ok(())
    }

    /// Pauses or resumes a queue; idempotent.
    pub async fn set_queue_paused(&self, user_id: &str, name: &str, paused: bool) -> Result<()> {
        let _change = self.shared.settings_changes.lock().await;
        let view = self.queue(user_id, name).await?;
        let now = self.shared.clock.now_ms();
        self.shared.store.upsert_queue(user_id, name, view.record.parallelism, paused, now).await?;
        self.shared
            .scheduler
            .update(|scheduler, _| scheduler.configure_queue(user_id, name, view.record.parallelism, paused));
        Ok(())
    }

    pub fn flow_control(&self, user_id: &str, key: &str) -> Result<FlowInfo> {
        let now = self.shared.clock.now_ms();
        self.shared
            .scheduler
            .lock()
            .flow_info(user_id, key, now)
            .ok_or_else(|| EngineError::NotFound("Flow Control key not found".to_string()))
    }

    /// About how many bytes [`Engine::flow_controls`] returns for the user at most (its keys'
    /// names and their figures), to reserve before asking for them.
    pub fn flow_controls_bytes(&self, user_id: &str) -> usize {
        /// The figures of a key besides its name, and their JSON.
        const PER_KEY: usize = 512;
        let scheduler = self.shared.scheduler.lock();
        scheduler.flow_key_bytes(user_id) * 2 + scheduler.flow_count(user_id) * PER_KEY
    }

    /// Every key of the user whose name contains `search`.
    pub fn flow_controls(&self, user_id: &str, search: Option<&str>) -> Vec<FlowInfo> {
        let now = self.shared.clock.now_ms();
        let mut scheduler = self.shared.scheduler.lock();
        let keys = scheduler.flow_keys(user_id);
        keys.iter()
            .filter(|key| search.is_none_or(|search| key.contains(search)))
            .filter_map(|key| scheduler.flow_info(user_id, key, now))
            .collect()
    }

    /// Changes a key's settings in the scheduler (which holds them), then stores the result.
    async fn change_flow(
        &self,
        user_id: &str,
        key: &str,
        change: impl FnOnce(&mut crate::scheduler::Scheduler, i64),
    ) -> Result<()> {
        if key.trim().is_empty() {
            return Err(Invalid::new("the flow-control key must not be empty").into());
        }
        sizes::check_flow_control_key(key, &self.shared.config.limits)?;
        let _change = self.shared.settings_changes.lock().await;
        crate::publish::admit_flow_key(&self.shared, user_id, key, &mut Default::default())?;
        let settings = self.shared.scheduler.update(|scheduler, now| {
            change(scheduler, now);
            scheduler.touch_flow(user_id, key, now);
            scheduler.flow_settings(user_id, key)
        });
        self.shared.store.save_flow(user_id, key, settings).await?;
        Ok(())
    }

    pub async fn set_flow_paused(&self, user_id: &str, key: &str, paused: bool) -> Result<()> {
        self.change_flow(user_id, key, |scheduler, now| scheduler.set_flow_paused(user_id, key, paused, now)).await
    }

    pub async fn pin_flow(&self, user_id: &str, key: &str, pin: FlowPin) -> Result<()> {
        if pin.parallelism == Some(0) || pin.rate == Some(0) || pin.period_secs == Some(0) {
            return Err(Invalid::new("pinned values must be positive").into());
        }
        if pin.period_secs.is_some_and(|period| period > tern_core::flow::MAX_PERIOD_SECS) {
            return Err(Invalid::new("period must be at most one week").into());
        }
        self.change_flow(user_id, key, |scheduler, now| scheduler.pin_flow(user_id, key, pin, now)).await
    }

    pub async fn unpin_flow(&self, user_id: &str, key: &str, parallelism: bool, rate: bool) -> Result<()> {
        self.change_flow(user_id, key, |scheduler, _| scheduler.unpin_flow(user_id, key, parallelism, rate)).await
    }

    pub async fn reset_flow_rate(&self, user_id: &str, key: &str) -> Result<()> {
        self.change_flow(user_id, key, |scheduler, now| scheduler.reset_flow_rate(user_id, key, now)).await
    }

    /// `(parallelismMax, parallelismCount)` of the user.
    pub fn global_parallelism(&self, user_id: &str) -> (u32, u32) {
        self.shared.scheduler.lock().user_parallelism(user_id)
    }

    /// Adds endpoints to a group (creating it); an existing URL gets the new name.
    pub async fn add_endpoints(&self, user_id: &str, group: &str, mut endpoints: Vec<Endpoint>) -> Result<()> {
        validate_name(group, "URL group")?;
        if endpoints.is_empty() {
            return Err(Invalid::new("at least one endpoint is required").into());
        }
        let config = &self.shared.config;
        if endpoints.len() > config.max_endpoints_per_group {
            return Err(endpoint_limit(config.max_endpoints_per_group));
        }
        for endpoint in &mut endpoints {
            sizes::check_url(&endpoint.url, "endpoint", &config.limits)?;
            endpoint.url = checked_url(&endpoint.url, "endpoint")?;
            sizes::check_url(&endpoint.url, "endpoint", &config.limits)?;
            if let Some(name) = &endpoint.name {
                sizes::check_endpoint_name(name)?;
            }
            if !config.allow_private_destinations {
                crate::destinations::check_public_url(&endpoint.url)?;
            }
        }
        let now = self.shared.clock.now_ms();
        let limits = GroupLimits { groups: config.max_url_groups, endpoints: config.max_endpoints_per_group };
        match self.shared.store.add_endpoints(user_id, group, endpoints, now, limits).await? {
            EndpointsAdded::Added => Ok(()),
            EndpointsAdded::GroupLimitReached => Err(EngineError::LimitExceeded(format!(
                "URL group limit reached: at most {} groups",
                config.max_url_groups
            ))),
            EndpointsAdded::EndpointLimitReached => Err(endpoint_limit(config.max_endpoints_per_group)),
        }
    }

    /// Removes endpoints by URL or name; a group left without endpoints is deleted.
    pub async fn remove_endpoints(&self, user_id: &str, group: &str, mut endpoints: Vec<Endpoint>) -> Result<()> {
        validate_name(group, "URL group")?;
        if endpoints.iter().any(|e| e.url.is_empty() && e.name.as_deref().is_none_or(str::is_empty)) {
            return Err(Invalid::new("each endpoint to remove needs a url or a name").into());
        }
        // A URL names the endpoint added with it, which was stored as `checked_url` returned it.
        for endpoint in &mut endpoints {
            if let Ok(url) = checked_url(&endpoint.url, "endpoint") {
                endpoint.url = url;
            }
        }
        if self.shared.store.get_group(user_id, group).await?.is_none() {
            return Err(EngineError::NotFound(format!("topic {group} not found")));
        }
        let now = self.shared.clock.now_ms();
        Ok(self.shared.store.remove_endpoints(user_id, group, endpoints, now).await?)
    }

    pub async fn url_group(&self, user_id: &str, group: &str) -> Result<UrlGroup> {
        self.shared
            .store
            .get_group(user_id, group)
            .await?
            .ok_or_else(|| EngineError::NotFound(format!("topic {group} not found")))
    }

    /// About how many bytes reading a group of this user takes ([`Engine::url_group`]), to
    /// reserve first.
    pub async fn url_group_bytes(&self, user_id: &str, group: &str) -> Result<usize> {
        self.shared
            .store
            .group_bytes(user_id, group)
            .await?
            .ok_or_else(|| EngineError::NotFound(format!("topic {group} not found")))
    }

    /// A page of the user's URL groups by name, each with its endpoints.
    pub async fn url_groups(&self, user_id: &str, page: &PageRequest) -> Result<Page<UrlGroup>> {
        Ok(self.shared.store.list_groups(user_id, page).await?)
    }

    /// Replaces the headers every publish to the group gets under its own (`PATCH
    /// /v2/topics/{name}`, the webhook guide's way to configure senders that cannot set headers).
    /// They are checked as a publish's would be; the ones that would make a publish something
    /// else (a schedule) or that a group cannot mean (a queue, a fixed time) are refused.
    pub async fn set_url_group_headers(&self, user_id: &str, group: &str, headers: HeaderList) -> Result<()> {
        validate_name(group, "URL group")?;
        const REFUSED: &[&str] = &["upstash-cron", "upstash-schedule-id", "upstash-queue-name", "upstash-not-before"];
        if let Some((name, _)) =
            headers.iter().find(|(name, _)| REFUSED.iter().any(|refused| name.eq_ignore_ascii_case(refused)))
        {
            return Err(Invalid::new(format!("{name} cannot be a default header of a URL group")).into());
        }
        let options = PublishOptions::from_headers(headers.iter(), true)?;
        sizes::check_options(&options, &self.shared.config.limits)?;
        let now = self.shared.clock.now_ms();
        if self.shared.store.set_group_headers(user_id, group, headers, now).await? {
            Ok(())
        } else {
            Err(EngineError::NotFound(format!("topic {group} not found")))
        }
    }

    /// Deletes a group; idempotent.
    pub async fn delete_url_group(&self, user_id: &str, group: &str) -> Result<()> {
        self.shared.store.delete_group(user_id, group).await?;
        Ok(())
    }
}

fn endpoint_limit(max: usize) -> EngineError {
    EngineError::LimitExceeded(format!("endpoint limit reached: at most {max} endpoints per URL group"))
}
