// client.urlGroups (alias client.topics) addEndpoints / removeEndpoints / get / list / delete and
// publish / publishJSON to a urlGroup (spec §5.1, §5.7, §6.5, §15).
import assert from "node:assert/strict";
import { after, afterEach, before, test } from "node:test";

import { QstashError } from "@upstash/qstash";

import { makeClient, receiverPool, startTern, uid, waitForDlq, waitForState } from "./harness.mjs";

let tern;
let client;
const receivers = receiverPool();

before(async () => {
  tern = await startTern();
  client = makeClient(tern);
});
afterEach(async () => {
  await receivers.closeAll();
});
after(async () => {
  await receivers.closeAll();
  await tern?.stop();
});

const status = (code) => (error) => error instanceof QstashError && error.status === code;
const groupNames = async () => (await client.urlGroups.list()).map((g) => g.name);

test("addEndpoints, get, list, delete", async () => {
  const r = await receivers.make();
  const id = uid();
  const name = `ug-crud-${id}`;
  const a = r.url(`/a/${id}`);
  const b = r.url(`/b/${id}?x=1`);
  const before = Date.now();
  await client.urlGroups.addEndpoints({ name, endpoints: [{ url: a, name: "first endpoint" }, { url: b }] });
  try {
    const group = await client.urlGroups.get(name);
    assert.equal(group.name, name);
    // insertion order, exactly {name?, url}, the URL verbatim
    assert.deepEqual(group.endpoints, [{ name: "first endpoint", url: a }, { url: b }]);
    assert.ok(group.createdAt >= before - 5000 && group.createdAt <= Date.now() + 5000);
    assert.ok(group.updatedAt >= group.createdAt);
    for (const field of ["createdAt", "endpoints", "name", "updatedAt"]) assert.ok(field in group, field);
    assert.deepEqual(
      (await client.urlGroups.list()).filter((g) => g.name === name),
      [group],
    );
  } finally {
    await client.urlGroups.delete(name);
  }
  assert.ok(!(await groupNames()).includes(name));
  await assert.rejects(client.urlGroups.get(name), status(404));
  await client.urlGroups.delete(name); // idempotent
});

test("client.topics is the same API", async () => {
  const r = await receivers.make();
  const name = `ug-topics-${uid()}`;
  await client.topics.addEndpoints({ name, endpoints: [{ url: r.url("/t") }] });
  try {
    assert.deepEqual((await client.urlGroups.get(name)).endpoints, [{ url: r.url("/t") }]);
    assert.ok((await client.topics.list()).some((g) => g.name === name));
    assert.equal((await client.topics.get(name)).name, name);
  } finally {
    await client.topics.delete(name);
  }
  await assert.rejects(client.urlGroups.get(name), status(404));
});

test("adding an existing URL renames it; new endpoints are appended", async () => {
  const r = await receivers.make();
  const id = uid();
  const name = `ug-upd-${id}`;
  const [a, b, c] = ["a", "b", "c"].map((x) => r.url(`/${x}/${id}`));
  await client.urlGroups.addEndpoints({ name, endpoints: [{ url: a }, { url: b, name: "bee" }] });
  try {
    const created = await client.urlGroups.get(name);
    await client.urlGroups.addEndpoints({
      name,
      endpoints: [
        { url: a, name: "renamed" },
        { url: c, name: "sea" },
      ],
    });
    const group = await client.urlGroups.get(name);
    assert.deepEqual(group.endpoints, [
      { name: "renamed", url: a },
      { name: "bee", url: b },
      { name: "sea", url: c },
    ]);
    assert.equal(group.createdAt, created.createdAt);
  } finally {
    await client.urlGroups.delete(name);
  }
});

test("removeEndpoints by url and by name; the last removal deletes the group", async () => {
  const r = await receivers.make();
  const id = uid();
  const name = `ug-rm-${id}`;
  const [a, b, c] = ["a", "b", "c"].map((x) => r.url(`/${x}/${id}`));
  await client.urlGroups.addEndpoints({ name, endpoints: [{ url: a, name: "ay" }, { url: b, name: "bee" }, { url: c }] });
  try {
    await client.urlGroups.removeEndpoints({ name, endpoints: [{ url: a }] });
    assert.deepEqual((await client.urlGroups.get(name)).endpoints, [{ name: "bee", url: b }, { url: c }]);
    await client.urlGroups.removeEndpoints({ name, endpoints: [{ name: "bee" }] });
    assert.deepEqual((await client.urlGroups.get(name)).endpoints, [{ url: c }]);
    await client.urlGroups.removeEndpoints({ name, endpoints: [{ url: c }] });
    assert.ok(!(await groupNames()).includes(name));
    await assert.rejects(client.urlGroups.get(name), status(404));
  } finally {
    await client.urlGroups.delete(name);
  }
});

test("invalid group names and endpoint URLs are 400", async () => {
  const r = await receivers.make();
  const id = uid();
  await assert.rejects(client.urlGroups.addEndpoints({ name: `bad!${id}`, endpoints: [{ url: r.url("/x") }] }), status(400));
  await assert.rejects(
    client.urlGroups.addEndpoints({ name: `ug-badurl-${id}`, endpoints: [{ url: "ftp://example.com/x" }] }),
    status(400),
  );
  assert.ok(!(await groupNames()).includes(`ug-badurl-${id}`));
  // the TS SDK does not check endpoints itself: the server must
  await assert.rejects(client.urlGroups.addEndpoints({ name: `ug-nourl-${id}`, endpoints: [{ name: "x" }] }), status(400));
  await assert.rejects(client.urlGroups.addEndpoints({ name: `ug-none-${id}`, endpoints: [] }), status(400));
  const name = `ug-rmbad-${id}`;
  await client.urlGroups.addEndpoints({ name, endpoints: [{ url: r.url("/keep") }] });
  try {
    await assert.rejects(client.urlGroups.removeEndpoints({ name, endpoints: [{}] }), status(400));
    assert.deepEqual((await client.urlGroups.get(name)).endpoints, [{ url: r.url("/keep") }]);
  } finally {
    await client.urlGroups.delete(name);
  }
});

test("publish to a urlGroup: an array with one message per endpoint, each delivered once with Upstash-Topic-Name", async () => {
  const r = await receivers.make();
  const id = uid();
  const name = `ug-pub-${id}`;
  const urls = [r.url(`/fan/${id}/1`), r.url(`/fan/${id}/2?q=v`), r.url(`/fan/${id}/3`)];
  await client.urlGroups.addEndpoints({ name, endpoints: [{ url: urls[0], name: "one" }, { url: urls[1] }, { url: urls[2] }] });
  try {
    const res = await client.publish({ urlGroup: name, body: `fan ${id}`, headers: { "X-Fan": "out" } });
    assert.ok(Array.isArray(res));
    assert.deepEqual(
      res.map((x) => x.url),
      urls,
    );
    assert.ok(res.every((x) => x.deduplicated !== true));
    assert.equal(new Set(res.map((x) => x.messageId)).size, 3);
    for (const { messageId, url } of res) {
      const [req] = await r.waitForMessage(messageId);
      assert.equal(r.base + req.path, url);
      assert.equal(req.text, `fan ${id}`);
      assert.equal(req.header("x-fan"), "out");
      assert.equal(req.header("upstash-topic-name"), name);
    }
    for (const { messageId } of res) await waitForState(client, messageId, "DELIVERED");
    assert.deepEqual(r.received(`/fan/${id}/`).map((q) => r.base + q.path).sort(), [...urls].sort());

    const msgs = await Promise.all(res.map((x) => client.messages.get(x.messageId)));
    assert.deepEqual(
      msgs.map((m) => m.url),
      urls,
    );
    assert.ok(msgs.every((m) => m.urlGroup === name && m.topicName === name));
    assert.deepEqual(
      msgs.map((m) => m.endpointName),
      ["one", undefined, undefined],
    );
    const { logs } = await client.logs({ filter: { urlGroup: name } });
    assert.deepEqual(new Set(logs.map((l) => l.messageId)), new Set(res.map((x) => x.messageId)));
    assert.ok(logs.every((l) => l.urlGroup === name));
  } finally {
    await client.urlGroups.delete(name);
  }
});

test("publishJSON to a urlGroup, deduplicated per endpoint", async () => {
  const r = await receivers.make();
  const id = uid();
  const name = `ug-json-${id}`;
  const urls = [r.url(`/fj/${id}/1`), r.url(`/fj/${id}/2`)];
  await client.urlGroups.addEndpoints({ name, endpoints: urls.map((url) => ({ url })) });
  try {
    const first = await client.publishJSON({ urlGroup: name, body: { id }, deduplicationId: `dd-${id}` });
    const second = await client.publishJSON({ urlGroup: name, body: { id }, deduplicationId: `dd-${id}` });
    assert.deepEqual(
      first.map((x) => x.url),
      urls,
    );
    assert.ok(first.every((x) => x.deduplicated !== true));
    assert.ok(second.every((x) => x.deduplicated === true));
    assert.deepEqual(
      second.map((x) => x.messageId),
      first.map((x) => x.messageId),
    );
    for (const { messageId } of first) {
      const [req] = await r.waitForMessage(messageId);
      assert.deepEqual(req.json(), { id });
      assert.equal(req.header("content-type"), "application/json");
    }
  } finally {
    await client.urlGroups.delete(name);
  }
});

test("the deprecated `topic` request field publishes to the group too", async () => {
  const r = await receivers.make();
  const name = `ug-topic-${uid()}`;
  await client.urlGroups.addEndpoints({ name, endpoints: [{ url: r.url("/topic-field") }] });
  try {
    const [res] = await client.publish({ topic: name, body: "t" });
    const [req] = await r.waitForMessage(res.messageId);
    assert.equal(req.header("upstash-topic-name"), name);
  } finally {
    await client.urlGroups.delete(name);
  }
});

test("each endpoint message fails on its own", async () => {
  const r = await receivers.make();
  const id = uid();
  const name = `ug-fail-${id}`;
  r.on(`/bad/${id}`, { status: 500, body: "broken" });
  await client.urlGroups.addEndpoints({ name, endpoints: [{ url: r.url(`/ok/${id}`) }, { url: r.url(`/bad/${id}`) }] });
  try {
    const [ok, bad] = await client.publish({ urlGroup: name, body: "x", retries: 0 });
    const [entry] = await waitForDlq(client, bad.messageId);
    assert.equal(entry.url, r.url(`/bad/${id}`));
    assert.equal(entry.topicName, name);
    assert.equal(entry.responseStatus, 500);
    await waitForState(client, ok.messageId, "DELIVERED");
    assert.deepEqual((await client.dlq.listMessages({ filter: { messageId: ok.messageId } })).messages, []);
    await client.dlq.delete(entry.dlqId);
  } finally {
    await client.urlGroups.delete(name);
  }
});

test("publishing to an unknown urlGroup is 404 `topic <name> not found`", async () => {
  const name = `ug-missing-${uid()}`;
  await assert.rejects(
    client.publish({ urlGroup: name, body: "x" }),
    (error) => status(404)(error) && error.message.includes(`topic ${name} not found`),
  );
});

test("urlGroup filters: cancel, logs and DLQ (multi-value)", async () => {
  const r = await receivers.make({ status: 500, body: "group item failed" });
  const id = uid();
  const [ga, gb] = [`ug-fa-${id}`, `ug-fb-${id}`];
  await client.urlGroups.addEndpoints({ name: ga, endpoints: [{ url: r.url(`/gf/${id}/a1`) }, { url: r.url(`/gf/${id}/a2`) }] });
  await client.urlGroups.addEndpoints({ name: gb, endpoints: [{ url: r.url(`/gf/${id}/b1`) }] });
  try {
    const delayedA = await client.publish({ urlGroup: ga, body: "later", delay: 3600 });
    const delayedB = await client.publish({ urlGroup: gb, body: "later", delay: 3600 });
    const other = await client.publish({ url: r.url(`/gf/${id}/other`), body: "keep", delay: 3600 });
    try {
      assert.deepEqual(await client.messages.cancel({ filter: { urlGroup: [ga, gb] } }), { cancelled: 3 });
      for (const { messageId } of [...delayedA, ...delayedB]) await waitForState(client, messageId, "CANCELED");
      assert.equal((await client.messages.get(other.messageId)).messageId, other.messageId);
      assert.ok(!(await client.logs({ filter: { messageId: other.messageId } })).logs.some((l) => l.state === "CANCELED"));
    } finally {
      await client.messages.cancel(other.messageId);
    }

    const failing = await client.publish({ urlGroup: gb, body: "now", retries: 0 });
    const [entry] = await waitForDlq(client, failing[0].messageId);
    assert.equal(entry.topicName, gb);
    const { messages } = await client.dlq.listMessages({ filter: { urlGroup: gb } });
    assert.deepEqual(
      messages.map((m) => m.messageId),
      [failing[0].messageId],
    );
    assert.deepEqual((await client.dlq.listMessages({ filter: { urlGroup: ga } })).messages, []);
    const byGroup = await client.logs({ filter: { urlGroup: gb } });
    assert.ok(byGroup.logs.some((l) => l.messageId === failing[0].messageId && l.state === "FAILED"));
    assert.ok(byGroup.logs.every((l) => l.topicName === gb));
    await client.dlq.delete(entry.dlqId);
  } finally {
    await client.urlGroups.delete(ga);
    await client.urlGroups.delete(gb);
  }
});
