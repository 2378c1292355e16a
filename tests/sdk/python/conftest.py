"""pytest fixtures: one `tern dev` server per test session, SDK clients, receivers."""

from __future__ import annotations

import uuid
from typing import Callable, Iterator, List

import pytest
from qstash import QStash

from tern_harness import USER2, HttpReceiver, Reply, TernServer, ensure_loopback_no_proxy, make_client

ensure_loopback_no_proxy()


@pytest.fixture(scope="session")
def tern() -> Iterator[TernServer]:
    """The shared server. Tests using it must NOT rotate user 1's signing keys."""
    server = TernServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture()
def fresh_tern() -> Iterator[TernServer]:
    """A private server for tests that mutate global per-user state (key rotation)."""
    server = TernServer().start()
    try:
        yield server
    finally:
        server.stop()


# Session-scoped: the clients are stateless, and building one (an httpx client with its SSL
# context) costs ~0.1 s.
@pytest.fixture(scope="session")
def client(tern: TernServer) -> QStash:
    return make_client(tern)


@pytest.fixture(scope="session")
def client_user2(tern: TernServer) -> QStash:
    return make_client(tern, USER2["token"])


@pytest.fixture()
def receiver_factory() -> Iterator[Callable[..., HttpReceiver]]:
    made: List[HttpReceiver] = []

    def make(reply=None) -> HttpReceiver:
        r = HttpReceiver(reply or Reply())
        made.append(r)
        return r

    try:
        yield make
    finally:
        for r in made:
            r.close()


@pytest.fixture()
def receiver(receiver_factory) -> HttpReceiver:
    """A receiver answering 200 "ok" to everything."""
    return receiver_factory()


@pytest.fixture()
def uid() -> str:
    """A unique suffix for labels / dedup ids / paths so tests never see each other's data."""
    return uuid.uuid4().hex[:12]
