// client.publish / publishJSON / batch / batchJSON and their options
// (spec §4, §5.1, §5.3, §7, §9, §10, §16, §23).
import assert from "node:assert/strict";
import { after, afterEach, before, test } from "node:test";

import { Client } from "@upstash/qstash";

import {
  USER1,
  b64decode,
  logStates,
  makeClient,
  makeReceiver,
  poll,
  receiverPool,
  sleep,
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

test("publish delivers body and the standard delivery headers", async () => {
  const r = await receivers.make();
  const id = uid();
  const res = await client.publish({ url: r.url(`/basic/${id}`), body: `hello ${id}`, headers: { "Content-Type": "text/plain" } });
  assert.ok(res.messageId);
  assert.notEqual(res.deduplicated, true);
  const [req] = await r.waitForMessage(res.messageId);
  assert.equal(req.method, "POST");
  assert.equal(req.path, `/basic/${id}`);
  assert.equal(req.text, `hello ${id}`);
  assert.equal(req.header("content-type"), "text/plain");
  assert.equal(req.header("upstash-message-id"), res.messageId);
  assert.equal(req.header("upstash-retried"), "0");
  assert.equal(req.header("user-agent"), "Upstash-QStash");
  assert.ok(req.header("upstash-signature"));
  assert.ok(req.header("upstash-caller-ip"));
  // never forwarded: the QStash token, telemetry, config headers, the Upstash-Forward- prefix
  assert.equal(req.header("authorization"), undefined);
  for (const name of Object.keys(req.headers)) {
    assert.ok(!name.startsWith("upstash-forward-"), name);
    assert.ok(!name.startsWith("upstash-telemetry-"), name);
    assert.ok(!["upstash-method", "upstash-retries", "upstash-delay"].includes(name), name);
  }
});

test("publish without content type forwards fetch's default text/plain;charset=UTF-8", async () => {
  const r = await receivers.make();
  const res = await client.publish({ url: r.url(`/ct/${uid()}`), body: "plain" });
  const [req] = await r.waitForMessage(res.messageId);
  assert.equal(req.header("content-type"), "text/plain;charset=UTF-8");
});

test("publishJSON sends a JSON body with application/json", async () => {
  const r = await receivers.make();
  const payload = { hello: "world", id: uid(), n: [1, 2, 3] };
  const res = await client.publishJSON({ url: r.url("/json"), body: payload });
  const [req] = await r.waitForMessage(res.messageId);
  assert.equal(req.header("content-type"), "application/json");
  assert.deepEqual(req.json(), payload);
});

for (const method of ["PUT", "PATCH", "DELETE", "GET"]) {
  test(`publish with method ${method}`, async () => {
    const r = await receivers.make();
    const res = await client.publish({ url: r.url(`/method/${method}`), body: "m", method });
    const [req] = await r.waitForMessage(res.messageId);
    assert.equal(req.method, method);
  });
}

test("destination query string is kept verbatim", async () => {
  const r = await receivers.make();
  const id = uid();
  const url = r.url(`/query/${id}?a=1&b=two&c=%2Fx`);
  const delayed = await client.publish({ url, body: "q", delay: 3600 });
  try {
    assert.equal((await client.messages.get(delayed.messageId)).url, url);
  } finally {
    await client.messages.cancel(delayed.messageId);
  }
  const res = await client.publish({ url, body: "q" });
  const [req] = await r.waitForMessage(res.messageId);
  assert.equal(req.path, `/query/${id}?a=1&b=two&c=%2Fx`);
});

test("user headers are forwarded and stored under canonical names", async () => {
  const r = await receivers.make();
  const id = uid();
  const headers = { "X-Custom-Header": `v-${id}`, "test-header": "test-value" };
  const res = await client.publish({ url: r.url(`/fwd/${id}`), body: "h", headers });
  const [req] = await r.waitForMessage(res.messageId);
  assert.equal(req.header("x-custom-header"), `v-${id}`);
  assert.equal(req.header("test-header"), "test-value");

  const delayed = await client.publish({ url: r.url(`/fwd/${id}`), body: "h", headers, delay: 3600 });
  try {
    const msg = await client.messages.get(delayed.messageId);
    assert.deepEqual(msg.header, {
      "Content-Type": ["text/plain;charset=UTF-8"],
      "Test-Header": ["test-value"],
      "X-Custom-Header": [`v-${id}`],
    });
  } finally {
    await client.messages.cancel(delayed.messageId);
  }
});

test("a merged multi-value header is one value, never split on commas", async () => {
  const r = await receivers.make();
  const res = await client.publish({
    url: r.url("/multi"),
    body: "m",
    headers: [
      ["test-case", "value-uppercase"],
      ["test-case", "value-lowercase"],
    ],
    delay: 3600,
  });
  try {
    const msg = await client.messages.get(res.messageId);
    assert.deepEqual(msg.header["Test-Case"], ["value-uppercase, value-lowercase"]);
    assert.equal(new Headers(msg.header).get("test-case"), "value-uppercase, value-lowercase");
  } finally {
    await client.messages.cancel(res.messageId);
  }
});

test("client-level (global) headers are forwarded", async () => {
  const r = await receivers.make();
  const globalClient = new Client({
    baseUrl: tern.url,
    token: USER1.token,
    devMode: false,
    retry: false,
    headers: { "x-global": "from-client-config" },
  });
  const res = await globalClient.publish({ url: r.url("/global"), body: "g", headers: { "x-local": "l" } });
  const [req] = await r.waitForMessage(res.messageId);
  assert.equal(req.header("x-global"), "from-client-config");
  assert.equal(req.header("x-local"), "l");
});

test("delay (number and string) sets notBefore and postpones delivery", async () => {
  const r = await receivers.make();
  const long = await client.publish({ url: r.url("/delay-long"), body: "d", delay: 3600 });
  const longStr = await client.publish({ url: r.url("/delay-long"), body: "d", delay: "1d" });
  try {
    const m1 = await client.messages.get(long.messageId);
    assert.ok(Math.abs(m1.notBefore - (m1.createdAt + 3_600_000)) <= 2000, JSON.stringify(m1));
    const m2 = await client.messages.get(longStr.messageId);
    assert.ok(Math.abs(m2.notBefore - (m2.createdAt + 86_400_000)) <= 2000, JSON.stringify(m2));
  } finally {
    await client.messages.cancel([long.messageId, longStr.messageId]);
  }

  const short = await client.publish({ url: r.url("/delay-short"), body: "d", delay: "2s" });
  const msg = await client.messages.get(short.messageId);
  assert.ok(Math.abs(msg.notBefore - (msg.createdAt + 2000)) <= 1000);
  const [req] = await r.waitForMessage(short.messageId);
  assert.ok(req.time >= msg.createdAt + 2000 - 250, "delivered before its delay elapsed");
});

test("notBefore (unix seconds) is echoed in ms and wins over delay", async () => {
  const r = await receivers.make();
  const notBefore = Math.floor(Date.now() / 1000) + 3600;
  const res = await client.publish({ url: r.url("/nb"), body: "nb", notBefore, delay: 10 });
  try {
    assert.equal((await client.messages.get(res.messageId)).notBefore, notBefore * 1000);
  } finally {
    await client.messages.cancel(res.messageId);
  }
  const past = await client.publish({ url: r.url("/nb-past"), body: "nb", notBefore: Math.floor(Date.now() / 1000) - 60 });
  await r.waitForMessage(past.messageId);
});

test("retries with a retryDelay expression", async () => {
  const r = await receivers.make({ status: 500, body: "nope" });
  const res = await client.publish({ url: r.url("/retry"), body: "r", retries: 2, retryDelay: "1000" });
  const msg = await client.messages.get(res.messageId);
  assert.equal(msg.maxRetries, 2);
  assert.equal(msg.retryDelayExpression, "1000");

  const attempts = await r.waitForMessage(res.messageId, { count: 3 });
  assert.deepEqual(
    attempts.map((a) => a.header("upstash-retried")),
    ["0", "1", "2"],
  );
  const gaps = attempts.slice(1).map((a, i) => a.time - attempts[i].time);
  assert.ok(
    gaps.every((g) => g >= 800 && g < 10_000),
    `gaps ${gaps}`,
  );
  const [entry] = await waitForDlq(client, res.messageId);
  assert.equal(entry.maxRetries, 2);
  await waitForState(client, res.messageId, "FAILED");
  const states = await logStates(client, res.messageId);
  assert.equal(states.filter((s) => s === "RETRY").length, 2);
  assert.equal(states.filter((s) => s === "ERROR").length, 3);
  await client.dlq.delete(entry.dlqId);
});

test("timeout aborts a slow destination (number → `${n}s`)", async () => {
  const r = await receivers.make({ status: 200, body: "late", delayMs: 6000 });
  const started = Date.now();
  const res = await client.publish({ url: r.url("/slow"), body: "t", timeout: 1, retries: 0 });
  const [entry] = await waitForDlq(client, res.messageId, { timeout: 15_000 });
  assert.ok(Date.now() - started < 5500, "Upstash-Timeout was not applied");
  assert.equal(entry.responseStatus, 0);
  await client.dlq.delete(entry.dlqId);
});

test("callback and failureCallback receive signed JSON bodies", async () => {
  const r = await receivers.make();
  const id = uid();
  r.on(`/dest/${id}`, { status: 500, body: "dest failed" });
  const dest = r.url(`/dest/${id}`);
  const cb = r.url(`/cb/${id}`);
  const fcb = r.url(`/fcb/${id}`);
  const res = await client.publish({
    url: dest,
    body: "cb-body",
    retries: 0,
    callback: cb,
    failureCallback: fcb,
    // TS passes callback forward headers as raw user headers (they start with upstash-)
    headers: {
      "Upstash-Callback-Forward-X-Cb": "cb-value",
      "Upstash-Failure-Callback-Forward-X-Fcb": "fcb-value",
    },
  });
  const [cbReq] = await r.waitFor((q) => q.path === `/cb/${id}`);
  const [fcbReq] = await r.waitFor((q) => q.path === `/fcb/${id}`);
  const verifier = makeReceiver(USER1.current, USER1.next);
  for (const [req, url] of [
    [cbReq, cb],
    [fcbReq, fcb],
  ]) {
    assert.equal(req.method, "POST");
    assert.match(req.header("content-type"), /^application\/json/);
    assert.ok(req.header("upstash-message-id"));
    assert.notEqual(req.header("upstash-message-id"), res.messageId);
    assert.equal(await verifier.verify({ signature: req.header("upstash-signature"), body: req.text, url }), true);
    const body = req.json();
    assert.equal(body.status, 500);
    assert.equal(b64decode(body.body), "dest failed");
    assert.equal(body.sourceMessageId, res.messageId);
    assert.equal(body.url, dest);
    assert.equal(body.method, "POST");
    assert.equal(body.retried, 0);
    assert.equal(body.maxRetries, 0);
    assert.equal(b64decode(body.sourceBody), "cb-body");
  }
  assert.equal(cbReq.header("x-cb"), "cb-value");
  assert.equal(fcbReq.header("x-fcb"), "fcb-value");
  assert.equal(cbReq.json().dlqId, undefined);
  const { dlqId } = fcbReq.json();
  assert.ok(dlqId);
  const msg = await client.messages.get(res.messageId);
  assert.equal(msg.callback, cb);
  assert.equal(msg.failureCallback, fcb);
  await client.dlq.delete(dlqId);
});

test("callback after a successful delivery", async () => {
  const r = await receivers.make();
  const id = uid();
  r.on(`/ok/${id}`, { status: 200, body: "all good" });
  const res = await client.publish({ url: r.url(`/ok/${id}`), body: "x", callback: r.url(`/cb-ok/${id}`) });
  const [cbReq] = await r.waitFor((q) => q.path === `/cb-ok/${id}`);
  const body = cbReq.json();
  assert.equal(body.status, 200);
  assert.equal(b64decode(body.body), "all good");
  assert.equal(body.sourceMessageId, res.messageId);
});

test("deduplicationId: second publish returns deduplicated with the same id", async () => {
  const r = await receivers.make();
  const id = uid();
  const url = r.url(`/dedup/${id}`);
  const first = await client.publish({ url, body: "a", deduplicationId: `dd-${id}` });
  const second = await client.publish({ url, body: "b", deduplicationId: `dd-${id}` });
  assert.notEqual(first.deduplicated, true);
  assert.equal(second.deduplicated, true);
  assert.equal(second.messageId, first.messageId);
  const [req] = await r.waitForMessage(first.messageId);
  assert.equal(req.text, "a");
  await sleep(500); // settle: a duplicate must never produce a second delivery
  assert.equal(r.received(`/dedup/${id}`).length, 1);
});

test("contentBasedDeduplication", async () => {
  const r = await receivers.make();
  const id = uid();
  const url = r.url(`/cbd/${id}`);
  const first = await client.publishJSON({ url, body: { k: id }, contentBasedDeduplication: true });
  const second = await client.publishJSON({ url, body: { k: id }, contentBasedDeduplication: true });
  const other = await client.publishJSON({ url, body: { k: `${id}-other` }, contentBasedDeduplication: true });
  assert.equal(second.deduplicated, true);
  assert.equal(second.messageId, first.messageId);
  assert.notEqual(other.deduplicated, true);
  assert.notEqual(other.messageId, first.messageId);
  await r.waitFor((q) => q.path === `/cbd/${id}`, { count: 2 });
});

test("label: single and multiple labels", async () => {
  const r = await receivers.make();
  const id = uid();
  const single = await client.publish({ url: r.url("/label"), body: "l", label: `one-${id}`, delay: 3600 });
  const multi = await client.publish({ url: r.url("/label"), body: "l", label: [`a-${id}`, `b-${id}`], delay: 3600 });
  try {
    const m1 = await client.messages.get(single.messageId);
    assert.equal(m1.label, `one-${id}`);
    assert.deepEqual(m1.labels, [`one-${id}`]);
    const m2 = await client.messages.get(multi.messageId);
    assert.equal(m2.label, `a-${id}`);
    assert.deepEqual(m2.labels, [`a-${id}`, `b-${id}`]);
  } finally {
    await client.messages.cancel([single.messageId, multi.messageId]);
  }
  // a log filter on the second label matches the multi-labelled message
  const { logs } = await client.logs({ filter: { label: `b-${id}` } });
  assert.ok(logs.length > 0);
  assert.ok(logs.every((l) => l.messageId === multi.messageId));
  assert.ok(logs.every((l) => l.labels?.includes(`b-${id}`)));
});

test("redact body and one header; delivery keeps the originals", async () => {
  const r = await receivers.make();
  const id = uid();
  const secret = `secret-body-${id}`;
  const opts = {
    body: secret,
    headers: { Authorization: `Bearer user-secret-${id}`, "X-Visible": "yes" },
    redact: { body: true, header: ["Authorization"] },
  };
  const delayed = await client.publish({ url: r.url("/redact"), delay: 3600, ...opts });
  try {
    const msg = await client.messages.get(delayed.messageId);
    assert.notEqual(msg.body, secret);
    assert.match(msg.body, /^REDACTED:/);
    assert.match(msg.header.Authorization[0], /^REDACTED:/);
    assert.deepEqual(msg.header["X-Visible"], ["yes"]);
  } finally {
    await client.messages.cancel(delayed.messageId);
  }
  const res = await client.publish({ url: r.url("/redact"), ...opts });
  const [req] = await r.waitForMessage(res.messageId);
  assert.equal(req.text, secret);
  assert.equal(req.header("authorization"), `Bearer user-secret-${id}`);
  const logs = await waitForState(client, res.messageId, "DELIVERED");
  for (const l of logs.filter((x) => x.body)) assert.match(b64decode(l.body), /^REDACTED:/);
});

test("redact all headers", async () => {
  const r = await receivers.make();
  const res = await client.publish({
    url: r.url("/redact-all"),
    body: "visible body",
    headers: { "X-One": "1", "X-Two": "2" },
    redact: { header: true },
    delay: 3600,
  });
  try {
    const msg = await client.messages.get(res.messageId);
    assert.equal(msg.body, "visible body");
    assert.match(msg.header["X-One"][0], /^REDACTED:/);
    assert.match(msg.header["X-Two"][0], /^REDACTED:/);
  } finally {
    await client.messages.cancel(res.messageId);
  }
});

test("batch and batchJSON", async () => {
  const r = await receivers.make();
  const id = uid();
  const res = await client.batchJSON([
    { url: r.url(`/batch/${id}/1`), body: { n: 1 } },
    { url: r.url(`/batch/${id}/2`), body: { n: 2 }, headers: { "X-Batch": "2" }, method: "PUT" },
  ]);
  assert.equal(res.length, 2);
  const [r1] = await r.waitForMessage(res[0].messageId);
  const [r2] = await r.waitForMessage(res[1].messageId);
  assert.deepEqual(r1.json(), { n: 1 });
  assert.equal(r1.header("content-type"), "application/json");
  assert.deepEqual(r2.json(), { n: 2 });
  assert.equal(r2.header("x-batch"), "2");
  assert.equal(r2.method, "PUT");

  const single = await client.batch([{ url: r.url(`/batch/${id}/3`), body: "raw" }]);
  assert.ok(Array.isArray(single));
  assert.equal(single.length, 1);
  const [r3] = await r.waitForMessage(single[0].messageId);
  assert.equal(r3.text, "raw");
});

test("publishing to an unreachable URL still accepts the message (retries 0 → DLQ)", async () => {
  // 127.0.0.1:1 refuses connections; the message fails with no HTTP response
  const res = await client.publish({ url: "http://127.0.0.1:1/refused", body: "x", retries: 0 });
  const [entry] = await waitForDlq(client, res.messageId);
  assert.equal(entry.responseStatus, 0);
  await client.dlq.delete(entry.dlqId);
  await poll(async () => (await logStates(client, res.messageId)).includes("FAILED"), { what: "FAILED" });
});
