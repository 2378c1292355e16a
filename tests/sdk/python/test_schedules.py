"""schedule.create / create_json / get / list / delete / pause / resume (spec §5.6, §6.3, §14).

Every test but one uses crons that do not tick while it runs (`0 0 1 1 *`, `1 1 1 1 1`, …); the
single firing test waits for a real `* * * * *` tick (up to a minute).
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import time
from zoneinfo import ZoneInfo

import pytest
from qstash import AsyncQStash
from qstash.errors import QStashError
from qstash.log import LogState
from qstash.message import FlowControlProperties
from qstash.schedule import Schedule, ScheduleState

from tern_harness import DEFAULT_DEADLINE, USER1, poll

# A tick is at most a minute away; allow for delivery on top.
TICK_DEADLINE = max(DEFAULT_DEADLINE, 80.0)


def now_ms() -> int:
    return int(time.time() * 1000)


def ms(t: dt.datetime) -> int:
    return int(t.timestamp() * 1000)


def utc(ms_: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms_ / 1000, dt.timezone.utc)


def midnight(day: dt.date) -> int:
    return ms(dt.datetime(day.year, day.month, day.day, tzinfo=dt.timezone.utc))


def next_day(t: dt.datetime) -> int:
    return midnight(t.date() + dt.timedelta(days=1))


def next_hour(t: dt.datetime) -> int:
    return ms(t.replace(minute=0, second=0, microsecond=0) + dt.timedelta(hours=1))


def next_weekday(t: dt.datetime, weekday: int) -> int:
    """Midnight of the next day (strictly after t's day) with Python weekday ``weekday``."""
    days = (weekday - t.weekday()) % 7 or 7
    return midnight(t.date() + dt.timedelta(days=days))


def next_month(t: dt.datetime) -> int:
    return midnight(dt.date(t.year + (t.month == 12), t.month % 12 + 1, 1))


def next_year(t: dt.datetime) -> int:
    return midnight(dt.date(t.year + 1, 1, 1))


def next_business_day(t: dt.datetime) -> int:
    day = t.date() + dt.timedelta(days=1)
    while day.weekday() >= 5:
        day += dt.timedelta(days=1)
    return midnight(day)


def next_quarter_hour(t: dt.datetime) -> int:
    base = t.replace(second=0, microsecond=0)
    return ms(base + dt.timedelta(minutes=15 - base.minute % 15))


SUNDAY, MONDAY = 6, 0


def schedule_ids(client):
    return [s.schedule_id for s in client.schedule.list()]


def expect_error(fn, status: int, *fragments: str) -> str:
    """Run ``fn``; it must fail with ``status``; the error text must contain every fragment."""
    with pytest.raises(QStashError) as exc:
        fn()
    text = str(exc.value)
    assert f"status: {status}" in text, text
    for fragment in fragments:
        assert fragment in text, f"{fragment!r} not in {text!r}"
    return text


def test_create_with_every_option_then_get_list_delete(client, receiver, uid):
    destination = receiver.url(f"/full/{uid}?a=1&b=two")
    callback = receiver.url(f"/full-cb/{uid}")
    failure_callback = receiver.url(f"/full-fcb/{uid}")
    before = now_ms()
    sid = client.schedule.create(
        destination=destination,
        # (httpx refuses header values with surrounding whitespace: Python cannot send an
        # untrimmed cron)
        cron="0 0 1 1 *",
        body=f"payload {uid}",
        content_type="text/plain",
        method="PUT",
        headers={
            "test-header": "test-value",
            "Upstash-Forward-bypass-tunnel-reminder": "client-test",
            "X-List": "a, b",
        },
        # Python prefixes these with Upstash-Callback- / Upstash-Failure-Callback-: only
        # `Forward-<Name>` keys forward a header (spec §9.3); `Timeout` configures the callback.
        callback_headers={"Forward-X-Cb": "cb-value", "Timeout": "5s"},
        failure_callback_headers={"Forward-X-Fcb": "fcb-value"},
        retries=5,
        retry_delay="1000 * (1 + retried)",
        callback=callback,
        failure_callback=failure_callback,
        delay=10,
        timeout=30,
        label=f"lbl-{uid}",
        flow_control={"key": f"fc-{uid}", "parallelism": 2, "rate": 10, "period": "1h30m3s"},
    )
    try:
        assert isinstance(sid, str) and sid.startswith("scd_")
        s = client.schedule.get(sid)
        assert isinstance(s, Schedule)
        assert s.schedule_id == sid
        assert s.cron == "0 0 1 1 *"
        assert s.destination == destination  # the query string belongs to the destination
        assert s.method == "PUT"
        assert s.body == f"payload {uid}"
        assert s.body_base64 is None
        # forwarded headers (prefix stripped) plus Content-Type, canonical names, nothing else
        assert s.headers == {
            "Bypass-Tunnel-Reminder": ["client-test"],
            "Content-Type": ["text/plain"],
            "Test-Header": ["test-value"],
            "X-List": ["a, b"],  # one element per header line, never split on commas
        }
        assert s.callback_headers == {"X-Cb": ["cb-value"]}
        assert s.failure_callback_headers == {"X-Fcb": ["fcb-value"]}
        assert s.retries == 5
        assert s.retry_delay_expression == "1000 * (1 + retried)"
        assert s.callback == callback
        assert s.failure_callback == failure_callback
        assert s.delay == 10
        assert s.timeout == 30
        assert s.queue is None
        assert s.label == f"lbl-{uid}"
        assert s.flow_control == FlowControlProperties(key=f"fc-{uid}", parallelism=2, rate=10, period=5403)
        assert s.caller_ip == "127.0.0.1"
        assert s.paused is False
        assert before - 5_000 <= s.created_at <= now_ms() + 5_000
        assert s.next_schedule_time == next_year(utc(s.created_at))  # the first match after creation
        assert s.last_schedule_time is None
        assert s.last_schedule_states is None
        assert s.error is None

        listed = [x for x in client.schedule.list() if x.schedule_id == sid]
        assert listed == [s]
    finally:
        client.schedule.delete(sid)

    assert sid not in schedule_ids(client)
    expect_error(lambda: client.schedule.get(sid), 404, "Schedule not found")
    # deleting again is not an error
    client.schedule.delete(sid)


def test_create_json_defaults(client, receiver, uid):
    sid = client.schedule.create_json(
        destination=receiver.url(f"/json/{uid}"),
        cron="1 1 1 1 1",
        body={"ex_key": "ex_value", "uid": uid},
    )
    try:
        s = client.schedule.get(sid)
        assert s.schedule_id == sid
        assert s.cron == "1 1 1 1 1"
        assert s.destination == receiver.url(f"/json/{uid}")
        assert json.loads(s.body) == {"ex_key": "ex_value", "uid": uid}
        assert s.body == json.dumps({"ex_key": "ex_value", "uid": uid})  # stored verbatim
        assert s.headers == {"Content-Type": ["application/json"]}
        assert not s.callback_headers and not s.failure_callback_headers
        assert s.method == "POST"
        assert s.retries == 3
        for field in (
            "retry_delay_expression",
            "callback",
            "failure_callback",
            "delay",
            "timeout",
            "queue",
            "label",
            "flow_control",
            "body_base64",
            "last_schedule_time",
            "last_schedule_states",
            "error",
        ):
            assert getattr(s, field) is None, field
        assert s.paused is False
        assert s.next_schedule_time is not None and s.next_schedule_time > now_ms()
    finally:
        client.schedule.delete(sid)


def test_create_json_without_body_stores_null(client, receiver, uid):
    sid = client.schedule.create_json(destination=receiver.url(f"/json-null/{uid}"), cron="0 0 1 1 *")
    try:
        s = client.schedule.get(sid)
        assert s.body == "null"
        assert s.headers == {"Content-Type": ["application/json"]}
    finally:
        client.schedule.delete(sid)


def test_string_durations_queue_and_rate_only_flow_control(client, receiver, uid):
    queue = f"sq-{uid}"
    sid = client.schedule.create(
        destination=receiver.url(f"/durations/{uid}"),
        cron="30 4 * * 1-5",
        body="x",
        queue=queue,
        delay="1h",
        timeout="1m",
        retries=0,
        method="DELETE",
        flow_control={"key": f"fc-rate-{uid}", "rate": 3, "period": 7},
    )
    try:
        s = client.schedule.get(sid)
        assert s.queue == queue
        assert s.delay == 3600
        assert s.timeout == 60
        assert s.retries == 0
        assert s.method == "DELETE"
        # rate-only: no parallelism; a numeric period is sent as `7s`
        assert s.flow_control == FlowControlProperties(key=f"fc-rate-{uid}", parallelism=None, rate=3, period=7)
        # Python sends no Content-Type of its own
        assert s.headers is None
    finally:
        client.schedule.delete(sid)


def test_non_utf8_body_is_returned_as_base64(client, receiver, uid):
    raw = b"\xff\xfe\x00binary-" + uid.encode()
    sid = client.schedule.create(
        destination=receiver.url(f"/bin/{uid}"),
        cron="0 0 1 1 *",
        body=raw,
        content_type="application/octet-stream",
    )
    try:
        s = client.schedule.get(sid)
        assert s.body is None
        assert base64.b64decode(s.body_base64) == raw
    finally:
        client.schedule.delete(sid)


def test_custom_schedule_id_and_overwrite(client, receiver, uid):
    sched_id = f"my-sched.{uid}_1"
    first_url = receiver.url(f"/first/{uid}")
    second_url = receiver.url(f"/second/{uid}")
    returned = client.schedule.create(
        destination=first_url,
        cron="0 0 1 1 *",
        schedule_id=sched_id,
        body="my-payload",
        content_type="text/plain",
        headers={"X-First": "1"},
        callback=receiver.url(f"/first-cb/{uid}"),
        failure_callback=receiver.url(f"/first-fcb/{uid}"),
        retries=1,
        retry_delay="500",
        delay=5,
        timeout=9,
        queue=f"sq-first-{uid}",
        label=f"first-{uid}",
        flow_control={"key": f"fc-first-{uid}", "parallelism": 1},
    )
    try:
        assert returned == sched_id
        first = client.schedule.get(sched_id)
        assert (first.schedule_id, first.destination, first.body) == (sched_id, first_url, "my-payload")
        assert first.queue == f"sq-first-{uid}"
        client.schedule.pause(sched_id)

        # the same id again: every field is replaced; nothing of the first version survives
        returned = client.schedule.create(destination=second_url, cron="0 12 * * *", schedule_id=sched_id)
        assert returned == sched_id
        s = client.schedule.get(sched_id)
        assert s.schedule_id == sched_id
        assert s.destination == second_url
        assert s.cron == "0 12 * * *"
        assert s.body is None and s.body_base64 is None
        assert s.headers is None
        assert s.method == "POST"
        assert s.retries == 3
        for field in (
            "retry_delay_expression",
            "callback",
            "failure_callback",
            "delay",
            "timeout",
            "queue",
            "label",
            "flow_control",
        ):
            assert getattr(s, field) is None, field
        # creation time and the paused flag are kept (spec §14 recommendation)
        assert s.created_at == first.created_at
        assert s.paused is True
        assert schedule_ids(client).count(sched_id) == 1

        # a body given on a later overwrite is stored again
        client.schedule.create_json(destination=second_url, cron="0 12 * * *", schedule_id=sched_id, body=[1, 2])
        assert client.schedule.get(sched_id).body == "[1, 2]"
        assert schedule_ids(client).count(sched_id) == 1
    finally:
        client.schedule.delete(sched_id)
    expect_error(lambda: client.schedule.get(sched_id), 404)


def test_schedule_to_url_group(client, receiver, uid):
    group = f"ug-sched-{uid}"
    client.url_group.upsert_endpoints(group, [{"url": receiver.url(f"/ug/{uid}/a")}, {"url": receiver.url(f"/ug/{uid}/b")}])
    try:
        sid = client.schedule.create_json(
            destination=group,
            cron="0 0 1 1 *",
            body={"to": "group"},
            headers={"X-Group": "yes"},
            retries=2,
        )
        try:
            s = client.schedule.get(sid)
            assert s.destination == group
            assert s.body == '{"to": "group"}'
            assert s.headers == {"Content-Type": ["application/json"], "X-Group": ["yes"]}
            assert s.retries == 2
            assert sid in schedule_ids(client)
        finally:
            client.schedule.delete(sid)
    finally:
        client.url_group.delete(group)

    # like publish (spec §24): an unknown group is 404 `topic <name> not found`
    missing = f"ug-missing-{uid}"
    expect_error(
        lambda: client.schedule.create(destination=missing, cron="0 0 1 1 *"), 404, f"topic {missing} not found"
    )


def test_pause_and_resume(client, receiver, uid):
    sid = client.schedule.create_json(destination=receiver.url(f"/pause/{uid}"), cron="1 1 1 1 1", body={"k": "v"})
    try:
        assert client.schedule.get(sid).paused is False
        client.schedule.pause(sid)
        assert client.schedule.get(sid).paused is True
        assert [x.paused for x in client.schedule.list() if x.schedule_id == sid] == [True]
        client.schedule.pause(sid)  # idempotent
        assert client.schedule.get(sid).paused is True
        client.schedule.resume(sid)
        s = client.schedule.get(sid)
        assert s.paused is False
        assert s.next_schedule_time is not None and s.next_schedule_time > now_ms()
        client.schedule.resume(sid)  # idempotent
        assert client.schedule.get(sid).paused is False
        # nothing but the flag changed
        assert s.body == '{"k": "v"}' and s.cron == "1 1 1 1 1"
    finally:
        client.schedule.delete(sid)


@pytest.mark.parametrize(
    "cron,expected",
    [
        ("0 0 1 1 *", next_year),
        ("@yearly", next_year),
        ("@annually", next_year),
        ("0 0 1 JAN *", next_year),
        ("@monthly", next_month),
        ("0 0 1 * *", next_month),
        ("@weekly", lambda t: next_weekday(t, SUNDAY)),
        ("0 0 * * 0", lambda t: next_weekday(t, SUNDAY)),
        ("0 0 * * 7", lambda t: next_weekday(t, SUNDAY)),
        ("0 0 * * SUN", lambda t: next_weekday(t, SUNDAY)),
        ("@daily", next_day),
        ("@midnight", next_day),
        ("0 0 * * *", next_day),
        ("@hourly", next_hour),
        ("0 * * * *", next_hour),
        ("*/15 * * * *", next_quarter_hour),
        ("0 0 * JAN-DEC MON-FRI", next_business_day),
        # both day fields restricted: either one matching fires
        ("0 0 1 * MON", lambda t: min(next_month(t), next_weekday(t, MONDAY))),
        # 09:00 in Tokyo (UTC+9, no DST) is 00:00 UTC; TZ= is accepted like CRON_TZ=
        ("CRON_TZ=Asia/Tokyo 0 9 * * *", next_day),
        ("TZ=Asia/Tokyo 0 9 * * *", next_day),
    ],
)
def test_cron_dialect_next_schedule_time(client, receiver, uid, cron, expected):
    sid = client.schedule.create(destination=receiver.url(f"/dialect/{uid}"), cron=cron)
    try:
        s = client.schedule.get(sid)
        assert s.cron == cron
        # the first tick is the first match strictly after the creation time
        assert s.next_schedule_time == expected(utc(s.created_at)), (
            f"{cron}: next {utc(s.next_schedule_time)} after {utc(s.created_at)}"
        )
    finally:
        client.schedule.delete(sid)


def test_cron_time_zone(client, receiver, uid):
    cron = "CRON_TZ=America/New_York 0 4 * * *"
    sid = client.schedule.create(destination=receiver.url(f"/tz/{uid}"), cron=cron)
    try:
        s = client.schedule.get(sid)
        assert s.cron == cron
        zone = ZoneInfo("America/New_York")
        now = utc(s.created_at).astimezone(zone)
        candidate = now.replace(hour=4, minute=0, second=0, microsecond=0)
        if candidate <= now:
            candidate = (now + dt.timedelta(days=1)).replace(hour=4, minute=0, second=0, microsecond=0)
        assert s.next_schedule_time == ms(candidate)
    finally:
        client.schedule.delete(sid)


def test_invalid_requests_are_rejected(client, receiver, uid):
    url = receiver.url(f"/invalid/{uid}")
    before = set(schedule_ids(client))

    # invalid cron: 400 whose message quotes the expression
    expect_error(lambda: client.schedule.create(destination=url, cron="not a cron"), 400, "not a cron")
    expect_error(lambda: client.schedule.create(destination=url, cron="61 * * * *"), 400, "61 * * * *")
    expect_error(lambda: client.schedule.create(destination=url, cron="* * * *"), 400, "cron")
    expect_error(lambda: client.schedule.create(destination=url, cron="0 * * * * *"), 400, "cron")  # no seconds
    expect_error(lambda: client.schedule.create(destination=url, cron="0 0 * * 8"), 400, "0 0 * * 8")
    expect_error(lambda: client.schedule.create(destination=url, cron="@fortnightly"), 400, "@fortnightly")
    expect_error(lambda: client.schedule.create(destination=url, cron=""), 400)
    # invalid schedule id charset
    expect_error(lambda: client.schedule.create(destination=url, cron="0 0 1 1 *", schedule_id=f"bad!{uid}"), 400)
    # invalid publish options
    expect_error(lambda: client.schedule.create(destination=url, cron="0 0 1 1 *", method="FETCH"), 400)
    expect_error(lambda: client.schedule.create(destination=url, cron="0 0 1 1 *", retries=-1), 400)
    expect_error(lambda: client.schedule.create(destination=url, cron="0 0 1 1 *", delay="soon"), 400)
    expect_error(lambda: client.schedule.create(destination=url, cron="0 0 1 1 *", delay="4000d"), 400)  # > max
    expect_error(lambda: client.schedule.create(destination=url, cron="0 0 1 1 *", timeout="long"), 400)
    expect_error(lambda: client.schedule.create(destination=url, cron="0 0 1 1 *", retry_delay="1000 +"), 400)
    expect_error(lambda: client.schedule.create(destination=url, cron="0 0 1 1 *", callback="ftp://x/cb"), 400)
    expect_error(lambda: client.schedule.create(destination=url, cron="0 0 1 1 *", queue=f"bad!{uid}"), 400)
    # Python sends an empty Upstash-Flow-Control-Value when only the key is given
    expect_error(
        lambda: client.schedule.create(destination=url, cron="0 0 1 1 *", flow_control={"key": f"fc-{uid}"}), 400
    )
    # neither a URL nor a valid URL-group name
    expect_error(lambda: client.schedule.create(destination=f"bad!dest-{uid}", cron="0 0 1 1 *"), 400)

    assert set(schedule_ids(client)) == before


def test_unknown_schedule_ids(client, uid):
    missing = f"scd_missing{uid}"
    expect_error(lambda: client.schedule.get(missing), 404, "Schedule not found")
    expect_error(lambda: client.schedule.pause(missing), 404)
    expect_error(lambda: client.schedule.resume(missing), 404)
    client.schedule.delete(missing)  # idempotent


def test_schedules_belong_to_their_user(client, client_user2, receiver, uid):
    sid = client.schedule.create(destination=receiver.url(f"/user/{uid}"), cron="0 0 1 1 *")
    try:
        assert sid not in [s.schedule_id for s in client_user2.schedule.list()]
        expect_error(lambda: client_user2.schedule.get(sid), 404)
        expect_error(lambda: client_user2.schedule.pause(sid), 404)
        client_user2.schedule.delete(sid)
        s = client.schedule.get(sid)
        assert s.paused is False

        # the same custom id for another user is another schedule
        own = f"shared-{uid}"
        client.schedule.create(destination=receiver.url("/one"), cron="0 0 1 1 *", schedule_id=own)
        client_user2.schedule.create(destination=receiver.url("/two"), cron="0 0 1 1 *", schedule_id=own)
        try:
            assert client.schedule.get(own).destination == receiver.url("/one")
            assert client_user2.schedule.get(own).destination == receiver.url("/two")
        finally:
            client.schedule.delete(own)
            client_user2.schedule.delete(own)
    finally:
        client.schedule.delete(sid)


def test_redaction_applies_to_schedule_reads(client, receiver, uid):
    secret = f"secret-body-{uid}"
    sid = client.schedule.create(
        destination=receiver.url(f"/redact/{uid}"),
        cron="0 0 1 1 *",
        body=secret,
        headers={"Authorization": f"Bearer user-secret-{uid}", "X-Visible": "yes"},
        redact={"body": True, "header": ["Authorization"]},
    )
    try:
        for s in (client.schedule.get(sid), [x for x in client.schedule.list() if x.schedule_id == sid][0]):
            assert s.body != secret and s.body.startswith("REDACTED:")
            assert s.headers["Authorization"][0].startswith("REDACTED:")
            assert f"user-secret-{uid}" not in s.headers["Authorization"][0]
            assert s.headers["X-Visible"] == ["yes"]
    finally:
        client.schedule.delete(sid)


def test_async_client_schedule_calls(tern, receiver, uid):
    sched_id = f"async-{uid}"

    async def run():
        aclient = AsyncQStash(USER1["token"], base_url=tern.url, retry=False)
        returned = await aclient.schedule.create_json(
            destination=receiver.url(f"/async/{uid}"),
            cron="0 0 1 1 *",
            body={"a": uid},
            schedule_id=sched_id,
            retries=4,
            label=f"async-{uid}",
        )
        created = await aclient.schedule.get(sched_id)
        generated = await aclient.schedule.create(destination=receiver.url(f"/async2/{uid}"), cron="5 4 * * *")
        listed = [s.schedule_id for s in await aclient.schedule.list()]
        await aclient.schedule.pause(sched_id)
        paused = (await aclient.schedule.get(sched_id)).paused
        await aclient.schedule.resume(sched_id)
        resumed = (await aclient.schedule.get(sched_id)).paused
        await aclient.schedule.delete(sched_id)
        await aclient.schedule.delete(generated)
        remaining = [s.schedule_id for s in await aclient.schedule.list()]
        try:
            await aclient.schedule.get(sched_id)
            missing = None
        except QStashError as e:
            missing = str(e)
        return returned, created, generated, listed, paused, resumed, remaining, missing

    returned, created, generated, listed, paused, resumed, remaining, missing = asyncio.run(run())
    assert returned == sched_id
    assert (created.schedule_id, created.retries, created.label) == (sched_id, 4, f"async-{uid}")
    assert json.loads(created.body) == {"a": uid}
    assert created.headers == {"Content-Type": ["application/json"]}
    assert generated.startswith("scd_")
    assert sched_id in listed and generated in listed
    assert (paused, resumed) == (True, False)
    assert sched_id not in remaining and generated not in remaining
    assert missing is not None and "status: 404" in missing


def test_a_tick_enqueues_one_message_with_the_stored_request(client, receiver, uid):
    """The one test that waits for a real tick: `* * * * *` fires within a minute."""
    queue = f"sq-tick-{uid}"
    path = f"/tick/{uid}"
    # the paused twin must be paused before the tick both would fire at
    seconds = time.time() % 60
    if seconds > 58:
        time.sleep(60.5 - seconds)
    paused_sid = sid = None
    deleted = False
    try:
        paused_sid = client.schedule.create(
            destination=receiver.url(f"/tick-paused/{uid}"), cron="* * * * *", body="no"
        )
        client.schedule.pause(paused_sid)
        sid = client.schedule.create(
            destination=receiver.url(path + "?from=schedule"),
            cron="* * * * *",
            body=f"tick {uid}",
            content_type="text/plain",
            method="PUT",
            headers={"X-Tick": uid},
            retries=0,
            queue=queue,
            label=f"tick-{uid}",
            callback=receiver.url(f"/tick-cb/{uid}"),
        )
        created = client.schedule.get(sid)
        (req,) = receiver.wait_for(lambda r: r.header("Upstash-Schedule-Id") == sid, timeout=TICK_DEADLINE)
        assert req.method == "PUT"
        assert req.path == path + "?from=schedule"
        assert req.text == f"tick {uid}"
        assert req.header("Content-Type") == "text/plain"
        assert req.header("X-Tick") == uid
        assert req.header("Upstash-Caller-Ip") == "127.0.0.1"
        assert req.header("Upstash-Retried") == "0"
        assert req.header("Upstash-Signature")
        mid = req.header("Upstash-Message-Id")
        assert mid

        msg = client.message.get(mid)
        assert msg.schedule_id == sid
        assert msg.queue == queue
        assert msg.url == receiver.url(path + "?from=schedule")
        assert msg.method == "PUT"
        assert msg.max_retries == 0
        assert msg.label == f"tick-{uid}"
        assert msg.headers == {"Content-Type": ["text/plain"], "X-Tick": [uid]}
        assert msg.callback == receiver.url(f"/tick-cb/{uid}")

        # the stored callback is called for the produced message and names the schedule
        (cb,) = receiver.wait_for(lambda r: r.path == f"/tick-cb/{uid}")
        payload = cb.json()
        assert (payload["sourceMessageId"], payload["scheduleId"], payload["status"]) == (mid, sid, 200)
        assert base64.b64decode(payload["sourceBody"]) == f"tick {uid}".encode()

        # the schedule records the tick and its message
        s = poll(
            lambda: (lambda s: s if s.last_schedule_states == {mid: ScheduleState.SUCCESS} else None)(
                client.schedule.get(sid)
            ),
            what="lastScheduleStates = {mid: SUCCESS}",
        )
        assert s.last_schedule_time is not None and s.last_schedule_time % 60_000 == 0
        assert created.created_at < s.last_schedule_time <= created.created_at + 60_000
        assert s.last_schedule_time <= msg.created_at
        assert s.next_schedule_time == s.last_schedule_time + 60_000
        assert s.error is None

        logs = poll(
            lambda: [log for log in client.log.list(filter={"schedule_id": sid}).logs if log.state == LogState.DELIVERED],
            what="DELIVERED log entry filtered by schedule id",
        )
        assert {log.message_id for log in logs} == {mid}

        # the paused schedule skipped the same tick
        twin = client.schedule.get(paused_sid)
        assert twin.paused is True
        assert (twin.last_schedule_time, twin.last_schedule_states) == (None, None)
        assert receiver.received(f"/tick-paused/{uid}") == []

        client.schedule.delete(sid)
        deleted = True
        expect_error(lambda: client.schedule.get(sid), 404)
        assert sid not in schedule_ids(client)
        # nothing else arrives: exactly one delivery for the one tick
        time.sleep(1.5)
        assert len(receiver.received(path)) == 1
    finally:
        for leftover in (None if deleted else sid, paused_sid):
            if leftover:
                client.schedule.delete(leftover)
        client.queue.delete(queue)
