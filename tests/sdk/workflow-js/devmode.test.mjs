// `tern dev` for the SDK's dev mode (QSTASH_DEV=true): the SDK looks for a dev server on
// 127.0.0.1:<QSTASH_DEV_PORT>, asks it for its signing keys with the dev token (`GET
// /v2/keys`), and uses it when they are the dev keys — otherwise it would download a server of
// its own, which cannot happen here. No URL, token or signing key is configured: a workflow
// served and triggered in dev mode must reach tern, and its deliveries must verify with the
// dev keys.
import assert from "node:assert/strict";
import http from "node:http";
import { after, before, test } from "node:test";

import { Client, serve } from "@upstash/workflow";

import { startTern } from "../js/harness.mjs";
import { WF_DEADLINE_MS, poll } from "./common.mjs";

let tern;
let server;
const results = new Map();
const saved = { dev: process.env.QSTASH_DEV, port: process.env.QSTASH_DEV_PORT };

before(async () => {
  tern = await startTern();
  process.env.QSTASH_DEV = "true";
  process.env.QSTASH_DEV_PORT = String(tern.port);
  const { handler } = serve(async (context) => {
    const doubled = await context.run("double", () => context.requestPayload.n * 2);
    await context.sleep("pause", 1);
    const result = await context.run("finish", () => ({ doubled }));
    results.set(context.workflowRunId, result);
    return result;
  });
  server = http.createServer(async (req, res) => {
    const chunks = [];
    for await (const chunk of req) chunks.push(chunk);
    const body = Buffer.concat(chunks);
    const request = new Request(`http://${req.headers.host}${req.url}`, {
      method: req.method,
      headers: Object.fromEntries(Object.entries(req.headers).map(([k, v]) => [k, String(v)])),
      body: req.method === "GET" || body.length === 0 ? undefined : body,
    });
    const response = await handler(request);
    res.writeHead(response.status, Object.fromEntries(response.headers));
    res.end(Buffer.from(await response.arrayBuffer()));
  });
  server.keepAliveTimeout = 1000;
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
});

after(async () => {
  for (const [key, value] of [["QSTASH_DEV", saved.dev], ["QSTASH_DEV_PORT", saved.port]]) {
    if (value === undefined) delete process.env[key];
    else process.env[key] = value;
  }
  await new Promise((resolve) => server?.close(resolve) ?? resolve());
  server?.closeAllConnections?.();
  await tern?.stop();
});

test("a workflow served and triggered in the SDK's dev mode runs on tern dev", async () => {
  const client = new Client({});
  const url = `http://127.0.0.1:${server.address().port}/dev`;
  const { workflowRunId } = await client.trigger({ url, body: { n: 21 } });
  const result = await poll(() => results.get(workflowRunId), { timeout: WF_DEADLINE_MS, what: "the run's result" });
  assert.deepEqual(result, { doubled: 42 });
  const run = await poll(
    async () => (await client.logs({ filter: { workflowRunId } })).runs.find((r) => r.workflowState === "RUN_SUCCESS"),
    { timeout: WF_DEADLINE_MS, what: "RUN_SUCCESS in the logs" },
  );
  assert.equal(run.workflowUrl, url);
});
