// Unit tests of keyring.js and the store-free parts of rotation.js (issue 16, keys that
// rotate): one key per version, messages read with the key of their version, hand-on of
// every version to a private room's members only. Run by tests/web/test_keyring_js.py.
import assert from "node:assert/strict";
import { test } from "node:test";

import * as e2e from "../../dialtone/web/crypto.js";
import * as ring from "../../dialtone/web/keyring.js";
import * as rotation from "../../dialtone/web/rotation.js";

const fakeKey = (name) => ({ name });

test("a version is a positive integer; anything else (absent) is 1", () => {
  assert.equal(ring.versionOf({}), 1);
  assert.equal(ring.versionOf(null), 1);
  assert.equal(ring.versionOf({ key_version: 3 }), 3);
  for (const bad of [0, -2, 1.5, "2", null]) assert.equal(ring.versionOf({ key_version: bad }), 1);
});

test("each message is read with the key of its version; the current one is ch.key", () => {
  const ch = { key: fakeKey("v2"), keyVersion: 2, key_version: 2 };
  ring.keep(ch, 1, { key: fakeKey("v1"), envelope: { envelope: "e1" }, commitment: "c1" });
  assert.equal(ring.keyFor(ch, 2).name, "v2");
  assert.equal(ring.keyFor(ch, 1).name, "v1");
  assert.equal(ring.keyFor(ch, 3), null);
  const messages = [{ key_version: 1 }, {}, { key_version: 2 }, { key_version: 3 }, { key_version: 5, local: true }];
  assert.deepEqual(ring.missingVersions(ch, messages), [3]);
  // Without a key version on ch.key (a record from before rotation), it is version 1.
  const old = { key: fakeKey("k"), key_version: 1 };
  assert.equal(ring.keyFor(old, 1).name, "k");
});

test("a keyring goes to IndexedDB and back, versions as numbers; junk is dropped", () => {
  const ch = {};
  ring.keep(ch, 1, { key: fakeKey("a"), envelope: { envelope: "x" }, commitment: "c1" });
  ring.keep(ch, 2, { key: fakeKey("b"), envelope: { envelope: "y" }, commitment: "c2" });
  const record = ring.toRecord(ch);
  assert.deepEqual(Object.keys(record.versions), ["1", "2"]);
  const back = {};
  ring.fromRecord(back, { versions: { ...record.versions, zero: { key: 1 }, 0: { key: 1 }, 7: null } });
  assert.deepEqual([...back.versions.keys()].sort(), [1, 2]);
  assert.equal(back.versions.get(2).commitment, "c2");
  ring.fromRecord(back, undefined); // nothing stored yet
  assert.equal(back.versions.size, 2);
});

test("a cached current-key record names its version, or its envelope does, or it is 1", () => {
  assert.equal(ring.recordVersion({ version: 3, envelope: { key_version: 2 } }), 3);
  assert.equal(ring.recordVersion({ envelope: { key_version: 2 } }), 2);
  assert.equal(ring.recordVersion({ envelope: {} }), 1);
  assert.equal(ring.recordVersion(undefined), 1);
});

test("a key fits its version: the current one by the served commitment, older ones by the recorded one", () => {
  const ch = { key_version: 2, key_commitment: "c2" };
  ring.keep(ch, 1, { key: fakeKey("a"), envelope: {}, commitment: "c1" });
  assert.equal(ring.fitsVersion(ch, 2, "c2"), true);
  assert.equal(ring.fitsVersion(ch, 2, "c1"), false);
  assert.equal(ring.fitsVersion(ch, 1, "c1"), true);
  assert.equal(ring.fitsVersion(ch, 1, "c2"), false);
  assert.equal(ring.fitsVersion(ch, 3, "c3"), false);
  assert.equal(ring.fitsVersion(ch, 2, null), false);
});

test("owners rotate, and admins who are members; nobody rotates a public channel", () => {
  assert.equal(ring.mayRotate({ private: true, role: "owner" }, false), true);
  assert.equal(ring.mayRotate({ private: true, role: "member" }, false), false);
  assert.equal(ring.mayRotate({ private: true, role: "member" }, true), true);
  assert.equal(ring.mayRotate({ private: true, role: null }, true), false);
  assert.equal(ring.mayRotate({ private: false, role: "owner" }, true), false);
});

test("a private room's key goes to its members' devices only; a public one's to all", () => {
  const devices = [
    { device_id: "a1", user_id: "alice" },
    { device_id: "a2", user_id: "alice" },
    { device_id: "d1", user_id: "dave" },
  ];
  assert.deepEqual(ring.recipientsOf({ private: false }, devices, null), devices);
  assert.deepEqual(
    ring.recipientsOf({ private: true }, devices, new Set(["alice"])).map((d) => d.device_id),
    ["a1", "a2"],
  );
  assert.deepEqual(ring.recipientsOf({ private: true }, devices, null), []);
});

test("hand-on records: version 1 keeps its old name, later versions get their own", () => {
  assert.equal(ring.sharedRecord("dev", "ch", 1), "shared:dev:ch");
  assert.equal(ring.sharedRecord("dev", "ch", 2), "shared:dev:ch:v2");
});

test("versions handed on: older ones held, the current one only when it matches", () => {
  const ch = { key_version: 3, key_commitment: "c3" };
  ring.keep(ch, 1, { key: fakeKey("a"), envelope: { envelope: "1" }, commitment: "c1" });
  ring.keep(ch, 2, { key: fakeKey("b"), envelope: null, commitment: "c2" });
  ring.keep(ch, 3, { key: fakeKey("c"), envelope: { envelope: "3" }, commitment: "c3" });
  ring.keep(ch, 4, { key: fakeKey("d"), envelope: { envelope: "4" }, commitment: "c4" });
  assert.deepEqual(ring.shareableVersions(ch), [3, 1]);
  ch.key_commitment = "other";
  assert.deepEqual(ring.shareableVersions(ch), [1]);
});

test("a backup entry: its versions oldest first; an old backup's single key is version 1", () => {
  assert.deepEqual(ring.backupVersions({ 2: "b", 1: "a", x: "no", 0: "zero", 3: 7 }), [[1, "a"], [2, "b"]]);
  assert.deepEqual(ring.backupVersions({ 1: "a" }), [[1, "a"]]);
  assert.deepEqual(ring.backupVersions(undefined), []);
});

test("a room's name opens with whichever version sealed it", async () => {
  const v1 = await e2e.newSharedKey();
  const v2 = await e2e.newSharedKey();
  const ch = { key: v2, keyVersion: 2, key_version: 2, name_enc: await e2e.seal(v1, "team room") };
  assert.equal(await rotation.openName(ch), null);
  ring.keep(ch, 1, { key: v1, envelope: {}, commitment: "c1" });
  assert.equal(await rotation.openName(ch), "team room");
  ch.name_enc = await e2e.seal(v2, "renamed");
  assert.equal(await rotation.openName(ch), "renamed");
});

test("hand-on jobs: every version held, a private room's for its members' devices only", async () => {
  const posted = [];
  const rooms = [
    { id: "pub", private: false, key: fakeKey("p"), keyVersion: 1, key_version: 1, envelope: { envelope: "p1" }, key_commitment: "cp" },
    { id: "team", private: true, key: fakeKey("t2"), keyVersion: 2, key_version: 2, envelope: { envelope: "t2" }, key_commitment: "ct2" },
  ];
  ring.keep(rooms[0], 1, { key: rooms[0].key, envelope: rooms[0].envelope, commitment: "cp" });
  ring.keep(rooms[1], 1, { key: fakeKey("t1"), envelope: { envelope: "t1" }, commitment: "ct1" });
  ring.keep(rooms[1], 2, { key: rooms[1].key, envelope: rooms[1].envelope, commitment: "ct2" });
  const client = {
    me: { deviceId: "mine" },
    channels: new Map(rooms.map((ch) => [ch.id, ch])),
    mayShareChannel: (ch) => ch.key_commitment === ring.versionsOf(ch).get(ch.keyVersion)?.commitment,
    api: {
      get: async (path, query) => {
        assert.equal(path, "/channels/members");
        assert.equal(query.channel_id, "team");
        return { members: [{ user_id: "alice", role: "owner" }, { user_id: "bob", role: "member" }], member_count: 2 };
      },
      postChannelKeys: async (id, items) => posted.push([id, items]),
    },
  };
  const jobs = rotation.shareJobs(client);
  assert.deepEqual(
    jobs.map((j) => [j.record, j.envelope.envelope]),
    [
      ["shared:mine:pub", "p1"],
      ["shared:mine:team:v2", "t2"],
      ["shared:mine:team", "t1"],
    ],
  );
  const devices = [
    { device_id: "b1", user_id: "bob" },
    { device_id: "d1", user_id: "dave" },
  ];
  assert.deepEqual(await jobs[0].pick(devices), devices);
  assert.deepEqual((await jobs[1].pick(devices)).map((d) => d.device_id), ["b1"]);
  assert.deepEqual((await jobs[2].pick(devices)).map((d) => d.device_id), ["b1"]);
  // GET /keys/held speaks of the current version only: an older one is never skipped.
  assert.equal(jobs[1].holds({ channels: ["team"] }), true);
  assert.equal(jobs[2].holds({ channels: ["team"] }), false);
  await jobs[2].post([{ device_id: "b1" }]);
  assert.deepEqual(posted, [["team", [{ device_id: "b1", key_version: 1 }]]]);
});
