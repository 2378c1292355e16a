//! Measures durable inserts into the embedded store with one writer at a time versus many
//! concurrent writers sharing commits (group commit), and the number of commits each needed.
//!
//!     cargo run --release -p tern-store --example group_commit -- [messages] [concurrency]

use bytes::Bytes;
use std::sync::Arc;
use std::time::Instant;
use tern_core::{MessageId, PublishLimits, PublishOptions};
use tern_store::sqlite::{SqliteOptions, SqliteStore};
use tern_store::{Maintenance, MessageStore, NewMessage};

fn message(i: usize) -> NewMessage {
    let spec = PublishOptions::default().to_spec(format!("http://127.0.0.1:9/{i}"), None, &PublishLimits::default());
    NewMessage {
        id: MessageId::generate(),
        user_id: "bench".into(),
        spec,
        body: Bytes::from(vec![b'x'; 1024]),
        created_at: 0,
        due_at: i64::MAX / 2,
        dedup: None,
        consumes_dlq_entry: None,
        run: None,
        run_limits: None,
    }
}

async fn run(total: usize, concurrency: usize) -> f64 {
    let directory = tempfile::tempdir().expect("temporary directory");
    let store = Arc::new(SqliteStore::open(SqliteOptions::new(directory.path())).expect("open"));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..concurrency {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            for i in (worker..total).step_by(concurrency) {
                store.insert_messages(vec![message(i)]).await.expect("insert");
            }
        }));
    }
    for task in tasks {
        task.await.expect("task");
    }
    let rate = total as f64 / started.elapsed().as_secs_f64();
    store.shutdown().await.expect("shutdown");
    rate
}

#[tokio::main]
async fn main() {
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let total = args.first().copied().unwrap_or(20_000);
    let concurrency = args.get(1).copied().unwrap_or(64);
    let sequential = run(total / 10, 1).await;
    let grouped = run(total, concurrency).await;
    println!("durable inserts, 1 KiB bodies, synchronous=FULL:");
    println!("  1 writer at a time:        {sequential:>9.0} msgs/s (one fsync per message)");
    println!("  {concurrency} concurrent writers:    {grouped:>9.0} msgs/s (group commit)");
    println!("  ratio:                     {:>9.1}x", grouped / sequential);
}
