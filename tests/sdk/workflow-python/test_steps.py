"""context.run steps and sleep / sleep_until (spec workflow-protocol §4.2, §4.3), with runs
started the Python SDK's way: a plain publish to the route."""

from __future__ import annotations

import json

import httpx

from common import (
    assert_calls,
    assert_run_log,
    parse_out,
    start_run,
    step_named,
    uid,
    wait_result,
    wait_run,
)


def test_run_steps(tern, app, client):
    payload = {"hello": "world", "key": uid()}
    run_id = start_run(client, app, "steps", payload, headers={"x-test-header": "header-value"})

    result = wait_result(tern, app, "steps", run_id)
    one = f"one({json.dumps(payload, sort_keys=True)})"
    assert result == {
        "a": one,
        "b": {"prev": one, "n": 2},
        "c": [2, 3, None, True, 1.5],
        "payload": payload,
        # the publish's headers are the run's user headers: the SDK forwards them on the Init
        # and on every step, so they reach the last delivery too
        "header": "header-value",
    }

    run = wait_run(tern, app, "steps", run_id, "RUN_SUCCESS")
    # the plain request (publishes the Init), the Init's delivery (runs step one), one
    # delivery per step result (the third one returns and the SDK DELETEs the run)
    assert_calls(app, "steps", run_id, ["start", "step", "step", "step", "step"], [200] * 5)
    steps = assert_run_log(run, app.wf_url("steps"), "RUN_SUCCESS", ["step one", "step two", "step three"])
    assert parse_out(steps[0]["out"]) == payload, "init out = the initial payload"
    assert [s.get("stepId") for s in steps[1:]] == [1, 2, 3]
    two = step_named(run, "step two")
    assert (two["stepType"], two["callType"], two["concurrent"]) == ("Run", "step", 1)
    assert parse_out(two["out"]) == {"prev": one, "n": 2}
    assert parse_out(step_named(run, "step three")["out"]) == [2, 3, None, True, 1.5]
    # the Python SDK's completion is a DELETE without a body: no run response
    assert run.get("workflowRunResponse") in (None, ""), run
    assert not any(g.get("type") == "next" for g in run["steps"]), "nothing pending after success"


def test_sleep_and_sleep_until(tern, app, client):
    run_id = start_run(client, app, "sleep", {"key": uid()})
    r = wait_result(tern, app, "sleep", run_id)
    # Each t* is taken when its step runs, i.e. on the delivery after the sleep; the sleep's
    # message was published after the previous t*, so the gap is at least the sleep. 250 ms of
    # slack for timer granularity, as in the other suites; sleep_until is whole seconds.
    assert r["t1"] - r["t0"] >= 2 - 0.25, f"sleep(2): gap {r['t1'] - r['t0']:.3f} s"
    assert r["t2"] >= r["until"] - 0.25, f"sleep_until({r['until']}): ran at {r['t2']:.3f}"
    assert r["t3"] - r["t2"] >= 1 - 0.25, f"sleep('1s'): gap {r['t3'] - r['t2']:.3f} s"

    run = wait_run(tern, app, "sleep", run_id, "RUN_SUCCESS")
    assert_calls(app, "sleep", run_id, ["start"] + ["step"] * 8, [200] * 9)
    assert_run_log(
        run,
        app.wf_url("sleep"),
        "RUN_SUCCESS",
        ["t0", "sleep 2", "t1", "sleep until", "t2", "sleep 1s", "t3"],
    )
    s2 = step_named(run, "sleep 2")
    assert (s2["stepType"], s2.get("sleepFor")) == ("SleepFor", 2), s2
    su = step_named(run, "sleep until")
    assert (su["stepType"], su.get("sleepUntil")) == ("SleepUntil", r["until"]), su
    assert step_named(run, "sleep 1s")["stepType"] == "SleepFor"


def test_unsigned_requests_are_refused(app):
    """The routes verify signatures with the dev keys, so every request the scenarios count
    was signed by tern: one without a valid Upstash-Signature never reaches a step."""
    for headers in ({}, {"Upstash-Signature": "not.a.jwt"}):
        res = httpx.post(app.wf_url("probe"), json={"x": 1}, headers=headers, trust_env=False)
        assert res.status_code == 500, res.text
        assert "Failed to verify that the Workflow request comes from QStash" in res.json()["message"]
    assert app.counter("probe:ran") == 0
    assert [c.status for c in app.calls("probe")] == [500, 500]
