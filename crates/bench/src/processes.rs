//! The process under test: a `tern serve` on a fresh data directory, durable unless
//! `BENCH_DURABLE=false` (the forwarder baselines are in `forwarder`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

pub const TOKEN: &str = "bench-token";

/// Whether tern runs with `durable = true` (the default; `BENCH_DURABLE=false` turns it off, for
/// comparison only).
pub fn durable() -> bool {
    std::env::var("BENCH_DURABLE").map_or(true, |value| value != "false")
}

/// A free port on 127.0.0.1 (bound and released; the child binds it right after).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

pub struct Tern {
    child: Child,
    pub url: String,
    binary: PathBuf,
    config: PathBuf,
    log: Option<TraceLog>,
}

/// Where tern's log goes instead of the bench's stderr, and what it logs (a `RUST_LOG` filter).
#[derive(Debug, Clone)]
pub struct TraceLog {
    pub filter: String,
    pub path: PathBuf,
}

impl Tern {
    /// Starts tern on `data_dir` and waits until it answers.
    pub async fn start(binary: &Path, data_dir: &Path) -> Tern {
        Self::start_logging(binary, data_dir, None).await
    }

    /// [`Tern::start`], logging into `log` (its restarts append to the same file).
    pub async fn start_logging(binary: &Path, data_dir: &Path, log: Option<TraceLog>) -> Tern {
        Self::start_on(binary, data_dir, None, log).await
    }

    /// [`Tern::start`] on the PostgreSQL database at `database` instead of the embedded store.
    pub async fn start_on_postgres(binary: &Path, data_dir: &Path, database: &str) -> Tern {
        Self::start_on(binary, data_dir, Some(database), None).await
    }

    async fn start_on(binary: &Path, data_dir: &Path, database: Option<&str>, log: Option<TraceLog>) -> Tern {
        let config = data_dir.with_extension("toml");
        let port = free_port();
        let durable = durable();
        std::fs::write(
            &config,
            format!(
                r#"[server]
listen = "127.0.0.1:{port}"
[storage]
data_dir = "{}"
durable = {durable}
{postgres}
[limits]
max_queues = 1000000
max_schedules = 10000000
[[users]]
id = "bench"
token = "{TOKEN}"
current_signing_key = "sig_benchCurrentKey000000000000000"
next_signing_key = "sig_benchNextKey000000000000000000"
"#,
                data_dir.display(),
                postgres =
                    database.map(|url| format!("backend = \"postgres\"\npostgres_url = \"{url}\"")).unwrap_or_default(),
            ),
        )
        .expect("write the bench configuration");
        let child = spawn_tern(binary, &config, log.as_ref());
        let url = format!("http://127.0.0.1:{port}");
        let mut tern = Tern { child, url, binary: binary.to_path_buf(), config, log };
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
        self.status_kib("VmRSS:") * 1024
    }

    /// The most resident memory the process had since it started or since
    /// [`Tern::reset_peak_rss`], in bytes.
    pub fn peak_rss_bytes(&self) -> u64 {
        self.status_kib("VmHWM:") * 1024
    }

    /// Starts [`Tern::peak_rss_bytes`] over from the current resident memory.
    pub fn reset_peak_rss(&self) {
        if let Some(pid) = self.child.id() {
            // "5" resets the peak resident set size (proc(5), clear_refs).
            std::fs::write(format!("/proc/{pid}/clear_refs"), "5").expect("reset tern's peak memory");
        }
    }

    fn status_kib(&self, field: &str) -> u64 {
        let Some(pid) = self.child.id() else { return 0 };
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        status
            .lines()
            .find_map(|line| line.strip_prefix(field))
            .and_then(|value| value.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap_or(0)
    }

    /// CPU time the process used so far (user + system), in seconds.
    pub fn cpu_seconds(&self) -> f64 {
        cpu_seconds(self.child.id())
    }

    /// CPU time of each living thread so far, in seconds (see [`thread_cpu_seconds`]).
    pub fn thread_cpu_seconds(&self) -> BTreeMap<u32, (String, f64)> {
        thread_cpu_seconds(self.child.id())
    }

    /// `kill -9`, then a fresh start on the same data. Returns the time until it answered.
    pub async fn crash_and_restart(&mut self) -> Duration {
        self.child.kill().await.expect("kill tern");
        let started = Instant::now();
        self.child = spawn_tern(&self.binary, &self.config, self.log.as_ref());
        self.wait_ready().await;
        started.elapsed()
    }

    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }

    /// Stops tern as an operator would (SIGTERM): it finishes its work, its store makes a last
    /// checkpoint, and its database file holds every committed page. Falls back to `kill -9`
    /// when it has not exited within a minute; returns whether it exited by itself.
    pub async fn shutdown(mut self) -> bool {
        if let Some(pid) = self.child.id() {
            let signalled = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .is_ok_and(|status| status.success());
            if signalled && let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(60), self.child.wait()).await {
                return true;
            }
        }
        let _ = self.child.kill().await;
        false
    }

    /// Bytes the process caused to be written to storage so far (`write_bytes` of
    /// `/proc/<pid>/io`: what reached the block layer, WAL and checkpoints alike).
    pub fn storage_write_bytes(&self) -> u64 {
        let Some(pid) = self.child.id() else { return 0 };
        let io = std::fs::read_to_string(format!("/proc/{pid}/io")).unwrap_or_default();
        io.lines()
            .find_map(|line| line.strip_prefix("write_bytes:"))
            .and_then(|value| value.trim().parse().ok())
            .unwrap_or(0)
    }
}

/// CPU time (user + system) a process used so far, in seconds.
pub fn cpu_seconds(pid: Option<u32>) -> f64 {
    let Some(pid) = pid else { return 0.0 };
    stat_cpu_seconds(&std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default())
}

/// The CPU time in a `/proc/…/stat` line, in seconds.
fn stat_cpu_seconds(stat: &str) -> f64 {
    // Fields after the command name (which may contain spaces) start after the last ')';
    // utime and stime are the 12th and 13th of them, in clock ticks (100 per second).
    let fields: Vec<&str> = stat.rsplit_once(')').map_or("", |(_, rest)| rest).split_whitespace().collect();
    let ticks = |index: usize| fields.get(index).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// The machine's CPU time so far from `/proc/stat`, in clock ticks: (idle, all). Idle counts
/// time waiting for the disk too (nothing else was runnable then).
pub fn machine_ticks() -> (u64, u64) {
    machine_ticks_of(&std::fs::read_to_string("/proc/stat").unwrap_or_default())
}

fn machine_ticks_of(stat: &str) -> (u64, u64) {
    // "cpu  user nice system idle iowait irq softirq steal guest guest_nice"; guest time is
    // also counted in user time, so the sum stops at steal.
    let ticks: Vec<u64> = stat
        .lines()
        .next()
        .and_then(|line| line.strip_prefix("cpu "))
        .map(|rest| rest.split_whitespace().take(8).filter_map(|v| v.parse().ok()).collect())
        .unwrap_or_default();
    let idle = ticks.get(3).copied().unwrap_or(0) + ticks.get(4).copied().unwrap_or(0);
    (idle, ticks.iter().sum())
}

/// The share of the machine's CPU time that was idle between two [`machine_ticks`] samples.
pub fn idle_between(before: (u64, u64), after: (u64, u64)) -> f64 {
    let all = after.1.saturating_sub(before.1);
    if all == 0 { 0.0 } else { after.0.saturating_sub(before.0) as f64 / all as f64 }
}

/// CPU time each living thread of a process used so far, in seconds, by thread id, with the
/// thread's name (tern names its store threads; tokio's workers and blocking threads share one).
pub fn thread_cpu_seconds(pid: Option<u32>) -> BTreeMap<u32, (String, f64)> {
    let mut threads = BTreeMap::new();
    let Some(tasks) = pid.and_then(|pid| std::fs::read_dir(format!("/proc/{pid}/task")).ok()) else {
        return threads;
    };
    for task in tasks.flatten() {
        let Some(tid) = task.file_name().to_str().and_then(|tid| tid.parse().ok()) else { continue };
        let read = |file: &str| std::fs::read_to_string(task.path().join(file)).unwrap_or_default();
        threads.insert(tid, (read("comm").trim().to_string(), stat_cpu_seconds(&read("stat"))));
    }
    threads
}

/// The CPU time each thread name used between two [`thread_cpu_seconds`] samples, in seconds.
/// Threads that ended in between took their time with them, so the sum can fall short of the
/// process's own figure.
pub fn thread_cpu_between(
    before: &BTreeMap<u32, (String, f64)>,
    after: &BTreeMap<u32, (String, f64)>,
) -> BTreeMap<String, f64> {
    let mut by_name = BTreeMap::new();
    for (tid, (name, seconds)) in after {
        let earlier = before.get(tid).map_or(0.0, |(_, seconds)| *seconds);
        *by_name.entry(name.clone()).or_default() += seconds - earlier;
    }
    by_name
}

fn spawn_tern(binary: &Path, config: &Path, log: Option<&TraceLog>) -> Child {
    let mut command = Command::new(binary);
    command.args(["serve", "--config"]).arg(config).stdout(Stdio::null()).kill_on_drop(true);
    match log {
        Some(log) => {
            let file = std::fs::OpenOptions::new().create(true).append(true).open(&log.path).expect("tern's log file");
            command.env("RUST_LOG", &log.filter).env("NO_COLOR", "1").stderr(file)
        }
        None => command.env("RUST_LOG", "warn").stderr(Stdio::inherit()),
    };
    command.spawn().unwrap_or_else(|e| {
        panic!("cannot start {}: {e} (build it: cargo build --release -p tern-server)", binary.display())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_cpu_reads_user_and_system_ticks_after_a_name_with_spaces() {
        // pid (comm) state ppid … utime stime: 250 + 50 ticks = 3 s.
        let stat = "42 (tokio rt) worker) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0";
        assert_eq!(stat_cpu_seconds(stat), 3.0);
        assert_eq!(stat_cpu_seconds(""), 0.0);
    }

    #[test]
    fn machine_idle_counts_idle_and_disk_wait_of_all_ticks() {
        let before = machine_ticks_of("cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 1 2 3\n");
        let after = machine_ticks_of("cpu  200 0 100 850 50 0 0 0 0 0\n");
        assert_eq!(before, (850, 1000));
        assert_eq!(idle_between(before, after), 0.25);
        assert_eq!(machine_ticks_of(""), (0, 0));
        assert_eq!(idle_between((0, 0), (0, 0)), 0.0);
        let (idle, all) = machine_ticks();
        assert!(all > 0 && idle <= all, "this machine's /proc/stat: {idle} of {all}");
    }

    #[test]
    fn this_process_threads_are_read_by_name() {
        let (started, thread_started) = std::sync::mpsc::channel();
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let named = std::thread::Builder::new()
            // Linux keeps the first 15 bytes of a thread's name.
            .name("bench-named".into())
            .spawn(move || {
                started.send(()).expect("report");
                let _ = stopped.recv();
            })
            .expect("spawn");
        thread_started.recv().expect("the thread runs");
        let threads = thread_cpu_seconds(Some(std::process::id()));
        assert!(threads.values().any(|(name, _)| name == "bench-named"), "{threads:?}");
        drop(stop);
        named.join().expect("join");
    }

    #[test]
    fn time_between_samples_is_summed_by_name() {
        let thread = |name: &str, seconds: f64| (name.to_string(), seconds);
        let before =
            BTreeMap::from([(1, thread("worker", 1.0)), (2, thread("worker", 2.0)), (3, thread("worker", 5.0))]);
        // 1 used 0.5 s, 2 used 1 s, 4 started and used 0.25 s; 3 ended, and its 5 s before the
        // first sample must not be taken off the others'.
        let after =
            BTreeMap::from([(1, thread("worker", 1.5)), (2, thread("worker", 3.0)), (4, thread("writer", 0.25))]);
        let between = thread_cpu_between(&before, &after);
        assert_eq!(between, BTreeMap::from([("worker".to_string(), 1.5), ("writer".to_string(), 0.25)]));
    }
}
