"""queue.upsert / get / list / delete / pause / resume and message.enqueue / enqueue_json
(spec §5.2, §5.5, §6.4, §12)."""

from __future__ import annotations

import asyncio
import time

import pytest
from qstash import AsyncQStash
from qstash.errors import QStashError
from qstash.log import LogState
from qstash.message import EnqueueResponse, EnqueueUrlGroupResponse

from tern_harness import USER1, Gauge, Reply, poll


def now_ms() -> int:
    return int(time.time() * 1000)


def log_states(client, message_id: str):
    return [log.state for log in client.log.list(filter={"message_id": message_id}).logs]


def queue_names(client):
    return [q.name for q in client.queue.list()]


def test_upsert_get_list_delete(client, uid):
    name = f"q-crud-{uid}"
    before = now_ms()
    client.queue.upsert(name, parallelism=2)
    try:
        q = client.queue.get(name)
        assert q.name == name
        assert q.parallelism == 2
        assert q.paused is False
        assert q.lag == 0
        assert before - 5_000 <= q.created_at <= now_ms() + 5_000
        assert q.updated_at >= q.created_at
        assert name in queue_names(client)
        listed = [x for x in client.queue.list() if x.name == name][0]
        assert listed == q

        # upsert again: an update, not a second queue; createdAt is kept
        client.queue.upsert(name, parallelism=3)
        updated = client.queue.get(name)
        assert updated.parallelism == 3
        assert updated.created_at == q.created_at
        assert updated.updated_at >= q.updated_at
        assert queue_names(client).count(name) == 1
    finally:
        client.queue.delete(name)

    assert name not in queue_names(client)
    with pytest.raises(QStashError) as exc:
        client.queue.get(name)
    assert "404" in str(exc.value)
    # deleting a queue that does not exist (any more) is not an error
    client.queue.delete(name)


def test_upsert_defaults_and_invalid_values(client, uid):
    name = f"q-defaults-{uid}"
    client.queue.upsert(name)
    try:
        q = client.queue.get(name)
        assert (q.parallelism, q.paused, q.lag) == (1, False, 0)
    finally:
        client.queue.delete(name)

    with pytest.raises(QStashError) as exc:
        client.queue.upsert(f"bad!name-{uid}")
    assert "400" in str(exc.value)
    with pytest.raises(QStashError) as exc:
        client.queue.upsert(f"q-zero-{uid}", parallelism=0)
    assert "400" in str(exc.value)
    # beyond the configured maximum parallelism: 412 (spec §5.5)
    with pytest.raises(QStashError) as exc:
        client.queue.upsert(f"q-huge-{uid}", parallelism=1_000_000)
    assert "412" in str(exc.value)
    assert f"q-huge-{uid}" not in queue_names(client)


def test_pause_and_resume(client, uid):
    name = f"q-pause-{uid}"
    client.queue.upsert(name)
    try:
        client.queue.pause(name)
        assert client.queue.get(name).paused is True
        client.queue.pause(name)  # idempotent
        assert client.queue.get(name).paused is True
        client.queue.resume(name)
        assert client.queue.get(name).paused is False
        client.queue.resume(name)  # idempotent
        assert client.queue.get(name).paused is False

        # upsert carries `paused` every time: paused=True pauses, a plain upsert resumes
        client.queue.upsert(name, paused=True)
        assert client.queue.get(name).paused is True
        client.queue.upsert(name, parallelism=2)
        q = client.queue.get(name)
        assert (q.paused, q.parallelism) == (False, 2)
    finally:
        client.queue.delete(name)


def test_enqueue_creates_the_queue_and_delivers(client, receiver, uid):
    name = f"q-auto-{uid}"
    assert name not in queue_names(client)
    res = client.message.enqueue(
        queue=name,
        url=receiver.url(f"/enqueue/{uid}"),
        body=f"hello {uid}",
        content_type="text/plain",
        method="PUT",
        headers={"X-Queued": "yes"},
        retries=1,
        label=f"lbl-{uid}",
    )
    try:
        assert isinstance(res, EnqueueResponse)
        assert res.message_id and res.deduplicated is False
        q = client.queue.get(name)
        assert (q.parallelism, q.paused) == (1, False)

        (req,) = receiver.wait_for_message(res.message_id)
        assert req.method == "PUT"
        assert req.text == f"hello {uid}"
        assert req.header("Content-Type") == "text/plain"
        assert req.header("X-Queued") == "yes"

        msg = client.message.get(res.message_id)
        assert msg.queue == name
        assert msg.url == receiver.url(f"/enqueue/{uid}")
        assert msg.max_retries == 1
        assert msg.label == f"lbl-{uid}"
        assert msg.url_group is None
        # Python's enqueue never sends flow control (spec §4.3)
        assert msg.flow_control is None

        logs = poll(
            lambda: [log for log in client.log.list(filter={"queue": name}).logs if log.state == LogState.DELIVERED],
            what="DELIVERED log entry filtered by queue",
        )
        assert [log.message_id for log in logs] == [res.message_id]
        assert all(log.queue == name for log in logs)
        poll(lambda: client.queue.get(name).lag == 0, what="lag back to 0")
    finally:
        client.queue.delete(name)


def test_enqueue_json_and_deduplication(client, receiver, uid):
    name = f"q-json-{uid}"
    url = receiver.url(f"/enqueue-json/{uid}")
    payload = {"uid": uid, "n": [1, 2]}
    first = client.message.enqueue_json(queue=name, url=url, body=payload, deduplication_id=f"dd-{uid}")
    second = client.message.enqueue_json(queue=name, url=url, body={"other": 1}, deduplication_id=f"dd-{uid}")
    try:
        assert isinstance(first, EnqueueResponse) and first.deduplicated is False
        assert second.deduplicated is True
        assert second.message_id == first.message_id
        (req,) = receiver.wait_for_message(first.message_id)
        assert req.header("Content-Type") == "application/json"
        assert req.json() == payload
        poll(lambda: LogState.DELIVERED in log_states(client, first.message_id), what="DELIVERED")
        assert len(receiver.received(f"/enqueue-json/{uid}")) == 1
    finally:
        client.queue.delete(name)


def test_enqueue_invalid_queue_name_is_rejected(client, receiver, uid):
    with pytest.raises(QStashError) as exc:
        client.message.enqueue(queue=f"bad!{uid}", url=receiver.url("/x"), body="x")
    assert "400" in str(exc.value)


def test_fifo_order_with_parallelism_one(client, receiver_factory, uid):
    gauge = Gauge(0.2)
    receiver = receiver_factory(gauge)
    name = f"q-fifo-{uid}"
    client.queue.upsert(name, parallelism=1)
    try:
        ids = [
            client.message.enqueue(queue=name, url=receiver.url(f"/fifo/{uid}"), body=str(i)).message_id
            for i in range(5)
        ]
        # everything not yet finished counts as lag (waiting and in flight)
        assert client.queue.get(name).lag >= 4
        reqs = receiver.wait_for(lambda r: r.path == f"/fifo/{uid}", count=5)
        assert [r.text for r in reqs] == ["0", "1", "2", "3", "4"]
        assert [r.header("Upstash-Message-Id") for r in reqs] == ids
        assert gauge.peak == 1, f"a parallelism-1 queue had {gauge.peak} deliveries in flight"
        gaps = [b.time - a.time for a, b in zip(reqs, reqs[1:])]
        assert all(g >= 0.18 for g in gaps), f"a delivery started before the previous one finished: {gaps}"
        poll(lambda: client.queue.get(name).lag == 0, what="lag back to 0")
        for mid in ids:
            assert client.message.get(mid).queue == name
    finally:
        client.queue.delete(name)


def test_parallelism_two_runs_two_at_a_time(client, receiver_factory, uid):
    gauge = Gauge(0.25)
    receiver = receiver_factory(gauge)
    name = f"q-par2-{uid}"
    client.queue.upsert(name, parallelism=2)
    try:
        for i in range(6):
            client.message.enqueue(queue=name, url=receiver.url(f"/par2/{uid}"), body=str(i))
        reqs = receiver.wait_for(lambda r: r.path == f"/par2/{uid}", count=6)
        assert gauge.peak == 2, f"peak concurrency {gauge.peak}, expected exactly 2"
        # FIFO: the queue starts messages in enqueue order (two at a time, so neighbours may swap)
        assert sorted(r.text for r in reqs[:2]) == ["0", "1"]
        assert all(abs(int(r.text) - i) <= 1 for i, r in enumerate(reqs)), [r.text for r in reqs]
        poll(lambda: client.queue.get(name).lag == 0, what="lag back to 0")
    finally:
        client.queue.delete(name)


def test_head_holds_the_queue_through_its_retries_and_callback(client, receiver_factory, uid):
    receiver = receiver_factory()
    receiver.on(f"/head/{uid}", lambda req: Reply(status=500 if req.header("Upstash-Retried") == "0" else 200))
    receiver.on(f"/head-cb/{uid}", Reply(delay=0.3))
    name = f"q-head-{uid}"
    head = client.message.enqueue(
        queue=name,
        url=receiver.url(f"/head/{uid}"),
        body="head",
        retries=1,
        retry_delay="300",
        callback=receiver.url(f"/head-cb/{uid}"),
    )
    nxt = client.message.enqueue(queue=name, url=receiver.url(f"/next/{uid}"), body="next")
    try:
        (req_next,) = receiver.wait_for_message(nxt.message_id)
        attempts = receiver.wait_for_message(head.message_id, count=2)
        assert [a.header("Upstash-Retried") for a in attempts] == ["0", "1"]
        callbacks = receiver.received(f"/head-cb/{uid}")
        assert len(callbacks) == 2, "a callback after each attempt of the head"
        # the next message starts only after the head's last attempt and its callback finished
        assert req_next.time >= attempts[1].time
        assert req_next.time >= callbacks[-1].time + 0.25
    finally:
        client.queue.delete(name)


def test_paused_queue_delivers_nothing_until_resumed(client, receiver, uid):
    name = f"q-paused-{uid}"
    client.queue.upsert(name, paused=True)
    try:
        ids = [
            client.message.enqueue(queue=name, url=receiver.url(f"/paused/{uid}"), body=str(i)).message_id
            for i in range(3)
        ]
        q = client.queue.get(name)
        assert q.paused is True
        assert q.lag == 3

        # a message outside the queue, published afterwards, is delivered: the dispatcher runs
        probe = client.message.publish(url=receiver.url(f"/probe/{uid}"), body="probe")
        receiver.wait_for_message(probe.message_id)
        poll(lambda: LogState.DELIVERED in log_states(client, probe.message_id), what="probe DELIVERED")
        assert receiver.received(f"/paused/{uid}") == []
        for mid in ids:
            assert log_states(client, mid) == [LogState.CREATED]
        assert client.queue.get(name).lag == 3

        client.queue.resume(name)
        reqs = receiver.wait_for(lambda r: r.path == f"/paused/{uid}", count=3)
        assert [r.text for r in reqs] == ["0", "1", "2"]
        poll(lambda: client.queue.get(name).lag == 0, what="lag back to 0")
    finally:
        client.queue.delete(name)


def test_pause_stops_a_running_queue_after_the_current_message(client, receiver_factory, uid):
    gauge = Gauge(0.5)
    receiver = receiver_factory(gauge)
    name = f"q-pause-mid-{uid}"
    client.queue.upsert(name)
    try:
        ids = [
            client.message.enqueue(queue=name, url=receiver.url(f"/mid/{uid}"), body=str(i)).message_id
            for i in range(3)
        ]
        receiver.wait_for_message(ids[0])
        client.queue.pause(name)
        # the running one finishes; nothing after it starts while paused
        poll(lambda: LogState.DELIVERED in log_states(client, ids[0]), what="first DELIVERED")
        probe = client.message.publish(url=receiver.url(f"/probe-mid/{uid}"), body="probe")
        receiver.wait_for_message(probe.message_id)
        assert [r.text for r in receiver.received(f"/mid/{uid}")] == ["0"]
        assert client.queue.get(name).lag == 2

        client.queue.resume(name)
        reqs = receiver.wait_for(lambda r: r.path == f"/mid/{uid}", count=3)
        assert [r.text for r in reqs] == ["0", "1", "2"]
    finally:
        client.queue.delete(name)


def test_delete_queue_cancels_its_waiting_messages(client, receiver, uid):
    name = f"q-del-{uid}"
    client.queue.upsert(name, paused=True)
    ids = [
        client.message.enqueue(queue=name, url=receiver.url(f"/del/{uid}"), body=str(i)).message_id
        for i in range(2)
    ]
    client.queue.delete(name)
    assert name not in queue_names(client)
    for mid in ids:
        poll(lambda mid=mid: LogState.CANCELED in log_states(client, mid), what=f"CANCELED for {mid}")
    assert client.message.cancel_many(ids) == 0
    assert receiver.received(f"/del/{uid}") == []


def test_enqueue_to_url_group(client, receiver, uid):
    group = f"ug-q-{uid}"
    name = f"q-ug-{uid}"
    urls = [receiver.url(f"/ugq/{uid}/a"), receiver.url(f"/ugq/{uid}/b")]
    client.url_group.upsert_endpoints(group, [{"url": urls[0], "name": "first"}, {"url": urls[1]}])
    try:
        res = client.message.enqueue_json(queue=name, url_group=group, body={"to": "group"})
        assert isinstance(res, list) and len(res) == 2
        assert all(isinstance(r, EnqueueUrlGroupResponse) for r in res)
        assert [r.url for r in res] == urls
        assert len({r.message_id for r in res}) == 2
        for r in res:
            (req,) = receiver.wait_for_message(r.message_id)
            assert req.path == r.url[len(receiver.base) :]
            assert req.header("Upstash-Topic-Name") == group
            assert req.json() == {"to": "group"}
            msg = client.message.get(r.message_id)
            assert (msg.queue, msg.url_group, msg.url) == (name, group, r.url)
        assert client.message.get(res[0].message_id).endpoint == "first"
        assert client.message.get(res[1].message_id).endpoint is None
    finally:
        client.queue.delete(name)
        client.url_group.delete(group)


def test_async_client_queue_calls(tern, receiver, uid):
    name = f"q-async-{uid}"

    async def run():
        aclient = AsyncQStash(USER1["token"], base_url=tern.url, retry=False)
        await aclient.queue.upsert(name, parallelism=2, paused=True)
        got = await aclient.queue.get(name)
        listed = [q.name for q in await aclient.queue.list()]
        res = await aclient.message.enqueue_json(queue=name, url=receiver.url(f"/async-q/{uid}"), body={"a": 1})
        lag = (await aclient.queue.get(name)).lag
        await aclient.queue.resume(name)
        await asyncio.get_running_loop().run_in_executor(None, lambda: receiver.wait_for_message(res.message_id))
        await aclient.queue.pause(name)
        paused = (await aclient.queue.get(name)).paused
        await aclient.queue.delete(name)
        remaining = [q.name for q in await aclient.queue.list()]
        return got, listed, lag, paused, remaining

    got, listed, lag, paused, remaining = asyncio.run(run())
    assert (got.name, got.parallelism, got.paused) == (name, 2, True)
    assert name in listed
    assert lag == 1
    assert paused is True
    assert name not in remaining
