// Durability: a `kill -9` of tern in the middle of many running workflows loses no step;
// after a restart on the same data dir and port every run finishes with the result it would
// have had (README: "after a crash, every accepted, unfinished message is delivered";
// ARCHITECTURE.md §6: a crash between delivery and record repeats the attempt, at-least-once).
//
// 40 runs of the `durable` route (five sequential steps folding a seed into a number) are
// started at once, in four kinds: fast (no pauses), 1 s sleeps between steps, 2 s sleeps
// between steps, and slow steps (500 ms of work each, so deliveries are in flight at the kill).
// Runs are triggered with retries 0: an attempt cut off by the crash is not a failed attempt
// (it is made again), so no run may fail. Steps may run more than once (the SDK drops a
// duplicate step), the results must be exact.
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { test } from "node:test";

import { Client as QStashClient } from "@upstash/qstash";

import { startApp } from "./app.mjs";
import {
  USERS,
  WF_DEADLINE_MS,
  findRun,
  flatSteps,
  freePort,
  parseOut,
  poll,
  startTernAt,
  trigger,
  workflowClient,
} from "./common.mjs";
import { DURABLE_STEPS, durableExpected } from "./workflows.mjs";

/** poll(fn) that gives up at once when fn throws an error marked `fatal` */
async function pollFatalMarked(fn, opts) {
  let fatal;
  const value = await poll(async () => {
    try {
      return await fn();
    } catch (error) {
      if (!error?.fatal) throw error;
      fatal = error;
      return true;
    }
  }, opts);
  if (fatal) throw fatal;
  return value;
}

const RUNS = Number(process.env.TERN_DURABILITY_RUNS ?? "40");
const ROUTE = "durable";

// the four kinds of run, by index % 4
const KINDS = [
  { name: "fast", pause: 0, slowMs: 0 },
  { name: "pause 1 s", pause: 1, slowMs: 0 },
  { name: "pause 2 s", pause: 2, slowMs: 0 },
  { name: "slow steps", pause: 0, slowMs: 500 },
];

test(`kill -9 amid ${RUNS} running workflows loses no step; after a restart every run ends with its exact result`, async () => {
  const t0 = Date.now();
  const port = await freePort();
  const dataDir = mkdtempSync(path.join(os.tmpdir(), "tern-wf-durability-"));
  let tern;
  let firstOutput = "";
  let app;
  try {
    tern = await startTernAt({ port, dataDir });
    app = await startApp({
      ternUrl: tern.url, // the same URL after the restart
      token: USERS[1].token,
      currentSigningKey: USERS[1].current,
      nextSigningKey: USERS[1].next,
    });
    const client = workflowClient(tern);
    const env = { tern, app, client };

    const specs = Array.from({ length: RUNS }, (_, i) => {
      const kind = KINDS[i % KINDS.length];
      return { i, kind: kind.name, seed: 1000 + i * 37, pause: kind.pause, slowMs: kind.slowMs };
    });
    const runs = await Promise.all(
      specs.map(async (spec) => ({
        ...spec,
        runId: await trigger(env, ROUTE, { body: { seed: spec.seed, pause: spec.pause, slowMs: spec.slowMs } }),
      })),
    );
    assert.equal(new Set(runs.map((r) => r.runId)).size, RUNS, "distinct run ids");

    const stepCount = (runId, k) => app.counter(`durable:${runId}:${k}`);
    const progress = (r) => {
      let n = 0;
      for (let k = 1; k <= DURABLE_STEPS; k++) if (stepCount(r.runId, k) > 0) n += 1;
      return n;
    };
    const finished = () => runs.filter((r) => app.results.has(r.runId));
    const inFlight = () => app.calls(ROUTE).filter((c) => c.status === undefined);

    // --- wait until the runs are well under way: a fifth of the steps executed, a run
    // finished (not all), a pausing run past its first sleep (so others sleep at the kill),
    // and a delivery in flight
    const minSteps = Math.ceil((RUNS * DURABLE_STEPS) / 5);
    await pollFatalMarked(
      () => {
        const done = finished().length;
        if (done === RUNS) throw Object.assign(new Error("every run finished before the kill"), { fatal: true });
        return (
          app.counter("durable:steps") >= minSteps &&
          done >= 1 &&
          runs.some((r) => r.pause && progress(r) >= 2) &&
          inFlight().length >= 1
        );
      },
      {
        timeout: WF_DEADLINE_MS,
        interval: 10,
        what: `${minSteps} step executions, a finished run, a pausing run at step 2 and a delivery in flight`,
      },
    ).catch((error) => {
      error.message += `\nsteps=${app.counter("durable:steps")} finished=${finished().length}\n${app.describe(ROUTE)}\ntern output:\n${tern.output()}`;
      throw error;
    });

    // --- kill -9 (the whole process group)
    const atKill = {
      elapsedMs: Date.now() - t0,
      stepExecutions: app.counter("durable:steps"),
      finished: finished().length,
      inFlight: inFlight().length,
      progress: Object.fromEntries(KINDS.map((k) => [k.name, runs.filter((r) => r.kind === k.name).map(progress).join("")])),
    };
    const killAt = Date.now();
    await tern.kill9();
    firstOutput = tern.output();
    assert.equal(tern.exited()?.signal, "SIGKILL", `tern exit: ${JSON.stringify(tern.exited())}`);
    const callsAtKill = app.calls(ROUTE).length;
    console.log(`durability: killed tern at ${JSON.stringify(atKill)}`);

    // --- restart on the same data dir and port
    const restartAt = Date.now();
    tern = await startTernAt({ port, dataDir });
    env.tern = tern;
    const restartMs = Date.now() - restartAt;

    // --- every run finishes: its result recorded by the app; fail fast on a failed run
    const describeRun = (r) =>
      `run ${r.i} (${r.kind}, seed ${r.seed}) ${r.runId}: executions per step ` +
      `[${Array.from({ length: DURABLE_STEPS }, (_, k) => stepCount(r.runId, k + 1)).join(",")}], requests:\n  ` +
      app
        .calls(ROUTE, r.runId)
        .map((c) => `${new Date(c.time).toISOString()} ${c.status ?? "pending"}${c.error ? ` ${c.error.slice(0, 300)}` : ""}`)
        .join("\n  ");
    const failureContext = (missing) =>
      `\n${missing.map(describeRun).join("\n")}\ntern output after the restart:\n${tern.output()}`;
    let lastFailedCheck = 0;
    try {
      await pollFatalMarked(
        async () => {
          if (finished().length === RUNS) return true;
          if (Date.now() - lastFailedCheck >= 1000) {
            lastFailedCheck = Date.now();
            const { runs: failed } = await client.logs({ filter: { workflowUrl: app.wfUrl(ROUTE), state: "RUN_FAILED" } });
            if (failed?.length) {
              const ids = new Set(failed.map((f) => f.workflowRunId));
              const error = new Error(`runs failed: ${JSON.stringify(failed, null, 1).slice(0, 4000)}`);
              error.missing = runs.filter((r) => ids.has(r.runId));
              throw Object.assign(error, { fatal: true });
            }
          }
          return false;
        },
        { timeout: WF_DEADLINE_MS, interval: 100, what: `all ${RUNS} runs to finish after the restart` },
      );
    } catch (error) {
      const missing = error.missing ?? runs.filter((r) => !app.results.has(r.runId));
      error.message += `\nunfinished runs (${missing.length}):${failureContext(missing)}`;
      throw error;
    }
    const allDoneMs = Date.now() - restartAt;

    // --- exact results, RUN_SUCCESS in the logs with every step, no run missing
    const { runs: listed } = await client.logs({ filter: { workflowUrl: app.wfUrl(ROUTE) }, count: 100 });
    const listedIds = new Set(listed.map((r) => r.workflowRunId));
    let repeatedExecutions = 0;
    let repeatedInLogs = 0;
    for (const r of runs) {
      const expected = durableExpected(r.seed);
      assert.deepEqual(app.results.get(r.runId), expected, `result of ${describeRun(r)}`);
      // a repeated last delivery finishes the run again: with the same value
      for (const { value } of app.resultsFor(ROUTE).filter((f) => f.runId === r.runId)) {
        assert.deepEqual(value, expected, `a result of ${describeRun(r)}`);
      }
      assert.ok(listedIds.has(r.runId), `run ${r.runId} missing from the logs of ${app.wfUrl(ROUTE)}`);

      let log;
      try {
        log = await poll(
          async () => {
            const found = await findRun(client, r.runId);
            return found?.workflowState === "RUN_SUCCESS" || found?.workflowState === "RUN_FAILED" ? found : undefined;
          },
          { timeout: WF_DEADLINE_MS, interval: 100, what: `RUN_SUCCESS in the logs of ${r.runId}` },
        );
      } catch (error) {
        error.message += failureContext([r]);
        throw error;
      }
      assert.equal(log.workflowState, "RUN_SUCCESS", `${JSON.stringify(log)}${failureContext([r])}`);
      assert.deepEqual(JSON.parse(log.workflowRunResponse), expected, `workflowRunResponse of ${r.runId}`);

      const steps = flatSteps(log);
      assert.equal(steps[0]?.stepName, "init", `first step of ${r.runId}: ${JSON.stringify(log.steps)}`);
      assert.deepEqual(parseOut(steps[0].out), { seed: r.seed, pause: r.pause, slowMs: r.slowMs });
      const names = steps.map((s) => s.stepName);
      for (let k = 1; k <= DURABLE_STEPS; k++) {
        const logged = steps.filter((s) => s.stepName === `step ${k}`);
        // a step run again after the kill is published twice; the logs show it once
        assert.equal(logged.length, 1, `step ${k} of ${r.runId} in the logs once: ${JSON.stringify(names)}`);
        for (const s of logged) assert.equal(s.state, "STEP_SUCCESS", `state of step ${k} of ${r.runId}: ${JSON.stringify(s)}`);
        repeatedInLogs += logged.length - 1;
        const n = stepCount(r.runId, k);
        assert.ok(n >= 1, `step ${k} of ${r.runId} never executed`);
        repeatedExecutions += n - 1;
      }
      if (r.pause) {
        for (let k = 1; k < DURABLE_STEPS; k++) {
          assert.ok(names.includes(`pause ${k}`), `pause ${k} of ${r.runId} missing from the logs: ${JSON.stringify(names)}`);
        }
      }
    }

    // Messages the app got more than once. tern records an attempt's outcome after the answer,
    // so a kill repeats the attempts it had started but not yet recorded (ARCHITECTURE.md §6:
    // those in flight and those answered a few ms before). The app may read a request of the
    // killed process only after the kill (its event loop is shared with this test), so the
    // repeats are told apart by tern's own message log: a message it records as DELIVERED more
    // than once would have been delivered twice by one process, or again after being recorded.
    const byMessage = new Map();
    for (const c of app.calls(ROUTE)) {
      const list = byMessage.get(c.messageId) ?? [];
      list.push(c);
      byMessage.set(c.messageId, list);
    }
    const repeatedMessages = [...byMessage.entries()].filter(([, list]) => list.length > 1);
    const answeredBefore = [];
    let unanswered = 0;
    const deliveredTwice = [];
    const qstash = new QStashClient({ baseUrl: tern.url, token: USERS[1].token, retry: false });
    for (const [messageId, list] of repeatedMessages) {
      const first = list[0];
      if (first.end !== undefined && first.end <= killAt) answeredBefore.push(killAt - first.end);
      else unanswered += 1;
      const { logs } = await qstash.logs({ filter: { messageId } });
      const delivered = logs.filter((l) => l.state === "DELIVERED");
      if (delivered.length > 1) {
        deliveredTwice.push({
          messageId,
          runId: first.runId,
          tern: logs.map((l) => `${l.state}@${l.time - killAt}`).reverse(),
          app: list.map((c) => `${c.status}@${c.time - killAt}`),
        });
      }
    }
    answeredBefore.sort((a, b) => a - b);
    console.log(
      `durability: ${repeatedMessages.length} messages delivered more than once; their first attempt: ${unanswered} unanswered at the kill, ` +
        `${answeredBefore.length} answered before it (ms before the kill: ${JSON.stringify(answeredBefore)}); ` +
        `${deliveredTwice.length} recorded as DELIVERED more than once by tern`,
    );
    assert.deepEqual(deliveredTwice, [], "messages tern recorded as DELIVERED more than once (times in ms from the kill)");

    const totalExecutions = app.counter("durable:steps");
    console.log(
      `durability: ${RUNS} runs, ${totalExecutions} step executions for ${RUNS * DURABLE_STEPS} steps ` +
        `(${repeatedExecutions} repeated; ${repeatedInLogs} duplicate step entries in the logs); ` +
        `${app.calls(ROUTE).length} deliveries (${app.calls(ROUTE).length - callsAtKill} after the kill); ` +
        `restart took ${restartMs} ms, all runs finished ${allDoneMs} ms after it; total ${Date.now() - t0} ms`,
    );
    assert.equal(totalExecutions, RUNS * DURABLE_STEPS + repeatedExecutions);
  } catch (error) {
    if (firstOutput) error.message += `\ntern output before the kill (tail):\n${firstOutput.slice(-3000)}`;
    throw error;
  } finally {
    await app?.close();
    await tern?.stop();
    rmSync(dataDir, { recursive: true, force: true });
  }
});
