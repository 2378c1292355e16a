//! Routing (spec §0.1, §3.3): case-insensitive resource segments, trailing slashes, aliases,
//! and a configured path prefix.

use crate::harness::*;
use crate::support::*;
use axum::http::StatusCode;
use serde_json::json;
use tern_core::signing;

#[tokio::test]
async fn resource_segments_match_case_insensitively() {
    let server = TestServer::start().await;
    let receiver = Receiver::start().await;
    let url = receiver.url("/Case/Kept");
    let (status, json) = send(server.post(&format!("/V2/PUBLISH/{url}")).body("x")).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    let id = json["messageId"].as_str().unwrap().to_string();
    // The destination keeps its own case.
    assert_eq!(receiver.wait_for("/Case/Kept", 1).await[0].target, "/Case/Kept");
    server.wait_for_state(&id, "DELIVERED").await;

    let canonical = get_ok(&server, &format!("/v2/messages/{id}")).await;
    for path in [format!("/v2/Messages/{id}"), format!("/V2/MESSAGES/{id}"), format!("/v2/message/{id}")] {
        assert_eq!(get_ok(&server, &path).await, canonical, "{path}");
    }
    for path in ["/v2/Logs", "/v2/EVENTS", "/v2/Dlq", "/v2/Keys"] {
        assert_eq!(get_ok(&server, path).await, get_ok(&server, &path.to_ascii_lowercase()).await, "{path}");
    }
}

#[tokio::test]
async fn aliases_and_trailing_slashes() {
    let server = TestServer::start().await;
    let url = format!("{NOWHERE}/alias");
    let one = publish_pending(&server, &url, &[]).await;
    let (status, json) = send(server.delete(&format!("/v2/message/{one}"))).await;
    assert_eq!((status, json), (StatusCode::OK, json!({ "cancelled": 1 })));

    let ids = [publish_pending(&server, &url, &[]).await, publish_pending(&server, &url, &[]).await];
    let (status, json) = send(server.delete("/v2/Messages/")).await;
    assert_eq!((status, json), (StatusCode::OK, json!({ "cancelled": 2 })));
    for id in &ids {
        assert_eq!(server.log_states(id).await, ["CREATED", "CANCEL_REQUESTED", "CANCELED"]);
    }
    assert_eq!(get_ok(&server, "/v2/dlq/").await, json!({ "messages": [] }));
    let (status, json) = send(server.post("/v2/dlq/retry/")).await;
    assert_eq!((status, json), (StatusCode::CREATED, json!({ "responses": [] })));
    assert_eq!(get_ok(&server, "/v2/events").await, get_ok(&server, "/v2/logs").await);
}

#[tokio::test]
async fn a_path_prefix_serves_the_api_under_it() {
    let server = TestServer::start_with(|config| config.server.path_prefix = "/qstash/".into()).await;
    let receiver = Receiver::start().await;
    let url = receiver.url("/behind-proxy");
    let (status, json) = send(server.post(&format!("/qstash/v2/publish/{url}?a=b")).body("proxied")).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    let id = json["messageId"].as_str().unwrap().to_string();
    let request = receiver.wait_for("/behind-proxy", 1).await.remove(0);
    assert_eq!(request.target, "/behind-proxy?a=b");
    let token = request.header("upstash-signature").unwrap();
    let claims = signing::verify(token, CURRENT_KEY, &request.body, None, server.now_ms() / 1000).unwrap();
    assert_eq!(claims.sub, format!("{url}?a=b"));
    server.wait_for_state(&id, "DELIVERED").await;

    let message = get_ok(&server, &format!("/qstash/v2/messages/{id}")).await;
    assert_eq!(message["url"], json!(format!("{url}?a=b")));
    assert_eq!(get_ok(&server, &format!("/qstash/v2/Messages/{id}")).await, message);
    let logs = get_ok(&server, &format!("/qstash/v2/logs?messageId={id}")).await;
    assert_eq!(entry_states(&logs).len(), 3);
    assert_eq!(get_ok(&server, "/qstash/v2/keys").await, json!({ "current": CURRENT_KEY, "next": NEXT_KEY }));
    assert_eq!(get_ok(&server, "/qstash/v2/dlq").await, json!({ "messages": [] }));
    let (status, json) = send(server.delete(&format!("/qstash/v2/messages/{id}"))).await;
    assert_eq!((status, json), (StatusCode::OK, json!({ "cancelled": 0 })));
    expect_error(server.get("/qstashx/v2/keys"), StatusCode::NOT_FOUND, "").await;
    expect_error(server.get("/v2/keys"), StatusCode::NOT_FOUND, "/v2/keys").await;
    expect_error(server.get("/qstash/v2/nothing"), StatusCode::NOT_FOUND, "").await;
    expect_error(server.post("/qstash/v2/publish/"), StatusCode::BAD_REQUEST, "non-empty destination").await;
}
