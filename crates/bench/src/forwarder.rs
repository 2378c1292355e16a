//! The forwarder baselines, each in its own process like tern (this binary's `forwarder`
//! subcommand). The plain one answers a request only after posting its body to the sink: the
//! cost floor of "receive + push". With a journal it first appends the body to a file and
//! waits for an `fdatasync` of it: the floor of "receive + store durably + push", with no
//! queue features at all. Its syncs are grouped like tern's: one sync covers every body that
//! arrived while the previous sync ran, so it measures the price of durability on this disk,
//! not the price of one fsync per request.
//!
//! The durable queue is the same durable forwarder in tern's shape: it answers a request as soon
//! as its body is synced and pushes the body to the sink afterwards, in a task of its own. It is
//! the floor of what tern does (accept durably, then deliver) with no queue features: no ids, no
//! state, no log, no retry.

use bytes::Bytes;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::mpsc;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::oneshot;

/// A running forwarder process.
pub struct Forwarder {
    child: Child,
    pub url: String,
}

impl Forwarder {
    /// Starts a forwarder to `sink_url`; with `journal`, a durable one writing to that file
    /// (preallocated with that many bytes); with `push_after_answer` too, the durable queue.
    pub async fn start(sink_url: &str, journal: Option<(&Path, u64)>, push_after_answer: bool) -> Forwarder {
        let mut command = Command::new(std::env::current_exe().expect("own path"));
        command.args(["forwarder", "--sink", sink_url]);
        if let Some((journal, preallocated)) = journal {
            command.arg("--journal").arg(journal).arg("--preallocate").arg(preallocated.to_string());
        }
        if push_after_answer {
            command.arg("--push-after-answer");
        }
        let mut child = command.stdout(Stdio::piped()).kill_on_drop(true).spawn().expect("start the forwarder");
        let stdout = child.stdout.take().expect("forwarder stdout");
        let line = BufReader::new(stdout).lines().next_line().await.expect("forwarder output").expect("address");
        let address = line.strip_prefix("listening ").expect("forwarder announces its address");
        Forwarder { child, url: format!("http://{address}/forward") }
    }

    pub fn cpu_seconds(&self) -> f64 {
        crate::processes::cpu_seconds(self.child.id())
    }
}

/// One body waiting for the journal, and whom to tell once it is synced.
type JournalEntry = (Bytes, oneshot::Sender<()>);

/// The forwarder itself: answers each request only after posting its body to the sink (and,
/// with a journal, only after the body was synced to it before that). With
/// `push_after_answer` (and a journal), it answers once the body is synced and posts it to the
/// sink afterwards.
pub async fn run(sink: String, journal: Option<PathBuf>, preallocated: u64, push_after_answer: bool) {
    let client = crate::load::client();
    let journal = journal.map(|path| start_journal(path, preallocated));
    let app = axum::Router::new().fallback(move |headers: axum::http::HeaderMap, body: Bytes| {
        let (client, sink, journal) = (client.clone(), sink.clone(), journal.clone());
        async move {
            if let Some(journal) = &journal {
                let (synced, done) = oneshot::channel();
                journal.send((body.clone(), synced)).expect("journal thread runs");
                done.await.expect("journal synced");
            }
            let push = push(client, sink, headers.get("content-type").cloned(), body);
            if push_after_answer {
                // A lost push shows in the bench as a lost message.
                tokio::spawn(push);
                return axum::http::StatusCode::CREATED;
            }
            if push.await { axum::http::StatusCode::OK } else { axum::http::StatusCode::BAD_GATEWAY }
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the forwarder");
    println!("listening {}", listener.local_addr().expect("address"));
    axum::serve(listener, app).await.expect("forwarder");
}

/// Posts `body` to the sink; whether it answered with a success.
async fn push(
    client: reqwest::Client,
    sink: String,
    content_type: Option<axum::http::HeaderValue>,
    body: Bytes,
) -> bool {
    let mut request = client.post(&sink).body(body);
    if let Some(content_type) = content_type {
        request = request.header("content-type", content_type);
    }
    matches!(request.send().await, Ok(response) if response.status().is_success())
}

/// A thread that appends bodies (each after its length) to `path`, which starts with
/// `preallocated` zero bytes, and syncs them, a group at a time. A failed write or sync stops the thread; every request after that fails (its handler
/// panics and the connection drops), and the bench prints them as failed publishes.
fn start_journal(path: PathBuf, preallocated: u64) -> mpsc::Sender<JournalEntry> {
    let (sender, receiver) = mpsc::channel::<JournalEntry>();
    let mut file =
        std::fs::OpenOptions::new().create(true).write(true).truncate(true).open(&path).expect("open the journal");
    // Written out and synced before the first request, so that a sync within the preallocated
    // bytes writes data pages only, as SQLite's reused WAL mostly does, not also a new file size
    // and extents to ext4's journal.
    std::io::copy(&mut std::io::repeat(0).take(preallocated), &mut file).expect("preallocate the journal");
    file.sync_all().expect("sync the preallocated journal");
    file.rewind().expect("rewind the journal");
    std::thread::spawn(move || {
        let mut buffer = Vec::new();
        while let Ok(first) = receiver.recv() {
            let group: Vec<JournalEntry> = std::iter::once(first).chain(receiver.try_iter()).collect();
            buffer.clear();
            for (body, _) in &group {
                buffer.extend_from_slice(&(body.len() as u32).to_le_bytes());
                buffer.extend_from_slice(body);
            }
            file.write_all(&buffer).expect("write the journal");
            file.sync_data().expect("sync the journal");
            for (_, synced) in group {
                let _ = synced.send(());
            }
        }
    });
    sender
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_journal_holds_each_answered_body_after_its_length_over_its_zeros() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("journal");
        let journal = start_journal(path.clone(), 3 << 20);
        let mut answers = Vec::new();
        for body in ["first", "second body"] {
            let (synced, done) = oneshot::channel();
            journal.send((Bytes::from(body), synced)).expect("send");
            answers.push(done);
        }
        for done in answers {
            done.await.expect("synced");
        }
        let written = std::fs::read(&path).expect("read");
        let mut expected = Vec::new();
        for body in ["first", "second body"] {
            expected.extend_from_slice(&(body.len() as u32).to_le_bytes());
            expected.extend_from_slice(body.as_bytes());
        }
        assert_eq!(written.len(), 3 << 20, "the bodies overwrite the preallocated zeros");
        assert_eq!(&written[..expected.len()], expected);
        assert!(written[expected.len()..].iter().all(|&byte| byte == 0));
    }
}
