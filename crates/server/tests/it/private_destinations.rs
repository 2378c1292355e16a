//! `delivery.allow_private_destinations = false` refuses private destinations everywhere a
//! delivery target enters: schedules (created directly or by `Upstash-Cron` on a publish) and
//! their callbacks like publishes, and every special-purpose range, also when an IPv6 address
//! embeds a private IPv4 one.

use crate::harness::*;
use crate::support::*;
use axum::http::StatusCode;
use serde_json::json;

async fn restricted() -> TestServer {
    TestServer::start_with(|config| config.delivery.allow_private_destinations = false).await
}

/// Creates a schedule to `destination` with extra headers.
fn create_schedule(server: &TestServer, destination: &str, headers: &[(&str, &str)]) -> reqwest::RequestBuilder {
    let mut request = server.post(&format!("/v2/schedules/{destination}")).header("Upstash-Cron", "0 0 1 1 *");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request
}

#[tokio::test]
async fn schedules_to_private_destinations_are_refused() {
    let server = restricted().await;
    let public = format!("{NOWHERE}/tick");
    for private in ["http://127.0.0.1:9/tick", "http://localhost:9/tick", "http://[::ffff:127.0.0.1]:9/tick"] {
        expect_error(create_schedule(&server, private, &[]), StatusCode::BAD_REQUEST, "private address").await;
        // A publish carrying Upstash-Cron creates a schedule too.
        let publish = server.post(&format!("/v2/publish/{private}")).header("Upstash-Cron", "0 0 1 1 *");
        expect_error(publish, StatusCode::BAD_REQUEST, "private address").await;
    }
    for callback in ["Upstash-Callback", "Upstash-Failure-Callback"] {
        let headers = [(callback, "http://10.0.0.1/cb")];
        expect_error(create_schedule(&server, &public, &headers), StatusCode::BAD_REQUEST, "private address").await;
        let publish = server
            .post(&format!("/v2/publish/{public}"))
            .header("Upstash-Cron", "0 0 1 1 *")
            .header(callback, "http://10.0.0.1/cb");
        expect_error(publish, StatusCode::BAD_REQUEST, "private address").await;
    }
    assert_eq!(get_ok(&server, "/v2/schedules").await, json!([]), "nothing was created");

    // A public destination with public callbacks is still accepted.
    let headers = [("Upstash-Callback", "http://tern-test.invalid/cb")];
    let (status, json) = send(create_schedule(&server, &public, &headers)).await;
    assert_eq!(status, StatusCode::OK, "{json}");
}

#[tokio::test]
async fn every_special_purpose_range_is_refused() {
    let server = restricted().await;
    for private in [
        "http://0.1.2.3/x",
        "http://198.18.0.1/x",
        "http://198.19.255.1/x",
        "http://240.0.0.1/x",
        "http://255.255.255.255/x",
        "http://100.64.0.1/x",
        "http://192.0.0.1/x",
        "http://192.0.2.1/x",
        "http://198.51.100.1/x",
        "http://203.0.113.1/x",
        "http://224.0.0.1/x",
        "http://2130706433/x",
        "http://[::]/x",
        "http://[::1]/x",
        "http://[::7f00:1]/x",
        "http://[::ffff:7f00:1]/x",
        "http://[::ffff:169.254.169.254]/x",
        "http://[64:ff9b::7f00:1]/x",
        "http://[64:ff9b::10.0.0.1]/x",
        "http://[2002:7f00:1::1]/x",
        "http://[2001:db8::1]/x",
        "http://[fc00::1]/x",
        "http://[fe80::1]/x",
        "http://[ff02::1]/x",
    ] {
        let (status, json) = server.publish(private, &[("Upstash-Delay", "7d")], "x").await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{private}: {json}");
        assert!(json["error"].as_str().unwrap().contains("private address"), "{private}: {json}");
    }
}
