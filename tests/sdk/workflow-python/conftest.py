"""pytest fixtures: one `tern dev` server and one test app per session, and a QStash client.

The tern process handling (`tern dev --port <free port> --data-dir <fresh temp dir>`, the dev
users, ``poll``) comes from the qstash suite's ``tests/sdk/python/tern_harness.py``, on the
path through pytest.ini, imported rather than copied.
"""

from __future__ import annotations

from typing import Iterator

import pytest
from qstash import QStash

from app import TestApp
from tern_harness import USER1, TernServer, ensure_loopback_no_proxy, make_client

# The SDK clients (httpx) honour proxy variables: keep any proxy away from 127.0.0.1.
ensure_loopback_no_proxy()


@pytest.fixture(scope="session")
def tern() -> Iterator[TernServer]:
    server = TernServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def app(tern: TernServer) -> Iterator[TestApp]:
    test_app = TestApp(tern.url, USER1["token"], USER1["current"], USER1["next"]).start()
    try:
        yield test_app
    finally:
        test_app.stop()


@pytest.fixture(scope="session")
def client(tern: TernServer) -> QStash:
    """The sync client the tests start runs with (SDK-side retries off)."""
    return make_client(tern)
