// The workflow DLQ (spec workflow-protocol §2, §4.10): client.dlq.list, resume (continue
// from the failed step) and restart (from the beginning) of a failed run.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { pollFatal, setup, trigger, uid, waitResult, waitRun, WF_DEADLINE_MS } from "./common.mjs";

let env;
before(async () => {
  env = await setup();
});
after(async () => {
  await env?.stop();
});

/** Start a dlq-flaky run that fails at "step two", and return its DLQ entry. */
async function failedRun() {
  const key = uid();
  const runId = await trigger(env, "dlq-flaky", { body: { key } });
  const run = await waitRun(env, runId, "RUN_FAILED", { route: "dlq-flaky" });
  const [entry] = await pollFatal(
    async () => {
      const { messages } = await env.client.dlq.list({ filter: { workflowRunId: runId } });
      return messages.length ? messages : undefined;
    },
    { timeout: WF_DEADLINE_MS, interval: 250, what: `a DLQ entry for ${runId}` },
  );
  return { key, runId, run, entry };
}

test("dlq.list shows a failed run; resume continues at the failed step with a new run id", async () => {
  const { key, runId, run, entry } = await failedRun();
  assert.equal(entry.workflowRunId, runId);
  assert.equal(entry.workflowUrl, env.app.wfUrl("dlq-flaky"));
  assert.equal(typeof entry.dlqId, "string");
  assert.equal(entry.dlqId, run.dlqId, "the run log names its DLQ entry");
  assert.equal(entry.responseStatus, 500);
  assert.match(entry.responseBody, /still broken/);
  assert.equal(typeof entry.workflowCreatedAt, "number");
  assert.equal(env.app.counter(`${key}:one`), 1);
  assert.equal(env.app.counter(`${key}:two`), 1);

  env.app.flags.set(key, "fixed");
  const { workflowRuns } = await env.client.dlq.resume(entry.dlqId, { retries: 0 });
  assert.equal(workflowRuns.length, 1, JSON.stringify(workflowRuns));
  const resumedId = workflowRuns[0].workflowRunId;
  assert.notEqual(resumedId, runId, "resume creates a run with a new id");
  assert.deepEqual(await waitResult(env, resumedId, { route: "dlq-flaky" }), { key });
  await waitRun(env, resumedId, "RUN_SUCCESS", { route: "dlq-flaky" });
  // step one was not run again: its recorded result was kept
  assert.equal(env.app.counter(`${key}:one`), 1);
  assert.equal(env.app.counter(`${key}:two`), 2);
});

test("restart runs a failed run again from the beginning with a new run id", async () => {
  const { key, runId, entry } = await failedRun();
  env.app.flags.set(key, "fixed");
  const { workflowRuns } = await env.client.dlq.restart([entry.dlqId], { retries: 0 });
  assert.equal(workflowRuns.length, 1, JSON.stringify(workflowRuns));
  const restartedId = workflowRuns[0].workflowRunId;
  assert.notEqual(restartedId, runId);
  assert.deepEqual(await waitResult(env, restartedId, { route: "dlq-flaky" }), { key });
  const run = await waitRun(env, restartedId, "RUN_SUCCESS", { route: "dlq-flaky" });
  assert.equal(env.app.counter(`${key}:one`), 2, "step one ran again");
  assert.equal(env.app.counter(`${key}:two`), 2);
  assert.equal(run.workflowUrl, env.app.wfUrl("dlq-flaky"));
});

test("retryFailureFunction calls the failure function again; delete removes the entry", async () => {
  const { runId, entry } = await failedRun();
  const failureCalls = () =>
    env.app.calls("dlq-flaky", runId).filter((call) => call.headers["upstash-workflow-failure-callback"] !== undefined);
  await pollFatal(() => failureCalls().length === 1, { timeout: WF_DEADLINE_MS, what: "the first failure callback" });
  const again = await env.client.dlq.retryFailureFunction({ dlqId: entry.dlqId });
  assert.equal(again.workflowRunId, runId);
  assert.equal(again.workflowCreatedAt, entry.workflowCreatedAt);
  await pollFatal(() => failureCalls().length === 2, { timeout: WF_DEADLINE_MS, what: "the failure callback again" });

  const { deleted } = await env.client.dlq.delete(entry.dlqId);
  assert.equal(deleted, 1);
  const { messages } = await env.client.dlq.list({ filter: { workflowRunId: runId } });
  assert.deepEqual(messages, []);
  await assert.rejects(env.client.dlq.retryFailureFunction({ dlqId: entry.dlqId }), (error) => error.status === 404);
});
