// client.messages.get / cancel (single, ids, filter, all) and the deprecated delete APIs
// (spec §5.4, §6.1).
import assert from "node:assert/strict";
import { after, afterEach, before, test } from "node:test";

import { QstashError } from "@upstash/qstash";

import { logStates, makeClient, poll, receiverPool, startTern, uid, waitForState } from "./harness.mjs";

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

const delayed = async (r, path, extra = {}) =>
  (await client.publish({ url: r.url(path), body: "pending", delay: 3600, ...extra })).messageId;

test("messages.get returns the §6.1 fields", async () => {
  const r = await receivers.make();
  const id = uid();
  const url = r.url(`/fields/${id}?x=1`);
  const before = Date.now();
  const res = await client.publish({
    url,
    body: `hello ${id}`,
    method: "PUT",
    headers: { "Content-Type": "text/plain", "test-header": "test-value" },
    retries: 2,
    retryDelay: "1000 * (1 + retried)",
    callback: r.url(`/cb/${id}`),
    failureCallback: r.url(`/fcb/${id}`),
    delay: 3600,
    label: [`lbl-${id}`, `other-${id}`],
  });
  try {
    const msg = await client.messages.get(res.messageId);
    assert.equal(msg.messageId, res.messageId);
    assert.equal(msg.url, url);
    assert.equal(msg.method, "PUT");
    assert.deepEqual(msg.header, { "Content-Type": ["text/plain"], "Test-Header": ["test-value"] });
    assert.equal(msg.body, `hello ${id}`);
    assert.equal(msg.bodyBase64, undefined);
    assert.equal(msg.maxRetries, 2);
    assert.equal(msg.retryDelayExpression, "1000 * (1 + retried)");
    assert.ok(msg.createdAt >= before - 5000 && msg.createdAt <= Date.now() + 5000);
    assert.ok(Math.abs(msg.notBefore - (msg.createdAt + 3_600_000)) <= 2000);
    assert.equal(msg.callback, r.url(`/cb/${id}`));
    assert.equal(msg.failureCallback, r.url(`/fcb/${id}`));
    assert.equal(msg.label, `lbl-${id}`);
    assert.deepEqual(msg.labels, [`lbl-${id}`, `other-${id}`]);
    assert.ok(msg.callerIp, "callerIp must be present");
    assert.equal(msg.urlGroup, undefined);
    assert.equal(msg.topicName, undefined);
    assert.equal(msg.queueName, undefined);
    assert.equal(msg.scheduleId, undefined);
    assert.equal(msg.flowControlKey, undefined);
    // optional fields are omitted, never null
    for (const [k, v] of Object.entries(msg)) assert.notEqual(v, null, `${k} is null`);
  } finally {
    await client.messages.cancel(res.messageId);
  }
});

test("messages.get defaults", async () => {
  const r = await receivers.make();
  const mid = await delayed(r, "/defaults");
  try {
    const msg = await client.messages.get(mid);
    assert.equal(msg.method, "POST");
    assert.equal(msg.maxRetries, 3);
    assert.equal(msg.callback, undefined);
    assert.equal(msg.failureCallback, undefined);
    assert.equal(msg.label, undefined);
  } finally {
    await client.messages.cancel(mid);
  }
});

test("messages.get of an unknown id rejects with 404", async () => {
  await assert.rejects(client.messages.get("msg_doesnotexist123"), (error) => {
    assert.ok(error instanceof QstashError);
    assert.equal(error.status, 404);
    return true;
  });
});

test("cancel(id) returns {cancelled: 1} and logs CANCEL_REQUESTED + CANCELED", async () => {
  const r = await receivers.make();
  const mid = await delayed(r, "/cancel");
  assert.deepEqual(await client.messages.cancel(mid), { cancelled: 1 });
  await waitForState(client, mid, "CANCELED");
  const states = await logStates(client, mid);
  assert.ok(states.includes("CANCEL_REQUESTED"), String(states));
  assert.ok(!states.includes("DELIVERED"));
});

test("cancel(id) of a delivered message is not an error ({cancelled: 0})", async () => {
  const r = await receivers.make();
  const res = await client.publish({ url: r.url("/done"), body: "d" });
  await r.waitForMessage(res.messageId);
  await waitForState(client, res.messageId, "DELIVERED");
  assert.deepEqual(await client.messages.cancel(res.messageId), { cancelled: 0 });
});

test("cancel(unknown id) rejects", async () => {
  await assert.rejects(client.messages.cancel("msg_doesnotexist456"), QstashError);
});

test("cancel([ids]) cancels exactly those messages; unknown ids are skipped", async () => {
  const r = await receivers.make();
  const a = await delayed(r, "/ids/a");
  const b = await delayed(r, "/ids/b");
  const keep = await delayed(r, "/ids/keep");
  try {
    assert.deepEqual(await client.messages.cancel([a, b, "msg_unknown789"]), { cancelled: 2 });
    await waitForState(client, a, "CANCELED");
    await waitForState(client, b, "CANCELED");
    assert.ok(!(await logStates(client, keep)).includes("CANCELED"));
    assert.deepEqual(await client.messages.cancel([a, b]), { cancelled: 0 });
    assert.deepEqual(await client.messages.cancel([]), { cancelled: 0 }); // client-side short cut
  } finally {
    await client.messages.cancel(keep);
  }
});

test("cancel({filter: {label}}) cancels only matching messages", async () => {
  const r = await receivers.make();
  const id = uid();
  const a = await delayed(r, "/flt/a", { label: `cancel-${id}` });
  const b = await delayed(r, "/flt/b", { label: [`x-${id}`, `cancel-${id}`] });
  const keep = await delayed(r, "/flt/keep", { label: `keep-${id}` });
  try {
    const res = await client.messages.cancel({ filter: { label: `cancel-${id}` } });
    assert.equal(res.cancelled, 2);
    await waitForState(client, a, "CANCELED");
    await waitForState(client, b, "CANCELED");
    assert.ok(!(await logStates(client, keep)).includes("CANCELED"));
  } finally {
    await client.messages.cancel(keep);
  }
});

test("cancel({filter: {url}}) cancels only messages to that url", async () => {
  const r = await receivers.make();
  const id = uid();
  const a = await delayed(r, `/byurl/${id}`);
  const keep = await delayed(r, `/byurl/${id}/other`);
  try {
    const res = await client.messages.cancel({ filter: { url: r.url(`/byurl/${id}`) } });
    assert.equal(res.cancelled, 1);
    await waitForState(client, a, "CANCELED");
    assert.equal((await client.messages.get(keep)).messageId, keep);
    assert.ok(!(await logStates(client, keep)).includes("CANCELED"));
  } finally {
    await client.messages.cancel(keep);
  }
});

test("cancel({all: true}) cancels every pending message", async () => {
  const r = await receivers.make();
  const ids = [await delayed(r, "/all/1"), await delayed(r, "/all/2"), await delayed(r, "/all/3")];
  const res = await client.messages.cancel({ all: true });
  assert.ok(res.cancelled >= 3, JSON.stringify(res));
  for (const mid of ids) await waitForState(client, mid, "CANCELED");
  assert.deepEqual(await client.messages.cancel({ all: true }), { cancelled: 0 });
});

test("cancel({all: true}) covers more than the SDK's count of 100 in one call", async () => {
  // The SDK sends count=100 and documents that the server ignores it ("no batching loop").
  const r = await receivers.make();
  const items = Array.from({ length: 130 }, (_, i) => ({ url: r.url(`/many/${i}`), body: "pending", delay: 3600 }));
  const published = await client.batch(items);
  const res = await client.messages.cancel({ all: true });
  assert.ok(res.cancelled >= 130, JSON.stringify(res));
  await waitForState(client, published[129].messageId, "CANCELED");
  assert.deepEqual(await client.messages.cancel({ all: true }), { cancelled: 0 });
});

test("deprecated delete / deleteMany / deleteAll", async () => {
  const r = await receivers.make();
  const one = await delayed(r, "/dep/1");
  await client.messages.delete(one);
  await waitForState(client, one, "CANCELED");

  const many = [await delayed(r, "/dep/2"), await delayed(r, "/dep/3")];
  assert.equal(await client.messages.deleteMany(many), 2);

  await delayed(r, "/dep/4");
  assert.ok((await client.messages.deleteAll()) >= 1);
  await poll(async () => (await client.messages.deleteAll()) === 0, { what: "nothing left to cancel" });
});
