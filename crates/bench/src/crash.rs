//! The crash scenario: `kill -9` of tern while messages are published and delivered, a restart
//! on the same data, and what that cost: messages lost (must be none) and messages delivered
//! twice. A message is delivered again after a crash when its attempt reached the destination
//! but its outcome was not committed yet, so the duplicates count those attempts, and how long
//! before the kill their first copy arrived says how long outcomes wait to be committed.

use crate::load;
use crate::processes::{Tern, TraceLog};
use crate::scenarios::{Bench, STALL, tern_target};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// How long a client waits before sending a publish again that tern did not acknowledge (it
/// was down): clients ride out the restart, so that every message is published in the end.
const RETRY_AFTER: Duration = Duration::from_millis(20);

/// tern's log filter in this run: warnings, and the trace of each outcome's way to the disk.
const OUTCOME_TRACE: &str = "warn,tern_engine::recording=trace";

/// The window before the kill over which the delivery rate at the kill is taken.
const RATE_WINDOW_US: u64 = 200_000;

/// How long nothing must arrive after the last message before the run counts as drained (late
/// duplicates would come within it: after a restart every unfinished message is due at once).
const QUIET: Duration = Duration::from_millis(500);

/// The crash scenario's figures.
#[derive(Debug, Clone, Default)]
pub struct Crash {
    /// Messages acknowledged by tern (every message, in the end: clients retry).
    pub published: u64,
    /// Publishes not acknowledged (tern was down, or went down while answering), sent again.
    pub failed_publishes: u64,
    /// Distinct messages that arrived before the first kill.
    pub delivered_before_kill: u64,
    /// Distinct messages (by `Upstash-Message-Id`) that arrived in all.
    pub delivered: u64,
    /// Acknowledged messages that never arrived.
    pub lost: u64,
    /// Arrivals of a message id that had arrived before.
    pub duplicates: u64,
    /// Messages whose publish was retried after tern had stored it without answering: the same
    /// body under two ids (the client's repeat, not tern's).
    pub published_twice: u64,
    /// Distinct arrivals per second just before each kill.
    pub rate_at_kill: Vec<f64>,
    /// Duplicates each kill caused: the copy before had arrived by the time tern answered again
    /// after that kill (and after the kill before).
    pub duplicates_per_kill: Vec<u64>,
    /// Duplicates with no kill between the two copies.
    pub duplicates_without_kill: u64,
    /// How long before its kill each duplicate's copy before arrived: p50, p99, max (ms;
    /// negative when the sink took the request up only after the kill).
    pub copy_before_kill_ms: [f64; 3],
    /// From each kill until tern answered again.
    pub restart: Vec<Duration>,
    /// From the last kill until the last message arrived.
    pub drained: Duration,
    /// tern's outcomes, from the attempt's end until durable (its trace): how many, and p50,
    /// p99, max (ms). A kill finds the outcomes of that window not yet durable.
    pub outcome_durable: (usize, [f64; 3]),
    /// What tern logged at `warn` or above (its log goes to a file in this run).
    pub warnings: Vec<String>,
}

impl Crash {
    /// Duplicates as a share of the distinct messages delivered.
    pub fn duplicate_share(&self) -> f64 {
        self.duplicates as f64 / self.delivered.max(1) as f64
    }
}

impl Bench {
    /// Publishes `messages` with `concurrency` clients (at `per_second`, or as fast as they are
    /// answered) to a sink that answers after `answer_delay`, kills tern with SIGKILL `kills`
    /// times, evenly spread over the arrivals (once half of them arrived, for one), restarting
    /// it on the same data each time, and waits until everything acknowledged arrived.
    pub async fn crash(
        &self,
        messages: u64,
        concurrency: usize,
        per_second: Option<f64>,
        kills: usize,
        answer_delay: Duration,
    ) -> Crash {
        let log = TraceLog { filter: OUTCOME_TRACE.to_string(), path: self.work_dir.path().join("crash.log") };
        let data_dir = self.work_dir.path().join("crash");
        let mut tern = Tern::start_logging(&self.tern_binary, &data_dir, Some(log.clone())).await;
        self.sink.reset();
        self.sink.state.answer_delay_ms.store(answer_delay.as_millis() as u64, Ordering::SeqCst);
        let target = tern_target(&tern, &self.sink, &[]);
        let start = self.start;
        let publishing = tokio::spawn(async move {
            load::run_paced(start, &target, messages, 0, concurrency, per_second, Some(RETRY_AFTER)).await
        });
        let (mut killed_us, mut restart) = (Vec::new(), Vec::new());
        for kill in 1..=kills.max(1) {
            let arrived = messages * kill as u64 / (kills.max(1) as u64 + 1);
            let mut last = (0, Instant::now());
            while (self.sink.unique() as u64) < arrived && last.1.elapsed() < STALL {
                let now = self.sink.unique();
                if now != last.0 {
                    last = (now, Instant::now());
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            killed_us.push(self.start.elapsed().as_micros() as u64);
            restart.push(tern.crash_and_restart().await);
        }
        let load = publishing.await.expect("publishing clients");
        self.wait_for_seqs(messages).await;
        let last_kill = killed_us.last().copied().unwrap_or_default();
        let drained = self.sink.arrivals().iter().map(|a| a.arrived_us).max().unwrap_or(last_kill);
        self.wait_quiet().await;
        self.sink.state.answer_delay_ms.store(0, Ordering::SeqCst);
        tern.stop().await;

        let (outcome_durable, warnings) = read_trace(&log.path);
        let arrivals = self.sink.arrivals();
        let mut ids_per_seq: HashMap<u64, u64> = HashMap::new();
        for arrival in &arrivals {
            *ids_per_seq.entry(arrival.seq).or_default() += 1;
        }
        let before_kill = arrivals.iter().filter(|a| a.arrived_us < killed_us[0]).count() as u64;
        let rate_at_kill = killed_us
            .iter()
            .map(|&kill| {
                let window = arrivals.iter().filter(|a| a.arrived_us < kill && a.arrived_us + RATE_WINDOW_US >= kill);
                window.count() as f64 / (RATE_WINDOW_US as f64 / 1e6)
            })
            .collect();
        // Until tern answers again after a kill, whatever arrives was sent before it.
        let answering_us: Vec<u64> =
            killed_us.iter().zip(&restart).map(|(kill, restart)| kill + restart.as_micros() as u64).collect();
        let mut duplicates_per_kill = vec![0; killed_us.len()];
        let mut duplicates_without_kill = 0;
        let mut ages = Vec::new();
        for (before, again) in self.sink.repeats() {
            // The attempt that delivered the copy before was lost by the first kill after it;
            // its message may be delivered again only after some later restart.
            match answering_us.iter().position(|&answering| before < answering) {
                Some(kill) if killed_us[kill] < again => {
                    duplicates_per_kill[kill] += 1;
                    ages.push(killed_us[kill] as i64 - before as i64);
                }
                _ => duplicates_without_kill += 1,
            }
        }
        ages.sort_unstable();
        let age = |q: f64| {
            let index = ((ages.len().max(1) - 1) as f64 * q).round() as usize;
            ages.get(index).map_or(0.0, |&us| us as f64 / 1000.0)
        };
        Crash {
            published: messages,
            failed_publishes: load.errors,
            delivered_before_kill: before_kill,
            delivered: arrivals.len() as u64,
            lost: messages.saturating_sub(ids_per_seq.len() as u64),
            duplicates: self.sink.state.duplicates.load(Ordering::Relaxed),
            published_twice: ids_per_seq.values().filter(|&&ids| ids > 1).count() as u64,
            rate_at_kill,
            duplicates_per_kill,
            duplicates_without_kill,
            copy_before_kill_ms: [age(0.5), age(0.99), age(1.0)],
            restart,
            drained: Duration::from_micros(drained.saturating_sub(last_kill)),
            outcome_durable,
            warnings,
        }
    }

    /// Waits until every sequence number below `count` arrived, or nothing new arrived for a
    /// while.
    async fn wait_for_seqs(&self, count: u64) {
        let distinct = || {
            let arrivals = self.sink.arrivals();
            arrivals.iter().map(|a| a.seq).filter(|&seq| seq < count).collect::<HashSet<_>>().len() as u64
        };
        let mut last = (0, Instant::now());
        loop {
            let now = distinct();
            if now >= count {
                return;
            }
            if now != last.0 {
                last = (now, Instant::now());
            } else if last.1.elapsed() > STALL {
                eprintln!("  ! only {now} of {count} messages arrived");
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until no request reached the sink for [`QUIET`].
    async fn wait_quiet(&self) {
        let requests = || self.sink.state.requests.load(Ordering::Relaxed);
        let mut last = (requests(), Instant::now());
        while last.1.elapsed() < QUIET {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let now = requests();
            if now != last.0 {
                last = (now, Instant::now());
            }
        }
    }
}

/// From tern's log: the distribution of its outcomes' time to durable ("outcome recorded …
/// micros=N" at trace level), and every other line (warnings and errors).
fn read_trace(path: &std::path::Path) -> ((usize, [f64; 3]), Vec<String>) {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut micros = Vec::new();
    let mut others = Vec::new();
    for line in text.lines() {
        if !line.contains("outcome recorded") {
            others.push(line.to_string());
            continue;
        }
        let value = line.split_once("micros=").map(|(_, rest)| rest.split(|c: char| !c.is_ascii_digit()).next());
        if let Some(Some(Ok(value))) = value.map(|digits| digits.map(str::parse::<u64>)) {
            micros.push(value);
        }
    }
    let ms = |q: f64, values: &mut [u64]| load::quantile(values, q) as f64 / 1000.0;
    let figures = [ms(0.5, &mut micros), ms(0.99, &mut micros), ms(1.0, &mut micros)];
    ((micros.len(), figures), others)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_trace_gives_outcome_times_and_keeps_other_lines() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("log");
        let lines = [
            "2026-12-07T00:28:36.415950Z TRACE tern_engine::recording: outcome recorded message_id=msg_1 micros=2000",
            "2026-12-07T00:28:36.415950Z  WARN tern_server: something",
            "2026-12-07T00:28:36.415951Z TRACE tern_engine::recording: outcome recorded message_id=msg_2 micros=4000",
            "2026-12-07T00:28:36.415952Z TRACE tern_engine::recording: outcome recorded message_id=msg_3 micros=1000",
        ];
        std::fs::write(&path, lines.join("\n")).unwrap();
        let ((count, [p50, _, max]), others) = read_trace(&path);
        assert_eq!((count, p50, max), (3, 2.0, 4.0));
        assert_eq!(others, vec![lines[1].to_string()]);
    }
}
