// client.batch / batchJSON mixing URLs, URL groups (nested arrays) and queues (spec §5.3, §12, §15).
import assert from "node:assert/strict";
import { after, afterEach, before, test } from "node:test";

import { QstashError } from "@upstash/qstash";

import { gauge, makeClient, receiverPool, startTern, uid, waitForState } from "./harness.mjs";

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

test("batch mixes a URL, a URL group (nested array), a queue and a group inside a queue", async () => {
  const r = await receivers.make();
  const id = uid();
  const name = `ug-batch-${id}`;
  const queueName = `q-batch-${id}`;
  const [g1, g2] = [r.url(`/bg/${id}/1`), r.url(`/bg/${id}/2`)];
  await client.urlGroups.addEndpoints({ name, endpoints: [{ url: g1, name: "g-one" }, { url: g2 }] });
  try {
    const res = await client.batch([
      { url: r.url(`/bu/${id}?k=v`), body: "to-url", headers: { "Content-Type": "text/plain" } },
      { urlGroup: name, body: "to-group", headers: { "X-Item": "group" } },
      { url: r.url(`/bq/${id}`), body: "to-queue", method: "PUT", queueName },
      { urlGroup: name, body: "group-in-queue", queueName },
    ]);
    assert.equal(res.length, 4);
    const [toUrl, toGroup, toQueue, groupInQueue] = res;
    assert.ok(!Array.isArray(toUrl) && toUrl.messageId);
    assert.ok(!Array.isArray(toQueue) && toQueue.messageId);
    for (const nested of [toGroup, groupInQueue]) {
      assert.ok(Array.isArray(nested));
      assert.deepEqual(
        nested.map((x) => x.url),
        [g1, g2],
      );
    }
    const ids = [toUrl.messageId, toQueue.messageId, ...toGroup.map((x) => x.messageId), ...groupInQueue.map((x) => x.messageId)];
    assert.equal(new Set(ids).size, 6);

    const [urlReq] = await r.waitForMessage(toUrl.messageId);
    assert.equal(urlReq.path, `/bu/${id}?k=v`);
    assert.equal(urlReq.text, "to-url");
    assert.equal(urlReq.header("content-type"), "text/plain");
    assert.equal(urlReq.header("upstash-topic-name"), undefined);
    for (const { messageId, url } of toGroup) {
      const [req] = await r.waitForMessage(messageId);
      assert.equal(r.base + req.path, url);
      assert.equal(req.text, "to-group");
      assert.equal(req.header("x-item"), "group");
      assert.equal(req.header("upstash-topic-name"), name);
    }
    const [queueReq] = await r.waitForMessage(toQueue.messageId);
    assert.deepEqual([queueReq.method, queueReq.text], ["PUT", "to-queue"]);
    for (const { messageId } of groupInQueue) {
      const [req] = await r.waitForMessage(messageId);
      assert.equal(req.header("upstash-topic-name"), name);
    }

    assert.equal((await client.messages.get(toUrl.messageId)).queueName, undefined);
    assert.equal((await client.messages.get(toQueue.messageId)).queueName, queueName);
    for (const { messageId } of toGroup) {
      const m = await client.messages.get(messageId);
      assert.deepEqual([m.urlGroup, m.queueName], [name, undefined]);
    }
    for (const { messageId, url } of groupInQueue) {
      const m = await client.messages.get(messageId);
      assert.deepEqual([m.urlGroup, m.queueName, m.url], [name, queueName, url]);
    }
    assert.equal((await client.messages.get(groupInQueue[0].messageId)).endpointName, "g-one");
    assert.equal((await client.queue({ queueName }).get()).parallelism, 1);
  } finally {
    await client.queue({ queueName }).delete();
    await client.urlGroups.delete(name);
  }
});

test("batchJSON mixes a group, a queue and a URL with delay", async () => {
  const r = await receivers.make();
  const id = uid();
  const name = `ug-bj-${id}`;
  const queueName = `q-bj-${id}`;
  await client.urlGroups.addEndpoints({ name, endpoints: [{ url: r.url(`/bj/${id}/a`) }, { url: r.url(`/bj/${id}/b`) }] });
  try {
    const [nested, queued, delayed] = await client.batchJSON([
      { urlGroup: name, body: { to: "group" } },
      { url: r.url(`/bjq/${id}`), body: { to: "queue" }, queueName, retries: 0 },
      { url: r.url(`/bjd/${id}`), body: { to: "later" }, delay: 3600 },
    ]);
    assert.deepEqual(
      nested.map((x) => x.url),
      [r.url(`/bj/${id}/a`), r.url(`/bj/${id}/b`)],
    );
    for (const { messageId } of nested) {
      const [req] = await r.waitForMessage(messageId);
      assert.deepEqual(req.json(), { to: "group" });
      assert.equal(req.header("content-type"), "application/json");
    }
    const [req] = await r.waitForMessage(queued.messageId);
    assert.deepEqual(req.json(), { to: "queue" });
    const qm = await client.messages.get(queued.messageId);
    assert.deepEqual([qm.queueName, qm.maxRetries], [queueName, 0]);
    const dm = await client.messages.get(delayed.messageId);
    assert.ok(Math.abs(dm.notBefore - (dm.createdAt + 3_600_000)) <= 2000);
    await client.messages.cancel(delayed.messageId);
  } finally {
    await client.queue({ queueName }).delete();
    await client.urlGroups.delete(name);
  }
});

test("batch items of one queue keep FIFO order, one at a time", async () => {
  const g = gauge(150);
  const r = await receivers.make(g.reply);
  const id = uid();
  const queueName = `q-bfifo-${id}`;
  try {
    const res = await client.batch([0, 1, 2, 3].map((i) => ({ url: r.url(`/bf/${id}`), body: String(i), queueName })));
    const reqs = await r.waitFor((q) => q.path === `/bf/${id}`, { count: 4 });
    assert.deepEqual(
      reqs.map((q) => q.text),
      ["0", "1", "2", "3"],
    );
    assert.deepEqual(
      reqs.map((q) => q.header("upstash-message-id")),
      res.map((x) => x.messageId),
    );
    assert.equal(g.peak, 1);
  } finally {
    await client.queue({ queueName }).delete();
  }
});

test("a batch with one bad item is rejected as a whole; nothing is stored", async () => {
  const r = await receivers.make();
  const id = uid();
  const url = r.url(`/bbad/${id}`);
  await assert.rejects(client.batch([{ url, body: "fine" }, { urlGroup: `ug-missing-${id}`, body: "x" }]), status(404));
  await assert.rejects(client.batch([{ url, body: "fine" }, { url, body: "x", delay: "soon" }]), status(400));
  await assert.rejects(client.batch([{ url, body: "fine" }, { url, body: "x", queueName: `bad!${id}` }]), status(400));
  await assert.rejects(
    client.batch([{ url, body: "fine" }, { url, body: "x", headers: { "Upstash-Flow-Control-Key": "k", "Upstash-Flow-Control-Value": "speed=3" } }]),
    status(400),
  );
  assert.deepEqual((await client.logs({ filter: { url } })).logs, []);
  assert.deepEqual(r.received(`/bbad/${id}`), []);
});

test("batch deduplicates per item", async () => {
  const r = await receivers.make();
  const id = uid();
  const url = r.url(`/bdd/${id}`);
  const [first] = await client.batch([{ url, body: "a", deduplicationId: `bdd-${id}` }]);
  const [dup, other] = await client.batch([
    { url, body: "b", deduplicationId: `bdd-${id}` },
    { url, body: "c" },
  ]);
  assert.notEqual(first.deduplicated, true);
  assert.equal(dup.deduplicated, true);
  assert.equal(dup.messageId, first.messageId);
  assert.notEqual(other.deduplicated, true);
  await waitForState(client, first.messageId, "DELIVERED");
  await waitForState(client, other.messageId, "DELIVERED");
  assert.deepEqual(
    r
      .received(`/bdd/${id}`)
      .map((q) => q.text)
      .sort(),
    ["a", "c"],
  );
});
