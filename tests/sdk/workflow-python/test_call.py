"""context.call to fake third parties on the same app (spec workflow-protocol §4.5): a 2xx and
a non-2xx answer are both results; a call retried gets a callback per attempt, and the SDK
answers the callback of an attempt that will be retried with "call-will-retry"."""

from __future__ import annotations

from common import assert_calls, assert_run_log, start_run, step_named, uid, wait_result, wait_run


def test_call(tern, app, client):
    run_id = start_run(client, app, "call", {"key": uid()})
    r = wait_result(tern, app, "call", run_id)

    assert "key" in r["payload"]
    # text bodies come back as strings, JSON ones parsed; response header names canonical,
    # each with a list of values
    assert r["get200"] == {"status": 200, "body": "ok GET get-header", "fakeStatus": ["200"]}
    assert r["post400"] == {
        "status": 400,
        "body": {"error": "bad request", "got": '{"hello": "world"}'},
        "fakeStatus": ["400"],
    }
    assert r["flaky"] == {"status": 200, "body": "recovered after 1", "fakeStatus": None}

    # the third parties: methods, bodies (the SDK sends json.dumps(body)), call headers, and
    # the call's own retries
    get = app.fake("/fake/status/200")
    assert [(q.method, q.headers.get("x-req")) for q in get] == [("GET", "get-header")]
    post = app.fake("/fake/status/400")
    assert [(q.method, q.text, q.headers.get("x-req")) for q in post] == [
        ("POST", '{"hello": "world"}', "post-header")
    ]
    assert post[0].headers.get("content-type") == "application/json"
    assert len(app.fake(f"/fake/flaky/{run_id}")) == 2, "retries=1: fails once, succeeds on the retry"
    # a third party never gets the workflow protocol headers
    for q in get + post:
        assert "upstash-workflow-sdk-version" not in q.headers, f"{q.path} got the SDK version header"
        assert "upstash-workflow-runid" not in q.headers, f"{q.path} got the run id header"

    run = wait_run(tern, app, "call", run_id, "RUN_SUCCESS")
    # the plain request; the Init's delivery (publishes call 1); per call the callback (the
    # SDK publishes the result step) and the result's delivery (runs the next call). The flaky
    # call's failed first attempt gets its own callback, answered "call-will-retry".
    assert_calls(
        app,
        "call",
        run_id,
        ["start", "step", "callback", "step", "callback", "step", "callback", "callback", "step"],
        [200] * 9,
    )
    assert_run_log(run, app.wf_url("call"), "RUN_SUCCESS", ["get 200", "post 400", "flaky"])
    post_step = step_named(run, "post 400")
    assert post_step["stepType"] == "Call"
    assert post_step.get("callUrl") == app.fake_url("status/400")
    assert post_step.get("callMethod") == "POST"
    assert post_step.get("callResponseStatus") == 400
    assert step_named(run, "get 200").get("callResponseStatus") == 200
    assert step_named(run, "flaky").get("callResponseStatus") == 200
