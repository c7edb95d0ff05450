// node --test: dialtone/web/crypto.js against vectors made by the Python implementation
// (tests/e2ee.py). Driven by tests/web/test_crypto_js.py, which writes the vectors to
// $DIALTONE_VECTORS and checks what this file writes to $DIALTONE_VECTORS_OUT.
import assert from "node:assert/strict";
import { readFileSync, writeFileSync } from "node:fs";
import { test } from "node:test";

import * as e2e from "../../dialtone/web/crypto.js";

const input = process.env.DIALTONE_VECTORS;
const vectors = input ? JSON.parse(readFileSync(input, "utf8")) : null;
const out = {};
const needsVectors = { skip: vectors ? false : "run through tests/web/test_crypto_js.py (no DIALTONE_VECTORS)" };

const b64url = (b64) => b64.replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");

async function nodeDevice() {
  // The Python side chose this device's private key so that it can seal for it.
  const jwk = { kty: "OKP", crv: "X25519", d: b64url(vectors.node_private), x: b64url(vectors.node_public) };
  return crypto.subtle.importKey("jwk", jwk, { name: "X25519" }, false, ["deriveBits"]);
}

test("base64 is standard and padded, and strict", () => {
  const bytes = new Uint8Array([0, 1, 2, 250, 251, 252, 253, 254, 255]);
  assert.equal(e2e.b64(bytes), "AAEC+vv8/f7/");
  assert.deepEqual(e2e.unb64("AAEC+vv8/f7/"), bytes);
  assert.equal(e2e.b64(new Uint8Array([1])), "AQ==");
  for (const bad of ["AQ", "AQ=", "A-_=", "AQ==\n", "****"]) assert.throws(() => e2e.unb64(bad), TypeError);
});

test("the commitment of the key 00 01 … 1f is docs/API.md's test vector", async () => {
  const key = Uint8Array.from({ length: 32 }, (_, i) => i);
  assert.equal(await e2e.commitment(key), "/PTRZkqtWGItRx574igqRJ5wvBFBv0ytpEGP0OtvMHs=");
});

test("a new device key is X25519, non-extractable, with a 32-byte public key", async () => {
  const device = await e2e.generateDeviceKey();
  assert.equal(device.privateKey.extractable, false);
  assert.equal(device.privateKey.algorithm.name, "X25519");
  assert.equal(e2e.unb64(device.publicB64).length, 32);
  await assert.rejects(crypto.subtle.exportKey("pkcs8", device.privateKey));
});

test("opens what Python sealed with the pairwise key", needsVectors, async () => {
  const key = await e2e.pairwiseKey(await nodeDevice(), vectors.python_public, ["decrypt"]);
  assert.equal(await e2e.openText(key, vectors.pairwise_sealed), vectors.pairwise_plaintext);
});

test("unwraps a Python envelope into a key that opens Python's messages", needsVectors, async () => {
  const channelKey = await e2e.unwrapEnvelope(await nodeDevice(), vectors.python_public, vectors.envelope);
  assert.equal(channelKey.extractable, false);
  for (const [sealed, plain] of vectors.messages) assert.equal(await e2e.openText(channelKey, sealed), plain);
});

test("refuses tampered ciphertext and malformed envelopes", needsVectors, async () => {
  const device = await nodeDevice();
  const channelKey = await e2e.unwrapEnvelope(device, vectors.python_public, vectors.envelope);
  const raw = e2e.unb64(vectors.messages[0][0]);
  raw[raw.length - 1] ^= 1;
  await assert.rejects(e2e.open(channelKey, e2e.b64(raw)));
  await assert.rejects(e2e.unwrapEnvelope(device, vectors.python_public, e2e.b64(new Uint8Array(40))), TypeError);
  // Sealed for another device: the pairwise keys differ.
  const stranger = await e2e.generateDeviceKey();
  await assert.rejects(e2e.unwrapEnvelope(stranger.privateKey, vectors.python_public, vectors.envelope));
});

test("a key's commitment is the Python commitment, from bytes and from an envelope", needsVectors, async () => {
  const device = await nodeDevice();
  const fromEnvelope = await e2e.envelopeCommitment(device, vectors.python_public, vectors.envelope);
  assert.equal(fromEnvelope, vectors.commitment);
  assert.equal(fromEnvelope.length, 44);
  const extractable = await e2e.unwrapEnvelope(device, vectors.python_public, vectors.envelope, true);
  assert.equal(await e2e.commitment(extractable), vectors.commitment);
  assert.equal(await e2e.commitment(e2e.unb64(vectors.key_b64)), vectors.commitment);
  // Another key, another commitment.
  assert.notEqual(await e2e.commitment(new Uint8Array(32)), vectors.commitment);
  await assert.rejects(e2e.commitment(new Uint8Array(16)), TypeError);
  const shared = await e2e.newSharedKey();
  out.shared_commitment = await e2e.commitment(shared);
  out.shared_envelope = await e2e.wrapFor(device, vectors.python_public, shared);
});

test("seals and wraps for Python to open", needsVectors, async () => {
  const device = await nodeDevice();
  const channelKey = await e2e.unwrapEnvelope(device, vectors.python_public, vectors.envelope, true);
  out.sealed = await e2e.seal(channelKey, "from node ✓");
  out.envelope = await e2e.wrapFor(device, vectors.python_public, channelKey);
  const fresh = await e2e.generateDeviceKey();
  out.fresh_public = fresh.publicB64;
  out.fresh_envelope = await e2e.wrapFor(fresh.privateKey, vectors.python_public, channelKey);
  const shared = await e2e.newSharedKey();
  out.new_key_envelope = await e2e.wrapFor(device, vectors.python_public, shared);
  out.new_key_sealed = await e2e.seal(shared, "a brand new channel");
  // Two seals of one text differ: a fresh nonce every time.
  assert.notEqual(await e2e.seal(channelKey, "same"), await e2e.seal(channelKey, "same"));
  writeFileSync(process.env.DIALTONE_VECTORS_OUT, JSON.stringify(out));
});
