// context.invoke of other workflows (spec workflow-protocol §4.8): the invoked run's result
// comes back as a step; a failed child gives isFailed: true and no body.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { assertCalls, findRun, setup, stepNamed, trigger, waitApp, waitResult, waitRun } from "./common.mjs";

let env;
before(async () => {
  env = await setup();
});
after(async () => {
  await env?.stop();
});

test("invoke: a child's result (isFailed false) and a failing child's (isFailed true, body absent)", async () => {
  const runId = await trigger(env, "invoke-parent", { body: "parent" });
  const routes = ["invoke-parent", "invoke-child", "invoke-failing"];
  const r = await waitResult(env, runId, { route: routes });
  const childId = r.childId;
  assert.equal(childId, `${runId}-child`);

  // the child got the invoke body as its payload and the invoke headers as user headers
  assert.deepEqual(r.ok, {
    hasBody: true,
    body: { doubled: 42, header: "from-parent" },
    isFailed: false,
    isCanceled: false,
  });
  // the SDK parses `body` with JSON.parse and falls back to the raw value: only an absent
  // body gives undefined (null would stay null, "" would stay "")
  assert.equal(r.bad.isFailed, true);
  assert.equal(r.bad.isCanceled, false);
  assert.equal(r.bad.body, undefined);

  await waitRun(env, runId, "RUN_SUCCESS", { route: routes });
  // initial delivery (first invoke), the first invoke's result (second invoke), the second
  // invoke's result (returns)
  assertCalls(env, "invoke-parent", 3, runId);
  // the child: initial delivery (its step), the step's result (returns)
  assertCalls(env, "invoke-child", 2, childId);
  assert.deepEqual(env.app.results.get(childId), { doubled: 42, header: "from-parent" });

  const child = await waitRun(env, childId, "RUN_SUCCESS", { route: "invoke-child" });
  assert.equal(child.workflowUrl, env.app.wfUrl("invoke-child"));
  assert.equal(child.invoker?.workflowRunId, runId, `invoker in the child's log: ${JSON.stringify(child)}`);
  assert.equal(child.invoker?.workflowUrl, env.app.wfUrl("invoke-parent"));
  assert.deepEqual(JSON.parse(child.workflowRunResponse), { doubled: 42, header: "from-parent" });

  // the failing child: its failed delivery, then the failure callback (the SDK's default
  // failure URL for invoked runs is the child itself, which has no failure function)
  const failingRunId = env.app.calls("invoke-failing")[0]?.runId;
  assert.ok(failingRunId, env.app.describe("invoke-failing"));
  // the parent may get its result before the failing child's failure callback is answered
  await waitApp(env, () => env.app.failureAnswered(failingRunId), {
    what: `the failure callback of ${failingRunId}`,
    route: "invoke-failing",
    runId: failingRunId,
    stopOnEnd: false,
  });
  assertCalls(env, "invoke-failing", 2, failingRunId);
  assert.deepEqual(
    env.app.calls("invoke-failing").map((c) => c.status),
    [500, 200],
  );
  const failedRun = await findRun(env.client, failingRunId);
  assert.equal(failedRun?.workflowState, "RUN_FAILED", JSON.stringify(failedRun));
  assert.equal(failedRun.invoker?.workflowRunId, runId);

  const parent = await waitRun(env, runId, "RUN_SUCCESS");
  const invoke = stepNamed(parent, "invoke child");
  assert.equal(invoke.stepType, "Invoke");
  assert.equal(invoke.state, "STEP_SUCCESS");
  assert.equal(invoke.invokedWorkflowRunId, childId);
  assert.equal(invoke.invokedWorkflowUrl, env.app.wfUrl("invoke-child"));
  assert.equal(stepNamed(parent, "invoke failing child").state, "STEP_SUCCESS");
});
