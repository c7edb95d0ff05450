// Unit tests of rotation.js with real WebCrypto and a fake client and server (issue 16):
// the rotation an owner's page makes (one winner, envelopes for the remaining members'
// devices only, the new key taken and the name sealed again), a key held when the version
// changes kept for history, and an older version fetched and checked against the
// commitment served for it. Run by tests/web/test_keyring_js.py.
import assert from "node:assert/strict";
import { test } from "node:test";

import { ApiError } from "../../dialtone/web/api.js";
import * as e2e from "../../dialtone/web/crypto.js";
import * as ring from "../../dialtone/web/keyring.js";
import * as rotation from "../../dialtone/web/rotation.js";

const subtle = globalThis.crypto.subtle;

// IndexedDB stands in as a Map.
const kept = new Map();
rotation.io.store = {
  get: async (k) => kept.get(k),
  put: async (k, v) => void kept.set(k, v),
  delete: async (k) => void kept.delete(k),
};

async function device(userId, deviceId) {
  const keys = await e2e.generateDeviceKey();
  return { user_id: userId, device_id: deviceId, public_key: keys.publicB64, keys };
}

async function rawOf(privateKey, envelope) {
  const key = await e2e.unwrapEnvelope(privateKey, envelope.sender_public_key, envelope.envelope, true);
  return new Uint8Array(await subtle.exportKey("raw", key));
}

// A page's client, as far as rotation.js uses it.
async function fakeClient({ members, devices, rotateAnswers = [], keyUploads = [] }) {
  const me = devices[0];
  const calls = { rotate: [], keys: [], renamed: [], refreshed: 0, accepted: [], reported: [] };
  const client = {
    me: { id: me.user_id, deviceId: me.device_id, publicKey: me.public_key },
    device: me.keys,
    channels: new Map(),
    devicesAll: devices.map(({ keys, ...d }) => d),
    shareTimers: new Set(),
    ended: false,
    canManageChannels: false,
    calls,
    guard: () => false,
    emit: () => {},
    report: (id, envelope, why) => calls.reported.push(why),
    refreshDevices: async () => {},
    refreshChannels: async () => void (calls.refreshed += 1),
    commitmentOf: (envelope) => e2e.envelopeCommitment(me.keys.privateKey, envelope.sender_public_key, envelope.envelope),
    decryptMessage: async (ch, m) => {
      const key = ring.keyFor(ch, ring.versionOf(m));
      m.text = key ? await e2e.openText(key, m.body) : null;
    },
    wrapForAll: (key, targets) =>
      Promise.all(
        targets.map(async (d) => ({
          device_id: d.device_id,
          sender_device_id: me.device_id,
          sender_public_key: me.public_key,
          envelope: await e2e.wrapFor(me.keys.privateKey, d.public_key, key),
        })),
      ),
    acceptChannelEnvelope: async (ch, envelope, commitment) => {
      calls.accepted.push({ envelope, commitment });
      ch.key = await e2e.unwrapEnvelope(me.keys.privateKey, envelope.sender_public_key, envelope.envelope);
      ch.envelope = envelope;
      ch.keyCommitment = commitment;
      await rotation.held(client, ch, ch.key_version, { key: ch.key, envelope, commitment });
    },
    api: {
      get: async (path, query) => {
        if (path === "/channels/members") return { members: members.map((id) => ({ user_id: id, role: "member" })), member_count: members.length };
        throw new Error(`unexpected GET ${path}`);
      },
      post: async (path, body) => {
        assert.equal(path, "/channels/rotate");
        calls.rotate.push(body);
        const answer = rotateAnswers.shift();
        if (answer instanceof Error) throw answer;
        return answer || { channel: { id: body.channel_id, key_version: body.key_version, key_commitment: body.key_commitment } };
      },
      postChannelKeys: async (id, items) => {
        calls.keys.push(items);
        const refusal = keyUploads.shift();
        if (refusal) throw refusal;
        return { status: "ok" };
      },
      renameChannel: async (id, nameEnc) => void calls.renamed.push(nameEnc),
    },
  };
  return client;
}

async function room(client, version = 1) {
  const key = await e2e.newSharedKey();
  const ch = {
    id: `room-${Math.random()}`,
    private: true,
    role: "owner",
    key_version: version,
    key_commitment: await e2e.commitment(key),
    name: "team",
    name_enc: await e2e.seal(key, "team"),
    messages: [],
  };
  const [mine] = await client.wrapForAll(key, [{ device_id: client.me.deviceId, public_key: client.me.publicKey }]);
  ch.key = await e2e.unwrapEnvelope(client.device.privateKey, mine.sender_public_key, mine.envelope);
  ch.envelope = mine;
  ch.keyCommitment = ch.key_commitment;
  await rotation.held(client, ch, version, { key: ch.key, envelope: mine, commitment: ch.key_commitment });
  client.channels.set(ch.id, ch);
  return { ch, key };
}

test("an owner's page rotates: the next version, for the remaining members' devices only", async () => {
  const devices = [await device("alice", "a1"), await device("alice", "a2"), await device("bob", "b1"), await device("dave", "d1")];
  const client = await fakeClient({ members: ["alice", "bob"], devices });
  const { ch } = await room(client);
  const v1 = ch.key;
  assert.equal(await rotation.rotate(client, ch, 1), true);
  const [asked] = client.calls.rotate;
  assert.equal(asked.key_version, 2);
  const [items] = client.calls.keys;
  assert.deepEqual(items.map((e) => e.device_id).sort(), ["a1", "a2", "b1"]);
  assert.ok(items.every((e) => e.key_version === 2));
  // Bob's device opens its envelope to the key whose commitment was registered.
  const bobs = items.find((e) => e.device_id === "b1");
  const raw = await rawOf(devices[2].keys.privateKey, bobs);
  assert.equal(await e2e.commitment(raw), asked.key_commitment);
  // The page writes with version 2 now and keeps version 1 for history.
  assert.equal(ch.key_version, 2);
  assert.equal(ch.keyVersion, 2);
  assert.equal(rotation.writeVersion(ch), 2);
  assert.equal(ring.keyFor(ch, 1), v1);
  assert.notEqual(ring.keyFor(ch, 2), v1);
  // The name, sealed again with the new key.
  assert.equal(await e2e.openText(ring.keyFor(ch, 2), client.calls.renamed[0]), "team");
  // Remembered as served, for version 2 on its own.
  assert.deepEqual(kept.get(`shared:a1:${ch.id}:v2`).sort(), ["a1", "a2", "b1"]);
});

test("another device rotated first (409): the page stands down and reads the channels again", async () => {
  const devices = [await device("alice", "a1"), await device("bob", "b1")];
  const conflict = new ApiError(409, "key_version_conflict", "taken");
  const client = await fakeClient({ members: ["alice", "bob"], devices, rotateAnswers: [conflict] });
  const { ch, key } = await room(client);
  assert.equal(await rotation.rotate(client, ch, 1), false);
  assert.equal(client.calls.refreshed, 1);
  assert.deepEqual(client.calls.keys, []);
  assert.equal(ch.key_version, 1);
  assert.equal(ch.key, ring.keyFor(ch, 1));
  assert.equal(await e2e.openText(ch.key, await e2e.seal(key, "same key")), "same key");
  // A version already replaced (its channel.updated came during the jitter): nothing to do.
  ch.key_version = 2;
  assert.equal(await rotation.rotate(client, ch, 1), false);
  assert.equal(client.calls.rotate.length, 1);
});

test("someone left between the member list and the upload: the envelopes are made again", async () => {
  const devices = [await device("alice", "a1"), await device("bob", "b1"), await device("carol", "c1")];
  const refused = new ApiError(403, "not_a_member_device", "not a member's device");
  const members = ["alice", "bob", "carol"];
  const client = await fakeClient({ members, devices, keyUploads: [refused] });
  const { ch } = await room(client);
  const first = client.api.get;
  let reads = 0;
  client.api.get = async (path, query) => {
    reads += 1;
    if (reads > 1) members.splice(members.indexOf("carol"), 1); // carol left meanwhile
    return first(path, query);
  };
  assert.equal(await rotation.rotate(client, ch, 1), true);
  assert.equal(client.calls.keys.length, 2);
  assert.deepEqual(client.calls.keys[1].map((e) => e.device_id).sort(), ["a1", "b1"]);
});

test("a member's page: the key held when the version changes is kept for history only", async () => {
  const devices = [await device("bob", "b1")];
  const client = await fakeClient({ members: ["bob"], devices });
  const { ch } = await room(client);
  const v1 = ch.key;
  ch.role = "member";
  // channel.updated: version 2 with its commitment.
  ch.key_version = 2;
  ch.key_commitment = await e2e.commitment(await e2e.newSharedKey());
  await rotation.settle(client, ch);
  assert.equal(ch.key, null);
  assert.equal(ch.keyAttempt, 0);
  assert.equal(ring.keyFor(ch, 1), v1);
  // Stored: a reload brings version 1 back from IndexedDB.
  const again = { id: ch.id, key_version: 2, key_commitment: ch.key_commitment, messages: [] };
  await rotation.settle(client, again);
  assert.ok(ring.keyFor(again, 1));
  assert.equal(again.key, undefined);
});

test("a cached current key from before the rotation moves to the keyring on load", async () => {
  const devices = [await device("bob", "b1")];
  const client = await fakeClient({ members: ["bob"], devices });
  const key = await e2e.newSharedKey();
  const [envelope] = await client.wrapForAll(key, [{ device_id: "b1", public_key: devices[0].public_key }]);
  const stored = await e2e.unwrapEnvelope(devices[0].keys.privateKey, envelope.sender_public_key, envelope.envelope);
  const ch = { id: "old-room", key_version: 2, key_commitment: "c2", messages: [] };
  kept.set(`chan:b1:${ch.id}`, { key: stored, envelope, commitment: "c1" }); // no version: 1
  await rotation.settle(client, ch);
  assert.equal(kept.has(`chan:b1:${ch.id}`), false);
  assert.equal(ring.keyFor(ch, 1), stored);
  assert.equal(ch.versions.get(1).commitment, "c1");
});

test("an older version is fetched and taken only when it matches that version's commitment", async () => {
  const devices = [await device("carol", "c1"), await device("alice", "a1")];
  const client = await fakeClient({ members: ["carol", "alice"], devices });
  const v1 = await e2e.newSharedKey();
  const wrong = await e2e.newSharedKey();
  const alice = devices[1];
  const envelopeOf = async (key) => ({
    sender_device_id: "a1",
    sender_user_id: "alice",
    sender_public_key: alice.public_key,
    envelope: await e2e.wrapFor(alice.keys.privateKey, devices[0].public_key, key),
    key_version: 1,
  });
  const ch = { id: "r", private: true, role: "member", key_version: 2, messages: [] };
  ch.key = await e2e.newSharedKey();
  ch.keyVersion = 2;
  ch.messages.push({ id: "m1", key_version: 1, body: await e2e.seal(v1, "before") });
  client.channels.set(ch.id, ch);
  let asked = null;
  client.api.get = async (path, query) => {
    asked = query;
    return { channel_id: "r", envelopes: [await envelopeOf(wrong), await envelopeOf(v1)], key_version: 1, key_commitment: await e2e.commitment(v1) };
  };
  const done = new Promise((resolve) => {
    client.emit = (what) => what === "keys" && resolve();
  });
  rotation.wantVersion(client, ch, 1);
  await done;
  assert.deepEqual(asked, { channel_id: "r", all: 1, key_version: 1 });
  assert.equal(ch.messages[0].text, "before");
  assert.equal(client.calls.reported.length, 1);
  assert.equal(ch.versions.get(1).commitment, await e2e.commitment(v1));
  for (const timer of client.shareTimers) clearTimeout(timer);
});
