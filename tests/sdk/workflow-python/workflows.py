"""The workflow routes of the test app (served at /wf/<name> by app.py).

Rules the SDK imposes on route code:
  * the route function runs again on every delivery (and once more in the SDK's
    "authorization" dry run, which stops at the first step), so side effects that must happen
    once live inside ``context.run``; ``app.finish`` after the last step runs only on the
    final delivery;
  * steps must be awaited one after another (2.0.0 has no parallel steps).

Every route uses ``retries=0`` unless it tests retries: a scenario that breaks then fails at
once with the route's error in the logs, instead of retrying with tern's ~12 s backoff.

The comment on each route gives the number of requests it should receive when started by a
plain publish, derived from the SDK (serve.py): 1 for the plain request (a first invocation:
the SDK makes a run id and POSTs the Init to /v2/batch), 1 for the Init's delivery (runs
the first step and publishes its result), then 1 per step result delivered (each runs the
next step; the last one returns and the SDK DELETEs the run). A ``context.call`` adds one
more: the callback, which the SDK turns into the result step; a call retried adds the
callback of each earlier attempt ("call-will-retry"). A failed step adds its retries and
the failure callback.
"""

from __future__ import annotations

import json
import math
import time
from typing import TYPE_CHECKING, Any, Dict, List

from upstash_workflow import AsyncWorkflowContext
from upstash_workflow.fastapi import Serve

if TYPE_CHECKING:
    from app import TestApp


def register(serve: Serve, app: "TestApp") -> None:
    def options(name: str, **extra: Any) -> Dict[str, Any]:
        return {
            "qstash_client": app.qstash,
            "receiver": app.receiver,
            "url": app.wf_url(name),
            # an explicit, empty env: nothing from the test process (QSTASH_*,
            # UPSTASH_WORKFLOW_URL) may point the SDK elsewhere
            "env": {},
            "retries": 0,
            **extra,
        }

    # three run steps (sync, async, mixed JSON types) -> 1 + 1 + 3 = 5 requests
    @serve.post("/wf/steps", **options("steps"))
    async def steps(context: AsyncWorkflowContext[Any]) -> None:
        payload = context.request_payload
        a = await context.run("step one", lambda: f"one({json.dumps(payload, sort_keys=True)})")

        async def two() -> Dict[str, Any]:
            return {"prev": a, "n": 2}

        b = await context.run("step two", two)
        c = await context.run("step three", lambda: [b["n"], 3, None, True, 1.5])
        app.finish(
            context.workflow_run_id,
            {"a": a, "b": b, "c": c, "payload": payload, "header": context.headers.get("x-test-header")},
        )

    # only for the signature check: requests without tern's signature never get this far
    @serve.post("/wf/probe", **options("probe"))
    async def probe(context: AsyncWorkflowContext[Any]) -> None:
        await context.run("never", lambda: app.bump("probe:ran"))

    # run, sleep(2), run, sleep_until(+2 s, whole seconds), run, sleep("1s"), run
    # -> 1 + 1 + 7 = 9 requests
    @serve.post("/wf/sleep", **options("sleep"))
    async def sleep(context: AsyncWorkflowContext[Any]) -> None:
        t0 = await context.run("t0", time.time)
        await context.sleep("sleep 2", 2)
        t1 = await context.run("t1", time.time)
        until = math.ceil(t1) + 2  # from a step result: the same on every replay
        await context.sleep_until("sleep until", until)
        t2 = await context.run("t2", time.time)
        await context.sleep("sleep 1s", "1s")
        t3 = await context.run("t3", time.time)
        app.finish(context.workflow_run_id, {"t0": t0, "t1": t1, "t2": t2, "t3": t3, "until": until})

    # three context.call steps -> 1 + 1 + 3 * 2 = 8, plus the callback of the flaky call's
    # failed first attempt = 9 requests
    @serve.post("/wf/call", **options("call"))
    async def call(context: AsyncWorkflowContext[Any]) -> None:
        get200 = await context.call(
            "get 200", url=app.fake_url("status/200"), method="GET", headers={"x-req": "get-header"}
        )
        post400 = await context.call(
            "post 400",
            url=app.fake_url("status/400"),
            method="POST",
            body={"hello": "world"},
            headers={"x-req": "post-header"},
        )
        flaky = await context.call(
            "flaky", url=app.fake_url(f"flaky/{context.workflow_run_id}?fails=1"), method="GET", retries=1
        )

        def pick(r: Any) -> Dict[str, Any]:
            return {"status": r.status, "body": r.body, "fakeStatus": r.header.get("X-Fake-Status")}

        app.finish(
            context.workflow_run_id,
            {"payload": context.request_payload, "get200": pick(get200), "post400": pick(post400), "flaky": pick(flaky)},
        )

    async def record_failure(context: AsyncWorkflowContext[Any], fail_status: int, fail_response: str, fail_headers: Dict[str, List[str]]) -> None:
        app.finish(
            context.workflow_run_id,
            {
                "failStatus": fail_status,
                "failResponse": fail_response,
                "failHeaders": fail_headers,
                "payload": context.request_payload,
                "userHeader": context.headers.get("x-user"),
                "url": context.url,
            },
        )

    # the step raises; retries 0 -> 1 + 1 (answered 500) + the failure callback = 3 requests
    @serve.post("/wf/fail-fn", **options("fail-fn", failure_function=record_failure))
    async def fail_fn(context: AsyncWorkflowContext[Any]) -> None:
        def boom() -> None:
            app.bump(f"{context.workflow_run_id}:attempt")
            raise ValueError(f"boom {context.request_payload['tag']}")

        await context.run("failing step", boom)

    # the same with retries 1 -> 1 + 2 (both 500) + the failure callback = 4 requests; the
    # step runs twice (the SDK has no context.retried: the step counts its attempts)
    @serve.post("/wf/fail-retry", **options("fail-retry", retries=1, failure_function=record_failure))
    async def fail_retry(context: AsyncWorkflowContext[Any]) -> None:
        def boom() -> None:
            n = app.bump(f"{context.workflow_run_id}:attempt")
            raise RuntimeError(f"retry me {n}")

        await context.run("failing step", boom)

    class OrderError(Exception):
        """a user error class: its name reaches the failure callback body"""

    # the step raises; failure_url is a fake endpoint -> 1 + 1 = 2 requests here, and one
    # failure callback at /fake/sink/fail-url
    @serve.post("/wf/fail-url", **options("fail-url", failure_url=app.fake_url("sink/fail-url")))
    async def fail_url(context: AsyncWorkflowContext[Any]) -> None:
        def boom() -> None:
            raise OrderError("failure for the failure url")

        await context.run("failing step", boom)
