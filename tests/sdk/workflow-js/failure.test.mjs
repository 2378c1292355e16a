// Failures (spec workflow-protocol §4.10): failureFunction, retries, non-retryable errors,
// failureUrl.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { assertCalls, b64, nextGroup, poll, setup, trigger, uid, waitApp, waitResult, waitRun, WF_DEADLINE_MS } from "./common.mjs";

let env;
before(async () => {
  env = await setup();
});
after(async () => {
  await env?.stop();
});

test("failureFunction runs once the step fails (retries 0 -> 2 requests), RUN_FAILED", async () => {
  const tag = uid();
  const runId = await trigger(env, "fail-fn", { body: { tag }, headers: { "x-user": "user-header" } });
  const r = await waitResult(env, runId, { route: "fail-fn" });
  assert.equal(r.failStatus, 500);
  assert.equal(r.failResponse, `boom ${tag}`, "the SDK's error message, from the failure body");
  assert.equal(r.failHeaders, "object");
  assert.deepEqual(r.payload, { tag }, "failure payload sourceBody = the initial payload");
  assert.equal(r.userHeader, "user-header", "the run's user headers reach the failure callback");
  assert.equal(r.url, env.app.wfUrl("fail-fn"));

  const run = await waitRun(env, runId, "RUN_FAILED", { route: "fail-fn" });
  // the failing delivery, then the failure callback
  assertCalls(env, "fail-fn", 2, runId);
  assert.deepEqual(
    env.app.calls("fail-fn", runId).map((c) => c.status),
    [500, 200],
  );
  assert.equal(typeof run.dlqId, "string", "a failed run has a DLQ entry");
  const next = nextGroup(run);
  assert.ok(next, `a "next" group with the failing step: ${JSON.stringify(run.steps)}`);
  assert.equal(next.steps[0].state, "STEP_FAILED");
  assert.equal(next.steps[0].errors?.[0]?.status, 500);
  const failure = await poll(
    async () => {
      const current = await waitRun(env, runId, "RUN_FAILED");
      return current.failureFunction?.state === "CALLBACK_SUCCESS" ? current.failureFunction : undefined;
    },
    { timeout: WF_DEADLINE_MS, what: "failureFunction CALLBACK_SUCCESS" },
  );
  assert.equal(failure.url, env.app.wfUrl("fail-fn"));
  assert.equal(failure.failStatus, 500);
});

test("failure with retries 1 -> 3 requests, the retry sees Upstash-Retried", async () => {
  const runId = await trigger(env, "fail-retry", { retries: 1, retryDelay: "1000" });
  const r = await waitResult(env, runId, { route: "fail-retry" });
  assert.equal(r.failStatus, 500);
  assert.equal(r.failResponse, "retry me");
  await waitRun(env, runId, "RUN_FAILED", { route: "fail-retry" });
  assertCalls(env, "fail-retry", 3, runId);
  assert.deepEqual(
    env.app.calls("fail-retry", runId).map((c) => c.status),
    [500, 500, 200],
  );
  // context.retried comes from the Upstash-Retried delivery header
  assert.equal(env.app.note(runId, "retried-1"), 0);
  assert.equal(env.app.note(runId, "retried-2"), 1);
});

test("WorkflowNonRetryableError: status 489, no retries despite retries 3 -> 2 requests", async () => {
  const runId = await trigger(env, "fail-nonretryable", { retries: 3, retryDelay: "1000" });
  const r = await waitResult(env, runId, { route: "fail-nonretryable" });
  assert.equal(r.failStatus, 489);
  assert.equal(r.failResponse, "not worth retrying");
  const run = await waitRun(env, runId, "RUN_FAILED", { route: "fail-nonretryable" });
  // the failing delivery (489 + Upstash-NonRetryable-Error, not retried), the failure callback
  assertCalls(env, "fail-nonretryable", 2, runId);
  assert.deepEqual(
    env.app.calls("fail-nonretryable", runId).map((c) => c.status),
    [489, 200],
  );
  const failure = await poll(
    async () => {
      const current = await waitRun(env, runId, "RUN_FAILED");
      return current.failureFunction?.failStatus ? current.failureFunction : undefined;
    },
    { timeout: WF_DEADLINE_MS, what: "failureFunction in the logs" },
  );
  assert.equal(failure.failStatus, 489);
  assert.equal(nextGroup(run)?.steps[0]?.state, "STEP_FAILED");
});

test("failureUrl gets the failure JSON with the user headers; the route is called once", async () => {
  const key = uid();
  const failureUrl = env.app.fakeUrl(`record/${key}`);
  const body = { order: key };
  const runId = await trigger(env, "fail-url", { body, failureUrl, headers: { "x-user": "for-failure-url" } });
  // the run fails before its failure callback is sent: do not stop when it ends
  const [req] = await waitApp(env, () => (env.app.fake(`/fake/record/${key}`).length ? env.app.fake(`/fake/record/${key}`) : undefined), {
    what: `the failure callback at ${failureUrl}`,
    route: "fail-url",
    runId,
    stopOnEnd: false,
  });
  assert.equal(req.method, "POST");
  assert.equal(req.headers["x-user"], "for-failure-url", "user headers are forwarded to the failure URL");
  assert.equal(req.headers["upstash-workflow-is-failure"], "true");
  assert.equal(req.headers["upstash-workflow-failure-callback"], "true");
  assert.equal(req.headers["upstash-workflow-runid"], runId);
  const failure = JSON.parse(req.text);
  assert.equal(failure.status, 500);
  assert.equal(failure.workflowRunId, runId);
  assert.equal(failure.url, env.app.wfUrl("fail-url"));
  assert.deepEqual(JSON.parse(b64(failure.sourceBody)), body, "sourceBody = base64 of the initial payload");
  const errorBody = JSON.parse(b64(failure.body));
  assert.equal(errorBody.error, "Error");
  assert.equal(errorBody.message, "failure for the failure url");
  assert.equal(typeof errorBody.stack, "string");
  assert.equal(typeof failure.header, "object");

  await waitRun(env, runId, "RUN_FAILED", { route: "fail-url" });
  assertCalls(env, "fail-url", 1, runId);
});

test("retries beyond tern's cap are refused (412): the step fails as non-retryable, 489 in the logs", async () => {
  const runId = await trigger(env, "quota");
  const run = await waitRun(env, runId, "RUN_FAILED", { route: "quota" });
  const next = run.steps.find((group) => group.type === "next");
  assert.ok(next, JSON.stringify(run.steps));
  assert.equal(next.steps[0].state, "STEP_FAILED");
  assert.equal(next.steps[0].errors?.[0]?.status, 489, JSON.stringify(next.steps[0]));
});
