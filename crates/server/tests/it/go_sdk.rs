//! What the official Go SDK (`qstash-go`, tests/sdk/go) found: requests shaped the way it
//! builds them.

use crate::harness::*;
use crate::support::*;
use serde_json::json;

/// The Go and Python SDKs send a `Content-Type` among a message's own headers as
/// `Upstash-Forward-Content-Type`, next to the request's `Content-Type` that their JSON helpers
/// set (`BatchJSON` with `Headers: {"Content-Type": "text/plain"}`, as in the Go SDK's own
/// tests). The destination gets one `Content-Type`, the forwarded one: two would be an invalid
/// request (it is a singleton field), and receivers would each pick a different one.
#[tokio::test]
async fn a_forwarded_content_type_replaces_the_requests_own() {
    let server = TestServer::start().await;
    let receiver = Receiver::start().await;
    let headers = [("Content-Type", "application/json"), ("Upstash-Forward-Content-Type", "text/plain")];
    let id = server.publish_ok(&receiver.url("/publish"), &headers, "{}").await;
    let delivered = &receiver.wait_for("/publish", 1).await[0];
    let values: Vec<_> = delivered.headers.get_all("content-type").iter().collect();
    assert_eq!(values, ["text/plain"], "{id}");
    let message = get_ok(&server, &format!("/v2/messages/{id}")).await;
    assert_eq!(message["header"], json!({ "Content-Type": ["text/plain"] }));

    // the same in a batch item, and without a forwarded one the request's own stays
    let batch = json!([
        { "destination": receiver.url("/batch"), "headers": { "Content-Type": "application/json", "Upstash-Forward-Content-Type": "text/plain" }, "body": "{}", "queue": "" },
        { "destination": receiver.url("/plain"), "headers": { "Content-Type": "application/json" }, "body": "{}", "queue": "" },
    ]);
    let (status, _) = send(server.post("/v2/batch").json(&batch)).await;
    assert_eq!(status, 200);
    let delivered = &receiver.wait_for("/batch", 1).await[0];
    let values: Vec<_> = delivered.headers.get_all("content-type").iter().collect();
    assert_eq!(values, ["text/plain"]);
    let delivered = &receiver.wait_for("/plain", 1).await[0];
    let values: Vec<_> = delivered.headers.get_all("content-type").iter().collect();
    assert_eq!(values, ["application/json"]);
}
