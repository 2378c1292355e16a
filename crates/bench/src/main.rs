//! `tern-bench`: measures tern against the machine's own limits in one run and prints the
//! figures (see BENCHMARKS.md). Everything runs on 127.0.0.1: the sink and the clients in this
//! process, tern and the forwarder baselines in their own processes.
//!
//!     scripts/bench                 # the full run (20,000 messages, C = 32 and 128, 1M backlog)
//!     scripts/bench --quick         # a few hundred messages: checks the command works
//!     scripts/bench --scenarios workflow --concurrency 1,32,128 --workflow-runs 5000

mod crash;
mod forwarder;
mod listing;
mod load;
mod processes;
mod scenarios;
mod schedules;
mod sink;
mod workflow;

use clap::{Parser, Subcommand};
use scenarios::{Baseline, Bench, Figures};
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(Debug, Parser)]
#[command(name = "tern-bench", about = "Throughput and latency of tern against its baselines")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Messages per throughput run.
    #[arg(long, default_value_t = 20_000)]
    messages: u64,
    /// Runs of each forwarder baseline and of tern per concurrency, alternated: on a shared
    /// machine the median ratio of several rounds is steadier than one run's.
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    /// Publish rate of the paced delayed run (messages due 1 s after their publish).
    #[arg(long, default_value_t = 1_000.0)]
    delayed_rate: f64,
    /// Publish rate of the crash run (0: as fast as tern answers).
    #[arg(long, default_value_t = 0.0)]
    crash_rate: f64,
    /// How often the crash run kills tern (spread evenly over the deliveries).
    #[arg(long, default_value_t = 3)]
    crash_kills: usize,
    /// How long the sink holds each request of the crash run before answering, in ms (a slower
    /// destination: more attempts in flight at a kill).
    #[arg(long, default_value_t = 0)]
    crash_answer_ms: u64,
    /// Concurrent keep-alive clients, one run each.
    #[arg(long, value_delimiter = ',', default_values_t = [32, 128])]
    concurrency: Vec<usize>,
    /// Delayed messages in the backlog scenario (0 skips it).
    #[arg(long, default_value_t = 1_000_000)]
    backlog: u64,
    /// A few hundred messages and a small backlog: proves the command works, measures nothing.
    #[arg(long)]
    quick: bool,
    /// The tern binary (default: next to this one).
    #[arg(long)]
    tern: Option<PathBuf>,
    /// Which scenarios to run.
    #[arg(long, value_delimiter = ',', default_values_t = ["immediate".to_string(), "postgres".into(), "delayed".into(), "failing".into(), "crash".into(), "backlog".into(), "keys".into(), "schedules".into(), "listing".into(), "workflow".into()])]
    scenarios: Vec<String>,
    /// Queues and flow-control keys in the keys scenario.
    #[arg(long, default_value_t = 10_000)]
    keys: u64,
    /// Schedules in the schedules scenario.
    #[arg(long, default_value_t = 100_000)]
    schedules: u64,
    /// Messages in the listing scenario (ten log entries each).
    #[arg(long, default_value_t = 100)]
    list_messages: u64,
    /// Body size of each message in the listing scenario.
    #[arg(long, default_value_t = 10_000_000)]
    list_body_bytes: usize,
    /// The `count` the listing scenario asks for (a tern without byte-bounded pages needs about
    /// 27 times the body size per entry to answer: keep it small for one).
    #[arg(long, default_value_t = 1_000)]
    list_count: u64,
    /// Clients asking for the first logs page at once in the listing scenario.
    #[arg(long, default_value_t = 32)]
    list_readers: usize,
    /// Workflow runs (of five steps each) per concurrency in the workflow scenario; its plain
    /// baseline publishes `--messages`. C (`--concurrency`) is the number of runs at once.
    #[arg(long, default_value_t = 5_000)]
    workflow_runs: u64,
    /// Start workflow runs for this many seconds instead of a fixed number (0: `--workflow-runs`).
    #[arg(long, default_value_t = 0.0)]
    workflow_seconds: f64,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// (internal) The forwarder baseline: posts every request to the sink before answering.
    Forwarder {
        #[arg(long)]
        sink: String,
        /// Append each body to this file and sync it before forwarding (the durable baseline).
        #[arg(long)]
        journal: Option<PathBuf>,
        /// Zero bytes the journal starts with (see `forwarder`).
        #[arg(long, default_value_t = 64 << 20)]
        preallocate: u64,
        /// Answer once the body is synced, push it afterwards (the durable queue).
        #[arg(long, requires = "journal")]
        push_after_answer: bool,
    },
}

#[tokio::main]
async fn main() {
    let mut cli = Cli::parse();
    // reqwest is built without a default TLS provider (tern installs ring the same way).
    let _ = rustls::crypto::ring::default_provider().install_default();
    if let Some(Command::Forwarder { sink, journal, preallocate, push_after_answer }) = cli.command {
        forwarder::run(sink, journal, preallocate, push_after_answer).await;
        return;
    }
    if cli.quick {
        cli.messages = cli.messages.min(300);
        cli.backlog = cli.backlog.min(2_000);
        cli.concurrency = vec![8];
        cli.keys = cli.keys.min(200);
        cli.schedules = cli.schedules.min(300);
        cli.list_messages = cli.list_messages.min(10);
        cli.list_body_bytes = cli.list_body_bytes.min(256 << 10);
        cli.workflow_runs = cli.workflow_runs.min(40);
        cli.workflow_seconds = 0.0;
    }
    let start = Instant::now();
    let bench = Bench {
        start,
        sink: sink::Sink::start(start).await,
        tern_binary: cli.tern.clone().unwrap_or_else(scenarios::default_tern_binary),
        work_dir: tempfile::tempdir().expect("work directory"),
    };
    println!(
        "tern-bench: {} messages of 1 KiB per run, {}, {} cores",
        cli.messages,
        if processes::durable() {
            "tern's store durable (fsync before acknowledging)"
        } else {
            "tern's store NOT durable (BENCH_DURABLE=false: no fsync)"
        },
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let mut failures = Vec::new();
    let mut publish_rate = 0.0;
    let run = |name: &str| cli.scenarios.iter().any(|scenario| scenario == name);
    for &concurrency in cli.concurrency.iter().filter(|_| run("immediate")) {
        println!("\n== C = {concurrency} concurrent clients ==");
        let direct = bench.direct(cli.messages, concurrency).await;
        print_row("direct to the sink", &direct, None);
        let (mut ratios, mut durable_ratios, mut queue_ratios) = (Vec::new(), Vec::new(), Vec::new());
        for round in 1..=cli.rounds.max(1) {
            let forwarder = bench.forwarder(cli.messages, concurrency, Baseline::Forwarder).await;
            let durable = bench.forwarder(cli.messages, concurrency, Baseline::DurableForwarder).await;
            let queue = bench.forwarder(cli.messages, concurrency, Baseline::DurableQueue).await;
            let tern = bench.immediate(cli.messages, concurrency, round).await;
            if cli.rounds > 1 {
                println!("  round {round} of {}", cli.rounds);
            }
            print_row("forwarder (receive + push)", &forwarder, None);
            print_row(
                "durable forwarder (receive + append and fsync + push), as a ratio of the forwarder",
                &durable,
                Some(&forwarder),
            );
            print_row(
                "durable queue (receive + append and fsync + answer, then push), as a ratio of the forwarder",
                &queue,
                Some(&forwarder),
            );
            print_row("tern, immediate delivery, as a ratio of the forwarder", &tern, Some(&forwarder));
            check(&mut failures, &format!("immediate C={concurrency}"), &tern);
            if publish_rate == 0.0 {
                publish_rate = tern.publish_per_s;
            }
            ratios.push(tern.delivered_per_s / forwarder.delivered_per_s.max(f64::MIN_POSITIVE));
            durable_ratios.push(tern.delivered_per_s / durable.delivered_per_s.max(f64::MIN_POSITIVE));
            queue_ratios.push(queue.delivered_per_s / forwarder.delivered_per_s.max(f64::MIN_POSITIVE));
        }
        print_ratios("tern's delivered/s as a ratio of the forwarder's", ratios);
        print_ratios("tern's delivered/s as a ratio of the durable forwarder's", durable_ratios);
        print_ratios("the durable queue's delivered/s as a ratio of the forwarder's", queue_ratios);
    }

    for &concurrency in cli.concurrency.iter().filter(|_| run("postgres")) {
        println!("\n== PostgreSQL, one node (the database on this machine too), C = {concurrency} ==");
        let sqlite = bench.immediate(cli.messages, concurrency, 0).await;
        print_row("tern on SQLite, immediate delivery", &sqlite, None);
        let postgres = bench.immediate_on_postgres(cli.messages, concurrency).await;
        print_row("tern on PostgreSQL, immediate delivery, as a ratio of SQLite", &postgres, Some(&sqlite));
        check(&mut failures, &format!("postgres C={concurrency}"), &postgres);
    }

    let concurrency = cli.concurrency[0];
    if run("delayed") {
        println!("\n== delayed: every message due at the same second (C = {concurrency}) ==");
        // Enough time to publish everything before the common due second.
        let rate = if publish_rate > 0.0 { publish_rate } else { 2_000.0 };
        let lead = Duration::from_secs_f64(cli.messages as f64 / rate * 1.5 + 2.0);
        let (delayed, late) = bench.delayed(cli.messages, concurrency, lead).await;
        print_row("tern, delayed delivery (delivered/s counted from the due time)", &delayed, None);
        println!(
            "  lateness after the due second: p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
            late[0], late[1], late[2]
        );
        check(&mut failures, "delayed", &delayed);

        // The same timers at a rate tern keeps up with: how precisely a due message leaves.
        let per_second = cli.delayed_rate.max(1.0);
        let messages = cli.messages.min((per_second * 10.0) as u64);
        println!(
            "\n== delayed, paced: {messages} messages at {per_second:.0}/s, each due 1 s after its publish (C = {concurrency}) =="
        );
        let (paced, late) = bench.delayed_paced(messages, concurrency, per_second, Duration::from_secs(1)).await;
        print_row("tern, delayed delivery (publish→arrival includes the 1 s delay)", &paced, None);
        println!(
            "  lateness after each message's due time: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            late[0], late[1], late[2]
        );
        check(&mut failures, "delayed, paced", &paced);
    }

    if run("failing") {
        println!("\n== 20 % of first attempts fail (retry delay 50 ms, C = {concurrency}) ==");
        let (failing, failed, dlq) = bench.failing(cli.messages, concurrency).await;
        print_row("tern, with retries", &failing, None);
        println!("  first attempts failed on purpose: {failed}; DLQ entries: {dlq}");
        check(&mut failures, "failing", &failing);
        if dlq != 0 {
            failures.push(format!("failing: {dlq} messages in the DLQ"));
        }
    }

    if run("crash") {
        let rate = (cli.crash_rate > 0.0).then_some(cli.crash_rate);
        let pace = rate.map_or("as fast as answered".to_string(), |rate| format!("{rate:.0} msgs/s"));
        println!(
            "\n== {} messages ({pace}, C = {concurrency}, the sink answering after {} ms), kill -9 and restart {} time(s) while they arrive ==",
            cli.messages, cli.crash_answer_ms, cli.crash_kills
        );
        let answer_delay = Duration::from_millis(cli.crash_answer_ms);
        let crash = bench.crash(cli.messages, concurrency, rate, cli.crash_kills, answer_delay).await;
        let list = |values: Vec<String>| values.join(", ");
        println!(
            "  {} published ({} publishes not answered while tern was down, sent again; {} of them stored, so sent twice)",
            crash.published, crash.failed_publishes, crash.published_twice
        );
        println!(
            "  {} arrived before the first kill; arriving at {} msgs/s at each kill; answering {} s after each kill; all arrived {:.2} s after the last",
            crash.delivered_before_kill,
            list(crash.rate_at_kill.iter().map(|rate| format!("{rate:.0}")).collect()),
            list(crash.restart.iter().map(|restart| format!("{:.2}", restart.as_secs_f64())).collect()),
            crash.drained.as_secs_f64()
        );
        println!(
            "  {} delivered, {} lost, {} duplicates ({:.2} % of delivered; per kill: {}; with no kill between: {}): attempts that reached the sink with their outcome not committed at a kill",
            crash.delivered,
            crash.lost,
            crash.duplicates,
            crash.duplicate_share() * 100.0,
            list(crash.duplicates_per_kill.iter().map(u64::to_string).collect()),
            crash.duplicates_without_kill
        );
        let [p50, p99, max] = crash.copy_before_kill_ms;
        println!(
            "  a duplicate's copy before arrived ahead of its kill by: p50 {p50:.1} ms, p99 {p99:.1} ms, max {max:.1} ms"
        );
        let (outcomes, [p50, p99, max]) = crash.outcome_durable;
        println!(
            "  tern's {outcomes} outcomes, from the attempt's end until durable: p50 {p50:.1} ms, p99 {p99:.1} ms, max {max:.1} ms"
        );
        for warning in &crash.warnings {
            eprintln!("  tern: {warning}");
        }
        if crash.lost > 0 {
            failures.push(format!("crash: {} lost", crash.lost));
        }
    }

    if cli.backlog > 0 && run("backlog") {
        println!("\n== backlog of {} delayed messages ==", cli.backlog);
        let backlog = bench.backlog(cli.backlog, cli.messages, concurrency).await;
        println!("  loading the backlog: {:.0} msgs/s", backlog.load_per_s);
        println!("  memory per pending message (RSS growth / backlog): {:.0} bytes", backlog.bytes_per_pending);
        print_row("tern, immediate, with the backlog", &backlog.with_backlog, None);
        println!(
            "  kill -9 and restart: answering after {:.2} s, first delivery after {:.2} s",
            backlog.restart_ready.as_secs_f64(),
            backlog.restart_first_delivery.as_secs_f64()
        );
        check(&mut failures, "backlog", &backlog.with_backlog);
    }

    if run("keys") {
        println!("\n== {} queues, then {} flow-control keys, one message each ==", cli.keys, cli.keys);
        let keys = bench.keys(cli.keys).await;
        println!(
            "  memory kept per queue: {:.0} bytes; per flow-control key: {:.0} bytes",
            keys.bytes_per_queue, keys.bytes_per_flow_key
        );
    }

    if run("schedules") {
        println!("\n== {} schedules, each firing once an hour (1/60 of them each minute) ==", cli.schedules);
        let schedules = bench.schedules(cli.schedules, !cli.quick).await;
        println!("  creating: {:.0} schedules/s", schedules.created_per_s);
        println!("  memory per schedule (RSS growth / schedules): {:.0} bytes", schedules.bytes_per_schedule);
        println!(
            "  GET /v2/schedules: {} listed in {:.2} s; tern's peak RSS {:.0} MB (from {:.0} MB)",
            schedules.listed,
            schedules.list_duration.as_secs_f64(),
            schedules.list_peak_rss as f64 / 1e6,
            schedules.list_rss_before as f64 / 1e6
        );
        if schedules.listed != cli.schedules {
            failures.push(format!("schedules: {} of {} listed", schedules.listed, cli.schedules));
        }
        if !cli.quick {
            println!(
                "  one minute: {} fired, all delivered {:.2} s after the minute began; tern CPU for the minute {:.2} s",
                schedules.fired,
                schedules.tick_duration.as_secs_f64(),
                schedules.cpu_seconds
            );
        }
    }

    if run("listing") {
        let (messages, body, count) = (cli.list_messages, cli.list_body_bytes, cli.list_count);
        println!(
            "\n== listing {} log entries of {} messages with {:.1} MB bodies (count={count}) ==",
            messages * listing::ENTRIES_PER_MESSAGE,
            messages,
            body as f64 / 1e6
        );
        let listing = bench.listing(messages, body, count, cli.list_readers).await;
        print_listed("GET /v2/logs, one page", &listing.first_page);
        print_listed("GET /v2/logs, every page by the cursor", &listing.all_pages);
        print_listed("GET /v2/logs?trimBody=-1, one page", &listing.without_bodies);
        print_listed("GET /v2/dlq, one page", &listing.dlq_page);
        print_listed(
            &format!("GET /v2/logs, one page each, {} readers at once", listing.readers),
            &listing.concurrent_pages,
        );
        if listing.all_pages.entries != listing.entries {
            failures.push(format!("listing: {} of {} entries listed", listing.all_pages.entries, listing.entries));
        }
    }

    if run("workflow") {
        run_workflow(&bench, &cli, &mut failures).await;
    }

    if failures.is_empty() {
        println!("\nno message lost");
    } else {
        println!("\nFAILED:");
        for failure in &failures {
            println!("  {failure}");
        }
        std::process::exit(1);
    }
}

/// The workflow scenario at each concurrency: plain messages and workflow runs, each through a
/// fresh tern, alternated `--rounds` times.
async fn run_workflow(bench: &Bench, cli: &Cli, failures: &mut Vec<String>) {
    use workflow::STEPS;
    let empty = bench.empty_store().await;
    let duration = (cli.workflow_seconds > 0.0).then(|| Duration::from_secs_f64(cli.workflow_seconds));
    let amount = match duration {
        Some(duration) => format!("runs started for {:.0} s", duration.as_secs_f64()),
        None => format!("{} runs", cli.workflow_runs),
    };
    for &concurrency in &cli.concurrency {
        println!(
            "\n== workflow: {amount} of {STEPS} steps, C = {concurrency} runs at once; plain: {} messages, C = {concurrency} ==",
            cli.messages
        );
        let (mut rate_ratios, mut cpu_ratios) = (Vec::new(), Vec::new());
        for round in 1..=cli.rounds.max(1) {
            if cli.rounds > 1 {
                println!("  round {round} of {}", cli.rounds);
            }
            let plain = bench.plain_stored(cli.messages, concurrency, round).await;
            print_row("tern, plain publish→delivery (the immediate scenario)", &plain.figures, None);
            let (used, files) = plain.stored.per(&empty, plain.figures.delivered);
            println!(
                "    stored per message: {used:.0} bytes of database pages ({files:.0} bytes of files); written to storage: {:.0} bytes; the bench process (load + sink) {:.0} µs of CPU",
                plain.written_per_message, plain.bench_cpu_us
            );
            check(failures, &format!("workflow C={concurrency}, plain"), &plain.figures);

            let flow = bench.workflow(cli.workflow_runs, duration, concurrency, round).await;
            let [p50, p99, max] = flow.run_latency_ms;
            println!("  tern, workflow runs (an endpoint in this process plays the SDK)");
            println!(
                "    {:>8.0} steps/s ({:.0} runs/s, {:.0} deliveries/s)   run latency, trigger→completing DELETE: p50 {p50:.2} ms  p99 {p99:.2} ms  max {max:.2} ms",
                flow.steps_per_s, flow.runs_per_s, flow.deliveries_per_s
            );
            println!(
                "    {} runs finished, {} unfinished, {} triggers refused; {} deliveries ({} expected), {} problems",
                flow.finished,
                flow.unfinished,
                flow.trigger_errors,
                flow.deliveries,
                flow.finished * (STEPS + 1),
                flow.problem_count
            );
            println!(
                "    tern's CPU per step: {:.0} µs; the bench process (driver + endpoint) {:.0} µs; the machine was {:.0} % idle",
                flow.tern_cpu_us,
                flow.bench_cpu_us,
                flow.machine_idle * 100.0
            );
            if !flow.tern_thread_cpu_us.is_empty() {
                let threads: Vec<String> =
                    flow.tern_thread_cpu_us.iter().map(|(name, us)| format!("{name} {us:.0}")).collect();
                println!("      by thread (µs): {}", threads.join(", "));
            }
            let (used, files) = flow.stored.per(&empty, flow.finished);
            println!(
                "    stored per finished run: {used:.0} bytes of database pages ({files:.0} bytes of files); written to storage per step: {:.0} bytes",
                flow.written_per_step
            );
            let rate_ratio = plain.figures.delivered_per_s / flow.steps_per_s.max(f64::MIN_POSITIVE);
            let cpu_ratio = flow.tern_cpu_us / plain.figures.server_cpu_us.max(f64::MIN_POSITIVE);
            println!(
                "    a step costs {rate_ratio:.2} plain messages by throughput (plain delivered/s ÷ steps/s) and {cpu_ratio:.2} by tern's CPU (per step ÷ per plain message)"
            );
            match &flow.log_check {
                Ok(summary) => println!("    log of {summary}"),
                Err(problem) => failures.push(format!("workflow C={concurrency}: {problem}")),
            }
            for problem in &flow.problems {
                eprintln!("    ! {problem}");
            }
            if flow.unfinished > 0 || flow.trigger_errors > 0 || flow.problem_count > 0 || flow.finished == 0 {
                failures.push(format!(
                    "workflow C={concurrency}: {} finished, {} unfinished, {} triggers refused, {} problems",
                    flow.finished, flow.unfinished, flow.trigger_errors, flow.problem_count
                ));
            }
            rate_ratios.push(rate_ratio);
            cpu_ratios.push(cpu_ratio);
        }
        if cli.rounds > 1 {
            print_ratios("plain messages per step, by throughput", rate_ratios);
            print_ratios("plain messages per step, by tern's CPU", cpu_ratios);
        }
    }
}

fn print_row(name: &str, figures: &Figures, baseline: Option<&Figures>) {
    let ratio = |value: f64, base: f64| match baseline {
        Some(_) if base > 0.0 => format!(" ({:.2}x)", value / base),
        _ => String::new(),
    };
    let base = baseline.cloned().unwrap_or_default();
    println!("  {name}");
    println!(
        "    publish   {:>8.0} msgs/s{}   latency p50 {:.2} ms{}  p99 {:.2} ms{}",
        figures.publish_per_s,
        ratio(figures.publish_per_s, base.publish_per_s),
        figures.publish_p50_ms,
        ratio(figures.publish_p50_ms, base.publish_p50_ms),
        figures.publish_p99_ms,
        ratio(figures.publish_p99_ms, base.publish_p99_ms),
    );
    println!(
        "    delivered {:>8.0} msgs/s{}   publish→arrival p50 {:.2} ms{}  p99 {:.2} ms{}  max {:.2} ms",
        figures.delivered_per_s,
        ratio(figures.delivered_per_s, base.delivered_per_s),
        figures.latency_p50_ms,
        ratio(figures.latency_p50_ms, base.latency_p50_ms),
        figures.latency_p99_ms,
        ratio(figures.latency_p99_ms, base.latency_p99_ms),
        figures.latency_max_ms,
    );
    println!(
        "    {} delivered, {} lost, {} duplicates, {} failed publishes",
        figures.delivered, figures.lost, figures.duplicates, figures.errors
    );
    if figures.server_cpu_us > 0.0 {
        println!(
            "    server process CPU per message: {:.0} µs; the machine was {:.0} % idle",
            figures.server_cpu_us,
            figures.machine_idle * 100.0
        );
    }
    if !figures.server_thread_cpu_us.is_empty() {
        let threads: Vec<String> =
            figures.server_thread_cpu_us.iter().map(|(name, us)| format!("{name} {us:.0}")).collect();
        println!("      by thread (µs): {}", threads.join(", "));
    }
}

fn print_listed(name: &str, listed: &listing::Listed) {
    let mb = |bytes: u64| bytes as f64 / 1e6;
    println!(
        "  {name}: tern's peak RSS {:.0} MB (from {:.0} MB); {} requests, {} entries, {:.0} MB answered in {:.2} s",
        mb(listed.peak_rss),
        mb(listed.rss_before),
        listed.requests,
        listed.entries,
        mb(listed.response_bytes),
        listed.elapsed.as_secs_f64()
    );
}

/// The median, lowest and highest of a series of ratios (`what` says of which figures).
fn print_ratios(what: &str, mut ratios: Vec<f64>) {
    ratios.sort_by(f64::total_cmp);
    let (Some(lowest), Some(highest)) = (ratios.first(), ratios.last()) else { return };
    if ratios.len() == 1 {
        println!("  {what}: {lowest:.2}");
        return;
    }
    println!(
        "  {what}, {} rounds: median {:.2}, min {lowest:.2}, max {highest:.2}",
        ratios.len(),
        ratios[ratios.len() / 2],
    );
}

fn check(failures: &mut Vec<String>, name: &str, figures: &Figures) {
    if figures.lost > 0 || figures.errors > 0 {
        failures.push(format!("{name}: {} lost, {} failed publishes", figures.lost, figures.errors));
    }
}
