// Unit tests of rooms.js's pure part (issue 16): channel fields, the two sidebar sections,
// the /sync request and what its answer says is gone, blocked senders hidden, who manages
// members. Run by tests/web/test_rooms_js.py.
import assert from "node:assert/strict";
import { test } from "node:test";

import {
  applyRow,
  batches,
  deletionsSince,
  goneAfterSync,
  lastMessageId,
  mayManage,
  partitionChannels,
  syncEntries,
  withoutBlocked,
} from "../../dialtone/web/rooms.js";

const channel = (id, extra = {}) => ({ id, created_at: "2026-01-01T00:00:00Z", messages: [], loaded: false, ...extra });

test("a channel row from an older server reads as a public channel", () => {
  const ch = applyRow({}, { id: "a" });
  assert.deepEqual(ch, { private: false, direct: false, role: null, peer_user_id: null, rekey_required: false });
  const dm = applyRow({}, { id: "b", private: true, direct: true, role: "owner", peer_user_id: "u2" });
  assert.equal(dm.direct, true);
  assert.equal(dm.peer_user_id, "u2");
  // channel.created's object has no caller's view: what is known stays.
  applyRow(dm, { id: "b", private: true, direct: true, role: null, peer_user_id: null });
  assert.equal(dm.peer_user_id, "u2");
  assert.equal(dm.role, "owner");
});

test("rooms and direct messages go to their own sections, oldest first", () => {
  const list = [
    channel("d2", { direct: true, created_at: "2026-01-03T00:00:00Z" }),
    channel("r2", { created_at: "2026-01-02T00:00:00Z", private: true }),
    channel("d1", { direct: true, created_at: "2026-01-01T00:00:00Z" }),
    channel("r1", { created_at: "2026-01-01T00:00:00Z" }),
  ];
  const { rooms, directs } = partitionChannels(list);
  assert.deepEqual(rooms.map((c) => c.id), ["r1", "r2"]);
  assert.deepEqual(directs.map((c) => c.id), ["d1", "d2"]);
});

test("the last message id skips sends not stored yet, and falls back on the last one announced", () => {
  const ch = channel("a", { messages: [{ id: "m1" }, { id: "m2" }, { id: "local-3", local: true }] });
  assert.equal(lastMessageId(ch), "m2");
  assert.equal(lastMessageId(channel("b", { lastSeenId: "m9" })), "m9");
  assert.equal(lastMessageId(channel("c")), null);
  // Numbered messages with a hole (3 missing): from the highest place without one.
  const holed = channel("d", { seqs: { top: 2 }, messages: [{ id: "m1", seq: 1 }, { id: "m2", seq: 2 }, { id: "m4", seq: 4 }] });
  assert.equal(lastMessageId(holed), "m2");
  holed.seqs.top = 4;
  assert.equal(lastMessageId(holed), "m4");
});

test("deletions matter from the oldest message shown, or from the last catch-up when later", () => {
  const ch = channel("a", { messages: [{ id: "m1", sent_at: "2026-01-01T10:00:00Z" }, { id: "m2", sent_at: "2026-01-01T11:00:00Z" }] });
  assert.equal(deletionsSince(ch), "2026-01-01T10:00:00.000Z");
  ch.deletionsSyncedAt = Date.parse("2026-01-01T12:00:00Z");
  assert.equal(deletionsSince(ch), "2026-01-01T12:00:00.000Z");
  assert.equal(deletionsSince(channel("b")), null);
});

test("/sync asks for every channel whose place is known, and leaves out those never seen", () => {
  const entries = syncEntries([
    channel("loaded", { loaded: true, messages: [{ id: "m1", sent_at: "2026-01-01T10:00:00Z" }] }),
    channel("empty", { loaded: true }),
    channel("announced", { lastSeenId: "m7" }),
    channel("unknown"),
  ]);
  assert.deepEqual(entries, [
    { channel_id: "loaded", last_message_id: "m1", last_deletion_at: "2026-01-01T10:00:00.000Z" },
    { channel_id: "empty", last_message_id: null },
    { channel_id: "announced", last_message_id: "m7" },
  ]);
});

test("more than 200 channels go in several requests; none still makes one", () => {
  const many = Array.from({ length: 450 }, (_, i) => i);
  assert.deepEqual(batches(many).map((b) => b.length), [200, 200, 50]);
  assert.deepEqual(batches([]), [[]]);
});

test("gone: named by the server, or neither asked for nor added", () => {
  const answers = [
    { request: [{ channel_id: "a" }, { channel_id: "b" }], answer: { gone: ["b"], added: [{ id: "x" }, { id: "new" }] } },
    { request: [{ channel_id: "c" }], answer: { gone: [], added: [{ id: "x" }, { id: "new" }] } },
  ];
  // a: still there; b: gone; c: still there; x: added (never asked); y: neither: gone.
  assert.deepEqual(goneAfterSync(["a", "b", "c", "x", "y"], answers), ["b", "y"]);
});

test("messages of blocked people are left out", () => {
  const messages = [{ id: 1, sender: "u1" }, { id: 2, sender: "u2" }, { id: 3, sender: "u1" }];
  assert.deepEqual(withoutBlocked(messages, new Set(["u1"])).map((m) => m.id), [2]);
  assert.equal(withoutBlocked(messages, new Set()), messages);
});

test("owners and admins manage a private room's members; nobody a DM's or a public channel's", () => {
  assert.equal(mayManage({ private: true, role: "owner" }, false), true);
  assert.equal(mayManage({ private: true, role: "member" }, false), false);
  assert.equal(mayManage({ private: true, role: null }, true), true);
  assert.equal(mayManage({ private: true, direct: true, role: "owner" }, true), false);
  assert.equal(mayManage({ private: false }, true), false);
});
