//! The processes under test: a `tern serve` on a fresh data directory with durable settings,
//! and the baseline forwarder (this binary's `forwarder` subcommand).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

pub const TOKEN: &str = "bench-token";

/// A free port on 127.0.0.1 (bound and released; the child binds it right after).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

pub struct Tern {
    child: Child,
    pub url: String,
    binary: PathBuf,
    config: PathBuf,
}

impl Tern {
    /// Starts tern on `data_dir` and waits until it answers.
    pub async fn start(binary: &Path, data_dir: &Path) -> Tern {
        let config = data_dir.with_extension("toml");
        let port = free_port();
        let durable = std::env::var("BENCH_DURABLE").map_or(true, |value| value != "false");
        std::fs::write(
            &config,
            format!(
                r#"[server]
listen = "127.0.0.1:{port}"
[storage]
data_dir = "{}"
durable = {durable}
[limits]
max_queues = 1000000
max_schedules = 10000000
[[users]]
id = "bench"
token = "{TOKEN}"
current_signing_key = "sig_benchCurrentKey000000000000000"
next_signing_key = "sig_benchNextKey000000000000000000"
"#,
                data_dir.display()
            ),
        )
        .expect("write the bench configuration");
        let child = spawn_tern(binary, &config);
        let mut tern = Tern { child, url: format!("http://127.0.0.1:{port}"), binary: binary.to_path_buf(), config };
        tern.wait_ready().await;
        tern
    }

    async fn wait_ready(&mut self) {
        let client = crate::load::client();
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("tern exited before answering ({status})");
            }
            let ready = client.get(format!("{}/healthz", self.url)).send().await;
            if ready.is_ok_and(|response| response.status().is_success()) {
                return;
            }
            assert!(Instant::now() < deadline, "tern did not start within two minutes");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Resident memory of the process, in bytes.
    pub fn rss_bytes(&self) -> u64 {
        let Some(pid) = self.child.id() else { return 0 };
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|value| value.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or(0, |kib| kib * 1024)
    }

    /// CPU time the process used so far (user + system), in seconds.
    pub fn cpu_seconds(&self) -> f64 {
        cpu_seconds(self.child.id())
    }

    /// `kill -9`, then a fresh start on the same data. Returns the time until it answered.
    pub async fn crash_and_restart(&mut self) -> Duration {
        self.child.kill().await.expect("kill tern");
        let started = Instant::now();
        self.child = spawn_tern(&self.binary, &self.config);
        self.wait_ready().await;
        started.elapsed()
    }

    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// CPU time (user + system) a process used so far, in seconds.
pub fn cpu_seconds(pid: Option<u32>) -> f64 {
    let Some(pid) = pid else { return 0.0 };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may contain spaces) start after the last ')';
    // utime and stime are the 12th and 13th of them, in clock ticks (100 per second).
    let fields: Vec<&str> = stat.rsplit_once(')').map_or("", |(_, rest)| rest).split_whitespace().collect();
    let ticks = |index: usize| fields.get(index).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

fn spawn_tern(binary: &Path, config: &Path) -> Child {
    Command::new(binary)
        .args(["serve", "--config"])
        .arg(config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot start {}: {e} (build it: cargo build --release -p tern-server)", binary.display())
        })
}

/// The forwarder baseline, in its own process like tern.
pub struct Forwarder {
    child: Child,
    pub url: String,
}

impl Forwarder {
    pub async fn start(sink_url: &str) -> Forwarder {
        let mut child = Command::new(std::env::current_exe().expect("own path"))
            .args(["forwarder", "--sink", sink_url])
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start the forwarder");
        let stdout = child.stdout.take().expect("forwarder stdout");
        let line = BufReader::new(stdout).lines().next_line().await.expect("forwarder output").expect("address");
        let address = line.strip_prefix("listening ").expect("forwarder announces its address");
        Forwarder { child, url: format!("http://{address}/forward") }
    }

    pub fn cpu_seconds(&self) -> f64 {
        cpu_seconds(self.child.id())
    }
}

/// The forwarder itself: answers each request only after posting its body to the sink.
pub async fn run_forwarder(sink: String) {
    let client = crate::load::client();
    let app = axum::Router::new().fallback(move |headers: axum::http::HeaderMap, body: bytes::Bytes| {
        let (client, sink) = (client.clone(), sink.clone());
        async move {
            let content_type = headers.get("content-type").cloned();
            let mut request = client.post(&sink).body(body);
            if let Some(content_type) = content_type {
                request = request.header("content-type", content_type);
            }
            match request.send().await {
                Ok(response) if response.status().is_success() => axum::http::StatusCode::OK,
                _ => axum::http::StatusCode::BAD_GATEWAY,
            }
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the forwarder");
    println!("listening {}", listener.local_addr().expect("address"));
    axum::serve(listener, app).await.expect("forwarder");
}
