"""message.publish / publish_json / batch and their options (spec §4, §5.1, §7, §9, §10, §16, §23)."""

from __future__ import annotations

import base64
import json
import time

import pytest
from qstash import QStash, Receiver
from qstash.log import LogState

from tern_harness import USER1, Reply, poll


def now_ms() -> int:
    return int(time.time() * 1000)


def log_states(client: QStash, message_id: str):
    return [log.state for log in client.log.list(filter={"message_id": message_id}).logs]


def test_publish_delivers_body_and_standard_headers(client, receiver, uid):
    url = receiver.url(f"/basic/{uid}")
    res = client.message.publish(url=url, body=f"hello {uid}", content_type="text/plain")
    assert res.message_id
    assert res.deduplicated is False

    (req,) = receiver.wait_for_message(res.message_id)
    assert req.method == "POST"
    assert req.path == f"/basic/{uid}"
    assert req.text == f"hello {uid}"
    assert req.header("Content-Type") == "text/plain"
    assert req.header("Upstash-Message-Id") == res.message_id
    assert req.header("Upstash-Retried") == "0"
    assert req.header("User-Agent") == "Upstash-QStash"
    assert req.header("Upstash-Signature")
    assert req.header("Upstash-Caller-Ip")
    # the QStash token is never forwarded, nor are the SDK's Upstash-* config headers
    assert req.header("Authorization") is None
    assert not [k for k, _ in req.headers if k.lower().startswith("upstash-forward-")]


def test_publish_json_sends_json_body(client, receiver, uid):
    payload = {"hello": "world", "uid": uid, "n": [1, 2, 3]}
    res = client.message.publish_json(url=receiver.url(f"/json/{uid}"), body=payload)
    (req,) = receiver.wait_for_message(res.message_id)
    assert req.header("Content-Type") == "application/json"
    assert req.json() == payload


def test_publish_json_without_body_sends_null(client, receiver, uid):
    res = client.message.publish_json(url=receiver.url(f"/json-null/{uid}"))
    (req,) = receiver.wait_for_message(res.message_id)
    assert req.text == "null"


@pytest.mark.parametrize("method", ["PUT", "PATCH", "DELETE", "GET"])
def test_publish_method(client, receiver, uid, method):
    res = client.message.publish(url=receiver.url(f"/method/{uid}"), body="m", method=method)
    (req,) = receiver.wait_for_message(res.message_id)
    assert req.method == method


def test_destination_query_string_is_kept(client, receiver, uid):
    url = receiver.url(f"/query/{uid}?a=1&b=two&c=%2Fx")
    res = client.message.publish(url=url, body="q", delay=3600)
    try:
        assert client.message.get(res.message_id).url == url
    finally:
        client.message.cancel(res.message_id)

    res = client.message.publish(url=url, body="q")
    (req,) = receiver.wait_for_message(res.message_id)
    assert req.path == f"/query/{uid}?a=1&b=two&c=%2Fx"


def test_headers_are_forwarded_with_prefix_stripped(client, receiver, uid):
    res = client.message.publish(
        url=receiver.url(f"/fwd/{uid}"),
        body="h",
        headers={"X-Custom-Header": f"v-{uid}", "test-header": "test-value", "X-List": "a, b"},
    )
    (req,) = receiver.wait_for_message(res.message_id)
    assert req.header("X-Custom-Header") == f"v-{uid}"
    assert req.header("Test-Header") == "test-value"
    assert req.header("X-List") == "a, b"


def test_message_header_map_uses_canonical_names(client, receiver, uid):
    # Spec §0.2: Go-style canonical names, one array element per header line, no comma split.
    res = client.message.publish(
        url=receiver.url(f"/canon/{uid}"),
        body="h",
        headers={"test-header": "test-value", "x-list": "a, b"},
        delay=3600,
    )
    try:
        msg = client.message.get(res.message_id)
        assert msg.headers == {"Test-Header": ["test-value"], "X-List": ["a, b"]}
    finally:
        client.message.cancel(res.message_id)


def test_delay_sets_not_before_and_postpones_delivery(client, receiver, uid):
    res = client.message.publish(url=receiver.url(f"/delay-long/{uid}"), body="d", delay=3600)
    try:
        msg = client.message.get(res.message_id)
        assert abs(msg.not_before - (msg.created_at + 3_600_000)) <= 2_000
    finally:
        client.message.cancel(res.message_id)

    res = client.message.publish(url=receiver.url(f"/delay-short/{uid}"), body="d", delay="2s")
    msg = client.message.get(res.message_id)
    assert abs(msg.not_before - (msg.created_at + 2_000)) <= 1_000
    (req,) = receiver.wait_for_message(res.message_id)
    assert req.time * 1000 >= msg.created_at + 2_000 - 250, "delivered before its delay elapsed"


def test_not_before(client, receiver, uid):
    not_before = int(time.time()) + 3600
    res = client.message.publish(url=receiver.url(f"/nb/{uid}"), body="nb", not_before=not_before)
    try:
        msg = client.message.get(res.message_id)
        assert msg.not_before == not_before * 1000
    finally:
        client.message.cancel(res.message_id)

    # a past not-before means "deliver now"
    res = client.message.publish(url=receiver.url(f"/nb-past/{uid}"), body="nb", not_before=int(time.time()) - 60)
    receiver.wait_for_message(res.message_id)


def test_not_before_wins_over_delay(client, receiver, uid):
    not_before = int(time.time()) + 7200
    res = client.message.publish(url=receiver.url(f"/nbd/{uid}"), body="x", delay=10, not_before=not_before)
    try:
        assert client.message.get(res.message_id).not_before == not_before * 1000
    finally:
        client.message.cancel(res.message_id)


def test_retries_with_retry_delay_expression(client, receiver_factory, uid):
    receiver = receiver_factory(Reply(status=500, body="nope"))
    res = client.message.publish(
        url=receiver.url(f"/retry/{uid}"),
        body="r",
        retries=2,
        retry_delay="1000",
    )
    msg = client.message.get(res.message_id)
    assert msg.max_retries == 2
    assert msg.retry_delay_expression == "1000"

    attempts = receiver.wait_for_message(res.message_id, count=3)
    assert [a.header("Upstash-Retried") for a in attempts] == ["0", "1", "2"]
    gaps = [b.time - a.time for a, b in zip(attempts, attempts[1:])]
    assert all(g >= 0.8 for g in gaps), f"retry delay expression not honoured: gaps={gaps}"
    assert all(g < 10 for g in gaps), f"default backoff used instead of the expression: gaps={gaps}"

    entries = poll(lambda: client.dlq.list(filter={"message_id": res.message_id}).messages, what="DLQ entry")
    assert entries[0].max_retries == 2
    assert entries[0].retry_delay_expression == "1000"
    states = poll(
        lambda: (s := log_states(client, res.message_id)) and LogState.FAILED in s and s,
        what="FAILED log entry",
    )
    assert states.count(LogState.RETRY) == 2
    assert states.count(LogState.ERROR) == 3
    client.dlq.delete(entries[0].dlq_id)


def test_timeout_fails_slow_destination(client, receiver_factory, uid):
    receiver = receiver_factory(Reply(status=200, body="late", delay=6))
    started = time.monotonic()
    res = client.message.publish(url=receiver.url(f"/slow/{uid}"), body="t", timeout=1, retries=0)
    entries = poll(
        lambda: client.dlq.list(filter={"message_id": res.message_id}).messages,
        what="DLQ entry after timeout",
        timeout=15,
    )
    assert time.monotonic() - started < 5.5, "Upstash-Timeout was not applied"
    # spec §6.2: responseStatus is 0 when no HTTP response was received
    assert entries[0].response_status == 0
    client.dlq.delete(entries[0].dlq_id)


def test_callback_and_failure_callback(client, receiver, uid):
    receiver.on(f"/dest/{uid}", Reply(status=500, body="dest failed"))
    dest = receiver.url(f"/dest/{uid}")
    cb = receiver.url(f"/cb/{uid}")
    fcb = receiver.url(f"/fcb/{uid}")
    res = client.message.publish(
        url=dest,
        body="cb-body",
        retries=0,
        callback=cb,
        failure_callback=fcb,
        callback_headers={"Forward-X-Cb": "cb-value"},
        failure_callback_headers={"Forward-X-Fcb": "fcb-value"},
    )
    (cb_req,) = receiver.wait_for(lambda r: r.path == f"/cb/{uid}")
    (fcb_req,) = receiver.wait_for(lambda r: r.path == f"/fcb/{uid}")

    keys = Receiver(USER1["current"], USER1["next"])
    for req, url in ((cb_req, cb), (fcb_req, fcb)):
        assert req.method == "POST"
        assert req.header("Content-Type").startswith("application/json")
        assert req.header("Upstash-Message-Id") and req.header("Upstash-Message-Id") != res.message_id
        keys.verify(signature=req.header("Upstash-Signature"), body=req.text, url=url)
        body = req.json()
        assert body["status"] == 500
        assert base64.b64decode(body["body"]) == b"dest failed"
        assert body["sourceMessageId"] == res.message_id
        assert body["url"] == dest
        assert body["method"] == "POST"
        assert body["retried"] == 0
        assert body["maxRetries"] == 0
        assert base64.b64decode(body["sourceBody"]) == b"cb-body"
    assert cb_req.header("X-Cb") == "cb-value"
    assert fcb_req.header("X-Fcb") == "fcb-value"
    fcb_body = fcb_req.json()
    assert fcb_body["dlqId"]
    assert "dlqId" not in cb_req.json()
    client.dlq.delete(fcb_body["dlqId"])


def test_callback_on_success(client, receiver, uid):
    receiver.on(f"/ok/{uid}", Reply(status=200, body="all good"))
    dest = receiver.url(f"/ok/{uid}")
    res = client.message.publish(url=dest, body="x", callback=receiver.url(f"/cb-ok/{uid}"))
    (cb_req,) = receiver.wait_for(lambda r: r.path == f"/cb-ok/{uid}")
    body = cb_req.json()
    assert body["status"] == 200
    assert base64.b64decode(body["body"]) == b"all good"
    assert body["sourceMessageId"] == res.message_id
    assert body["retried"] == 0


def test_deduplication_id(client, receiver, uid):
    url = receiver.url(f"/dedup/{uid}")
    first = client.message.publish(url=url, body="a", deduplication_id=f"dd-{uid}")
    second = client.message.publish(url=url, body="b", deduplication_id=f"dd-{uid}")
    assert first.deduplicated is False
    assert second.deduplicated is True
    assert second.message_id == first.message_id
    (req,) = receiver.wait_for_message(first.message_id)
    assert req.text == "a"
    time.sleep(0.5)  # settle: a duplicate must never produce a second delivery
    assert len(receiver.received(f"/dedup/{uid}")) == 1


def test_content_based_deduplication(client, receiver, uid):
    url = receiver.url(f"/cbd/{uid}")
    first = client.message.publish(url=url, body=f"same-{uid}", content_based_deduplication=True)
    second = client.message.publish(url=url, body=f"same-{uid}", content_based_deduplication=True)
    other = client.message.publish(url=url, body=f"other-{uid}", content_based_deduplication=True)
    assert first.deduplicated is False
    assert second.deduplicated is True
    assert second.message_id == first.message_id
    assert other.deduplicated is False
    assert other.message_id != first.message_id
    receiver.wait_for(lambda r: r.path == f"/cbd/{uid}", count=2)


def test_content_based_deduplication_json(client, receiver, uid):
    url = receiver.url(f"/cbdj/{uid}")
    a = client.message.publish_json(url=url, body={"k": uid}, content_based_deduplication=True)
    b = client.message.publish_json(url=url, body={"k": uid}, content_based_deduplication=True)
    assert b.deduplicated is True and b.message_id == a.message_id


def test_label(client, receiver, uid):
    label = f"label-{uid}"
    res = client.message.publish(url=receiver.url(f"/label/{uid}"), body="l", label=label, delay=3600)
    try:
        assert client.message.get(res.message_id).label == label
    finally:
        client.message.cancel(res.message_id)

    res = client.message.publish(url=receiver.url(f"/label/{uid}"), body="l", label=label)
    receiver.wait_for_message(res.message_id)
    logs = poll(
        lambda: [log for log in client.log.list(filter={"label": label}).logs if log.message_id == res.message_id],
        what="labelled log entries",
    )
    assert all(log.label == label for log in logs)


def test_redact_body_and_one_header(client, receiver, uid):
    secret = f"secret-body-{uid}"
    kwargs = dict(
        body=secret,
        headers={"Authorization": f"Bearer user-secret-{uid}", "X-Visible": "yes"},
        redact={"body": True, "header": ["Authorization"]},
    )
    res = client.message.publish(url=receiver.url(f"/redact/{uid}"), delay=3600, **kwargs)
    try:
        msg = client.message.get(res.message_id)
        assert msg.body != secret and msg.body.startswith("REDACTED:")
        assert msg.headers["Authorization"][0].startswith("REDACTED:")
        assert msg.headers["X-Visible"] == ["yes"]
    finally:
        client.message.cancel(res.message_id)

    # delivery always uses the original values
    res = client.message.publish(url=receiver.url(f"/redact/{uid}"), **kwargs)
    (req,) = receiver.wait_for_message(res.message_id)
    assert req.text == secret
    assert req.header("Authorization") == f"Bearer user-secret-{uid}"
    assert req.header("X-Visible") == "yes"

    logs = poll(
        lambda: [log for log in client.log.list(filter={"message_id": res.message_id}).logs if log.body_base64],
        what="log entries with a body",
    )
    for log in logs:
        assert base64.b64decode(log.body_base64).decode().startswith("REDACTED:")
        if log.headers and "Authorization" in log.headers:
            assert log.headers["Authorization"][0].startswith("REDACTED:")


def test_redact_all_headers(client, receiver, uid):
    res = client.message.publish(
        url=receiver.url(f"/redact-all/{uid}"),
        body="visible body",
        headers={"X-One": "1", "X-Two": "2"},
        redact={"header": True},
        delay=3600,
    )
    try:
        msg = client.message.get(res.message_id)
        assert msg.body == "visible body"
        assert msg.headers["X-One"][0].startswith("REDACTED:")
        assert msg.headers["X-Two"][0].startswith("REDACTED:")
    finally:
        client.message.cancel(res.message_id)


def test_batch_json(client, receiver, uid):
    res = client.message.batch_json(
        [
            {"url": receiver.url(f"/batch/{uid}/1"), "body": {"n": 1}},
            {"url": receiver.url(f"/batch/{uid}/2"), "body": {"n": 2}, "headers": {"X-Batch": "2"}},
        ]
    )
    assert len(res) == 2
    ids = [r.message_id for r in res]
    assert len(set(ids)) == 2
    (r1,) = receiver.wait_for_message(ids[0])
    (r2,) = receiver.wait_for_message(ids[1])
    assert r1.json() == {"n": 1} and r1.path == f"/batch/{uid}/1"
    assert r2.json() == {"n": 2} and r2.header("X-Batch") == "2"


def test_async_client_publish_and_get(tern, receiver, uid):
    import asyncio

    from qstash import AsyncQStash

    async def run():
        aclient = AsyncQStash(USER1["token"], base_url=tern.url, retry=False)
        res = await aclient.message.publish_json(url=receiver.url(f"/async/{uid}"), body={"a": uid}, delay=3600)
        msg = await aclient.message.get(res.message_id)
        await aclient.message.cancel(res.message_id)
        keys = await aclient.signing_key.get()
        return res, msg, keys

    res, msg, keys = asyncio.run(run())
    assert msg.message_id == res.message_id
    assert json.loads(msg.body) == {"a": uid}
    assert keys.current == USER1["current"]
