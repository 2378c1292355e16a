"""dlq.list / get / delete / delete_many (spec §5.8, §6.2, §11)."""

from __future__ import annotations

import pytest
from qstash.errors import QStashError

from tern_harness import Reply, poll


def publish_failing(client, receiver, path, body="payload", **kwargs):
    return client.message.publish(url=receiver.url(path), body=body, retries=0, **kwargs).message_id


def wait_dlq(client, message_id):
    entries = poll(
        lambda: client.dlq.list(filter={"message_id": message_id}).messages,
        what=f"DLQ entry for {message_id}",
    )
    assert len(entries) == 1
    return entries[0]


def test_failed_message_lands_in_dlq_with_response(client, receiver_factory, uid):
    receiver = receiver_factory(Reply(status=500, body=f"internal boom {uid}"))
    url = receiver.url(f"/dlq500/{uid}")
    mid = publish_failing(client, receiver, f"/dlq500/{uid}", body=f"body-{uid}", headers={"X-Dlq": "1"}, label=f"l-{uid}")
    entry = wait_dlq(client, mid)
    assert entry.message_id == mid
    assert entry.dlq_id
    assert entry.url == url
    assert entry.method == "POST"
    assert entry.body == f"body-{uid}"
    assert entry.headers["X-Dlq"] == ["1"]
    assert entry.max_retries == 0
    assert entry.response_status == 500
    assert entry.response_body == f"internal boom {uid}"
    assert entry.label == f"l-{uid}"
    assert entry.created_at > 0 and entry.not_before > 0

    # the same entry is on the unfiltered first page
    listed = client.dlq.list().messages
    assert mid in [m.message_id for m in listed]

    got = client.dlq.get(entry.dlq_id)
    assert got.dlq_id == entry.dlq_id
    assert got.message_id == mid
    assert got.url == url
    assert got.response_status == 500
    assert got.response_body == f"internal boom {uid}"
    assert got.body == f"body-{uid}"

    client.dlq.delete(entry.dlq_id)


def test_404_response_body_is_literal_text(client, receiver_factory, uid):
    receiver = receiver_factory(Reply(status=404, body="404 Not Found"))
    mid = publish_failing(client, receiver, f"/dlq404/{uid}")
    entry = wait_dlq(client, mid)
    assert entry.response_status == 404
    assert entry.response_body == "404 Not Found"
    assert entry.response_body_base64 is None
    assert client.dlq.get(entry.dlq_id).response_body == "404 Not Found"
    client.dlq.delete(entry.dlq_id)


def test_delete_removes_entry_and_second_delete_fails(client, receiver_factory, uid):
    receiver = receiver_factory(Reply(status=500, body="x"))
    mid = publish_failing(client, receiver, f"/dlqdel/{uid}")
    entry = wait_dlq(client, mid)
    client.dlq.delete(entry.dlq_id)
    assert client.dlq.list(filter={"message_id": mid}).messages == []
    with pytest.raises(QStashError):
        client.dlq.get(entry.dlq_id)
    with pytest.raises(QStashError):
        client.dlq.delete(entry.dlq_id)


def test_delete_many(client, receiver_factory, uid):
    receiver = receiver_factory(Reply(status=500, body="x"))
    mids = [publish_failing(client, receiver, f"/dlqmany/{uid}/{i}") for i in range(2)]
    dlq_ids = [wait_dlq(client, mid).dlq_id for mid in mids]
    # unknown ids are skipped
    assert client.dlq.delete_many(dlq_ids + ["1-0"]) == 2
    for mid in mids:
        assert client.dlq.list(filter={"message_id": mid}).messages == []


def test_list_filters(client, receiver_factory, uid):
    r500 = receiver_factory(Reply(status=500, body="a"))
    r404 = receiver_factory(Reply(status=404, body="b"))
    label = f"dlqf-{uid}"
    m500 = publish_failing(client, r500, f"/f500/{uid}", label=label)
    m404 = publish_failing(client, r404, f"/f404/{uid}", label=label)
    e500, e404 = wait_dlq(client, m500), wait_dlq(client, m404)
    try:
        by_label = client.dlq.list(filter={"label": label}).messages
        assert sorted(m.message_id for m in by_label) == sorted([m500, m404])

        by_url = client.dlq.list(filter={"url": r404.url(f"/f404/{uid}")}).messages
        assert [m.message_id for m in by_url] == [m404]

        by_status = client.dlq.list(filter={"label": label, "response_status": 500}).messages
        assert [m.message_id for m in by_status] == [m500]

        assert client.dlq.list(filter={"label": f"nothing-{uid}"}).messages == []
    finally:
        client.dlq.delete_many([e500.dlq_id, e404.dlq_id])


def test_list_pagination(client, receiver_factory, uid):
    receiver = receiver_factory(Reply(status=500, body="x"))
    label = f"dlqpage-{uid}"
    mids = [publish_failing(client, receiver, f"/page/{uid}/{i}", label=label) for i in range(3)]
    poll(
        lambda: len(client.dlq.list(filter={"label": label}).messages) == 3,
        what="3 DLQ entries",
    )
    first = client.dlq.list(count=2, filter={"label": label})
    assert len(first.messages) == 2
    assert first.cursor  # more to come
    second = client.dlq.list(count=2, cursor=first.cursor, filter={"label": label})
    assert len(second.messages) == 1
    assert second.cursor is None  # absent on the last page
    seen = [m.message_id for m in first.messages + second.messages]
    assert sorted(seen) == sorted(mids)
    client.dlq.delete_many([m.dlq_id for m in first.messages + second.messages])
