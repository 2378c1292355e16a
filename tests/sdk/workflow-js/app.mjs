// The workflow test app: a node:http server on 127.0.0.1 that serves every route of
// ./workflows.mjs through `serve` from @upstash/workflow (its generic Request -> Response
// handler) under /wf/<name>, plus fake third-party endpoints under /fake/*.
//
// It keeps everything the tests check in memory (no Redis, unlike the SDK's own CI app):
//   * every request to a workflow route (route, run id, status, error body) -> calls();
//   * each run's final result (written by the route after its last step) -> results;
//   * notes and counters the routes write while they run (e.g. how often a step ran);
//   * every request to a fake endpoint -> fakeRequests.
//
// Signatures are verified: each route gets a Receiver with the tern dev user's signing keys.

import http from "node:http";

import { Client as QStashClient, Receiver } from "@upstash/qstash";
import { serve } from "@upstash/workflow";

import { routes } from "./workflows.mjs";

/**
 * Start the app. ternUrl/token are what the routes' QStash client talks to; the signing keys
 * are the ones tern signs deliveries with for that token's user.
 */
export async function startApp({ ternUrl, token, currentSigningKey, nextSigningKey }) {
  const server = http.createServer();
  // no keep-alive lingering after the tests: close() must not wait for idle sockets
  server.keepAliveTimeout = 1000;
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  const base = `http://127.0.0.1:${server.address().port}`;

  const calls = []; // { route, runId, messageId, method, time, end, status, error?, headers, bodyLength }
  const results = new Map(); // runId -> final value
  const resultsByRoute = new Map(); // route -> [{ runId, value }]
  const notes = new Map(); // `${runId}:${key}` -> value
  const counters = new Map(); // key -> number
  const flags = new Map(); // key -> value, set by tests to change a route's behaviour
  const fakeRequests = []; // { path, method, headers, text, time, status }
  const flakyCounts = new Map();

  // What the route functions get besides their context (see workflows.mjs).
  const api = {
    base,
    wfUrl: (name) => `${base}/wf/${name}`,
    fakeUrl: (p) => `${base}/fake/${p.replace(/^\//, "")}`,
    finish(context, value) {
      results.set(context.workflowRunId, value);
      const list = resultsByRoute.get(routeOf(context.url)) ?? [];
      list.push({ runId: context.workflowRunId, value });
      resultsByRoute.set(routeOf(context.url), list);
      return value;
    },
    note(runId, key, value) {
      notes.set(`${runId}:${key}`, value);
    },
    bump(key) {
      const n = (counters.get(key) ?? 0) + 1;
      counters.set(key, n);
      return n;
    },
    flags,
    // an InvokableWorkflow for context.invoke / context.call({ workflow }): the SDK replaces
    // the last path segment of the caller's URL with workflowId, so the callee is /wf/<name>
    workflow: (name) => ({ routeFunction: routeFunctions[name], options: serveOptions[name], workflowId: name }),
  };

  // The routes' QStash client: no SDK-side retries, so a failing tern request is not hidden,
  // and dev mode off (the SDK would otherwise probe for or download its own server).
  const qstashClient = new QStashClient({ baseUrl: ternUrl, token, devMode: false, retry: false });
  const receiver = new Receiver({ currentSigningKey, nextSigningKey, devMode: false });

  const routeFunctions = {};
  const serveOptions = {};
  const handlers = {};
  for (const [name, def] of Object.entries(routes)) {
    routeFunctions[name] = (context) => def.route(context, api);
    serveOptions[name] = {
      qstashClient,
      receiver,
      url: api.wfUrl(name),
      // an explicit, empty env: nothing from the test process (QSTASH_*, UPSTASH_WORKFLOW_URL)
      // may switch the SDK to other URLs, regions or dev mode
      env: {},
      ...(def.failureFunction ? { failureFunction: (data) => def.failureFunction(data, api) } : {}),
    };
    handlers[name] = serve(routeFunctions[name], serveOptions[name]).handler;
  }

  server.on("request", (req, res) => {
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => {
      const body = Buffer.concat(chunks);
      handle(req, res, body).catch((error) => {
        if (!res.headersSent) res.writeHead(500, { "content-type": "text/plain" });
        res.end(`test app error: ${error?.stack ?? error}`);
      });
    });
  });

  async function handle(req, res, body) {
    const url = new URL(req.url, base);
    const wf = /^\/wf\/([^/]+)$/.exec(url.pathname);
    if (wf && handlers[wf[1]]) return await handleWorkflow(wf[1], req, res, body);
    if (url.pathname.startsWith("/fake/")) return await handleFake(url, req, res, body);
    send(res, 404, { "content-type": "text/plain" }, `no route ${req.method} ${url.pathname}`);
  }

  async function handleWorkflow(name, req, res, body) {
    const call = {
      route: name,
      runId: req.headers["upstash-workflow-runid"],
      messageId: req.headers["upstash-message-id"],
      method: req.method,
      time: Date.now(),
      headers: req.headers,
      bodyLength: body.length,
      status: undefined,
    };
    calls.push(call);
    const response = await handlers[name](toRequest(req, body));
    const text = await response.text();
    call.status = response.status;
    call.end = Date.now(); // when the answer was ready (written right after)
    if (response.status >= 300) call.error = text.slice(0, 2000);
    const headers = {};
    response.headers.forEach((value, key) => {
      headers[key] = value;
    });
    send(res, response.status, headers, text);
  }

  async function handleFake(url, req, res, body) {
    const text = body.toString("utf8");
    const rec = { path: url.pathname + url.search, method: req.method, headers: req.headers, text, time: Date.now() };
    fakeRequests.push(rec);
    const reply = (status, headers, out) => {
      rec.status = status;
      send(res, status, headers, out);
    };
    const parts = url.pathname.split("/").filter(Boolean); // ["fake", kind, ...]
    const kind = parts[1];
    const xReq = req.headers["x-req"] ?? "";
    if (kind === "status") {
      // third-party answers for context.call: non-2xx ones are results, not failures
      const code = Number(parts[2]);
      const h = { "X-Fake-Status": String(code) };
      if (code === 200) return reply(200, { ...h, "content-type": "text/plain" }, `ok ${req.method} ${xReq}`);
      if (code === 201) {
        return reply(201, { ...h, "content-type": "application/json" }, JSON.stringify({ method: req.method, body: text, header: xReq }));
      }
      if (code === 300) return reply(300, { ...h, "content-type": "text/plain" }, "");
      if (code === 400) return reply(400, { ...h, "content-type": "application/json" }, JSON.stringify({ foo: "bar", zed: 2 }));
      if (code === 401) return reply(401, { ...h, "content-type": "text/plain" }, "failing request");
      return reply(code, { ...h, "content-type": "text/plain" }, `status ${code}`);
    }
    if (kind === "flaky") {
      // fails `fails` times per key, then succeeds
      const key = parts[2];
      const fails = Number(url.searchParams.get("fails") ?? "1");
      const n = (flakyCounts.get(key) ?? 0) + 1;
      flakyCounts.set(key, n);
      if (n <= fails) return reply(500, { "content-type": "text/plain" }, `flaky failure ${n}`);
      return reply(200, { "content-type": "text/plain" }, `recovered after ${fails}`);
    }
    if (kind === "plain") {
      // a non-workflow endpoint: 200 without any Upstash-Workflow-* response header
      return reply(200, { "content-type": "text/plain" }, "plain endpoint");
    }
    if (kind === "old-sdk") {
      // answers like a pre-1.0 workflow SDK: the protocol version header, but no
      // Upstash-Workflow-Sdk (v1 marker) -- what the SDK's CI uses for the REST-trigger check
      return reply(200, { "content-type": "text/plain", "Upstash-Workflow-Sdk-Version": "1" }, "old sdk");
    }
    if (kind === "record") return reply(200, { "content-type": "text/plain" }, "recorded");
    if (kind === "webhook-caller") {
      // calls the webhook URL it is given, like a third party would: no token
      const { webhookUrl } = JSON.parse(text);
      const r = await fetch(webhookUrl, {
        method: "PUT",
        headers: { "content-type": "application/json", "x-hook": "from-caller" },
        body: JSON.stringify({ from: "caller" }),
        signal: AbortSignal.timeout(10_000),
      });
      rec.hookStatus = r.status;
      await r.text();
      if (!r.ok) return reply(500, { "content-type": "text/plain" }, `webhook answered ${r.status}`);
      return reply(200, { "content-type": "text/plain" }, "webhook called");
    }
    reply(404, { "content-type": "text/plain" }, `no fake ${url.pathname}`);
  }

  return {
    base,
    wfUrl: api.wfUrl,
    fakeUrl: api.fakeUrl,
    results,
    flags,
    fakeRequests,
    /** requests to a workflow route, optionally only those of one run (by Upstash-Workflow-RunId) */
    calls: (route, runId) => calls.filter((c) => c.route === route && (runId === undefined || c.runId === runId)),
    /** whether a failure callback of runId reached a route and was answered */
    failureAnswered: (runId) =>
      calls.some((c) => c.runId === runId && c.status !== undefined && (c.headers["upstash-workflow-failure-callback"] || c.headers["upstash-workflow-is-failure"])),
    resultsFor: (route) => resultsByRoute.get(route) ?? [],
    note: (runId, key) => notes.get(`${runId}:${key}`),
    counter: (key) => counters.get(key) ?? 0,
    fake: (prefix) => fakeRequests.filter((r) => r.path.startsWith(prefix)),
    /** one line per request to the route, for assertion messages */
    describe(route) {
      const lines = calls
        .filter((c) => route === undefined || c.route === route)
        .map((c) => `${c.route} run=${c.runId ?? "-"} -> ${c.status ?? "pending"}${c.error ? ` ${c.error.slice(0, 300)}` : ""}`);
      return lines.length ? lines.join("\n") : "(no requests)";
    },
    close: async () => {
      server.closeAllConnections?.();
      await new Promise((resolve) => server.close(() => resolve()));
    },
  };
}

const routeOf = (url) => new URL(url).pathname.replace(/^\/wf\//, "");

// Node request -> WHATWG Request, the way @hono/node-server does it: every header is kept
// (Host, Content-Length, Connection... included). The SDK forwards all of them as
// Upstash-Forward-* user headers when a route is started by a plain publish, as it does
// behind real frameworks, so the server has to cope with them.
function toRequest(req, body) {
  const headers = new Headers();
  for (let i = 0; i < req.rawHeaders.length; i += 2) {
    if (req.rawHeaders[i].startsWith(":")) continue;
    headers.append(req.rawHeaders[i], req.rawHeaders[i + 1]);
  }
  const url = `http://${req.headers.host ?? "127.0.0.1"}${req.url}`;
  const hasBody = req.method !== "GET" && req.method !== "HEAD";
  return new Request(url, { method: req.method, headers, body: hasBody ? body : undefined });
}

function send(res, status, headers, text) {
  const data = Buffer.from(text ?? "");
  const h = { ...headers };
  delete h["content-length"];
  delete h["transfer-encoding"];
  res.writeHead(status, { ...h, "content-length": data.length });
  res.end(data);
}
