//! Hostile and broken clients against the real `tern serve` binary: half-sent requests under
//! a lowered open-file limit, connections that send nothing or stay idle, and requests hyper
//! refuses before any handler sees them. Clients that hold connections without taking their
//! answers or sending their bodies are in `stalled`.

mod stalled;

use crate::harness::{DEADLINE, Receiver, http_client};
use serde_json::Value;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::FromRawFd;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;

const TOKEN: &str = "conn-token";

/// A `tern serve` child on a free port, killed when dropped.
struct Tern {
    child: std::process::Child,
    address: String,
    stderr: PathBuf,
    _directory: tempfile::TempDir,
}

impl Tern {
    /// Starts tern with `settings` (TOML lines under `[server]`) and, if given, an open-file
    /// limit (soft and hard) it cannot raise; waits until `/healthz` answers.
    async fn start(settings: &str, open_files: Option<u64>) -> Tern {
        Self::start_occupying(settings, open_files, 0).await
    }

    /// [`Tern::start`], with `occupied` descriptors (on /dev/null) inherited from the start.
    async fn start_occupying(settings: &str, open_files: Option<u64>, occupied: usize) -> Tern {
        let directory = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let file = directory.path().join("tern.toml");
        std::fs::write(
            &file,
            format!(
                "[server]\nlisten = \"127.0.0.1:{port}\"\n{settings}\n[storage]\ndata_dir = {:?}\n\
                 [[users]]\nid = \"conn\"\ntoken = \"{TOKEN}\"\n\
                 current_signing_key = \"sig_current\"\nnext_signing_key = \"sig_next\"\n",
                directory.path().join("data")
            ),
        )
        .unwrap();
        let stderr = directory.path().join("stderr.log");
        let mut command = Command::new(env!("CARGO_BIN_EXE_tern"));
        command
            .arg("serve")
            .arg("--config")
            .arg(&file)
            // At debug level the listener says why a connection ended, the dispatcher when an
            // attempt finished.
            .env("RUST_LOG", "info,tern_server::listener=debug,tern_engine::dispatcher=debug")
            .env_remove("TERN_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).unwrap());
        // Opened here (close-on-exec), duplicated in the child only: other tests' children
        // must not inherit it.
        let null = std::fs::File::open("/dev/null").unwrap();
        if open_files.is_some() || occupied > 0 {
            use std::os::unix::process::CommandExt;
            let limit = open_files.map(|limit| rustix::process::Rlimit { current: Some(limit), maximum: Some(limit) });
            // SAFETY: between fork and exec only raw setrlimit and dup2 system calls run, and
            // the descriptors dup2 replaces are the child's copies.
            unsafe {
                command.pre_exec(move || {
                    if let Some(limit) = limit {
                        rustix::process::setrlimit(rustix::process::Resource::Nofile, limit)?;
                    }
                    // The lowest descriptors, whatever this process holds there (its copies
                    // here are close-on-exec, gone in tern): dup2's are not, tern inherits them.
                    // (Plain dup would take the lowest free ones, above the limit when other
                    // tests hold many sockets.)
                    for fd in 3..3 + occupied as i32 {
                        // The descriptor is replaced in the child only, never closed here.
                        let mut target = std::os::fd::OwnedFd::from_raw_fd(fd);
                        let duplicated = rustix::io::dup2(&null, &mut target);
                        std::mem::forget(target);
                        duplicated?;
                    }
                    Ok(())
                });
            }
        }
        let tern = Tern {
            child: command.spawn().expect("tern starts"),
            address: format!("127.0.0.1:{port}"),
            stderr,
            _directory: directory,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        // Read until tern has closed it: no descriptor of tern's is freed later on (a test
        // that takes every descriptor must not see this one come free).
        while !tern.answers_health_check() {
            assert!(Instant::now() < deadline, "tern did not start:\n{}", tern.stderr_text());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tern
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    /// Asks `/healthz` on a connection of its own; true once tern answered 200 and closed it.
    fn answers_health_check(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect(&self.address) else { return false };
        stream.set_read_timeout(Some(DEADLINE)).unwrap();
        if stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").is_err() {
            return false;
        }
        read_until_closed(&mut stream).starts_with(b"HTTP/1.1 200")
    }

    fn stderr_text(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    fn connect(&self) -> TcpStream {
        let stream = TcpStream::connect(&self.address).expect("connects");
        stream.set_read_timeout(Some(DEADLINE)).unwrap();
        stream
    }
}

impl Drop for Tern {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads until the server closes the connection (a reset counts as closed); panics if it is
/// still open after the guard deadline.
fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let guard = Instant::now() + DEADLINE;
    let mut received = Vec::new();
    let mut buffer = [0u8; 65536];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) => return received,
            Ok(n) => received.extend_from_slice(&buffer[..n]),
            Err(error) if error.kind() == std::io::ErrorKind::ConnectionReset => return received,
            Err(error) if matches!(error.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                assert!(Instant::now() < guard, "the server kept the connection open");
            }
            Err(error) => panic!("reading failed: {error}"),
        }
    }
}

/// Status, lower-cased head and body of one raw HTTP/1.1 answer.
fn parse_answer(bytes: &[u8]) -> (u16, String, Vec<u8>) {
    let text = String::from_utf8_lossy(bytes);
    let end = text.find("\r\n\r\n").unwrap_or_else(|| panic!("no complete head in {text:?}"));
    let head = text[..end].to_ascii_lowercase();
    let status = head.split(' ').nth(1).and_then(|code| code.parse().ok()).expect("a status");
    (status, head, bytes[end + 4..].to_vec())
}

/// Reads one answer (its head, then `content-length` bytes) from a connection kept alive.
fn read_answer(stream: &mut TcpStream) -> (u16, String, Vec<u8>) {
    let mut received = Vec::new();
    let mut byte = [0u8; 1];
    while !received.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).expect("an answer's head");
        received.push(byte[0]);
    }
    let (status, head, _) = parse_answer(&received);
    let length: usize = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length: "))
        .and_then(|value| value.parse().ok())
        .expect("a content-length");
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).expect("the answer's body");
    (status, head, body)
}

/// Sends `request` on a new connection and returns the answer, read until the server closes.
fn raw_exchange(tern: &Tern, request: &[u8]) -> (u16, String, Value) {
    let mut stream = tern.connect();
    // The server may answer (and close) before it has read everything.
    let _ = stream.write_all(request);
    let (status, head, body) = parse_answer(&read_until_closed(&mut stream));
    assert!(head.contains("\r\ncontent-type: application/json"), "{head}");
    let json: Value = serde_json::from_slice(&body).unwrap_or_else(|_| panic!("not JSON: {body:?} after {head}"));
    assert!(json["error"].as_str().is_some_and(|message| !message.is_empty()), "{json}");
    (status, head, json)
}

/// `/healthz`, then a message published and delivered, all within the guard deadline.
async fn honest_clients_are_served(tern: &Tern, receiver: &Receiver, path: &str) {
    let client = http_client();
    let healthz = tokio::time::timeout(DEADLINE, client.get(tern.url("/healthz")).send())
        .await
        .unwrap_or_else(|_| panic!("/healthz did not answer:\n{}", tern.stderr_text()))
        .expect("/healthz answers");
    assert_eq!(healthz.status(), 200);
    let publish = client
        .post(tern.url(&format!("/v2/publish/{}", receiver.url(path))))
        .bearer_auth(TOKEN)
        .header("Upstash-Retries", "0")
        .body("delivered anyway")
        .send();
    let publish = tokio::time::timeout(DEADLINE, publish)
        .await
        .unwrap_or_else(|_| panic!("publishing did not answer:\n{}", tern.stderr_text()))
        .expect("publish answers");
    assert_eq!(publish.status(), 200, "{:?}", publish.text().await);
    let delivered = receiver.wait_for(path, 1).await;
    assert_eq!(&delivered[0].body[..], b"delivered anyway");
    let dlq: Value = client.get(tern.url("/v2/dlq")).bearer_auth(TOKEN).send().await.unwrap().json().await.unwrap();
    assert_eq!(dlq["messages"].as_array().map(Vec::len), Some(0), "{dlq}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_sent_requests_beyond_the_open_file_limit_lock_nobody_out() {
    const OPEN_FILES: u64 = 256;
    let receiver = Receiver::start().await;
    // Long timeouts: the connection limit alone must hold the attack off.
    let tern = Tern::start("header_read_timeout = \"10m\"\nidle_timeout = \"10m\"", Some(OPEN_FILES)).await;
    // Connections the server cannot accept wait in its queue, and past that are not
    // established: the attack takes what it gets.
    let attempts = (0..OPEN_FILES + 150).map(|_| async {
        let connect = tokio::net::TcpStream::connect(&tern.address);
        let mut stream = tokio::time::timeout(Duration::from_secs(5), connect).await.ok()?.ok()?;
        stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").await.ok()?;
        Some(stream)
    });
    let attack: Vec<_> = futures_util::future::join_all(attempts).await.into_iter().flatten().collect();

    honest_clients_are_served(&tern, &receiver, "/during-attack").await;
    let stderr = tern.stderr_text();
    assert!(!stderr.contains("Too many open files"), "{stderr}");
    assert!(attack.len() as u64 > OPEN_FILES, "only {} connections were opened", attack.len());
}

#[tokio::test]
async fn silent_half_sent_and_idle_connections_are_closed() {
    let tern = Tern::start("header_read_timeout = \"1s\"\nidle_timeout = \"2s\"", None).await;

    let mut silent = tern.connect();
    assert!(read_until_closed(&mut silent).is_empty(), "closed without an answer");

    let mut half_sent = tern.connect();
    half_sent.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").unwrap();
    assert!(read_until_closed(&mut half_sent).is_empty(), "closed without an answer");

    let mut kept_alive = tern.connect();
    kept_alive.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let (status, head, body) = parse_answer(&read_until_closed(&mut kept_alive));
    assert_eq!(status, 200, "answered, then closed once idle");
    assert!(!head.contains("connection: close"), "{head}");
    assert_eq!(body, br#"{"status":"ok"}"#);
}

#[tokio::test]
async fn requests_refused_below_the_handlers_get_json_errors() {
    let receiver = Receiver::start().await;
    let tern = Tern::start("", None).await;

    let (status, head, json) = raw_exchange(&tern, b"GARBAGE\r\n\r\n");
    assert_eq!(status, 400, "{head}");
    assert!(json["error"].as_str().unwrap().contains("malformed"), "{json}");

    let long_uri = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(70_000));
    let (status, head, json) = raw_exchange(&tern, long_uri.as_bytes());
    assert_eq!(status, 414, "{head}");
    assert!(json["error"].as_str().unwrap().contains("URI"), "{json}");

    let many_headers: String = (0..150).map(|i| format!("X-Header-{i}: 1\r\n")).collect();
    let request = format!("GET /healthz HTTP/1.1\r\nHost: x\r\n{many_headers}\r\n");
    let (status, head, json) = raw_exchange(&tern, request.as_bytes());
    assert_eq!(status, 431, "{head}");
    assert!(json["error"].as_str().unwrap().contains("headers"), "{json}");

    let huge_header = format!("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "b".repeat(600_000));
    let (status, head, _) = raw_exchange(&tern, huge_header.as_bytes());
    assert_eq!(status, 431, "{head}");

    // A body over the limit, still being sent when the answer comes, gets its 413.
    let big = vec![b'x'; 24 << 20];
    let response = http_client()
        .post(tern.url(&format!("/v2/publish/{}", receiver.url("/big"))))
        .bearer_auth(TOKEN)
        .body(big)
        .send()
        .await
        .expect("a 413 answer, not a reset");
    assert_eq!(response.status(), 413);
    let json: Value = response.json().await.unwrap();
    assert!(json["error"].as_str().unwrap().contains("limit"), "{json}");
}

#[tokio::test]
async fn slow_bodies_and_stalled_readers_are_cut_off() {
    let receiver = Receiver::start().await;
    let tern = Tern::start("request_body_timeout = \"1s\"\nwrite_timeout = \"1s\"", None).await;

    let mut slow = tern.connect();
    let head = format!(
        "POST /v2/publish/{} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: 100\r\n\r\n",
        receiver.url("/slow")
    );
    slow.write_all(head.as_bytes()).unwrap();
    slow.write_all(b"ten bytes.").unwrap();
    let (status, head, body) = parse_answer(&read_until_closed(&mut slow));
    assert_eq!(status, 408, "{head}");
    let json: Value = serde_json::from_slice(&body).unwrap();
    assert!(json["error"].as_str().unwrap().contains("did not arrive"), "{json}");

    // A log listing far larger than the socket buffers, to a client that does not read it.
    let client = http_client();
    let big = "b".repeat(5 << 20);
    let published = client
        .post(tern.url(&format!("/v2/publish/{}", receiver.url("/big"))))
        .bearer_auth(TOKEN)
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(published.status(), 200);
    let mut stalled = tern.connect();
    stalled
        .write_all(format!("GET /v2/logs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\r\n").as_bytes())
        .unwrap();
    let guard = Instant::now() + DEADLINE;
    while !tern.stderr_text().contains("connection ended with an error") {
        assert!(Instant::now() < guard, "the stalled write was never cut off:\n{}", tern.stderr_text());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, head, body) = parse_answer(&read_until_closed(&mut stalled));
    assert_eq!(status, 200, "{head}");
    let length: usize = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length: "))
        .and_then(|value| value.parse().ok())
        .expect("a content-length");
    assert!(body.len() < length, "the answer was cut short: {} of {length} bytes", body.len());
}

#[tokio::test]
async fn a_delivery_that_finds_no_descriptor_waits_instead_of_failing() {
    const OPEN_FILES: u64 = 128;
    const MAX_CONNECTIONS: usize = 40;
    const TRIES: usize = 5;
    let mut receivers = Vec::new();
    for _ in 0..TRIES {
        receivers.push(Receiver::start().await);
    }
    // Inherited descriptors leave tern fewer than its budget assumes, so that client
    // connections (which this test can close again) can take the last ones.
    let occupied = OPEN_FILES as usize - MAX_CONNECTIONS - 10;
    let settings =
        format!("max_connections = {MAX_CONNECTIONS}\nheader_read_timeout = \"10m\"\nidle_timeout = \"10m\"");
    let tern = Tern::start_occupying(&settings, Some(OPEN_FILES), occupied).await;
    // More connections than tern has descriptors left: the last ones wait unaccepted.
    let mut held: Vec<TcpStream> = (0..MAX_CONNECTIONS).map(|_| tern.connect()).collect();
    let guard = Instant::now() + DEADLINE;
    // Every descriptor taken (one freed a moment after start, say by what reads the system's
    // certificates, is taken again by the next accept), and tern has said so.
    let open_descriptors = || std::fs::read_dir(format!("/proc/{}/fd", tern.child.id())).unwrap().count() as u64;
    while open_descriptors() < OPEN_FILES || !tern.stderr_text().contains("accepting a connection failed") {
        assert!(
            Instant::now() < guard,
            "the connections did not take every descriptor ({} open):\n{}",
            open_descriptors(),
            tern.stderr_text()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // tern's own workings may free a descriptor for a moment (the accept loop takes it again
    // within its pause): an attempt that found one tested nothing, so publish again, to
    // another host (the first one's connection is now pooled, so it would find one again).
    let out_of_descriptors = || tern.stderr_text().contains("out of file descriptors");
    let mut published = 0;
    while !out_of_descriptors() {
        assert!(published < TRIES, "every attempt found a descriptor; nothing was tested:\n{}", tern.stderr_text());
        let publish = format!(
            "POST /v2/publish/{} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nUpstash-Retries: 0\r\nContent-Length: 4\r\n\r\nlate",
            receivers[published].url("/late")
        );
        held[0].write_all(publish.as_bytes()).unwrap();
        let (status, head, _) = read_answer(&mut held[0]);
        assert_eq!(status, 200, "{head}");
        published += 1;
        // The attempt ends one way or the other while tern has no descriptor to spare.
        let guard = Instant::now() + DEADLINE;
        while !out_of_descriptors() && tern.stderr_text().matches("attempt finished").count() < published {
            assert!(Instant::now() < guard, "no attempt was made:\n{}", tern.stderr_text());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    held.truncate(1);
    for receiver in &receivers[..published] {
        let delivered = receiver.wait_for("/late", 1).await;
        assert_eq!(&delivered[0].body[..], b"late");
        assert_eq!(delivered[0].header("upstash-retried"), Some("0"), "the deferred attempt did not count");
    }
    let client = http_client();
    let dlq: Value = client.get(tern.url("/v2/dlq")).bearer_auth(TOKEN).send().await.unwrap().json().await.unwrap();
    assert_eq!(dlq["messages"].as_array().map(Vec::len), Some(0), "{dlq}");
}

/// Idle delivery connections are pooled per host: deliveries to more hosts than the open-file
/// limit allows once kept every descriptor busy until the pool's idle timeout (the API too).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_to_more_hosts_than_descriptors_go_on() {
    const OPEN_FILES: u64 = 256;
    const HOSTS: usize = 300;
    let mut receivers = Vec::with_capacity(HOSTS);
    for _ in 0..HOSTS {
        receivers.push(Receiver::start().await);
    }
    let tern = Tern::start("[delivery]\nmax_concurrent = 8", Some(OPEN_FILES)).await;
    let client = http_client();
    for receiver in &receivers {
        let publish = client
            .post(tern.url(&format!("/v2/publish/{}", receiver.url("/host"))))
            .bearer_auth(TOKEN)
            .header("Upstash-Retries", "0")
            .body("one per host")
            .send()
            .await
            .expect("publish answers");
        assert_eq!(publish.status(), 200, "{:?}", publish.text().await);
    }
    for receiver in &receivers {
        receiver.wait_for("/host", 1).await;
    }
    let healthz = client.get(tern.url("/healthz")).send().await.expect("/healthz answers");
    assert_eq!(healthz.status(), 200);
}

#[tokio::test]
async fn shutdown_closes_waiting_connections_and_finishes_running_requests() {
    let receiver = Receiver::start().await;
    let mut tern = Tern::start("header_read_timeout = \"10m\"\nidle_timeout = \"10m\"", None).await;
    let mut half_sent = tern.connect();
    half_sent.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").unwrap();
    let mut running = tern.connect();
    let head = format!(
        "POST /v2/publish/{} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nExpect: 100-continue\r\n\
         Content-Length: 8\r\n\r\n",
        receiver.url("/running")
    );
    running.write_all(head.as_bytes()).unwrap();
    // hyper asks for the body once the handler reads it: the request is in progress.
    let mut continue_line = [0u8; 25];
    running.read_exact(&mut continue_line).unwrap();
    assert_eq!(&continue_line, b"HTTP/1.1 100 Continue\r\n\r\n");

    let pid = rustix::process::Pid::from_child(&tern.child);
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    assert!(read_until_closed(&mut half_sent).is_empty(), "closed at once, without an answer");
    running.write_all(b"finished").unwrap();
    let (status, head, body) = parse_answer(&read_until_closed(&mut running));
    assert_eq!(status, 200, "{head}");
    let json: Value = serde_json::from_slice(&body).unwrap();
    assert!(json["messageId"].is_string(), "{json}");
    let guard = Instant::now() + DEADLINE;
    while tern.child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < guard, "tern did not exit:\n{}", tern.stderr_text());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn http2_with_prior_knowledge_is_served() {
    let tern = Tern::start("", None).await;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder().http2_prior_knowledge().build().unwrap();
    for _ in 0..3 {
        let response = client.get(tern.url("/healthz")).send().await.expect("an HTTP/2 answer");
        assert_eq!(response.version(), reqwest::Version::HTTP_2);
        assert_eq!(response.status(), 200);
    }
    let keys = client.get(tern.url("/v2/keys")).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(keys.status(), 200);
}
