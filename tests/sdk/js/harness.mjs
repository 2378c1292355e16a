// Test harness for driving a real `tern` binary with the official @upstash/qstash SDK.
//
// * startTern() spawns `tern dev --port <free port> --data-dir <fresh temp dir>`, waits for the
//   `running` banner and for `GET /v2/keys` to answer 200, and returns a handle with stop().
// * startReceiver() is a real node:http server on 127.0.0.1 that records every request
//   (method, raw path, headers, body) and answers with configurable statuses.
// * poll() retries a function until it returns a truthy value or a deadline passes.
//
// Only 127.0.0.1 is ever contacted.

import { spawn } from "node:child_process";
import { mkdtempSync, rmSync, existsSync } from "node:fs";
import http from "node:http";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

import { Client, Receiver } from "@upstash/qstash";

// Never let the SDK enter dev mode (it would try to download a binary from the internet).
delete process.env.QSTASH_DEV;
delete process.env.QSTASH_DEV_PORT;
delete process.env.QSTASH_REGION;
delete process.env.QSTASH_URL;
delete process.env.QSTASH_TOKEN;
delete process.env.QSTASH_CURRENT_SIGNING_KEY;
delete process.env.QSTASH_NEXT_SIGNING_KEY;

const HERE = path.dirname(fileURLToPath(import.meta.url));
export const REPO_ROOT = path.resolve(HERE, "..", "..", "..");

export const DEADLINE_MS = Number(process.env.TERN_TEST_DEADLINE ?? "20") * 1000;
const STARTUP_DEADLINE_MS = Number(process.env.TERN_STARTUP_DEADLINE ?? "30") * 1000;

// Spec §21: the four predefined dev users (user 1 is the default).
export const USERS = {
  1: {
    token: "eyJVc2VySUQiOiJkZWZhdWx0VXNlciIsIlBhc3N3b3JkIjoiZGVmYXVsdFBhc3N3b3JkIn0=",
    current: "sig_7kYjw48mhY7kAjqNGcy6cr29RJ6r",
    next: "sig_5ZB6DVzB1wjE8S6rZ7eenA8Pdnhs",
  },
  2: {
    token: "eyJVc2VySUQiOiJ0ZXN0VXNlcjEiLCJQYXNzd29yZCI6InRlc3RQYXNzd29yZCJ9",
    current: "sig_7GVPjvuwsfqF65iC8fSrs1dfYruM",
    next: "sig_5NoELc3EFnZn4DVS5bDs2Nk4b7Ua",
  },
  3: {
    token: "eyJVc2VySUQiOiJ0ZXN0VXNlcjIiLCJQYXNzd29yZCI6InRlc3RQYXNzd29yZCJ9",
    current: "sig_6jWGaWRxHsw4vMSPJprXadyvrybF",
    next: "sig_7qHbvhmahe5GwfePDiS5Lg3pi6Qx",
  },
  4: {
    token: "eyJVc2VySUQiOiJ0ZXN0VXNlcjMiLCJQYXNzd29yZCI6InRlc3RQYXNzd29yZCJ9",
    current: "sig_5T8FcSsynBjn9mMLBsXhpacRovJf",
    next: "sig_7GFR4YaDshFcqsxWRZpRB161jguD",
  },
};
export const USER1 = USERS[1];
export const USER2 = USERS[2];

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export function uid() {
  return Math.random().toString(36).slice(2, 10) + Date.now().toString(36).slice(-4);
}

/**
 * Call fn until it returns a truthy value (errors count as "not yet").
 * Throws at the deadline with the last error/value.
 */
export async function poll(fn, { timeout = DEADLINE_MS, interval = 100, what = "condition" } = {}) {
  const deadline = Date.now() + timeout;
  let lastError;
  let lastValue;
  for (;;) {
    try {
      lastValue = await fn();
      if (lastValue) return lastValue;
      lastError = undefined;
    } catch (error) {
      lastError = error;
    }
    if (Date.now() >= deadline) {
      const detail = lastError ? `; last error: ${lastError?.stack ?? lastError}` : `; last value: ${JSON.stringify(lastValue)}`;
      throw new Error(`timed out after ${timeout} ms waiting for ${what}${detail}`);
    }
    await sleep(interval);
  }
}

export async function freePort() {
  return await new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

export function ternBinary() {
  const raw = process.env.TERN_BIN ?? "target/debug/tern";
  return path.isAbsolute(raw) ? raw : path.resolve(REPO_ROOT, raw);
}

function loopbackEnv() {
  const env = { ...process.env };
  for (const key of ["NO_PROXY", "no_proxy"]) {
    const parts = (env[key] ?? "").split(",").filter(Boolean);
    for (const host of ["127.0.0.1", "localhost", "::1"]) if (!parts.includes(host)) parts.push(host);
    env[key] = parts.join(",");
  }
  return env;
}

/** Raw HTTP against tern, only for things the SDK cannot do (e.g. key rotation). */
export async function rawRequest(baseUrl, method, pathname, { token, body, headers = {}, timeoutMs = 10_000 } = {}) {
  const h = { ...headers };
  if (token) h.Authorization = `Bearer ${token}`;
  const res = await fetch(baseUrl + pathname, { method, headers: h, body, signal: AbortSignal.timeout(timeoutMs) });
  const text = await res.text();
  return { status: res.status, text, json: () => JSON.parse(text) };
}

/**
 * Start `tern dev` on a free port with a fresh data dir.
 * Resolves to { url, port, token, currentSigningKey, nextSigningKey, banner, output(), stop() }.
 */
export async function startTern() {
  const bin = ternBinary();
  if (!existsSync(bin)) {
    throw new Error(`tern binary not found at ${bin}; build it with \`cargo build -p tern-server --bin tern\` or set TERN_BIN`);
  }
  const port = await freePort();
  const dataDir = mkdtempSync(path.join(os.tmpdir(), "tern-sdk-js-"));
  const url = `http://127.0.0.1:${port}`;
  const child = spawn(bin, ["dev", "--port", String(port), "--data-dir", dataDir], {
    stdio: ["ignore", "pipe", "pipe"],
    env: loopbackEnv(),
    detached: true, // own process group, so stop() can kill any children too
  });
  const lines = [];
  const banner = {};
  let runningSeen = false;
  let exited = null;
  let buffered = "";
  const onData = (chunk) => {
    buffered += chunk.toString("utf8");
    let idx;
    while ((idx = buffered.indexOf("\n")) !== -1) {
      const line = buffered.slice(0, idx).replace(/\r$/, "");
      buffered = buffered.slice(idx + 1);
      lines.push(line);
      if (/running/i.test(line)) runningSeen = true;
      for (const key of ["QSTASH_URL", "QSTASH_TOKEN", "QSTASH_CURRENT_SIGNING_KEY", "QSTASH_NEXT_SIGNING_KEY"]) {
        const at = line.indexOf(`${key}=`);
        if (at !== -1 && banner[key] === undefined) {
          banner[key] = line.slice(at + key.length + 1).trim().replace(/^["']|["']$/g, "");
        }
      }
    }
  };
  child.stdout.on("data", onData);
  child.stderr.on("data", onData);
  child.on("exit", (code, signal) => {
    exited = { code, signal };
  });
  child.on("error", (error) => {
    exited = { error };
  });

  const output = () => lines.join("\n") + (buffered ? `\n${buffered}` : "");
  let stopped = false;
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    if (exited === null) {
      const done = new Promise((r) => child.once("exit", r));
      try {
        process.kill(-child.pid, "SIGTERM");
      } catch {
        child.kill("SIGTERM");
      }
      const timer = setTimeout(() => {
        try {
          process.kill(-child.pid, "SIGKILL");
        } catch {
          child.kill("SIGKILL");
        }
      }, 5000);
      await done;
      clearTimeout(timer);
    }
    child.stdout.destroy();
    child.stderr.destroy();
    rmSync(dataDir, { recursive: true, force: true });
  };
  // make sure a crashed test process does not leave tern running
  process.once("exit", () => {
    if (exited === null) {
      try {
        process.kill(-child.pid, "SIGKILL");
      } catch {
        /* already gone */
      }
    }
  });

  try {
    const deadline = Date.now() + STARTUP_DEADLINE_MS;
    while (!runningSeen) {
      if (exited) throw new Error(`tern exited early (${JSON.stringify(exited)}):\n${output()}`);
      if (Date.now() > deadline) throw new Error(`tern did not print 'running' within ${STARTUP_DEADLINE_MS} ms:\n${output()}`);
      await sleep(50);
    }
    let last;
    for (;;) {
      if (exited) throw new Error(`tern exited early (${JSON.stringify(exited)}):\n${output()}`);
      try {
        const res = await rawRequest(url, "GET", "/v2/keys", { token: USER1.token, timeoutMs: 2000 });
        if (res.status === 200) break;
        last = `status ${res.status}`;
      } catch (error) {
        last = String(error);
      }
      if (Date.now() > deadline) throw new Error(`GET /v2/keys never answered 200 (${last}):\n${output()}`);
      await sleep(100);
    }
    // let the reader collect the QSTASH_* banner lines
    const bannerDeadline = Date.now() + 2000;
    while (Object.keys(banner).length < 4 && Date.now() < bannerDeadline) await sleep(50);
  } catch (error) {
    await stop();
    throw error;
  }

  return {
    url,
    port,
    token: USER1.token,
    currentSigningKey: USER1.current,
    nextSigningKey: USER1.next,
    banner,
    output,
    stop,
  };
}

/** An SDK client for `server`. retry: false never hides a failing request behind SDK retries. */
export function makeClient(server, token = USER1.token) {
  return new Client({ baseUrl: server.url, token, devMode: false, retry: false });
}

export function makeReceiver(currentSigningKey, nextSigningKey) {
  return new Receiver({ currentSigningKey, nextSigningKey, devMode: false });
}

/**
 * A real HTTP receiver on 127.0.0.1.
 *
 * reply: { status = 200, body = "ok", headers = {}, delayMs = 0 } or a function (req) => reply.
 * A reply may also carry `until` (a promise: answer as soon as it resolves, even before delayMs)
 * and `onSend` (called just before the response is written).
 * `on(prefix, reply)` sets a reply for paths starting with prefix.
 */
export async function startReceiver(reply = {}) {
  const requests = [];
  const waiters = new Set();
  const routes = [];
  const timers = new Set();
  let defaultReply = reply;

  const replyFor = (req) => {
    let chosen = defaultReply;
    for (const [prefix, r] of routes) {
      if (req.path.startsWith(prefix)) {
        chosen = r;
        break;
      }
    }
    return typeof chosen === "function" ? chosen(req) : chosen;
  };

  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => {
      const body = Buffer.concat(chunks);
      const rec = {
        method: req.method,
        path: req.url,
        headers: req.headers, // lower-cased names; duplicate values joined by Node
        rawHeaders: req.rawHeaders,
        body,
        text: body.toString("utf8"),
        json: () => JSON.parse(body.toString("utf8")),
        time: Date.now(),
        header: (name) => {
          const v = req.headers[name.toLowerCase()];
          return Array.isArray(v) ? v.join(", ") : v;
        },
      };
      requests.push(rec);
      for (const w of waiters) w();
      const r = { status: 200, body: "ok", headers: {}, delayMs: 0, ...replyFor(rec) };
      let sent = false;
      const send = () => {
        clearTimeout(timer);
        timers.delete(timer);
        if (sent) return;
        sent = true;
        r.onSend?.();
        if (res.destroyed) return;
        const data = Buffer.from(r.body ?? "");
        res.writeHead(r.status, {
          "content-type": "text/plain; charset=utf-8",
          ...r.headers,
          "content-length": data.length,
        });
        res.end(data);
      };
      const timer = setTimeout(send, r.delayMs ?? 0);
      timers.add(timer);
      r.until?.then(send); // answer early once this promise resolves
    });
  });
  server.keepAliveTimeout = 1000;
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address();
  const base = `http://127.0.0.1:${port}`;

  const waitFor = (pred = () => true, { count = 1, timeout = DEADLINE_MS } = {}) =>
    new Promise((resolve, reject) => {
      const check = () => {
        const matching = requests.filter(pred);
        if (matching.length >= count) {
          waiters.delete(check);
          clearTimeout(t);
          resolve(matching);
          return true;
        }
        return false;
      };
      const t = setTimeout(() => {
        waiters.delete(check);
        const all = requests.map((r) => `${r.method} ${r.path}`);
        reject(
          new Error(
            `timed out after ${timeout} ms waiting for ${count} matching request(s) at ${base}; ` +
              `got ${requests.filter(pred).length}; all requests: ${JSON.stringify(all)}`,
          ),
        );
      }, timeout);
      if (!check()) waiters.add(check);
    });

  return {
    port,
    base,
    requests,
    url: (p = "/") => base + (p.startsWith("/") ? p : `/${p}`),
    on: (prefix, r) => routes.unshift([prefix, r]),
    setReply: (r) => {
      defaultReply = r;
    },
    received: (prefix) => (prefix === undefined ? [...requests] : requests.filter((r) => r.path.startsWith(prefix))),
    waitFor,
    waitForMessage: (messageId, opts) => waitFor((r) => r.header("upstash-message-id") === messageId, opts),
    close: async () => {
      for (const t of timers) clearTimeout(t);
      server.closeAllConnections?.();
      await new Promise((resolve) => server.close(() => resolve()));
    },
  };
}

/** Collect receivers created in a test and close them afterwards: `const r = await receivers.make()`. */
export function receiverPool() {
  const made = [];
  return {
    make: async (reply) => {
      const r = await startReceiver(reply);
      made.push(r);
      return r;
    },
    closeAll: async () => {
      await Promise.all(made.splice(0).map((r) => r.close()));
    },
  };
}

export const b64decode = (s) => Buffer.from(s, "base64").toString("utf8");

export const logStates = async (client, messageId) =>
  (await client.logs({ filter: { messageId } })).logs.map((l) => l.state);

export async function waitForState(client, messageId, state, opts = {}) {
  return await poll(
    async () => {
      const { logs } = await client.logs({ filter: { messageId } });
      return logs.some((l) => l.state === state) ? logs : undefined;
    },
    { what: `${state} log entry for ${messageId}`, ...opts },
  );
}

export async function waitForDlq(client, messageId, opts = {}) {
  return await poll(
    async () => {
      const { messages } = await client.dlq.listMessages({ filter: { messageId } });
      return messages.length > 0 ? messages : undefined;
    },
    { what: `DLQ entry for ${messageId}`, ...opts },
  );
}

/**
 * A reply function that holds every request for `holdMs` and records how many were in flight at
 * once (`peak`) and the order bodies arrived in (`bodies`): `receivers.make(g.reply)`.
 * The count drops before the response is written, so a server that waits for a response before
 * starting the next delivery never shows more than its limit here. `release()` answers every
 * held and later request at once.
 */
export function gauge(holdMs, reply = {}) {
  let releaseAll;
  const released = new Promise((resolve) => {
    releaseAll = resolve;
  });
  const g = {
    active: 0,
    peak: 0,
    bodies: [],
    isReleased: false,
    reply: (req) => {
      g.active += 1;
      g.peak = Math.max(g.peak, g.active);
      g.bodies.push(req.text);
      let counted = true;
      return {
        ...reply,
        delayMs: g.isReleased ? 0 : holdMs,
        until: released,
        onSend: () => {
          if (counted) g.active -= 1;
          counted = false;
        },
      };
    },
    release: () => {
      g.isReleased = true;
      releaseAll();
    },
  };
  return g;
}
