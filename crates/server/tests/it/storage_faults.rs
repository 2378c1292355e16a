//! Storage faults, with the real binary on a real filesystem that runs out of space: a small
//! tmpfs holds tern's data directory, and the test fills it up. Mounting needs root, which the
//! project's machines and CI have; the test fails (it does not skip) where mounting is refused.
//!
//! What must hold: an attempt whose outcome cannot be written is not delivered again for that
//! reason (delivery pauses instead), a client hears 507 rather than a bare 500, and once space
//! is freed — or after a restart — everything continues with nothing lost and no message
//! delivered more often than its retries allow plus the attempts in flight when tern stopped.

use crate::durability::TernProcess;
use crate::harness::*;
use axum::http::StatusCode;
use serde_json::Value;
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// A tmpfs of a few MiB mounted on a temporary directory, unmounted when dropped.
struct SmallDisk {
    mount: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(mebibytes: u32) -> SmallDisk {
        let mount = tempfile::tempdir().expect("mount point");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mebibytes}m"), "tmpfs"])
            .arg(mount.path())
            .status()
            .expect("mount runs");
        assert!(status.success(), "mounting a tmpfs failed ({status}): this test needs root");
        SmallDisk { mount }
    }

    fn path(&self) -> &Path {
        self.mount.path()
    }

    /// Writes a file until the disk is full; returns it (remove it to free the space).
    fn fill(&self) -> PathBuf {
        let path = self.path().join("filler");
        let mut file = std::fs::File::create(&path).expect("filler");
        for chunk in [1 << 20, 4096, 1] {
            let zeros = vec![0u8; chunk];
            loop {
                match file.write_all(&zeros) {
                    Ok(()) => {}
                    Err(error) if error.raw_os_error() == Some(28) => break, // ENOSPC
                    Err(error) => panic!("filling the disk: {error}"),
                }
            }
        }
        path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.path()).status();
    }
}

/// Messages of these tests: one retry, soon after the first attempt.
const HEADERS: [(&str, &str); 2] = [("Upstash-Retries", "1"), ("Upstash-Retry-Delay", "10")];

/// A 500 with a body large enough that recording it must grow tern's files.
fn failing_with_a_large_body() -> Reply {
    Reply::Held(Box::new(Reply::Full { status: 500, headers: Vec::new(), body: "x".repeat(1 << 20) }))
}

async fn publish(tern: &TernProcess, destination: &str, body: String) -> (StatusCode, Value) {
    let mut request =
        http_client().post(format!("{}/v2/publish/{destination}", tern.url)).bearer_auth(TOKEN).body(body);
    for (name, value) in HEADERS {
        request = request.header(name, value);
    }
    send(request).await
}

/// Requests per message id, in arrival order, with their `Upstash-Retried` values.
fn attempts_by_message(receiver: &Receiver, path: &str) -> HashMap<String, Vec<String>> {
    let mut attempts: HashMap<String, Vec<String>> = HashMap::new();
    for request in receiver.requests_to(path) {
        let id = request.header("upstash-message-id").expect("message id").to_string();
        attempts.entry(id).or_default().push(request.header("upstash-retried").unwrap_or("?").to_string());
    }
    attempts
}

/// Publishes `count` messages whose attempts the receiver holds, waits until all are held, and
/// fills the disk.
async fn hold_attempts_and_fill_the_disk(
    tern: &TernProcess,
    receiver: &Receiver,
    disk: &SmallDisk,
    count: usize,
) -> (Vec<String>, PathBuf) {
    receiver.script("/full", vec![failing_with_a_large_body()]);
    let mut ids = Vec::new();
    for i in 0..count {
        let (status, json) = publish(tern, &receiver.url("/full"), format!("message {i}")).await;
        assert_eq!(status, StatusCode::OK, "{json}");
        ids.push(json["messageId"].as_str().expect("messageId").to_string());
    }
    receiver.wait_in_flight("/full", count).await;
    (ids, disk.fill())
}

/// Waits until tern has offered an unrecorded outcome again `offers` times (with its pauses,
/// longer than the second the redelivery storm took), failing at once should a message be
/// delivered a second time meanwhile.
async fn wait_for_offers_without_redelivery(tern: &TernProcess, receiver: &Receiver, offers: usize) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let repeated: Vec<(String, Vec<String>)> =
            attempts_by_message(receiver, "/full").into_iter().filter(|(_, attempts)| attempts.len() > 1).collect();
        assert!(repeated.is_empty(), "delivered again while its outcome could not be written: {repeated:?}");
        if tern.stderr_text().matches("offering it again").count() >= offers {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "no outcome offered again; stderr:\n{}", tern.stderr_text());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until every message's log ends with `FAILED`.
async fn wait_all_failed(tern: &TernProcess, ids: &[String]) {
    let http = http_client();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    for id in ids {
        loop {
            let request = http.get(format!("{}/v2/logs?messageId={id}", tern.url)).bearer_auth(TOKEN);
            let (status, json) = send(request).await;
            assert_eq!(status, StatusCode::OK, "{json}");
            if json["events"][0]["state"] == "FAILED" {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{id} did not fail: {json}; stderr:\n{}",
                tern.stderr_text()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn log_filter() -> &'static str {
    "warn,tern_engine::recording=debug"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_pauses_delivery_and_everything_continues_once_space_is_freed() {
    const MESSAGES: usize = 6;
    let disk = SmallDisk::mount(48);
    let logs = tempfile::tempdir().expect("log directory");
    let receiver = Receiver::start().await;
    let tern =
        TernProcess::start_on_embedded_store(&disk.path().join("data"), logs.path().join("stderr"), log_filter()).await;
    let (ids, filler) = hold_attempts_and_fill_the_disk(&tern, &receiver, &disk, MESSAGES).await;

    let (status, json) = publish(&tern, &receiver.url("/other"), "y".repeat(1 << 20)).await;
    assert_eq!(status, StatusCode::INSUFFICIENT_STORAGE, "{json}");
    assert!(json["error"].as_str().is_some_and(|error| error.contains("disk is full")), "{json}");

    receiver.release("/full", MESSAGES);
    wait_for_offers_without_redelivery(&tern, &receiver, 4).await;

    std::fs::remove_file(filler).expect("free the space");
    receiver.release("/full", MESSAGES);
    wait_all_failed(&tern, &ids).await;
    let attempts = attempts_by_message(&receiver, "/full");
    for id in &ids {
        assert_eq!(attempts[id], ["0", "1"], "{id}: the first attempt, then its one retry");
    }
    let mut in_dlq = Vec::new();
    let mut cursor = String::new();
    loop {
        let url = format!("{}/v2/dlq?trimBody=-1&cursor={cursor}", tern.url);
        let (status, json) = send(http_client().get(url).bearer_auth(TOKEN)).await;
        assert_eq!(status, StatusCode::OK, "{json}");
        let page = json["messages"].as_array().expect("messages").iter();
        in_dlq.extend(page.filter_map(|m| m["messageId"].as_str().map(str::to_string)));
        match json["cursor"].as_str() {
            Some(next) => cursor = next.to_string(),
            None => break,
        }
    }
    in_dlq.sort_unstable();
    let mut expected = ids.clone();
    expected.sort_unstable();
    assert_eq!(in_dlq, expected, "the DLQ holds exactly the failed messages");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_while_outcomes_cannot_be_written_repeats_only_the_attempts_in_flight() {
    const MESSAGES: usize = 4;
    let disk = SmallDisk::mount(48);
    let logs = tempfile::tempdir().expect("log directory");
    let stderr = logs.path().join("stderr");
    let data = disk.path().join("data");
    let receiver = Receiver::start().await;
    let mut tern = TernProcess::start_on_embedded_store(&data, stderr.clone(), log_filter()).await;
    let (ids, filler) = hold_attempts_and_fill_the_disk(&tern, &receiver, &disk, MESSAGES).await;
    receiver.release("/full", MESSAGES);
    wait_for_offers_without_redelivery(&tern, &receiver, 4).await;

    let status = tern.terminate().await;
    let said = tern.stderr_text();
    assert!(!said.contains("cannot start"), "shutting down is not starting:\n{said}");
    assert!(status.success() || said.contains("could not shut down cleanly"), "{status}:\n{said}");

    std::fs::remove_file(filler).expect("free the space");
    let tern = TernProcess::start_on_embedded_store(&data, stderr, log_filter()).await;
    receiver.release("/full", 2 * MESSAGES);
    wait_all_failed(&tern, &ids).await;
    let attempts = attempts_by_message(&receiver, "/full");
    for id in &ids {
        assert_eq!(
            attempts[id],
            ["0", "0", "1"],
            "{id}: the unrecorded attempt once more after the restart, then its one retry"
        );
    }
}
