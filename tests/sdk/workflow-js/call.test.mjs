// context.call to fake third parties (spec workflow-protocol §4.5): non-2xx answers are
// results, call retries, and a callback after every attempt (the SDK answers the callback of
// an attempt that will be retried with "call-will-retry" and waits for the last one).
import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { assertCalls, assertRunLog, setup, stepNamed, trigger, waitResult, waitRun } from "./common.mjs";

let env;
before(async () => {
  env = await setup();
});
after(async () => {
  await env?.stop();
});

test("context.call: statuses 200/201/400/401/300 are results, call retries, a callback per attempt, 15 requests", async () => {
  const runId = await trigger(env, "call", { body: "call-payload", retryDelay: "1000" });
  const r = await waitResult(env, runId, { route: "call" });

  assert.equal(r.payload, "call-payload");
  // text/plain bodies come back as strings, application/json ones parsed
  assert.deepEqual(r.get200, { status: 200, body: "ok GET get-header", fakeStatus: "200" });
  assert.deepEqual(r.post201, {
    status: 201,
    body: { method: "POST", body: JSON.stringify({ hello: "world" }), header: "post-header" },
    fakeStatus: "201",
  });
  assert.deepEqual(r.delete400, { status: 400, body: { foo: "bar", zed: 2 }, fakeStatus: "400" });
  assert.deepEqual(r.patch401, { status: 401, body: "failing request", fakeStatus: "401" });
  assert.deepEqual(r.put300, { status: 300, body: "", fakeStatus: "300" });
  assert.deepEqual(r.flaky, { status: 200, body: "recovered after 1", fakeStatus: null });

  // the third parties: methods, bodies, forwarded call headers, and the call's own retries
  const hits = (p) => env.app.fake(p);
  assert.equal(hits("/fake/status/200").length, 1);
  assert.equal(hits("/fake/status/200")[0].method, "GET");
  assert.equal(hits("/fake/status/200")[0].headers["x-req"], "get-header");
  const post = hits("/fake/status/201");
  assert.equal(post.length, 1);
  assert.deepEqual([post[0].method, post[0].text], ["POST", JSON.stringify({ hello: "world" })]);
  assert.equal(post[0].headers["content-type"], "application/json");
  assert.equal(hits("/fake/status/400")[0].method, "DELETE");
  assert.equal(hits("/fake/status/401").length, 2, "retries: 1 -> two attempts at the 401 endpoint");
  assert.equal(hits("/fake/status/300")[0].method, "PUT");
  assert.equal(hits(`/fake/flaky/${runId}`).length, 2, "fails once, succeeds on the retry");
  // a third party never gets the workflow's trigger headers or protocol header
  for (const req of env.app.fakeRequests) {
    assert.equal(req.headers["upstash-workflow-sdk-version"], undefined, `${req.path} got the SDK version header`);
  }

  const run = await waitRun(env, runId, "RUN_SUCCESS", { route: "call" });
  // initial delivery (publishes call 1); per call: the callback delivery (the SDK turns it
  // into a result step) and the result's delivery (runs the next call): 1 + 6 * 2. QStash
  // calls back after every attempt, and the SDK answers a callback of an attempt that will be
  // retried with "call-will-retry": one more for each of the two calls retried once.
  assertCalls(env, "call", 15, runId);
  assertRunLog(run, {
    url: env.app.wfUrl("call"),
    state: "RUN_SUCCESS",
    stepNames: ["get 200", "post 201", "delete 400", "patch 401", "put 300", "flaky"],
  });
  const patch = stepNamed(run, "patch 401");
  assert.equal(patch.stepType, "Call");
  assert.equal(patch.callUrl, env.app.fakeUrl("status/401"));
  assert.equal(patch.callMethod, "PATCH");
  assert.equal(patch.callResponseStatus, 401);
  assert.equal(stepNamed(run, "post 201").callResponseStatus, 201);
});
