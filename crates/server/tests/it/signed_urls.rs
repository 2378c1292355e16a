//! The URL a receiver is called at and the `sub` of its `Upstash-Signature` agree: a
//! destination, callback or URL-group endpoint with dot segments (`/a/../b`) is resolved once,
//! when it is accepted, and that URL is stored, shown, signed and requested.

use crate::harness::*;
use crate::support::*;
use axum::http::StatusCode;
use serde_json::json;
use tern_core::signing;

/// The `sub` of the request's signature, checked against the receiver's own URL for it.
fn signed_for(server: &TestServer, receiver: &Receiver, request: &Recorded) -> String {
    let token = request.header("upstash-signature").expect("signed");
    let url = receiver.url(&request.target);
    let claims = signing::verify(token, CURRENT_KEY, &request.body, Some(&url), server.now_ms() / 1000)
        .unwrap_or_else(|error| panic!("the signature is not for {url}: {error}"));
    claims.sub
}

/// `url` percent-encoded whole, as a publish path: the client sends the dot segments as given.
fn encoded(url: &str) -> String {
    url::form_urlencoded::byte_serialize(url.as_bytes()).collect()
}

#[tokio::test]
async fn a_destination_with_dot_segments_is_signed_as_requested() {
    let server = TestServer::start().await;
    let receiver = Receiver::start().await;
    let given = receiver.url("/a/../published/./here?x=1");
    let id = server.publish_ok(&encoded(&given), &[], "p").await;
    let request = receiver.wait_for("/published/here", 1).await.remove(0);
    assert_eq!(signed_for(&server, &receiver, &request), receiver.url("/published/here?x=1"));
    let message = get_ok(&server, &format!("/v2/messages/{id}")).await;
    assert_eq!(message["url"], receiver.url("/published/here?x=1"), "shown as requested");

    // A batch item, its callback, and a failure callback alike.
    receiver.script("/failing", vec![Reply::Status(500)]);
    let items = json!([
        { "destination": receiver.url("/b/../batched"), "body": "b",
          "headers": { "Upstash-Callback": receiver.url("/cb/x/../../called") } },
        { "destination": receiver.url("/failing"), "body": "f",
          "headers": { "Upstash-Retries": "0", "Upstash-Failure-Callback": receiver.url("/./failed") } },
    ]);
    let (status, json) = send(server.post("/v2/batch").json(&items)).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    for path in ["/batched", "/called", "/failed"] {
        let request = receiver.wait_for(path, 1).await.remove(0);
        assert_eq!(signed_for(&server, &receiver, &request), receiver.url(path));
    }
}

#[tokio::test]
async fn a_url_group_endpoint_with_dot_segments_is_stored_as_requested() {
    let server = TestServer::start().await;
    let receiver = Receiver::start().await;
    let endpoints = json!({ "endpoints": [{ "url": receiver.url("/g/../member") }] });
    assert_eq!(send(server.post("/v2/topics/dots/endpoints").json(&endpoints)).await.0, StatusCode::OK);
    let group = get_ok(&server, "/v2/topics/dots").await;
    assert_eq!(group["endpoints"][0]["url"], receiver.url("/member"));
    server.publish("dots", &[], "g").await;
    let request = receiver.wait_for("/member", 1).await.remove(0);
    assert_eq!(signed_for(&server, &receiver, &request), receiver.url("/member"));
    // The endpoint can be removed by the URL it was added with.
    assert_eq!(send(server.delete("/v2/topics/dots/endpoints").json(&endpoints)).await.0, StatusCode::OK);
    assert_eq!(send(server.get("/v2/topics/dots")).await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn urls_without_dot_segments_stay_verbatim() {
    let server = TestServer::start().await;
    let receiver = Receiver::start().await;
    let given = format!("{}?b=2&a=1", receiver.base);
    let id = server.publish_ok(&given, &[], "v").await;
    let request = receiver.wait_for("/", 1).await.remove(0);
    let sub = signing::verify(
        request.header("upstash-signature").unwrap(),
        CURRENT_KEY,
        &request.body,
        None,
        server.now_ms() / 1000,
    )
    .unwrap()
    .sub;
    assert_eq!(sub, given, "no `/` added (spec §3.2)");
    assert_eq!(get_ok(&server, &format!("/v2/messages/{id}")).await["url"], given);
}
