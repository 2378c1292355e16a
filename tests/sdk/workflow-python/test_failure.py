"""Failures (spec workflow-protocol §4.10): failure_function with retries 0 and 1, and
failure_url. The Python SDK takes a request for a failure callback only when it carries
`Upstash-Workflow-Is-Failure: true` (and no protocol version header, which would make it
parse the failure JSON as a step list)."""

from __future__ import annotations

import json

from common import (
    WF_DEADLINE,
    assert_calls,
    assert_run_log,
    b64,
    find_run,
    next_group,
    start_run,
    uid,
    wait_result,
    wait_run,
)
from tern_harness import poll


def wait_failure_logged(tern, run_id):
    """The failure callback's outcome, once the logs have it."""

    def logged():
        failure = (find_run(tern, run_id) or {}).get("failureFunction") or {}
        return failure if failure.get("state") == "CALLBACK_SUCCESS" else None

    return poll(logged, timeout=WF_DEADLINE, interval=0.2, what=f"failureFunction CALLBACK_SUCCESS of {run_id}")


def test_failure_function(tern, app, client):
    tag = uid()
    run_id = start_run(client, app, "fail-fn", {"tag": tag}, headers={"x-user": "user-header"})
    r = wait_result(tern, app, "fail-fn", run_id)

    assert r["failStatus"] == 500
    assert r["failResponse"] == f"boom {tag}", "the SDK's error message, from the failure body"
    # the failing response's headers, canonical names with lists of values
    assert r["failHeaders"].get("Content-Type") == ["application/json"], r["failHeaders"]
    assert r["payload"] == {"tag": tag}, "sourceBody = the initial payload"
    assert r["userHeader"] == "user-header", "the run's user headers reach the failure callback"
    assert r["url"] == app.wf_url("fail-fn")

    run = wait_run(tern, app, "fail-fn", run_id, "RUN_FAILED")
    # the plain request, the Init's delivery (the step raises: 500, not retried), then the
    # failure callback
    assert_calls(app, "fail-fn", run_id, ["start", "step", "failure"], [200, 500, 200])
    assert app.counter(f"{run_id}:attempt") == 1
    assert_run_log(run, app.wf_url("fail-fn"), "RUN_FAILED", [])
    nxt = next_group(run)
    assert nxt, f'a "next" group with the failing step: {run["steps"]}'
    assert nxt["steps"][0]["state"] == "STEP_FAILED", nxt
    error = nxt["steps"][0]["errors"][0]
    assert error["status"] == 500, error
    assert json.loads(error["body"]) == {"error": "ValueError", "message": f"boom {tag}"}, error
    failure = wait_failure_logged(tern, run_id)
    assert failure["url"] == app.wf_url("fail-fn")
    assert failure["failStatus"] == 500


def test_failure_function_after_a_retry(tern, app, client):
    run_id = start_run(client, app, "fail-retry", {"tag": uid()})
    # the retry waits for tern's default backoff (~12 s): the SDK cannot set a retry delay
    r = wait_result(tern, app, "fail-retry", run_id)
    assert r["failStatus"] == 500
    assert r["failResponse"] == "retry me 2", "the failure carries the last attempt's error"

    wait_run(tern, app, "fail-retry", run_id, "RUN_FAILED")
    # retries=1: the Init's delivery and its retry both fail, then the failure callback
    assert_calls(app, "fail-retry", run_id, ["start", "step", "step", "failure"], [200, 500, 500, 200])
    assert app.counter(f"{run_id}:attempt") == 2, "the step ran twice"
    retried = [c.headers.get("upstash-retried") for c in app.calls("fail-retry", run_id)[1:3]]
    assert retried == ["0", "1"], retried
    wait_failure_logged(tern, run_id)


def test_failure_url(tern, app, client):
    body = {"order": uid()}
    run_id = start_run(client, app, "fail-url", body, headers={"x-user": "for-failure-url"})

    def delivered():
        return [q for q in app.fake("/fake/sink/fail-url") if q.headers.get("upstash-workflow-runid") == run_id]

    [req] = poll(delivered, timeout=WF_DEADLINE, interval=0.2, what=f"the failure callback of {run_id}")
    assert req.method == "POST"
    assert req.headers.get("x-user") == "for-failure-url", "user headers are forwarded to the failure URL"
    assert req.headers.get("upstash-workflow-is-failure") == "true"
    assert req.headers.get("upstash-workflow-failure-callback") == "true"
    failure = json.loads(req.text)
    assert failure["status"] == 500
    assert failure["workflowRunId"] == run_id
    assert failure["url"] == app.wf_url("fail-url")
    assert json.loads(b64(failure["sourceBody"])) == body, "sourceBody = base64 of the initial payload"
    assert json.loads(b64(failure["body"])) == {"error": "OrderError", "message": "failure for the failure url"}
    assert isinstance(failure["header"], dict)

    wait_run(tern, app, "fail-url", run_id, "RUN_FAILED")
    # the plain request and the failing Init delivery; the failure callback went elsewhere
    assert_calls(app, "fail-url", run_id, ["start", "step"], [200, 500])
