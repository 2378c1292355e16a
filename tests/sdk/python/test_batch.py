"""message.batch / batch_json to URLs, URL groups (nested lists) and queues (spec §5.3, §12, §15)."""

from __future__ import annotations

import pytest
from qstash.errors import QStashError
from qstash.message import BatchResponse, BatchUrlGroupResponse

from tern_harness import Gauge, poll


def test_batch_mixes_urls_groups_and_queues(client, receiver, uid):
    group = f"ug-batch-{uid}"
    queue = f"q-batch-{uid}"
    g1, g2 = receiver.url(f"/bg/{uid}/1"), receiver.url(f"/bg/{uid}/2")
    client.url_group.upsert_endpoints(group, [{"url": g1, "name": "g-one"}, {"url": g2}])
    try:
        res = client.message.batch(
            [
                {"url": receiver.url(f"/bu/{uid}?k=v"), "body": "to-url", "content_type": "text/plain"},
                # Python prefixes every `headers` key: this arrives as Upstash-Forward-content-type
                {"url": receiver.url(f"/bh/{uid}"), "body": "<x/>", "headers": {"content-type": "application/xml"}},
                {"url_group": group, "body": "to-group", "headers": {"X-Item": "group"}},
                {"queue": queue, "url": receiver.url(f"/bq/{uid}"), "body": "to-queue", "method": "PUT"},
                {"queue": queue, "url_group": group, "body": "group-in-queue"},
            ]
        )
        assert len(res) == 5
        to_url, with_header, to_group, to_queue, group_in_queue = res
        (req,) = receiver.wait_for_message(with_header.message_id)
        assert req.header("Content-Type") == "application/xml"
        assert isinstance(to_url, BatchResponse) and to_url.deduplicated is False
        assert isinstance(to_queue, BatchResponse)
        for nested in (to_group, group_in_queue):
            assert isinstance(nested, list) and len(nested) == 2
            assert all(isinstance(r, BatchUrlGroupResponse) for r in nested)
            assert [r.url for r in nested] == [g1, g2]
        ids = [to_url.message_id, to_queue.message_id] + [r.message_id for r in to_group + group_in_queue]
        assert len(set(ids)) == 6

        (req,) = receiver.wait_for_message(to_url.message_id)
        assert req.path == f"/bu/{uid}?k=v"
        assert req.text == "to-url"
        assert req.header("Content-Type") == "text/plain"
        assert req.header("Upstash-Topic-Name") is None

        for r in to_group:
            (req,) = receiver.wait_for_message(r.message_id)
            assert receiver.base + req.path == r.url
            assert req.text == "to-group"
            assert req.header("X-Item") == "group"
            assert req.header("Upstash-Topic-Name") == group

        (req,) = receiver.wait_for_message(to_queue.message_id)
        assert (req.method, req.text) == ("PUT", "to-queue")
        for r in group_in_queue:
            (req,) = receiver.wait_for_message(r.message_id)
            assert req.header("Upstash-Topic-Name") == group

        assert client.message.get(to_url.message_id).queue is None
        assert client.message.get(to_queue.message_id).queue == queue
        for r in to_group:
            m = client.message.get(r.message_id)
            assert (m.url_group, m.queue) == (group, None)
        for r in group_in_queue:
            m = client.message.get(r.message_id)
            assert (m.url_group, m.queue, m.url) == (group, queue, r.url)
        assert client.message.get(group_in_queue[0].message_id).endpoint == "g-one"
        # the batch created the queue
        assert client.queue.get(queue).parallelism == 1
    finally:
        client.queue.delete(queue)
        client.url_group.delete(group)


def test_batch_json_to_group_and_queue(client, receiver, uid):
    group = f"ug-bj-{uid}"
    queue = f"q-bj-{uid}"
    client.url_group.upsert_endpoints(group, [{"url": receiver.url(f"/bj/{uid}/a")}, {"url": receiver.url(f"/bj/{uid}/b")}])
    try:
        res = client.message.batch_json(
            [
                {"url_group": group, "body": {"to": "group"}},
                {"queue": queue, "url": receiver.url(f"/bjq/{uid}"), "body": {"to": "queue"}, "retries": 0},
            ]
        )
        nested, queued = res
        assert [r.url for r in nested] == [receiver.url(f"/bj/{uid}/a"), receiver.url(f"/bj/{uid}/b")]
        for r in nested:
            (req,) = receiver.wait_for_message(r.message_id)
            assert req.json() == {"to": "group"}
            assert req.header("Content-Type") == "application/json"
        (req,) = receiver.wait_for_message(queued.message_id)
        assert req.json() == {"to": "queue"}
        msg = client.message.get(queued.message_id)
        assert (msg.queue, msg.max_retries) == (queue, 0)
    finally:
        client.queue.delete(queue)
        client.url_group.delete(group)


def test_batch_items_of_one_queue_keep_fifo_order(client, receiver_factory, uid):
    gauge = Gauge(0.15)
    receiver = receiver_factory(gauge)
    queue = f"q-bfifo-{uid}"
    try:
        res = client.message.batch([{"queue": queue, "url": receiver.url(f"/bf/{uid}"), "body": str(i)} for i in range(4)])
        reqs = receiver.wait_for(lambda r: r.path == f"/bf/{uid}", count=4)
        assert [r.text for r in reqs] == ["0", "1", "2", "3"]
        assert [r.header("Upstash-Message-Id") for r in reqs] == [r.message_id for r in res]
        assert gauge.peak == 1
    finally:
        client.queue.delete(queue)


def test_batch_with_one_bad_item_stores_nothing(client, receiver, uid):
    url = receiver.url(f"/bbad/{uid}")
    with pytest.raises(QStashError) as exc:
        client.message.batch(
            [
                {"url": url, "body": "would be fine"},
                {"url_group": f"ug-missing-{uid}", "body": "unknown group"},
            ]
        )
    assert "404" in str(exc.value)
    with pytest.raises(QStashError) as exc:
        client.message.batch([{"url": url, "body": "fine"}, {"url": url, "body": "bad", "delay": "soon"}])
    assert "400" in str(exc.value)
    with pytest.raises(QStashError) as exc:
        client.message.batch([{"url": url, "body": "fine"}, {"queue": f"bad!{uid}", "url": url, "body": "bad"}])
    assert "400" in str(exc.value)
    # nothing was created for the valid first items
    assert client.log.list(filter={"url": url}).logs == []
    assert receiver.received(f"/bbad/{uid}") == []


def test_batch_deduplication_per_item(client, receiver, uid):
    url = receiver.url(f"/bdd/{uid}")
    first = client.message.batch([{"url": url, "body": "a", "deduplication_id": f"bdd-{uid}"}])
    second = client.message.batch(
        [
            {"url": url, "body": "b", "deduplication_id": f"bdd-{uid}"},
            {"url": url, "body": "c"},
        ]
    )
    assert first[0].deduplicated is False
    assert second[0].deduplicated is True
    assert second[0].message_id == first[0].message_id
    assert second[1].deduplicated is False
    receiver.wait_for_message(first[0].message_id)
    receiver.wait_for_message(second[1].message_id)
    poll(lambda: len(client.log.list(filter={"url": url}).logs) >= 6, what="CREATED/ACTIVE/DELIVERED for both")
    assert sorted(r.text for r in receiver.received(f"/bdd/{uid}")) == ["a", "c"]
