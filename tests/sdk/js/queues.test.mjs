// client.queue({queueName}).upsert / get / list / delete / pause / resume / enqueue / enqueueJSON
// (spec §5.2, §5.5, §6.4, §12).
import assert from "node:assert/strict";
import { after, afterEach, before, test } from "node:test";

import { QstashError } from "@upstash/qstash";

import { gauge, logStates, makeClient, poll, receiverPool, startTern, uid, waitForState } from "./harness.mjs";

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
const queueNames = async () => (await client.queue().list()).map((q) => q.name);

test("upsert, get, list, delete", async () => {
  const queueName = `q-crud-${uid()}`;
  const queue = client.queue({ queueName });
  const before = Date.now();
  await queue.upsert({ parallelism: 2 });
  try {
    const q = await queue.get();
    assert.equal(q.name, queueName);
    assert.equal(q.parallelism, 2);
    assert.equal(q.paused, false);
    assert.equal(q.lag, 0);
    assert.ok(q.createdAt >= before - 5000 && q.createdAt <= Date.now() + 5000, JSON.stringify(q));
    assert.ok(q.updatedAt >= q.createdAt);
    for (const field of ["createdAt", "lag", "name", "parallelism", "paused", "updatedAt"]) assert.ok(field in q, field);
    const listed = (await client.queue().list()).filter((x) => x.name === queueName);
    assert.deepEqual(listed, [q]);
    // the list call works on a queue handle too
    assert.ok((await queue.list()).some((x) => x.name === queueName));

    await queue.upsert({ parallelism: 3 });
    const updated = await queue.get();
    assert.equal(updated.parallelism, 3);
    assert.equal(updated.createdAt, q.createdAt);
    assert.ok(updated.updatedAt >= q.updatedAt);
    assert.equal((await queueNames()).filter((n) => n === queueName).length, 1);
  } finally {
    await queue.delete();
  }
  assert.ok(!(await queueNames()).includes(queueName));
  await assert.rejects(queue.get(), status(404));
  await queue.delete(); // idempotent
});

test("upsert defaults to parallelism 1, not paused; invalid values are 400", async () => {
  const queue = client.queue({ queueName: `q-def-${uid()}` });
  await queue.upsert({});
  try {
    const q = await queue.get();
    assert.deepEqual([q.parallelism, q.paused, q.lag], [1, false, 0]);
  } finally {
    await queue.delete();
  }
  await assert.rejects(client.queue({ queueName: `bad!${uid()}` }).upsert({}), status(400));
  await assert.rejects(client.queue({ queueName: `q-zero-${uid()}` }).upsert({ parallelism: 0 }), status(400));
  // beyond the configured maximum parallelism: 412 (spec §5.5)
  const huge = `q-huge-${uid()}`;
  await assert.rejects(client.queue({ queueName: huge }).upsert({ parallelism: 1_000_000 }), status(412));
  assert.ok(!(await queueNames()).includes(huge));
});

test("pause and resume are idempotent; upsert always sets paused", async () => {
  const queue = client.queue({ queueName: `q-pause-${uid()}` });
  await queue.upsert({});
  try {
    await queue.pause();
    await queue.pause();
    assert.equal((await queue.get()).paused, true);
    await queue.resume();
    await queue.resume();
    assert.equal((await queue.get()).paused, false);
    await queue.upsert({ paused: true });
    assert.equal((await queue.get()).paused, true);
    await queue.upsert({ parallelism: 2 }); // sends paused: false
    const q = await queue.get();
    assert.deepEqual([q.paused, q.parallelism], [false, 2]);
  } finally {
    await queue.delete();
  }
});

test("enqueue creates the queue and delivers with the publish options", async () => {
  const r = await receivers.make();
  const id = uid();
  const queueName = `q-auto-${id}`;
  const queue = client.queue({ queueName });
  assert.ok(!(await queueNames()).includes(queueName));
  const url = r.url(`/enq/${id}`);
  const res = await queue.enqueue({
    url,
    body: `hello ${id}`,
    method: "PATCH",
    headers: { "Content-Type": "text/plain", "X-Queued": "yes" },
    retries: 1,
    label: `lbl-${id}`,
  });
  try {
    assert.ok(res.messageId);
    assert.notEqual(res.deduplicated, true);
    const q = await queue.get();
    assert.deepEqual([q.parallelism, q.paused], [1, false]);
    const [req] = await r.waitForMessage(res.messageId);
    assert.equal(req.method, "PATCH");
    assert.equal(req.text, `hello ${id}`);
    assert.equal(req.header("content-type"), "text/plain");
    assert.equal(req.header("x-queued"), "yes");
    const msg = await client.messages.get(res.messageId);
    assert.equal(msg.queueName, queueName);
    assert.equal(msg.url, url);
    assert.equal(msg.maxRetries, 1);
    assert.equal(msg.label, `lbl-${id}`);
    assert.equal(msg.urlGroup, undefined);
    await waitForState(client, res.messageId, "DELIVERED");
    const { logs } = await client.logs({ filter: { queueName } });
    assert.ok(logs.length > 0 && logs.every((l) => l.messageId === res.messageId && l.queueName === queueName));
    await poll(async () => (await queue.get()).lag === 0, { what: "lag 0" });
  } finally {
    await queue.delete();
  }
});

test("enqueueJSON sends JSON and deduplicates", async () => {
  const r = await receivers.make();
  const id = uid();
  const queue = client.queue({ queueName: `q-json-${id}` });
  const url = r.url(`/enqj/${id}`);
  const first = await queue.enqueueJSON({ url, body: { id, n: [1, 2] }, deduplicationId: `dd-${id}` });
  const second = await queue.enqueueJSON({ url, body: { other: true }, deduplicationId: `dd-${id}` });
  try {
    assert.notEqual(first.deduplicated, true);
    assert.equal(second.deduplicated, true);
    assert.equal(second.messageId, first.messageId);
    const [req] = await r.waitForMessage(first.messageId);
    assert.equal(req.header("content-type"), "application/json");
    assert.deepEqual(req.json(), { id, n: [1, 2] });
    await waitForState(client, first.messageId, "DELIVERED");
    assert.equal(r.received(`/enqj/${id}`).length, 1);
  } finally {
    await queue.delete();
  }
});

test("enqueue to an invalid queue name is 400", async () => {
  const r = await receivers.make();
  await assert.rejects(client.queue({ queueName: `bad!${uid()}` }).enqueue({ url: r.url("/x"), body: "x" }), status(400));
});

test("FIFO: a parallelism-1 queue delivers one at a time in enqueue order; lag counts the rest", async () => {
  const g = gauge(200);
  const r = await receivers.make(g.reply);
  const id = uid();
  const queue = client.queue({ queueName: `q-fifo-${id}` });
  await queue.upsert({ parallelism: 1 });
  try {
    const ids = [];
    for (let i = 0; i < 5; i++) ids.push((await queue.enqueue({ url: r.url(`/fifo/${id}`), body: String(i) })).messageId);
    assert.ok((await queue.get()).lag >= 4);
    const reqs = await r.waitFor((q) => q.path === `/fifo/${id}`, { count: 5 });
    assert.deepEqual(
      reqs.map((q) => q.text),
      ["0", "1", "2", "3", "4"],
    );
    assert.deepEqual(
      reqs.map((q) => q.header("upstash-message-id")),
      ids,
    );
    assert.equal(g.peak, 1);
    const gaps = reqs.slice(1).map((q, i) => q.time - reqs[i].time);
    assert.ok(
      gaps.every((gap) => gap >= 180),
      `a delivery started before the previous one finished: ${gaps}`,
    );
    await poll(async () => (await queue.get()).lag === 0, { what: "lag 0" });
  } finally {
    await queue.delete();
  }
});

test("parallelism 2 runs exactly two at a time", async () => {
  const g = gauge(250);
  const r = await receivers.make(g.reply);
  const id = uid();
  const queue = client.queue({ queueName: `q-par2-${id}` });
  await queue.upsert({ parallelism: 2 });
  try {
    for (let i = 0; i < 6; i++) await queue.enqueue({ url: r.url(`/par2/${id}`), body: String(i) });
    const reqs = await r.waitFor((q) => q.path === `/par2/${id}`, { count: 6 });
    assert.equal(g.peak, 2);
    reqs.forEach((q, i) => assert.ok(Math.abs(Number(q.text) - i) <= 1, reqs.map((x) => x.text).join()));
  } finally {
    await queue.delete();
  }
});

test("a paused queue accepts messages but delivers nothing until resumed", async () => {
  const r = await receivers.make();
  const id = uid();
  const queue = client.queue({ queueName: `q-paused-${id}` });
  await queue.upsert({ paused: true });
  try {
    const ids = [];
    for (let i = 0; i < 3; i++) ids.push((await queue.enqueue({ url: r.url(`/paused/${id}`), body: String(i) })).messageId);
    const q = await queue.get();
    assert.equal(q.paused, true);
    assert.equal(q.lag, 3);
    // a message outside the queue, published afterwards, gets through: delivery is running
    const probe = await client.publish({ url: r.url(`/probe/${id}`), body: "probe" });
    await r.waitForMessage(probe.messageId);
    await waitForState(client, probe.messageId, "DELIVERED");
    assert.deepEqual(r.received(`/paused/${id}`), []);
    for (const mid of ids) assert.deepEqual(await logStates(client, mid), ["CREATED"]);

    await queue.resume();
    const reqs = await r.waitFor((x) => x.path === `/paused/${id}`, { count: 3 });
    assert.deepEqual(
      reqs.map((x) => x.text),
      ["0", "1", "2"],
    );
    await poll(async () => (await queue.get()).lag === 0, { what: "lag 0" });
  } finally {
    await queue.delete();
  }
});

test("deleting a queue cancels its waiting messages", async () => {
  const r = await receivers.make();
  const id = uid();
  const queueName = `q-del-${id}`;
  const queue = client.queue({ queueName });
  await queue.upsert({ paused: true });
  const a = await queue.enqueue({ url: r.url(`/del/${id}`), body: "a" });
  const b = await queue.enqueueJSON({ url: r.url(`/del/${id}`), body: { b: 1 } });
  await queue.delete();
  assert.ok(!(await queueNames()).includes(queueName));
  for (const { messageId } of [a, b]) await waitForState(client, messageId, "CANCELED");
  assert.deepEqual(r.received(`/del/${id}`), []);
});

test("a delayed head message holds its place: later messages wait behind it (strict FIFO)", async () => {
  // the TS SDK sends Upstash-Delay on enqueue (spec §4.3, §12 recommendation)
  const r = await receivers.make();
  const id = uid();
  const queue = client.queue({ queueName: `q-delay-${id}` });
  try {
    const head = await queue.enqueue({ url: r.url(`/qd/${id}`), body: "head", delay: 1 });
    const next = await queue.enqueue({ url: r.url(`/qd/${id}`), body: "next" });
    const msg = await client.messages.get(head.messageId);
    assert.ok(Math.abs(msg.notBefore - (msg.createdAt + 1000)) <= 500);
    const reqs = await r.waitFor((x) => x.path === `/qd/${id}`, { count: 2 });
    assert.deepEqual(
      reqs.map((x) => x.text),
      ["head", "next"],
    );
    assert.equal(reqs[1].header("upstash-message-id"), next.messageId);
    assert.ok(reqs[0].time >= msg.createdAt + 1000 - 250);
  } finally {
    await queue.delete();
  }
});

test("enqueue to a URL group: one message per endpoint, each in the queue", async () => {
  const r = await receivers.make();
  const id = uid();
  const name = `ug-q-${id}`;
  const queueName = `q-ug-${id}`;
  const urls = [r.url(`/ugq/${id}/a`), r.url(`/ugq/${id}/b`)];
  await client.urlGroups.addEndpoints({ name, endpoints: [{ url: urls[0], name: "first" }, { url: urls[1] }] });
  try {
    const res = await client.queue({ queueName }).enqueueJSON({ urlGroup: name, body: { to: "group" } });
    assert.ok(Array.isArray(res));
    assert.deepEqual(
      res.map((x) => x.url),
      urls,
    );
    assert.equal(new Set(res.map((x) => x.messageId)).size, 2);
    for (const { messageId, url } of res) {
      const [req] = await r.waitForMessage(messageId);
      assert.equal(r.base + req.path, url);
      assert.equal(req.header("upstash-topic-name"), name);
      assert.deepEqual(req.json(), { to: "group" });
      const msg = await client.messages.get(messageId);
      assert.deepEqual([msg.queueName, msg.urlGroup, msg.topicName, msg.url], [queueName, name, name, url]);
    }
    assert.equal((await client.messages.get(res[0].messageId)).endpointName, "first");
    assert.equal((await client.messages.get(res[1].messageId)).endpointName, undefined);
  } finally {
    await client.queue({ queueName }).delete();
    await client.urlGroups.delete(name);
  }
});

test("enqueue with flow control: the message and the key carry it", async () => {
  const r = await receivers.make();
  const id = uid();
  const key = `fc-enq-${id}`;
  const queueName = `q-fc-${id}`;
  const res = await client.queue({ queueName }).enqueue({
    url: r.url(`/qfc/${id}`),
    body: "x",
    flowControl: { key, parallelism: 2, rate: 5, period: "1m" },
  });
  try {
    const msg = await client.messages.get(res.messageId);
    assert.equal(msg.queueName, queueName);
    assert.equal(msg.flowControlKey, key);
    assert.equal(msg.parallelism, 2);
    assert.equal(msg.rate, 5);
    assert.equal(msg.ratePerSecond, 5);
    assert.equal(msg.period, 60);
    const info = await client.flowControl.get(key);
    assert.deepEqual([info.parallelismMax, info.rateMax, info.ratePeriod], [2, 5, 60]);
    await r.waitForMessage(res.messageId);
  } finally {
    await client.queue({ queueName }).delete();
  }
});

test("queueName filters: cancel, logs and DLQ", async () => {
  const r = await receivers.make({ status: 500, body: "queue item failed" });
  const id = uid();
  const [qa, qb] = [`q-fa-${id}`, `q-fb-${id}`];
  await client.queue({ queueName: qa }).upsert({ paused: true });
  await client.queue({ queueName: qb }).upsert({ paused: true });
  try {
    const a = await client.queue({ queueName: qa }).enqueue({ url: r.url(`/qf/${id}/a`), body: "a", retries: 0 });
    const b = await client.queue({ queueName: qb }).enqueue({ url: r.url(`/qf/${id}/b`), body: "b", retries: 0 });
    const b2 = await client.queue({ queueName: qb }).enqueue({ url: r.url(`/qf/${id}/b2`), body: "b2", retries: 0 });
    const byQueue = await client.logs({ filter: { queueName: qb } });
    assert.deepEqual(new Set(byQueue.logs.map((l) => l.messageId)), new Set([b.messageId, b2.messageId]));
    assert.ok(byQueue.logs.every((l) => l.queueName === qb));

    assert.deepEqual(await client.messages.cancel({ filter: { queueName: qa } }), { cancelled: 1 });
    await waitForState(client, a.messageId, "CANCELED");
    assert.equal((await client.queue({ queueName: qa }).get()).lag, 0);
    assert.equal((await client.queue({ queueName: qb }).get()).lag, 2);

    await client.queue({ queueName: qb }).resume();
    await waitForState(client, b2.messageId, "FAILED");
    const { messages } = await client.dlq.listMessages({ filter: { queueName: qb } });
    assert.deepEqual(new Set(messages.map((m) => m.messageId)), new Set([b.messageId, b2.messageId]));
    assert.ok(messages.every((m) => m.queueName === qb));
    assert.deepEqual((await client.dlq.listMessages({ filter: { queueName: qa } })).messages, []);
    await client.dlq.delete({ filter: { queueName: qb } });
  } finally {
    await client.queue({ queueName: qa }).delete();
    await client.queue({ queueName: qb }).delete();
  }
});
