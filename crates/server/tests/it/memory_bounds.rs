//! Byte budgets bound the memory tern holds for clients whatever their number (issue 15): the
//! request bodies being read and handled (`limits.request_body_budget`), and what listings and
//! other large reads read for the responses being built and sent (`limits.listing_budget`).
//! A request beyond the room left waits — it is not refused — until a holder is done; one
//! larger than one reservation may take (half the budget, several users being configured) is
//! served with that much reserved. The tests hold a budget with a client that
//! stops sending (or reading) and watch the server's own count of waiting reservations.

use crate::harness::*;
use crate::support::*;
use axum::body::Bytes;
use axum::http::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn connect(server: &TestServer) -> TcpStream {
    TcpStream::connect(server.url.trim_start_matches("http://")).await.expect("connects to tern")
}

/// Reads from `stream` until the end of a response's head; returns what was read.
async fn read_head(stream: &mut TcpStream) -> Vec<u8> {
    let mut read = Vec::new();
    let mut buffer = [0; 1024];
    while !read.windows(4).any(|window| window == b"\r\n\r\n") {
        let count = stream.read(&mut buffer).await.expect("reads");
        assert!(count > 0, "closed before the head ended: {}", String::from_utf8_lossy(&read));
        read.extend_from_slice(&buffer[..count]);
    }
    read
}

#[tokio::test]
async fn request_bodies_wait_for_room_in_their_budget() {
    const BUDGET: usize = 64 * 1024;
    const BODY: usize = 20_000;
    let server = TestServer::start_with(|config| config.limits.request_body_budget = BUDGET).await;

    // The first client sends half of its body and stops: its length stays reserved.
    let mut first = connect(&server).await;
    let head = format!(
        "POST /v2/publish/{NOWHERE}/first HTTP/1.1\r\nHost: tern\r\nAuthorization: Bearer {TOKEN}\r\n\
         Upstash-Delay: 1h\r\nContent-Length: {BODY}\r\nConnection: close\r\n\r\n"
    );
    first.write_all(head.as_bytes()).await.unwrap();
    first.write_all(&vec![b'a'; BODY / 2]).await.unwrap();
    server
        .wait_for_memory("the first body holds its length", |usage| usage.request_bodies.reserved_bytes >= BODY)
        .await;

    // The second does not fit beside it in the user's share (alone among several configured
    // users, half the budget): it waits, unread.
    let second = server.post(&format!("/v2/publish/{NOWHERE}/second")).header("Upstash-Delay", "1h");
    let second = tokio::spawn(second.body(vec![b'b'; BODY]).send());
    server.wait_for_memory("the second body waits for room", |usage| usage.request_bodies.waiting == 1).await;
    assert!(!second.is_finished(), "answered without room for its body");

    // Once the first is handled, the second is.
    first.write_all(&vec![b'a'; BODY - BODY / 2]).await.unwrap();
    let mut answer = Vec::new();
    first.read_to_end(&mut answer).await.unwrap();
    assert!(answer.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&answer));
    let second = second.await.unwrap().expect("answered");
    assert_eq!(second.status().as_u16(), 200);
    server.wait_for_memory("every body given back", |usage| usage.request_bodies.reserved_bytes == 0).await;

    // A body larger than the whole budget is served, with half of it reserved.
    let (status, json) = server.publish(NOWHERE, &[("Upstash-Delay", "1h")], &"c".repeat(2 * BUDGET)).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    let bodies: Vec<usize> = get_ok(&server, "/v2/logs").await["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| entry["body"].as_str().unwrap().len())
        .collect();
    assert_eq!(bodies.len(), 3, "{bodies:?}");
}

/// A tenant that announces bodies and never sends them holds its share of the request-body
/// budget and no more: another tenant's publish is served at once (a budget served first come,
/// first served was once all held by the first tenant, the others waiting as long as it liked).
#[tokio::test]
async fn a_tenant_holding_back_its_bodies_leaves_room_for_the_others() {
    const BUDGET: usize = 64 * 1024;
    const BODY: usize = 16_000;
    let server = TestServer::start_with(|config| {
        config.limits.request_body_budget = BUDGET;
        config.server.request_body_timeout = "10m".into();
    })
    .await;
    let hog_token = tern_server::dev::DEV_USERS[1].1;
    let mut held = Vec::new();
    for i in 0..BUDGET / BODY {
        let mut stream = connect(&server).await;
        let head = format!(
            "POST /v2/publish/{NOWHERE}/{i} HTTP/1.1\r\nHost: tern\r\nAuthorization: Bearer {hog_token}\r\n\
             Content-Length: {BODY}\r\n\r\n"
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        held.push(stream);
    }
    // Alone among several configured users, the hog may hold half the budget; the rest wait.
    server
        .wait_for_memory("the hog holds its share and waits for more", |usage| {
            usage.request_bodies.reserved_bytes == BUDGET / BODY / 2 * BODY && usage.request_bodies.waiting == 2
        })
        .await;

    let publish = server.post(&format!("/v2/publish/{NOWHERE}/other")).header("Upstash-Delay", "1h");
    let answered = tokio::time::timeout(DEADLINE, publish.body(vec![b'o'; BODY]).send()).await;
    let response = answered.expect("another tenant's publish waited for the hog").expect("answered");
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(server.memory_usage().request_bodies.waiting, 2, "the hog still waits");
    drop(held);
    server.wait_for_memory("every body given back", |usage| usage.request_bodies == Default::default()).await;
}

/// Two tenants together cannot hold a third up either: one holds a body it never sends, the
/// other asks for more than its share, which waits for room the first holds — without holding
/// up requests within their share (it once held the line for everyone).
#[tokio::test]
async fn a_large_body_waiting_for_room_does_not_hold_up_the_others() {
    const BUDGET: usize = 64 * 1024;
    let server = TestServer::start_with(|config| {
        config.limits.request_body_budget = BUDGET;
        config.server.request_body_timeout = "10m".into();
    })
    .await;
    let announce = |user: usize, length: usize| {
        let server = &server;
        async move {
            let mut stream = connect(server).await;
            let token = tern_server::dev::DEV_USERS[user].1;
            let head = format!(
                "POST /v2/publish/{NOWHERE}/held HTTP/1.1\r\nHost: tern\r\nAuthorization: Bearer {token}\r\n\
                 Content-Length: {length}\r\n\r\n"
            );
            stream.write_all(head.as_bytes()).await.unwrap();
            stream
        }
    };
    let _holding = announce(1, 30_000).await;
    server.wait_for_memory("the first holds its body", |usage| usage.request_bodies.reserved_bytes == 30_000).await;
    let _large = announce(2, 32_000).await;
    server.wait_for_memory("the large one waits", |usage| usage.request_bodies.waiting == 1).await;

    let publish = server.post(&format!("/v2/publish/{NOWHERE}/other")).header("Upstash-Delay", "1h").body("v");
    let answered = tokio::time::timeout(DEADLINE, publish.send()).await;
    let response = answered.expect("a publish within its share waited behind the large body").expect("answered");
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(server.memory_usage().request_bodies.waiting, 1, "the large body still waits");
}

#[tokio::test]
async fn large_reads_wait_for_room_in_the_listing_budget() {
    const BUDGET: usize = 16 << 20;
    const BIG: usize = 8 << 20;
    let server = TestServer::start_with(|config| config.limits.listing_budget = BUDGET).await;
    let receiver = Receiver::start().await;
    receiver.script("/fail", vec![Reply::Status(500)]);
    // Something for every other read to find.
    let (message_id, dlq_id) = dead_letter(&server, &receiver, "/fail", &[], "dead").await;
    let endpoints = json!({"endpoints": [{"url": receiver.url("/group")}]});
    assert_eq!(send(server.post("/v2/topics/group/endpoints").json(&endpoints)).await.0, StatusCode::OK);
    let schedule = server.post(&format!("/v2/schedules/{NOWHERE}")).header("Upstash-Cron", "0 0 1 1 *");
    let (status, schedule) = send(schedule).await;
    assert_eq!(status, StatusCode::OK, "{schedule}");
    let schedule_id = schedule["scheduleId"].as_str().unwrap();
    let flow = [("Upstash-Delay", "1h"), ("Upstash-Flow-Control-Key", "key"), ("Upstash-Flow-Control-Value", "rate=1")];
    server.publish_ok(NOWHERE, &flow, "x").await;
    let big = server.publish_ok(NOWHERE, &[("Upstash-Delay", "1h")], &"B".repeat(BIG)).await;

    // A reader of the big entry's page that does not read its answer: its entry is larger than
    // a page, so it waited for room for itself — here the most one reservation takes, half the
    // budget, which is the user's share too — and holds it.
    let mut holder = connect(&server).await;
    let request = format!(
        "GET /v2/logs?messageId={big} HTTP/1.1\r\nHost: tern\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n"
    );
    holder.write_all(request.as_bytes()).await.unwrap();
    let head = read_head(&mut holder).await;
    assert!(head.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&head));
    server.wait_for_memory("the big page holds the budget", |usage| usage.listings.reserved_bytes == BUDGET / 2).await;

    let paths = [
        "/v2/logs?trimBody=-1".to_string(),
        "/v2/dlq".into(),
        format!("/v2/dlq/{dlq_id}"),
        format!("/v2/messages/{message_id}"),
        "/v2/topics".into(),
        "/v2/topics/group".into(),
        "/v2/schedules".into(),
        format!("/v2/schedules/{schedule_id}"),
        "/v2/flowControl".into(),
    ];
    let reads: Vec<_> = paths.iter().map(|path| tokio::spawn(server.get(path).send())).collect();
    server.wait_for_memory("every read waits for room", |usage| usage.listings.waiting == paths.len()).await;
    assert!(reads.iter().all(|read| !read.is_finished()), "a read was answered without room");

    // Once the holder has its answer, every read gets its own.
    let mut rest = Vec::new();
    holder.read_to_end(&mut rest).await.unwrap();
    let whole = [head, rest].concat();
    let split = whole.windows(4).position(|window| window == b"\r\n\r\n").unwrap() + 4;
    let logs: Value = serde_json::from_slice(&whole[split..]).expect("the held page is whole JSON");
    assert_eq!(logs["events"][0]["body"].as_str().unwrap(), b64("B".repeat(BIG)));
    for (path, read) in paths.iter().zip(reads) {
        let response = read.await.unwrap().expect("answered");
        assert_eq!(response.status().as_u16(), 200, "{path}");
        let json: Value = response.json().await.expect("JSON");
        assert!(json.as_array().is_none_or(|items| items.len() == 1), "{path}: {json}");
    }
    server.wait_for_memory("every read given back", |usage| usage.listings.reserved_bytes == 0).await;
}

/// A publish (or batch) to a URL group answers one `{messageId, url}` per endpoint, megabytes for a
/// large group of long URLs: the answer is reserved in the listing budget before anything is
/// stored, and stays reserved until it is sent.
#[tokio::test]
async fn a_url_group_publish_reserves_its_answer() {
    const BUDGET: usize = 64 * 1024;
    const ENDPOINTS: usize = 3;
    const URL: usize = 4_000;
    let server = TestServer::start_with(|config| config.limits.listing_budget = BUDGET).await;
    let endpoints: Vec<Value> =
        (0..ENDPOINTS).map(|i| json!({"url": format!("{NOWHERE}/{i}/{}", "u".repeat(URL))})).collect();
    let (status, json) = send(server.post("/v2/topics/long/endpoints").json(&json!({"endpoints": endpoints}))).await;
    assert_eq!(status, StatusCode::OK, "{json}");

    // A publish over HTTP/2 advertising a zero window: its answer's head arrives, its body
    // never can, so its reservation is held.
    let (client, connection) = h2::client::Builder::new()
        .initial_window_size(0)
        .handshake::<_, Bytes>(connect(&server).await)
        .await
        .expect("handshake");
    let connection = tokio::spawn(async move {
        let _ = connection.await;
    });
    let mut client = client.ready().await.expect("ready");
    let request = axum::http::Request::post(format!("{}/v2/publish/long", server.url))
        .header("authorization", format!("Bearer {TOKEN}"))
        .header("upstash-delay", "1h")
        .body(())
        .unwrap();
    let (answer, _) = client.send_request(request, true).expect("a stream");
    let answer = answer.await.expect("an answer's head");
    assert_eq!(answer.status(), 200);
    let unread = answer.into_body();
    server
        .wait_for_memory("the unread answer holds its size", |usage| {
            usage.listings.reserved_bytes >= ENDPOINTS * URL * 2 && usage.listings.waiting == 0
        })
        .await;

    // Another publish, and a batch naming the group, do not fit beside it in the user's share
    // (half the budget): they wait.
    let second = tokio::spawn(server.post("/v2/publish/long").header("Upstash-Delay", "1h").body("b").send());
    let items = json!([{"destination": "long", "body": "c", "headers": {"Upstash-Delay": "1h"}}]);
    let batch = tokio::spawn(server.post("/v2/batch").json(&items).send());
    server.wait_for_memory("the other answers wait for room", |usage| usage.listings.waiting == 2).await;
    assert!(!second.is_finished() && !batch.is_finished(), "answered without room for its answer");

    // A body dropped resets its stream, which gives its reservation back.
    drop(unread);
    let response = second.await.unwrap().expect("answered");
    assert_eq!(response.status().as_u16(), 200);
    let published: Value = response.json().await.expect("JSON");
    assert_eq!(published.as_array().map(Vec::len), Some(ENDPOINTS), "{published}");
    let response = batch.await.unwrap().expect("answered");
    assert_eq!(response.status().as_u16(), 200);
    let published: Value = response.json().await.expect("JSON");
    assert_eq!(published[0].as_array().map(Vec::len), Some(ENDPOINTS), "{published}");
    server.wait_for_memory("every answer given back", |usage| usage.listings.reserved_bytes == 0).await;
    connection.abort();
}

#[tokio::test]
async fn url_groups_are_listed_a_piece_at_a_time() {
    let server = TestServer::start_with(|config| config.limits.list_page_bytes = 1_000).await;
    let long = format!("{NOWHERE}/{}", "u".repeat(600));
    for name in ["a", "b", "c"] {
        let endpoints = json!({"endpoints": [{"url": format!("{long}/{name}"), "name": name}]});
        let (status, json) = send(server.post(&format!("/v2/topics/{name}/endpoints")).json(&endpoints)).await;
        assert_eq!(status, StatusCode::OK, "{json}");
    }
    let response = server.get("/v2/topics").send().await.unwrap();
    assert!(response.headers().get("content-length").is_none(), "streamed, not built whole");
    let groups: Value = response.json().await.unwrap();
    let listed: Vec<(&str, &str)> = groups
        .as_array()
        .unwrap()
        .iter()
        .map(|group| (group["name"].as_str().unwrap(), group["endpoints"][0]["url"].as_str().unwrap()))
        .collect();
    let expected: Vec<String> = ["a", "b", "c"].iter().map(|name| format!("{long}/{name}")).collect();
    assert_eq!(listed, vec![("a", expected[0].as_str()), ("b", expected[1].as_str()), ("c", expected[2].as_str())]);
}
