// Events and webhooks (spec workflow-protocol §4.6, §4.7): waitForEvent with timeout,
// client.notify with and without a run id (lookback), client.getWaiters, context.notify,
// createWebhook / waitForWebhook with hook URLs called without a token.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import {
  assertCalls,
  pollFatal,
  setup,
  stepNamed,
  trigger,
  uid,
  waitApp,
  waitResult,
  waitRun,
  WF_DEADLINE_MS,
} from "./common.mjs";

let env;
before(async () => {
  env = await setup();
});
after(async () => {
  await env?.stop();
});

const withRequests = (route) => (error) => {
  error.message += `\n${env.app.describe(route)}`;
  throw error;
};

test("waitForEvent: timeout, notify, lookback notify by run id, getWaiters, context.notify -> 5 requests", async () => {
  const k = uid();
  const ids = { timeoutEvent: `t-${k}`, notifyEvent: `n-${k}`, lookbackEvent: `l-${k}`, nobodyEvent: `x-${k}` };
  const runId = await trigger(env, "events", { body: ids });

  // lookback: the event names the run, so it is kept until the run waits for it
  await env.client.notify({ eventId: ids.lookbackEvent, eventData: { early: true }, workflowRunId: runId });
  // without a run id and without a waiter, an event is lost
  assert.deepEqual(await env.client.notify({ eventId: `nobody-${k}`, eventData: "lost" }), []);

  // the run waits for notifyEvent after its first wait has timed out (1 s)
  const [waiter] = await pollFatal(
    async () => {
      const waiters = await env.client.getWaiters({ eventId: ids.notifyEvent });
      return waiters.length ? waiters : undefined;
    },
    { timeout: WF_DEADLINE_MS, interval: 250, what: `a waiter for ${ids.notifyEvent}` },
  ).catch(withRequests("events"));
  assert.equal(waiter.url, env.app.wfUrl("events"));
  assert.equal(waiter.timeoutUrl, env.app.wfUrl("events"));
  assert.equal(typeof waiter.headers, "object");
  const nowS = Date.now() / 1000;
  assert.ok(waiter.deadline > nowS + 30 && waiter.deadline < nowS + 120, `deadline in unix seconds, ~60 s ahead: ${waiter.deadline}`);

  const notified = await env.client.notify({ eventId: ids.notifyEvent, eventData: "hello" });
  assert.equal(notified.length, 1, JSON.stringify(notified));
  assert.equal(typeof notified[0].messageId, "string");
  assert.equal(notified[0].waiter.url, env.app.wfUrl("events"));
  assert.ok(!notified[0].error, JSON.stringify(notified[0]));

  const r = await waitResult(env, runId, { route: "events" });
  assert.equal(r.timedOut.timeout, true);
  assert.equal(r.timedOut.eventData, undefined);
  assert.deepEqual(r.notified, { eventData: "hello", timeout: false });
  assert.deepEqual(r.lookback, { eventData: { early: true }, timeout: false });
  assert.deepEqual(r.nobody, [], "context.notify with nobody waiting");

  const run = await waitRun(env, runId, "RUN_SUCCESS", { route: "events" });
  // initial delivery (first wait), the timeout's delivery (second wait), the notify's
  // delivery (third wait: the stored event wakes it at once), its delivery (context.notify),
  // the notify step's delivery (returns)
  assertCalls(env, "events", 5, runId);
  assert.deepEqual(await env.client.getWaiters({ eventId: ids.notifyEvent }), []);
  const timedOut = stepNamed(run, "wait to time out");
  assert.equal(timedOut.stepType, "Wait");
  assert.equal(timedOut.waitEventId, ids.timeoutEvent);
  assert.equal(timedOut.waitTimeout, true);
  const woken = stepNamed(run, "wait for notify");
  assert.equal(woken.waitEventId, ids.notifyEvent);
  assert.equal(woken.waitTimeout, false);
  assert.equal(stepNamed(run, "notify nobody").stepType, "Notify");
});

test("createWebhook / waitForWebhook: timeout, a third party's call and a plain fetch -> 8 requests", async () => {
  const runId = await trigger(env, "webhook");
  const hook = await waitApp(env, () => env.app.note(runId, "hook"), { what: "the webhook of the run", route: "webhook", runId });
  // the SDK builds the URL itself: <QStash URL>/v2/workflows/hooks/<UserID from the token>/<run>/<event>
  assert.equal(hook.webhookUrl, `${env.tern.url}/v2/workflows/hooks/defaultUser/${runId}/${hook.eventId}`);
  assert.match(hook.eventId, /^evt_/);

  // the fake caller (reached through context.call) calls the hook first; once it has, the
  // test calls it too, with no token, so the two events are stored in this order
  await waitApp(env, () => env.app.fake("/fake/webhook-caller").some((r) => r.status === 200), {
    what: "the fake caller to call the webhook",
    route: "webhook",
    runId,
  });
  const res = await fetch(`${hook.webhookUrl}?from=test`, { method: "GET", headers: { "x-hook": "from-test" } });
  assert.ok(res.ok, `webhook answered ${res.status}: ${await res.text()}`);

  const r = await waitResult(env, runId, { route: "webhook" });
  assert.deepEqual(r.hook, hook);
  assert.deepEqual(r.idle, { timeout: true, request: null });
  assert.equal(r.callStatus, 200);
  // the SDK rebuilds a Request from the event: proto://host + url must give the hook URL back
  assert.deepEqual(r.first, {
    timeout: false,
    url: hook.webhookUrl,
    method: "PUT",
    xHook: "from-caller",
    body: JSON.stringify({ from: "caller" }),
  });
  assert.deepEqual(r.second, {
    timeout: false,
    url: `${hook.webhookUrl}?from=test`,
    method: "GET",
    xHook: "from-test",
    body: null,
  });

  const run = await waitRun(env, runId, "RUN_SUCCESS", { route: "webhook" });
  // two createWebhook steps, the idle wait's timeout, the call (callback + result), two waits
  assertCalls(env, "webhook", 8, runId);
  assert.equal(stepNamed(run, "create webhook").stepType, "CreateWebhook");
  assert.equal(stepNamed(run, "wait caller request").stepType, "WaitForWebhook");
});
