"""flow_control.get / pause / resume / pin / unpin / reset_rate / get_global_parallelism and
flow control on publish and batch (spec §4.2, §5.10, §6.1, §6.7, §13)."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from qstash import AsyncQStash
from qstash.errors import QStashError
from qstash.flow_control_api import FlowControlInfo, GlobalParallelismInfo
from qstash.log import LogState
from qstash.message import FlowControlProperties

from tern_harness import USER1, Gauge, Reply, poll


def log_states(client, message_id: str):
    return [log.state for log in client.log.list(filter={"message_id": message_id}).logs]


def test_message_shows_parallelism_only_flow_control(client, receiver, uid):
    key = f"fc-par-{uid}"
    res = client.message.publish(
        url=receiver.url(f"/fc/{uid}"), body="x", flow_control={"key": key, "parallelism": 2}, delay=3600
    )
    try:
        msg = client.message.get(res.message_id)
        # rate omitted (None), period defaults to 1 s
        assert msg.flow_control == FlowControlProperties(key=key, parallelism=2, rate=None, period=1)
    finally:
        client.message.cancel(res.message_id)


def test_message_shows_rate_only_flow_control(client, receiver, uid):
    key = f"fc-rate-{uid}"
    res = client.message.publish_json(
        url=receiver.url(f"/fc/{uid}"),
        body={"a": 1},
        flow_control={"key": key, "rate": 5, "period": "1h30m3s"},
        delay=3600,
    )
    res2 = client.message.publish(
        url=receiver.url(f"/fc/{uid}"), body="y", flow_control={"key": key, "rate": 3, "period": 2}, delay=3600
    )
    try:
        msg = client.message.get(res.message_id)
        assert msg.flow_control == FlowControlProperties(key=key, parallelism=None, rate=5, period=5403)
        msg2 = client.message.get(res2.message_id)
        assert msg2.flow_control == FlowControlProperties(key=key, parallelism=None, rate=3, period=2)
        # log entries carry the same settings
        (created,) = [log for log in client.log.list(filter={"message_id": res.message_id}).logs]
        assert created.flow_control == FlowControlProperties(key=key, parallelism=None, rate=5, period=5403)
    finally:
        client.message.cancel_many([res.message_id, res2.message_id])


def test_all_three_settings_and_key_info(client, receiver, uid):
    key = f"fc-all-{uid}"
    res = client.message.publish(
        url=receiver.url(f"/fc-all/{uid}"),
        body="x",
        flow_control={"key": key, "parallelism": 4, "rate": 10, "period": 60},
    )
    assert client.message.get(res.message_id).flow_control == FlowControlProperties(
        key=key, parallelism=4, rate=10, period=60
    )
    # the key is known as soon as the publish returned
    info = client.flow_control.get(key)
    assert isinstance(info, FlowControlInfo)
    assert info.key == key
    assert (info.parallelism_max, info.rate_max, info.rate_period) == (4, 10, 60)
    assert (info.is_paused, info.is_pinned_parallelism, info.is_pinned_rate) == (False, False, False)

    receiver.wait_for_message(res.message_id)
    info = poll(
        lambda: (i := client.flow_control.get(key)).rate_count == 1 and i.parallelism_count == 0 and i,
        what="rate count 1 after the delivery",
    )
    assert info.wait_list_size == 0
    # ratePeriodStart is unix seconds
    assert abs(info.rate_period_start - time.time()) < 30


def test_raw_flow_control_info_shape(tern, client, receiver, uid):
    key = f"fc-shape-{uid}"
    res = client.message.publish(url=receiver.url("/shape"), body="x", flow_control={"key": key, "rate": 1}, delay=3600)
    try:
        status, body = tern.raw_request("GET", f"/v2/flowControl/{key}", token=USER1["token"])
        assert status == 200
        data = json.loads(body)
        assert set(data) >= {
            "flowControlKey",
            "waitListSize",
            "parallelismMax",
            "parallelismCount",
            "rateMax",
            "rateCount",
            "ratePeriod",
            "ratePeriodStart",
            "isPaused",
            "isPinnedParallelism",
            "isPinnedRate",
        }
        assert data["flowControlKey"] == key
    finally:
        client.message.cancel(res.message_id)


def test_key_only_flow_control_is_rejected(client, receiver, uid):
    # Python sends an empty Upstash-Flow-Control-Value when only the key is given (spec §4.3)
    with pytest.raises(QStashError) as exc:
        client.message.publish(url=receiver.url("/k"), body="x", flow_control={"key": f"fc-empty-{uid}"})
    assert "400" in str(exc.value)


def test_invalid_flow_control_values_are_rejected(client, receiver, uid):
    for flow in ({"rate": 1, "period": "8d"}, {"parallelism": 0}):
        with pytest.raises(QStashError) as exc:
            client.message.publish(url=receiver.url("/k"), body="x", flow_control={"key": f"fc-bad-{uid}", **flow})
        assert "400" in str(exc.value), flow
    with pytest.raises(QStashError):
        client.flow_control.get(f"fc-bad-{uid}")


def test_get_unknown_key_is_404(client, uid):
    with pytest.raises(QStashError) as exc:
        client.flow_control.get(f"fc-unknown-{uid}")
    assert "404" in str(exc.value)


def test_pin_right_after_publish_to_a_slow_endpoint(client, receiver_factory, uid):
    # as in the SDK tests: publish to a slow endpoint, pin 3/20/120 while the message is in flight
    gauge = Gauge(10)
    receiver = receiver_factory(gauge)
    key = f"fc-pin-{uid}"
    res = client.message.publish(
        url=receiver.url(f"/slow/{uid}"), body="x", flow_control={"key": key, "parallelism": 1, "rate": 1}
    )
    try:
        client.flow_control.pin(key, {"parallelism": 3, "rate": 20, "period": 120})
        info = client.flow_control.get(key)
        assert (info.parallelism_max, info.rate_max, info.rate_period) == (3, 20, 120)
        assert info.is_pinned_parallelism is True and info.is_pinned_rate is True

        # pinned values win over what later messages carry
        later = client.message.publish(
            url=receiver.url(f"/slow/{uid}"), body="y", flow_control={"key": key, "parallelism": 1, "rate": 1, "period": 5}
        )
        info = client.flow_control.get(key)
        assert (info.parallelism_max, info.rate_max, info.rate_period) == (3, 20, 120)
        # ...while the message itself still shows what it was published with
        assert client.message.get(later.message_id).flow_control == FlowControlProperties(
            key=key, parallelism=1, rate=1, period=5
        )
        # parallelism 3 (pinned) lets the second message run next to the first
        receiver.wait_for(lambda r: r.path == f"/slow/{uid}", count=2)
        assert poll(lambda: client.flow_control.get(key).parallelism_count == 2, what="2 in flight")

        # unpin parallelism only: the pinned value stays until a message brings another one
        client.flow_control.unpin(key, {"parallelism": True})
        info = client.flow_control.get(key)
        assert (info.is_pinned_parallelism, info.is_pinned_rate) == (False, True)
        assert (info.parallelism_max, info.rate_max, info.rate_period) == (3, 20, 120)
        third = client.message.publish(
            url=receiver.url(f"/slow/{uid}"), body="z", flow_control={"key": key, "parallelism": 5, "rate": 2}
        )
        info = client.flow_control.get(key)
        assert (info.parallelism_max, info.rate_max, info.rate_period) == (5, 20, 120)

        client.flow_control.unpin(key, {"rate": True})
        info = client.flow_control.get(key)
        assert (info.is_pinned_parallelism, info.is_pinned_rate) == (False, False)
        assert (info.rate_max, info.rate_period) == (20, 120)
        fourth = client.message.publish(
            url=receiver.url(f"/slow/{uid}"), body="w", flow_control={"key": key, "rate": 7, "period": 3}
        )
        info = client.flow_control.get(key)
        assert (info.parallelism_max, info.rate_max, info.rate_period) == (0, 7, 3)
    finally:
        gauge.release()
        client.message.cancel_many([res.message_id])
    for mid in (res.message_id, later.message_id, third.message_id, fourth.message_id):
        receiver.wait_for_message(mid)


def test_pin_validation(client, uid):
    key = f"fc-pin-bad-{uid}"
    with pytest.raises(QStashError) as exc:
        client.flow_control.pin(key, {"parallelism": 0})
    assert "400" in str(exc.value)
    with pytest.raises(QStashError) as exc:
        client.flow_control.pin(key, {"period": 8 * 86400})  # beyond a week
    assert "400" in str(exc.value)


def test_parallelism_limits_deliveries_in_flight(client, receiver_factory, uid):
    gauge = Gauge(0.25)
    receiver = receiver_factory(gauge)
    key = f"fc-plim-{uid}"
    for i in range(3):
        client.message.publish(url=receiver.url(f"/plim/{uid}"), body=str(i), flow_control={"key": key, "parallelism": 1})
    info = poll(
        lambda: (i := client.flow_control.get(key)).parallelism_count == 1 and i.wait_list_size == 2 and i,
        what="one in flight, two waiting",
    )
    assert info.parallelism_max == 1
    reqs = receiver.wait_for(lambda r: r.path == f"/plim/{uid}", count=3)
    assert gauge.peak == 1
    gaps = [b.time - a.time for a, b in zip(reqs, reqs[1:])]
    assert all(g >= 0.22 for g in gaps), gaps
    poll(lambda: client.flow_control.get(key).wait_list_size == 0, what="empty waitlist")


def test_rate_limits_starts_per_period(client, receiver, uid):
    key = f"fc-rlim-{uid}"
    for i in range(3):
        client.message.publish(
            url=receiver.url(f"/rlim/{uid}"), body=str(i), flow_control={"key": key, "rate": 2, "period": 1}
        )
    reqs = receiver.wait_for(lambda r: r.path == f"/rlim/{uid}", count=3)
    assert reqs[2].time - reqs[0].time >= 0.8, [r.time - reqs[0].time for r in reqs]
    assert reqs[1].time - reqs[0].time < 0.5


def test_reset_rate_ends_the_current_window(client, receiver, uid):
    key = f"fc-reset-{uid}"
    first = client.message.publish(url=receiver.url(f"/rr/{uid}"), body="1", flow_control={"key": key, "rate": 1, "period": 60})
    second = client.message.publish(url=receiver.url(f"/rr/{uid}"), body="2", flow_control={"key": key, "rate": 1, "period": 60})
    receiver.wait_for_message(first.message_id)
    info = poll(
        lambda: (i := client.flow_control.get(key)).wait_list_size == 1 and i,
        what="second message in the waitlist",
    )
    assert (info.rate_count, info.rate_max, info.rate_period) == (1, 1, 60)
    assert receiver.received(f"/rr/{uid}")[-1].text == "1"

    client.flow_control.reset_rate(key)
    receiver.wait_for_message(second.message_id, timeout=5)
    info = poll(lambda: (i := client.flow_control.get(key)).wait_list_size == 0 and i, what="empty waitlist")
    assert info.rate_count == 1


def test_reset_rate_while_a_delivery_is_in_flight(client, receiver_factory, uid):
    # the SDK test: publish to a slow endpoint, reset_rate, the rate count reads 0
    gauge = Gauge(10)
    receiver = receiver_factory(gauge)
    key = f"fc-reset-busy-{uid}"
    res = client.message.publish_json(
        url=receiver.url(f"/busy/{uid}"),
        body={"test": "value"},
        flow_control={"key": key, "parallelism": 5, "rate": 10, "period": "1m"},
    )
    try:
        receiver.wait_for_message(res.message_id)
        poll(lambda: client.flow_control.get(key).rate_count == 1, what="rate count 1")
        client.flow_control.reset_rate(key)
        info = client.flow_control.get(key)
        assert (info.rate_count, info.parallelism_count) == (0, 1)
        assert (info.rate_max, info.rate_period) == (10, 60)
        # cancelling the in-flight message is not an error
        client.message.cancel(res.message_id)
    finally:
        gauge.release()


def test_pause_holds_messages_in_the_waitlist_until_resume(client, receiver, uid):
    key = f"fc-pause-{uid}"
    client.flow_control.pause(key)  # creates the key
    info = client.flow_control.get(key)
    assert info.is_paused is True
    client.flow_control.pause(key)  # idempotent

    ids = [
        client.message.publish(
            url=receiver.url(f"/fcp/{uid}"), body=str(i), flow_control={"key": key, "parallelism": 5}
        ).message_id
        for i in range(3)
    ]
    info = poll(lambda: (i := client.flow_control.get(key)).wait_list_size == 3 and i, what="3 waiting")
    assert info.is_paused is True
    assert info.parallelism_count == 0
    assert info.parallelism_max == 5
    probe = client.message.publish(url=receiver.url(f"/fcp-probe/{uid}"), body="probe")
    receiver.wait_for_message(probe.message_id)
    assert receiver.received(f"/fcp/{uid}") == []

    client.flow_control.resume(key)
    receiver.wait_for(lambda r: r.path == f"/fcp/{uid}", count=3)
    info = poll(lambda: (i := client.flow_control.get(key)).wait_list_size == 0 and i, what="empty waitlist")
    assert info.is_paused is False
    for mid in ids:
        poll(lambda mid=mid: LogState.DELIVERED in log_states(client, mid), what="DELIVERED")


def test_global_parallelism(tern, client, receiver_factory, uid):
    gauge = Gauge(10)
    receiver = receiver_factory(gauge)
    idle = client.flow_control.get_global_parallelism()
    assert isinstance(idle, GlobalParallelismInfo)
    assert isinstance(idle.parallelism_max, int) and idle.parallelism_max > 0
    assert isinstance(idle.parallelism_count, int) and idle.parallelism_count >= 0
    status, body = tern.raw_request("GET", "/v2/globalParallelism", token=USER1["token"])
    assert status == 200
    data = json.loads(body)
    assert set(data) == {"parallelismMax", "parallelismCount"}
    assert all(isinstance(v, int) for v in data.values())

    res = client.message.publish(url=receiver.url(f"/gp/{uid}"), body="x")
    try:
        receiver.wait_for_message(res.message_id)
        busy = poll(
            lambda: (g := client.flow_control.get_global_parallelism()).parallelism_count >= 1 and g,
            what="one delivery in flight",
        )
        assert busy.parallelism_max == idle.parallelism_max
    finally:
        gauge.release()
    poll(lambda: LogState.DELIVERED in log_states(client, res.message_id), what="DELIVERED")


def test_flow_control_on_batch(client, receiver, uid):
    key = f"fc-batch-{uid}"
    res = client.message.batch_json(
        [
            {"url": receiver.url(f"/fcb/{uid}/1"), "body": 1, "flow_control": {"key": key, "parallelism": 1}},
            {
                "url": receiver.url(f"/fcb/{uid}/2"),
                "body": 2,
                "flow_control": {"key": key, "rate": 4, "period": "1m"},
                "delay": 3600,
            },
            {"url": receiver.url(f"/fcb/{uid}/3"), "body": 3},
        ]
    )
    try:
        m1, m2, m3 = (client.message.get(r.message_id) for r in res)
        assert m1.flow_control == FlowControlProperties(key=key, parallelism=1, rate=None, period=1)
        assert m2.flow_control == FlowControlProperties(key=key, parallelism=None, rate=4, period=60)
        assert m3.flow_control is None
        # the key took the settings of the last message that carried it
        info = client.flow_control.get(key)
        assert (info.parallelism_max, info.rate_max, info.rate_period) == (0, 4, 60)
        receiver.wait_for_message(res[0].message_id)
    finally:
        client.message.cancel(res[1].message_id)


def test_dlq_entry_of_a_queued_batch_item_keeps_queue_and_flow_control(client, receiver_factory, uid):
    receiver = receiver_factory(Reply(status=500, body="nope"))
    key = f"fc-dlq-{uid}"
    queue = f"q-fc-dlq-{uid}"
    # Python's enqueue sends no flow control, but a batch item may carry both
    (res,) = client.message.batch(
        [
            {
                "queue": queue,
                "url": receiver.url(f"/fcdlq/{uid}"),
                "body": "x",
                "retries": 0,
                "flow_control": {"key": key, "parallelism": 2, "rate": 3, "period": "1h"},
            }
        ]
    )
    try:
        entries = poll(lambda: client.dlq.list(filter={"queue": queue}).messages, what="DLQ entry by queue")
        assert [e.message_id for e in entries] == [res.message_id]
        assert entries[0].queue == queue
        assert entries[0].flow_control == FlowControlProperties(key=key, parallelism=2, rate=3, period=3600)
        assert client.dlq.get(entries[0].dlq_id).flow_control == entries[0].flow_control
        client.dlq.delete(entries[0].dlq_id)
    finally:
        client.queue.delete(queue)


def test_async_client_flow_control_calls(tern, client, receiver, uid):
    key = f"fc-async-{uid}"

    async def run():
        aclient = AsyncQStash(USER1["token"], base_url=tern.url, retry=False)
        res = await aclient.message.publish(
            url=receiver.url(f"/afc/{uid}"), body="x", flow_control={"key": key, "parallelism": 2}, delay=3600
        )
        await aclient.flow_control.pause(key)
        paused = await aclient.flow_control.get(key)
        await aclient.flow_control.resume(key)
        await aclient.flow_control.pin(key, {"rate": 9})
        pinned = await aclient.flow_control.get(key)
        await aclient.flow_control.unpin(key, {"rate": True, "parallelism": False})
        await aclient.flow_control.reset_rate(key)
        unpinned = await aclient.flow_control.get(key)
        global_info = await aclient.flow_control.get_global_parallelism()
        await aclient.message.cancel(res.message_id)
        return paused, pinned, unpinned, global_info

    paused, pinned, unpinned, global_info = asyncio.run(run())
    assert paused.is_paused is True and paused.parallelism_max == 2
    assert (pinned.is_paused, pinned.rate_max, pinned.is_pinned_rate, pinned.is_pinned_parallelism) == (
        False,
        9,
        True,
        False,
    )
    assert (unpinned.rate_max, unpinned.is_pinned_rate, unpinned.rate_count) == (9, False, 0)
    assert global_info.parallelism_max > 0
