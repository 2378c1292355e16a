// client.logs (and deprecated client.events): filters and cursor pagination (spec §5.9, §6.6, §17).
import assert from "node:assert/strict";
import { after, afterEach, before, test } from "node:test";

import { b64decode, makeClient, receiverPool, startTern, uid, waitForDlq, waitForState } from "./harness.mjs";

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

const sortedStates = (logs) => logs.map((l) => l.state).sort();

test("delivered lifecycle: CREATED, ACTIVE, DELIVERED, latest first", async () => {
  const r = await receivers.make();
  const id = uid();
  const url = r.url(`/life/${id}`);
  const res = await client.publish({ url, body: `life-${id}`, headers: { "X-Life": "1" } });
  await waitForState(client, res.messageId, "DELIVERED");
  const page = await client.logs({ filter: { messageId: res.messageId } });
  assert.deepEqual(sortedStates(page.logs), ["ACTIVE", "CREATED", "DELIVERED"]);
  assert.deepEqual(page.events, page.logs, "events mirrors logs");
  assert.equal(page.cursor, undefined);
  assert.equal(page.logs[0].state, "DELIVERED");
  const times = page.logs.map((l) => l.time);
  assert.deepEqual(
    times,
    [...times].sort((a, b) => b - a),
  );
  for (const l of page.logs) {
    assert.equal(l.messageId, res.messageId);
    assert.equal(l.url, url);
    assert.equal(l.urlGroup, undefined);
  }
  const created = page.logs.find((l) => l.state === "CREATED");
  assert.ok(created.nextDeliveryTime);
  assert.equal(b64decode(created.body), `life-${id}`);
  assert.deepEqual(created.header["X-Life"], ["1"]);
});

test("failed lifecycle with retries 0: exactly CREATED, ACTIVE, ERROR, FAILED", async () => {
  const r = await receivers.make({ status: 500, body: "bad" });
  const res = await client.publish({ url: r.url("/fail"), body: "f", retries: 0 });
  const logs = await waitForState(client, res.messageId, "FAILED");
  assert.deepEqual(sortedStates(logs), ["ACTIVE", "CREATED", "ERROR", "FAILED"]);
  const error = logs.find((l) => l.state === "ERROR");
  assert.equal(error.responseStatus, 500);
  assert.ok(error.error);
  const [entry] = await waitForDlq(client, res.messageId);
  await client.dlq.delete(entry.dlqId);
});

test("filters: messageIds, state, label, url, path", async () => {
  const r = await receivers.make();
  const id = uid();
  const label = `logf-${id}`;
  const urlA = r.url(`/logf/${id}/a`);
  const urlB = r.url(`/logf/${id}/b`);
  const a = (await client.publish({ url: urlA, body: "a", label })).messageId;
  const b = (await client.publish({ url: urlB, body: "b", label })).messageId;
  const c = (await client.publish({ url: urlB, body: "c" })).messageId;
  for (const mid of [a, b, c]) await waitForState(client, mid, "DELIVERED");

  const byIds = await client.logs({ messageIds: [a, c] });
  assert.deepEqual(new Set(byIds.logs.map((l) => l.messageId)), new Set([a, c]));
  assert.equal(byIds.logs.length, 6);

  const byLabel = await client.logs({ filter: { label } });
  assert.deepEqual(new Set(byLabel.logs.map((l) => l.messageId)), new Set([a, b]));
  assert.equal(byLabel.logs.length, 6);
  assert.ok(byLabel.logs.every((l) => l.label === label));

  const delivered = await client.logs({ filter: { label, state: "DELIVERED" } });
  assert.deepEqual(delivered.logs.map((l) => l.messageId).sort(), [a, b].sort());
  assert.ok(delivered.logs.every((l) => l.state === "DELIVERED"));

  const byUrl = await client.logs({ filter: { url: urlB } });
  assert.deepEqual(new Set(byUrl.logs.map((l) => l.messageId)), new Set([b, c]));
  assert.ok(byUrl.logs.every((l) => l.url === urlB));

  const byPath = await client.logs({ filter: { path: `/logf/${id}/a` } });
  assert.deepEqual(new Set(byPath.logs.map((l) => l.messageId)), new Set([a]));

  const byTwoLabels = await client.logs({ filter: { label: [label, `none-${id}`] } });
  assert.equal(byTwoLabels.logs.length, 6, "multi-value filters are OR-ed");

  const none = await client.logs({ filter: { label: `none-${id}` } });
  assert.deepEqual(none.logs, []);
  assert.equal(none.cursor, undefined);
});

test("fromDate / toDate", async () => {
  const r = await receivers.make();
  const label = `logt-${uid()}`;
  const start = Date.now();
  const mid = (await client.publish({ url: r.url("/logt"), body: "t", label })).messageId;
  await waitForState(client, mid, "DELIVERED");
  const end = Date.now();
  const inside = await client.logs({ filter: { label, fromDate: start - 1000, toDate: new Date(end + 1000) } });
  assert.equal(inside.logs.length, 3);
  assert.deepEqual((await client.logs({ filter: { label, toDate: start - 60_000 } })).logs, []);
  assert.deepEqual((await client.logs({ filter: { label, fromDate: end + 60_000 } })).logs, []);
});

test("count + cursor pagination; cursor absent on the last page", async () => {
  const r = await receivers.make();
  const label = `logp-${uid()}`;
  const mids = [];
  for (let i = 0; i < 2; i++) mids.push((await client.publish({ url: r.url(`/logp/${i}`), body: String(i), label })).messageId);
  for (const mid of mids) await waitForState(client, mid, "DELIVERED");

  const entries = [];
  let cursor;
  let pages = 0;
  do {
    const page = await client.logs({ count: 2, cursor, filter: { label } });
    assert.ok(page.logs.length <= 2);
    entries.push(...page.logs);
    cursor = page.cursor;
    pages++;
  } while (cursor !== undefined && pages < 10);
  assert.equal(cursor, undefined);
  assert.ok(pages >= 3, `expected 3 pages of 2, got ${pages}`);
  const keys = entries.map((l) => `${l.messageId}/${l.state}/${l.time}`);
  assert.equal(new Set(keys).size, 6, `pages overlap or miss entries: ${keys}`);
  assert.deepEqual(new Set(entries.map((l) => l.messageId)), new Set(mids));
});

test("deprecated client.events() returns the same entries", async () => {
  const r = await receivers.make();
  const mid = (await client.publish({ url: r.url("/events"), body: "e" })).messageId;
  await waitForState(client, mid, "DELIVERED");
  const viaEvents = await client.events({ filter: { messageId: mid } });
  const viaLogs = await client.logs({ filter: { messageId: mid } });
  assert.deepEqual(viaEvents.logs, viaLogs.logs);
});
