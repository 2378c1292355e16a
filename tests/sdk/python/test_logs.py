"""log.list with filters and cursor pagination (spec §5.9, §6.6, §17)."""

from __future__ import annotations

import base64
import time

from qstash.log import LogState

from tern_harness import Reply, poll

S = LogState


def now_ms() -> int:
    return int(time.time() * 1000)


def logs_for(client, message_id):
    return client.log.list(filter={"message_id": message_id}).logs


def wait_states(client, message_id, terminal):
    return poll(
        lambda: (logs := logs_for(client, message_id)) and terminal in [l.state for l in logs] and logs,
        what=f"{terminal} for {message_id}",
    )


def test_delivered_lifecycle(client, receiver, uid):
    url = receiver.url(f"/life/{uid}")
    res = client.message.publish(url=url, body=f"life-{uid}", headers={"X-Life": "1"})
    logs = wait_states(client, res.message_id, S.DELIVERED)
    assert sorted(l.state.value for l in logs) == ["ACTIVE", "CREATED", "DELIVERED"]
    times = [l.time for l in logs]
    assert times == sorted(times, reverse=True), "default order is latestFirst"
    assert logs[0].state == S.DELIVERED
    for l in logs:
        assert l.message_id == res.message_id
        assert l.url == url
    created = next(l for l in logs if l.state == S.CREATED)
    assert created.next_delivery_time
    assert base64.b64decode(created.body_base64) == f"life-{uid}".encode()
    assert created.headers["X-Life"] == ["1"]
    assert created.method == "POST"
    assert created.max_retries == 3


def test_failed_lifecycle_has_exactly_four_entries(client, receiver_factory, uid):
    receiver = receiver_factory(Reply(status=500, body="bad"))
    res = client.message.publish(url=receiver.url(f"/fail/{uid}"), body="f", retries=0)
    logs = wait_states(client, res.message_id, S.FAILED)
    assert sorted(l.state.value for l in logs) == ["ACTIVE", "CREATED", "ERROR", "FAILED"]
    error = next(l for l in logs if l.state == S.ERROR)
    assert error.response_status == 500
    assert error.error
    assert error.response_body is not None
    assert base64.b64decode(error.response_body) == b"bad"
    for entry in client.dlq.list(filter={"message_id": res.message_id}).messages:
        client.dlq.delete(entry.dlq_id)


def test_filter_by_state_label_url_and_ids(client, receiver, uid):
    label = f"logf-{uid}"
    url_a = receiver.url(f"/logf/{uid}/a")
    url_b = receiver.url(f"/logf/{uid}/b")
    a = client.message.publish(url=url_a, body="a", label=label).message_id
    b = client.message.publish(url=url_b, body="b", label=label).message_id
    c = client.message.publish(url=url_b, body="c").message_id  # no label
    for mid in (a, b, c):
        wait_states(client, mid, S.DELIVERED)

    by_label = client.log.list(filter={"label": label}).logs
    assert {l.message_id for l in by_label} == {a, b}
    assert all(l.label == label for l in by_label)
    assert len(by_label) == 6

    delivered = client.log.list(filter={"label": label, "state": S.DELIVERED}).logs
    assert sorted(l.message_id for l in delivered) == sorted([a, b])
    assert all(l.state == S.DELIVERED for l in delivered)

    created_only = client.log.list(filter={"message_id": a, "state": S.CREATED}).logs
    assert [l.state for l in created_only] == [S.CREATED]

    by_url = client.log.list(filter={"url": url_b}).logs
    assert {l.message_id for l in by_url} == {b, c}
    assert all(l.url == url_b for l in by_url)

    by_ids = client.log.list(filter={"message_ids": [a, c]}).logs
    assert {l.message_id for l in by_ids} == {a, c}

    assert client.log.list(filter={"label": f"none-{uid}"}).logs == []


def test_filter_by_time_range(client, receiver, uid):
    label = f"logt-{uid}"
    start = now_ms()
    mid = client.message.publish(url=receiver.url(f"/logt/{uid}"), body="t", label=label).message_id
    wait_states(client, mid, S.DELIVERED)
    end = now_ms()
    inside = client.log.list(filter={"label": label, "from_time": start - 1000, "to_time": end + 1000}).logs
    assert len(inside) == 3
    assert client.log.list(filter={"label": label, "to_time": start - 60_000}).logs == []
    assert client.log.list(filter={"label": label, "from_time": end + 60_000}).logs == []


def test_cursor_pagination(client, receiver, uid):
    label = f"logp-{uid}"
    mids = [client.message.publish(url=receiver.url(f"/logp/{uid}/{i}"), body=str(i), label=label).message_id for i in range(2)]
    for mid in mids:
        wait_states(client, mid, S.DELIVERED)

    pages = []
    cursor = None
    for _ in range(10):
        page = client.log.list(count=2, cursor=cursor, filter={"label": label})
        pages.append(page.logs)
        assert len(page.logs) <= 2
        cursor = page.cursor
        if cursor is None:
            break
    assert cursor is None, "cursor must be absent on the last page"
    entries = [l for p in pages for l in p]
    keys = [(l.message_id, l.state, l.time) for l in entries]
    assert len(keys) == len(set(keys)) == 6, f"pages overlap or miss entries: {keys}"
    assert {l.message_id for l in entries} == set(mids)
    times = [l.time for l in entries]
    assert times == sorted(times, reverse=True)


def test_retry_delay_expression_round_trips(client, receiver, uid):
    expr = "pow(2, retried) * 1000"
    mid = client.message.publish(url=receiver.url(f"/logexpr/{uid}"), body="e", retry_delay=expr).message_id
    logs = wait_states(client, mid, S.DELIVERED)
    assert {l.retry_delay_expression for l in logs} == {expr}


def test_timeout_is_reported_in_milliseconds(client, receiver, uid):
    mid = client.message.publish(url=receiver.url(f"/logto/{uid}"), body="t", timeout="7s").message_id
    logs = wait_states(client, mid, S.DELIVERED)
    created = next(l for l in logs if l.state == S.CREATED)
    assert created.timeout == 7000
