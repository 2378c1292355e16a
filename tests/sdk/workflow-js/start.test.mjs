// Ways to start a run (spec workflow-protocol §1, §4.1, §4.11): a plain @upstash/qstash
// publish (old-style start: the endpoint triggers itself), the REST POST /v2/trigger/<url>
// (with and without the unknown-SDK header), batch trigger, non-workflow detection, and
// deduplication of a reused run id.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { Client as QStashClient } from "@upstash/qstash";

import {
  assertCalls,
  assertRunLog,
  nextGroup,
  rawRequest,
  setup,
  uid,
  waitApp,
  waitResult,
  waitRun,
  workflowClient,
} from "./common.mjs";

let env;
before(async () => {
  env = await setup();
});
after(async () => {
  await env?.stop();
});

const expectedSequential = (payload, header) => ({
  a: `one(${JSON.stringify(payload)})`,
  b: { prev: `one(${JSON.stringify(payload)})`, n: 2 },
  c: [2, 3],
  header,
  label: null,
});

test("old-style start: publishJSON to the route, which triggers its own run -> 5 requests", async () => {
  const qstash = new QStashClient({ baseUrl: env.tern.url, token: env.tern.token, devMode: false, retry: false });
  const payload = { started: "by publish", tag: uid() };
  await qstash.publishJSON({ url: env.app.wfUrl("seq-publish"), body: payload, headers: { "x-test-header": "old-style" } });

  // the run id is made up by the SDK on that first request, so find the run by its result
  const [{ runId, value }] = await waitApp(env, () => (env.app.resultsFor("seq-publish").length ? env.app.resultsFor("seq-publish") : undefined), {
    what: "the result of the publish-started run",
    route: "seq-publish",
  });
  assert.match(runId, /^wfr_/);
  assert.deepEqual(value, expectedSequential(payload, "old-style"));
  const run = await waitRun(env, runId, "RUN_SUCCESS", { route: "seq-publish" });
  // the plain delivery (no run id yet; the SDK publishes the Init message), then 4 as usual
  assertCalls(env, "seq-publish", 5);
  assert.equal(env.app.calls("seq-publish")[0].runId, undefined);
  assertCalls(env, "seq-publish", 4, runId);
  assertRunLog(run, { url: env.app.wfUrl("seq-publish"), state: "RUN_SUCCESS", stepNames: ["step one", "step two", "step three"] });
});

test("REST POST /v2/trigger/<url> starts a run with forwarded headers -> 4 requests", async () => {
  const payload = { started: "by rest" };
  const url = env.app.wfUrl("seq-rest");
  const res = await rawRequest(env.tern.url, "POST", `/v2/trigger/${url}`, {
    token: env.tern.token,
    body: JSON.stringify(payload),
    headers: { "Content-Type": "application/json", "Upstash-Forward-X-Test-Header": "rest", "Upstash-Retries": "0" },
  });
  assert.ok(res.status >= 200 && res.status < 300, `${res.status} ${res.text}`);
  const { workflowRunId, workflowCreatedAt } = res.json();
  assert.match(workflowRunId, /^wfr_/);
  assert.equal(typeof workflowCreatedAt, "number");

  assert.deepEqual(await waitResult(env, workflowRunId, { route: "seq-rest" }), expectedSequential(payload, "rest"));
  const run = await waitRun(env, workflowRunId, "RUN_SUCCESS", { route: "seq-rest" });
  assertCalls(env, "seq-rest", 4, workflowRunId);
  assert.equal(run.workflowRunCreatedAt, workflowCreatedAt);
});

test("REST trigger with Upstash-Workflow-Unknown-Sdk: the SDK re-triggers the same run once -> 5 requests", async () => {
  const payload = { started: "by an unknown sdk" };
  const url = env.app.wfUrl("seq-unknown");
  const res = await rawRequest(env.tern.url, "POST", `/v2/trigger/${url}`, {
    token: env.tern.token,
    body: JSON.stringify(payload),
    headers: {
      "Content-Type": "application/json",
      "Upstash-Forward-X-Test-Header": "unknown",
      "Upstash-Workflow-Unknown-Sdk": "true",
      "Upstash-Retries": "0",
    },
  });
  assert.ok(res.status >= 200 && res.status < 300, `${res.status} ${res.text}`);
  const { workflowRunId } = res.json();
  assert.deepEqual(await waitResult(env, workflowRunId, { route: "seq-unknown" }), expectedSequential(payload, "unknown"));
  await waitRun(env, workflowRunId, "RUN_SUCCESS", { route: "seq-unknown" });
  // every request carries the run id: the unknown-SDK delivery is answered by re-publishing
  // an Init for the same id (upstash-workflow-trigger-by-sdk), which must not be deduplicated
  assertCalls(env, "seq-unknown", 5, workflowRunId);
  assert.equal(env.app.calls("seq-unknown", workflowRunId)[0].headers["upstash-workflow-unknown-sdk"], "true");
  assert.equal(env.app.calls("seq-unknown", workflowRunId)[1].headers["upstash-workflow-unknown-sdk"], undefined);
});

test("batch trigger: client.trigger([...]) starts each run", async () => {
  const ids = [uid(), uid()];
  const res = await env.client.trigger(ids.map((id, i) => ({ url: env.app.wfUrl("sequential"), body: { i }, workflowRunId: id, retries: 0 })));
  assert.deepEqual(
    res,
    ids.map((id) => ({ workflowRunId: `wfr_${id}` })),
  );
  for (const [i, id] of ids.entries()) {
    assert.deepEqual(await waitResult(env, `wfr_${id}`, { route: "sequential" }), expectedSequential({ i }, null));
    assertCalls(env, "sequential", 4, `wfr_${id}`);
  }
});

test("triggering a non-workflow endpoint fails the run at once with the detection error", async () => {
  const url = env.app.fakeUrl("plain");
  // the SDK's default retries (3): detection must fail the run without retrying
  const { workflowRunId: runId } = await env.client.trigger({ url, workflowRunId: uid(), retries: 3, retryDelay: "1000" });
  const run = await waitRun(env, runId, "RUN_FAILED");
  assert.equal(run.steps.length, 2, JSON.stringify(run.steps));
  assert.equal(run.steps[0].steps[0].stepName, "init");
  assert.equal(run.workflowUrl, url);
  const next = nextGroup(run);
  assert.equal(next.steps.length, 1);
  assert.equal(next.steps[0].state, "STEP_FAILED");
  assert.equal(next.steps[0].errors.length, 1, "no retries after the detection");
  assert.equal(
    next.steps[0].errors[0].error,
    "detected a non-workflow destination for trigger/invoke. make sure you are sending the request to the correct endpoint",
  );
  assert.equal(next.steps[0].errors[0].body, "plain endpoint");
  // one delivery of the Init message (a failure callback may follow; it is marked)
  const deliveries = env.app.fake("/fake/plain").filter((r) => r.headers["upstash-workflow-is-failure"] === undefined);
  assert.equal(deliveries.length, 1);
});

test("REST trigger of an endpoint without the v1 SDK marker fails with the REST-trigger error", async () => {
  const url = env.app.fakeUrl("old-sdk");
  const res = await rawRequest(env.tern.url, "POST", `/v2/trigger/${url}`, {
    token: env.tern.token,
    body: JSON.stringify({ data: "x" }),
    headers: { "Content-Type": "application/json", "Upstash-Retries": "0" },
  });
  assert.ok(res.status >= 200 && res.status < 300, `${res.status} ${res.text}`);
  const { workflowRunId } = res.json();
  const run = await waitRun(env, workflowRunId, "RUN_FAILED");
  assert.equal(run.steps.length, 2, JSON.stringify(run.steps));
  assert.equal(run.steps[0].steps[0].state, "STEP_SUCCESS");
  const next = nextGroup(run);
  assert.equal(next.steps[0].errors?.[0]?.error, "trigger rest api is only usable with sdk versions after v1.0.0 major version");
});

test("a run id reused while its run is in flight is deduplicated; the route runs once", async () => {
  // a client of our own whose QStash client's batch() is observed: client.trigger hides the
  // `deduplicated` flag of the batch answer (it only logs "already exists")
  const client = workflowClient(env.tern);
  const inner = client.client; // TypeScript-private field of @upstash/workflow's Client
  const answers = [];
  const batch = inner.batch.bind(inner);
  inner.batch = async (...args) => {
    const answer = await batch(...args);
    answers.push(answer);
    return answer;
  };
  const id = uid();
  const url = env.app.wfUrl("dedupe");
  const first = await client.trigger({ url, workflowRunId: id, body: { n: 1 }, retries: 0 });
  const second = await client.trigger({ url, workflowRunId: id, body: { n: 2 }, retries: 0 });
  assert.deepEqual(first, { workflowRunId: `wfr_${id}` });
  assert.deepEqual(second, first);
  assert.equal(answers.length, 2);
  assert.ok(!answers[0][0].deduplicated, JSON.stringify(answers[0]));
  assert.equal(answers[1][0].deduplicated, true, JSON.stringify(answers[1]));

  const result = await waitResult(env, `wfr_${id}`, { route: "dedupe" });
  assert.deepEqual(result, { first: 1, second: "two", payload: { n: 1 } });
  await waitRun(env, `wfr_${id}`, "RUN_SUCCESS", { route: "dedupe" });
  assertCalls(env, "dedupe", 4, `wfr_${id}`);
  assert.equal(env.app.counter(`wfr_${id}:one`), 1);
  const { runs } = await env.client.logs({ filter: { workflowRunId: `wfr_${id}` } });
  assert.equal(runs.length, 1, JSON.stringify(runs));
});
