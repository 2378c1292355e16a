//! The listing scenario: log entries with large bodies, then listings of them, and tern's peak
//! resident memory while it answers each. `messages` messages of `body_bytes` each go to a
//! closed port on 127.0.0.1 with two retries: every one fails three times and ends in the DLQ,
//! leaving ten log entries (CREATED, then ACTIVE, ERROR and RETRY or FAILED per attempt), each
//! of which shows the whole body. So 100 messages of 10 MB give a page of 1,000 entries with
//! 10 MB bodies from 1 GB on disk.

use crate::processes::{TOKEN, Tern, free_port};
use crate::scenarios::Bench;
use std::time::{Duration, Instant};

/// Log entries each message leaves: CREATED, then three attempts of three entries.
pub const ENTRIES_PER_MESSAGE: u64 = 10;

/// One listing: how much tern's memory rose while answering it, and what it answered.
#[derive(Debug, Clone, Default)]
pub struct Listed {
    /// Peak resident memory while listing (VmHWM, reset just before), bytes.
    pub peak_rss: u64,
    /// Resident memory just before, bytes.
    pub rss_before: u64,
    pub requests: u64,
    pub entries: u64,
    pub response_bytes: u64,
    pub elapsed: Duration,
}

#[derive(Debug, Clone, Default)]
pub struct Listing {
    pub entries: u64,
    /// `GET /v2/logs?count=N`: one page, whole bodies.
    pub first_page: Listed,
    /// Every page of the same listing, following the cursor.
    pub all_pages: Listed,
    /// `GET /v2/logs?count=N&trimBody=-1`: one page without bodies.
    pub without_bodies: Listed,
    /// `GET /v2/dlq?count=…`: one DLQ page, whole bodies.
    pub dlq_page: Listed,
    /// `readers` clients asking for the first logs page at once (a read-only token suffices):
    /// the listing budget, not their number, bounds the memory.
    pub concurrent_pages: Listed,
    pub readers: usize,
}

impl Bench {
    /// Stores the entries, then measures the listings; `count` is the `count` asked for (the
    /// page size of the logs listing; at most 100 for the DLQ).
    pub async fn listing(&self, messages: u64, body_bytes: usize, count: u64, readers: usize) -> Listing {
        let tern = self.fresh_tern("listing").await;
        let client = crate::load::client();
        let closed = format!("http://127.0.0.1:{}/closed", free_port());
        let mut ids = Vec::new();
        let body = "l".repeat(body_bytes);
        for _ in 0..messages {
            let response = client
                .post(format!("{}/v2/publish/{closed}", tern.url))
                .bearer_auth(TOKEN)
                .header("upstash-retries", "2")
                .header("upstash-retry-delay", "10")
                .body(body.clone())
                .send()
                .await
                .and_then(|response| response.error_for_status())
                .expect("publish a message with a large body");
            let answer = response.bytes().await.expect("publish answer");
            let json: serde_json::Value = serde_json::from_slice(&answer).expect("a JSON answer");
            ids.push(json["messageId"].as_str().expect("messageId").to_string());
        }
        for id in &ids {
            wait_failed(&tern, id).await;
        }
        let entries = messages * ENTRIES_PER_MESSAGE;
        let logs = format!("/v2/logs?count={count}");
        let first_page = measure(&tern, &logs, false).await;
        let all_pages = measure(&tern, &logs, true).await;
        let without_bodies = measure(&tern, &format!("{logs}&trimBody=-1"), false).await;
        let dlq_page = measure(&tern, &format!("/v2/dlq?count={}", count.min(100)), false).await;
        let concurrent_pages = measure_together(&tern, &logs, readers).await;
        tern.stop().await;
        Listing { entries, first_page, all_pages, without_bodies, dlq_page, concurrent_pages, readers }
    }
}

/// Waits until message `id` has failed. The query asks for no body (`trimBody`); a tern that
/// does not know it answers with one entry's body, which is still cheap enough.
async fn wait_failed(tern: &Tern, id: &str) {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let path = format!("/v2/logs?messageId={id}&state=FAILED&count=1&trimBody=-1");
        let (body, _) = get(tern, &path).await;
        if find(&body, "\"messageId\":\"").is_some() {
            return;
        }
        assert!(Instant::now() < deadline, "message {id} did not fail within five minutes");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `GET path` (and, with `follow`, every later page by its cursor), measuring tern's peak
/// memory from just before the first request to the end of the last.
async fn measure(tern: &Tern, path: &str, follow: bool) -> Listed {
    let (mut listed, started) = start_measuring(tern).await;
    let mut cursor: Option<String> = None;
    loop {
        let page = match &cursor {
            Some(cursor) => format!("{path}&cursor={cursor}"),
            None => path.to_string(),
        };
        let (body, entries) = get(tern, &page).await;
        listed.requests += 1;
        listed.entries += entries;
        listed.response_bytes += body.len() as u64;
        cursor = find(&body, "\"cursor\":\"").map(str::to_string);
        if !follow || cursor.is_none() {
            break;
        }
    }
    listed.elapsed = started.elapsed();
    listed.peak_rss = tern.peak_rss_bytes();
    listed
}

/// `readers` clients each asking for `path` at once, measuring tern's peak memory from just
/// before the first request to the end of the last answer.
async fn measure_together(tern: &Tern, path: &str, readers: usize) -> Listed {
    let (mut listed, started) = start_measuring(tern).await;
    let answers = futures_util::future::join_all((0..readers).map(|_| get(tern, path))).await;
    listed.elapsed = started.elapsed();
    for (body, entries) in answers {
        listed.requests += 1;
        listed.entries += entries;
        listed.response_bytes += body.len() as u64;
    }
    listed.peak_rss = tern.peak_rss_bytes();
    listed
}

/// Notes tern's memory and resets its peak, after a moment for the previous listing's memory
/// to be given back (a figure taken at once would count it); returns the time it started.
async fn start_measuring(tern: &Tern) -> (Listed, Instant) {
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss_before = tern.rss_bytes();
    tern.reset_peak_rss();
    (Listed { rss_before, ..Listed::default() }, Instant::now())
}

/// A listing's body and the number of entries in it (each entry has one `messageId` per key
/// that holds it: logs list them under two).
async fn get(tern: &Tern, path: &str) -> (Vec<u8>, u64) {
    let mut response = crate::load::client()
        .get(format!("{}{path}", tern.url))
        .bearer_auth(TOKEN)
        .timeout(Duration::from_secs(600))
        .send()
        .await
        .and_then(|response| response.error_for_status())
        .unwrap_or_else(|error| panic!("GET {path}: {error}"));
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.unwrap_or_else(|error| panic!("GET {path}: {error}")) {
        body.extend_from_slice(&chunk);
    }
    let ids = count(&body, "\"messageId\":\"");
    let keys = if path.starts_with("/v2/logs") { 2 } else { 1 };
    (body, ids / keys)
}

/// The string value after `key` (which ends with its opening quote), if present.
fn find<'a>(body: &'a [u8], key: &str) -> Option<&'a str> {
    let start = body.windows(key.len()).position(|window| window == key.as_bytes())? + key.len();
    let length = body[start..].iter().position(|byte| *byte == b'"')?;
    std::str::from_utf8(&body[start..start + length]).ok()
}

fn count(body: &[u8], needle: &str) -> u64 {
    body.windows(needle.len()).filter(|window| *window == needle.as_bytes()).count() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_and_entries_are_read_from_the_body() {
        let body =
            br#"{"events":[{"messageId":"a","body":"eA=="}],"logs":[{"messageId":"a","body":"eA=="}],"cursor":"12-3"}"#;
        assert_eq!(find(body, "\"cursor\":\""), Some("12-3"));
        assert_eq!(count(body, "\"messageId\":\""), 2);
        assert_eq!(find(b"{}", "\"cursor\":\""), None);
    }
}
