//! The scenarios: the baselines (straight to the sink, and the forwarders), immediate and
//! delayed delivery through tern, first attempts failing, and a large backlog (memory, publish
//! rate, restart recovery).

use crate::forwarder::Forwarder;
use crate::load::{self, Target, quantile};
use crate::processes::{TOKEN, Tern, thread_cpu_between};
use crate::sink::Sink;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// What one measured run produced.
#[derive(Debug, Clone, Default)]
pub struct Figures {
    pub publish_per_s: f64,
    pub publish_p50_ms: f64,
    pub publish_p99_ms: f64,
    pub delivered_per_s: f64,
    pub latency_p50_ms: f64,
    pub latency_p99_ms: f64,
    pub latency_max_ms: f64,
    pub delivered: u64,
    pub lost: u64,
    pub duplicates: u64,
    pub errors: u64,
    /// CPU time the server process (tern, or the forwarder) spent per delivered message, µs.
    pub server_cpu_us: f64,
    /// The same, by thread name (tern's runs only), largest first.
    pub server_thread_cpu_us: Vec<(String, f64)>,
    /// The share of the machine's CPU time that was idle during the run: near 0 when the run
    /// was bound by CPU, higher when by waits (the disk, or hand-offs in the closed loop).
    pub machine_idle: f64,
}

/// The baselines that run in a separate process (see `forwarder`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Baseline {
    /// Receive, push to the sink, answer.
    Forwarder,
    /// Receive, append and fsync, push, answer.
    DurableForwarder,
    /// Receive, append and fsync, answer; push afterwards.
    DurableQueue,
}

/// How long to wait for deliveries after progress stopped.
pub const STALL: Duration = Duration::from_secs(30);

pub struct Bench {
    pub start: Instant,
    pub sink: Sink,
    pub tern_binary: std::path::PathBuf,
    pub work_dir: tempfile::TempDir,
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

pub fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

pub fn tern_target(tern: &Tern, sink: &Sink, headers: &[(&str, String)]) -> Target {
    let mut all = vec![("authorization".to_string(), format!("Bearer {TOKEN}"))];
    all.extend(headers.iter().map(|(name, value)| (name.to_string(), value.clone())));
    Target { url: format!("{}/v2/publish/{}", tern.url, sink.url), headers: all }
}

impl Bench {
    /// Publishes `messages` to `target` and waits for them at the sink.
    pub async fn measure(&self, target: &Target, messages: u64, concurrency: usize) -> Figures {
        self.measure_due(target, messages, concurrency, None, None).await
    }

    /// Like [`Bench::measure`], for messages not due before `due_unix_ms`, published at
    /// `per_second` when given.
    async fn measure_due(
        &self,
        target: &Target,
        messages: u64,
        concurrency: usize,
        due_unix_ms: Option<u64>,
        per_second: Option<f64>,
    ) -> Figures {
        self.sink.reset();
        let machine_before = crate::processes::machine_ticks();
        let mut load = load::run_paced(self.start, target, messages, 0, concurrency, per_second, None).await;
        if let Some(due) = due_unix_ms {
            tokio::time::sleep(Duration::from_millis(due.saturating_sub(unix_ms()))).await;
        }
        self.wait_for(messages).await;
        let machine_idle = crate::processes::idle_between(machine_before, crate::processes::machine_ticks());
        let mut arrivals = self.sink.arrivals();
        let mut latencies: Vec<u64> = arrivals.iter().map(|a| a.arrived_us.saturating_sub(a.sent_us)).collect();
        arrivals.sort_by_key(|a| a.arrived_us);
        let last = arrivals.last().map_or(load.started_us, |a| a.arrived_us);
        let delivered = arrivals.len() as u64;
        Figures {
            publish_per_s: messages as f64 / load.elapsed.as_secs_f64(),
            publish_p50_ms: ms(quantile(&mut load.latencies_us, 0.5)),
            publish_p99_ms: ms(quantile(&mut load.latencies_us, 0.99)),
            delivered_per_s: delivered as f64 / ((last - load.started_us).max(1) as f64 / 1e6),
            latency_p50_ms: ms(quantile(&mut latencies, 0.5)),
            latency_p99_ms: ms(quantile(&mut latencies, 0.99)),
            latency_max_ms: ms(quantile(&mut latencies, 1.0)),
            delivered,
            lost: messages.saturating_sub(delivered + load.errors),
            duplicates: self.sink.state.duplicates.load(Ordering::Relaxed),
            errors: load.errors,
            server_cpu_us: 0.0,
            server_thread_cpu_us: Vec::new(),
            machine_idle,
        }
    }

    /// Waits until `count` distinct messages arrived, or nothing arrived for a while.
    pub async fn wait_for(&self, count: u64) {
        let mut last = (0, Instant::now());
        while (self.sink.unique() as u64) < count {
            let now = self.sink.unique();
            if now != last.0 {
                last = (now, Instant::now());
            } else if last.1.elapsed() > STALL {
                eprintln!("  ! only {now} of {count} messages arrived");
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    pub async fn fresh_tern(&self, name: &str) -> Tern {
        Tern::start(&self.tern_binary, &self.work_dir.path().join(name)).await
    }

    pub async fn direct(&self, messages: u64, concurrency: usize) -> Figures {
        let target = Target { url: self.sink.url.clone(), headers: Vec::new() };
        self.measure(&target, messages, concurrency).await
    }

    /// A run through one of the forwarder baselines.
    pub async fn forwarder(&self, messages: u64, concurrency: usize, baseline: Baseline) -> Figures {
        let durable = baseline != Baseline::Forwarder;
        let journal = durable.then(|| self.work_dir.path().join(format!("journal-{concurrency}-{}", unix_ms())));
        let push_after_answer = baseline == Baseline::DurableQueue;
        // Room for every body after its length, and a MiB to spare: the run never grows the file.
        let preallocated = messages * (load::BODY_BYTES as u64 + 4) + (1 << 20);
        let journal = journal.as_deref().map(|path| (path, preallocated));
        let forwarder = Forwarder::start(&self.sink.url, journal, push_after_answer).await;
        let target = Target { url: forwarder.url.clone(), headers: Vec::new() };
        let cpu = forwarder.cpu_seconds();
        let mut figures = self.measure(&target, messages, concurrency).await;
        figures.server_cpu_us = (forwarder.cpu_seconds() - cpu) * 1e6 / figures.delivered.max(1) as f64;
        figures
    }

    /// A tern on a fresh PostgreSQL database of the server `TERN_TEST_POSTGRES_URL` names
    /// (`scripts/bench` starts one, as `scripts/test` does).
    pub async fn fresh_tern_on_postgres(&self, name: &str) -> Tern {
        let server = tern_store::postgres::testing::server_url()
            .expect("TERN_TEST_POSTGRES_URL names the PostgreSQL server (scripts/bench sets it)");
        let database = tern_store::postgres::testing::create_database(&server).await.expect("a database");
        Tern::start_on_postgres(&self.tern_binary, &self.work_dir.path().join(name), &database).await
    }

    /// One run of immediate deliveries through tern on a fresh PostgreSQL database.
    pub async fn immediate_on_postgres(&self, messages: u64, concurrency: usize) -> Figures {
        let tern = self.fresh_tern_on_postgres(&format!("postgres-{concurrency}")).await;
        let figures = self.immediate_on(&tern, messages, concurrency).await;
        tern.stop().await;
        figures
    }

    /// One run of `round` (a fresh data directory each).
    pub async fn immediate(&self, messages: u64, concurrency: usize, round: usize) -> Figures {
        let tern = self.fresh_tern(&format!("immediate-{concurrency}-{round}")).await;
        let figures = self.immediate_on(&tern, messages, concurrency).await;
        tern.stop().await;
        figures
    }

    /// A run of immediate deliveries through a running `tern`, with its CPU per message.
    pub async fn immediate_on(&self, tern: &Tern, messages: u64, concurrency: usize) -> Figures {
        let (cpu, threads) = (tern.cpu_seconds(), tern.thread_cpu_seconds());
        let mut figures = self.measure(&tern_target(tern, &self.sink, &[]), messages, concurrency).await;
        (figures.server_cpu_us, figures.server_thread_cpu_us) = cpu_per(tern, cpu, &threads, figures.delivered);
        figures
    }

    /// Messages all due at the same second: how late each arrives after it. The returned
    /// figures count deliveries from the due time.
    pub async fn delayed(&self, messages: u64, concurrency: usize, lead: Duration) -> (Figures, [f64; 3]) {
        let tern = self.fresh_tern("delayed").await;
        let due_s = (unix_ms() + lead.as_millis() as u64).div_ceil(1000);
        let target = tern_target(&tern, &self.sink, &[("upstash-not-before", due_s.to_string())]);
        let figures = self.measure_due(&target, messages, concurrency, Some(due_s * 1000), None).await;
        let mut lateness: Vec<u64> =
            self.sink.arrivals().iter().map(|a| a.arrived_unix_ms.saturating_sub(due_s * 1000)).collect();
        let late = [quantile(&mut lateness, 0.5), quantile(&mut lateness, 0.99), quantile(&mut lateness, 1.0)];
        tern.stop().await;
        let figures =
            Figures { delivered_per_s: figures.delivered as f64 / (late[2].max(1) as f64 / 1000.0), ..figures };
        (figures, late.map(|ms| ms as f64))
    }

    /// Messages published at a steady `per_second`, each with `Upstash-Delay: delay`: how late
    /// each arrives after its own due time, taken as its send time plus the delay (so the
    /// publish's own latency counts as lateness).
    pub async fn delayed_paced(
        &self,
        messages: u64,
        concurrency: usize,
        per_second: f64,
        delay: Duration,
    ) -> (Figures, [f64; 3]) {
        let tern = self.fresh_tern("delayed-paced").await;
        let target = tern_target(&tern, &self.sink, &[("upstash-delay", format!("{}ms", delay.as_millis()))]);
        let figures = self.measure_due(&target, messages, concurrency, None, Some(per_second)).await;
        let delay_us = delay.as_micros() as u64;
        let mut lateness: Vec<u64> =
            self.sink.arrivals().iter().map(|a| a.arrived_us.saturating_sub(a.sent_us + delay_us)).collect();
        let late = [0.5, 0.99, 1.0].map(|q| ms(quantile(&mut lateness, q)));
        tern.stop().await;
        (figures, late)
    }

    /// 20 % of first attempts fail; every message must still arrive, with none in the DLQ.
    pub async fn failing(&self, messages: u64, concurrency: usize) -> (Figures, u64, u64) {
        let tern = self.fresh_tern("failing").await;
        let target = tern_target(&tern, &self.sink, &[("upstash-retry-delay", "50".into())]);
        self.sink.state.fail_percent.store(20, Ordering::SeqCst);
        let figures = self.measure(&target, messages, concurrency).await;
        self.sink.state.fail_percent.store(0, Ordering::SeqCst);
        let failed = self.sink.state.failed_on_purpose.load(Ordering::Relaxed);
        let dlq = dlq_size(&tern).await;
        tern.stop().await;
        (figures, failed, dlq)
    }
}

/// tern's CPU time since `cpu` and `threads` were sampled, per one of `count` (µs): in all, and
/// by thread name (largest first, those under 0.5 µs left out).
pub fn cpu_per(
    tern: &Tern,
    cpu: f64,
    threads: &std::collections::BTreeMap<u32, (String, f64)>,
    count: u64,
) -> (f64, Vec<(String, f64)>) {
    let per_one = |seconds: f64| seconds * 1e6 / count.max(1) as f64;
    let by_name = thread_cpu_between(threads, &tern.thread_cpu_seconds());
    let mut by_thread: Vec<(String, f64)> =
        by_name.into_iter().map(|(name, seconds)| (name, per_one(seconds))).filter(|(_, us)| *us >= 0.5).collect();
    by_thread.sort_by(|a, b| b.1.total_cmp(&a.1));
    (per_one(tern.cpu_seconds() - cpu), by_thread)
}

async fn dlq_size(tern: &Tern) -> u64 {
    let response = load::client()
        .get(format!("{}/v2/dlq", tern.url))
        .bearer_auth(TOKEN)
        .send()
        .await
        .and_then(|response| response.error_for_status());
    match response {
        Ok(response) => {
            let bytes = response.bytes().await.unwrap_or_default();
            let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
            body["messages"].as_array().map_or(0, |messages| messages.len() as u64)
        }
        Err(_) => u64::MAX,
    }
}

/// The backlog scenario's figures.
#[derive(Debug, Clone, Default)]
pub struct Backlog {
    pub load_per_s: f64,
    pub bytes_per_pending: f64,
    pub with_backlog: Figures,
    pub restart_ready: Duration,
    pub restart_first_delivery: Duration,
}

impl Bench {
    /// Loads `pending` delayed messages, measures memory, publishes `messages` immediate ones
    /// while the backlog exists, then kills and restarts tern and times the first delivery.
    pub async fn backlog(&self, pending: u64, messages: u64, concurrency: usize) -> Backlog {
        let mut tern = self.fresh_tern("backlog").await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let before = tern.rss_bytes();
        let far = [("upstash-delay", "1d".to_string())];
        let started = Instant::now();
        let load = load::run(self.start, &tern_target(&tern, &self.sink, &far), pending, 0, 128).await;
        let load_per_s = pending as f64 / started.elapsed().as_secs_f64();
        if load.errors > 0 {
            eprintln!("  ! {} backlog publishes failed", load.errors);
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        let after = tern.rss_bytes();
        let with_backlog = self.measure(&tern_target(&tern, &self.sink, &[]), messages, concurrency).await;
        let restart_ready = tern.crash_and_restart().await;
        self.sink.reset();
        let restarted = Instant::now() - restart_ready;
        load::run(self.start, &tern_target(&tern, &self.sink, &[]), 1, 0, 1).await;
        self.wait_for(1).await;
        let restart_first_delivery = restarted.elapsed();
        tern.stop().await;
        Backlog {
            load_per_s,
            bytes_per_pending: after.saturating_sub(before) as f64 / pending.max(1) as f64,
            with_backlog,
            restart_ready,
            restart_first_delivery,
        }
    }
}

/// Where tern's binary is expected: next to this one (`cargo build --release` builds both).
pub fn default_tern_binary() -> std::path::PathBuf {
    let own = std::env::current_exe().expect("own path");
    own.parent().unwrap_or(Path::new(".")).join("tern")
}

/// Memory the engine keeps per queue and per flow-control key once their messages are done.
#[derive(Debug, Clone, Default)]
pub struct Keys {
    pub bytes_per_queue: f64,
    pub bytes_per_flow_key: f64,
}

impl Bench {
    /// Sends one message through each of `count` queues, then one with each of `count`
    /// flow-control keys, and measures what stays in memory afterwards.
    pub async fn keys(&self, count: u64) -> Keys {
        let tern = self.fresh_tern("keys").await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut before = tern.rss_bytes();
        let mut per = Vec::new();
        for kind in ["queue", "flow"] {
            self.sink.reset();
            let clients = 32;
            let client = load::client();
            let tasks: Vec<_> = (0..clients)
                .map(|worker| {
                    let (client, tern_url, sink_url) = (client.clone(), tern.url.clone(), self.sink.url.clone());
                    tokio::spawn(async move {
                        for i in (worker..count).step_by(clients as usize) {
                            let (url, headers) = match kind {
                                "queue" => (format!("{tern_url}/v2/enqueue/q-{i}/{sink_url}"), vec![]),
                                _ => (
                                    format!("{tern_url}/v2/publish/{sink_url}"),
                                    vec![
                                        ("upstash-flow-control-key", format!("key-{i}")),
                                        ("upstash-flow-control-value", "parallelism=1".into()),
                                    ],
                                ),
                            };
                            let mut request = client.post(url).bearer_auth(TOKEN).body(load::body(i, 0));
                            for (name, value) in headers {
                                request = request.header(name, value);
                            }
                            let _ = request.send().await.map(|response| response.error_for_status());
                        }
                    })
                })
                .collect();
            for task in tasks {
                let _ = task.await;
            }
            self.wait_for(count).await;
            tokio::time::sleep(Duration::from_millis(500)).await;
            let after = tern.rss_bytes();
            per.push(after.saturating_sub(before) as f64 / count.max(1) as f64);
            before = after;
        }
        tern.stop().await;
        Keys { bytes_per_queue: per[0], bytes_per_flow_key: per[1] }
    }
}
