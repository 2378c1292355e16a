//! Listings whose size depends on stored bodies: pages of logs and of the DLQ end by size
//! (`limits.list_page_bytes`) with a cursor that continues, `trimBody` trims or leaves out
//! bodies, both log keys hold the one array, and the schedule list is streamed whole.

use crate::harness::*;
use crate::schedule_support::*;
use crate::support::*;
use axum::http::StatusCode;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::Value;

/// Follows `cursor` from `path` (which has a query) to the end; returns every page.
async fn pages(server: &TestServer, path: &str) -> Vec<Value> {
    let mut pages = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = match &cursor {
            Some(cursor) => get_ok(server, &format!("{path}&cursor={cursor}")).await,
            None => get_ok(server, path).await,
        };
        cursor = page.get("cursor").map(|next| next.as_str().expect("cursor is a string").to_string());
        pages.push(page);
        if cursor.is_none() {
            return pages;
        }
        assert!(pages.len() < 20, "pagination does not end");
    }
}

/// A body of about three eighths of a page's bytes: two fit in a page, three do not.
fn big_body(server: &TestServer, index: usize) -> String {
    format!("{index}:{}", "b".repeat(server.config.limits.list_page_bytes * 3 / 8))
}

#[tokio::test]
async fn a_logs_page_ends_by_size_and_its_cursor_continues() {
    let server = TestServer::start().await;
    let mut published = Vec::new();
    for index in 0..5 {
        let body = big_body(&server, index);
        let id = server.publish_ok(&format!("{NOWHERE}/big"), &[("Upstash-Delay", "1h")], &body).await;
        published.push((id, body));
    }
    let pages = pages(&server, "/v2/logs?order=earliestFirst").await;
    let mut listed = Vec::new();
    for page in &pages {
        assert_eq!(page["events"], page["logs"], "both keys hold the same entries");
        for entry in page["events"].as_array().expect("events") {
            let body = STANDARD.decode(entry["body"].as_str().expect("body")).expect("base64");
            listed.push((entry["messageId"].as_str().unwrap().to_string(), String::from_utf8(body).unwrap()));
        }
    }
    let sizes: Vec<usize> = pages.iter().map(|page| page["events"].as_array().unwrap().len()).collect();
    assert_eq!(sizes, [2, 2, 1], "a page ends before the entry that would pass its bytes");
    assert!(listed == published, "every entry once, in order, with its whole body");
}

#[tokio::test]
async fn a_dlq_page_ends_by_size_and_its_cursor_continues() {
    let server = TestServer::start().await;
    let receiver = Receiver::start().await;
    receiver.script("/fail", vec![Reply::Status(500)]);
    let mut dead = Vec::new();
    for index in 0..3 {
        let (_, dlq_id) = dead_letter(&server, &receiver, "/fail", &[], &big_body(&server, index)).await;
        dead.push(dlq_id);
    }
    let pages = pages(&server, "/v2/dlq?order=earliestFirst").await;
    let sizes: Vec<usize> = pages.iter().map(|page| dlq_ids(page).len()).collect();
    assert_eq!(sizes, [2, 1], "a page ends before the entry that would pass its bytes");
    let mut listed: Vec<String> = pages.iter().flat_map(dlq_ids).collect();
    listed.sort();
    dead.sort();
    assert_eq!(listed, dead, "every entry once");
    let bodies: Vec<usize> = pages
        .iter()
        .flat_map(|page| page["messages"].as_array().unwrap().clone())
        .map(|m| m["body"].as_str().unwrap().len())
        .collect();
    assert!(bodies.iter().all(|length| *length == big_body(&server, 0).len()), "whole bodies");
}

/// Every log entry of `id` listed with `query`.
async fn entries(server: &TestServer, id: &str, query: &str) -> Vec<Value> {
    let json = get_ok(server, &format!("/v2/logs?messageId={id}&{query}")).await;
    assert_eq!(json["events"], json["logs"]);
    json["events"].as_array().expect("events").clone()
}

#[tokio::test]
async fn trim_body_trims_or_leaves_out_the_bodies_of_logs_and_the_dlq() {
    let server = TestServer::start().await;
    let receiver = Receiver::start().await;
    let response = "réponse";
    receiver.script("/fail", vec![Reply::Full { status: 500, headers: Vec::new(), body: response.into() }]);
    let body = "héllo wörld";
    let (id, _) = dead_letter(&server, &receiver, "/fail", &[], body).await;

    let trimmed = entries(&server, &id, "trimBody=2").await;
    assert!(trimmed.len() >= 3, "CREATED, ERROR, FAILED: {trimmed:?}");
    for entry in &trimmed {
        assert_eq!(entry["body"], b64(&body.as_bytes()[..2]), "{entry}");
        if entry.get("responseStatus").is_some() {
            assert_eq!(entry["responseBody"], b64(&response.as_bytes()[..2]), "{entry}");
        }
    }
    let whole = entries(&server, &id, "trimBody=1000").await;
    assert!(whole.iter().all(|entry| entry["body"] == b64(body)), "{whole:?}");
    for entry in entries(&server, &id, "trimBody=-1").await {
        assert!(entry.get("body").is_none() && entry.get("responseBody").is_none(), "no bodies: {entry}");
    }

    // Shown as text, a body cut inside a character ends before it.
    let dlq = get_ok(&server, "/v2/dlq?trimBody=2").await;
    assert_eq!((&dlq["messages"][0]["body"], &dlq["messages"][0]["responseBody"]), (&"h".into(), &"r".into()));
    let dlq = get_ok(&server, "/v2/dlq?trimBody=3").await;
    assert_eq!((&dlq["messages"][0]["body"], &dlq["messages"][0]["responseBody"]), (&"hé".into(), &"ré".into()));
    let dlq = get_ok(&server, "/v2/dlq?trimBody=-1").await;
    let entry = dlq["messages"][0].as_object().expect("an entry");
    assert!(["body", "bodyBase64", "responseBody"].iter().all(|key| !entry.contains_key(*key)), "{dlq}");

    for path in ["/v2/logs?trimBody=-2", "/v2/logs?trimBody=all", "/v2/dlq?trimBody=-3", "/v2/dlq?trimBody=x"] {
        expect_error(server.get(path), StatusCode::BAD_REQUEST, "trimBody").await;
    }
}

#[tokio::test]
async fn a_trimmed_redacted_body_is_the_redaction_of_all_of_it() {
    let server = TestServer::start().await;
    let headers = [("Upstash-Delay", "1h"), ("Upstash-Redact-Fields", "body")];
    let id = server.publish_ok(&format!("{NOWHERE}/secret"), &headers, &"s".repeat(200)).await;
    let whole = entries(&server, &id, "order=earliestFirst").await[0]["body"].clone();
    let shown = String::from_utf8(STANDARD.decode(whole.as_str().unwrap()).unwrap()).unwrap();
    assert!(shown.starts_with("REDACTED:") && shown.len() < 100, "{shown}");
    // Trimmed to less than the body but more than its redaction: the hash still covers it all.
    assert_eq!(entries(&server, &id, "trimBody=100").await[0]["body"], whole);
    assert_eq!(entries(&server, &id, "trimBody=12").await[0]["body"], b64(&shown[..12]));
}

#[tokio::test]
async fn the_schedule_list_is_streamed_whole_with_the_last_states() {
    let server = TestServer::start().await;
    let receiver = Receiver::start().await;
    let mut created = Vec::new();
    for index in 0..5 {
        let body = big_body(&server, index);
        let id = format!("s{index}");
        create_ok(&server, &receiver.url("/yearly"), "0 0 1 1 *", &[("Upstash-Schedule-Id", &id)], &body).await;
        created.push((id, body));
    }
    // Created last, and last by id among schedules created at the same (manual) time.
    let ticking =
        create_ok(&server, &receiver.url("/tick"), "* * * * *", &[("Upstash-Schedule-Id", "tick")], "tick").await;
    let tick = next_minute(server.now_ms());
    advance_to(&server, tick);
    wait_for_last_tick(&server, &ticking, tick).await;
    let message_id = receiver.wait_for("/tick", 1).await[0].header("upstash-message-id").unwrap().to_string();
    created.push((ticking.clone(), "tick".into()));

    let response = server.get("/v2/schedules").send().await.expect("request reaches tern");
    assert_eq!(response.status(), 200);
    assert!(response.content_length().is_none(), "streamed a piece at a time, not built whole");
    let listed: Value = serde_json::from_slice(&response.bytes().await.expect("body")).expect("one JSON array");
    assert_no_nulls(&listed);
    let listed = listed.as_array().expect("an array");
    let shown: Vec<(String, String)> = listed
        .iter()
        .map(|schedule| (schedule["scheduleId"].as_str().unwrap().into(), schedule["body"].as_str().unwrap().into()))
        .collect();
    assert!(shown == created, "every schedule once, in creation order, with its whole body");
    let states = &listed.last().unwrap()["lastScheduleStates"];
    assert!(states[message_id.as_str()].is_string(), "the last tick's state: {states}");

    // No schedule at all: an empty array.
    let response = server.http.get(format!("{}/v2/schedules", server.url)).bearer_auth(OTHER_TOKEN).send().await;
    let bytes = response.expect("request reaches tern").bytes().await.expect("body");
    assert_eq!(&bytes[..], b"[]");
}
