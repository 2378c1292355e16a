// Sequential steps, sleep/sleepUntil and parallel steps (spec workflow-protocol §4.2–4.4).
import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import {
  assertCalls,
  assertRunLog,
  parseOut,
  rawRequest,
  setup,
  stepNamed,
  trigger,
  waitResult,
  waitRun,
} from "./common.mjs";

let env;
before(async () => {
  env = await setup();
});
after(async () => {
  await env?.stop();
});

test("sequential steps: result, 4 requests, logs with every step and RUN_SUCCESS", async () => {
  const payload = { hello: "world" };
  const runId = await trigger(env, "sequential", {
    body: payload,
    headers: { "x-test-header": "header-value" },
    label: "seq-label",
  });
  assert.match(runId, /^wfr_/);

  const result = await waitResult(env, runId, { route: "sequential" });
  const expected = {
    a: `one(${JSON.stringify(payload)})`,
    b: { prev: `one(${JSON.stringify(payload)})`, n: 2 },
    c: [2, 3],
    header: "header-value", // trigger headers reach every step (stored with the run)
    label: "seq-label",
  };
  assert.deepEqual(result, expected);

  const run = await waitRun(env, runId, "RUN_SUCCESS", { route: "sequential" });
  // the initial delivery runs step one, and each step's result delivery runs the next one;
  // the fourth delivery returns and the SDK finishes the run
  assertCalls(env, "sequential", 4, runId);
  for (const call of env.app.calls("sequential", runId)) assert.equal(call.status, 200);

  const steps = assertRunLog(run, {
    url: env.app.wfUrl("sequential"),
    state: "RUN_SUCCESS",
    stepNames: ["step one", "step two", "step three"],
  });
  assert.deepEqual(parseOut(steps[0].out), payload, "init out = the initial payload");
  const two = stepNamed(run, "step two");
  assert.equal(two.stepType, "Run");
  assert.equal(two.callType, "step");
  assert.equal(two.concurrent, 1);
  assert.deepEqual(parseOut(two.out), expected.b);
  assert.deepEqual(
    steps.slice(1).map((s) => s.stepId),
    [1, 2, 3],
  );
  assert.deepEqual(JSON.parse(run.workflowRunResponse), expected, "workflowRunResponse = the route's return value");
  assert.ok(run.label === "seq-label" || run.labels?.includes("seq-label"), `label in logs: ${JSON.stringify(run)}`);
  assert.equal(run.steps.some((g) => g.type === "next"), false, "nothing pending after success");
});

test("a finished run has no step list any more (GET /v2/workflows/runs/<id> -> 404)", async () => {
  const runId = await trigger(env, "sequential", { body: "x" });
  await waitRun(env, runId, "RUN_SUCCESS", { route: "sequential" });
  // the SDK's lazy fetch relies on this 404 to answer "workflow-already-ended"
  const res = await rawRequest(env.tern.url, "GET", `/v2/workflows/runs/${runId}`, { token: env.tern.token });
  assert.equal(res.status, 404, res.text);
});

test("sleep and sleepUntil postpone the next step by at least their duration", async () => {
  const runId = await trigger(env, "sleep");
  const r = await waitResult(env, runId, { route: "sleep" });
  // Each t* is taken when its step runs, i.e. on the delivery after the sleep; the sleep's
  // message was published after the previous t*, so the gap is at least the sleep. 250 ms of
  // slack for timer granularity, as in the qstash suite's delay test.
  assert.ok(r.t1 - r.t0 >= 2000 - 250, `sleep(2): gap ${r.t1 - r.t0} ms`);
  assert.ok(r.t2 >= r.until * 1000 - 250, `sleepUntil(${r.until}): ran at ${r.t2}`);
  assert.ok(r.t3 - r.t2 >= 1000 - 250, `sleep("1s"): gap ${r.t3 - r.t2} ms`);

  const run = await waitRun(env, runId, "RUN_SUCCESS", { route: "sleep" });
  assertCalls(env, "sleep", 8, runId);
  assertRunLog(run, {
    url: env.app.wfUrl("sleep"),
    state: "RUN_SUCCESS",
    stepNames: ["t0", "sleep 2", "t1", "sleep until", "t2", "sleep 1s", "t3"],
  });
  const s2 = stepNamed(run, "sleep 2");
  assert.equal(s2.stepType, "SleepFor");
  assert.equal(s2.sleepFor, 2);
  const su = stepNamed(run, "sleep until");
  assert.equal(su.stepType, "SleepUntil");
  assert.equal(su.sleepUntil, r.until);
  assert.equal(stepNamed(run, "sleep 1s").stepType, "SleepFor");
});

test("parallel steps (Promise.all of two runs and a sleep): results, 9 requests, a parallel group", async () => {
  const runId = await trigger(env, "parallel");
  const r = await waitResult(env, runId, { route: "parallel" });
  assert.equal(r.a, "A");
  assert.deepEqual(r.b, { b: 2 });
  assert.equal(r.slept, null);
  assert.ok(r.end - r.start >= 2000 - 250, `the group waited for its sleeping branch: ${r.end - r.start} ms`);

  const run = await waitRun(env, runId, "RUN_SUCCESS", { route: "parallel" });
  // initial (runs "start"), start's result (publishes 3 plan steps), 3 plan deliveries (each
  // runs its branch), 3 result deliveries (only the last one, which sees all results,
  // continues and runs "after"), after's result (returns)
  assertCalls(env, "parallel", 9, runId);
  const group = run.steps.find((g) => g.type === "parallel");
  assert.ok(group, `a parallel group in ${JSON.stringify(run.steps)}`);
  assert.deepEqual(group.steps.map((s) => s.stepName).sort(), ["branch a", "branch b", "branch sleep"]);
  for (const s of group.steps) {
    assert.equal(s.state, "STEP_SUCCESS", s.stepName);
    assert.equal(s.concurrent, 3, s.stepName);
  }
  assert.equal(parseOut(group.steps.find((s) => s.stepName === "branch a").out), "A");
  assert.equal(stepNamed(run, "after").stepType, "Run");
});

test("a run past 1 MiB is delivered with empty bodies and fetched by the SDK: result, 4 requests", async () => {
  const filler = "f".repeat(600_000);
  const runId = await trigger(env, "large", { body: { size: 700_000, filler } });
  const r = await waitResult(env, runId, { route: "large" });
  assert.equal(r.length, 1_300_000);
  await waitRun(env, runId, "RUN_SUCCESS", { route: "large" });
  assertCalls(env, "large", 4, runId);
  // the deliveries after the big step came without their steps: the SDK fetched them
  const emptyBodies = env.app.calls("large", runId).filter((c) => c.bodyLength === 0).length;
  assert.ok(emptyBodies >= 1, `some delivery of the large run had an empty body: ${emptyBodies}`);
});
