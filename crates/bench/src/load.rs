//! The load generator: C concurrent keep-alive clients posting N bench messages (1 KiB JSON
//! bodies carrying their sequence number and send time) to one URL.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Where the clients post, and with which extra headers.
#[derive(Clone)]
pub struct Target {
    pub url: String,
    pub headers: Vec<(String, String)>,
}

pub struct LoadResult {
    pub elapsed: Duration,
    /// Per-request latency, µs.
    pub latencies_us: Vec<u64>,
    /// Requests not answered with 2xx.
    pub errors: u64,
    /// When the first request was sent, µs since the bench started.
    pub started_us: u64,
}

/// The size of every bench message's body.
pub const BODY_BYTES: usize = 1024;

/// A 1 KiB JSON body; `seq` and `sent_us` come first so the sink can read them cheaply.
pub fn body(seq: u64, sent_us: u64) -> String {
    let head = format!(r#"{{"seq":{seq},"sent_us":{sent_us},"pad":""#);
    let pad = BODY_BYTES.saturating_sub(head.len() + 2);
    format!("{head}{}\"}}", "x".repeat(pad))
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(1024)
        .timeout(Duration::from_secs(60))
        .build()
        .expect("HTTP client")
}

/// Sends `messages` bodies (sequence numbers from `first_seq`) with `concurrency` clients, as
/// fast as they are answered.
pub async fn run(start: Instant, target: &Target, messages: u64, first_seq: u64, concurrency: usize) -> LoadResult {
    run_paced(start, target, messages, first_seq, concurrency, None, None).await
}

/// Like [`run`], but with `per_second` the n-th message is sent no earlier than n ÷
/// `per_second` seconds after the first: a steady rate, for as long as the clients keep up.
/// With `retry_after`, a request not answered with 2xx is counted as an error and sent again
/// after that pause until it is (a client riding out a server's restart); without it, the
/// client moves on to the next message.
pub async fn run_paced(
    start: Instant,
    target: &Target,
    messages: u64,
    first_seq: u64,
    concurrency: usize,
    per_second: Option<f64>,
    retry_after: Option<Duration>,
) -> LoadResult {
    let client = client();
    let next = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let started_us = start.elapsed().as_micros() as u64;
    let began = Instant::now();
    let mut workers = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let (client, target, next, errors) = (client.clone(), target.clone(), Arc::clone(&next), Arc::clone(&errors));
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= messages {
                    return latencies;
                }
                if let Some(rate) = per_second {
                    tokio::time::sleep_until((began + Duration::from_secs_f64(index as f64 / rate)).into()).await;
                }
                let sent = Instant::now();
                loop {
                    let sent_us = start.elapsed().as_micros() as u64;
                    let mut request = client
                        .post(&target.url)
                        .header("content-type", "application/json")
                        .body(body(first_seq + index, sent_us));
                    for (name, value) in &target.headers {
                        request = request.header(name, value);
                    }
                    let ok = match request.send().await {
                        Ok(response) => {
                            let ok = response.status().is_success();
                            let _ = response.bytes().await;
                            ok
                        }
                        Err(_) => false,
                    };
                    if ok {
                        break;
                    }
                    errors.fetch_add(1, Ordering::Relaxed);
                    let Some(pause) = retry_after else { break };
                    tokio::time::sleep(pause).await;
                }
                latencies.push(sent.elapsed().as_micros() as u64);
            }
        }));
    }
    let mut latencies_us = Vec::with_capacity(messages as usize);
    for worker in workers {
        latencies_us.extend(worker.await.expect("load worker"));
    }
    LoadResult { elapsed: began.elapsed(), latencies_us, errors: errors.load(Ordering::Relaxed), started_us }
}

/// The value at quantile `q` (0..=1) of `values`, sorting them.
pub fn quantile(values: &mut [u64], q: f64) -> u64 {
    if values.is_empty() {
        return 0;
    }
    values.sort_unstable();
    let index = ((values.len() - 1) as f64 * q).round() as usize;
    values[index]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_one_kib_of_json() {
        let text = body(7, 123);
        assert_eq!(text.len(), BODY_BYTES);
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!((value["seq"].as_u64(), value["sent_us"].as_u64()), (Some(7), Some(123)));
    }

    #[test]
    fn quantiles_pick_ranks() {
        let mut values = vec![5, 1, 4, 2, 3];
        assert_eq!(quantile(&mut values, 0.0), 1);
        assert_eq!(quantile(&mut values, 0.5), 3);
        assert_eq!(quantile(&mut values, 1.0), 5);
        assert_eq!(quantile(&mut [], 0.5), 0);
    }
}
