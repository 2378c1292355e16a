// Cancelling runs (spec workflow-protocol §4.9): context.cancel() and every form of
// client.cancel the SDK offers -- one id, an array of ids, the deprecated { ids } and
// { urlStartingWith }, { filter: { workflowUrl } } (exact) and { all: true }.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { assertCalls, parkRun, rawRequest, setup, trigger, waitRun } from "./common.mjs";

let env;
before(async () => {
  env = await setup();
});
after(async () => {
  await env?.stop();
});

test("context.cancel() ends the run as RUN_CANCELED; later steps never run; appends get 400", async () => {
  const runId = await trigger(env, "cancel-self");
  const run = await waitRun(env, runId, "RUN_CANCELED", { route: "cancel-self" });
  assert.equal(env.app.counter(`${runId}:before`), 1);
  assert.equal(env.app.counter(`${runId}:never`), 0);
  // initial delivery runs "before cancel"; its result delivery calls cancel()
  assertCalls(env, "cancel-self", 2, runId);
  assert.equal(run.workflowUrl, env.app.wfUrl("cancel-self"));

  // what the SDK does when a step of a cancelled run ends: publish the next step, which must
  // be refused with 400 (the SDK then treats the run as finished)
  const url = env.app.wfUrl("cancel-self");
  const res = await rawRequest(env.tern.url, "POST", "/v2/batch", {
    token: env.tern.token,
    headers: { "content-type": "application/json" },
    body: JSON.stringify([
      {
        destination: url,
        headers: {
          "Upstash-Workflow-Init": "false",
          "Upstash-Workflow-RunId": runId,
          "Upstash-Workflow-Url": url,
          "Upstash-Feature-Set": "LazyFetch,InitialBody,WF_DetectTrigger,WF_TriggerOnConfig",
          "Upstash-Workflow-Sdk-Version": "1",
          "Upstash-Forward-Upstash-Workflow-Sdk-Version": "1",
          "content-type": "application/json",
        },
        body: JSON.stringify({ stepId: 2, stepName: "never", stepType: "Run", out: '"x"', concurrent: 1 }),
      },
    ]),
  });
  assert.equal(res.status, 400, res.text);
  assertCalls(env, "cancel-self", 2, runId);
});

test("client.cancel by id, by id array and by the deprecated { ids }: RUN_CANCELED, nothing runs on", async () => {
  const a = await parkRun(env, "park", "sleep");
  const b = await parkRun(env, "park", "sleep");
  const c = await parkRun(env, "park", "wait");
  assert.equal((await env.client.cancel(a.runId)).cancelled, 1);
  assert.equal((await env.client.cancel([b.runId])).cancelled, 1);
  assert.equal((await env.client.cancel({ ids: c.runId })).cancelled, 1);
  for (const { runId } of [a, b, c]) await waitRun(env, runId, "RUN_CANCELED", { route: "park" });
  // cancelled runs count 0 the second time
  assert.equal((await env.client.cancel([a.runId, b.runId])).cancelled, 0);
  // a cancelled run's waiter is gone
  assert.deepEqual(await env.client.getWaiters({ eventId: c.eventId }), []);
  for (const { runId } of [a, b, c]) {
    assert.equal(env.app.counter(`${runId}:after`), 0);
    assertCalls(env, "park", 1, runId);
  }
});

test("client.cancel({ urlStartingWith }) and { filter: { workflowUrl } } (exact match)", async () => {
  const p1 = await parkRun(env, "park", "wait");
  const p2 = await parkRun(env, "park", "wait");
  const h = await parkRun(env, "hold", "wait");
  // prefix "/wf/pa" matches /wf/park, not /wf/hold
  const prefix = `${env.app.base}/wf/pa`;
  assert.equal((await env.client.cancel({ urlStartingWith: prefix })).cancelled, 2);
  await waitRun(env, p1.runId, "RUN_CANCELED", { route: "park" });
  await waitRun(env, p2.runId, "RUN_CANCELED", { route: "park" });
  const held = await waitRun(env, h.runId, "RUN_STARTED", { route: "hold" });
  assert.equal(held.workflowState, "RUN_STARTED");
  assert.equal((await env.client.getWaiters({ eventId: h.eventId })).length, 1);

  // the exact filter does not match a prefix of the URL
  assert.equal((await env.client.cancel({ filter: { workflowUrl: `${env.app.base}/wf/ho` } })).cancelled, 0);
  assert.equal((await env.client.cancel({ filter: { workflowUrl: env.app.wfUrl("hold") } })).cancelled, 1);
  await waitRun(env, h.runId, "RUN_CANCELED", { route: "hold" });
});

test("client.cancel({ all: true }) cancels every run in flight", async () => {
  const a = await parkRun(env, "park", "sleep");
  const b = await parkRun(env, "hold", "wait");
  const { cancelled } = await env.client.cancel({ all: true });
  assert.ok(cancelled >= 2, `cancelled ${cancelled}`);
  await waitRun(env, a.runId, "RUN_CANCELED", { route: "park" });
  await waitRun(env, b.runId, "RUN_CANCELED", { route: "hold" });
  // nothing left to cancel
  assert.equal((await env.client.cancel({ all: true })).cancelled, 0);
});
