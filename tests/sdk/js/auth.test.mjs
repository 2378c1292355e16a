// Invalid tokens and per-user isolation (spec §1, §20, §21).
// Read-only tokens are configured only in `tern serve` and are not tested here.
import assert from "node:assert/strict";
import { after, afterEach, before, test } from "node:test";

import { Client, QstashError } from "@upstash/qstash";

import { USER2, makeClient, receiverPool, startTern, uid, waitForDlq } from "./harness.mjs";

let tern;
let client;
let bad;
const receivers = receiverPool();

before(async () => {
  tern = await startTern();
  client = makeClient(tern);
  bad = new Client({ baseUrl: tern.url, token: "not-a-valid-token", devMode: false, retry: false });
});
afterEach(async () => {
  await receivers.closeAll();
});
after(async () => {
  await receivers.closeAll();
  await tern?.stop();
});

const is401 = (error) => {
  assert.ok(error instanceof QstashError, String(error));
  assert.equal(error.status, 401);
  return true;
};

test("an invalid token makes publish reject with 401 and nothing is delivered", async () => {
  const r = await receivers.make();
  await assert.rejects(bad.publish({ url: r.url(`/bad/${uid()}`), body: "x" }), is401);
  await assert.rejects(bad.publishJSON({ url: r.url("/bad"), body: { a: 1 } }), is401);
  assert.deepEqual(r.received(), []);
});

for (const [name, call] of [
  ["messages.get", (c) => c.messages.get("msg_x")],
  ["messages.cancel all", (c) => c.messages.cancel({ all: true })],
  ["dlq.listMessages", (c) => c.dlq.listMessages()],
  ["logs", (c) => c.logs()],
  ["batch", (c) => c.batch([{ url: "http://127.0.0.1:1/x", body: "x" }])],
]) {
  test(`an invalid token makes ${name} reject with 401`, async () => {
    await assert.rejects(call(bad), is401);
  });
}

test("another user's token cannot see or cancel user 1's messages", async () => {
  const r = await receivers.make();
  const user2 = makeClient(tern, USER2.token);
  const mid = (await client.publish({ url: r.url("/iso"), body: "iso", delay: 3600 })).messageId;
  try {
    await assert.rejects(user2.messages.get(mid), QstashError);
    await assert.rejects(user2.messages.cancel(mid), QstashError);
    await user2.messages.cancel({ all: true });
    assert.deepEqual((await user2.logs({ filter: { messageId: mid } })).logs, []);
    assert.equal((await client.messages.get(mid)).messageId, mid);
  } finally {
    await client.messages.cancel(mid);
  }
});

test("the DLQ is per user", async () => {
  const r = await receivers.make({ status: 500, body: "x" });
  const user2 = makeClient(tern, USER2.token);
  const mid = (await client.publish({ url: r.url("/isodlq"), body: "x", retries: 0 })).messageId;
  const [entry] = await waitForDlq(client, mid);
  try {
    assert.deepEqual((await user2.dlq.listMessages({ filter: { messageId: mid } })).messages, []);
    await assert.rejects(user2.dlq.delete(entry.dlqId), QstashError);
  } finally {
    await client.dlq.delete(entry.dlqId);
  }
});
