"""Authentication errors and per-user isolation (spec §1, §20, §21).

Read-only tokens are configured only in `tern serve` and are not tested here.
"""

from __future__ import annotations

import pytest
from qstash import QStash
from qstash.errors import QStashError

from tern_harness import USER1


@pytest.fixture()
def bad_client(tern) -> QStash:
    return QStash("not-a-valid-token", base_url=tern.url, retry=False)


def test_invalid_token_publish_raises(bad_client, receiver, uid):
    with pytest.raises(QStashError) as exc:
        bad_client.message.publish(url=receiver.url(f"/bad/{uid}"), body="x")
    assert "401" in str(exc.value)
    assert receiver.received() == []


@pytest.mark.parametrize(
    "call",
    [
        lambda c: c.signing_key.get(),
        lambda c: c.message.get("msg_x"),
        lambda c: c.message.cancel_all(),
        lambda c: c.dlq.list(),
        lambda c: c.log.list(),
    ],
    ids=["keys", "message.get", "cancel_all", "dlq.list", "log.list"],
)
def test_invalid_token_other_calls_raise(bad_client, call):
    with pytest.raises(QStashError) as exc:
        call(bad_client)
    assert "401" in str(exc.value)


def test_token_of_another_user_cannot_see_messages(client, client_user2, receiver, uid):
    mid = client.message.publish(url=receiver.url(f"/iso/{uid}"), body="iso", delay=3600).message_id
    try:
        with pytest.raises(QStashError):
            client_user2.message.get(mid)
        with pytest.raises(QStashError):
            client_user2.message.cancel(mid)
        client_user2.message.cancel_all()
        assert client_user2.log.list(filter={"message_id": mid}).logs == []
        # still pending for user 1
        assert client.message.get(mid).message_id == mid
    finally:
        client.message.cancel(mid)


def test_dlq_is_per_user(client, client_user2, receiver_factory, uid):
    from tern_harness import Reply, poll

    receiver = receiver_factory(Reply(status=500, body="x"))
    mid = client.message.publish(url=receiver.url(f"/isodlq/{uid}"), body="x", retries=0).message_id
    entry = poll(lambda: client.dlq.list(filter={"message_id": mid}).messages, what="DLQ entry")[0]
    try:
        assert client_user2.dlq.list(filter={"message_id": mid}).messages == []
        with pytest.raises(QStashError):
            client_user2.dlq.get(entry.dlq_id)
    finally:
        client.dlq.delete(entry.dlq_id)


def test_user1_token_matches_dev_default(tern):
    status, _ = tern.raw_request("GET", "/v2/keys", token=USER1["token"])
    assert status == 200
    status, _ = tern.raw_request("GET", "/v2/keys")
    assert status == 401
