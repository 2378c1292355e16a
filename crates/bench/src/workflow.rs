//! The workflow scenario: tern serving Upstash Workflow runs to an endpoint in this process
//! that plays the SDK (COMPATIBILITY.md, "Upstash Workflow"; ARCHITECTURE.md, "How a workflow
//! run flows"), against plain publish→delivery through a fresh tern at the same concurrency,
//! in the same run.
//!
//! A run is triggered as `client.trigger` does it: `POST /v2/batch` with one Init item for the
//! endpoint (a 1 KiB initial payload, the bench's body). Each delivery carries the run's
//! records (`[{messageId, body (base64), callType}]`, the initial payload first); the endpoint
//! reads them, and while fewer than [`STEPS`] step results are recorded it publishes the next
//! one (`POST /v2/batch`, one `Init: false` item whose body is the step's JSON) before it
//! answers 200 with `Upstash-Workflow-Sdk-Version: 1`. After the last step it ends the run
//! (`DELETE /v2/workflows/runs/<id>?cancel=false`, the result as body) and answers 200.
//!
//! So a run is one trigger, [`STEPS`] + 1 deliveries (the Init's and one per step result),
//! [`STEPS`] step publishes and the completing DELETE. A **step** here is one round of the
//! protocol: tern delivers the records so far, the endpoint publishes the next result, tern
//! records it. C runs go at once, each triggered when the one before it in its slot ended, so
//! at most C deliveries are in flight, as at most C publishes are in the plain run's closed
//! loop. Per run tern also takes the trigger and the DELETE, and a step's figures carry a fifth
//! of them.
//!
//! What a run stored is read once tern has stopped on SIGTERM (its last checkpoint has then
//! copied every committed page into the database file): the pages in use from the database
//! file's header, less those of a data directory where tern started and stopped with nothing
//! done, divided by the runs; the plain run's per message likewise.

use crate::load::{self, quantile};
use crate::processes::{TOKEN, Tern, cpu_seconds};
use crate::scenarios::{Bench, Figures, STALL, cpu_per};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::io::Read;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Step results per run.
pub const STEPS: u64 = 5;

/// What the JS SDK (v1) announces on every workflow-bound publish.
const FEATURE_SET: &str = "LazyFetch,InitialBody,WF_DetectTrigger,WF_TriggerOnConfig";

/// One workflow run of the scenario: C runs at a time, through a fresh tern.
#[derive(Debug, Clone)]
pub struct Workflow {
    /// Runs that reached their completing DELETE.
    pub finished: u64,
    /// Runs triggered that did not end within [`STALL`] of their trigger.
    pub unfinished: u64,
    /// Triggers tern did not accept.
    pub trigger_errors: u64,
    /// Step results recorded per second (`STEPS` × finished runs ÷ the time from the first
    /// trigger to the last completing DELETE).
    pub steps_per_s: f64,
    pub runs_per_s: f64,
    /// Deliveries per second to the endpoint (`STEPS` + 1 per run).
    pub deliveries_per_s: f64,
    /// From sending the trigger to the completing DELETE's answer: p50, p99, max (ms).
    pub run_latency_ms: [f64; 3],
    /// Deliveries the endpoint got in all (`STEPS` + 1 per run when none was repeated).
    pub deliveries: u64,
    /// What the endpoint found wrong (a malformed delivery, a refused publish or DELETE), the
    /// first few, and how many in all.
    pub problems: Vec<String>,
    pub problem_count: u64,
    /// tern's CPU per step (µs), in all and by thread; this process's (the driver and the
    /// endpoint) per step; the machine's idle share.
    pub tern_cpu_us: f64,
    pub tern_thread_cpu_us: Vec<(String, f64)>,
    pub bench_cpu_us: f64,
    pub machine_idle: f64,
    /// Bytes tern wrote to storage per step (`/proc/<pid>/io`).
    pub written_per_step: f64,
    /// The data directory after a graceful shutdown.
    pub stored: Stored,
    /// The first run's log, as `GET /v2/workflows/logs?workflowRunId=…` shows it: a summary, or
    /// what was wrong with it.
    pub log_check: Result<String, String>,
}

/// Plain publish→delivery through a fresh tern, with what it stored.
#[derive(Debug, Clone, Default)]
pub struct Plain {
    pub figures: Figures,
    pub bench_cpu_us: f64,
    pub written_per_message: f64,
    pub stored: Stored,
}

/// What a data directory holds once tern has stopped.
#[derive(Debug, Clone, Copy, Default)]
pub struct Stored {
    /// The database's pages in use: its page count less its free list, times its page size
    /// (from the database file's header, which the shutdown's checkpoint brought up to date).
    pub used_bytes: u64,
    /// The size of every file in the directory (the WAL, kept for reuse, included).
    pub file_bytes: u64,
}

impl Stored {
    /// The growth from `empty` per one of `count`, in bytes: (used, files).
    pub fn per(&self, empty: &Stored, count: u64) -> (f64, f64) {
        let per = |after: u64, before: u64| after.saturating_sub(before) as f64 / count.max(1) as f64;
        (per(self.used_bytes, empty.used_bytes), per(self.file_bytes, empty.file_bytes))
    }
}

impl Bench {
    /// A tern started and stopped with nothing done: what an empty data directory holds.
    pub async fn empty_store(&self) -> Stored {
        let dir = self.work_dir.path().join("workflow-empty");
        let tern = Tern::start(&self.tern_binary, &dir).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        if !tern.shutdown().await {
            eprintln!("  ! the empty tern did not stop on SIGTERM");
        }
        stored(&dir)
    }

    /// `messages` plain messages through a fresh tern (the immediate scenario), then a graceful
    /// shutdown and what its data directory holds.
    pub async fn plain_stored(&self, messages: u64, concurrency: usize, round: usize) -> Plain {
        let dir = self.work_dir.path().join(format!("workflow-plain-{concurrency}-{round}"));
        let tern = Tern::start(&self.tern_binary, &dir).await;
        let (bench_cpu, written) = (own_cpu_seconds(), tern.storage_write_bytes());
        let figures = self.immediate_on(&tern, messages, concurrency).await;
        let per_message = |value: f64| value / figures.delivered.max(1) as f64;
        let bench_cpu_us = per_message((own_cpu_seconds() - bench_cpu) * 1e6);
        let written_per_message = per_message(tern.storage_write_bytes().saturating_sub(written) as f64);
        if !tern.shutdown().await {
            eprintln!("  ! tern did not stop on SIGTERM; its database file may miss pages");
        }
        Plain { figures, bench_cpu_us, written_per_message, stored: stored(&dir) }
    }

    /// Runs of [`STEPS`] steps, `concurrency` at a time, through a fresh tern: `runs` of them,
    /// or as many as start within `duration` when given.
    pub async fn workflow(&self, runs: u64, duration: Option<Duration>, concurrency: usize, round: usize) -> Workflow {
        let dir = self.work_dir.path().join(format!("workflow-{concurrency}-{round}"));
        let tern = Tern::start(&self.tern_binary, &dir).await;
        let endpoint = Endpoint::start(&tern.url).await;
        let machine_before = crate::processes::machine_ticks();
        let (cpu, threads) = (tern.cpu_seconds(), tern.thread_cpu_seconds());
        let (bench_cpu, written) = (own_cpu_seconds(), tern.storage_write_bytes());

        let prefix = format!("wfr_bench-{concurrency}-{round}-");
        let driven = drive(&endpoint, &tern.url, &prefix, runs, duration, concurrency, self.start).await;

        let machine_idle = crate::processes::idle_between(machine_before, crate::processes::machine_ticks());
        let mut latencies = driven.latencies_us;
        let finished = latencies.len() as u64;
        let steps = finished * STEPS;
        let (tern_cpu_us, tern_thread_cpu_us) = cpu_per(&tern, cpu, &threads, steps);
        let bench_cpu_us = (own_cpu_seconds() - bench_cpu) * 1e6 / steps.max(1) as f64;
        let written_per_step = tern.storage_write_bytes().saturating_sub(written) as f64 / steps.max(1) as f64;
        let log_check = check_log(&tern, &format!("{prefix}0")).await;
        // Deliveries that come after the last run ended (a repeat) count as well.
        tokio::time::sleep(Duration::from_millis(200)).await;
        if !tern.shutdown().await {
            eprintln!("  ! tern did not stop on SIGTERM; its database file may miss pages");
        }
        let seconds = driven.elapsed.as_secs_f64().max(1e-6);
        let state = &endpoint.state;
        Workflow {
            finished,
            unfinished: driven.unfinished,
            trigger_errors: driven.trigger_errors,
            steps_per_s: steps as f64 / seconds,
            runs_per_s: finished as f64 / seconds,
            deliveries_per_s: (finished * (STEPS + 1)) as f64 / seconds,
            run_latency_ms: [0.5, 0.99, 1.0].map(|q| quantile(&mut latencies, q) as f64 / 1000.0),
            deliveries: state.deliveries.load(Ordering::Relaxed),
            problems: state.problems.lock().unwrap().clone(),
            problem_count: state.problem_count.load(Ordering::Relaxed),
            tern_cpu_us,
            tern_thread_cpu_us,
            bench_cpu_us,
            machine_idle,
            written_per_step,
            stored: stored(&dir),
            log_check,
        }
    }
}

/// What the driver saw.
struct Driven {
    latencies_us: Vec<u64>,
    unfinished: u64,
    trigger_errors: u64,
    /// From the first trigger to the last completing DELETE.
    elapsed: Duration,
}

/// `concurrency` slots, each triggering a run and waiting for its end before the next.
async fn drive(
    endpoint: &Endpoint,
    tern_url: &str,
    prefix: &str,
    runs: u64,
    duration: Option<Duration>,
    concurrency: usize,
    start: Instant,
) -> Driven {
    let client = load::client();
    let next = Arc::new(AtomicU64::new(0));
    let began = Instant::now();
    let deadline = duration.map(|duration| began + duration);
    let mut slots = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let (client, next, state) = (client.clone(), Arc::clone(&next), Arc::clone(&endpoint.state));
        let (tern_url, prefix, url) = (tern_url.to_string(), prefix.to_string(), endpoint.url.clone());
        slots.push(tokio::spawn(async move {
            let (mut latencies, mut unfinished, mut trigger_errors, mut last_end) = (Vec::new(), 0, 0, began);
            loop {
                if deadline.is_some_and(|deadline| Instant::now() >= deadline) {
                    break;
                }
                let index = next.fetch_add(1, Ordering::Relaxed);
                if deadline.is_none() && index >= runs {
                    break;
                }
                let run_id = format!("{prefix}{index}");
                let (ended, end) = oneshot::channel();
                state.waiting.lock().unwrap().insert(run_id.clone(), ended);
                let triggered = Instant::now();
                let initial = load::body(index, start.elapsed().as_micros() as u64);
                if !trigger(&client, &tern_url, &url, &run_id, initial).await {
                    state.waiting.lock().unwrap().remove(&run_id);
                    trigger_errors += 1;
                    continue;
                }
                match tokio::time::timeout(STALL, end).await {
                    Ok(Ok(at)) => {
                        latencies.push(at.saturating_duration_since(triggered).as_micros() as u64);
                        last_end = last_end.max(at);
                    }
                    _ => {
                        state.waiting.lock().unwrap().remove(&run_id);
                        state.problem(format!("run {run_id} did not end within {} s", STALL.as_secs()));
                        unfinished += 1;
                    }
                }
            }
            (latencies, unfinished, trigger_errors, last_end)
        }));
    }
    let mut driven = Driven { latencies_us: Vec::new(), unfinished: 0, trigger_errors: 0, elapsed: Duration::ZERO };
    for slot in slots {
        let (latencies, unfinished, trigger_errors, last_end) = slot.await.expect("a workflow slot panicked");
        driven.latencies_us.extend(latencies);
        driven.unfinished += unfinished;
        driven.trigger_errors += trigger_errors;
        driven.elapsed = driven.elapsed.max(last_end.saturating_duration_since(began));
    }
    driven
}

/// `client.trigger`: one Init item through `POST /v2/batch`; whether tern created the run.
async fn trigger(client: &reqwest::Client, tern_url: &str, url: &str, run_id: &str, initial: String) -> bool {
    let item = json!([{
        "destination": url,
        "headers": {
            "upstash-workflow-init": "true",
            "upstash-workflow-runid": run_id,
            "upstash-workflow-url": url,
            "upstash-feature-set": FEATURE_SET,
            "upstash-forward-upstash-workflow-sdk-version": "1",
            "content-type": "application/json",
        },
        "body": initial,
    }]);
    let response = client
        .post(format!("{tern_url}/v2/batch"))
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .body(item.to_string())
        .send()
        .await;
    let Ok(response) = response else { return false };
    if !response.status().is_success() {
        return false;
    }
    let answer: Value = serde_json::from_slice(&response.bytes().await.unwrap_or_default()).unwrap_or_default();
    answer[0]["messageId"].is_string() && answer[0]["deduplicated"] != Value::Bool(true)
}

/// The endpoint playing the SDK, on 127.0.0.1.
struct Endpoint {
    url: String,
    state: Arc<EndpointState>,
}

struct EndpointState {
    tern_url: String,
    /// The workflow URL: this endpoint's own.
    url: String,
    client: reqwest::Client,
    /// The runs the driver waits for, by run id: told when each one's DELETE was answered.
    waiting: Mutex<HashMap<String, oneshot::Sender<Instant>>>,
    deliveries: AtomicU64,
    problems: Mutex<Vec<String>>,
    problem_count: AtomicU64,
}

impl Endpoint {
    async fn start(tern_url: &str) -> Endpoint {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the workflow endpoint");
        let url = format!("http://{}/workflow", listener.local_addr().expect("endpoint address"));
        let state = Arc::new(EndpointState {
            tern_url: tern_url.to_string(),
            url: url.clone(),
            client: load::client(),
            waiting: Mutex::new(HashMap::new()),
            deliveries: AtomicU64::new(0),
            problems: Mutex::new(Vec::new()),
            problem_count: AtomicU64::new(0),
        });
        let app = axum::Router::new().fallback(deliver).with_state(Arc::clone(&state));
        tokio::spawn(async move { axum::serve(listener, app).await });
        Endpoint { url, state }
    }
}

impl EndpointState {
    fn problem(&self, problem: String) {
        if self.problem_count.fetch_add(1, Ordering::Relaxed) < 10 {
            self.problems.lock().unwrap().push(problem);
        }
    }

    /// One delivery: the records so far, then the next step or the run's end.
    async fn step(&self, headers: &HeaderMap, body: Bytes) -> Result<(), String> {
        let header = |name: &str| headers.get(name).and_then(|value| value.to_str().ok());
        let run_id = header("upstash-workflow-runid").ok_or("a delivery without Upstash-Workflow-RunId")?;
        if header("upstash-workflow-sdk-version") != Some("1") {
            return Err(format!("run {run_id}: a delivery without Upstash-Workflow-Sdk-Version: 1"));
        }
        let records = if body.is_empty() {
            // LazyFetch: the records up to this delivery's own message.
            let message_id = header("upstash-message-id").ok_or("an empty delivery without Upstash-Message-Id")?;
            self.fetch(run_id, message_id).await?
        } else {
            serde_json::from_slice::<Vec<Value>>(&body).map_err(|e| format!("run {run_id}: records: {e}"))?
        };
        let done = steps_done(&records).map_err(|e| format!("run {run_id}: {e}"))?;
        if done < STEPS { self.publish_step(run_id, done + 1).await } else { self.end(run_id).await }
    }

    /// `GET /v2/workflows/runs/<id>`, up to and including `message_id`'s record.
    async fn fetch(&self, run_id: &str, message_id: &str) -> Result<Vec<Value>, String> {
        let response = self
            .client
            .get(format!("{}/v2/workflows/runs/{run_id}", self.tern_url))
            .bearer_auth(TOKEN)
            .send()
            .await
            .and_then(|response| response.error_for_status())
            .map_err(|e| format!("run {run_id}: lazy fetch: {e}"))?;
        let bytes = response.bytes().await.map_err(|e| format!("run {run_id}: lazy fetch: {e}"))?;
        let mut records: Vec<Value> =
            serde_json::from_slice(&bytes).map_err(|e| format!("run {run_id}: lazy fetch: {e}"))?;
        let own = records.iter().position(|record| record["messageId"] == message_id);
        records.truncate(own.ok_or(format!("run {run_id}: lazy fetch without message {message_id}"))? + 1);
        Ok(records)
    }

    /// Publishes step `step`'s result as the SDK does (`context.run`).
    async fn publish_step(&self, run_id: &str, step: u64) -> Result<(), String> {
        let out = serde_json::to_string(&format!("result of step {step} of {run_id}")).expect("a JSON string");
        let result = json!({ "stepId": step, "stepName": format!("step-{step}"), "stepType": "Run", "out": out, "concurrent": 1 });
        let item = json!([{
            "destination": self.url,
            "headers": {
                "upstash-workflow-runid": run_id,
                "upstash-workflow-init": "false",
                "upstash-workflow-url": self.url,
                "upstash-forward-upstash-workflow-sdk-version": "1",
                "upstash-feature-set": FEATURE_SET,
                "upstash-workflow-calltype": "step",
                "content-type": "application/json",
            },
            "body": result.to_string(),
        }]);
        let response = self
            .client
            .post(format!("{}/v2/batch", self.tern_url))
            .bearer_auth(TOKEN)
            .header("content-type", "application/json")
            .body(item.to_string())
            .send()
            .await
            .map_err(|e| format!("run {run_id}: publishing step {step}: {e}"))?;
        let status = response.status();
        let answer = response.bytes().await.unwrap_or_default();
        if !status.is_success() {
            return Err(format!("run {run_id}: publishing step {step}: {status} {}", String::from_utf8_lossy(&answer)));
        }
        Ok(())
    }

    /// The route returned: `DELETE /v2/workflows/runs/<id>?cancel=false` with its result.
    async fn end(&self, run_id: &str) -> Result<(), String> {
        let response = self
            .client
            .delete(format!("{}/v2/workflows/runs/{run_id}?cancel=false", self.tern_url))
            .bearer_auth(TOKEN)
            .body(json!({ "run": run_id, "steps": STEPS }).to_string())
            .send()
            .await
            .map_err(|e| format!("run {run_id}: DELETE: {e}"))?;
        let status = response.status();
        let _ = response.bytes().await;
        if !status.is_success() {
            return Err(format!("run {run_id}: DELETE answered {status}"));
        }
        let ended = self.waiting.lock().unwrap().remove(run_id);
        match ended {
            Some(ended) => {
                let _ = ended.send(Instant::now());
            }
            // A repeated last delivery: the SDK ends the run again, which tern allows.
            None => self.problem(format!("run {run_id}: its last step was delivered again")),
        }
        Ok(())
    }
}

async fn deliver(State(state): State<Arc<EndpointState>>, headers: HeaderMap, body: Bytes) -> Response {
    state.deliveries.fetch_add(1, Ordering::Relaxed);
    let status = match state.step(&headers, body).await {
        Ok(()) => StatusCode::OK,
        Err(problem) => {
            state.problem(problem);
            StatusCode::INTERNAL_SERVER_ERROR
        }
    };
    (status, [("upstash-workflow-sdk-version", "1")]).into_response()
}

/// The step results a delivery's records hold, checked as the SDK reads them: the initial
/// payload first, then step `n` as the n-th record after it.
fn steps_done(records: &[Value]) -> Result<u64, String> {
    let (initial, steps) = records.split_first().ok_or("no records")?;
    let body = |record: &Value| -> Result<Vec<u8>, String> {
        let text = record["body"].as_str().ok_or("a record without a body")?;
        base64_decode(text).ok_or(format!("a record body that is not base64: {text}"))
    };
    if !body(initial)?.starts_with(b"{\"seq\":") {
        return Err("the first record is not the initial payload".into());
    }
    for (index, record) in steps.iter().enumerate() {
        if record["callType"] != "step" {
            return Err(format!("record {} has callType {}", index + 1, record["callType"]));
        }
        let step: Value = serde_json::from_slice(&body(record)?).map_err(|e| format!("record {}: {e}", index + 1))?;
        if step["stepId"].as_u64() != Some(index as u64 + 1) || step["stepType"] != "Run" {
            return Err(format!("record {} is {step}", index + 1));
        }
    }
    Ok(steps.len() as u64)
}

/// Standard base64 (with or without padding); `None` for anything else.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let value = |byte: u8| -> Option<u32> {
        Some(match byte {
            b'A'..=b'Z' => byte - b'A',
            b'a'..=b'z' => byte - b'a' + 26,
            b'0'..=b'9' => byte - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let text = text.trim_end_matches('=').as_bytes();
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    for chunk in text.chunks(4) {
        if chunk.len() == 1 {
            return None;
        }
        let mut bits = 0u32;
        for (index, byte) in chunk.iter().enumerate() {
            bits |= value(*byte)? << (18 - 6 * index);
        }
        out.extend_from_slice(&bits.to_be_bytes()[1..chunk.len()]);
    }
    Some(out)
}

/// The run's log (`GET /v2/workflows/logs?workflowRunId=…`): it must have succeeded with the
/// endpoint's result, showing the initial payload and every step once.
async fn check_log(tern: &Tern, run_id: &str) -> Result<String, String> {
    let response = load::client()
        .get(format!("{}/v2/workflows/logs?workflowRunId={run_id}", tern.url))
        .bearer_auth(TOKEN)
        .send()
        .await
        .and_then(|response| response.error_for_status())
        .map_err(|e| format!("GET /v2/workflows/logs: {e}"))?;
    let log: Value = serde_json::from_slice(&response.bytes().await.unwrap_or_default())
        .map_err(|e| format!("GET /v2/workflows/logs: {e}"))?;
    let run = &log["runs"][0];
    let steps: Vec<&Value> = run["steps"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|group| group["steps"].as_array().into_iter().flatten())
        .collect();
    let kinds: Vec<String> = steps
        .iter()
        .map(|step| format!("{}:{}", step["stepType"].as_str().unwrap_or("?"), step["state"].as_str().unwrap_or("?")))
        .collect();
    let runs = steps.iter().filter(|step| step["stepType"] == "Run" && step["state"] == "STEP_SUCCESS").count();
    let initial = steps.iter().filter(|step| step["stepType"] == "Initial").count();
    let response = run["workflowRunResponse"].as_str().unwrap_or_default();
    let expected = json!({ "run": run_id, "steps": STEPS }).to_string();
    if run["workflowRunId"] != run_id
        || run["workflowState"] != "RUN_SUCCESS"
        || runs as u64 != STEPS
        || initial != 1
        || response != expected
    {
        return Err(format!("run {run_id}'s log: {}", serde_json::to_string(run).unwrap_or_default()));
    }
    Ok(format!(
        "{run_id}: {}, steps {}, response {response}",
        run["workflowState"].as_str().unwrap_or("?"),
        kinds.join(" ")
    ))
}

/// What `data_dir` holds (tern stopped): the pages in use from the database file's header,
/// and the size of all its files.
pub fn stored(data_dir: &Path) -> Stored {
    let file_bytes = std::fs::read_dir(data_dir)
        .map(|entries| entries.flatten().filter_map(|entry| entry.metadata().ok()).map(|m| m.len()).sum())
        .unwrap_or(0);
    let mut header = [0u8; 100];
    let read = std::fs::File::open(data_dir.join("tern.sqlite3")).and_then(|mut file| file.read_exact(&mut header));
    let used_bytes = read.ok().and_then(|()| used_bytes(&header)).unwrap_or(0);
    Stored { used_bytes, file_bytes }
}

/// The bytes of the pages in use, from a SQLite database header (its first 100 bytes): the
/// page size at offset 16 (1 meaning 65,536), the page count at 28 (valid when the change
/// counter at 24 equals the version at 92), the free list's page count at 36.
fn used_bytes(header: &[u8]) -> Option<u64> {
    if header.len() < 100 || !header.starts_with(b"SQLite format 3\0") {
        return None;
    }
    let u32_at = |offset: usize| u32::from_be_bytes(header[offset..offset + 4].try_into().expect("four bytes"));
    let page_size = match u16::from_be_bytes([header[16], header[17]]) {
        1 => 65_536,
        size => u64::from(size),
    };
    if u32_at(24) != u32_at(92) {
        return None;
    }
    Some(u64::from(u32_at(28).saturating_sub(u32_at(36))) * page_size)
}

/// This process's CPU time so far (the driver and the endpoint, or the load and the sink).
fn own_cpu_seconds() -> f64 {
    cpu_seconds(Some(std::process::id()))
}

#[cfg(test)]
#[path = "workflow_tests.rs"]
mod tests;
