// node --test: the key backup format of dialtone/web/backup.js against blobs and values
// made by the Python implementation (tests/key_backup.py). Driven by
// tests/web/test_crypto_js.py::test_backup_js_matches_the_python_scheme, which writes the
// vectors to $DIALTONE_VECTORS and opens what this file writes to $DIALTONE_VECTORS_OUT.
import assert from "node:assert/strict";
import { readFileSync, writeFileSync } from "node:fs";
import { test } from "node:test";

import * as backup from "../../dialtone/web/backup.js";
import * as e2e from "../../dialtone/web/crypto.js";

const input = process.env.DIALTONE_VECTORS;
const vectors = input ? JSON.parse(readFileSync(input, "utf8")) : null;
const out = {};
const needsVectors = { skip: vectors ? false : "run through tests/web/test_crypto_js.py (no DIALTONE_VECTORS)" };

test("recovery keys: base32 in groups of four, read back loosely", needsVectors, () => {
  const raw = e2e.unb64(vectors.recovery_raw);
  assert.equal(backup.formatRecoveryKey(raw), vectors.recovery_text);
  assert.deepEqual(backup.parseRecoveryKey(vectors.recovery_text.toLowerCase().replaceAll("-", " ")), raw);
  for (const bad of ["", "hello", vectors.recovery_text.slice(0, -1), vectors.recovery_text.replace(/^./, "1")]) {
    assert.throws(() => backup.parseRecoveryKey(bad), (e) => e.code === "not_recovery_key");
  }
});

test("a recovery-key blob and a passphrase blob from Python open", needsVectors, async () => {
  for (const [blob, secret] of [[vectors.recovery_blob, vectors.recovery_text], [vectors.passphrase_blob, vectors.passphrase]]) {
    const { keys } = await backup.openBlob(blob, secret);
    assert.deepEqual(keys, vectors.plaintext);
  }
  await assert.rejects(backup.openBlob(vectors.passphrase_blob, vectors.passphrase + "x"), (e) => e.code === "wrong_secret");
  const other = backup.formatRecoveryKey(new Uint8Array(32));
  await assert.rejects(backup.openBlob(vectors.recovery_blob, other), /Wrong recovery key/);
});

test("the key commitment is HMAC-SHA256 of the label under the key", needsVectors, async () => {
  assert.equal(await backup.keyCommitment(e2e.unb64(vectors.commitment_key)), vectors.commitment);
});

test("merging is a union per channel and version", () => {
  const merged = backup.mergeKeys(
    { channels: { a: { 1: "k1" } }, directory: null },
    { channels: { a: { 2: "k2" }, b: { 1: "k3" } }, directory: "d" },
  );
  assert.deepEqual(merged, { channels: { a: { 1: "k1", 2: "k2" }, b: { 1: "k3" } }, directory: "d" });
});

test("the passphrase rule", () => {
  assert.match(backup.passphraseProblem("short"), /at least 12/);
  assert.match(backup.passphraseProblem("aaaaaaaaaaaaaaa"), /different/);
  assert.equal(backup.passphraseProblem("mock turtle soup"), null);
});

test("blobs made here, for Python to open", needsVectors, async () => {
  out.recovery_blob = await backup.makeBlob(vectors.plaintext, { recoveryKey: e2e.unb64(vectors.recovery_raw) });
  out.passphrase_blob = await backup.makeBlob(vectors.plaintext, { passphrase: vectors.passphrase });
  writeFileSync(process.env.DIALTONE_VECTORS_OUT, JSON.stringify(out));
});
