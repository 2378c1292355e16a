//! Authentication, read-only tokens and tenant isolation (spec §1, §20).

use crate::harness::*;
use crate::support::*;
use axum::http::{Method, StatusCode};
use serde_json::json;
use tern_server::dev::DEV_USERS;

const READONLY: &str = "read-only-token-of-the-default-user";

/// A request with `token` instead of the default user's.
fn as_user(server: &TestServer, token: &str, method: Method, path: &str) -> reqwest::RequestBuilder {
    server.http.request(method, format!("{}{path}", server.url)).bearer_auth(token)
}

#[tokio::test]
async fn requests_without_a_valid_token_answer_401() {
    let server = TestServer::start().await;
    let receiver = Receiver::start().await;
    let publish = format!("/v2/publish/{}", receiver.url("/x"));
    for (method, path) in [
        (Method::POST, publish.as_str()),
        (Method::GET, "/v2/messages/msg_x"),
        (Method::DELETE, "/v2/messages"),
        (Method::GET, "/v2/logs"),
        (Method::GET, "/v2/events"),
        (Method::GET, "/v2/dlq"),
        (Method::DELETE, "/v2/dlq/1-0"),
        (Method::POST, "/v2/dlq/retry"),
        (Method::GET, "/v2/keys"),
        (Method::POST, "/v2/keys/rotate"),
        (Method::POST, "/v2/rotate"),
        (Method::POST, "/v2/publish/"),
    ] {
        let url = format!("{}{path}", server.url);
        let (status, message) = error_of(server.http.request(method.clone(), &url)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {path} without a token: {message}");
        let wrong = server.http.request(method.clone(), &url).bearer_auth("not-a-token");
        assert_eq!(error_of(wrong).await.0, StatusCode::UNAUTHORIZED, "{method} {path} with a wrong token");
        let wrong = server.http.request(method.clone(), format!("{url}?qstash_token=not-a-token"));
        assert_eq!(error_of(wrong).await.0, StatusCode::UNAUTHORIZED, "{method} {path} with a wrong query token");
        let basic = server.http.request(method.clone(), &url).basic_auth("user", Some(TOKEN));
        assert_eq!(error_of(basic).await.0, StatusCode::UNAUTHORIZED, "{method} {path} with basic auth");
    }
    assert_eq!(receiver.requests().len(), 0);
    let json = get_ok(&server, "/v2/logs").await;
    assert_eq!(json["events"], json!([]));
}

#[tokio::test]
async fn bearer_and_query_tokens_both_work() {
    let server = TestServer::start().await;
    let receiver = Receiver::start().await;
    let url = receiver.url("/q");
    let response = server
        .http
        .post(format!("{}/v2/publish/{url}?qstash_token={TOKEN}", server.url))
        .body("by query")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let id: serde_json::Value = response.json().await.unwrap();
    let id = id["messageId"].as_str().unwrap().to_string();
    server.wait_for_state(&id, "DELIVERED").await;
    let by_query = server.http.get(format!("{}/v2/messages/{id}?qstash_token={TOKEN}", server.url));
    let (status, by_query) = send(by_query).await;
    assert_eq!(status, StatusCode::OK);
    let by_bearer = get_ok(&server, &format!("/v2/messages/{id}")).await;
    assert_eq!(by_query, by_bearer);
    // The token was not part of the destination.
    assert_eq!(by_bearer["url"], json!(url));
    // The scheme is case-insensitive.
    let lower = server.http.get(format!("{}/v2/keys", server.url)).header("Authorization", format!("bearer {TOKEN}"));
    assert_eq!(send(lower).await.0, StatusCode::OK);
}

#[tokio::test]
async fn a_read_only_token_reads_but_cannot_write() {
    let server = TestServer::start_with(|config| config.users[0].readonly_token = Some(READONLY.into())).await;
    let receiver = Receiver::start().await;
    receiver.script("/dead", vec![Reply::Status(500)]);
    let (failed, dlq_id) = dead_letter(&server, &receiver, "/dead", &[], "x").await;
    let pending = publish_pending(&server, &receiver.url("/later"), &[]).await;

    // Reads answer exactly what the full token sees.
    for path in [
        format!("/v2/messages/{pending}"),
        format!("/v2/messages/{failed}"),
        "/v2/logs".to_string(),
        "/v2/events".to_string(),
        "/v2/dlq".to_string(),
        format!("/v2/dlq/{dlq_id}"),
    ] {
        let (status, read_only) = send(as_user(&server, READONLY, Method::GET, &path)).await;
        assert_eq!(status, StatusCode::OK, "GET {path}: {read_only}");
        assert_eq!(read_only, get_ok(&server, &path).await, "GET {path}");
    }

    let publish = format!("/v2/publish/{}", receiver.url("/ro"));
    for (method, path) in [
        (Method::POST, publish),
        (Method::POST, "/v2/publish/".to_string()),
        (Method::DELETE, format!("/v2/messages/{pending}")),
        (Method::DELETE, "/v2/messages".to_string()),
        (Method::DELETE, format!("/v2/messages?messageIds={pending}")),
        (Method::DELETE, format!("/v2/dlq/{dlq_id}")),
        (Method::DELETE, format!("/v2/dlq?dlqIds={dlq_id}")),
        (Method::POST, format!("/v2/dlq/retry/{dlq_id}")),
        (Method::POST, format!("/v2/dlq/retry?dlqIds={dlq_id}")),
        (Method::GET, "/v2/keys".to_string()),
        (Method::POST, "/v2/keys/rotate".to_string()),
        (Method::POST, "/v2/rotate".to_string()),
    ] {
        let (status, message) = error_of(as_user(&server, READONLY, method.clone(), &path)).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{method} {path}: {message}");
        let separator = if path.contains('?') { '&' } else { '?' };
        let query =
            server.http.request(method.clone(), format!("{}{path}{separator}qstash_token={READONLY}", server.url));
        assert_eq!(error_of(query).await.0, StatusCode::FORBIDDEN, "{method} {path} with the query token");
    }

    // Nothing changed.
    assert!(is_pending(&server, &pending).await);
    assert_eq!(dlq_ids(&get_ok(&server, "/v2/dlq").await), [dlq_id]);
    let (_, current, next) = (DEV_USERS[0].0, DEV_USERS[0].2, DEV_USERS[0].3);
    assert_eq!(get_ok(&server, "/v2/keys").await, json!({ "current": current, "next": next }));
    receiver.assert_count_stays(&server, "/ro", 0).await;
}

#[tokio::test]
async fn users_cannot_see_or_touch_each_others_data() {
    let server = TestServer::start().await;
    let receiver = Receiver::start().await;
    receiver.script("/dead", vec![Reply::Status(500)]);
    let (failed, dlq_id) = dead_letter(&server, &receiver, "/dead", &[("Upstash-Label", "mine")], "x").await;
    let pending = publish_pending(&server, &receiver.url("/later"), &[("Upstash-Label", "mine")]).await;
    let other = |method: Method, path: &str| as_user(&server, OTHER_TOKEN, method, path);

    for id in [&pending, &failed] {
        expect_error(other(Method::GET, &format!("/v2/messages/{id}")), StatusCode::NOT_FOUND, id).await;
        expect_error(other(Method::DELETE, &format!("/v2/messages/{id}")), StatusCode::NOT_FOUND, id).await;
    }
    for query in [format!("messageIds={pending}"), "label=mine".to_string(), String::new()] {
        let (status, json) = send(other(Method::DELETE, &format!("/v2/messages?{query}"))).await;
        assert_eq!((status, json), (StatusCode::OK, json!({ "cancelled": 0 })), "bulk cancel {query:?}");
    }
    let body = json!({ "messageIds": [pending] }).to_string();
    let (status, json) = send(other(Method::DELETE, "/v2/messages").body(body)).await;
    assert_eq!((status, json), (StatusCode::OK, json!({ "cancelled": 0 })));

    for path in ["/v2/logs", "/v2/events", &format!("/v2/logs?messageId={pending}"), "/v2/logs?label=mine"] {
        let (status, json) = send(other(Method::GET, path)).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(json["events"], json!([]), "{path}: {json}");
    }
    let (_, json) = send(other(Method::GET, "/v2/dlq")).await;
    assert_eq!(json, json!({ "messages": [] }));
    expect_error(other(Method::GET, &format!("/v2/dlq/{dlq_id}")), StatusCode::NOT_FOUND, &dlq_id).await;
    expect_error(other(Method::DELETE, &format!("/v2/dlq/{dlq_id}")), StatusCode::NOT_FOUND, &dlq_id).await;
    expect_error(other(Method::POST, &format!("/v2/dlq/retry/{dlq_id}")), StatusCode::NOT_FOUND, &dlq_id).await;
    expect_error(other(Method::POST, &format!("/v2/dlq/retry?dlqIds={dlq_id}")), StatusCode::NOT_FOUND, &dlq_id).await;
    let (status, json) = send(other(Method::DELETE, &format!("/v2/dlq?dlqIds={dlq_id}"))).await;
    assert_eq!((status, json), (StatusCode::OK, json!({ "deleted": 0 })));
    let (status, json) = send(other(Method::DELETE, "/v2/dlq")).await;
    assert_eq!((status, json), (StatusCode::OK, json!({ "deleted": 0 })));
    let (status, json) = send(other(Method::POST, "/v2/dlq/retry")).await;
    assert_eq!((status, json), (StatusCode::CREATED, json!({ "responses": [] })));

    // The owner still has everything.
    assert!(is_pending(&server, &pending).await);
    assert_eq!(dlq_ids(&get_ok(&server, "/v2/dlq").await), [dlq_id]);
    assert_eq!(server.log_states(&failed).await, ["CREATED", "ACTIVE", "ERROR", "FAILED"]);
}

#[tokio::test]
async fn each_user_has_its_own_signing_keys() {
    let server = TestServer::start().await;
    let keys_of = |token: &str| as_user(&server, token, Method::GET, "/v2/keys");
    let (_, mine) = send(keys_of(TOKEN)).await;
    let (_, theirs) = send(keys_of(OTHER_TOKEN)).await;
    assert_eq!(mine, json!({ "current": DEV_USERS[0].2, "next": DEV_USERS[0].3 }));
    assert_eq!(theirs, json!({ "current": DEV_USERS[1].2, "next": DEV_USERS[1].3 }));

    let (status, rotated) = send(server.post("/v2/keys/rotate")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(rotated["current"], json!(DEV_USERS[0].3));
    assert_eq!(send(keys_of(TOKEN)).await.1, rotated);
    assert_eq!(send(keys_of(OTHER_TOKEN)).await.1, theirs, "the other user's keys changed");

    let (_, other_rotated) = send(as_user(&server, OTHER_TOKEN, Method::POST, "/v2/rotate")).await;
    assert_eq!(other_rotated["current"], json!(DEV_USERS[1].3));
    assert_eq!(send(keys_of(TOKEN)).await.1, rotated, "my keys changed when the other user rotated");
}
