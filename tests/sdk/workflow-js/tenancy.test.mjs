// Tenancy: another dev user sees nothing of user 1's runs and cannot touch them.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { parkRun, pollFatal, setup, trigger, USERS, waitResult, waitRun, WF_DEADLINE_MS, workflowClient } from "./common.mjs";

let env;
let other;
before(async () => {
  env = await setup();
  other = workflowClient(env.tern, USERS[2].token);
});
after(async () => {
  await env?.stop();
});

/** cancel as user 2: refused, or accepted with nothing cancelled */
async function cancelAsOther(request) {
  try {
    return (await other.cancel(request)).cancelled;
  } catch (error) {
    assert.ok(typeof error.status === "number" && error.status >= 400 && error.status < 500, String(error));
    return 0;
  }
}

test("user 2 sees none of user 1's runs, waiters or DLQ entries and cancels none of them", async () => {
  const parked = await parkRun(env, "park", "wait");
  const done = await trigger(env, "sequential", { body: "mine" });
  await waitResult(env, done, { route: "sequential" });
  await waitRun(env, done, "RUN_SUCCESS", { route: "sequential" });
  const failed = await trigger(env, "fail-fn", { body: { tag: "tenancy" } });
  await waitRun(env, failed, "RUN_FAILED", { route: "fail-fn" });
  await pollFatal(async () => (await env.client.dlq.list({ filter: { workflowRunId: failed } })).messages.length > 0, {
    timeout: WF_DEADLINE_MS,
    what: `user 1's DLQ entry for ${failed}`,
  });

  for (const runId of [parked.runId, done, failed]) {
    assert.deepEqual((await other.logs({ filter: { workflowRunId: runId } })).runs, [], `user 2 sees ${runId}`);
  }
  const all = (await other.logs()).runs.map((r) => r.workflowRunId);
  for (const runId of [parked.runId, done, failed]) assert.ok(!all.includes(runId), `user 2's log list has ${runId}`);
  assert.deepEqual((await other.dlq.list({ filter: { workflowRunId: failed } })).messages, []);
  assert.deepEqual(await other.getWaiters({ eventId: parked.eventId }), []);

  assert.equal(await cancelAsOther(parked.runId), 0);
  assert.equal(await cancelAsOther({ urlStartingWith: env.app.base }), 0);
  assert.equal(await cancelAsOther({ all: true }), 0);
  // user 2's notify does not wake user 1's waiter
  assert.deepEqual(await other.notify({ eventId: parked.eventId, eventData: "intruder" }), []);

  const still = await waitRun(env, parked.runId, "RUN_STARTED", { route: "park" });
  assert.equal(still.workflowState, "RUN_STARTED");
  assert.equal((await env.client.getWaiters({ eventId: parked.eventId })).length, 1);
  assert.equal((await env.client.cancel(parked.runId)).cancelled, 1);
  await waitRun(env, parked.runId, "RUN_CANCELED", { route: "park" });
});
