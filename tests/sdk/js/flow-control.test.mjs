// client.flowControl get / pause / resume / pin / unpin / resetRate / getGlobalParallelism and
// flow control on publish / enqueue / batch (spec §4.2, §4.3, §5.10, §6.1, §6.7, §13).
import assert from "node:assert/strict";
import { after, afterEach, before, test } from "node:test";

import { QstashError } from "@upstash/qstash";

import {
  USER1,
  gauge,
  makeClient,
  poll,
  rawRequest,
  receiverPool,
  startTern,
  uid,
  waitForDlq,
  waitForState,
} from "./harness.mjs";

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
const limits = (info) => [info.parallelismMax, info.rateMax, info.ratePeriod];
const pins = (info) => [info.isPinnedParallelism, info.isPinnedRate];

test("messages.get shows flowControlKey, parallelism, rate/ratePerSecond and period", async () => {
  const r = await receivers.make();
  const id = uid();
  const cases = [
    [{ parallelism: 2 }, { parallelism: 2, rate: undefined, period: 1 }],
    [{ rate: 5, period: "1d" }, { parallelism: undefined, rate: 5, period: 86400 }],
    [{ ratePerSecond: 3 }, { parallelism: undefined, rate: 3, period: 1 }],
    [{ parallelism: 4, rate: 10, period: 60 }, { parallelism: 4, rate: 10, period: 60 }],
    [{ rate: 7, period: "1h30m3s" }, { parallelism: undefined, rate: 7, period: 5403 }],
  ];
  const ids = [];
  try {
    for (const [i, [flow, want]] of cases.entries()) {
      const key = `fc-msg-${id}-${i}`;
      const res = await client.publish({ url: r.url("/fc"), body: "x", delay: 3600, flowControl: { key, ...flow } });
      ids.push(res.messageId);
      const msg = await client.messages.get(res.messageId);
      assert.equal(msg.flowControlKey, key);
      assert.equal(msg.parallelism, want.parallelism, JSON.stringify(msg));
      assert.equal(msg.rate, want.rate, JSON.stringify(msg));
      assert.equal(msg.ratePerSecond, want.rate);
      assert.equal(msg.period, want.period);
      // absent, not null, when unset
      if (want.parallelism === undefined) assert.ok(!("parallelism" in msg));
      if (want.rate === undefined) assert.ok(!("rate" in msg));
      const info = await client.flowControl.get(key);
      assert.deepEqual(limits(info), [want.parallelism ?? 0, want.rate ?? 0, want.period]);
    }
  } finally {
    await client.messages.cancel(ids);
  }
});

test("flowControl.get returns every FlowControlInfo field; unknown keys are 404", async () => {
  const r = await receivers.make();
  const id = uid();
  const key = `fc-info-${id}`;
  const res = await client.publish({ url: r.url(`/info/${id}`), body: "x", flowControl: { key, parallelism: 3, rate: 9, period: 30 } });
  await r.waitForMessage(res.messageId);
  const info = await poll(async () => {
    const i = await client.flowControl.get(key);
    return i.rateCount === 1 && i.parallelismCount === 0 ? i : undefined;
  }, { what: "rate count 1" });
  // every §6.7 field is present (the SDK passes the JSON through unchanged)
  for (const field of [
    "flowControlKey",
    "isPaused",
    "isPinnedParallelism",
    "isPinnedRate",
    "parallelismCount",
    "parallelismMax",
    "rateCount",
    "rateMax",
    "ratePeriod",
    "ratePeriodStart",
    "waitListSize",
  ]) {
    assert.ok(field in info, `${field} missing: ${JSON.stringify(info)}`);
  }
  assert.equal(info.flowControlKey, key);
  assert.deepEqual(limits(info), [3, 9, 30]);
  assert.equal(info.waitListSize, 0);
  assert.equal(info.isPaused, false);
  assert.deepEqual(pins(info), [false, false]);
  assert.ok(Math.abs(info.ratePeriodStart - Date.now() / 1000) < 30, `ratePeriodStart in seconds: ${info.ratePeriodStart}`);

  await assert.rejects(client.flowControl.get(`fc-unknown-${id}`), status(404));
});

test("a flow-control value the SDK builds from an empty config is refused by the SDK", async () => {
  const r = await receivers.make();
  await assert.rejects(client.publish({ url: r.url("/x"), body: "x", flowControl: { key: `fc-none-${uid()}` } }), /at least one/);
});

test("pin 3/20/120 right after a publish to a slow endpoint; pins override message settings; unpin per dimension", async () => {
  const g = gauge(10_000);
  const r = await receivers.make(g.reply);
  const id = uid();
  const key = `fc-pin-${id}`;
  const slow = r.url(`/slow/${id}`);
  const first = await client.publish({ url: slow, body: "1", flowControl: { key, parallelism: 1, rate: 1 } });
  try {
    await client.flowControl.pin(key, { parallelism: 3, rate: 20, period: 120 });
    let info = await client.flowControl.get(key);
    assert.deepEqual(limits(info), [3, 20, 120]);
    assert.deepEqual(pins(info), [true, true]);

    const second = await client.publish({ url: slow, body: "2", flowControl: { key, parallelism: 1, rate: 1, period: 5 } });
    info = await client.flowControl.get(key);
    assert.deepEqual(limits(info), [3, 20, 120]);
    const msg = await client.messages.get(second.messageId);
    assert.deepEqual([msg.parallelism, msg.rate, msg.period], [1, 1, 5]);
    // the pinned parallelism lets the second message run next to the first
    await r.waitFor((q) => q.path === `/slow/${id}`, { count: 2 });
    await poll(async () => (await client.flowControl.get(key)).parallelismCount === 2, { what: "2 in flight" });

    await client.flowControl.unpin(key, { parallelism: true });
    info = await client.flowControl.get(key);
    assert.deepEqual(pins(info), [false, true]);
    assert.deepEqual(limits(info), [3, 20, 120]); // kept until a message brings other settings
    await client.publish({ url: slow, body: "3", flowControl: { key, parallelism: 5, rate: 2 } });
    assert.deepEqual(limits(await client.flowControl.get(key)), [5, 20, 120]);

    await client.flowControl.unpin(key, { rate: true });
    assert.deepEqual(pins(await client.flowControl.get(key)), [false, false]);
    await client.publish({ url: slow, body: "4", flowControl: { key, rate: 7, period: 3 } });
    assert.deepEqual(limits(await client.flowControl.get(key)), [0, 7, 3]);
  } finally {
    g.release();
    // cancelling a message whose attempt is in flight is not an error
    await client.messages.cancel(first.messageId);
  }
  await r.waitFor((q) => q.path === `/slow/${id}`, { count: 4 });
});

test("pin validation: a zero value or a period beyond a week is 400", async () => {
  const key = `fc-pinbad-${uid()}`;
  await assert.rejects(client.flowControl.pin(key, { rate: 0 }), status(400));
  await assert.rejects(client.flowControl.pin(key, { rate: 1, period: 8 * 86400 }), status(400));
});

test("parallelism 1: one delivery in flight, the others in the waitlist", async () => {
  const g = gauge(250);
  const r = await receivers.make(g.reply);
  const id = uid();
  const key = `fc-par-${id}`;
  for (let i = 0; i < 3; i++) await client.publish({ url: r.url(`/par/${id}`), body: String(i), flowControl: { key, parallelism: 1 } });
  const info = await poll(async () => {
    const i = await client.flowControl.get(key);
    return i.parallelismCount === 1 && i.waitListSize === 2 ? i : undefined;
  }, { what: "1 in flight, 2 waiting" });
  assert.equal(info.parallelismMax, 1);
  const reqs = await r.waitFor((q) => q.path === `/par/${id}`, { count: 3 });
  assert.equal(g.peak, 1);
  const gaps = reqs.slice(1).map((q, i) => q.time - reqs[i].time);
  assert.ok(
    gaps.every((gap) => gap >= 220),
    `gaps ${gaps}`,
  );
  await poll(async () => (await client.flowControl.get(key)).waitListSize === 0, { what: "empty waitlist" });
});

test("rate 2 per second: the third message waits for the next window", async () => {
  const r = await receivers.make();
  const id = uid();
  const key = `fc-rate-${id}`;
  for (let i = 0; i < 3; i++) await client.publish({ url: r.url(`/rate/${id}`), body: String(i), flowControl: { key, rate: 2, period: 1 } });
  const reqs = await r.waitFor((q) => q.path === `/rate/${id}`, { count: 3 });
  assert.ok(reqs[1].time - reqs[0].time < 500);
  assert.ok(reqs[2].time - reqs[0].time >= 800, `third after ${reqs[2].time - reqs[0].time} ms`);
});

test("resetRate ends the current window: a waiting message starts at once", async () => {
  const r = await receivers.make();
  const id = uid();
  const key = `fc-reset-${id}`;
  const flowControl = { key, rate: 1, period: 60 };
  const first = await client.publish({ url: r.url(`/rr/${id}`), body: "1", flowControl });
  const second = await client.publish({ url: r.url(`/rr/${id}`), body: "2", flowControl });
  await r.waitForMessage(first.messageId);
  const info = await poll(async () => {
    const i = await client.flowControl.get(key);
    return i.waitListSize === 1 ? i : undefined;
  }, { what: "second message waiting" });
  assert.deepEqual([info.rateCount, info.rateMax, info.ratePeriod], [1, 1, 60]);
  await client.flowControl.resetRate(key);
  await r.waitForMessage(second.messageId, { timeout: 5000 });
  const after = await poll(async () => {
    const i = await client.flowControl.get(key);
    return i.waitListSize === 0 ? i : undefined;
  }, { what: "empty waitlist" });
  assert.equal(after.rateCount, 1);
});

test("resetRate while a delivery is in flight: rateCount reads 0; deleting the in-flight message works", async () => {
  // the SDK tests: publish to a slow endpoint, resetRate, rateCount 0, then messages.delete
  const g = gauge(10_000);
  const r = await receivers.make(g.reply);
  const id = uid();
  const key = `fc-reset-busy-${id}`;
  const { messageId } = await client.publish({
    url: r.url(`/busy/${id}`),
    body: "hello",
    flowControl: { key, parallelism: 5, rate: 10, period: "1m" },
  });
  try {
    await r.waitForMessage(messageId);
    await poll(async () => (await client.flowControl.get(key)).rateCount === 1, { what: "rate count 1" });
    await client.flowControl.resetRate(key);
    const info = await client.flowControl.get(key);
    assert.deepEqual([info.rateCount, info.parallelismCount, info.rateMax, info.ratePeriod], [0, 1, 10, 60]);
    // deprecated alias of cancel; the SDK tests clean up with it
    await client.messages.delete(messageId);
  } finally {
    g.release();
  }
});

test("pause keeps messages in the waitlist (waitListSize > 0) until resume", async () => {
  const r = await receivers.make();
  const id = uid();
  const key = `fc-pause-${id}`;
  await client.flowControl.pause(key); // creates the key
  await client.flowControl.pause(key); // idempotent
  assert.equal((await client.flowControl.get(key)).isPaused, true);
  const ids = [];
  for (let i = 0; i < 3; i++) {
    ids.push((await client.publish({ url: r.url(`/fcp/${id}`), body: String(i), flowControl: { key, parallelism: 5 } })).messageId);
  }
  const info = await poll(async () => {
    const i = await client.flowControl.get(key);
    return i.waitListSize === 3 ? i : undefined;
  }, { what: "3 waiting" });
  assert.equal(info.isPaused, true);
  assert.equal(info.parallelismCount, 0);
  const probe = await client.publish({ url: r.url(`/probe/${id}`), body: "probe" });
  await r.waitForMessage(probe.messageId);
  assert.deepEqual(r.received(`/fcp/${id}`), []);

  await client.flowControl.resume(key);
  await r.waitFor((q) => q.path === `/fcp/${id}`, { count: 3 });
  for (const mid of ids) await waitForState(client, mid, "DELIVERED");
  const resumed = await client.flowControl.get(key);
  assert.equal(resumed.isPaused, false);
  assert.equal(resumed.waitListSize, 0);
});

test("getGlobalParallelism: {parallelismMax, parallelismCount} counting deliveries in flight", async () => {
  const g = gauge(10_000);
  const r = await receivers.make(g.reply);
  const idle = await client.flowControl.getGlobalParallelism();
  assert.deepEqual(Object.keys(idle).sort(), ["parallelismCount", "parallelismMax"]);
  assert.ok(Number.isInteger(idle.parallelismMax) && idle.parallelismMax > 0);
  assert.ok(Number.isInteger(idle.parallelismCount) && idle.parallelismCount >= 0);
  const raw = await rawRequest(tern.url, "GET", "/v2/globalParallelism", { token: USER1.token });
  assert.equal(raw.status, 200);
  assert.deepEqual(Object.keys(raw.json()).sort(), ["parallelismCount", "parallelismMax"]);

  const res = await client.publish({ url: r.url("/gp"), body: "x" });
  try {
    await r.waitForMessage(res.messageId);
    const busy = await poll(async () => {
      const info = await client.flowControl.getGlobalParallelism();
      return info.parallelismCount >= 1 ? info : undefined;
    }, { what: "a delivery in flight" });
    assert.equal(busy.parallelismMax, idle.parallelismMax);
  } finally {
    g.release();
  }
  await waitForState(client, res.messageId, "DELIVERED");
});

test("flow control on enqueue and on batch items", async () => {
  const r = await receivers.make();
  const id = uid();
  const key = `fc-eb-${id}`;
  const queueName = `q-fc-${id}`;
  const enq = await client.queue({ queueName }).enqueueJSON({
    url: r.url(`/eb/${id}/q`),
    body: { q: 1 },
    flowControl: { key, parallelism: 1 },
    delay: 3600,
  });
  const batch = await client.batchJSON([
    { url: r.url(`/eb/${id}/1`), body: { n: 1 }, flowControl: { key, rate: 4, period: "1m" }, delay: 3600 },
    { url: r.url(`/eb/${id}/2`), body: { n: 2 }, queueName, flowControl: { key, parallelism: 2, ratePerSecond: 6 }, delay: 3600 },
    { url: r.url(`/eb/${id}/3`), body: { n: 3 }, delay: 3600 },
  ]);
  try {
    const m0 = await client.messages.get(enq.messageId);
    assert.deepEqual([m0.flowControlKey, m0.parallelism, m0.rate, m0.period, m0.queueName], [key, 1, undefined, 1, queueName]);
    const [m1, m2, m3] = await Promise.all(batch.map((b) => client.messages.get(b.messageId)));
    assert.deepEqual([m1.flowControlKey, m1.parallelism, m1.rate, m1.period], [key, undefined, 4, 60]);
    assert.deepEqual([m2.flowControlKey, m2.parallelism, m2.rate, m2.period, m2.queueName], [key, 2, 6, 1, queueName]);
    assert.equal(m3.flowControlKey, undefined);
    assert.equal(m3.period, undefined);
    // the key has the settings of the last message that carried it
    assert.deepEqual(limits(await client.flowControl.get(key)), [2, 6, 1]);
  } finally {
    await client.messages.cancel([enq.messageId, ...batch.map((b) => b.messageId)]);
    await client.queue({ queueName }).delete();
  }
});

test("flowControlKey filters: cancel, logs and DLQ", async () => {
  const r = await receivers.make({ status: 500, body: "flow item failed" });
  const id = uid();
  const [ka, kb] = [`fc-fa-${id}`, `fc-fb-${id}`];
  await client.flowControl.pause(ka);
  const waiting = [];
  for (let i = 0; i < 2; i++) {
    waiting.push((await client.publish({ url: r.url(`/ff/${id}/a`), body: String(i), flowControl: { key: ka, parallelism: 1 } })).messageId);
  }
  await poll(async () => (await client.flowControl.get(ka)).waitListSize === 2, { what: "2 waiting" });
  const failing = await client.publish({
    url: r.url(`/ff/${id}/b`),
    body: "b",
    retries: 0,
    retryDelay: "2000 * retried",
    flowControl: { key: kb, parallelism: 10, ratePerSecond: 5, period: "1d" },
  });

  const byKey = await client.logs({ filter: { flowControlKey: ka } });
  assert.deepEqual(new Set(byKey.logs.map((l) => l.messageId)), new Set(waiting));
  assert.ok(byKey.logs.every((l) => l.flowControlKey === ka));

  // cancelling waitlisted messages empties the waitlist
  assert.deepEqual(await client.messages.cancel({ filter: { flowControlKey: ka } }), { cancelled: 2 });
  for (const mid of waiting) await waitForState(client, mid, "CANCELED");
  await poll(async () => (await client.flowControl.get(ka)).waitListSize === 0, { what: "empty waitlist" });
  await client.flowControl.resume(ka);

  const [entry] = await waitForDlq(client, failing.messageId);
  // DLQ entries carry the flow-control settings like messages do
  assert.deepEqual(
    [entry.flowControlKey, entry.parallelism, entry.rate, entry.ratePerSecond, entry.period, entry.retryDelayExpression],
    [kb, 10, 5, 5, 86400, "2000 * retried"],
  );
  const { messages } = await client.dlq.listMessages({ filter: { flowControlKey: kb } });
  assert.deepEqual(
    messages.map((m) => m.messageId),
    [failing.messageId],
  );
  assert.deepEqual((await client.dlq.listMessages({ filter: { flowControlKey: ka } })).messages, []);
  await client.dlq.delete(entry.dlqId);
  assert.deepEqual(r.received(`/ff/${id}/a`), []);
});
