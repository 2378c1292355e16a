//! Flow control (spec §13): a key's parallelism and rate limits, its waitlist, and the
//! operator's pause and pins.

use super::{Scheduler, lookup_key};
use std::collections::VecDeque;
use std::sync::Arc;
use tern_core::{FlowControl, MessageId};

#[derive(Debug)]
pub(super) struct FlowState {
    pub parallelism: Option<u32>,
    pub rate: Option<u32>,
    pub period_ms: i64,
    pub pinned_parallelism: bool,
    pub pinned_rate: bool,
    pub paused: bool,
    /// Whether the limits came from a new message or the store. A key found only through
    /// recovered messages (its row forgotten while a publish raced the forgetting) takes them
    /// from those messages, the newest last, instead of running unlimited.
    pub settings_known: bool,
    /// Attempts in flight.
    pub active: u32,
    /// Start of the current rate window, set by the first start after the last one ended.
    pub window_start: Option<i64>,
    /// Starts within the current window.
    pub window_count: u32,
    /// When the operator last reset the window (a pin, a reset): saved as a window of no starts
    /// then, so that a late write of the window before it cannot take its place in the store.
    pub window_reset_at: Option<i64>,
    /// Due messages waiting for this key (stale ids are skipped).
    pub waitlist: VecDeque<MessageId>,
    /// How many waitlist ids are live.
    pub waiting: u64,
    /// Unfinished messages with this key (waiting for their time, a slot or a retry, or
    /// running): a key with any is never forgotten.
    pub messages: u64,
    /// When a message or the operator last used the key.
    pub last_used: i64,
}

impl Default for FlowState {
    fn default() -> Self {
        FlowState {
            parallelism: None,
            rate: None,
            period_ms: 1000,
            pinned_parallelism: false,
            pinned_rate: false,
            paused: false,
            settings_known: false,
            active: 0,
            window_start: None,
            window_count: 0,
            window_reset_at: None,
            waitlist: VecDeque::new(),
            waiting: 0,
            messages: 0,
            last_used: 0,
        }
    }
}

impl FlowState {
    fn reset_window(&mut self, now: i64) {
        self.window_start = None;
        self.window_count = 0;
        self.window_reset_at = Some(now);
    }

    /// A new message's settings replace the key's, except what the operator pinned.
    pub fn configure(&mut self, flow: &FlowControl) {
        if !self.pinned_parallelism {
            self.parallelism = flow.parallelism;
        }
        if !self.pinned_rate {
            self.rate = flow.rate;
            self.period_ms = flow.period_secs as i64 * 1000;
        }
    }

    fn roll(&mut self, now: i64) {
        if self.window_start.is_some_and(|start| now >= start + self.period_ms) {
            self.window_start = None;
            self.window_count = 0;
        }
    }

    /// `None` when a message may start now; otherwise `Some(when)`: the end of the rate window
    /// if that is what blocks, or `None` to wait for a slot or a resume.
    pub fn blocked_until(&mut self, now: i64) -> Option<Option<i64>> {
        self.roll(now);
        if self.paused || self.parallelism.is_some_and(|max| self.active >= max) {
            return Some(None);
        }
        if self.rate.is_some_and(|max| self.window_count >= max) {
            return Some(self.rate_window_end(now));
        }
        None
    }

    pub fn started(&mut self, now: i64) {
        self.roll(now);
        self.last_used = now;
        self.active += 1;
        self.window_start.get_or_insert(now);
        self.window_count += 1;
    }

    /// How many waiting messages could start now.
    pub fn capacity(&mut self, now: i64) -> u32 {
        self.roll(now);
        if self.paused {
            return 0;
        }
        let by_parallelism = self.parallelism.map_or(u32::MAX, |max| max.saturating_sub(self.active));
        let by_rate = self.rate.map_or(u32::MAX, |max| max.saturating_sub(self.window_count));
        by_parallelism.min(by_rate)
    }

    pub fn rate_window_end(&self, now: i64) -> Option<i64> {
        self.rate?;
        Some(self.window_start.map_or(now, |start| start + self.period_ms))
    }
}

/// What `GET /v2/flowControl/{key}` shows (spec §6.7).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowInfo {
    pub key: String,
    pub wait_list_size: u64,
    pub parallelism_max: u32,
    pub parallelism_count: u32,
    pub rate_max: u32,
    pub rate_count: u32,
    pub rate_period_secs: u64,
    pub rate_period_start_secs: i64,
    pub paused: bool,
    pub pinned_parallelism: bool,
    pub pinned_rate: bool,
}

/// A pin: the values that override what incoming messages carry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlowPin {
    pub parallelism: Option<u32>,
    pub rate: Option<u32>,
    pub period_secs: Option<u64>,
}

impl Scheduler {
    fn flow_state(&mut self, user: &str, key: &str) -> (super::Key, &mut FlowState) {
        let user = self.user(user);
        self.flow_entry(&user, key)
    }

    /// The state of `user`'s key, created (and counted) if new; the key returned is the map's
    /// own, which entries share.
    pub(super) fn flow_entry(&mut self, user: &Arc<str>, key: &str) -> (super::Key, &mut FlowState) {
        let lookup = (Arc::clone(user), Arc::<str>::from(key));
        let key = match self.flows.get_key_value(&lookup) {
            Some((existing, _)) => existing.clone(),
            None => {
                *self.flow_counts.entry(Arc::clone(user)).or_default() += 1;
                self.flows.insert(lookup.clone(), FlowState::default());
                lookup
            }
        };
        let state = self.flows.get_mut(&key).expect("found or inserted just now");
        (key, state)
    }

    /// Whether `user` has the key.
    pub fn has_flow(&self, user: &str, key: &str) -> bool {
        self.flows.contains_key(&lookup_key(user, key))
    }

    /// How many keys `user` has.
    pub fn flow_count(&self, user: &str) -> usize {
        self.flow_counts.get(user).copied().unwrap_or(0)
    }

    pub fn flow_info(&mut self, user: &str, key: &str, now: i64) -> Option<FlowInfo> {
        let state = self.flows.get_mut(&lookup_key(user, key))?;
        state.roll(now);
        Some(FlowInfo {
            key: key.to_string(),
            wait_list_size: state.waiting,
            parallelism_max: state.parallelism.unwrap_or(0),
            parallelism_count: state.active,
            rate_max: state.rate.unwrap_or(0),
            rate_count: state.window_count,
            rate_period_secs: (state.period_ms / 1000) as u64,
            rate_period_start_secs: state.window_start.map_or(0, |start| start / 1000),
            paused: state.paused,
            pinned_parallelism: state.pinned_parallelism,
            pinned_rate: state.pinned_rate,
        })
    }

    /// The bytes of `user`'s key names, summed.
    pub fn flow_key_bytes(&self, user: &str) -> usize {
        self.flows.keys().filter(|(u, _)| &**u == user).map(|(_, k)| k.len()).sum()
    }

    /// Every key of `user`, sorted by name.
    pub fn flow_keys(&self, user: &str) -> Vec<String> {
        let mut keys: Vec<String> =
            self.flows.keys().filter(|(u, _)| &**u == user).map(|(_, k)| k.to_string()).collect();
        keys.sort();
        keys
    }

    pub fn set_flow_paused(&mut self, user: &str, key: &str, paused: bool, now: i64) {
        let (key, state) = self.flow_state(user, key);
        state.paused = paused;
        if !paused {
            self.release_flow(&key, now);
        }
    }

    /// Pins the given values; pinning starts a fresh rate window.
    pub fn pin_flow(&mut self, user: &str, key: &str, pin: FlowPin, now: i64) {
        let (key, state) = self.flow_state(user, key);
        if let Some(parallelism) = pin.parallelism {
            state.parallelism = Some(parallelism);
            state.pinned_parallelism = true;
        }
        if pin.rate.is_some() || pin.period_secs.is_some() {
            if let Some(rate) = pin.rate {
                state.rate = Some(rate);
            }
            if let Some(period) = pin.period_secs {
                state.period_ms = period as i64 * 1000;
            }
            state.pinned_rate = true;
        }
        state.reset_window(now);
        self.release_flow(&key, now);
    }

    /// Unpins; the pinned values stay until a message brings other settings.
    pub fn unpin_flow(&mut self, user: &str, key: &str, parallelism: bool, rate: bool) {
        let (_, state) = self.flow_state(user, key);
        if parallelism {
            state.pinned_parallelism = false;
        }
        if rate {
            state.pinned_rate = false;
        }
    }

    /// Ends the current rate window now: the count restarts from zero.
    pub fn reset_flow_rate(&mut self, user: &str, key: &str, now: i64) {
        let (key, state) = self.flow_state(user, key);
        state.reset_window(now);
        self.release_flow(&key, now);
    }

    /// Marks a key as used now (an operator change counts: it must not be forgotten at once).
    pub fn touch_flow(&mut self, user: &str, key: &str, now: i64) {
        self.flow_state(user, key).1.last_used = now;
    }

    /// Forgets the keys that hold nothing: no unfinished message, no pause or pin, unused for
    /// `idle_ms` and past their rate window. Their state is what any new message would create
    /// afresh, so only memory changes. Returns them, for the store to forget too.
    pub fn forget_idle_flows(&mut self, now: i64, idle_ms: i64) -> Vec<(String, String)> {
        let mut forgotten = Vec::new();
        let counts = &mut self.flow_counts;
        self.flows.retain(|(user, key), state| {
            let idle = state.messages == 0
                && state.active == 0
                && !state.paused
                && !state.pinned_parallelism
                && !state.pinned_rate
                && now - state.last_used >= idle_ms
                && state.window_start.is_none_or(|start| now >= start + state.period_ms);
            if idle {
                forgotten.push((user.to_string(), key.to_string()));
                if let Some(count) = counts.get_mut(user) {
                    *count -= 1;
                    if *count == 0 {
                        counts.remove(user);
                    }
                }
            }
            !idle
        });
        forgotten
    }

    /// The windows of the rate-limited keys that started messages since the last call, for the
    /// store: a restart continues them instead of granting a fresh window.
    pub fn take_flow_windows(&mut self) -> Vec<tern_store::FlowWindow> {
        let moved = std::mem::take(&mut self.moved_windows);
        moved
            .into_iter()
            .filter_map(|key| {
                let state = self.flows.get(&key)?;
                Some(tern_store::FlowWindow {
                    user_id: key.0.to_string(),
                    key: key.1.to_string(),
                    start: state.window_start?,
                    count: state.window_count,
                })
            })
            .collect()
    }

    /// Restores operator settings kept in the store (at start).
    pub fn restore_flow(&mut self, user: &str, key: &str, settings: &tern_store::FlowSettings) {
        let (_, state) = self.flow_state(user, key);
        state.paused = settings.paused;
        state.settings_known = true;
        state.pinned_parallelism = settings.pinned_parallelism;
        state.pinned_rate = settings.pinned_rate;
        state.parallelism = settings.parallelism;
        state.rate = settings.rate;
        state.period_ms = settings.period_secs as i64 * 1000;
        // The window open when tern stopped goes on (it closes by itself once its period is
        // over). A stored window of no starts is a reset: no window is open.
        state.window_start = settings.window_start.filter(|_| settings.window_count > 0);
        state.window_count = settings.window_count;
    }
}

impl Scheduler {
    /// A key's settings as the store keeps them.
    pub fn flow_settings(&mut self, user: &str, key: &str) -> tern_store::FlowSettings {
        let (_, state) = self.flow_state(user, key);
        tern_store::FlowSettings {
            parallelism: state.parallelism,
            rate: state.rate,
            period_secs: (state.period_ms / 1000) as u64,
            paused: state.paused,
            pinned_parallelism: state.pinned_parallelism,
            pinned_rate: state.pinned_rate,
            // With no window open the count is 0, which makes a reset a window of no starts.
            window_start: state.window_start.or(state.window_reset_at),
            window_count: state.window_count,
        }
    }
}
