//! The schedules scenario: many schedules, one minute of their ticks. Schedule `i` fires at
//! minute `i % 60` of every hour, so each minute about 1/60 of them fire.

use crate::load;
use crate::processes::TOKEN;
use crate::scenarios::{Bench, unix_ms};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Default)]
pub struct Schedules {
    pub created_per_s: f64,
    pub bytes_per_schedule: f64,
    /// Schedules that fired in the measured minute.
    pub fired: u64,
    /// From the minute's start until the last of its messages arrived.
    pub tick_duration: Duration,
    /// tern's CPU time for that minute, seconds.
    pub cpu_seconds: f64,
    /// `GET /v2/schedules` after creating them: how long, how many listed, and tern's peak
    /// resident memory meanwhile (and just before), bytes.
    pub list_duration: Duration,
    pub listed: u64,
    pub list_peak_rss: u64,
    pub list_rss_before: u64,
}

impl Bench {
    /// Creates `count` schedules; with `watch_a_minute`, also measures one minute of ticks (which
    /// means waiting for the next minute to begin and end).
    pub async fn schedules(&self, count: u64, watch_a_minute: bool) -> Schedules {
        let tern = self.fresh_tern("schedules").await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let before = tern.rss_bytes();
        let started = Instant::now();
        let clients = 32u64;
        let client = load::client();
        let workers: Vec<_> = (0..clients)
            .map(|worker| {
                let (client, tern_url, sink_url) = (client.clone(), tern.url.clone(), self.sink.url.clone());
                tokio::spawn(async move {
                    for i in (worker..count).step_by(clients as usize) {
                        let request = client
                            .post(format!("{tern_url}/v2/schedules/{sink_url}"))
                            .bearer_auth(TOKEN)
                            .header("upstash-cron", format!("{} * * * *", i % 60))
                            .header("upstash-schedule-id", format!("s-{i}"))
                            .body(load::body(i, 0));
                        let accepted = request.send().await.is_ok_and(|response| response.status().is_success());
                        assert!(accepted, "creating schedule {i} failed");
                    }
                })
            })
            .collect();
        for worker in workers {
            worker.await.expect("a worker creating schedules panicked");
        }
        let created_per_s = count as f64 / started.elapsed().as_secs_f64();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let after = tern.rss_bytes();
        let mut figures = Schedules {
            created_per_s,
            bytes_per_schedule: after.saturating_sub(before) as f64 / count.max(1) as f64,
            list_rss_before: after,
            ..Schedules::default()
        };
        tern.reset_peak_rss();
        let started = Instant::now();
        let mut response = client
            .get(format!("{}/v2/schedules", tern.url))
            .bearer_auth(TOKEN)
            .timeout(Duration::from_secs(600))
            .send()
            .await
            .and_then(|response| response.error_for_status())
            .expect("list the schedules");
        let mut listed = Vec::new();
        while let Some(chunk) = response.chunk().await.expect("the schedule list") {
            listed.extend_from_slice(&chunk);
        }
        figures.list_duration = started.elapsed();
        figures.list_peak_rss = tern.peak_rss_bytes();
        let key = b"\"scheduleId\":";
        figures.listed = listed.windows(key.len()).filter(|window| window == key).count() as u64;
        if !watch_a_minute {
            tern.stop().await;
            return figures;
        }

        // The next whole minute, and how many schedules fire in it.
        let now = unix_ms();
        let minute_start = now.div_ceil(60_000) * 60_000;
        let minute = minute_start / 60_000 % 60;
        let fired = (0..count).filter(|i| i % 60 == minute).count() as u64;
        self.sink.reset();
        tokio::time::sleep(Duration::from_millis(minute_start.saturating_sub(unix_ms()))).await;
        let cpu = tern.cpu_seconds();
        self.wait_for(fired).await;
        let tick_duration = Duration::from_millis(unix_ms().saturating_sub(minute_start));
        tokio::time::sleep(Duration::from_millis((minute_start + 60_000).saturating_sub(unix_ms()))).await;
        figures.cpu_seconds = tern.cpu_seconds() - cpu;
        figures.fired = fired;
        figures.tick_duration = tick_duration;
        tern.stop().await;
        figures
    }
}
