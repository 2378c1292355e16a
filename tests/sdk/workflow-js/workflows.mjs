// The workflow routes of the test app (served at /wf/<name> by app.mjs).
//
// Each route is `route(context, app)`; `app` is the small API of app.mjs (finish, note, bump,
// flags, fakeUrl, wfUrl, workflow). Rules the SDK imposes on route code:
//   * code outside context.* steps runs again on every delivery (and once more in the SDK's
//     "authorization" dry run, which stops at the first step), so side effects that must
//     happen once live inside context.run; notes written outside steps are idempotent;
//   * app.finish() after the last step runs only on the final delivery: it records the run's
//     result in memory and returns it, so it also becomes the run's `workflowRunResponse`.
//
// The comment on each route gives the number of requests it should receive, derived from
// the SDK: one for the initial delivery plus one per step message delivered to the route
// (a context.call adds two: its callback and its result step; a parallel group of n adds
// 2n: n plan steps and n results; a failure adds the failure callback).

import { WorkflowNonRetryableError } from "@upstash/workflow";

const lower = (h) => Object.fromEntries(Object.entries(h ?? {}).map(([k, v]) => [k.toLowerCase(), v]));
/** first value of a header in a `Record<string, string[]>` map, case-insensitively */
export const hget = (map, name) => {
  const v = lower(map)[name.toLowerCase()];
  return Array.isArray(v) ? v[0] : v;
};

async function sequential(context, app) {
  const input = context.requestPayload;
  const a = await context.run("step one", () => `one(${JSON.stringify(input)})`);
  const b = await context.run("step two", () => ({ prev: a, n: 2 }));
  const c = await context.run("step three", () => [b.n, 3]);
  return app.finish(context, { a, b, c, header: context.headers.get("x-test-header"), label: context.label ?? null });
}

/** One step of the durable route: folds the step number and the seed into the accumulator. */
export const durableStep = (acc, seed, k) => (acc * 31 + seed * k + k * k) % 1_000_003;
export const DURABLE_STEPS = 5;
/** The result a run of the durable route must end with for `seed`. */
export function durableExpected(seed) {
  let acc = seed;
  for (let k = 1; k <= DURABLE_STEPS; k++) acc = durableStep(acc, seed, k);
  return { seed, acc };
}

async function park(context, app) {
  const { mode, eventId } = context.requestPayload;
  if (mode === "sleep") await context.sleep("park", "1h");
  else await context.waitForEvent("park", eventId, { timeout: "1h" });
  await context.run("after park", () => app.bump(`${context.workflowRunId}:after`));
  return app.finish(context, "unparked");
}

export const routes = {
  // 3 sequential steps -> 4 requests (client.trigger, REST trigger), 5 (plain publish: the
  // SDK's own trigger request comes first; REST trigger with the unknown-SDK header: the SDK
  // re-triggers the run first)
  sequential: { route: sequential },

  // the same route under other names, so that each way of starting it is counted apart
  "seq-publish": { route: sequential },
  "seq-rest": { route: sequential },
  "seq-unknown": { route: sequential },

  // run, sleep(2), run, sleepUntil(+2 s, whole seconds), run, sleep("1s"), run -> 8 requests
  sleep: {
    route: async (context, app) => {
      const t0 = await context.run("t0", () => Date.now());
      await context.sleep("sleep 2", 2);
      const t1 = await context.run("t1", () => Date.now());
      const until = Math.ceil(t1 / 1000) + 2;
      await context.sleepUntil("sleep until", until);
      const t2 = await context.run("t2", () => Date.now());
      await context.sleep("sleep 1s", "1s");
      const t3 = await context.run("t3", () => Date.now());
      return app.finish(context, { t0, t1, t2, t3, until });
    },
  },

  // run, parallel [run, run, sleep(2)], run -> 1 + 1 + 3 plans + 3 results + 1 = 9 requests
  parallel: {
    route: async (context, app) => {
      const start = await context.run("start", () => Date.now());
      const [a, b, slept] = await Promise.all([
        context.run("branch a", () => "A"),
        context.run("branch b", async () => ({ b: await Promise.resolve(2) })),
        context.sleep("branch sleep", 2),
      ]);
      const end = await context.run("after", () => Date.now());
      return app.finish(context, { a, b, slept: slept ?? null, start, end });
    },
  },

  // six context.call steps -> 1 + 6 * 2 = 13 requests, plus a callback for each attempt retried
  // (two) = 15; fake endpoint hits: 401 twice
  // (retries 1) and flaky twice (fails once, retries 1), the others once
  call: {
    route: async (context, app) => {
      const runKey = context.workflowRunId;
      const get200 = await context.call("get 200", {
        url: app.fakeUrl("status/200"),
        method: "GET",
        headers: { "x-req": "get-header" },
      });
      const post201 = await context.call("post 201", {
        url: app.fakeUrl("status/201"),
        method: "POST",
        body: JSON.stringify({ hello: "world" }),
        headers: { "content-type": "application/json", "x-req": "post-header" },
      });
      const delete400 = await context.call("delete 400", { url: app.fakeUrl("status/400"), method: "DELETE" });
      const patch401 = await context.call("patch 401", {
        url: app.fakeUrl("status/401"),
        method: "PATCH",
        retries: 1,
        retryDelay: "1000",
      });
      const put300 = await context.call("put 300", { url: app.fakeUrl("status/300"), method: "PUT" });
      const flaky = await context.call("flaky", {
        url: app.fakeUrl(`flaky/${runKey}?fails=1`),
        method: "GET",
        retries: 1,
        retryDelay: "1000",
      });
      const pick = (r) => ({ status: r.status, body: r.body, fakeStatus: hget(r.header, "x-fake-status") ?? null });
      return app.finish(context, {
        payload: context.requestPayload,
        get200: pick(get200),
        post201: pick(post201),
        delete400: pick(delete400),
        patch401: pick(patch401),
        put300: pick(put300),
        flaky: pick(flaky),
      });
    },
  },

  // step throws; retries 0 -> 2 requests (the delivery + the failure callback)
  "fail-fn": {
    route: async (context) => {
      await context.run("failing step", () => {
        throw new Error(`boom ${context.requestPayload?.tag}`);
      });
    },
    failureFunction: async ({ context, failStatus, failResponse, failHeaders }, app) =>
      app.finish(context, {
        failStatus,
        failResponse,
        failHeaders: typeof failHeaders,
        payload: context.requestPayload ?? null,
        userHeader: context.headers.get("x-user") ?? null,
        url: context.url,
      }),
  },

  // step throws; retries 1 -> 3 requests; notes the attempt numbers (Upstash-Retried)
  "fail-retry": {
    route: async (context, app) => {
      await context.run("failing step", () => {
        const n = app.bump(`${context.workflowRunId}:attempt`);
        app.note(context.workflowRunId, `retried-${n}`, context.retried);
        throw new Error("retry me");
      });
    },
    failureFunction: async ({ context, failStatus, failResponse }, app) => app.finish(context, { failStatus, failResponse }),
  },

  // WorkflowNonRetryableError -> 489, no retries even with retries 3 -> 2 requests
  "fail-nonretryable": {
    route: async (context) => {
      await context.run("fatal step", () => {
        throw new WorkflowNonRetryableError("not worth retrying");
      });
    },
    failureFunction: async ({ context, failStatus, failResponse }, app) => app.finish(context, { failStatus, failResponse }),
  },

  // step throws; triggered with failureUrl (a fake endpoint) -> 1 request here
  "fail-url": {
    route: async (context) => {
      await context.run("failing step", () => {
        throw new Error("failure for the failure url");
      });
    },
  },

  // run, cancel -> 2 requests; "never" must not run
  "cancel-self": {
    route: async (context, app) => {
      await context.run("before cancel", () => app.bump(`${context.workflowRunId}:before`));
      await context.cancel();
      await context.run("never", () => app.bump(`${context.workflowRunId}:never`));
    },
  },

  // park and hold: park a run on a long sleep or on an event nobody sends, to cancel runs in
  // flight (two names so URL filters can tell them apart)
  park: { route: park },
  hold: { route: park },

  // run, sleep(2), run -> 4 requests
  dedupe: {
    route: async (context, app) => {
      const first = await context.run("one", () => app.bump(`${context.workflowRunId}:one`));
      await context.sleep("hold", 2);
      const second = await context.run("two", () => "two");
      return app.finish(context, { first, second, payload: context.requestPayload });
    },
  },

  // wait (times out), wait (notified), wait (event sent before the wait: lookback),
  // notify nobody -> 5 requests
  events: {
    route: async (context, app) => {
      const { timeoutEvent, notifyEvent, lookbackEvent, nobodyEvent } = context.requestPayload;
      const timedOut = await context.waitForEvent("wait to time out", timeoutEvent, { timeout: 1 });
      const notified = await context.waitForEvent("wait for notify", notifyEvent, { timeout: "60s" });
      const lookback = await context.waitForEvent("wait for lookback", lookbackEvent, { timeout: "60s" });
      const nobody = await context.notify("notify nobody", nobodyEvent, { nobody: true });
      return app.finish(context, { timedOut, notified, lookback, nobody: nobody.notifyResponse });
    },
  },

  // createWebhook x2, waitForWebhook (times out), call the fake caller (which calls the hook),
  // waitForWebhook (caller's request), waitForWebhook (the test's request) -> 8 requests
  webhook: {
    route: async (context, app) => {
      const hook = await context.createWebhook("create webhook");
      app.note(context.workflowRunId, "hook", hook);
      const idle = await context.createWebhook("create idle webhook");
      const timedOut = await context.waitForWebhook("wait idle webhook", idle, "1s");
      const called = await context.call("ask caller", {
        url: app.fakeUrl("webhook-caller"),
        method: "POST",
        body: JSON.stringify({ webhookUrl: hook.webhookUrl }),
        headers: { "content-type": "application/json" },
      });
      const first = await context.waitForWebhook("wait caller request", hook, "60s");
      const second = await context.waitForWebhook("wait test request", hook, "60s");
      const describe = async (r) =>
        r.timeout
          ? { timeout: true }
          : {
              timeout: false,
              url: r.request.url,
              method: r.request.method,
              xHook: r.request.headers.get("x-hook"),
              body: r.request.method === "GET" ? null : await r.request.text(),
            };
      return app.finish(context, {
        hook,
        idle: { timeout: timedOut.timeout, request: timedOut.request ?? null },
        callStatus: called.status,
        first: await describe(first),
        second: await describe(second),
      });
    },
  },

  // invoke a child that succeeds, then one that fails -> 3 requests here
  "invoke-parent": {
    route: async (context, app) => {
      const childId = `${context.workflowRunId.replace(/^wfr_/, "")}-child`;
      const ok = await context.invoke("invoke child", {
        workflow: app.workflow("invoke-child"),
        body: { n: 21 },
        headers: { "x-invoke": "from-parent" },
        workflowRunId: childId,
        retries: 0,
      });
      const bad = await context.invoke("invoke failing child", {
        workflow: app.workflow("invoke-failing"),
        body: "doomed",
        retries: 0,
      });
      const shape = (r) => ({ hasBody: "body" in r, body: r.body, isFailed: r.isFailed, isCanceled: r.isCanceled });
      return app.finish(context, { ok: shape(ok), bad: shape(bad), childId: `wfr_${childId}` });
    },
  },
  // one step -> 2 requests
  "invoke-child": {
    route: async (context, app) => {
      const doubled = await context.run("double", () => context.requestPayload.n * 2);
      return app.finish(context, { doubled, header: context.headers.get("x-invoke") ?? null });
    },
  },
  // fails at its step (retries 0) -> 2 requests: the delivery and the failure callback, which
  // this route answers with "no failure function" (Upstash-Workflow-Failure-Callback-Notfound)
  "invoke-failing": {
    route: async (context) => {
      await context.run("fail", () => {
        throw new Error(`child failed on ${context.requestPayload}`);
      });
    },
  },

  // five sequential steps folding the payload's seed into a number (durableExpected), with a
  // sleep of `pause` seconds between them if set and `slowMs` of work inside each step; every
  // execution of a step is counted (`durable:<runId>:<k>`, all of them: `durable:steps`)
  // -> 1 + 5 requests (+ 4 with pauses), more if tern repeats deliveries
  durable: {
    route: async (context, app) => {
      const { seed, pause, slowMs } = context.requestPayload;
      let acc = seed;
      for (let k = 1; k <= DURABLE_STEPS; k++) {
        if (k > 1 && pause) await context.sleep(`pause ${k - 1}`, pause);
        const prev = acc;
        acc = await context.run(`step ${k}`, async () => {
          app.bump(`durable:${context.workflowRunId}:${k}`);
          app.bump("durable:steps");
          if (slowMs) await new Promise((resolve) => setTimeout(resolve, slowMs));
          return durableStep(prev, seed, k);
        });
      }
      return app.finish(context, { seed, acc });
    },
  },

  // a payload and step results past 1 MiB: tern then delivers the steps with an empty body
  // and the SDK fetches them (GET /v2/workflows/runs/<id>) -> 4 requests
  large: {
    route: async (context, app) => {
      const { size } = context.requestPayload;
      const big = await context.run("big step", () => "x".repeat(size));
      const length = await context.run("measure", () => big.length + context.requestPayload.filler.length);
      await context.run("last", () => "done");
      return app.finish(context, { length });
    },
  },

  // a call asking for more retries than tern allows: the publish gets 412, which the SDK turns
  // into a non-retryable failure of the step (489) -> 2 requests (the delivery, the failure
  // callback)
  quota: {
    route: async (context) => {
      await context.call("greedy call", { url: context.url, method: "GET", retries: 1_000_000 });
    },
  },

  // step one, then step two throws until the test sets flags[key] = "fixed"
  "dlq-flaky": {
    route: async (context, app) => {
      const { key } = context.requestPayload;
      await context.run("step one", () => app.bump(`${key}:one`));
      await context.run("step two", () => {
        app.bump(`${key}:two`);
        if (app.flags.get(key) !== "fixed") throw new Error(`still broken ${key}`);
        return "fixed";
      });
      return app.finish(context, { key });
    },
  },
};
