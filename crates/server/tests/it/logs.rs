//! Logs (spec §5.9, §6.6, §17): both paths and both keys, entry shapes, every filter, and
//! pagination.

use crate::harness::*;
use crate::support::*;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::time::Duration;

fn entry<'a>(json: &'a Value, state: &str) -> &'a Value {
    json["events"].as_array().unwrap().iter().find(|e| e["state"] == state).unwrap_or_else(|| panic!("no {state}"))
}

#[tokio::test]
async fn logs_and_events_answer_both_keys_with_full_entries() {
    let server = TestServer::start().await;
    let receiver = Receiver::start().await;
    let reply = Reply::Full { status: 500, headers: vec![("X-Reason".into(), "broken".into())], body: "oops".into() };
    receiver.script("/log", vec![reply]);
    let url = receiver.url("/log");
    let t0 = server.now_ms();
    let headers = [
        ("Upstash-Retries", "1"),
        ("Upstash-Retry-Delay", "60000"),
        ("Upstash-Timeout", "5s"),
        ("Upstash-Label", "l1,l2"),
        ("Content-Type", "text/plain"),
        ("Upstash-Forward-X-Trace", "t"),
    ];
    let id = server.publish_ok(&url, &headers, "hi").await;
    server.wait_for_state(&id, "RETRY").await;

    let logs = get_ok(&server, &format!("/v2/logs?messageId={id}")).await;
    let events = get_ok(&server, &format!("/v2/events?messageId={id}")).await;
    assert_eq!(logs, events);
    assert_eq!(logs["events"], logs["logs"]);
    assert!(logs.get("cursor").is_none(), "{logs}");
    assert_no_nulls(&logs);
    assert_eq!(
        entry_states(&logs).iter().map(|(_, s)| s.as_str()).collect::<Vec<_>>(),
        ["RETRY", "ERROR", "ACTIVE", "CREATED"]
    );

    let common = json!({
        "messageId": id,
        "url": url,
        "header": { "Content-Type": ["text/plain"], "X-Trace": ["t"] },
        "body": b64("hi"),
        "timeout": 5000,
        "method": "POST",
        "maxRetries": 1,
        "retryDelayExpr": "60000",
        "retryDelayExpression": "60000",
        "label": "l1",
        "labels": ["l1", "l2"],
        "callerIP": "127.0.0.1",
        "callerIp": "127.0.0.1",
        "time": t0,
    });
    let with = |extra: Value| {
        let mut object = common.clone();
        object.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        object
    };
    assert_eq!(entry(&logs, "CREATED"), &with(json!({ "state": "CREATED", "nextDeliveryTime": t0 })));
    assert_eq!(entry(&logs, "ACTIVE"), &with(json!({ "state": "ACTIVE" })));
    assert_eq!(entry(&logs, "RETRY"), &with(json!({ "state": "RETRY", "nextDeliveryTime": t0 + 60_000 })));
    let error = entry(&logs, "ERROR");
    assert_eq!(error["responseStatus"], json!(500));
    assert_eq!(error["responseBody"], json!(b64("oops")));
    assert_eq!(error["responseHeader"]["X-Reason"], json!(["broken"]));
    assert_eq!(error["responseHeader"], error["responseHeaders"]);
    assert!(error["error"].as_str().is_some_and(|e| !e.is_empty()), "{error}");
    let mut rest = error.clone();
    for key in ["responseStatus", "responseBody", "responseHeader", "responseHeaders", "error"] {
        rest.as_object_mut().unwrap().remove(key);
    }
    assert_eq!(rest, with(json!({ "state": "ERROR" })));
}

/// The set of `(message, state)` pairs a logs query answers.
async fn pairs(server: &TestServer, query: &str) -> BTreeSet<(String, String)> {
    let json = get_ok(server, &format!("/v2/logs?{query}")).await;
    assert_eq!(json["events"], json["logs"]);
    entry_states(&json).into_iter().collect()
}

fn expect(list: &[(&String, &[&str])]) -> BTreeSet<(String, String)> {
    list.iter().flat_map(|(id, states)| states.iter().map(|s| (id.to_string(), s.to_string()))).collect()
}

#[tokio::test]
async fn every_log_filter_selects_exactly_its_entries() {
    let server = TestServer::start().await;
    let receiver = Receiver::start().await;
    receiver.script("/fail", vec![Reply::Status(500)]);
    let t0 = server.now_ms();
    let delivered = server.publish_ok(&receiver.url("/p1"), &[("Upstash-Label", "a")], "1").await;
    server.wait_for_state(&delivered, "DELIVERED").await;
    let retry = [("Upstash-Label", "b"), ("Upstash-Retries", "1"), ("Upstash-Retry-Delay", "3600000")];
    let retrying = server.publish_ok(&receiver.url("/fail"), &retry, "2").await;
    server.wait_for_state(&retrying, "RETRY").await;
    let cancelled = publish_pending(&server, &format!("{NOWHERE}/p3"), &[("Upstash-Label", "c")]).await;
    send(server.delete(&format!("/v2/messages/{cancelled}"))).await;
    server.advance(Duration::from_secs(10));
    let t1 = server.now_ms();
    let later = publish_pending(&server, &format!("{NOWHERE}/p4"), &[("Upstash-Label", "a")]).await;

    let all_delivered: &[&str] = &["CREATED", "ACTIVE", "DELIVERED"];
    let all_retrying: &[&str] = &["CREATED", "ACTIVE", "ERROR", "RETRY"];
    let all_cancelled: &[&str] = &["CREATED", "CANCEL_REQUESTED", "CANCELED"];
    let created: &[&str] = &["CREATED"];
    assert_eq!(
        pairs(&server, "").await,
        expect(&[
            (&delivered, all_delivered),
            (&retrying, all_retrying),
            (&cancelled, all_cancelled),
            (&later, created)
        ])
    );
    let cases: Vec<(String, BTreeSet<(String, String)>)> = vec![
        (format!("messageId={delivered}"), expect(&[(&delivered, all_delivered)])),
        (
            format!("messageIds={delivered}&messageIds={cancelled}"),
            expect(&[(&delivered, all_delivered), (&cancelled, all_cancelled)]),
        ),
        (format!("messageIds={delivered},{later}"), expect(&[(&delivered, all_delivered), (&later, created)])),
        ("state=IN_PROGRESS".into(), expect(&[(&delivered, &["ACTIVE"]), (&retrying, &["ACTIVE", "ERROR", "RETRY"])])),
        ("state=CANCELLED".into(), expect(&[(&cancelled, &["CANCELED"])])),
        ("state=CANCELED".into(), expect(&[(&cancelled, &["CANCELED"])])),
        (
            "state=DELIVERED&state=CANCEL_REQUESTED".into(),
            expect(&[(&delivered, &["DELIVERED"]), (&cancelled, &["CANCEL_REQUESTED"])]),
        ),
        (format!("url={}", receiver.url("/p1")), expect(&[(&delivered, all_delivered)])),
        ("label=b".into(), expect(&[(&retrying, all_retrying)])),
        ("label=a".into(), expect(&[(&delivered, all_delivered), (&later, created)])),
        ("label=a&state=DELIVERED".into(), expect(&[(&delivered, &["DELIVERED"])])),
        ("label=zzz".into(), expect(&[])),
        ("host=127.0.0.1".into(), expect(&[(&delivered, all_delivered), (&retrying, all_retrying)])),
        ("host=tern-test.invalid&path=/p3".into(), expect(&[(&cancelled, all_cancelled)])),
        ("path=/p4".into(), expect(&[(&later, created)])),
        (format!("fromDate={t1}"), expect(&[(&later, created)])),
        (format!("fromDate={t1}&toDate={t1}"), expect(&[(&later, created)])),
        (
            format!("toDate={t0}"),
            expect(&[(&delivered, all_delivered), (&retrying, all_retrying), (&cancelled, all_cancelled)]),
        ),
        (format!("fromDate={}&toDate={}", t0 + 1, t1 - 1), expect(&[])),
        // Unknown keys (the Go SDK's retired `api`) are ignored on logs.
        (format!("api=x&messageId={later}"), expect(&[(&later, created)])),
    ];
    for (query, expected) in cases {
        assert_eq!(pairs(&server, &query).await, expected, "{query}");
    }
}

#[tokio::test]
async fn labels_are_stored_and_filterable() {
    let server = TestServer::start().await;
    let id = publish_pending(&server, &format!("{NOWHERE}/labels"), &[("Upstash-Label", "a,b")]).await;
    let message = get_ok(&server, &format!("/v2/messages/{id}")).await;
    assert_eq!((&message["label"], &message["labels"]), (&json!("a"), &json!(["a", "b"])));
    for query in ["label=b", "label=a", "label=x&label=b", "label=x,a"] {
        assert_eq!(entry_ids(&get_ok(&server, &format!("/v2/logs?{query}")).await), [id.as_str()], "{query}");
    }
    assert_eq!(entry_ids(&get_ok(&server, "/v2/logs?label=c").await), Vec::<String>::new());
    // A label is matched whole, not as a substring.
    let other = publish_pending(&server, &format!("{NOWHERE}/labels"), &[("Upstash-Label", "ab")]).await;
    assert_eq!(entry_ids(&get_ok(&server, "/v2/logs?label=ab").await), [other]);
}

/// Follows `cursor` from `query` to the end; returns every entry's `(id, state)` and the
/// number of pages.
async fn walk(server: &TestServer, query: &str) -> (Vec<(String, String)>, usize) {
    let mut entries = Vec::new();
    let mut pages = 0;
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(cursor) => format!("/v2/logs?{query}&cursor={cursor}"),
            None => format!("/v2/logs?{query}"),
        };
        let json = get_ok(server, &path).await;
        pages += 1;
        entries.extend(entry_states(&json));
        match json.get("cursor") {
            Some(next) => cursor = Some(next.as_str().expect("cursor is a string").to_string()),
            None => return (entries, pages),
        }
        assert!(pages < 50, "pagination does not end");
    }
}

#[tokio::test]
async fn logs_paginate_with_a_cursor_in_both_orders() {
    let server = TestServer::start_with(|config| config.limits.logs_page_size = 4).await;
    let receiver = Receiver::start().await;
    let mut ids = Vec::new();
    let mut times = Vec::new();
    for i in 0..3 {
        times.push(server.now_ms());
        let id = server.publish_ok(&receiver.url(&format!("/page{i}")), &[], "x").await;
        server.wait_for_state(&id, "DELIVERED").await;
        ids.push(id);
        server.advance(Duration::from_secs(1));
    }
    let chronological: Vec<(String, String)> =
        ids.iter().flat_map(|id| ["CREATED", "ACTIVE", "DELIVERED"].map(|s| (id.clone(), s.to_string()))).collect();

    // The default page size is the configured one, and larger counts are clamped to it.
    for query in ["", "?count=100"] {
        let json = get_ok(&server, &format!("/v2/logs{query}")).await;
        assert_eq!(json["events"].as_array().unwrap().len(), 4, "{query}");
        assert!(json["cursor"].is_string(), "{query}: {json}");
    }
    let (earliest, pages) = walk(&server, "count=2&order=earliestFirst").await;
    assert_eq!((earliest, pages), (chronological.clone(), 5));
    let (latest, pages) = walk(&server, "count=2").await;
    let mut reversed = chronological.clone();
    reversed.reverse();
    assert_eq!((latest, pages), (reversed.clone(), 5));
    let (latest, pages) = walk(&server, "").await;
    assert_eq!((latest, pages), (reversed, 3));
    // Exactly one full page: no cursor.
    let json = get_ok(&server, &format!("/v2/logs?messageIds={},{}&count=4", ids[0], ids[1])).await;
    assert_eq!(json["events"].as_array().unwrap().len(), 4);
    assert!(json.get("cursor").is_some());
    let json = get_ok(&server, &format!("/v2/logs?messageId={}&count=3", ids[0])).await;
    assert!(json.get("cursor").is_none(), "{json}");
    // A bare timestamp cursor (the TS SDK starts with Date.now()) means "at or before".
    let (entries, _) = walk(&server, &format!("cursor={}", times[1])).await;
    let expected: Vec<(String, String)> = chronological[..6].iter().rev().cloned().collect();
    assert_eq!(entries, expected);
}
