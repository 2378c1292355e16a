"""url_group.upsert_endpoints / remove_endpoints / get / list / delete and publishing to a URL
group (spec §5.1, §5.7, §6.5, §15)."""

from __future__ import annotations

import asyncio
import time

import pytest
from qstash import AsyncQStash
from qstash.errors import QStashError
from qstash.log import LogState
from qstash.message import PublishUrlGroupResponse
from qstash.url_group import Endpoint

from tern_harness import USER1, Reply, poll


def now_ms() -> int:
    return int(time.time() * 1000)


def group_names(client):
    return [g.name for g in client.url_group.list()]


def log_states(client, message_id: str):
    return [log.state for log in client.log.list(filter={"message_id": message_id}).logs]


def test_upsert_get_list_delete(client, receiver, uid):
    name = f"ug-crud-{uid}"
    a, b = receiver.url(f"/a/{uid}"), receiver.url(f"/b/{uid}?x=1")
    before = now_ms()
    client.url_group.upsert_endpoints(name, [{"url": a, "name": "first endpoint"}, {"url": b}])
    try:
        group = client.url_group.get(name)
        assert group.name == name
        # insertion order; a name only where one was given; the URL verbatim (query kept)
        assert group.endpoints == [Endpoint(url=a, name="first endpoint"), Endpoint(url=b, name=None)]
        assert before - 5_000 <= group.created_at <= now_ms() + 5_000
        assert group.updated_at >= group.created_at
        listed = [g for g in client.url_group.list() if g.name == name]
        assert listed == [group]
    finally:
        client.url_group.delete(name)

    assert name not in group_names(client)
    with pytest.raises(QStashError) as exc:
        client.url_group.get(name)
    assert "404" in str(exc.value)
    # delete is idempotent (SDK tests delete groups that may not exist)
    client.url_group.delete(name)


def test_upsert_updates_existing_endpoint_and_appends_new_ones(client, receiver, uid):
    name = f"ug-upd-{uid}"
    a, b, c = (receiver.url(f"/{x}/{uid}") for x in "abc")
    client.url_group.upsert_endpoints(name, [{"url": a}, {"url": b, "name": "bee"}])
    try:
        created = client.url_group.get(name)
        client.url_group.upsert_endpoints(name, [{"url": a, "name": "renamed"}, {"url": c, "name": "sea"}])
        group = client.url_group.get(name)
        assert group.endpoints == [
            Endpoint(url=a, name="renamed"),
            Endpoint(url=b, name="bee"),
            Endpoint(url=c, name="sea"),
        ]
        assert group.created_at == created.created_at
        assert group.updated_at >= created.updated_at
        assert group_names(client).count(name) == 1
    finally:
        client.url_group.delete(name)


def test_remove_endpoints_by_url_and_by_name_then_the_empty_group_is_gone(client, receiver, uid):
    name = f"ug-rm-{uid}"
    a, b, c = (receiver.url(f"/{x}/{uid}") for x in "abc")
    client.url_group.upsert_endpoints(name, [{"url": a, "name": "ay"}, {"url": b, "name": "bee"}, {"url": c}])
    try:
        client.url_group.remove_endpoints(name, [{"url": a}])
        assert client.url_group.get(name).endpoints == [Endpoint(url=b, name="bee"), Endpoint(url=c, name=None)]
        client.url_group.remove_endpoints(name, [{"name": "bee"}])
        assert client.url_group.get(name).endpoints == [Endpoint(url=c, name=None)]
        # removing the last endpoint deletes the group
        client.url_group.remove_endpoints(name, [{"url": c}])
        assert name not in group_names(client)
        with pytest.raises(QStashError) as exc:
            client.url_group.get(name)
        assert "404" in str(exc.value)
    finally:
        client.url_group.delete(name)


def test_invalid_group_name_and_endpoint_url_are_rejected(client, receiver, uid):
    with pytest.raises(QStashError) as exc:
        client.url_group.upsert_endpoints(f"bad!{uid}", [{"url": receiver.url("/x")}])
    assert "400" in str(exc.value)
    with pytest.raises(QStashError) as exc:
        client.url_group.upsert_endpoints(f"ug-bad-url-{uid}", [{"url": "ftp://example.com/x"}])
    assert "400" in str(exc.value)
    assert f"ug-bad-url-{uid}" not in group_names(client)


def test_publish_fans_out_once_per_endpoint(client, receiver, uid):
    name = f"ug-pub-{uid}"
    urls = [receiver.url(f"/fan/{uid}/1"), receiver.url(f"/fan/{uid}/2?q=v"), receiver.url(f"/fan/{uid}/3")]
    client.url_group.upsert_endpoints(name, [{"url": urls[0], "name": "one"}, {"url": urls[1]}, {"url": urls[2]}])
    try:
        res = client.message.publish(
            url_group=name, body=f"fan {uid}", content_type="text/plain", headers={"X-Fan": "out"}
        )
        assert isinstance(res, list) and len(res) == 3
        assert all(isinstance(r, PublishUrlGroupResponse) for r in res)
        assert [r.url for r in res] == urls
        assert all(r.deduplicated is False for r in res)
        assert len({r.message_id for r in res}) == 3

        for r in res:
            (req,) = receiver.wait_for_message(r.message_id)
            assert receiver.base + req.path == r.url
            assert req.text == f"fan {uid}"
            assert req.header("Content-Type") == "text/plain"
            assert req.header("X-Fan") == "out"
            assert req.header("Upstash-Topic-Name") == name
        for r in res:
            poll(lambda r=r: LogState.DELIVERED in log_states(client, r.message_id), what="DELIVERED")
        # exactly one delivery per endpoint
        assert sorted(receiver.base + q.path for q in receiver.received(f"/fan/{uid}/")) == sorted(urls)

        msgs = [client.message.get(r.message_id) for r in res]
        assert [m.url for m in msgs] == urls
        assert all(m.url_group == name for m in msgs)
        assert [m.endpoint for m in msgs] == ["one", None, None]
        logs = client.log.list(filter={"url_group": name}).logs
        assert {log.message_id for log in logs} == {r.message_id for r in res}
        assert all(log.url_group == name for log in logs)
    finally:
        client.url_group.delete(name)


def test_publish_json_to_group_with_deduplication(client, receiver, uid):
    name = f"ug-json-{uid}"
    urls = [receiver.url(f"/fj/{uid}/1"), receiver.url(f"/fj/{uid}/2")]
    client.url_group.upsert_endpoints(name, [{"url": u} for u in urls])
    try:
        first = client.message.publish_json(url_group=name, body={"uid": uid}, deduplication_id=f"dd-{uid}")
        second = client.message.publish_json(url_group=name, body={"uid": uid}, deduplication_id=f"dd-{uid}")
        assert [r.url for r in first] == urls and [r.url for r in second] == urls
        assert all(r.deduplicated is False for r in first)
        assert all(r.deduplicated is True for r in second)
        assert [r.message_id for r in second] == [r.message_id for r in first]
        for r in first:
            (req,) = receiver.wait_for_message(r.message_id)
            assert req.json() == {"uid": uid}
            assert req.header("Content-Type") == "application/json"
    finally:
        client.url_group.delete(name)


def test_each_endpoint_message_fails_on_its_own(client, receiver, uid):
    name = f"ug-fail-{uid}"
    receiver.on(f"/bad/{uid}", Reply(status=500, body="broken"))
    ok, bad = receiver.url(f"/ok/{uid}"), receiver.url(f"/bad/{uid}")
    client.url_group.upsert_endpoints(name, [{"url": ok}, {"url": bad}])
    try:
        ok_res, bad_res = client.message.publish(url_group=name, body="x", retries=0)
        entries = poll(lambda: client.dlq.list(filter={"message_id": bad_res.message_id}).messages, what="DLQ entry")
        assert entries[0].url == bad
        assert entries[0].url_group == name
        assert entries[0].response_status == 500
        poll(lambda: LogState.DELIVERED in log_states(client, ok_res.message_id), what="DELIVERED")
        assert client.dlq.list(filter={"message_id": ok_res.message_id}).messages == []
        by_group = client.dlq.list(filter={"url_group": name}).messages
        assert [e.message_id for e in by_group] == [bad_res.message_id]
        client.dlq.delete(entries[0].dlq_id)
    finally:
        client.url_group.delete(name)


def test_publish_to_unknown_group_is_404(client, uid):
    with pytest.raises(QStashError) as exc:
        client.message.publish(url_group=f"ug-missing-{uid}", body="x")
    assert "404" in str(exc.value)
    assert f"topic ug-missing-{uid} not found" in str(exc.value)


def test_deleting_a_group_keeps_its_messages(client, receiver, uid):
    name = f"ug-keep-{uid}"
    client.url_group.upsert_endpoints(name, [{"url": receiver.url(f"/keep/{uid}")}])
    (res,) = client.message.publish(url_group=name, body="later", delay="1s")
    client.url_group.delete(name)
    (req,) = receiver.wait_for_message(res.message_id)
    assert req.header("Upstash-Topic-Name") == name


def test_async_client_url_group_calls(tern, receiver, uid):
    name = f"ug-async-{uid}"

    async def run():
        aclient = AsyncQStash(USER1["token"], base_url=tern.url, retry=False)
        await aclient.url_group.upsert_endpoints(name, [{"url": receiver.url(f"/as/{uid}/1"), "name": "n1"}])
        await aclient.url_group.upsert_endpoints(name, [{"url": receiver.url(f"/as/{uid}/2")}])
        got = await aclient.url_group.get(name)
        listed = [g.name for g in await aclient.url_group.list()]
        res = await aclient.message.publish_json(url_group=name, body={"a": uid})
        await aclient.url_group.remove_endpoints(name, [{"name": "n1"}])
        after_remove = await aclient.url_group.get(name)
        await aclient.url_group.delete(name)
        remaining = [g.name for g in await aclient.url_group.list()]
        return got, listed, res, after_remove, remaining

    got, listed, res, after_remove, remaining = asyncio.run(run())
    assert [e.url for e in got.endpoints] == [receiver.url(f"/as/{uid}/1"), receiver.url(f"/as/{uid}/2")]
    assert name in listed
    assert [r.url for r in res] == [e.url for e in got.endpoints]
    for r in res:
        (req,) = receiver.wait_for_message(r.message_id)
        assert req.header("Upstash-Topic-Name") == name
    assert after_remove.endpoints == [Endpoint(url=receiver.url(f"/as/{uid}/2"), name=None)]
    assert name not in remaining
