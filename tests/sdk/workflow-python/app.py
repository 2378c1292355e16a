"""The workflow test app: FastAPI + `upstash_workflow.fastapi.Serve`, served by uvicorn.

* Every route of ``workflows.py`` is served at ``/wf/<name>`` through the SDK's FastAPI
  adapter. That adapter only takes ``async`` route functions and an ``AsyncQStash``, so the
  asyncio variant of the SDK is the one under test.
* ``/fake/*`` are third-party endpoints for ``context.call`` and ``failure_url``.
* Everything the tests check is kept in memory, behind one lock (uvicorn runs in a background
  thread, the tests in the main one): each request to a workflow route (``calls``), each
  run's final result (``results``), counters the routes bump, and each fake request.
* Signatures are verified: every route gets a ``Receiver`` with the dev user's signing keys,
  and the routes' client talks to tern with the dev user's token (never to Upstash).
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse, Response
from qstash import AsyncQStash, Receiver
from upstash_workflow.fastapi import Serve

import workflows


@dataclass
class Call:
    """One request to a workflow route, as the route saw and answered it."""

    route: str
    headers: Dict[str, str]  # lower-case names (the last value of repeated ones)
    time: float
    run_id: Optional[str] = None
    status: Optional[int] = None  # None until the response has been sent
    body: str = ""  # the SDK's response body

    @property
    def kind(self) -> str:
        """What the SDK takes the request for (the order of its own checks, serve.py)."""
        h = self.headers
        if h.get("upstash-workflow-is-failure") == "true":
            return "failure"
        if h.get("upstash-workflow-callback"):
            return "callback"
        if h.get("upstash-workflow-sdk-version"):
            return "step"
        return "start"  # no protocol header: a first invocation (the plain publish)


@dataclass
class FakeRequest:
    path: str  # path + "?" + query
    method: str
    headers: Dict[str, str]
    text: str
    time: float = field(default_factory=time.time)


class TestApp:
    """The app, running on 127.0.0.1:<free port> until ``stop()``."""

    __test__ = False  # not a pytest test class

    def __init__(self, tern_url: str, token: str, current_signing_key: str, next_signing_key: str) -> None:
        self._lock = threading.Lock()
        self._calls: List[Call] = []
        self._results: Dict[str, Any] = {}
        self._counters: Dict[str, int] = {}
        self._fake: List[FakeRequest] = []

        # Bind first, so the routes' URLs are known before the SDK objects are made.
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self.base = f"http://127.0.0.1:{self._sock.getsockname()[1]}"

        # retry=False: a failing tern request must surface as the route's error, not be
        # retried away by the SDK client. It is used only on uvicorn's event loop.
        self.qstash = AsyncQStash(token, base_url=tern_url, retry=False)
        self.receiver = Receiver(current_signing_key=current_signing_key, next_signing_key=next_signing_key)

        fastapi_app = FastAPI()
        self._add_fake_routes(fastapi_app)
        workflows.register(Serve(fastapi_app), self)
        self.asgi = _Recorder(fastapi_app, self)

        config = uvicorn.Config(
            self.asgi,
            log_level="warning",
            access_log=False,
            lifespan="off",
            # tern keeps connections alive; do not wait long for them when stopping
            timeout_graceful_shutdown=2,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._sock]}, daemon=True)

    # -- lifecycle ----------------------------------------------------------------
    def start(self, timeout: float = 20) -> "TestApp":
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive():
                raise RuntimeError("the test app's uvicorn thread ended during startup")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the test app did not start within {timeout}s")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._sock.close()

    # -- what the routes use (see workflows.py) -----------------------------------------
    def wf_url(self, name: str) -> str:
        return f"{self.base}/wf/{name}"

    def fake_url(self, path: str) -> str:
        return f"{self.base}/fake/{path.lstrip('/')}"

    def finish(self, run_id: str, value: Any) -> Any:
        """Record a run's final result (called after its last step, or by a failure function)."""
        with self._lock:
            self._results[run_id] = value
        return value

    def bump(self, key: str) -> int:
        with self._lock:
            self._counters[key] = self._counters.get(key, 0) + 1
            return self._counters[key]

    # -- what the tests read --------------------------------------------------------------
    def result(self, run_id: str) -> Any:
        with self._lock:
            return self._results.get(run_id)

    def has_result(self, run_id: str) -> bool:
        with self._lock:
            return run_id in self._results

    def counter(self, key: str) -> int:
        with self._lock:
            return self._counters.get(key, 0)

    def calls(self, route: Optional[str] = None, run_id: Optional[str] = None) -> List[Call]:
        with self._lock:
            return [
                c
                for c in self._calls
                if (route is None or c.route == route) and (run_id is None or c.run_id == run_id)
            ]

    def fake(self, prefix: str) -> List[FakeRequest]:
        with self._lock:
            return [r for r in self._fake if r.path.startswith(prefix)]

    def describe(self, route: Optional[str] = None) -> str:
        """One line per request to the route(s), for assertion messages."""
        lines = [
            f"{c.route} {c.kind} run={c.run_id or '-'} -> {c.status if c.status is not None else 'pending'}"
            + (f" {c.body[:300]}" if c.status is not None and c.status >= 300 else "")
            for c in self.calls(route)
        ]
        return "\n".join(lines) if lines else "(no requests)"

    # -- recording (called by _Recorder on uvicorn's thread) ---------------------------
    def _record_start(self, call: Call) -> None:
        with self._lock:
            self._calls.append(call)

    def _record_end(self, call: Call, status: int, body: bytes) -> None:
        text = body.decode("utf-8", "replace")
        run_id = call.run_id
        # The plain request that starts a run carries no run id: the SDK makes one up and
        # answers {"workflowRunId": ...}. Failure callbacks are first invocations to the SDK
        # too, and answer a made-up id, so only the start request is attributed this way.
        if run_id is None and call.kind == "start" and status == 200:
            try:
                run_id = json.loads(text).get("workflowRunId")
            except (ValueError, AttributeError):
                run_id = None
        with self._lock:
            call.status, call.body, call.run_id = status, text, run_id

    # -- fake third parties -----------------------------------------------------------
    def _add_fake_routes(self, app: FastAPI) -> None:
        methods = ["GET", "POST", "PUT", "PATCH", "DELETE"]

        async def record(request: Request) -> FakeRequest:
            body = await request.body()
            rec = FakeRequest(
                path=request.url.path + (f"?{request.url.query}" if request.url.query else ""),
                method=request.method,
                headers={k.lower(): v for k, v in request.headers.items()},
                text=body.decode("utf-8", "replace"),
            )
            with self._lock:
                self._fake.append(rec)
            return rec

        @app.api_route("/fake/status/{code}", methods=methods)
        async def status(code: int, request: Request) -> Response:
            # context.call targets: a non-2xx answer is a result for the workflow, not a failure
            rec = await record(request)
            h = {"X-Fake-Status": str(code)}
            if code == 400:
                body = json.dumps({"error": "bad request", "got": rec.text})
                return Response(body, status_code=400, headers=h, media_type="application/json")
            return PlainTextResponse(f"ok {rec.method} {rec.headers.get('x-req', '')}", status_code=code, headers=h)

        @app.api_route("/fake/flaky/{key}", methods=methods)
        async def flaky(key: str, request: Request, fails: int = 1) -> Response:
            # fails `fails` times per key, then succeeds. Retry-After: 1 steers tern's retry of
            # the call (the Python SDK has no call retry delay; the default backoff is ~12 s).
            await record(request)
            n = self.bump(f"flaky:{key}")
            if n <= fails:
                return PlainTextResponse(f"flaky failure {n}", status_code=500, headers={"Retry-After": "1"})
            return PlainTextResponse(f"recovered after {fails}")

        @app.api_route("/fake/sink/{name}", methods=methods)
        async def sink(name: str, request: Request) -> Response:
            # a failure_url target: records what it got
            await record(request)
            return PlainTextResponse("recorded")


class _Recorder:
    """ASGI middleware: records each request to /wf/* with its status and response body."""

    def __init__(self, app: Callable, owner: TestApp) -> None:
        self.app = app
        self.owner = owner

    async def __call__(self, scope, receive, send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not path.startswith("/wf/"):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        call = Call(route=path[len("/wf/") :], headers=headers, time=time.time(), run_id=headers.get("upstash-workflow-runid"))
        self.owner._record_start(call)
        status = 0
        chunks: List[bytes] = []

        async def send_and_record(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
                if not message.get("more_body"):
                    # recorded before the last bytes go out: once tern has the response, the
                    # test sees the request as answered
                    self.owner._record_end(call, status, b"".join(chunks))
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        except asyncio.CancelledError:
            raise
        except Exception as error:  # noqa: BLE001 - make a crash visible in the call list
            self.owner._record_end(call, 500, f"test app error: {error!r}".encode())
            raise
