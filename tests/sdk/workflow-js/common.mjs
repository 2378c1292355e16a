// Shared setup and waiting helpers of the workflow suite.
//
// The tern process handling (startTern: `tern dev` on a free port with a fresh data dir),
// the dev users, poll() and rawRequest() come from the @upstash/qstash suite's harness,
// imported rather than copied. That file imports `@upstash/qstash` itself, and Node resolves
// bare imports from the importing file's directory, i.e. from tests/sdk/js/node_modules:
// so tests/sdk/js must be installed too (`npm ci` there; scripts/sdk-tests.sh does it for
// this suite). It also clears QSTASH_* variables, so no SDK enters dev mode.

import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";

import { Client } from "@upstash/workflow";

import { USERS, freePort, poll, rawRequest, sleep, startTern, ternBinary, uid } from "../js/harness.mjs";
import { startApp } from "./app.mjs";

export { USERS, freePort, poll, rawRequest, uid };

// Runs take several deliveries and some scenarios sleep for seconds: a generous but finite
// deadline per wait (seconds, overridable).
export const WF_DEADLINE_MS = Number(process.env.TERN_WF_DEADLINE ?? "45") * 1000;

export const TERMINAL = ["RUN_SUCCESS", "RUN_FAILED", "RUN_CANCELED"];

/** A @upstash/workflow Client: dev mode off, no SDK-side retries (never hide a failing call). */
export function workflowClient(tern, token = USERS[1].token) {
  return new Client({ baseUrl: tern.url, token, devMode: false, retry: false });
}

/** tern + the test app (routes using user 1's token and signing keys) + a client. */
export async function setup() {
  const tern = await startTern();
  let app;
  try {
    app = await startApp({
      ternUrl: tern.url,
      token: USERS[1].token,
      currentSigningKey: USERS[1].current,
      nextSigningKey: USERS[1].next,
    });
  } catch (error) {
    await tern.stop();
    throw error;
  }
  const client = workflowClient(tern);
  return {
    tern,
    app,
    client,
    stop: async () => {
      await app.close();
      await tern.stop();
    },
  };
}

/**
 * client.trigger on /wf/<route>. retries default to 0 here (the SDK's default is 3 with
 * tern's exponential backoff): a scenario that breaks then fails at once with the route's
 * error in the logs instead of retrying until the deadline. Returns the run id (wfr_<id>).
 */
export async function trigger(env, route, opts = {}) {
  const { workflowRunId } = await env.client.trigger({
    url: env.app.wfUrl(route),
    workflowRunId: uid(),
    retries: 0,
    ...opts,
  });
  return workflowRunId;
}

/**
 * An HTTP error that asking again will not fix: the endpoint is missing or refuses (4xx), or
 * the server failed (500; a correct server never answers these requests with one). Timeouts,
 * rate limits and gateway errors are retried.
 */
const isFatal = (error) => {
  const s = error?.status;
  return typeof s === "number" && s >= 400 && ![408, 429, 502, 503, 504].includes(s);
};

/**
 * poll(fn) that stops at once when fn throws such an error (e.g. tern answering 404 for an
 * endpoint it does not have) instead of retrying it until the deadline.
 */
export async function pollFatal(fn, opts) {
  let fatal;
  const value = await poll(async () => {
    try {
      return await fn();
    } catch (error) {
      if (isFatal(error)) {
        fatal = error;
        return true;
      }
      throw error;
    }
  }, opts);
  if (fatal) throw fatal;
  return value;
}

export async function findRun(client, runId) {
  const { runs } = await client.logs({ filter: { workflowRunId: runId } });
  assert.ok(Array.isArray(runs), `logs.runs is not an array: ${JSON.stringify(runs)}`);
  return runs.find((r) => r.workflowRunId === runId);
}

/** the requests the named route(s) got, for failure messages */
const context = (env, route) =>
  [route ?? []].flat().map((r) => `\nrequests to /wf/${r}:\n${env.app.describe(r)}`).join("");

/**
 * Wait until check() (reading app state) returns a truthy value. Meanwhile the logs are read
 * too: a client error from them (e.g. tern without the endpoint) fails at once, and so does
 * a run that ended before check() held, if `runId` is given and `stopOnEnd` is set (a run
 * that ended without the expected effect will not produce it any more). A failed run counts
 * as ended once its failure callback (sent to the workflow route by default) was answered:
 * the failure function may still record something until then.
 */
export async function waitApp(env, check, { what, route, runId, stopOnEnd = true, timeout = WF_DEADLINE_MS } = {}) {
  let ended;
  let value;
  try {
    await pollFatal(
      async () => {
        value = await check();
        if (value) return true;
        let run;
        if (runId) run = await findRun(env.client, runId);
        else await env.client.logs({ count: 1 }); // only to fail fast where tern has no logs
        const settled = run && (run.workflowState !== "RUN_FAILED" || env.app.failureAnswered(runId));
        if (stopOnEnd && settled && TERMINAL.includes(run.workflowState)) {
          value = await check();
          if (!value) ended = run;
          return true;
        }
        return false;
      },
      { timeout, interval: 250, what },
    );
  } catch (error) {
    error.message += context(env, route);
    throw error;
  }
  if (ended) assert.fail(`waiting for ${what}: run ${runId} ended as ${ended.workflowState}: ${JSON.stringify(ended)}${context(env, route)}`);
  return value;
}

/** Wait until the app recorded the result of runId (app.finish or a failure function). */
export async function waitResult(env, runId, { route, timeout } = {}) {
  await waitApp(env, () => env.app.results.has(runId), { what: `the result of ${runId}`, route, runId, timeout });
  return env.app.results.get(runId);
}

/** Wait until the logs show runId in `state`; fails early on another final state. */
export async function waitRun(env, runId, state, { route, timeout = WF_DEADLINE_MS, client = env.client } = {}) {
  let run;
  let last;
  try {
    run = await pollFatal(
      async () => {
        const r = await findRun(client, runId);
        last = r;
        if (r && (r.workflowState === state || TERMINAL.includes(r.workflowState))) return r;
        return undefined;
      },
      { timeout, interval: 250, what: `${runId} in state ${state}` },
    );
  } catch (error) {
    error.message += `\nlast log of the run: ${JSON.stringify(last)}${context(env, route)}`;
    throw error;
  }
  assert.equal(run.workflowState, state, `run ${runId}: ${JSON.stringify(run)}${context(env, route)}`);
  return run;
}

/** The requests the route got (all runs, or one run) must number `n`. */
export function assertCalls(env, route, n, runId) {
  const got = env.app.calls(route, runId).length;
  assert.equal(got, n, `expected ${n} requests to /wf/${route}${runId ? ` for ${runId}` : ""}, got ${got}:\n${env.app.describe(route)}`);
}

/** Steps of a run log, groups flattened, without the trailing "next" group. */
export const flatSteps = (run) => run.steps.filter((g) => g.type !== "next").flatMap((g) => g.steps);
export const nextGroup = (run) => run.steps.find((g) => g.type === "next");

export function stepNamed(run, name) {
  const step = flatSteps(run).find((s) => s.stepName === name);
  assert.ok(step, `no step named ${JSON.stringify(name)} in ${JSON.stringify(run.steps)}`);
  return step;
}

/** A step's `out` as a value: logs carry it as the JSON text the SDK published. */
export function parseOut(out) {
  if (typeof out !== "string") return out;
  try {
    return JSON.parse(out);
  } catch {
    return out;
  }
}

/** The checks every finished run log should pass. */
export function assertRunLog(run, { url, state, stepNames }) {
  assert.equal(run.workflowState, state);
  assert.equal(run.workflowUrl, url);
  assert.equal(typeof run.workflowRunCreatedAt, "number");
  if (state !== "RUN_STARTED") assert.equal(typeof run.workflowRunCompletedAt, "number", "workflowRunCompletedAt");
  const steps = flatSteps(run);
  assert.equal(steps[0]?.stepName, "init", `first step is the initial payload: ${JSON.stringify(run.steps)}`);
  assert.equal(steps[0].stepType, "Initial");
  if (stepNames) {
    assert.deepEqual(
      steps.map((s) => s.stepName),
      ["init", ...stepNames],
    );
  }
  for (const s of steps) {
    assert.equal(typeof s.messageId, "string", `messageId of ${s.stepName}`);
    assert.equal(typeof s.createdAt, "number", `createdAt of ${s.stepName}`);
    if (state === "RUN_SUCCESS") assert.equal(s.state, "STEP_SUCCESS", `state of ${s.stepName}`);
  }
  return steps;
}

export const b64 = (s) => Buffer.from(s, "base64").toString("utf8");

/**
 * Start a run of the park/hold route and wait until it is parked: on a 1 h sleep (its
 * initial delivery answered 200, so the sleep step is published) or on an event nobody
 * sends (the waiter is listed by getWaiters).
 */
export async function parkRun(env, route, mode, client = env.client) {
  const eventId = `park-${uid()}`;
  const runId = await trigger(env, route, { body: { mode, eventId } });
  try {
    if (mode === "sleep") {
      await waitApp(env, () => env.app.calls(route, runId).some((c) => c.status === 200), { what: `${runId} parked on its sleep`, runId });
    } else {
      await pollFatal(async () => (await client.getWaiters({ eventId })).length === 1, {
        timeout: WF_DEADLINE_MS,
        what: `a waiter for ${eventId}`,
      });
    }
  } catch (error) {
    error.message += context(env, route);
    throw error;
  }
  return { runId, eventId };
}

/**
 * Start `tern dev --port <port> --data-dir <dataDir>` on a port and data dir the caller owns
 * (startTern picks both itself and removes the dir on stop): for restarting tern on the same
 * data, at the same URL. Waits for the `running` line and for GET /v2/keys to answer 200.
 * Resolves to { url, port, dataDir, pid, output(), exited(), kill9(), stop() }; stop() (SIGTERM,
 * then SIGKILL after 5 s) and kill9() (SIGKILL at once) signal the whole process group and wait
 * for the exit; neither touches the data dir. A start that fails because the port is still
 * taken (a killed predecessor's socket) is tried again until the startup deadline.
 */
export async function startTernAt({ port, dataDir, startupMs = Number(process.env.TERN_STARTUP_DEADLINE ?? "30") * 1000 }) {
  const bin = ternBinary();
  if (!existsSync(bin)) {
    throw new Error(`tern binary not found at ${bin}; build it with \`cargo build -p tern-server --bin tern\` or set TERN_BIN`);
  }
  const deadline = Date.now() + startupMs;
  for (;;) {
    const proc = spawnTernProcess(bin, port, dataDir);
    try {
      await proc.ready(deadline);
      return proc;
    } catch (error) {
      await proc.kill9();
      const taken = /address (already )?in use|EADDRINUSE/i.test(proc.output());
      if (!taken || Date.now() >= deadline) throw error;
      await sleep(200);
    }
  }
}

function spawnTernProcess(bin, port, dataDir) {
  const env = { ...process.env };
  for (const key of ["NO_PROXY", "no_proxy"]) {
    const parts = (env[key] ?? "").split(",").filter(Boolean);
    for (const host of ["127.0.0.1", "localhost", "::1"]) if (!parts.includes(host)) parts.push(host);
    env[key] = parts.join(",");
  }
  const url = `http://127.0.0.1:${port}`;
  const child = spawn(bin, ["dev", "--port", String(port), "--data-dir", dataDir], {
    stdio: ["ignore", "pipe", "pipe"],
    env,
    detached: true, // own process group: kill9()/stop() signal all of it
  });
  let text = "";
  let exited = null;
  const exitPromise = new Promise((resolve) => {
    child.on("exit", (code, signal) => {
      exited = { code, signal };
      resolve();
    });
    child.on("error", (error) => {
      exited = { error: String(error) };
      resolve();
    });
  });
  child.stdout.on("data", (c) => (text += c.toString("utf8")));
  child.stderr.on("data", (c) => (text += c.toString("utf8")));
  const onExit = () => {
    if (exited === null) {
      try {
        process.kill(-child.pid, "SIGKILL");
      } catch {
        /* already gone */
      }
    }
  };
  process.once("exit", onExit); // a crashed test process must not leave tern running

  const signal = async (sig) => {
    if (exited === null) {
      try {
        process.kill(-child.pid, sig);
      } catch {
        child.kill(sig);
      }
    }
  };
  const finish = () => {
    process.removeListener("exit", onExit);
    child.stdout.destroy();
    child.stderr.destroy();
  };
  const output = () => text;

  return {
    url,
    port,
    dataDir,
    pid: child.pid,
    output,
    exited: () => exited,
    async ready(deadline) {
      while (!/running/i.test(text)) {
        if (exited) throw new Error(`tern exited early (${JSON.stringify(exited)}):\n${output()}`);
        if (Date.now() > deadline) throw new Error(`tern did not print 'running' in time:\n${output()}`);
        await sleep(25);
      }
      let last;
      for (;;) {
        if (exited) throw new Error(`tern exited early (${JSON.stringify(exited)}):\n${output()}`);
        try {
          const res = await rawRequest(url, "GET", "/v2/keys", { token: USERS[1].token, timeoutMs: 2000 });
          if (res.status === 200) return;
          last = `status ${res.status}`;
        } catch (error) {
          last = String(error);
        }
        if (Date.now() > deadline) throw new Error(`GET /v2/keys never answered 200 (${last}):\n${output()}`);
        await sleep(50);
      }
    },
    /** SIGKILL the process group and wait until tern is gone */
    async kill9() {
      await signal("SIGKILL");
      await exitPromise;
      finish();
    },
    /** SIGTERM (SIGKILL after 5 s) and wait */
    async stop() {
      if (exited === null) {
        await signal("SIGTERM");
        const timer = setTimeout(() => signal("SIGKILL"), 5000);
        await exitPromise;
        clearTimeout(timer);
      }
      finish();
    },
  };
}
