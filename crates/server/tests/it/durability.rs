//! Durability: pending work survives a graceful restart (on the manual clock) and a `kill -9`
//! of the real `tern` binary (in real time): every message a publish acknowledged is delivered.

use crate::harness::*;
use crate::timeline::*;
use axum::http::StatusCode;
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tern_core::signing;

async fn rotate_keys(server: &TestServer) -> Value {
    let (status, json) = send(server.post("/v2/keys/rotate")).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    json
}

#[tokio::test]
async fn a_restart_keeps_retries_delays_dlq_entries_and_rotated_keys() {
    let mut server = TestServer::start().await;
    let receiver = Receiver::start().await;
    receiver.script("/retry", vec![Reply::Status(500), Reply::Status(200)]);
    receiver.script("/dead", vec![Reply::Status(500)]);
    let retrying = server.publish_ok(&receiver.url("/retry"), &[], "retry me").await;
    receiver.wait_for("/retry", 1).await;
    wait_for_count(&server, &retrying, "RETRY", 1).await;
    let delayed = server.publish_ok(&receiver.url("/delayed"), &[("Upstash-Delay", "60s")], "later").await;
    let delayed_before = message_json(&server, &delayed).await;
    let dead = server.publish_ok(&receiver.url("/dead"), &[("Upstash-Retries", "0")], "dead").await;
    server.wait_for_state(&dead, "FAILED").await;
    let dlq_before = dlq_entry(&server, &dead).await;
    let keys = rotate_keys(&server).await;
    assert_eq!(keys["current"], NEXT_KEY);

    server.restart().await;

    let (status, keys_after) = send(server.get("/v2/keys")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(keys_after, keys, "rotated keys survive the restart");
    assert_eq!(message_json(&server, &delayed).await, delayed_before);
    assert_eq!(dlq_entry(&server, &dead).await, dlq_before);
    // Nothing is delivered just because the server started.
    receiver.assert_count_stays(&server, "/retry", 1).await;
    receiver.assert_count_stays(&server, "/delayed", 0).await;

    // The retry planned before the restart (12.18 s after the failure; the clock has not moved).
    expect_request_after(&server, &receiver, "/retry", 1, Duration::from_millis(12_182)).await;
    let states = server.wait_for_state(&retrying, "DELIVERED").await;
    assert_eq!(states, ["CREATED", "ACTIVE", "ERROR", "RETRY", "ACTIVE", "DELIVERED"], "the log continues");
    let until_due = delayed_before["notBefore"].as_i64().unwrap() - server.now_ms();
    expect_request_after(&server, &receiver, "/delayed", 0, Duration::from_millis(until_due as u64)).await;
    assert_eq!(server.wait_for_state(&delayed, "DELIVERED").await, ["CREATED", "ACTIVE", "DELIVERED"]);

    // Deliveries after the restart are signed with the rotated key.
    let now = server.now_ms() / 1000;
    for request in [&receiver.requests_to("/retry")[1], &receiver.requests_to("/delayed")[0]] {
        let token = request.header("upstash-signature").unwrap();
        assert!(signing::verify(token, NEXT_KEY, &request.body, None, now).is_ok());
        assert!(signing::verify(token, CURRENT_KEY, &request.body, None, now).is_err());
    }

    // Finished messages are not delivered again after another restart.
    server.restart().await;
    server.advance(Duration::from_secs(86_400));
    receiver.assert_count_stays(&server, "/retry", 2).await;
    receiver.assert_count_stays(&server, "/delayed", 1).await;
    receiver.assert_count_stays(&server, "/dead", 1).await;
    assert_eq!(server.log_states(&delayed).await, ["CREATED", "ACTIVE", "DELIVERED"]);
}

#[tokio::test]
async fn an_attempt_cut_short_by_shutdown_is_made_again_after_restart() {
    let mut server = TestServer::start_with(|config| config.delivery.shutdown_grace = "100ms".into()).await;
    let receiver = Receiver::start().await;
    receiver.script("/slow", vec![Reply::Hold(200), Reply::Status(200)]);
    let id = server.publish_ok(&receiver.url("/slow"), &[], "in flight").await;
    receiver.wait_for("/slow", 1).await;
    server.wait_for_state(&id, "ACTIVE").await;

    server.restart().await;

    let requests = receiver.wait_for("/slow", 2).await;
    assert_eq!(requests[1].header("upstash-message-id"), Some(id.as_str()));
    assert_eq!(requests[1].body, requests[0].body);
    let states = server.wait_for_state(&id, "DELIVERED").await;
    assert_eq!(states.iter().filter(|s| *s == "DELIVERED").count(), 1, "{states:?}");
    // The first attempt still waits, in the stopped engine, which can record nothing: let it
    // go, so that every request the receiver holds is one of this engine's.
    receiver.release("/slow", 1);
    receiver.assert_count_stays(&server, "/slow", 2).await;
}

/// The real `tern` binary, killed (SIGKILL) when dropped, so that a failing test leaves no
/// process behind.
/// The database of the test server on `data_dir` (on PostgreSQL): made at its first start,
/// kept in the directory, so that a restart finds its data again.
async fn postgres_database(data_dir: &Path) -> String {
    let kept = data_dir.join("postgres-url");
    if let Ok(url) = std::fs::read_to_string(&kept) {
        return url;
    }
    let server = tern_store::postgres::testing::server_url().expect("TERN_TEST_POSTGRES_URL");
    let url = tern_store::postgres::testing::create_database(&server).await.expect("a test database");
    std::fs::create_dir_all(data_dir).expect("data directory");
    std::fs::write(&kept, &url).expect("keep the database's URL");
    url
}

pub struct TernProcess {
    child: std::process::Child,
    pub url: String,
    stderr: PathBuf,
}

impl TernProcess {
    /// Starts `tern dev` on a free port and waits for the `QSTASH_URL=` line of its banner.
    pub async fn start(data_dir: &Path, stderr: PathBuf) -> TernProcess {
        Self::start_logging(data_dir, stderr, "warn").await
    }

    /// [`TernProcess::start`] with `RUST_LOG` set to `log_filter`.
    pub async fn start_logging(data_dir: &Path, stderr: PathBuf, log_filter: &str) -> TernProcess {
        Self::launch(data_dir, stderr, log_filter, crate::harness::on_postgres()).await
    }

    /// [`TernProcess::start_logging`] on the embedded store whatever the test run's backend, for
    /// tests of what happens to its data directory (a full disk).
    pub async fn start_on_embedded_store(data_dir: &Path, stderr: PathBuf, log_filter: &str) -> TernProcess {
        Self::launch(data_dir, stderr, log_filter, false).await
    }

    async fn launch(data_dir: &Path, stderr: PathBuf, log_filter: &str, on_postgres: bool) -> TernProcess {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&stderr).expect("stderr file");
        let mut command = Command::new(env!("CARGO_BIN_EXE_tern"));
        command.args(["dev", "--port", "0", "--host", "127.0.0.1", "--data-dir"]).arg(data_dir);
        if on_postgres {
            command.arg("--postgres-url").arg(postgres_database(data_dir).await);
        }
        let mut child = command
            .env("RUST_LOG", log_filter)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("tern starts");
        let stdout = child.stdout.take().expect("stdout");
        let mut process = TernProcess { child, url: String::new(), stderr };
        let (found, url) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            let mut found = Some(found);
            // Keep reading until the process ends, so that it never blocks on a full pipe.
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(url) = line.trim().strip_prefix("QSTASH_URL=")
                    && let Some(found) = found.take()
                {
                    let _ = found.send(url.to_string());
                }
            }
        });
        match tokio::time::timeout(Duration::from_secs(30), url).await {
            Ok(Ok(url)) => process.url = url,
            _ => panic!("tern printed no QSTASH_URL line; stderr:\n{}", process.stderr_text()),
        }
        process
    }

    pub fn kill(&mut self) {
        self.child.kill().expect("kill -9");
        self.child.wait().expect("reaped");
    }

    /// Sends SIGTERM and waits for the process to exit (a graceful shutdown).
    pub async fn terminate(&mut self) -> std::process::ExitStatus {
        let status = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().expect("kill runs");
        assert!(status.success(), "SIGTERM not sent");
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(tokio::time::Instant::now() < deadline, "tern did not stop; stderr:\n{}", self.stderr_text());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn stderr_text(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}

impl Drop for TernProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where message `i` of the crash test goes: every third to a destination that answers at
/// once, every third to one that never answers during the first run, every third to one that
/// answers at once but only after `Upstash-Not-Before` (real time, normally after the kill).
fn crash_test_route(i: usize) -> (&'static str, bool) {
    match i % 3 {
        0 => ("/fast", false),
        1 => ("/slow", false),
        _ => ("/delayed", true),
    }
}

/// `(message id, body)` of every publish acknowledged with a 2xx.
type Acknowledged = Arc<Mutex<Vec<(String, String)>>>;

/// Publishes `total` messages with `workers` concurrent publishers until the server stops
/// answering; records `(id, body)` of every publish acknowledged with a 2xx.
fn publish_many(
    url: &str,
    receiver: &Receiver,
    total: usize,
    workers: usize,
    not_before: i64,
) -> (Acknowledged, Vec<tokio::task::JoinHandle<()>>) {
    let acknowledged = Arc::new(Mutex::new(Vec::new()));
    let next = Arc::new(AtomicUsize::new(0));
    // reqwest is built without a default TLS provider (tern installs ring when it starts; no
    // in-process server runs here). Installing it twice is refused harmlessly.
    let http = http_client();
    let handles = (0..workers)
        .map(|_| {
            let (acknowledged, next, http) = (Arc::clone(&acknowledged), Arc::clone(&next), http.clone());
            let (url, receiver) = (url.to_string(), receiver.clone());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= total {
                        return;
                    }
                    let (path, delayed) = crash_test_route(i);
                    let body = format!("message {i} of the crash test");
                    let mut request = http
                        .post(format!("{url}/v2/publish/{}", receiver.url(path)))
                        .bearer_auth(TOKEN)
                        .body(body.clone());
                    if delayed {
                        request = request.header("Upstash-Not-Before", not_before.to_string());
                    }
                    // Once the server is gone, publishes fail and the worker stops.
                    let Ok(response) = request.send().await else { return };
                    if !response.status().is_success() {
                        return;
                    }
                    let Ok(json) = response.json::<Value>().await else { return };
                    let id = json["messageId"].as_str().expect("messageId").to_string();
                    acknowledged.lock().unwrap().push((id, body));
                }
            })
        })
        .collect();
    (acknowledged, handles)
}

/// Ids of the messages the receiver answered with a success: every request except those to
/// `/slow` among the first `hung` requests (which never got an answer).
fn delivered_ids(receiver: &Receiver, hung: usize) -> HashMap<String, HashSet<Vec<u8>>> {
    let mut delivered: HashMap<String, HashSet<Vec<u8>>> = HashMap::new();
    for (index, request) in receiver.requests().into_iter().enumerate() {
        if index < hung && request.target == "/slow" {
            continue;
        }
        if let Some(id) = request.header("upstash-message-id") {
            delivered.entry(id.to_string()).or_default().insert(request.body.to_vec());
        }
    }
    delivered
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_message_is_delivered_after_kill_9() {
    const TOTAL: usize = 450;
    const KILL_AFTER: usize = 300;
    let data_dir = tempfile::tempdir().expect("data directory");
    let stderr = data_dir.path().join("tern-stderr.log");
    let data = data_dir.path().join("data");
    let receiver = Receiver::start().await;
    receiver.script("/slow", vec![Reply::Hang]);

    let mut first = TernProcess::start(&data, stderr.clone()).await;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let (acknowledged, publishers) = publish_many(&first.url, &receiver, TOTAL, 16, now + 4);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while acknowledged.lock().unwrap().len() < KILL_AFTER && publishers.iter().any(|p| !p.is_finished()) {
        assert!(tokio::time::Instant::now() < deadline, "publishing stalled; stderr:\n{}", first.stderr_text());
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    // Publishes are in flight, deliveries to /slow hang, delayed messages wait.
    first.kill();
    for publisher in publishers {
        publisher.await.expect("publisher task");
    }
    let acknowledged: HashMap<String, String> = acknowledged.lock().unwrap().drain(..).collect();
    assert!(acknowledged.len() >= KILL_AFTER, "only {} publishes acknowledged", acknowledged.len());
    let first_run_requests = receiver.requests();
    let arrived: HashSet<&str> = first_run_requests.iter().filter_map(|r| r.header("upstash-message-id")).collect();
    let delivered = delivered_ids(&receiver, first_run_requests.len());
    let hanging = acknowledged.keys().filter(|id| arrived.contains(id.as_str()) && !delivered.contains_key(*id));
    let waiting = acknowledged.keys().filter(|id| !arrived.contains(id.as_str()));
    let (hanging, waiting) = (hanging.count(), waiting.count());
    eprintln!(
        "crash test: {} publishes acknowledged before the kill: {} delivered, {hanging} in flight, {waiting} waiting",
        acknowledged.len(),
        acknowledged.keys().filter(|id| delivered.contains_key(*id)).count(),
    );
    // Waiting messages are expected too, unless publishing took longer than the not-before.
    assert!(hanging > 0, "the kill must find deliveries in flight");

    receiver.script("/slow", vec![Reply::Status(200)]);
    let second = TernProcess::start(&data, stderr).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let delivered = delivered_ids(&receiver, first_run_requests.len());
        let missing: Vec<&String> = acknowledged.keys().filter(|id| !delivered.contains_key(*id)).collect();
        if missing.is_empty() {
            for (id, body) in &acknowledged {
                let expected = HashSet::from([body.as_bytes().to_vec()]);
                assert_eq!(delivered[id], expected, "{id} arrived with another body");
            }
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} of {} acknowledged messages were never delivered, e.g. {:?}; stderr:\n{}",
            missing.len(),
            acknowledged.len(),
            &missing[..missing.len().min(5)],
            second.stderr_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
