//! The sink: an HTTP destination on 127.0.0.1 that counts arrivals, de-duplicates them by
//! message id, and records when each message first arrived. It can fail a share of first
//! attempts (status 500) to exercise retries.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// One message's first arrival.
#[derive(Debug, Clone, Copy)]
pub struct Arrival {
    /// The bench's sequence number of the message (from the body).
    pub seq: u64,
    /// When the publisher sent it, µs since the bench started (from the body).
    pub sent_us: u64,
    /// When it arrived, µs since the bench started.
    pub arrived_us: u64,
    /// When it arrived last (the same, unless it arrived again), µs since the bench started.
    pub latest_us: u64,
    /// Wall-clock arrival, Unix ms (for lateness against a due time).
    pub arrived_unix_ms: u64,
}

pub struct SinkState {
    start: Instant,
    first: Mutex<Received>,
    pub requests: AtomicU64,
    pub duplicates: AtomicU64,
    pub failed_on_purpose: AtomicU64,
    /// Percentage of first attempts answered with 500.
    pub fail_percent: AtomicU32,
    /// How long each request is held before it is answered (a slower destination), ms.
    pub answer_delay_ms: AtomicU64,
}

/// What arrived, by message id.
#[derive(Default)]
struct Received {
    first: HashMap<String, Arrival>,
    /// For every arrival of an id seen before: when that id arrived the time before and this
    /// time, µs since the bench started (how long before a crash the earlier copy came, say).
    repeats: Vec<(u64, u64)>,
}

#[derive(Clone)]
pub struct Sink {
    pub url: String,
    pub state: Arc<SinkState>,
}

impl Sink {
    pub async fn start(start: Instant) -> Sink {
        let state = Arc::new(SinkState {
            start,
            first: Mutex::new(Received::default()),
            requests: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            failed_on_purpose: AtomicU64::new(0),
            fail_percent: AtomicU32::new(0),
            answer_delay_ms: AtomicU64::new(0),
        });
        let app = axum::Router::new().fallback(receive).with_state(Arc::clone(&state));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the sink");
        let url = format!("http://{}/sink", listener.local_addr().expect("sink address"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        Sink { url, state }
    }

    /// Forgets everything received (between runs); the failure share and the answer delay stay
    /// as set.
    pub fn reset(&self) {
        *self.state.first.lock().unwrap() = Received::default();
        self.state.requests.store(0, Ordering::SeqCst);
        self.state.duplicates.store(0, Ordering::SeqCst);
        self.state.failed_on_purpose.store(0, Ordering::SeqCst);
    }

    pub fn unique(&self) -> usize {
        self.state.first.lock().unwrap().first.len()
    }

    pub fn arrivals(&self) -> Vec<Arrival> {
        self.state.first.lock().unwrap().first.values().copied().collect()
    }

    /// When each repeated id arrived the time before and when it arrived again (one entry per
    /// repeat), µs since the bench started.
    pub fn repeats(&self) -> Vec<(u64, u64)> {
        self.state.first.lock().unwrap().repeats.clone()
    }
}

/// Reads `"seq":<n>` and `"sent_us":<n>` from the start of a bench body without a full parse.
fn field(body: &[u8], name: &str) -> Option<u64> {
    let text = std::str::from_utf8(&body[..body.len().min(96)]).ok()?;
    let start = text.find(name)? + name.len();
    let digits: String = text[start..].chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

async fn receive(State(state): State<Arc<SinkState>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    state.requests.fetch_add(1, Ordering::Relaxed);
    let arrived_us = state.start.elapsed().as_micros() as u64;
    let seq = field(&body, "\"seq\":").unwrap_or(u64::MAX);
    let first_attempt = headers.get("upstash-retried").is_none_or(|value| value == "0");
    let fail_percent = u64::from(state.fail_percent.load(Ordering::Relaxed));
    if first_attempt && seq % 100 < fail_percent {
        state.failed_on_purpose.fetch_add(1, Ordering::Relaxed);
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    let id = match headers.get("upstash-message-id").and_then(|value| value.to_str().ok()) {
        Some(id) => id.to_string(),
        None => format!("seq-{seq}"),
    };
    let arrival = Arrival {
        seq,
        sent_us: field(&body, "\"sent_us\":").unwrap_or(arrived_us),
        arrived_us,
        latest_us: arrived_us,
        arrived_unix_ms: SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0),
    };
    {
        let mut received = state.first.lock().unwrap();
        match received.first.entry(id) {
            std::collections::hash_map::Entry::Occupied(mut first) => {
                let before = std::mem::replace(&mut first.get_mut().latest_us, arrived_us);
                received.repeats.push((before, arrived_us));
                state.duplicates.fetch_add(1, Ordering::Relaxed);
            }
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(arrival);
            }
        }
    }
    let answer_delay = state.answer_delay_ms.load(Ordering::Relaxed);
    if answer_delay > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(answer_delay)).await;
    }
    StatusCode::OK
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_fields_from_the_body_head() {
        let body = br#"{"seq":42,"sent_us":1234567,"pad":"xxxx"}"#;
        assert_eq!(field(body, "\"seq\":"), Some(42));
        assert_eq!(field(body, "\"sent_us\":"), Some(1_234_567));
        assert_eq!(field(body, "\"nope\":"), None);
    }
}
