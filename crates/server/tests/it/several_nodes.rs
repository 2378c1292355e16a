//! Three `tern serve` nodes on one PostgreSQL database (`TERN_TEST_POSTGRES_URL`): one is
//! active, the others stand by without listening; clients send every request to whichever node
//! answers, as a load balancer would. The active node is killed (-9) mid-load, a standby takes
//! over, and the killed node is started again (it stands by). Nothing acknowledged is lost, the
//! FIFO queue arrives in publish order, the flow-control key's parallelism holds, and the
//! schedule fires once per minute whichever node runs it.

use crate::harness::{DEADLINE, Receiver, Reply, TOKEN, http_client};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tern_server::dev::DEV_USERS;

struct Node {
    child: Child,
    config: PathBuf,
    stderr: PathBuf,
}

impl Node {
    fn start(config: &Path, stderr: &Path) -> Node {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(stderr).expect("stderr file");
        let child = Command::new(env!("CARGO_BIN_EXE_tern"))
            .arg("serve")
            .arg("--config")
            .arg(config)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("tern starts");
        Node { child, config: config.to_path_buf(), stderr: stderr.to_path_buf() }
    }

    fn stderr_text(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    fn kill(&mut self) {
        self.child.kill().expect("kill -9");
        self.child.wait().expect("reaped");
    }

    /// Waits until the node says it stands by (another node is active).
    async fn wait_standing_by(&mut self) {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        while !self.stderr_text().contains("standing by") {
            assert!(self.child.try_wait().unwrap().is_none(), "the node exited:\n{}", self.stderr_text());
            assert!(tokio::time::Instant::now() < deadline, "the node never stood by:\n{}", self.stderr_text());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn write_config(directory: &Path, index: usize, port: u16, database: &str) -> PathBuf {
    let (id, token, current, next) = DEV_USERS[0];
    let path = directory.join(format!("node-{index}.toml"));
    std::fs::write(
        &path,
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\n[storage]\nbackend = \"postgres\"\npostgres_url = \"{database}\"\n\
             [[users]]\nid = \"{id}\"\ntoken = \"{token}\"\ncurrent_signing_key = \"{current}\"\nnext_signing_key = \"{next}\"\n"
        ),
    )
    .expect("node configuration");
    path
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Sends a request to the first node that takes the connection, starting at a different node
/// each time; a node standing by (or dead) refuses it. `None` if none answered before the
/// deadline or the answer was not a success.
#[derive(Clone)]
struct Cluster {
    urls: Arc<Vec<String>>,
    next: Arc<Mutex<usize>>,
    http: reqwest::Client,
}

impl Cluster {
    async fn send(&self, method: reqwest::Method, path: &str, headers: &[(&str, &str)], body: String) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let start = {
                let mut next = self.next.lock().unwrap();
                *next += 1;
                *next
            };
            for offset in 0..self.urls.len() {
                let url = &self.urls[(start + offset) % self.urls.len()];
                let mut request =
                    self.http.request(method.clone(), format!("{url}{path}")).bearer_auth(TOKEN).body(body.clone());
                for (name, value) in headers {
                    request = request.header(*name, *value);
                }
                match request.send().await {
                    Ok(response) if response.status().is_success() => {
                        return Some(response.json::<Value>().await.unwrap_or(Value::Null));
                    }
                    Ok(_) => return None,
                    Err(error) if error.is_connect() => continue,
                    // The node died while answering: the request may or may not have landed.
                    Err(_) => return None,
                }
            }
            if tokio::time::Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Waits (at most a minute and a half: a schedule's next tick may be a minute away) until
/// `condition` holds.
async fn wait_until(what: &str, condition: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    while !condition() {
        assert!(tokio::time::Instant::now() < deadline, "{what} did not happen in time");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The `Upstash-Message-Id` of every request to `path`, in arrival order.
fn arrivals(receiver: &Receiver, path: &str) -> Vec<String> {
    receiver.requests_to(path).iter().filter_map(|r| r.header("upstash-message-id").map(str::to_string)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_takes_over_from_a_killed_node_and_nothing_is_lost() {
    let server = tern_store::postgres::testing::server_url().expect("TERN_TEST_POSTGRES_URL (scripts/test sets it)");
    let database = tern_store::postgres::testing::create_database(&server).await.expect("a database");
    let directory = tempfile::tempdir().expect("directory");
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let configs: Vec<PathBuf> =
        ports.iter().enumerate().map(|(i, port)| write_config(directory.path(), i, *port, &database)).collect();
    let stderrs: Vec<PathBuf> = (0..3).map(|i| directory.path().join(format!("node-{i}.log"))).collect();
    let cluster = Cluster {
        urls: Arc::new(ports.iter().map(|port| format!("http://127.0.0.1:{port}")).collect()),
        next: Arc::new(Mutex::new(0)),
        http: http_client(),
    };

    let receiver = Receiver::start().await;
    receiver.script("/fifo", vec![Reply::After(Duration::from_millis(3), 200)]);
    receiver.script("/flow", vec![Reply::After(Duration::from_millis(2), 200)]);
    let mut nodes = vec![Node::start(&configs[0], &stderrs[0])];
    let created = cluster
        .send(reqwest::Method::POST, "/v2/queues", &[], json!({"queueName": "fifo", "parallelism": 1}).to_string())
        .await;
    assert!(created.is_some(), "the first node serves:\n{}", nodes[0].stderr_text());
    for i in 1..3 {
        let mut node = Node::start(&configs[i], &stderrs[i]);
        node.wait_standing_by().await;
        nodes.push(node);
    }
    let schedule = cluster
        .send(
            reqwest::Method::POST,
            &format!("/v2/schedules/{}", receiver.url("/tick")),
            &[("Upstash-Cron", "* * * * *")],
            "tick".into(),
        )
        .await
        .expect("schedule created");
    let schedule_id = schedule["scheduleId"].as_str().expect("scheduleId").to_string();

    // Publishers: FIFO enqueues one after another (acknowledgement order is publish order);
    // plain and flow-controlled publishes.
    let stop = Arc::new(AtomicBool::new(false));
    let fifo_acknowledged = Arc::new(Mutex::new(Vec::<String>::new()));
    let other_acknowledged = Arc::new(Mutex::new(Vec::<(String, String)>::new()));
    let fifo_publisher = {
        let (cluster, stop, acknowledged, url) =
            (cluster.clone(), Arc::clone(&stop), Arc::clone(&fifo_acknowledged), receiver.url("/fifo"));
        tokio::spawn(async move {
            for i in 0.. {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let path = format!("/v2/enqueue/fifo/{url}");
                if let Some(answer) = cluster.send(reqwest::Method::POST, &path, &[], format!("fifo {i}")).await {
                    acknowledged.lock().unwrap().push(answer["messageId"].as_str().unwrap().to_string());
                }
            }
        })
    };
    let other_publisher = {
        let (cluster, stop, acknowledged) = (cluster.clone(), Arc::clone(&stop), Arc::clone(&other_acknowledged));
        let (plain, flow) = (receiver.url("/plain"), receiver.url("/flow"));
        tokio::spawn(async move {
            for i in 0.. {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let (path, headers): (&str, Vec<(&str, &str)>) = if i % 2 == 0 {
                    ("/plain", vec![])
                } else {
                    ("/flow", vec![("Upstash-Flow-Control-Key", "k"), ("Upstash-Flow-Control-Value", "parallelism=2")])
                };
                let url = if path == "/plain" { &plain } else { &flow };
                let answer =
                    cluster.send(reqwest::Method::POST, &format!("/v2/publish/{url}"), &headers, format!("{i}")).await;
                if let Some(answer) = answer {
                    acknowledged
                        .lock()
                        .unwrap()
                        .push((path.to_string(), answer["messageId"].as_str().unwrap().to_string()));
                }
            }
        })
    };

    wait_until("load before the kill", || {
        fifo_acknowledged.lock().unwrap().len() >= 40 && receiver.requests_to("/fifo").len() >= 10
    })
    .await;
    nodes[0].kill();
    let requests_at_kill = receiver.requests().len();
    let acknowledged_at_kill = fifo_acknowledged.lock().unwrap().len();
    let ticks_at_kill = receiver.requests_to("/tick").len();

    // A standby takes over; publishing goes on.
    wait_until("publishing after the takeover", || {
        fifo_acknowledged.lock().unwrap().len() >= acknowledged_at_kill + 40
    })
    .await;
    let restarted = Node::start(&nodes[0].config.clone(), &stderrs[0]);
    let standing_by_before = nodes[0].stderr_text().matches("standing by").count();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while restarted.stderr_text().matches("standing by").count() <= standing_by_before {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the restarted node did not stand by:\n{}",
            restarted.stderr_text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    nodes[0] = restarted;
    // The schedule fires on the node that took over too.
    wait_until("a tick after the takeover", || receiver.requests_to("/tick").len() > ticks_at_kill).await;
    stop.store(true, Ordering::Relaxed);
    fifo_publisher.await.unwrap();
    other_publisher.await.unwrap();

    // Nothing acknowledged is lost.
    let fifo_acknowledged = fifo_acknowledged.lock().unwrap().clone();
    let other_acknowledged = other_acknowledged.lock().unwrap().clone();
    wait_until("every acknowledged message delivered", || {
        let fifo: HashSet<String> = arrivals(&receiver, "/fifo").into_iter().collect();
        let plain: HashSet<String> = arrivals(&receiver, "/plain").into_iter().collect();
        let flow: HashSet<String> = arrivals(&receiver, "/flow").into_iter().collect();
        fifo_acknowledged.iter().all(|id| fifo.contains(id))
            && other_acknowledged
                .iter()
                .all(|(path, id)| if path == "/plain" { plain.contains(id) } else { flow.contains(id) })
    })
    .await;

    // FIFO: first arrivals in publish order; a message arrives again only right after its
    // previous attempt (the one in flight at the kill).
    let fifo = arrivals(&receiver, "/fifo");
    let mut firsts = Vec::new();
    let mut seen = HashSet::new();
    for (index, id) in fifo.iter().enumerate() {
        if seen.insert(id.clone()) {
            firsts.push(id.clone());
        } else {
            assert_eq!(&fifo[index - 1], id, "{id} arrived again, but not right after its previous attempt");
        }
    }
    assert_eq!(firsts, fifo_acknowledged, "the queue arrived in publish order across the takeover");
    assert!(
        receiver.max_in_flight("/fifo") <= 1,
        "{} queue messages in flight at once",
        receiver.max_in_flight("/fifo")
    );
    assert!(receiver.max_in_flight("/flow") <= 2, "{} of the key in flight at once", receiver.max_in_flight("/flow"));

    // Duplicates: only of attempts that had arrived before the kill (in flight on the killed node).
    let all = receiver.requests();
    let mut first_index: HashMap<String, usize> = HashMap::new();
    let mut duplicates = 0;
    for (index, request) in all.iter().enumerate() {
        let Some(id) = request.header("upstash-message-id") else { continue };
        match first_index.get(id) {
            None => {
                first_index.insert(id.to_string(), index);
            }
            Some(first) => {
                duplicates += 1;
                assert!(
                    *first < requests_at_kill,
                    "{id} was delivered twice though its first attempt came after the kill"
                );
            }
        }
    }
    eprintln!(
        "several nodes: {} FIFO and {} other messages acknowledged, {} requests, {duplicates} delivered again after the kill",
        fifo_acknowledged.len(),
        other_acknowledged.len(),
        all.len()
    );

    // The schedule fired at most once per minute, whichever node ran it.
    let logs = cluster
        .send(reqwest::Method::GET, &format!("/v2/logs?scheduleId={schedule_id}&state=CREATED"), &[], String::new())
        .await
        .expect("logs");
    let mut per_minute: BTreeMap<i64, usize> = BTreeMap::new();
    for event in logs["events"].as_array().unwrap() {
        *per_minute.entry(event["time"].as_i64().unwrap() / 60_000).or_default() += 1;
    }
    assert!(!per_minute.is_empty(), "the schedule fired");
    assert!(per_minute.values().all(|count| *count == 1), "ticks per minute: {per_minute:?}");
}
