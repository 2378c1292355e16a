"""Starting runs and waiting for them: the shared steps of every scenario.

Waiting is always polling for a condition with a deadline (``TERN_WF_DEADLINE`` seconds,
default 45: runs take several deliveries, some sleep for seconds, and a retried step waits
for tern's default backoff of ~12 s), never a fixed sleep.
"""

from __future__ import annotations

import base64
import json
import os
import uuid
from typing import Any, Dict, List, Optional
from urllib.parse import quote

from qstash import QStash

from app import Call, TestApp
from tern_harness import USER1, TernServer, poll

WF_DEADLINE = float(os.environ.get("TERN_WF_DEADLINE", "45"))
TERMINAL = ("RUN_SUCCESS", "RUN_FAILED", "RUN_CANCELED")


def uid() -> str:
    return uuid.uuid4().hex[:12]


def b64(text: str) -> str:
    return base64.b64decode(text).decode("utf-8")


def start_run(client: QStash, app: TestApp, route: str, body: Any, headers: Optional[Dict[str, str]] = None) -> str:
    """Start a run the way the Python SDK does: a plain publish to the route.

    The route sees no protocol header, so the SDK takes it for a first invocation: it makes
    a run id, POSTs the Init to /v2/batch and answers 200 {"workflowRunId": ...}. The id is
    read from that answer (the delivery carrying the publish's message id). retries=0: if
    that first request fails, nothing would start anyway.
    """
    res = client.message.publish_json(url=app.wf_url(route), body=body, headers=headers or {}, retries=0)
    message_id = res.message_id

    def answered() -> Optional[Call]:
        for c in app.calls(route):
            if c.headers.get("upstash-message-id") == message_id and c.status is not None:
                return c
        return None

    call = poll(answered, timeout=WF_DEADLINE, interval=0.05, what=f"the start request of {route} ({message_id})")
    assert call.status == 200 and call.run_id, f"the start request was answered {call.status}: {call.body}\n{app.describe(route)}"
    assert call.run_id.startswith("wfr_"), call.run_id
    return call.run_id


def find_run(tern: TernServer, run_id: str) -> Optional[Dict[str, Any]]:
    """The run's log from the server (raw HTTP: the Python SDKs have no workflow logs client)."""
    status, body = tern.raw_request(
        "GET",
        f"/v2/workflows/events?groupBy=workflowRunId&workflowRunId={quote(run_id)}",
        token=USER1["token"],
    )
    assert status == 200, f"GET /v2/workflows/events -> {status}: {body[:500]!r}"
    runs = json.loads(body)["runs"]
    assert isinstance(runs, list), runs
    return next((r for r in runs if r.get("workflowRunId") == run_id), None)


def wait_result(tern: TernServer, app: TestApp, route: str, run_id: str) -> Any:
    """Wait for the run's result (app.finish); fail early if the run ended without one.

    A failed run counts as ended only once its failure callback was answered: the failure
    function records the result before that.
    """
    ended: List[Dict[str, Any]] = []

    def check() -> bool:
        if app.has_result(run_id):
            return True
        run = find_run(tern, run_id)
        if run and run["workflowState"] in TERMINAL:
            failure_pending = run["workflowState"] == "RUN_FAILED" and not any(
                c.kind == "failure" and c.status is not None for c in app.calls(route, run_id)
            )
            if not failure_pending and not app.has_result(run_id):
                ended.append(run)
                return True
        return False

    try:
        poll(check, timeout=WF_DEADLINE, interval=0.2, what=f"the result of {run_id}")
    except AssertionError as error:
        raise AssertionError(f"{error}\nlog: {find_run(tern, run_id)}\nrequests:\n{app.describe(route)}") from None
    assert not ended, f"run {run_id} ended as {ended[0]['workflowState']} without a result: {ended[0]}\n{app.describe(route)}"
    return app.result(run_id)


def wait_run(tern: TernServer, app: TestApp, route: str, run_id: str, state: str) -> Dict[str, Any]:
    """Wait until the logs show the run in a final state (which must be ``state``) and every
    request of the run the app got has been answered."""
    last: List[Optional[Dict[str, Any]]] = [None]

    def check() -> Optional[Dict[str, Any]]:
        run = last[0] = find_run(tern, run_id)
        if not run or run["workflowState"] not in TERMINAL:
            return None
        if any(c.status is None for c in app.calls(route, run_id)):
            return None
        return run

    try:
        run = poll(check, timeout=WF_DEADLINE, interval=0.2, what=f"{run_id} in a final state")
    except AssertionError as error:
        raise AssertionError(f"{error}\nlast log: {last[0]}\nrequests:\n{app.describe(route)}") from None
    assert run["workflowState"] == state, f"run {run_id}: {run}\nrequests:\n{app.describe(route)}"
    return run


def assert_calls(app: TestApp, route: str, run_id: str, kinds: List[str], statuses: Optional[List[int]] = None) -> None:
    """The requests to the route: all of this run, of the given kinds in this order (so
    their number too), and with these statuses if given."""
    every = app.calls(route)
    mine = app.calls(route, run_id)
    detail = f"\nrequests to /wf/{route}:\n{app.describe(route)}"
    assert len(every) == len(mine), f"requests to /wf/{route} not attributed to {run_id}{detail}"
    assert [c.kind for c in mine] == kinds, f"expected {len(kinds)} requests {kinds}, got {len(mine)}{detail}"
    if statuses is not None:
        assert [c.status for c in mine] == statuses, detail


def flat_steps(run: Dict[str, Any]) -> List[Dict[str, Any]]:
    """Steps of a run log, groups flattened, without the trailing "next" group."""
    return [s for g in run["steps"] if g.get("type") != "next" for s in g["steps"]]


def next_group(run: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    return next((g for g in run["steps"] if g.get("type") == "next"), None)


def step_named(run: Dict[str, Any], name: str) -> Dict[str, Any]:
    step = next((s for s in flat_steps(run) if s.get("stepName") == name), None)
    assert step, f"no step named {name!r} in {run['steps']}"
    return step


def parse_out(out: Any) -> Any:
    """A step's `out` as a value: logs carry the JSON text the SDK published."""
    if not isinstance(out, str):
        return out
    try:
        return json.loads(out)
    except ValueError:
        return out


def assert_run_log(run: Dict[str, Any], url: str, state: str, step_names: List[str]) -> List[Dict[str, Any]]:
    """The checks every finished run log should pass."""
    assert run["workflowState"] == state, run
    assert run["workflowUrl"] == url, run
    assert isinstance(run["workflowRunCreatedAt"], int), run
    assert isinstance(run.get("workflowRunCompletedAt"), int), f"workflowRunCompletedAt: {run}"
    steps = flat_steps(run)
    assert [s["stepName"] for s in steps] == ["init", *step_names], run["steps"]
    assert steps[0]["stepType"] == "Initial", steps[0]
    for s in steps:
        assert isinstance(s["messageId"], str), s
        assert isinstance(s["createdAt"], int), s
        if state == "RUN_SUCCESS":
            assert s["state"] == "STEP_SUCCESS", s
    return steps
