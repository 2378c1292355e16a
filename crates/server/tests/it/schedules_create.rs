//! Creating schedules (spec §3.3, §4.2, §5.6, §14): to a URL (its query kept), to a URL group
//! (one message per endpoint each tick), to a queue (each tick enqueues, FIFO applies); custom
//! ids and overwrite; validation; `Upstash-Cron` on publish; the schedule limit; the Go SDK's
//! capitalised path.

use crate::harness::*;
use crate::queues::wait_for_lag;
use crate::schedule_support::*;
use crate::support::*;
use crate::timeline::message_json;
use axum::http::StatusCode;
use serde_json::{Value, json};
use std::collections::BTreeSet;

#[tokio::test]
async fn a_url_schedule_is_live_at_once_and_keeps_its_query() {
    let server = TestServer::start().await;
    let receiver = Receiver::start_with_clock(&server.clock).await;
    // `upstash-*` query keys configure the schedule (webhook mode) and leave the destination.
    let raw = format!("{}&upstash-retries=1", receiver.url("/hook?a=1&b=two%20words"));
    let id = create_ok(&server, &raw, "* * * * *", &[], "tick").await;
    assert!(id.starts_with("scd_"), "{id}");
    let shown = schedule(&server, &id).await;
    assert_eq!(shown["destination"], receiver.url("/hook?a=1&b=two%20words"));
    assert_eq!(shown["retries"], 1);
    assert_eq!(shown["createdAt"], server.now_ms());

    let first = next_minute(server.now_ms());
    let ticks = [first, first + MINUTE_MS, first + 2 * MINUTE_MS];
    let requests = expect_ticks(&server, &receiver, "/hook", &id, &ticks).await;
    for request in &requests {
        assert_eq!(request.target, "/hook?a=1&b=two%20words");
        assert_eq!(request.method, axum::http::Method::POST);
        assert_eq!(request.body.as_ref(), b"tick");
        assert_eq!(request.header("upstash-schedule-id"), Some(id.as_str()));
    }
    let ids: BTreeSet<String> = message_ids(&requests).into_iter().collect();
    assert_eq!(ids.len(), 3, "each tick is a message of its own");
    for (request, tick) in requests.iter().zip(ticks) {
        let message = message_json(&server, request.header("upstash-message-id").unwrap()).await;
        assert_eq!(message["createdAt"], tick, "{message}");
        assert_eq!(message["url"], receiver.url("/hook?a=1&b=two%20words"));
        assert_eq!(message["maxRetries"], 1);
    }
}

#[tokio::test]
async fn a_url_group_schedule_sends_one_message_per_endpoint_each_tick() {
    let server = TestServer::start().await;
    let receiver = Receiver::start_with_clock(&server.clock).await;
    let endpoints =
        json!({"endpoints": [{"url": receiver.url("/alpha"), "name": "alpha"}, {"url": receiver.url("/beta")}]});
    let (status, json) = send(server.post("/v2/topics/fleet/endpoints").json(&endpoints)).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    let id = create_ok(&server, "fleet", "*/5 * * * *", &[], "to all").await;
    assert_eq!(schedule(&server, &id).await["destination"], "fleet");

    let first = (server.now_ms().div_euclid(5 * MINUTE_MS) + 1) * 5 * MINUTE_MS;
    for (index, tick) in [first, first + 5 * MINUTE_MS].into_iter().enumerate() {
        assert_eq!(next_schedule_time(&server, &id).await, Some(tick));
        let alpha = expect_tick(&server, &receiver, "/alpha", index, tick).await;
        let beta = receiver.wait_for("/beta", index + 1).await;
        assert_eq!(beta.len(), index + 1, "one message per endpoint and tick: {beta:?}");
        let beta = &beta[index];
        assert_eq!(beta.at_ms, Some(tick));
        for (request, endpoint) in [(&alpha, Some("alpha")), (beta, None)] {
            assert_eq!(request.body.as_ref(), b"to all");
            assert_eq!(request.header("upstash-topic-name"), Some("fleet"));
            assert_eq!(request.header("upstash-schedule-id"), Some(id.as_str()));
            let message = message_json(&server, request.header("upstash-message-id").unwrap()).await;
            assert_eq!(message["topicName"], "fleet");
            assert_eq!(message["scheduleId"], id.as_str());
            assert_eq!(message.get("endpointName").and_then(Value::as_str), endpoint, "{message}");
        }
        assert_ne!(alpha.header("upstash-message-id"), beta.header("upstash-message-id"));
    }
    receiver.assert_count_stays(&server, "/alpha", 2).await;
    receiver.assert_count_stays(&server, "/beta", 2).await;
}

#[tokio::test]
async fn a_queue_schedule_enqueues_each_tick_and_the_queue_keeps_order() {
    let server = TestServer::start().await;
    let receiver = Receiver::start_with_clock(&server.clock).await;
    receiver.script("/queued", vec![Reply::Hold(200)]);
    let id = create_ok(&server, &receiver.url("/queued"), "* * * * *", &[("Upstash-Queue-Name", "nightly")], "").await;
    assert_eq!(schedule(&server, &id).await["queueName"], "nightly");

    // The first tick's message is delivered (and held); the next ticks wait behind it.
    let first = next_minute(server.now_ms());
    expect_tick(&server, &receiver, "/queued", 0, first).await;
    for (tick, lag) in [(first + MINUTE_MS, 2), (first + 2 * MINUTE_MS, 3)] {
        advance_to(&server, tick);
        wait_for_lag(&server, "nightly", lag).await;
        assert_eq!(schedule(&server, &id).await["lastScheduleTime"], tick);
    }
    receiver.assert_count_stays(&server, "/queued", 1).await;
    receiver.release("/queued", 1);
    receiver.wait_for("/queued", 2).await;
    receiver.assert_count_stays(&server, "/queued", 2).await;
    receiver.release("/queued", 2);
    let requests = receiver.wait_for("/queued", 3).await;
    wait_for_lag(&server, "nightly", 0).await;

    let mut created = Vec::new();
    for id_ in message_ids(&requests) {
        let message = message_json(&server, &id_).await;
        assert_eq!(message["queueName"], "nightly");
        assert_eq!(message["scheduleId"], id.as_str());
        created.push(message["createdAt"].as_i64().unwrap());
    }
    assert_eq!(created, [first, first + MINUTE_MS, first + 2 * MINUTE_MS], "delivered in tick order");
}

#[tokio::test]
async fn an_overwrite_replaces_every_field_but_creation_time_and_pause() {
    let server = TestServer::start().await;
    let receiver = Receiver::start_with_clock(&server.clock).await;
    let first_headers = [
        ("Upstash-Schedule-Id", "nightly.report_v1-A"),
        ("Content-Type", "text/plain"),
        ("Upstash-Forward-X-Old", "old"),
        ("Upstash-Method", "PUT"),
        ("Upstash-Retries", "5"),
        ("Upstash-Delay", "10s"),
        ("Upstash-Label", "old-label"),
        ("Upstash-Callback", "http://127.0.0.1:9/cb"),
    ];
    let id = create_ok(&server, &receiver.url("/first"), "0 * * * *", &first_headers, "old body").await;
    assert_eq!(id, "nightly.report_v1-A");
    let created_at = server.now_ms();
    assert_eq!(schedule(&server, &id).await["body"], "old body");
    schedule_action_ok(&server, "PATCH", &id, "pause").await;
    server.advance(std::time::Duration::from_secs(30));

    let overwrite = [("Upstash-Schedule-Id", id.as_str()), ("Upstash-Forward-X-New", "new")];
    assert_eq!(create_ok(&server, &receiver.url("/second"), "*/2 * * * *", &overwrite, "").await, id);
    let expected = json!({
        "scheduleId": id,
        "cron": "*/2 * * * *",
        "destination": receiver.url("/second"),
        "createdAt": created_at,
        "method": "POST",
        "retries": 3,
        "header": {"X-New": ["new"]},
        "callerIP": "127.0.0.1",
        "callerIp": "127.0.0.1",
        "isPaused": true,
    });
    assert_eq!(schedule(&server, &id).await, expected, "no body, delay, label or callback remain");
    assert_eq!(get_ok(&server, "/v2/schedules").await, json!([expected]), "still one schedule");

    // Resumed, it fires with the new settings only.
    schedule_action_ok(&server, "POST", &id, "resume").await;
    let mut tick = next_minute(server.now_ms());
    if (tick / MINUTE_MS) % 2 == 1 {
        tick += MINUTE_MS;
    }
    let request = expect_ticks(&server, &receiver, "/second", &id, &[tick]).await.remove(0);
    assert_eq!(request.method, axum::http::Method::POST);
    assert!(request.body.is_empty(), "no body after an overwrite without one");
    assert_eq!(request.header("x-new"), Some("new"));
    assert!(request.header("x-old").is_none() && request.header("content-type").is_none(), "{request:?}");
    let message = message_json(&server, request.header("upstash-message-id").unwrap()).await;
    assert_eq!(message["maxRetries"], 3);
    assert_eq!(message["notBefore"], tick, "no delay any more");
    assert!(message.get("callback").is_none() && message.get("labels").is_none(), "{message}");
    receiver.assert_count_stays(&server, "/first", 0).await;
}

#[tokio::test]
async fn invalid_schedules_are_rejected_with_a_helpful_message() {
    let server = TestServer::start().await;
    let url = "http://127.0.0.1:9/job";
    let create = |destination: &str, cron: Option<&str>, headers: &[(&str, &str)]| {
        let mut request = server.post(&format!("/v2/schedules/{destination}"));
        if let Some(cron) = cron {
            request = request.header("Upstash-Cron", cron);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request
    };
    let bad_request = StatusCode::BAD_REQUEST;
    for (cron, fragment) in [
        ("61 * * * *", "invalid cron expression \"61 * * * *\""),
        ("* 24 * * *", "invalid cron"),
        ("* * * * * *", "expected 5 fields"),
        ("* * * *", "expected 5 fields"),
        ("0 0 * foo *", "invalid cron"),
        ("@sometimes", "unknown descriptor"),
        ("CRON_TZ=Mars/Olympus 0 4 * * *", "unknown time zone \"Mars/Olympus\""),
        ("TZ=Europe/Nowhere 0 4 * * *", "unknown time zone"),
        ("0 12 31 2 *", "matches no date"),
        ("", "expected 5 fields"),
    ] {
        expect_error(create(url, Some(cron), &[]), bad_request, fragment).await;
    }
    expect_error(create(url, None, &[]), bad_request, "Upstash-Cron header is required").await;
    expect_error(create("fleet", None, &[]), bad_request, "Upstash-Cron header is required").await;
    for bad_id in ["bad id", "bad/id", "a:b", "a+b"] {
        let headers = [("Upstash-Schedule-Id", bad_id)];
        expect_error(create(url, Some("* * * * *"), &headers), bad_request, "use only letters, digits").await;
    }
    let queue = [("Upstash-Queue-Name", "no queue")];
    expect_error(create(url, Some("* * * * *"), &queue), bad_request, "invalid queue name").await;
    let not_before = [("Upstash-Not-Before", "1")];
    expect_error(create(url, Some("* * * * *"), &not_before), bad_request, "Upstash-Delay").await;
    expect_error(create(url, Some("* * * * *"), &[("Upstash-Method", "BREW")]), bad_request, "method").await;
    expect_error(create(url, Some("* * * * *"), &[("Upstash-Delay", "soon")]), bad_request, "delay").await;
    expect_error(create("api/llm", Some("* * * * *"), &[]), bad_request, "api destinations").await;
    expect_error(create("", Some("* * * * *"), &[]), bad_request, "a non-empty destination must be provided").await;
    let no_slash = server.post("/v2/schedules").header("Upstash-Cron", "* * * * *");
    expect_error(no_slash, bad_request, "a non-empty destination must be provided").await;
    expect_error(create("fleet", Some("* * * * *"), &[]), StatusCode::NOT_FOUND, "topic fleet not found").await;
    assert_eq!(get_ok(&server, "/v2/schedules").await, json!([]), "nothing was created");
}

#[tokio::test]
async fn upstash_cron_on_publish_creates_a_schedule() {
    let server = TestServer::start().await;
    let receiver = Receiver::start_with_clock(&server.clock).await;
    let headers = [("Upstash-Cron", "* * * * *"), ("Upstash-Schedule-Id", "from-publish")];
    let (status, json) = server.publish(&receiver.url("/published"), &headers, "via publish").await;
    assert_eq!((status, json), (StatusCode::OK, json!({"scheduleId": "from-publish"})));
    let (status, json) = server.publish(&receiver.url("/published"), &[("Upstash-Cron", "0 0 * * *")], "").await;
    assert_eq!(status, StatusCode::OK, "{json}");
    assert!(json["scheduleId"].as_str().is_some_and(|id| id.starts_with("scd_")), "{json}");
    assert_eq!(json.as_object().unwrap().len(), 1, "{json}");
    let logs = get_ok(&server, "/v2/logs").await;
    assert_eq!(logs["events"], json!([]), "the publish created no message");

    let shown = schedule(&server, "from-publish").await;
    assert_eq!((&shown["cron"], &shown["destination"]), (&json!("* * * * *"), &json!(receiver.url("/published"))));
    let tick = next_minute(server.now_ms());
    let request = expect_ticks(&server, &receiver, "/published", "from-publish", &[tick]).await.remove(0);
    assert_eq!(request.body.as_ref(), b"via publish");
    assert_eq!(request.header("upstash-schedule-id"), Some("from-publish"));
}

#[tokio::test]
async fn a_duplicate_creation_answers_202_with_the_first_schedule() {
    let server = TestServer::start().await;
    let receiver = Receiver::start_with_clock(&server.clock).await;
    let url = receiver.url("/deduplicated");
    let by_id = [("Upstash-Deduplication-Id", "nightly")];
    let first = create_ok(&server, &url, "* * * * *", &by_id, "one").await;
    // Another body, even through publish with Upstash-Cron: still the first schedule.
    let (status, json) = create_schedule(&server, &url, "0 0 * * *", &by_id, "two").await;
    assert_eq!((status, json), (StatusCode::ACCEPTED, json!({"scheduleId": first, "deduplicated": true})));
    let headers = [("Upstash-Cron", "0 0 * * *"), ("Upstash-Deduplication-Id", "nightly")];
    let (status, json) = server.publish(&url, &headers, "three").await;
    assert_eq!((status, &json["scheduleId"]), (StatusCode::ACCEPTED, &json!(first)), "{json}");
    assert_eq!(get_ok(&server, "/v2/schedules").await.as_array().unwrap().len(), 1, "nothing else was created");
    assert_eq!(schedule(&server, &first).await["body"], "one");

    // Content-based: the same schedule again is a duplicate (whatever a client or proxy adds to
    // every request), another cron or configuration is not. (Another path: these must not tick
    // into the walk below.)
    let hourly_url = receiver.url("/hourly");
    let by_content = |agent| [("Upstash-Content-Based-Deduplication", "true"), ("User-Agent", agent)];
    let hourly = create_ok(&server, &hourly_url, "0 * * * *", &by_content("a"), "same").await;
    let (status, json) = create_schedule(&server, &hourly_url, "0 * * * *", &by_content("b"), "same").await;
    assert_eq!((status, &json["scheduleId"]), (StatusCode::ACCEPTED, &json!(hourly)), "{json}");
    let other = create_ok(&server, &hourly_url, "30 * * * *", &by_content("a"), "same").await;
    assert_ne!(other, hourly);
    let configured = [("Upstash-Content-Based-Deduplication", "true"), ("Upstash-Retries", "1")];
    assert_ne!(create_ok(&server, &hourly_url, "0 * * * *", &configured, "same").await, hourly);
    // With Upstash-Header-Forward a plain header reaches the destination: it is configuration.
    let forwarding = |tenant| {
        [("Upstash-Content-Based-Deduplication", "true"), ("Upstash-Header-Forward", "true"), ("X-Tenant", tenant)]
    };
    let tenant_a = create_ok(&server, &hourly_url, "0 * * * *", &forwarding("a"), "same").await;
    assert_ne!(create_ok(&server, &hourly_url, "0 * * * *", &forwarding("b"), "same").await, tenant_a);
    let (status, json) = create_schedule(&server, &hourly_url, "0 * * * *", &forwarding("a"), "same").await;
    assert_eq!((status, &json["scheduleId"]), (StatusCode::ACCEPTED, &json!(tenant_a)), "{json}");

    // The headers deduplicate the creation, not the ticks: each tick delivers its own message.
    let tick = next_minute(server.now_ms());
    let requests = expect_ticks(&server, &receiver, "/deduplicated", &first, &[tick, tick + MINUTE_MS]).await;
    assert_eq!(message_ids(&requests).iter().collect::<BTreeSet<_>>().len(), 2);
    assert!(requests.iter().all(|request| request.body.as_ref() == b"one"));
    // Past the window (10 minutes) the id is free again.
    server.advance(std::time::Duration::from_secs(600));
    let later = create_ok(&server, &url, "* * * * *", &by_id, "four").await;
    assert_ne!(later, first);
}

#[tokio::test]
async fn the_schedule_limit_answers_412_but_updates_at_the_limit_work() {
    let server = TestServer::start_with(|config| config.limits.max_schedules = 2).await;
    let url = "http://127.0.0.1:9/limited";
    for id in ["one", "two"] {
        create_ok(&server, url, "0 * * * *", &[("Upstash-Schedule-Id", id)], "").await;
    }
    let third = || server.post(&format!("/v2/schedules/{url}")).header("Upstash-Cron", "0 * * * *");
    expect_error(third(), StatusCode::PRECONDITION_FAILED, "at most 2 schedules").await;
    expect_error(third().header("Upstash-Schedule-Id", "three"), StatusCode::PRECONDITION_FAILED, "schedule").await;
    // Overwriting an existing schedule at the limit is fine.
    create_ok(&server, url, "30 * * * *", &[("Upstash-Schedule-Id", "two")], "").await;
    assert_eq!(schedule(&server, "two").await["cron"], "30 * * * *");
    // The limit is per user.
    let other = server.http.post(format!("{}/v2/schedules/{url}", server.url)).bearer_auth(OTHER_TOKEN);
    let (status, json) = send(other.header("Upstash-Cron", "0 * * * *")).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    // A deleted schedule frees its place.
    let (status, _) = send(server.delete("/v2/schedules/one")).await;
    assert_eq!(status, StatusCode::OK);
    create_ok(&server, url, "0 * * * *", &[("Upstash-Schedule-Id", "three")], "").await;
    let listed = get_ok(&server, "/v2/schedules").await;
    let ids: BTreeSet<&str> = listed.as_array().unwrap().iter().map(|s| s["scheduleId"].as_str().unwrap()).collect();
    assert_eq!(ids, BTreeSet::from(["three", "two"]));
}

#[tokio::test]
async fn capitalised_paths_and_destinations_ending_in_pause_are_understood() {
    let server = TestServer::start().await;
    let url = "http://127.0.0.1:9/go";
    // The Go SDK creates and gets with `/v2/Schedules/`.
    let request = server.post(&format!("/v2/Schedules/{url}")).header("Upstash-Cron", "0 * * * *");
    let (status, json) = send(request.header("Upstash-Schedule-Id", "go-style")).await;
    assert_eq!((status, json), (StatusCode::OK, json!({"scheduleId": "go-style"})));
    let shown = get_ok(&server, "/v2/Schedules/go-style").await;
    assert_eq!(shown, schedule(&server, "go-style").await);
    assert_eq!(shown["destination"], url);
    let (status, _) = send(server.request(axum::http::Method::PATCH, "/v2/Schedules/go-style/pause")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(schedule(&server, "go-style").await["isPaused"], true);

    // A URL whose path ends in `/pause` is a destination when the request carries a cron.
    let pause_url = "http://127.0.0.1:9/jobs/pause";
    let id = create_ok(&server, pause_url, "0 * * * *", &[], "").await;
    assert_eq!(schedule(&server, &id).await["destination"], pause_url);
    // So is a group called like an action, and `<id>/pause` without a cron pauses.
    let (status, json) =
        send(server.post("/v2/topics/resume/endpoints").json(&json!({"endpoints": [{"url": "http://127.0.0.1:9/r"}]})))
            .await;
    assert_eq!(status, StatusCode::OK, "{json}");
    let group_schedule = create_ok(&server, "resume", "0 * * * *", &[], "").await;
    assert_eq!(schedule(&server, &group_schedule).await["destination"], "resume");
    schedule_action_ok(&server, "POST", &group_schedule, "pause").await;
    assert_eq!(schedule(&server, &group_schedule).await["isPaused"], true);
}
