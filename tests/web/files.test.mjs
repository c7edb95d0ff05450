// node --test: dialtone/web/files.js (file encryption, picture sniffing, the body of a
// message with attachments) on its own and against vectors made by Python. Driven by
// tests/web/test_files_js.py, which writes $DIALTONE_VECTORS and checks
// $DIALTONE_VECTORS_OUT.
import assert from "node:assert/strict";
import { readFileSync, writeFileSync } from "node:fs";
import { test } from "node:test";

import { b64, unb64 } from "../../dialtone/web/crypto.js";
import * as files from "../../dialtone/web/files.js";

const input = process.env.DIALTONE_VECTORS;
const vectors = input ? JSON.parse(readFileSync(input, "utf8")) : null;
const out = {};
const needsVectors = { skip: vectors ? false : "run through tests/web/test_files_js.py (no DIALTONE_VECTORS)" };

const bytes = (...values) => new Uint8Array(values);
const ascii = (text) => new TextEncoder().encode(text);

test("a file round-trips under a fresh key, and any change to it is refused", async () => {
  const plain = new Uint8Array(70000).map((_, i) => (i * 31) & 0xff);
  const first = await files.encryptFile(plain);
  const second = await files.encryptFile(plain);
  assert.equal(first.key.length, 32);
  assert.equal(first.sealed.length, plain.length + 12 + 16);
  assert.notDeepEqual(first.key, second.key);
  assert.notDeepEqual(first.sealed.subarray(0, 12), second.sealed.subarray(0, 12));
  assert.deepEqual(await files.decryptFile(first.key, first.sealed), plain);
  const flipped = first.sealed.slice();
  flipped[40] ^= 1;
  await assert.rejects(files.decryptFile(first.key, flipped));
  await assert.rejects(files.decryptFile(second.key, first.sealed));
  await assert.rejects(files.decryptFile(first.key, first.sealed.subarray(0, 27)), TypeError);
  await assert.rejects(files.decryptFile(first.key.subarray(0, 16), first.sealed), TypeError);
  const empty = await files.encryptFile(new Uint8Array(0));
  assert.equal(empty.sealed.length, 28);
  assert.equal((await files.decryptFile(empty.key, empty.sealed)).length, 0);
});

test("pictures are told by their magic numbers only", () => {
  assert.equal(files.sniffImage(bytes(0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0, 0)), "image/png");
  assert.equal(files.sniffImage(bytes(0xff, 0xd8, 0xff, 0xe0, 0, 0x10)), "image/jpeg");
  assert.equal(files.sniffImage(ascii("GIF87a....")), "image/gif");
  assert.equal(files.sniffImage(ascii("GIF89a....")), "image/gif");
  assert.equal(files.sniffImage(ascii("RIFF\x10\x00\x00\x00WEBPVP8 ")), "image/webp");
  for (const other of [
    ascii('<svg xmlns="http://www.w3.org/2000/svg"></svg>'),
    ascii("<!doctype html><script>alert(1)</script>"),
    ascii("RIFF\x10\x00\x00\x00WAVEfmt "),
    ascii("GIF90a"),
    ascii("%PDF-1.7"),
    bytes(0x89, 0x50, 0x4e, 0x47), // a PNG signature cut short
    bytes(0xff, 0xd8),
    new Uint8Array(0),
  ]) {
    assert.equal(files.sniffImage(other), null);
  }
  assert.ok(files.claimsPicture("image/PNG"));
  assert.ok(!files.claimsPicture("image/svg+xml"));
  assert.ok(!files.claimsPicture("text/html"));
});

test("the body of a message with attachments is built and read back", () => {
  const key = new Uint8Array(32).fill(7);
  const body = files.buildBody("look at this", [
    { id: "f1", key, name: "cat.png", type: "image/png", size: 1234, width: 640, height: 480 },
    { id: "f2", key, name: "notes.pdf", type: "", size: 0, width: 0 },
  ]);
  const json = JSON.parse(body);
  assert.equal(json.v, 1);
  assert.equal(json.text, "look at this");
  assert.deepEqual(json.files[0], { id: "f1", key: b64(key), name: "cat.png", type: "image/png", size: 1234, width: 640, height: 480 });
  assert.deepEqual(json.files[1], { id: "f2", key: b64(key), name: "notes.pdf", type: "application/octet-stream", size: 0 });
  const parsed = files.parseBody(body, ["f1", "f2"]);
  assert.equal(parsed.text, "look at this");
  assert.deepEqual(parsed.files[0].key, key);
  assert.equal(parsed.files[0].width, 640);
  assert.equal(parsed.files[1].width, undefined);
  assert.throws(() => files.buildBody("no files", []), RangeError);
  assert.throws(() => files.buildBody("too many", Array.from({ length: 11 }, (_, i) => ({ id: `f${i}`, key, name: "x", size: 1 }))), RangeError);
});

test("a body that is not the convention, or names other files, is refused", () => {
  const key = b64(new Uint8Array(32));
  const good = { v: 1, text: "", files: [{ id: "a", key, name: "a.txt", type: "text/plain", size: 3 }] };
  const variants = [
    "plain text, not JSON",
    JSON.stringify({ ...good, v: 2 }),
    JSON.stringify({ ...good, text: 5 }),
    JSON.stringify({ v: 1, text: "" }),
    JSON.stringify({ ...good, files: [{ ...good.files[0], id: "b" }] }),
    JSON.stringify({ ...good, files: [{ ...good.files[0], key: b64(new Uint8Array(16)) }] }),
    JSON.stringify({ ...good, files: [{ ...good.files[0], key: "not base64!" }] }),
    JSON.stringify({ ...good, files: [{ ...good.files[0], size: -1 }] }),
    JSON.stringify({ ...good, files: [{ ...good.files[0], name: 7 }] }),
    JSON.stringify({ ...good, files: [good.files[0], good.files[0]] }),
    "null",
  ];
  for (const body of variants) assert.throws(() => files.parseBody(body, ["a"]), TypeError, body);
  assert.throws(() => files.parseBody(JSON.stringify(good), ["a", "b"]), TypeError);
  assert.equal(files.parseBody(JSON.stringify(good), ["a"]).files[0].name, "a.txt");
});

test("names are shown and saved without paths or control characters", () => {
  assert.equal(files.cleanName("../../etc/passwd"), "passwd");
  assert.equal(files.cleanName("C:\\Users\\me\\cat.png"), "cat.png");
  assert.equal(files.cleanName("a\u0000b\nc.txt"), "abc.txt");
  assert.equal(files.cleanName(""), "file");
  assert.equal(files.cleanName(".."), "file");
  assert.equal(files.cleanName("x".repeat(500)).length, 200);
  assert.equal(files.formatSize(512), "512 B");
  assert.equal(files.formatSize(1536), "1.5 KiB");
  assert.equal(files.formatSize(20 * 1024 * 1024), "20 MiB");
});

test("files sealed by Python open here, and the other way round", needsVectors, async () => {
  for (const v of vectors.files) {
    assert.deepEqual(await files.decryptFile(unb64(v.key), unb64(v.sealed)), unb64(v.plain));
  }
  out.files = [];
  for (const v of vectors.files) {
    const { key, sealed } = await files.encryptFile(unb64(v.plain));
    out.files.push({ key: b64(key), sealed: b64(sealed), plain: v.plain });
  }
  const parsed = files.parseBody(vectors.body, vectors.attachments);
  assert.equal(parsed.text, vectors.text);
  assert.deepEqual(parsed.files.map((f) => b64(f.key)), vectors.files.map((v) => v.key));
  out.body = files.buildBody(vectors.text, vectors.files.map((v, i) => ({ id: vectors.attachments[i], key: unb64(v.key), name: v.name, type: v.type, size: unb64(v.plain).length })));
  // The channel image: sealed with the channel key (non-extractable here, as in the page).
  const channelKey = await crypto.subtle.importKey("raw", unb64(vectors.channel_key), { name: "AES-GCM" }, false, ["encrypt", "decrypt"]);
  assert.deepEqual(await files.openWithChannelKey(channelKey, unb64(vectors.channel_image)), unb64(vectors.files[0].plain));
  out.channel_image = b64(await files.sealWithChannelKey(channelKey, unb64(vectors.files[0].plain)));
  writeFileSync(process.env.DIALTONE_VECTORS_OUT, JSON.stringify(out));
});
