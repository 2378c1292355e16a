// client.dlq.listMessages / delete / retry (spec §5.8, §6.2, §11).
import assert from "node:assert/strict";
import { after, afterEach, before, test } from "node:test";

import { QstashError } from "@upstash/qstash";

import { makeClient, poll, receiverPool, startTern, uid, waitForDlq } from "./harness.mjs";

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

const publishFailing = async (r, path, extra = {}) =>
  (await client.publish({ url: r.url(path), body: "payload", retries: 0, ...extra })).messageId;

test("a failed message lands in the DLQ with the last response", async () => {
  const id = uid();
  const r = await receivers.make({ status: 500, body: `internal boom ${id}` });
  const url = r.url(`/dlq500/${id}`);
  const mid = (
    await client.publish({ url, body: `body-${id}`, retries: 0, headers: { "X-Dlq": "1" }, label: `l-${id}` })
  ).messageId;
  const messages = await waitForDlq(client, mid);
  assert.equal(messages.length, 1);
  const [entry] = messages;
  assert.ok(entry.dlqId);
  assert.equal(entry.messageId, mid);
  assert.equal(entry.url, url);
  assert.equal(entry.method, "POST");
  assert.equal(entry.body, `body-${id}`);
  assert.deepEqual(entry.header["X-Dlq"], ["1"]);
  assert.equal(entry.maxRetries, 0);
  assert.equal(entry.responseStatus, 500);
  assert.equal(entry.responseBody, `internal boom ${id}`);
  assert.equal(entry.label, `l-${id}`);
  assert.deepEqual(entry.labels, [`l-${id}`]);
  assert.equal(entry.urlGroup, undefined);
  assert.ok(entry.createdAt > 0);

  // listable by dlqIds too
  const byId = await client.dlq.listMessages({ dlqIds: [entry.dlqId] });
  assert.deepEqual(
    byId.messages.map((m) => m.messageId),
    [mid],
  );
  assert.deepEqual(await client.dlq.delete(entry.dlqId), { deleted: 1 });
});

test("a 404 response body is kept as literal text", async () => {
  const r = await receivers.make({ status: 404, body: "404 Not Found" });
  const mid = await publishFailing(r, "/dlq404");
  const [entry] = await waitForDlq(client, mid);
  assert.equal(entry.responseStatus, 404);
  assert.equal(entry.responseBody, "404 Not Found");
  assert.equal(entry.responseBodyBase64, undefined);
  await client.dlq.delete(entry.dlqId);
});

test("delete(dlqId) removes the entry; a second delete rejects", async () => {
  const r = await receivers.make({ status: 500, body: "x" });
  const mid = await publishFailing(r, "/del");
  const [entry] = await waitForDlq(client, mid);
  await client.dlq.delete(entry.dlqId);
  assert.deepEqual((await client.dlq.listMessages({ filter: { messageId: mid } })).messages, []);
  await assert.rejects(client.dlq.delete(entry.dlqId), QstashError);
});

test("retry(dlqId) republishes as a new message and removes the entry", async () => {
  const id = uid();
  const r = await receivers.make();
  let fail = true;
  r.setReply(() => (fail ? { status: 500, body: "first fails" } : { status: 200, body: "ok" }));
  const url = r.url(`/retry/${id}`);
  const mid = (await client.publish({ url, body: `retry-${id}`, retries: 0, headers: { "X-R": "1" } })).messageId;
  const [entry] = await waitForDlq(client, mid);

  fail = false;
  const res = await client.dlq.retry(entry.dlqId);
  assert.ok(Array.isArray(res.responses));
  assert.equal(res.responses.length, 1);
  const newId = res.responses[0].messageId;
  assert.ok(newId);
  assert.notEqual(newId, mid);
  assert.equal(res.cursor, undefined);

  const [req] = await r.waitForMessage(newId);
  assert.equal(req.text, `retry-${id}`);
  assert.equal(req.header("x-r"), "1");
  assert.equal(req.path, `/retry/${id}`);

  // the entry is gone
  await assert.rejects(client.dlq.delete(entry.dlqId), QstashError);
  assert.deepEqual((await client.dlq.listMessages({ filter: { messageId: mid } })).messages, []);
});

test("retry([ids]) retries each entry; bulk delete of already-retried ids does not fail", async () => {
  const r = await receivers.make({ status: 500, body: "x" });
  const mids = [await publishFailing(r, "/rmany/1"), await publishFailing(r, "/rmany/2")];
  const dlqIds = [];
  for (const mid of mids) dlqIds.push((await waitForDlq(client, mid))[0].dlqId);
  r.setReply({ status: 200, body: "ok" });
  const res = await client.dlq.retry(dlqIds);
  assert.equal(res.responses.length, 2);
  for (const { messageId } of res.responses) await r.waitForMessage(messageId);
  const cleanup = await client.dlq.delete(dlqIds);
  assert.equal(cleanup.deleted, 0);
});

test("retry with a filter that matches nothing returns an empty responses array", async () => {
  const res = await client.dlq.retry({ filter: { label: `nothing-${uid()}` } });
  assert.deepEqual(res.responses, []);
  assert.equal(res.cursor, undefined);
});

test("bulk delete by ids, by filter, and all", async () => {
  const id = uid();
  const r = await receivers.make({ status: 500, body: "x" });
  const a = await publishFailing(r, "/bulk/a");
  const b = await publishFailing(r, "/bulk/b");
  const dlqA = (await waitForDlq(client, a))[0].dlqId;
  const dlqB = (await waitForDlq(client, b))[0].dlqId;
  assert.deepEqual(await client.dlq.delete({ dlqIds: [dlqA, dlqB, "1-0"] }), { deleted: 2 });

  const c = await publishFailing(r, "/bulk/c", { label: `bulk-${id}` });
  const d = await publishFailing(r, "/bulk/d", { label: `bulk-${id}` });
  const keep = await publishFailing(r, "/bulk/keep", { label: `keep-${id}` });
  for (const mid of [c, d, keep]) await waitForDlq(client, mid);
  const byFilter = await client.dlq.delete({ filter: { label: `bulk-${id}` } });
  assert.equal(byFilter.deleted, 2);
  assert.equal(byFilter.cursor, undefined);
  assert.equal((await client.dlq.listMessages({ filter: { messageId: keep } })).messages.length, 1);

  const none = await client.dlq.delete({ filter: { label: `none-${id}` } });
  assert.equal(none.deleted, 0);
  assert.equal(none.cursor, undefined);

  const all = await client.dlq.delete({ all: true });
  assert.ok(all.deleted >= 1);
  await poll(async () => (await client.dlq.listMessages()).messages.length === 0, { what: "empty DLQ" });
});

test("listMessages filters and cursor pagination", async () => {
  const id = uid();
  const r500 = await receivers.make({ status: 500, body: "a" });
  const r404 = await receivers.make({ status: 404, body: "b" });
  const label = `page-${id}`;
  const mids = [
    await publishFailing(r500, `/page/${id}/1`, { label }),
    await publishFailing(r500, `/page/${id}/2`, { label }),
    await publishFailing(r404, `/page/${id}/3`, { label }),
  ];
  await poll(async () => (await client.dlq.listMessages({ filter: { label } })).messages.length === 3, {
    what: "3 DLQ entries",
  });

  const byStatus = await client.dlq.listMessages({ filter: { label, responseStatus: 404 } });
  assert.deepEqual(
    byStatus.messages.map((m) => m.messageId),
    [mids[2]],
  );
  const byUrl = await client.dlq.listMessages({ filter: { url: r500.url(`/page/${id}/1`) } });
  assert.deepEqual(
    byUrl.messages.map((m) => m.messageId),
    [mids[0]],
  );

  const first = await client.dlq.listMessages({ count: 2, filter: { label } });
  assert.equal(first.messages.length, 2);
  assert.ok(first.cursor, "a cursor when more entries remain");
  const second = await client.dlq.listMessages({ count: 2, cursor: first.cursor, filter: { label } });
  assert.equal(second.messages.length, 1);
  assert.equal(second.cursor, undefined, "no cursor on the last page");
  const seen = [...first.messages, ...second.messages].map((m) => m.messageId).sort();
  assert.deepEqual(seen, [...mids].sort());
  await client.dlq.delete({ filter: { label } });
});
