// client.schedules create / get / list / delete / pause / resume, and Upstash-Cron on publish
// (spec §5.6, §6.3, §14).
//
// Every test but one uses crons that do not tick while it runs (`0 0 1 1 *`, `1 1 1 1 1`, …); the
// single firing test waits for a real `* * * * *` tick (up to a minute).
import { createHash } from "node:crypto";
import assert from "node:assert/strict";
import { after, afterEach, before, test } from "node:test";

import { Client, QstashError } from "@upstash/qstash";

import {
  DEADLINE_MS,
  USER1,
  USER2,
  USERS,
  makeClient,
  poll,
  rawRequest,
  receiverPool,
  sleep,
  startTern,
  uid,
  waitForDlq,
} from "./harness.mjs";

let tern;
let client;
let client2;
const receivers = receiverPool();

before(async () => {
  tern = await startTern();
  client = makeClient(tern);
  client2 = makeClient(tern, USER2.token);
});
afterEach(async () => {
  await receivers.closeAll();
});
after(async () => {
  await receivers.closeAll();
  await tern?.stop();
});

// A tick is at most a minute away; allow for delivery on top.
const TICK_DEADLINE_MS = Math.max(DEADLINE_MS, 80_000);

const status = (code, ...fragments) => (error) =>
  error instanceof QstashError && error.status === code && fragments.every((f) => error.message.includes(f));
const scheduleIds = async (c = client) => (await c.schedules.list()).map((s) => s.scheduleId);

/** The next `0 0 1 1 *` tick (UTC) after `ms`. */
const nextNewYear = (ms) => Date.UTC(new Date(ms).getUTCFullYear() + 1, 0, 1);

/** Each key of `expected` equals the field of `actual`; an `undefined` value means "absent". */
function assertFields(actual, expected) {
  for (const [key, value] of Object.entries(expected)) {
    if (value === undefined) assert.ok(!(key in actual), `${key} should be absent: ${JSON.stringify(actual)}`);
    else assert.deepEqual(actual[key], value, `${key} of ${JSON.stringify(actual)}`);
  }
}

test("create with every option; get returns each field; list, delete", async () => {
  const r = await receivers.make();
  const id = uid();
  const destination = r.url(`/full/${id}?a=1&b=two`);
  const callback = r.url(`/full-cb/${id}`);
  const failureCallback = r.url(`/full-fcb/${id}`);
  const queueName = `sq-full-${id}`;
  const before = Date.now();
  const { scheduleId } = await client.schedules.create({
    destination,
    cron: "0 0 1 1 * ",
    body: JSON.stringify({ hello: "world" }),
    headers: {
      "test-header": "test-value",
      "Upstash-Forward-bypass-tunnel-reminder": "client-test",
      // raw Upstash-* headers pass the SDK unprefixed: forwarded to the callbacks only
      "Upstash-Callback-Forward-X-Cb": "cb-value",
      "Upstash-Failure-Callback-Forward-X-Fcb": "fcb-value",
    },
    method: "GET",
    callback,
    failureCallback,
    delay: 10,
    retries: 5,
    retryDelay: "1000 * (1 + retried)",
    timeout: 30,
    queueName,
    flowControl: { key: `fc-${id}`, parallelism: 2, rate: 10, period: "1d" },
    label: [`a-${id}`, `b-${id}`],
  });
  try {
    assert.match(scheduleId, /^scd_/);
    const s = await client.schedules.get(scheduleId);
    assertFields(s, {
      scheduleId,
      cron: "0 0 1 1 *", // trimmed (fetch's Headers already trims the value it sends)
      destination,
      method: "GET",
      // exactly the forwarded headers plus Content-Type (set by the SDK), canonical names
      header: {
        "Bypass-Tunnel-Reminder": ["client-test"],
        "Content-Type": ["application/json"],
        "Test-Header": ["test-value"],
      },
      callbackHeader: { "X-Cb": ["cb-value"] },
      failureCallbackHeader: { "X-Fcb": ["fcb-value"] },
      body: '{"hello":"world"}',
      bodyBase64: undefined,
      retries: 5,
      retryDelayExpression: "1000 * (1 + retried)",
      delay: 10,
      timeout: 30,
      callback,
      failureCallback,
      queueName,
      flowControlKey: `fc-${id}`,
      parallelism: 2,
      rate: 10,
      ratePerSecond: 10, // copied by the SDK
      period: 86400,
      label: `a-${id}`,
      labels: [`a-${id}`, `b-${id}`],
      callerIp: "127.0.0.1",
      callerIP: "127.0.0.1",
      isPaused: false,
      nextScheduleTime: nextNewYear(s.createdAt), // the first match after the creation time
      lastScheduleTime: undefined,
      lastScheduleStates: undefined,
      error: undefined,
    });
    assert.ok(s.createdAt >= before - 5000 && s.createdAt <= Date.now() + 5000, JSON.stringify(s));
    assert.deepEqual(
      (await client.schedules.list()).filter((x) => x.scheduleId === scheduleId),
      [s],
    );
  } finally {
    await client.schedules.delete(scheduleId);
  }
  assert.ok(!(await scheduleIds()).includes(scheduleId));
  await assert.rejects(client.schedules.get(scheduleId), status(404, "Schedule not found"));
  await client.schedules.delete(scheduleId); // idempotent
});

test("defaults: POST, 3 retries, Content-Type application/json, no optional fields", async () => {
  const r = await receivers.make();
  const destination = r.url(`/defaults/${uid()}`);
  const { scheduleId } = await client.schedules.create({ destination, cron: "1 1 1 1 1" });
  try {
    const s = await client.schedules.get(scheduleId);
    assertFields(s, {
      scheduleId,
      cron: "1 1 1 1 1",
      destination,
      method: "POST",
      retries: 3,
      header: { "Content-Type": ["application/json"] },
      isPaused: false,
      callerIp: "127.0.0.1",
    });
    for (const field of [
      "body",
      "bodyBase64",
      "delay",
      "timeout",
      "callback",
      "failureCallback",
      "callbackHeader",
      "failureCallbackHeader",
      "queueName",
      "flowControlKey",
      "parallelism",
      "rate",
      "period",
      "retryDelayExpression",
      "label",
      "labels",
      "lastScheduleTime",
      "lastScheduleStates",
      "error",
    ]) {
      assert.ok(!(field in s), `${field} should be absent: ${JSON.stringify(s)}`);
    }
    assert.ok(s.nextScheduleTime > Date.now(), JSON.stringify(s));
  } finally {
    await client.schedules.delete(scheduleId);
  }
});

test("list shows every schedule; re-create with the same scheduleId overwrites every field", async () => {
  const r = await receivers.make();
  const id = uid();
  const [first, second] = [r.url(`/list/${id}/1`), r.url(`/list/${id}/2`)];
  const { scheduleId: a } = await client.schedules.create({ destination: first, cron: "*/10 * * * * " });
  const { scheduleId: b } = await client.schedules.create({ destination: second, cron: "*/10 * * * * " });
  const scheduleId = `my-sched.${id}_1`;
  try {
    assert.notEqual(a, b);
    const listed = (await client.schedules.list()).filter((s) => [a, b].includes(s.scheduleId));
    assert.deepEqual(listed.map((s) => s.scheduleId).sort(), [a, b].sort());
    assert.deepEqual(listed.map((s) => s.destination).sort(), [first, second].sort());
    assert.ok(listed.every((s) => s.cron === "*/10 * * * *"));

    const created = await client.schedules.create({
      destination: first,
      cron: "*/5 * * * *",
      scheduleId,
      body: "my-payload",
      headers: { "Content-Type": "text/plain", "X-First": "1" },
      method: "PUT",
      callback: r.url(`/cb/${id}`),
      failureCallback: r.url(`/fcb/${id}`),
      delay: 5,
      retries: 1,
      retryDelay: "500",
      timeout: 9,
      queueName: `sq-first-${id}`,
      flowControl: { key: `fc-first-${id}`, parallelism: 1 },
      label: `first-${id}`,
    });
    assert.deepEqual(created, { scheduleId });
    const before = await client.schedules.get(scheduleId);
    assert.equal(before.body, "my-payload");
    await client.schedules.pause({ schedule: scheduleId });

    await client.schedules.create({ destination: second, cron: "0 12 * * *", scheduleId });
    const schedules = (await client.schedules.list()).filter((s) => s.scheduleId === scheduleId);
    assert.equal(schedules.length, 1);
    const [s] = schedules;
    assertFields(s, {
      scheduleId,
      destination: second,
      cron: "0 12 * * *",
      body: undefined, // the TS SDK test asserts `body === undefined`
      bodyBase64: undefined,
      header: { "Content-Type": ["application/json"] },
      method: "POST",
      retries: 3,
      delay: undefined,
      timeout: undefined,
      callback: undefined,
      failureCallback: undefined,
      queueName: undefined,
      flowControlKey: undefined,
      retryDelayExpression: undefined,
      label: undefined,
      labels: undefined,
      // kept across an overwrite (spec §14 recommendation)
      createdAt: before.createdAt,
      isPaused: true,
    });
  } finally {
    await client.schedules.delete(a);
    await client.schedules.delete(b);
    await client.schedules.delete(scheduleId);
  }
  await assert.rejects(client.schedules.get(scheduleId), status(404));
});

test("pause and resume flip isPaused (PATCH from the SDK, POST as in the OpenAPI)", async () => {
  const r = await receivers.make();
  const { scheduleId } = await client.schedules.create({
    cron: "1 1 1 1 1",
    destination: r.url(`/pause/${uid()}`),
    body: JSON.stringify({ ex_key: "ex_value" }),
  });
  const paused = async () => (await client.schedules.get(scheduleId)).isPaused;
  try {
    assert.equal(await paused(), false);
    await client.schedules.pause({ schedule: scheduleId });
    assert.equal(await paused(), true);
    assert.deepEqual(
      (await client.schedules.list()).filter((s) => s.scheduleId === scheduleId).map((s) => s.isPaused),
      [true],
    );
    await client.schedules.pause({ schedule: scheduleId }); // idempotent
    assert.equal(await paused(), true);
    await client.schedules.resume({ schedule: scheduleId });
    const resumed = await client.schedules.get(scheduleId);
    assert.equal(resumed.isPaused, false);
    assert.ok(resumed.nextScheduleTime > Date.now(), JSON.stringify(resumed));
    assert.equal(resumed.body, JSON.stringify({ ex_key: "ex_value" }));
    await client.schedules.resume({ schedule: scheduleId }); // idempotent
    assert.equal(await paused(), false);

    for (const [action, want] of [
      ["pause", true],
      ["resume", false],
    ]) {
      const res = await rawRequest(tern.url, "POST", `/v2/schedules/${scheduleId}/${action}`, { token: USER1.token });
      assert.equal(res.status, 200, res.text);
      assert.equal(await paused(), want);
    }
  } finally {
    await client.schedules.delete(scheduleId);
  }
});

test("client-wide headers are forwarded; request headers override them; telemetry is not stored", async () => {
  const r = await receivers.make();
  const id = uid();
  const withHeaders = new Client({
    baseUrl: tern.url,
    token: USER1.token,
    devMode: false,
    retry: false,
    headers: { "global-header": `g-${id}`, "global-header-overwritten": "old" },
  });
  const body = JSON.stringify([{ from: "Acme <onboarding@resend.dev>", to: ["foo@gmail.com"] }]);
  const { scheduleId } = await withHeaders.schedules.create({
    scheduleId: `hdr-${id}`,
    destination: r.url(`/headers/${id}`),
    cron: "* * * * 1",
    body,
    headers: {
      "content-type": "application/json",
      "global-header-overwritten": "new",
      "request-header": `r-${id}`,
    },
  });
  try {
    assert.equal(scheduleId, `hdr-${id}`);
    const s = await client.schedules.get(scheduleId);
    assert.deepEqual(s.header, {
      "Content-Type": ["application/json"],
      "Global-Header": [`g-${id}`],
      "Global-Header-Overwritten": ["new"],
      "Request-Header": [`r-${id}`],
    });
    assert.equal(s.body, body);
  } finally {
    await client.schedules.delete(scheduleId);
  }
});

test("destination: a URL group (by name) and a queue (queueName)", async () => {
  const r = await receivers.make();
  const id = uid();
  const group = `ug-sched-${id}`;
  await client.urlGroups.addEndpoints({ name: group, endpoints: [{ url: r.url(`/ug/${id}/a`) }, { url: r.url(`/ug/${id}/b`) }] });
  try {
    const { scheduleId } = await client.schedules.create({
      destination: group,
      cron: "0 0 1 1 *",
      body: "to the group",
      headers: { "Content-Type": "text/plain", "X-Group": "yes" },
      retries: 2,
    });
    try {
      assertFields(await client.schedules.get(scheduleId), {
        destination: group,
        body: "to the group",
        header: { "Content-Type": ["text/plain"], "X-Group": ["yes"] },
        retries: 2,
        queueName: undefined,
      });
    } finally {
      await client.schedules.delete(scheduleId);
    }
  } finally {
    await client.urlGroups.delete(group);
  }

  const queueName = `sq-${id}`;
  const { scheduleId } = await client.schedules.create({ destination: r.url(`/q/${id}`), cron: "0 0 1 1 *", queueName });
  try {
    assertFields(await client.schedules.get(scheduleId), { destination: r.url(`/q/${id}`), queueName });
  } finally {
    await client.schedules.delete(scheduleId);
  }

  // like publish (spec §24): an unknown group is 404 `topic <name> not found`
  const missing = `ug-missing-${id}`;
  await assert.rejects(
    client.schedules.create({ destination: missing, cron: "0 0 1 1 *" }),
    status(404, `topic ${missing} not found`),
  );
});

test("string durations, flow-control variants and a binary body", async () => {
  const r = await receivers.make();
  const id = uid();
  const ids = [];
  try {
    const durations = await client.schedules.create({
      destination: r.url(`/dur/${id}`),
      cron: "30 4 * * 1-5",
      delay: "1h",
      timeout: "1m",
      retries: 0,
      method: "DELETE",
      flowControl: { key: `fc-par-${id}`, parallelism: 3 },
    });
    ids.push(durations.scheduleId);
    assertFields(await client.schedules.get(durations.scheduleId), {
      delay: 3600,
      timeout: 60,
      retries: 0,
      method: "DELETE",
      flowControlKey: `fc-par-${id}`,
      parallelism: 3,
      rate: undefined,
      period: 1, // the default period
    });

    const alias = await client.schedules.create({
      destination: r.url(`/alias/${id}`),
      cron: "0 0 1 1 *",
      flowControl: { key: `fc-rps-${id}`, ratePerSecond: 4, period: 7 },
    });
    ids.push(alias.scheduleId);
    assertFields(await client.schedules.get(alias.scheduleId), {
      flowControlKey: `fc-rps-${id}`,
      parallelism: undefined,
      rate: 4,
      ratePerSecond: 4,
      period: 7,
    });

    const raw = Buffer.from([0xff, 0xfe, 0x00, ...Buffer.from(`binary-${id}`)]);
    const binary = await client.schedules.create({
      destination: r.url(`/bin/${id}`),
      cron: "0 0 1 1 *",
      body: raw,
      headers: { "Content-Type": "application/octet-stream" },
    });
    ids.push(binary.scheduleId);
    const s = await client.schedules.get(binary.scheduleId);
    assert.equal(s.body, undefined);
    assert.deepEqual(Buffer.from(s.bodyBase64, "base64"), raw);
    assert.deepEqual(s.header, { "Content-Type": ["application/octet-stream"] });
  } finally {
    for (const scheduleId of ids) await client.schedules.delete(scheduleId);
  }

  // the SDK itself refuses a flow-control key without parallelism or rate
  await assert.rejects(
    client.schedules.create({ destination: r.url("/x"), cron: "0 0 1 1 *", flowControl: { key: `fc-${id}` } }),
    (error) => error instanceof QstashError && /parallelism/.test(error.message),
  );
});

test("a time zone prefix (CRON_TZ=) is kept and used", async () => {
  const r = await receivers.make();
  const cron = "CRON_TZ=Asia/Tokyo 0 9 * * *";
  const { scheduleId } = await client.schedules.create({ destination: r.url(`/tz/${uid()}`), cron });
  try {
    const s = await client.schedules.get(scheduleId);
    assert.equal(s.cron, cron);
    // 09:00 in Tokyo (UTC+9, no DST) is 00:00 UTC: the first UTC midnight after the creation
    const created = new Date(s.createdAt);
    assert.equal(
      s.nextScheduleTime,
      Date.UTC(created.getUTCFullYear(), created.getUTCMonth(), created.getUTCDate() + 1),
    );
  } finally {
    await client.schedules.delete(scheduleId);
  }
});

test("redact hides the body and chosen headers on reads", async () => {
  const r = await receivers.make();
  const id = uid();
  const secret = `secret-body-${id}`;
  const auth = `Bearer user-secret-${id}`;
  const sha = (text) => createHash("sha256").update(text).digest("hex");
  const { scheduleId } = await client.schedules.create({
    destination: r.url(`/redact/${id}`),
    cron: "0 0 1 1 *",
    body: secret,
    headers: { Authorization: auth, "X-Visible": "yes" },
    redact: { body: true, header: ["Authorization"] },
  });
  const all = await client.schedules.create({
    destination: r.url(`/redact-all/${id}`),
    cron: "0 0 1 1 *",
    body: "visible body",
    headers: { "X-One": "1" },
    redact: { header: true },
  });
  try {
    const listed = (await client.schedules.list()).find((s) => s.scheduleId === scheduleId);
    for (const s of [await client.schedules.get(scheduleId), listed]) {
      assert.equal(s.body, `REDACTED:${sha(secret)}`);
      assert.deepEqual(s.header.Authorization, [`REDACTED:${sha(auth)}`]);
      assert.deepEqual(s.header["X-Visible"], ["yes"]);
    }
    const s = await client.schedules.get(all.scheduleId);
    assert.equal(s.body, "visible body");
    assert.deepEqual(s.header["X-One"], [`REDACTED:${sha("1")}`]);
  } finally {
    await client.schedules.delete(scheduleId);
    await client.schedules.delete(all.scheduleId);
  }
});

test("invalid cron and other invalid values are 400 with a useful message; nothing is created", async () => {
  const r = await receivers.make();
  const id = uid();
  const destination = r.url(`/invalid/${id}`);
  const before = new Set(await scheduleIds());
  const create = (extra) => client.schedules.create({ destination, cron: "0 0 1 1 *", ...extra });

  await assert.rejects(create({ cron: "not a cron" }), status(400, "not a cron"));
  await assert.rejects(create({ cron: "61 * * * *" }), status(400, "61 * * * *"));
  await assert.rejects(create({ cron: "* * * *" }), status(400, "cron"));
  await assert.rejects(create({ cron: "" }), status(400));
  await assert.rejects(create({ cron: "CRON_TZ=Not/AZone 0 0 * * *" }), status(400, "Not/AZone"));
  await assert.rejects(create({ scheduleId: `bad!${id}` }), status(400));
  await assert.rejects(create({ method: "FETCH" }), status(400));
  await assert.rejects(create({ retries: -1 }), status(400));
  await assert.rejects(create({ delay: "soon" }), status(400));
  await assert.rejects(create({ delay: "4000d" }), status(400)); // beyond the maximum delay
  await assert.rejects(create({ timeout: "long" }), status(400));
  await assert.rejects(create({ retryDelay: "1000 +" }), status(400));
  await assert.rejects(create({ callback: "ftp://example.com/cb" }), status(400));
  await assert.rejects(create({ failureCallback: "not a url" }), status(400));
  await assert.rejects(create({ queueName: `bad!${id}` }), status(400));
  await assert.rejects(create({ flowControl: { key: `fc-${id}`, parallelism: 0 } }), status(400));
  await assert.rejects(create({ destination: `bad!dest-${id}` }), status(400));

  assert.deepEqual(new Set(await scheduleIds()), before);
});

test("unknown ids: get is 404 `Schedule not found`, pause/resume 404, delete is idempotent", async () => {
  const missing = `scd_missing${uid()}`;
  await assert.rejects(client.schedules.get(missing), status(404, "Schedule not found"));
  await assert.rejects(client.schedules.pause({ schedule: missing }), status(404));
  await assert.rejects(client.schedules.resume({ schedule: missing }), status(404));
  await client.schedules.delete(missing);
});

test("schedules belong to their user", async () => {
  const r = await receivers.make();
  const id = uid();
  const { scheduleId } = await client.schedules.create({ destination: r.url(`/user/${id}`), cron: "0 0 1 1 *" });
  const shared = `shared-${id}`;
  try {
    assert.ok(!(await scheduleIds(client2)).includes(scheduleId));
    await assert.rejects(client2.schedules.get(scheduleId), status(404));
    await assert.rejects(client2.schedules.pause({ schedule: scheduleId }), status(404));
    await client2.schedules.delete(scheduleId);
    assert.equal((await client.schedules.get(scheduleId)).isPaused, false);

    // the same custom id for another user is another schedule
    await client.schedules.create({ destination: r.url("/one"), cron: "0 0 1 1 *", scheduleId: shared });
    await client2.schedules.create({ destination: r.url("/two"), cron: "0 0 1 1 *", scheduleId: shared });
    assert.equal((await client.schedules.get(shared)).destination, r.url("/one"));
    assert.equal((await client2.schedules.get(shared)).destination, r.url("/two"));
  } finally {
    await client.schedules.delete(scheduleId);
    await client.schedules.delete(shared);
    await client2.schedules.delete(shared);
  }
});

test("beyond the maximum number of schedules: 412; overwrites still work", async () => {
  // user 3 is used by no other test, so its 1000 schedules disturb nobody
  const c = makeClient(tern, USERS[3].token);
  const destination = "http://127.0.0.1:9/limit";
  const ids = [];
  try {
    for (let i = 0; i < 10; i++) {
      const batch = await Promise.all(
        Array.from({ length: 100 }, () => c.schedules.create({ destination, cron: "0 0 1 1 *" })),
      );
      ids.push(...batch.map((x) => x.scheduleId));
    }
    await assert.rejects(c.schedules.create({ destination, cron: "0 0 1 1 *" }), status(412));
    await assert.rejects(c.schedules.create({ destination, cron: "0 0 1 1 *", scheduleId: "one-too-many" }), status(412));
    // the limit is per user
    const other = await client.schedules.create({ destination, cron: "0 0 1 1 *" });
    await client.schedules.delete(other.scheduleId);
    // replacing an existing schedule is no new schedule
    await c.schedules.create({ destination: `${destination}/2`, cron: "0 0 1 1 *", scheduleId: ids[0] });
    assert.equal((await c.schedules.get(ids[0])).destination, `${destination}/2`);
    assert.equal((await c.schedules.list()).length, 1000);
    await c.schedules.delete(ids.pop());
    ids.push((await c.schedules.create({ destination, cron: "0 0 1 1 *" })).scheduleId);
  } finally {
    for (let i = 0; i < ids.length; i += 100) {
      await Promise.all(ids.slice(i, i + 100).map((scheduleId) => c.schedules.delete(scheduleId)));
    }
  }
  assert.deepEqual(await c.schedules.list(), []);
});

test("publish with an Upstash-Cron header creates a schedule instead", async () => {
  const r = await receivers.make();
  const id = uid();
  const url = r.url(`/cron-publish/${id}`);
  // the SDK passes raw Upstash-* headers through unprefixed
  const res = await client.publish({
    url,
    body: `cron ${id}`,
    headers: { "Upstash-Cron": "0 0 1 1 *", "Upstash-Schedule-Id": `pub-${id}`, "X-Via": "publish" },
    retries: 2,
  });
  try {
    assert.deepEqual(res, { scheduleId: `pub-${id}` });
    assertFields(await client.schedules.get(`pub-${id}`), {
      destination: url,
      cron: "0 0 1 1 *",
      body: `cron ${id}`,
      method: "POST",
      retries: 2,
      // fetch itself adds this Content-Type to a string body
      header: { "Content-Type": ["text/plain;charset=UTF-8"], "X-Via": ["publish"] },
    });
    const json = await client.publishJSON({ url, body: { id }, headers: { "Upstash-Cron": "0 0 1 1 *" } });
    assert.match(json.scheduleId, /^scd_/);
    try {
      assertFields(await client.schedules.get(json.scheduleId), {
        body: JSON.stringify({ id }),
        header: { "Content-Type": ["application/json"] },
      });
    } finally {
      await client.schedules.delete(json.scheduleId);
    }
    assert.deepEqual(r.received(`/cron-publish/${id}`), []);
  } finally {
    await client.schedules.delete(`pub-${id}`);
  }
});

test("a tick fans out to a URL group: one delivery per endpoint with the stored request", async () => {
  const r = await receivers.make();
  const id = uid();
  const group = `ug-tick-${id}`;
  const urls = [r.url(`/tick/${id}/a?from=schedule`), r.url(`/tick/${id}/b`)];
  r.on(`/tick/${id}/b`, { status: 500, body: "tick failed" }); // fails: retries 0
  await client.urlGroups.addEndpoints({ name: group, endpoints: urls.map((url) => ({ url })) });
  const secret = `tick-secret-${id}`;
  const goneGroup = `ug-gone-${id}`;
  let scheduleId;
  let pausedId;
  let goneId;
  let deleted = false;
  try {
    // the paused twin must be paused before the tick both would fire at
    const seconds = (Date.now() % 60_000) / 1000;
    if (seconds > 58) await sleep((60.5 - seconds) * 1000);
    ({ scheduleId: pausedId } = await client.schedules.create({
      destination: r.url(`/tick-paused/${id}`),
      cron: "* * * * *",
    }));
    await client.schedules.pause({ schedule: pausedId });
    // a schedule whose URL group is gone by the time it ticks
    await client.urlGroups.addEndpoints({ name: goneGroup, endpoints: [{ url: r.url(`/tick-gone/${id}`) }] });
    ({ scheduleId: goneId } = await client.schedules.create({ destination: goneGroup, cron: "* * * * *" }));
    await client.urlGroups.delete(goneGroup);
    ({ scheduleId } = await client.schedules.create({
      destination: group,
      cron: "* * * * *",
      body: `tick ${id}`,
      method: "PUT",
      headers: { "Content-Type": "text/plain", "X-Tick": id, Authorization: secret },
      retries: 0,
      delay: 2,
      label: `tick-${id}`,
      flowControl: { key: `fc-tick-${id}`, parallelism: 5 },
      redact: { header: ["Authorization"] },
    }));
    const created = await client.schedules.get(scheduleId);
    const reqs = await r.waitFor((q) => q.header("upstash-schedule-id") === scheduleId, {
      count: 2,
      timeout: TICK_DEADLINE_MS,
    });
    assert.deepEqual(reqs.map((q) => r.base + q.path).sort(), [...urls].sort());
    const ids = [];
    const notBefores = [];
    for (const req of reqs) {
      assert.equal(req.method, "PUT");
      assert.equal(req.text, `tick ${id}`);
      assert.equal(req.header("content-type"), "text/plain");
      assert.equal(req.header("x-tick"), id);
      assert.equal(req.header("authorization"), secret); // delivered unredacted
      assert.equal(req.header("upstash-topic-name"), group);
      assert.equal(req.header("upstash-caller-ip"), "127.0.0.1");
      assert.equal(req.header("upstash-retried"), "0");
      assert.ok(req.header("upstash-signature"));
      ids.push(req.header("upstash-message-id"));
    }
    assert.equal(new Set(ids).size, 2);

    for (const messageId of ids) {
      const msg = await client.messages.get(messageId);
      assertFields(msg, {
        scheduleId,
        urlGroup: group,
        method: "PUT",
        maxRetries: 0,
        label: `tick-${id}`,
        flowControlKey: `fc-tick-${id}`,
        parallelism: 5,
      });
      assert.ok(msg.header.Authorization[0].startsWith("REDACTED:"), JSON.stringify(msg.header));
      assert.deepEqual(msg.header["X-Tick"], [id]);
      notBefores.push(msg.notBefore);
    }

    // the schedule records the tick and the state of each of its messages
    const idAt = (x) => reqs.find((q) => q.path.startsWith(`/tick/${id}/${x}`)).header("upstash-message-id");
    const [okId, failId] = [idAt("a"), idAt("b")];
    const s = await poll(
      async () => {
        const x = await client.schedules.get(scheduleId);
        const states = x.lastScheduleStates ?? {};
        return states[okId] === "SUCCESS" && states[failId] === "FAIL" ? x : undefined;
      },
      { what: "lastScheduleStates: SUCCESS and FAIL" },
    );
    assert.deepEqual(s.lastScheduleStates, { [okId]: "SUCCESS", [failId]: "FAIL" });
    assert.equal(s.lastScheduleTime % 60_000, 0);
    assert.ok(s.lastScheduleTime > created.createdAt && s.lastScheduleTime <= created.createdAt + 60_000, JSON.stringify(s));
    assert.equal(s.nextScheduleTime, s.lastScheduleTime + 60_000);
    assert.equal(s.error, undefined); // a failed message is no trigger error
    // each message starts the stored delay after the tick
    assert.deepEqual(notBefores, [s.lastScheduleTime + 2000, s.lastScheduleTime + 2000]);
    assert.ok(reqs.every((q) => q.time >= s.lastScheduleTime + 2000), JSON.stringify(reqs.map((q) => q.time)));
    const { logs } = await client.logs({ filter: { scheduleId } });
    assert.ok(logs.some((l) => l.messageId === okId && l.state === "DELIVERED"), JSON.stringify(logs));
    assert.ok(logs.some((l) => l.messageId === failId && l.state === "FAILED"), JSON.stringify(logs));
    assert.ok(logs.every((l) => ids.includes(l.messageId)), JSON.stringify(logs));
    const [entry] = await waitForDlq(client, failId);
    assertFields(entry, { scheduleId, urlGroup: group, responseStatus: 500, responseBody: "tick failed" });
    await client.dlq.delete(entry.dlqId);

    // the paused schedule skipped the same tick
    assertFields(await client.schedules.get(pausedId), {
      isPaused: true,
      lastScheduleTime: undefined,
      lastScheduleStates: undefined,
    });
    assert.deepEqual(r.received(`/tick-paused/${id}`), []);

    // the same tick failed for the schedule whose group is gone: the error is recorded
    const gone = await poll(
      async () => {
        const x = await client.schedules.get(goneId);
        return x.error ? x : undefined;
      },
      { what: "the error of the schedule whose URL group is gone" },
    );
    assert.ok(gone.error.includes(goneGroup), gone.error);
    assert.equal(gone.lastScheduleTime, s.lastScheduleTime);
    assert.equal(gone.nextScheduleTime, s.nextScheduleTime);
    assert.deepEqual(r.received(`/tick-gone/${id}`), []);

    await client.schedules.delete(scheduleId);
    deleted = true;
    await assert.rejects(client.schedules.get(scheduleId), status(404));
    assert.ok(!(await scheduleIds()).includes(scheduleId));
    // nothing else arrives: exactly one delivery per endpoint for the one tick
    await sleep(1500);
    assert.equal(r.received(`/tick/${id}/`).length, 2);
  } finally {
    if (scheduleId && !deleted) await client.schedules.delete(scheduleId);
    if (pausedId) await client.schedules.delete(pausedId);
    if (goneId) await client.schedules.delete(goneId);
    await client.urlGroups.delete(group);
  }
});
