//! Signing keys (spec §5.11, §8): the configured keys, rotation on both paths, and deliveries
//! signed with the rotated key.

use crate::harness::*;
use crate::support::*;
use axum::http::StatusCode;
use serde_json::{Value, json};
use tern_core::signing;

async fn rotate(server: &TestServer, path: &str) -> Value {
    let (status, json) = send(server.post(path)).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    json
}

fn key(json: &Value, which: &str) -> String {
    json[which].as_str().unwrap_or_else(|| panic!("no {which} key in {json}")).to_string()
}

#[tokio::test]
async fn keys_rotate_on_both_paths_and_survive_a_restart() {
    let mut server = TestServer::start().await;
    assert_eq!(get_ok(&server, "/v2/keys").await, json!({ "current": CURRENT_KEY, "next": NEXT_KEY }));

    let first = rotate(&server, "/v2/keys/rotate").await;
    assert_eq!(first.as_object().unwrap().len(), 2, "{first}");
    assert_eq!(key(&first, "current"), NEXT_KEY);
    let fresh = key(&first, "next");
    assert!(fresh.starts_with("sig_") && fresh.len() >= 20, "{fresh}");
    assert!(fresh != CURRENT_KEY && fresh != NEXT_KEY);
    assert_eq!(get_ok(&server, "/v2/keys").await, first);

    let second = rotate(&server, "/v2/rotate").await;
    assert_eq!(key(&second, "current"), fresh);
    let newest = key(&second, "next");
    assert!(newest.starts_with("sig_") && newest != fresh && newest != NEXT_KEY, "{newest}");
    assert_eq!(get_ok(&server, "/v2/keys").await, second);

    server.restart().await;
    assert_eq!(get_ok(&server, "/v2/keys").await, second, "rotated keys are kept across a restart");
}

#[tokio::test]
async fn deliveries_after_a_rotation_are_signed_with_the_new_current_key() {
    let server = TestServer::start().await;
    let receiver = Receiver::start().await;
    let rotated = rotate(&server, "/v2/keys/rotate").await;
    let current = key(&rotated, "current");
    let next = key(&rotated, "next");

    let url = receiver.url("/signed");
    server.publish_ok(&url, &[], "body").await;
    let request = receiver.wait_for("/signed", 1).await.remove(0);
    let token = request.header("upstash-signature").expect("signed");
    let now = server.now_ms() / 1000;
    let claims =
        signing::verify(token, &current, &request.body, Some(&url), now).expect("verifies with the new current");
    assert_eq!(claims.sub, url);
    assert!(signing::verify(token, CURRENT_KEY, &request.body, None, now).is_err(), "still signed with the old key");
    assert!(signing::verify(token, &next, &request.body, None, now).is_err());

    // The other users' deliveries are unaffected.
    let other = server
        .http
        .post(format!("{}/v2/publish/{}", server.url, receiver.url("/other")))
        .bearer_auth(OTHER_TOKEN)
        .body("theirs");
    assert_eq!(send(other).await.0, StatusCode::OK);
    let request = receiver.wait_for("/other", 1).await.remove(0);
    let token = request.header("upstash-signature").expect("signed");
    let other_key = tern_server::dev::DEV_USERS[1].2;
    assert!(signing::verify(token, other_key, &request.body, None, now).is_ok());
}
