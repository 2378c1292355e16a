//! What a read-only token may see: everything a user's data holds, but never a secret. The
//! signing keys sign requests to the user's receivers, so whoever reads them can forge
//! `Upstash-Signature`; reading them takes the full token.

use crate::harness::*;
use crate::support::*;
use axum::http::{Method, StatusCode};
use serde_json::json;

const READONLY: &str = "read-only-token-of-the-default-user";

fn read_only(server: &TestServer, path: &str) -> reqwest::RequestBuilder {
    server.http.request(Method::GET, format!("{}{path}", server.url)).bearer_auth(READONLY)
}

#[tokio::test]
async fn a_read_only_token_cannot_read_the_signing_keys() {
    let server = TestServer::start_with(|config| config.users[0].readonly_token = Some(READONLY.into())).await;
    expect_error(read_only(&server, "/v2/keys"), StatusCode::FORBIDDEN, "read-only").await;
    let by_query = server.http.get(format!("{}/v2/keys?qstash_token={READONLY}", server.url));
    expect_error(by_query, StatusCode::FORBIDDEN, "read-only").await;
    // The full token still reads them.
    assert_eq!(get_ok(&server, "/v2/keys").await, json!({ "current": CURRENT_KEY, "next": NEXT_KEY }));
}

#[tokio::test]
async fn no_read_a_read_only_token_may_make_shows_a_key_or_token() {
    let server = TestServer::start_with(|config| config.users[0].readonly_token = Some(READONLY.into())).await;
    let receiver = Receiver::start().await;
    receiver.script("/dead", vec![Reply::Status(500)]);
    // Something of every kind: a delivered message with a callback (whose body quotes the
    // source), a DLQ entry, a pending message with flow control in a queue, a URL group and a
    // schedule.
    let delivered = server.publish_ok(&receiver.url("/ok"), &[("Upstash-Callback", &receiver.url("/cb"))], "x").await;
    server.wait_for_state(&delivered, "DELIVERED").await;
    receiver.wait_for("/cb", 1).await;
    let (failed, dlq_id) = dead_letter(&server, &receiver, "/dead", &[], "x").await;
    let flow = [("Upstash-Delay", "1h"), ("Upstash-Flow-Control-Key", "k"), ("Upstash-Flow-Control-Value", "rate=1")];
    let pending = server.enqueue_ok("q", &receiver.url("/later"), &flow, "x").await;
    let endpoints = json!({ "endpoints": [{ "url": receiver.url("/group") }] });
    assert_eq!(send(server.post("/v2/topics/g/endpoints").json(&endpoints)).await.0, StatusCode::OK);
    let (status, schedule) =
        send(server.post(&format!("/v2/schedules/{}", receiver.url("/tick"))).header("Upstash-Cron", "0 0 1 1 *"))
            .await;
    assert_eq!(status, StatusCode::OK, "{schedule}");
    let schedule = schedule["scheduleId"].as_str().unwrap();

    let secrets = [CURRENT_KEY, NEXT_KEY, TOKEN];
    for path in [
        format!("/v2/messages/{delivered}"),
        format!("/v2/messages/{failed}"),
        format!("/v2/messages/{pending}"),
        "/v2/logs".to_string(),
        "/v2/events".to_string(),
        "/v2/dlq".to_string(),
        format!("/v2/dlq/{dlq_id}"),
        "/v2/queues".to_string(),
        "/v2/queues/q".to_string(),
        "/v2/topics".to_string(),
        "/v2/topics/g".to_string(),
        "/v2/schedules".to_string(),
        format!("/v2/schedules/{schedule}"),
        "/v2/flowControl".to_string(),
        "/v2/flowControl/k".to_string(),
        "/v2/globalParallelism".to_string(),
    ] {
        let response = read_only(&server, &path).send().await.unwrap();
        assert_eq!(response.status(), 200, "GET {path}");
        let text = response.text().await.unwrap();
        for secret in secrets {
            assert!(!text.contains(secret), "GET {path} shows a secret: {text}");
        }
    }
}
