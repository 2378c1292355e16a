// The SDK Receiver verifying tern's signatures, before and after key rotation (spec §5.11, §8, §21).
// The TS SDK has no signing-key API: keys are read/rotated with plain HTTP (GET /v2/keys,
// POST /v2/keys/rotate) — exactly what the SDK's dev-mode health probe does for GET /v2/keys.
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { after, afterEach, before, test } from "node:test";

import { SignatureError } from "@upstash/qstash";

import { USER1, USER2, makeClient, makeReceiver, rawRequest, receiverPool, startTern, uid } from "./harness.mjs";

let tern;
let client;
const receivers = receiverPool();

before(async () => {
  tern = await startTern();
  client = makeClient(tern);
});
afterEach(async () => {
  await receivers.closeAll();
});
after(async () => {
  await receivers.closeAll();
  await tern?.stop();
});

async function deliver(c, r, path, body = "signed body") {
  const url = r.url(path);
  const res = await c.publish({ url, body });
  const [req] = await r.waitForMessage(res.messageId);
  return { url, req, signature: req.header("upstash-signature") };
}

const b64urlJson = (part) => JSON.parse(Buffer.from(part, "base64url").toString("utf8"));

test("the dev banner prints user 1's credentials", () => {
  assert.match(tern.output(), /running/i);
  assert.equal(tern.banner.QSTASH_TOKEN, USER1.token);
  assert.equal(tern.banner.QSTASH_CURRENT_SIGNING_KEY, USER1.current);
  assert.equal(tern.banner.QSTASH_NEXT_SIGNING_KEY, USER1.next);
  assert.ok(tern.banner.QSTASH_URL?.includes(String(tern.port)), tern.banner.QSTASH_URL);
});

test("GET /v2/keys returns user 1's dev keys (what the JS dev-mode probe checks)", async () => {
  const res = await rawRequest(tern.url, "GET", "/v2/keys", { token: USER1.token });
  assert.equal(res.status, 200);
  assert.deepEqual(res.json(), { current: USER1.current, next: USER1.next });
  const res2 = await rawRequest(tern.url, "GET", "/v2/keys", { token: USER2.token });
  assert.deepEqual(res2.json(), { current: USER2.current, next: USER2.next });
});

test("Receiver verifies a delivery; tampering or a wrong url fails", async () => {
  const r = await receivers.make();
  const id = uid();
  const { url, req, signature } = await deliver(client, r, `/sig/${id}`, `signed ${id}`);
  const receiver = makeReceiver(USER1.current, USER1.next);
  assert.equal(await receiver.verify({ signature, body: req.text, url }), true);
  assert.equal(await receiver.verify({ signature, body: req.text }), true);
  await assert.rejects(receiver.verify({ signature, body: `${req.text}tampered`, url }), SignatureError);
  await assert.rejects(receiver.verify({ signature, body: req.text, url: `${url}/other` }), SignatureError);
});

test("signature uses the current key and the spec claims", async () => {
  const r = await receivers.make();
  const id = uid();
  const { url, req, signature } = await deliver(client, r, `/claims/${id}?q=1`, `claims ${id}`);
  assert.equal(await makeReceiver(USER1.current, USER1.current).verify({ signature, body: req.text, url }), true);
  await assert.rejects(makeReceiver(USER1.next, USER1.next).verify({ signature, body: req.text, url }), SignatureError);

  const [h, p] = signature.split(".");
  assert.deepEqual(b64urlJson(h), { alg: "HS256", typ: "JWT" });
  const claims = b64urlJson(p);
  assert.equal(claims.iss, "Upstash");
  assert.equal(claims.sub, url);
  assert.equal(claims.exp - claims.iat, 300);
  assert.ok(Math.abs(claims.iat - Date.now() / 1000) < 60);
  assert.ok("nbf" in claims);
  assert.match(claims.jti, /^jwt_/);
  assert.ok(!claims.aud);
  const want = createHash("sha256").update(req.body).digest("base64url");
  assert.equal(claims.body.replace(/=+$/, ""), want);
});

test("an empty body is signed too", async () => {
  const r = await receivers.make();
  const url = r.url(`/empty/${uid()}`);
  const res = await client.publish({ url });
  const [req] = await r.waitForMessage(res.messageId);
  assert.equal(req.body.length, 0);
  assert.equal(
    await makeReceiver(USER1.current, USER1.next).verify({ signature: req.header("upstash-signature"), body: "", url }),
    true,
  );
});

test("user 2's deliveries are signed with user 2's keys", async () => {
  const r = await receivers.make();
  const { url, req, signature } = await deliver(makeClient(tern, USER2.token), r, `/u2/${uid()}`);
  assert.equal(await makeReceiver(USER2.current, USER2.next).verify({ signature, body: req.text, url }), true);
  await assert.rejects(makeReceiver(USER1.current, USER1.next).verify({ signature, body: req.text, url }), SignatureError);
});

test("after rotation: new receivers and receivers holding the old keys both verify", async () => {
  // a private server: rotation changes user 1's keys for the rest of its life
  const own = await startTern();
  try {
    const c = makeClient(own);
    const r = await receivers.make();
    const k0 = USER1.current;
    const k1 = USER1.next;

    let d = await deliver(c, r, "/rot0");
    assert.equal(await makeReceiver(k0, k1).verify({ signature: d.signature, body: d.req.text, url: d.url }), true);

    const rot = await rawRequest(own.url, "POST", "/v2/keys/rotate", { token: USER1.token });
    assert.equal(rot.status, 200);
    const rotated = rot.json();
    assert.equal(rotated.current, k1, "new current = old next");
    assert.ok(rotated.next && rotated.next !== k0 && rotated.next !== k1);
    const k2 = rotated.next;
    assert.deepEqual((await rawRequest(own.url, "GET", "/v2/keys", { token: USER1.token })).json(), {
      current: k1,
      next: k2,
    });

    d = await deliver(c, r, "/rot1");
    const verifyArgs = { signature: d.signature, body: d.req.text, url: d.url };
    assert.equal(await makeReceiver(k1, k2).verify(verifyArgs), true);
    assert.equal(await makeReceiver(k0, k1).verify(verifyArgs), true, "old receivers keep verifying");
    await assert.rejects(makeReceiver(k0, k0).verify(verifyArgs), SignatureError);

    // the Go SDK's alias path rotates too (spec §3.3): k1,k2 -> k2,k3
    const rot2 = await rawRequest(own.url, "POST", "/v2/rotate", { token: USER1.token });
    assert.equal(rot2.status, 200);
    assert.equal(rot2.json().current, k2);
    d = await deliver(c, r, "/rot2");
    const args2 = { signature: d.signature, body: d.req.text, url: d.url };
    assert.equal(await makeReceiver(k2, rot2.json().next).verify(args2), true);
    await assert.rejects(makeReceiver(k0, k1).verify(args2), SignatureError, "two rotations break old receivers");

    // keys are per user
    assert.deepEqual((await rawRequest(own.url, "GET", "/v2/keys", { token: USER2.token })).json(), {
      current: USER2.current,
      next: USER2.next,
    });
  } finally {
    await own.stop();
  }
});
