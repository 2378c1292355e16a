"""Test harness for driving a real `tern` binary with the official Python SDK.

* ``TernServer`` starts ``tern dev --port <free port> --data-dir <fresh temp dir>``,
  waits for the ``running`` banner and for ``GET /v2/keys`` to answer 200, and
  kills the process on ``stop()``.
* ``HttpReceiver`` is a real HTTP server on 127.0.0.1 that records every request
  (method, raw path, headers, body) and answers with a configurable status.
* ``poll`` retries a function until it returns a truthy value or a deadline passes.

Only 127.0.0.1 is ever contacted.
"""

from __future__ import annotations

import http.server
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple, TypeVar, Union

T = TypeVar("T")

REPO_ROOT = Path(__file__).resolve().parents[3]

# Spec §21: the four predefined dev users (user 1 is the default).
USERS = {
    1: {
        "token": "eyJVc2VySUQiOiJkZWZhdWx0VXNlciIsIlBhc3N3b3JkIjoiZGVmYXVsdFBhc3N3b3JkIn0=",
        "current": "sig_7kYjw48mhY7kAjqNGcy6cr29RJ6r",
        "next": "sig_5ZB6DVzB1wjE8S6rZ7eenA8Pdnhs",
    },
    2: {
        "token": "eyJVc2VySUQiOiJ0ZXN0VXNlcjEiLCJQYXNzd29yZCI6InRlc3RQYXNzd29yZCJ9",
        "current": "sig_7GVPjvuwsfqF65iC8fSrs1dfYruM",
        "next": "sig_5NoELc3EFnZn4DVS5bDs2Nk4b7Ua",
    },
    3: {
        "token": "eyJVc2VySUQiOiJ0ZXN0VXNlcjIiLCJQYXNzd29yZCI6InRlc3RQYXNzd29yZCJ9",
        "current": "sig_6jWGaWRxHsw4vMSPJprXadyvrybF",
        "next": "sig_7qHbvhmahe5GwfePDiS5Lg3pi6Qx",
    },
    4: {
        "token": "eyJVc2VySUQiOiJ0ZXN0VXNlcjMiLCJQYXNzd29yZCI6InRlc3RQYXNzd29yZCJ9",
        "current": "sig_5T8FcSsynBjn9mMLBsXhpacRovJf",
        "next": "sig_7GFR4YaDshFcqsxWRZpRB161jguD",
    },
}
USER1 = USERS[1]
USER2 = USERS[2]

DEFAULT_DEADLINE = float(os.environ.get("TERN_TEST_DEADLINE", "20"))
STARTUP_DEADLINE = float(os.environ.get("TERN_STARTUP_DEADLINE", "30"))


def poll(
    fn: Callable[[], T],
    *,
    timeout: float = DEFAULT_DEADLINE,
    interval: float = 0.1,
    what: str = "condition",
) -> T:
    """Call ``fn`` until it returns a truthy value; raise AssertionError at the deadline.

    Exceptions raised by ``fn`` are treated as "not yet" and reported on timeout.
    """
    deadline = time.monotonic() + timeout
    last_exc: Optional[BaseException] = None
    last_value: T = None  # type: ignore[assignment]
    while True:
        try:
            last_value = fn()
            if last_value:
                return last_value
            last_exc = None
        except Exception as e:  # noqa: BLE001 - polling tolerates transient errors
            last_exc = e
        if time.monotonic() >= deadline:
            detail = f"; last error: {last_exc!r}" if last_exc else f"; last value: {last_value!r}"
            raise AssertionError(f"timed out after {timeout}s waiting for {what}{detail}")
        time.sleep(interval)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _loopback_env() -> Dict[str, str]:
    """Environment for child processes: make sure no proxy is used for loopback."""
    env = dict(os.environ)
    for key in ("NO_PROXY", "no_proxy"):
        parts = [p for p in env.get(key, "").split(",") if p]
        for host in ("127.0.0.1", "localhost", "::1"):
            if host not in parts:
                parts.append(host)
        env[key] = ",".join(parts)
    return env


def ensure_loopback_no_proxy() -> None:
    os.environ.update({k: v for k, v in _loopback_env().items() if k in ("NO_PROXY", "no_proxy")})


def make_client(server: "TernServer", token: str = USER1["token"]):
    """A sync SDK client for ``server``. retry=False: never hide a failing request behind SDK retries."""
    from qstash import QStash

    return QStash(token, base_url=server.url, retry=False)


def tern_binary() -> Path:
    raw = os.environ.get("TERN_BIN", "target/debug/tern")
    p = Path(raw)
    if not p.is_absolute():
        p = (REPO_ROOT / p).resolve()
    return p


class TernServer:
    """A `tern dev` process on a free port with a fresh data directory."""

    def __init__(self, binary: Optional[Path] = None) -> None:
        self.binary = binary or tern_binary()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.data_dir = tempfile.mkdtemp(prefix="tern-sdk-py-")
        self.proc: Optional[subprocess.Popen] = None
        self.lines: List[str] = []
        self.banner: Dict[str, str] = {}
        self._lines_lock = threading.Lock()
        self._running_seen = threading.Event()
        self._reader: Optional[threading.Thread] = None

    # -- lifecycle -------------------------------------------------------
    def start(self) -> "TernServer":
        if not self.binary.exists():
            shutil.rmtree(self.data_dir, ignore_errors=True)
            raise RuntimeError(
                f"tern binary not found at {self.binary}; build it with "
                "`cargo build -p tern-server --bin tern` or set TERN_BIN"
            )
        cmd = [str(self.binary), "dev", "--port", str(self.port), "--data-dir", self.data_dir]
        self.proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=_loopback_env(),
            start_new_session=True,
        )
        self._reader = threading.Thread(target=self._read_output, daemon=True)
        self._reader.start()
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _read_output(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for raw in iter(self.proc.stdout.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            with self._lines_lock:
                self.lines.append(line)
                stripped = line.strip()
                for key in (
                    "QSTASH_URL",
                    "QSTASH_TOKEN",
                    "QSTASH_CURRENT_SIGNING_KEY",
                    "QSTASH_NEXT_SIGNING_KEY",
                ):
                    idx = stripped.find(key + "=")
                    if idx != -1 and key not in self.banner:
                        value = stripped[idx + len(key) + 1 :].strip().strip('"').strip("'")
                        self.banner[key] = value
            if "running" in line.lower():
                self._running_seen.set()
        self._running_seen.set()  # process ended; unblock waiters

    def output(self) -> str:
        with self._lines_lock:
            return "\n".join(self.lines)

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + STARTUP_DEADLINE
        # 1. the banner line containing "running"
        while not self._running_seen.wait(0.1):
            if time.monotonic() > deadline:
                raise RuntimeError(f"tern did not print 'running' within {STARTUP_DEADLINE}s:\n{self.output()}")
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"tern exited with code {self.proc.returncode}:\n{self.output()}")
        # 2. GET /v2/keys answers 200 for user 1
        last = None
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"tern exited with code {self.proc.returncode}:\n{self.output()}")
            try:
                status, _ = self.raw_request("GET", "/v2/keys", token=USER1["token"], timeout=2)
                if status == 200:
                    # give the reader a moment to collect the QSTASH_* banner lines
                    end = time.monotonic() + 2
                    while time.monotonic() < end and len(self.banner) < 4:
                        time.sleep(0.05)
                    return
                last = f"status {status}"
            except Exception as e:  # noqa: BLE001
                last = repr(e)
            time.sleep(0.1)
        raise RuntimeError(f"GET /v2/keys never answered 200 ({last}):\n{self.output()}")

    def stop(self) -> None:
        proc = self.proc
        if proc is not None and proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except (ProcessLookupError, PermissionError):
                proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    proc.kill()
                proc.wait(timeout=5)
        if proc is not None and proc.stdout is not None:
            try:
                proc.stdout.close()
            except Exception:  # noqa: BLE001
                pass
        shutil.rmtree(self.data_dir, ignore_errors=True)

    # -- raw HTTP (only for things the SDK cannot do) ---------------------
    def raw_request(
        self,
        method: str,
        path: str,
        *,
        token: Optional[str] = None,
        body: Optional[bytes] = None,
        headers: Optional[Dict[str, str]] = None,
        timeout: float = 10,
    ) -> Tuple[int, bytes]:
        req = urllib.request.Request(self.url + path, data=body, method=method)
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        for k, v in (headers or {}).items():
            req.add_header(k, v)
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(req, timeout=timeout) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()


# ---------------------------------------------------------------------------
# Receiver
# ---------------------------------------------------------------------------


@dataclass
class ReceivedRequest:
    method: str
    path: str  # raw request target: path + "?" + query
    headers: List[Tuple[str, str]]
    body: bytes
    time: float = field(default_factory=time.time)

    def header(self, name: str) -> Optional[str]:
        """First value of a header, case-insensitive."""
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None

    def header_all(self, name: str) -> List[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")

    def json(self):
        return json.loads(self.body)


@dataclass
class Reply:
    status: int = 200
    body: Union[bytes, str] = b"ok"
    headers: Dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


ReplyFn = Callable[[ReceivedRequest], Reply]


class HttpReceiver:
    """A real HTTP server on 127.0.0.1 that records requests and answers chosen statuses.

    ``reply`` may be a ``Reply`` (used for every request) or a function of the request.
    Per-path replies can be set with ``on(path_prefix, reply)``.
    """

    def __init__(self, reply: Union[Reply, ReplyFn, None] = None) -> None:
        self.requests: List[ReceivedRequest] = []
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self.default_reply: Union[Reply, ReplyFn] = reply or Reply()
        self._routes: List[Tuple[str, Union[Reply, ReplyFn]]] = []
        self._closing = threading.Event()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self) -> None:
                body = self._read_body()
                req = ReceivedRequest(
                    method=self.command,
                    path=self.path,
                    headers=list(self.headers.items()),
                    body=body,
                )
                with receiver._cond:
                    receiver.requests.append(req)
                    receiver._cond.notify_all()
                reply = receiver._reply_for(req)
                if reply.delay:
                    receiver._closing.wait(reply.delay)
                data = reply.body.encode() if isinstance(reply.body, str) else reply.body
                try:
                    self.send_response(reply.status)
                    for k, v in reply.headers.items():
                        self.send_header(k, v)
                    if not any(k.lower() == "content-type" for k in reply.headers):
                        self.send_header("Content-Type", "text/plain; charset=utf-8")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def _read_body(self) -> bytes:
                te = (self.headers.get("Transfer-Encoding") or "").lower()
                if "chunked" in te:
                    chunks = []
                    while True:
                        size_line = self.rfile.readline().strip()
                        size = int(size_line.split(b";")[0] or b"0", 16)
                        if size == 0:
                            # trailers until empty line
                            while self.rfile.readline().strip():
                                pass
                            break
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                    return b"".join(chunks)
                n = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(n) if n > 0 else b""

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _handle

            def log_message(self, *args) -> None:  # silence
                pass

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True
            allow_reuse_address = True

        self._server = Server(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        self.base = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def url(self, path: str = "/") -> str:
        if not path.startswith("/"):
            path = "/" + path
        return self.base + path

    def on(self, path_prefix: str, reply: Union[Reply, ReplyFn]) -> None:
        """Answer requests whose path starts with ``path_prefix`` with ``reply``."""
        with self._lock:
            self._routes.insert(0, (path_prefix, reply))

    def _reply_for(self, req: ReceivedRequest) -> Reply:
        with self._lock:
            routes = list(self._routes)
            default = self.default_reply
        chosen: Union[Reply, ReplyFn] = default
        for prefix, reply in routes:
            if req.path.startswith(prefix):
                chosen = reply
                break
        return chosen(req) if callable(chosen) else chosen

    def received(self, path_prefix: Optional[str] = None) -> List[ReceivedRequest]:
        with self._lock:
            reqs = list(self.requests)
        if path_prefix is not None:
            reqs = [r for r in reqs if r.path.startswith(path_prefix)]
        return reqs

    def wait_for(
        self,
        pred: Callable[[ReceivedRequest], bool] = lambda r: True,
        *,
        count: int = 1,
        timeout: float = DEFAULT_DEADLINE,
    ) -> List[ReceivedRequest]:
        """Wait until at least ``count`` recorded requests satisfy ``pred``; return them."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                matching = [r for r in self.requests if pred(r)]
                if len(matching) >= count:
                    return matching
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    summary = [(r.method, r.path) for r in self.requests]
                    raise AssertionError(
                        f"timed out after {timeout}s waiting for {count} matching request(s) "
                        f"at {self.base}; got {len(matching)}; all requests: {summary}"
                    )
                self._cond.wait(min(remaining, 0.5))

    def wait_for_message(self, message_id: str, *, count: int = 1, timeout: float = DEFAULT_DEADLINE):
        """Wait for deliveries carrying ``Upstash-Message-Id: <message_id>``."""
        return self.wait_for(lambda r: r.header("Upstash-Message-Id") == message_id, count=count, timeout=timeout)

    def close(self) -> None:
        self._closing.set()
        self._server.shutdown()
        self._server.server_close()


def reply_status(status: int, body: Union[str, bytes] = "", delay: float = 0.0) -> Reply:
    return Reply(status=status, body=body, delay=delay)


class Gauge:
    """A reply function that holds every request for ``hold`` seconds and records how many were
    in flight at once (``peak``) and the order bodies arrived in (``bodies``).

    Use as ``receiver_factory(Gauge(0.3))``. The count drops before the response is written,
    so a server that waits for a response before starting the next delivery never sees more
    than its limit here.
    """

    def __init__(self, hold: float, reply: Optional[Reply] = None) -> None:
        self.hold = hold
        self.reply = reply or Reply()
        self.active = 0
        self.peak = 0
        self.bodies: List[str] = []
        self._lock = threading.Lock()
        self._release = threading.Event()

    def __call__(self, req: ReceivedRequest) -> Reply:
        with self._lock:
            self.active += 1
            self.peak = max(self.peak, self.active)
            self.bodies.append(req.body.decode("utf-8", "replace"))
        try:
            self._release.wait(self.hold)
        finally:
            with self._lock:
                self.active -= 1
        return self.reply

    def release(self) -> None:
        """Stop holding (current and later requests answer at once)."""
        self._release.set()
