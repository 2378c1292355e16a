"""message.get / cancel / cancel_many / cancel_all (spec §5.4, §6.1)."""

from __future__ import annotations

import time

import pytest
from qstash.errors import QStashError
from qstash.log import LogState

from tern_harness import poll


def now_ms() -> int:
    return int(time.time() * 1000)


def wait_canceled(client, message_id: str):
    return poll(
        lambda: LogState.CANCELED in [log.state for log in client.log.list(filter={"message_id": message_id}).logs],
        what=f"CANCELED log entry for {message_id}",
    )


def test_get_returns_all_message_fields(client, receiver, uid):
    url = receiver.url(f"/fields/{uid}?x=1")
    before = now_ms()
    res = client.message.publish(
        url=url,
        body=f"hello {uid}",
        content_type="text/plain",
        method="PUT",
        headers={"test-header": "test-value"},
        retries=2,
        retry_delay="1000 * (1 + retried)",
        callback=receiver.url(f"/cb/{uid}"),
        failure_callback=receiver.url(f"/fcb/{uid}"),
        delay=3600,
        label=f"lbl-{uid}",
    )
    try:
        msg = client.message.get(res.message_id)
        assert msg.message_id == res.message_id
        assert msg.url == url
        assert msg.method == "PUT"
        assert msg.headers == {"Content-Type": ["text/plain"], "Test-Header": ["test-value"]}
        assert msg.body == f"hello {uid}"
        assert msg.body_base64 is None
        assert msg.max_retries == 2
        assert msg.retry_delay_expression == "1000 * (1 + retried)"
        assert before - 5_000 <= msg.created_at <= now_ms() + 5_000
        assert abs(msg.not_before - (msg.created_at + 3_600_000)) <= 2_000
        assert msg.callback == receiver.url(f"/cb/{uid}")
        assert msg.failure_callback == receiver.url(f"/fcb/{uid}")
        assert msg.label == f"lbl-{uid}"
        assert msg.caller_ip
        assert msg.url_group is None
        assert msg.queue is None
        assert msg.schedule_id is None
        assert msg.flow_control is None
    finally:
        client.message.cancel(res.message_id)


def test_get_defaults(client, receiver, uid):
    res = client.message.publish(url=receiver.url(f"/defaults/{uid}"), body="d", delay=3600)
    try:
        msg = client.message.get(res.message_id)
        assert msg.method == "POST"
        assert msg.max_retries == 3
        assert msg.callback is None
        assert msg.failure_callback is None
        assert msg.retry_delay_expression is None
        assert msg.label is None
    finally:
        client.message.cancel(res.message_id)


def test_get_non_utf8_body_is_base64(client, receiver, uid):
    raw = b"\xff\xfe\x00binary"
    res = client.message.publish(url=receiver.url(f"/bin/{uid}"), body=raw, delay=3600)
    try:
        msg = client.message.get(res.message_id)
        assert msg.body is None
        import base64

        assert base64.b64decode(msg.body_base64) == raw
    finally:
        client.message.cancel(res.message_id)


def test_get_unknown_message_raises(client):
    with pytest.raises(QStashError) as exc:
        client.message.get("msg_doesnotexist123")
    assert "404" in str(exc.value)


def test_message_stays_retrievable_after_delivery(client, receiver, uid):
    # spec §5.4.1: keep finished messages retrievable for a grace period
    res = client.message.publish(url=receiver.url(f"/grace/{uid}"), body="g")
    receiver.wait_for_message(res.message_id)
    assert client.message.get(res.message_id).message_id == res.message_id


def test_cancel_single(client, receiver, uid):
    res = client.message.publish(url=receiver.url(f"/cancel/{uid}"), body="c", delay=3600)
    client.message.cancel(res.message_id)
    wait_canceled(client, res.message_id)
    states = [log.state for log in client.log.list(filter={"message_id": res.message_id}).logs]
    assert LogState.CANCEL_REQUESTED in states
    assert LogState.DELIVERED not in states


def test_cancel_delivered_message_is_not_an_error(client, receiver, uid):
    res = client.message.publish(url=receiver.url(f"/cancel-done/{uid}"), body="c")
    receiver.wait_for_message(res.message_id)
    poll(
        lambda: LogState.DELIVERED in [log.state for log in client.log.list(filter={"message_id": res.message_id}).logs],
        what="DELIVERED",
    )
    client.message.cancel(res.message_id)  # 200 {"cancelled": 0}, not 404


def test_cancel_unknown_message_raises(client):
    with pytest.raises(QStashError):
        client.message.cancel("msg_doesnotexist456")


def test_cancel_many(client, receiver, uid):
    ids = [
        client.message.publish(url=receiver.url(f"/cm/{uid}/{i}"), body=str(i), delay=3600).message_id
        for i in range(2)
    ]
    keep = client.message.publish(url=receiver.url(f"/cm/{uid}/keep"), body="k", delay=3600).message_id
    try:
        # unknown ids are skipped, not an error
        assert client.message.cancel_many(ids + ["msg_unknown789"]) == 2
        for mid in ids:
            wait_canceled(client, mid)
        # the message not named is untouched
        assert client.message.get(keep).message_id == keep
        assert LogState.CANCELED not in [log.state for log in client.log.list(filter={"message_id": keep}).logs]
        # cancelling the same ids again cancels nothing
        assert client.message.cancel_many(ids) == 0
    finally:
        client.message.cancel(keep)


def test_cancel_many_counts_retrying_messages(client, receiver_factory, uid):
    from tern_harness import Reply

    failing = receiver_factory(Reply(status=404, body="gone"))
    ids = [
        client.message.publish(url=failing.url(f"/cm404/{uid}/{i}"), body=str(i), retries=3).message_id
        for i in range(2)
    ]
    # both are pending (in flight or waiting for their first retry, ~12 s away)
    assert client.message.cancel_many(ids) == 2
    for mid in ids:
        wait_canceled(client, mid)


def test_cancel_all(client, receiver, uid):
    ids = [
        client.message.publish(url=receiver.url(f"/ca/{uid}/{i}"), body=str(i), delay=3600).message_id
        for i in range(3)
    ]
    assert client.message.cancel_all() >= 3
    for mid in ids:
        wait_canceled(client, mid)
    assert client.message.cancel_all() == 0
