//! Upstash Workflow at the protocol level, the test playing the SDK: a run's deliveries carry
//! its records up to their own, a sleep waits for the clock, completion and cancel end the run,
//! and every bad input or other user's request gets a QStash-shaped error.

use crate::harness::*;
use crate::support::{dead_letter, expect_error};
use axum::http::{Method, StatusCode};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};
use std::time::Duration;

/// The headers an SDK publishes a message of run `run_id` at `url` with.
fn run_headers(run_id: &str, url: &str, init: bool) -> Value {
    json!({
        "Upstash-Workflow-RunId": run_id,
        "Upstash-Workflow-Init": init.to_string(),
        "Upstash-Workflow-Url": url,
        "Upstash-Feature-Set": "InitialBody",
        "Upstash-Forward-Upstash-Workflow-Sdk-Version": "1",
        "Upstash-Retries": "0",
    })
}

async fn publish_in_run(server: &TestServer, run_id: &str, url: &str, init: bool, extra: &[(&str, &str)], body: &str) {
    let mut headers = run_headers(run_id, url, init);
    for (name, value) in extra {
        headers[*name] = json!(value);
    }
    let item = json!([{ "destination": url, "headers": headers, "body": body }]);
    let response = server.post("/v2/batch").json(&item).send().await.expect("batch");
    assert_eq!(response.status(), StatusCode::OK, "{}", response.text().await.unwrap_or_default());
}

/// The record bodies a delivery carried, decoded.
fn records(body: &[u8]) -> Vec<String> {
    let records: Vec<Value> = serde_json::from_slice(body).expect("a step array");
    records
        .iter()
        .map(|record| String::from_utf8(STANDARD.decode(record["body"].as_str().unwrap()).unwrap()).unwrap())
        .collect()
}

async fn run_state(server: &TestServer, token: &str, run_id: &str) -> Option<Value> {
    let path = format!("{}/v2/workflows/logs?workflowRunId={run_id}", server.url);
    let logs: Value = server.http.get(path).bearer_auth(token).send().await.unwrap().json().await.unwrap();
    logs["runs"].as_array().unwrap().first().cloned()
}

#[tokio::test]
async fn a_run_delivers_its_records_sleeps_on_the_clock_and_completes() {
    let server = TestServer::start().await;
    let receiver = Receiver::start_with_clock(&server.clock).await;
    let url = receiver.url("/wf");
    publish_in_run(&server, "wfr_a", &url, true, &[], "payload").await;
    let init = receiver.wait_for("/wf", 1).await.remove(0);
    assert_eq!(records(&init.body), ["payload"]);
    assert_eq!(init.header("upstash-workflow-runid"), Some("wfr_a"));
    assert!(init.header("upstash-workflow-createdat").is_some_and(|at| at.parse::<i64>().is_ok()));
    assert!(init.header("upstash-workflow-init").is_none(), "protocol headers are for the server");

    // A step that sleeps an hour: nothing until the clock gets there.
    publish_in_run(&server, "wfr_a", &url, false, &[("Upstash-Delay", "1h")], r#"{"stepId":1}"#).await;
    receiver.assert_count_stays(&server, "/wf", 1).await;
    server.advance(Duration::from_secs(3600));
    let slept = receiver.wait_for("/wf", 2).await.remove(1);
    assert_eq!(records(&slept.body), ["payload", r#"{"stepId":1}"#]);

    let done = server.delete("/v2/workflows/runs/wfr_a?cancel=false").body("\"result\"").send().await.unwrap();
    assert_eq!(done.status(), StatusCode::OK);
    let again = server.delete("/v2/workflows/runs/wfr_a?cancel=false").send().await.unwrap();
    assert_eq!(again.status(), StatusCode::OK, "completing again is not an error");
    let run = run_state(&server, TOKEN, "wfr_a").await.expect("the run is listed");
    assert_eq!(
        (run["workflowState"].clone(), run["workflowRunResponse"].clone()),
        (json!("RUN_SUCCESS"), json!("\"result\""))
    );
    expect_error(server.get("/v2/workflows/runs/wfr_a"), StatusCode::NOT_FOUND, "wfr_a").await;
    let item = json!([{ "destination": url, "headers": run_headers("wfr_a", &url, false), "body": "late" }]);
    expect_error(server.post("/v2/batch").json(&item), StatusCode::BAD_REQUEST, "already ended").await;
}

#[tokio::test]
async fn bad_input_gets_a_clear_error() {
    let server = TestServer::start().await;
    expect_error(server.delete("/v2/workflows/runs/wfr_none?cancel=true"), StatusCode::NOT_FOUND, "wfr_none").await;
    expect_error(server.delete("/v2/workflows/runs/wfr_x?cancel=maybe"), StatusCode::BAD_REQUEST, "cancel").await;
    expect_error(server.get("/v2/workflows/runs/wfr_none"), StatusCode::NOT_FOUND, "wfr_none").await;
    expect_error(server.delete("/v2/workflows/runs?workflowRunIdz=x"), StatusCode::BAD_REQUEST, "workflowRunIdz").await;
    expect_error(server.get("/v2/workflows/logs?state=DONE"), StatusCode::BAD_REQUEST, "state").await;
    expect_error(server.get("/v2/workflows/logs?cursor=garbage"), StatusCode::BAD_REQUEST, "cursor").await;
    expect_error(server.post("/v2/wait/evt").body("{"), StatusCode::BAD_REQUEST, "JSON").await;
    let no_url = json!({ "step": {}, "timeout": "1s" });
    expect_error(server.post("/v2/wait/evt").json(&no_url), StatusCode::BAD_REQUEST, "url").await;
    let bad_timeout = json!({ "url": "http://127.0.0.1:1/wf", "step": {"stepId": 1}, "timeout": "soon" });
    expect_error(server.post("/v2/wait/evt").json(&bad_timeout), StatusCode::BAD_REQUEST, "timeout").await;
    let wait = json!({ "url": "http://127.0.0.1:1/wf", "step": {"stepId": 1}, "timeout": "1s" });
    let unknown_run = server.post("/v2/wait/evt").header("Upstash-Workflow-RunId", "wfr_none").json(&wait);
    expect_error(unknown_run, StatusCode::BAD_REQUEST, "wfr_none").await;
    expect_error(server.post("/v2/notify/wfr_none/evt").body("x"), StatusCode::NOT_FOUND, "wfr_none").await;
    expect_error(server.post("/v2/trigger/not-a-url"), StatusCode::BAD_REQUEST, "url").await;
    let hook = server.http.post(format!("{}/v2/workflows/hooks/nobody/wfr_x/evt", server.url));
    expect_error(hook, StatusCode::NOT_FOUND, "webhook").await;
    let url = "http://127.0.0.1:1/wf";
    let mut headers = run_headers("wfr_invoked", url, true);
    headers["Upstash-Workflow-Invoke"] = json!("true");
    let item = json!([{ "destination": url, "headers": headers, "body": "not an envelope" }]);
    expect_error(server.post("/v2/batch").json(&item), StatusCode::BAD_REQUEST, "invoke").await;
}

#[tokio::test]
async fn another_user_sees_and_changes_nothing_of_a_run() {
    let server = TestServer::start().await;
    let receiver = Receiver::start().await;
    let url = receiver.url("/wf");
    publish_in_run(&server, "wfr_mine", &url, true, &[], "secret payload").await;
    receiver.wait_for("/wf", 1).await;
    let other = |method: Method, path: &str| {
        server.http.request(method, format!("{}{path}", server.url)).bearer_auth(OTHER_TOKEN)
    };
    assert!(run_state(&server, OTHER_TOKEN, "wfr_mine").await.is_none());
    expect_error(other(Method::GET, "/v2/workflows/runs/wfr_mine"), StatusCode::NOT_FOUND, "wfr_mine").await;
    expect_error(other(Method::DELETE, "/v2/workflows/runs/wfr_mine?cancel=true"), StatusCode::NOT_FOUND, "wfr_mine")
        .await;
    let cancelled: Value = other(Method::DELETE, "/v2/workflows/runs").send().await.unwrap().json().await.unwrap();
    assert_eq!(cancelled["cancelled"], 0, "cancelling all of one's own runs reaches no other user's");
    expect_error(other(Method::POST, "/v2/notify/wfr_mine/evt").body("x"), StatusCode::NOT_FOUND, "wfr_mine").await;
    let item = json!([{ "destination": url, "headers": run_headers("wfr_mine", &url, false), "body": "x" }]);
    expect_error(other(Method::POST, "/v2/batch").json(&item), StatusCode::BAD_REQUEST, "wfr_mine").await;
    let run = run_state(&server, TOKEN, "wfr_mine").await.expect("still there");
    assert_eq!(run["workflowState"], "RUN_STARTED");
}

#[tokio::test]
async fn a_webhook_call_wakes_only_a_wait_for_a_webhook_and_learns_nothing() {
    let server = TestServer::start().await;
    let receiver = Receiver::start().await;
    let url = receiver.url("/wf");
    publish_in_run(&server, "wfr_hooked", &url, true, &[], "payload").await;
    receiver.wait_for("/wf", 1).await;
    let wait = |step_type: &str| {
        let step = json!({ "stepId": 1, "stepName": "wait", "stepType": step_type, "concurrent": 1 });
        json!({ "url": url, "step": step, "timeout": "1h" })
    };
    let headers = run_headers("wfr_hooked", &url, false);
    let mut event_wait = server.post("/v2/wait/paid").json(&wait("Wait"));
    for (name, value) in headers.as_object().unwrap() {
        event_wait = event_wait.header(name.as_str(), value.as_str().unwrap());
    }
    assert_eq!(event_wait.send().await.unwrap().status(), StatusCode::OK);

    // Anyone holding a webhook URL of the run may call it, but not to stand in for an event.
    let hook = format!("{}/v2/workflows/hooks/defaultUser/wfr_hooked/paid", server.url);
    let answer: Value = server.http.get(&hook).send().await.unwrap().json().await.unwrap();
    assert_eq!(answer, json!({}), "the caller learns nothing of the waits");
    let waiting: Value = server.get("/v2/waiters/paid").send().await.unwrap().json().await.unwrap();
    assert_eq!(waiting.as_array().unwrap().len(), 1, "the wait for an event still waits");
    receiver.assert_count_stays(&server, "/wf", 1).await;

    // The run's own notify wakes it, not the stored webhook call.
    let woke: Value =
        server.post("/v2/notify/wfr_hooked/paid").body("real").send().await.unwrap().json().await.unwrap();
    assert_eq!(woke.as_array().unwrap().len(), 1, "{woke}");
    let result = receiver.wait_for("/wf", 2).await.remove(1);
    let records = records(&result.body);
    let step: Value = serde_json::from_str(records.last().unwrap()).unwrap();
    assert_eq!(step["out"], STANDARD.encode("real"));
}

#[tokio::test]
async fn a_failed_run_leaves_the_dlq_only_by_resume_or_restart() {
    let server = TestServer::start().await;
    let receiver = Receiver::start().await;
    receiver.script("/wf", vec![Reply::Status(500)]);
    receiver.script("/plain", vec![Reply::Status(500)]);
    let url = receiver.url("/wf");
    let init = [
        ("Upstash-Workflow-RunId", "wfr_dead"),
        ("Upstash-Workflow-Init", "true"),
        ("Upstash-Workflow-Url", url.as_str()),
    ];
    let (_, workflow_entry) = dead_letter(&server, &receiver, "/wf", &init, "payload").await;
    let (_, plain_entry) = dead_letter(&server, &receiver, "/plain", &[], "plain").await;

    let both = json!({ "dlqIds": [workflow_entry, plain_entry] });
    expect_error(server.post("/v2/dlq/retry").json(&both), StatusCode::BAD_REQUEST, "resume or restart").await;
    let retried: Value = server.post("/v2/dlq/retry").send().await.unwrap().json().await.unwrap();
    assert_eq!(retried["responses"].as_array().unwrap().len(), 1, "a filter skips the run's entry: {retried}");
    let left: Value = server.get("/v2/dlq").send().await.unwrap().json().await.unwrap();
    let left = crate::support::dlq_ids(&left);
    assert!(left.contains(&workflow_entry) && !left.contains(&plain_entry), "{left:?}");
    let restarted: Value =
        server.post(&format!("/v2/workflows/dlq/restart/{workflow_entry}")).send().await.unwrap().json().await.unwrap();
    assert!(restarted["workflowRunId"].as_str().is_some_and(|id| id != "wfr_dead"), "{restarted}");
}

/// A run whose call's callback failed for good, resumed: the new run gets that callback again
/// (its body and the headers naming the call) and the third party is not called again.
#[tokio::test]
async fn a_run_resumed_at_a_failed_callback_gets_the_callback_again() {
    let server = TestServer::start().await;
    let receiver = Receiver::start().await;
    // The Init's delivery, the call's callback (which fails), then what the resume sends.
    receiver.script("/wf", vec![Reply::Status(200), Reply::Status(500), Reply::Status(200)]);
    let url = receiver.url("/wf");
    publish_in_run(&server, "wfr_call", &url, true, &[], "payload").await;
    receiver.wait_for("/wf", 1).await;
    // The call, as the SDK publishes it: to the third party, its callback back to the workflow.
    let call = [
        ("Upstash-Workflow-RunId", "wfr_call"),
        ("Upstash-Workflow-CallType", "toCallback"),
        ("Upstash-Retries", "0"),
        ("Upstash-Callback", url.as_str()),
        ("Upstash-Callback-Retries", "0"),
        ("Upstash-Callback-Workflow-RunId", "wfr_call"),
        ("Upstash-Callback-Workflow-CallType", "fromCallback"),
        ("Upstash-Callback-Forward-Upstash-Workflow-Callback", "true"),
        ("Upstash-Callback-Forward-Upstash-Workflow-StepName", "the call"),
    ];
    server.publish_ok(&receiver.url("/third"), &call, "call body").await;
    let failed = receiver.wait_for("/wf", 2).await.remove(1);
    assert_eq!(failed.header("upstash-workflow-callback"), Some("true"));
    let entry = loop {
        let listed: Value = server.get("/v2/dlq?source=workflow").send().await.unwrap().json().await.unwrap();
        if let Some(entry) = listed["messages"].as_array().unwrap().first() {
            break entry.clone();
        }
        server.settle(&[&receiver]).await;
    };
    assert_eq!(entry["workflowRunId"], "wfr_call");
    let dlq_id = entry["dlqId"].as_str().unwrap();

    let resumed: Value =
        server.post(&format!("/v2/workflows/dlq/resume/{dlq_id}")).send().await.unwrap().json().await.unwrap();
    let new_run = resumed["workflowRunId"].as_str().unwrap().to_string();
    let again = receiver.wait_for("/wf", 3).await.remove(2);
    assert_eq!(again.body, failed.body, "the callback's body again");
    assert_eq!(again.header("upstash-workflow-callback"), Some("true"));
    assert_eq!(again.header("upstash-workflow-stepname"), Some("the call"));
    assert_eq!(again.header("upstash-workflow-runid"), Some(new_run.as_str()));
    assert!(again.header("upstash-workflow-sdk-version").is_none(), "a callback, not a step");
    receiver.assert_count_stays(&server, "/third", 1).await;
    // The new run goes on from there: the SDK's result of the call is appended to it.
    publish_in_run(&server, &new_run, &url, false, &[], r#"{"stepId":1,"stepType":"Call"}"#).await;
    let step = receiver.wait_for("/wf", 4).await.remove(3);
    let records = records(&step.body);
    assert_eq!(records.first().map(String::as_str), Some("payload"));
    assert_eq!(records.last().map(String::as_str), Some(r#"{"stepId":1,"stepType":"Call"}"#));
}
