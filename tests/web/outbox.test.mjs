// Unit tests of outbox.js (issue 20): sends kept until acknowledged and sent again in
// order, and holes in a channel's `seq` numbering. Run by tests/web/test_outbox_js.py.
import assert from "node:assert/strict";
import { test } from "node:test";

import { Outbox, SeqTracker, newClientMessageId } from "../../dialtone/web/outbox.js";

test("client message ids are fresh, printable and within the server's 64 characters", () => {
  const ids = new Set(Array.from({ length: 100 }, () => newClientMessageId()));
  assert.equal(ids.size, 100);
  for (const id of ids) assert.match(id, /^[!-~]{1,64}$/);
});

test("unacknowledged sends go again, in order, once each; acknowledged ones do not", () => {
  const box = new Outbox();
  const owners = ["a", "b", "c"].map((name) => ({ name }));
  owners.forEach((owner, i) => box.track({ client_message_id: `id-${i}`, body: `b${i}` }, owner));
  assert.equal(box.acknowledged("id-1"), owners[1]);
  assert.equal(box.acknowledged("id-1"), null); // a second acknowledgement is not ours any more
  assert.equal(box.acknowledged(undefined), null);
  const sent = [];
  box.resend((frame, owner) => sent.push([frame.client_message_id, owner.name]) > 0);
  assert.deepEqual(sent, [
    ["id-0", "a"],
    ["id-2", "c"],
  ]);
  // A socket that closes in the middle: the rest waits for the next one.
  const partial = [];
  box.resend((frame) => {
    partial.push(frame.client_message_id);
    return false;
  });
  assert.deepEqual(partial, ["id-0"]);
  assert.equal(box.size, 2);
  assert.ok(box.has(owners[2]));
  assert.ok(!box.has(owners[1]));
});

test("a seq above top + 1 is a hole; paging over it moves top past it", () => {
  const seqs = new SeqTracker();
  assert.equal(seqs.live(5), false); // nothing known yet: nothing to compare with
  seqs.paged([{ seq: 3 }, { seq: 4 }], undefined); // the newest page
  assert.equal(seqs.top, 4);
  assert.equal(seqs.live(5), false);
  assert.equal(seqs.top, 5);
  assert.equal(seqs.live(5), false); // a repeat
  assert.equal(seqs.live(8), true); // 6 and 7 are missing
  assert.equal(seqs.top, 5);
  seqs.paged([{ seq: 6 }, { seq: 8 }], 5); // 7 was deleted: the page skips it
  assert.equal(seqs.top, 8);
  assert.equal(seqs.live(9), false);
  seqs.paged([], 9);
  assert.equal(seqs.top, 9);
});

test("an empty channel starts at 0: its first message is no hole, its second one may be", () => {
  const seqs = new SeqTracker();
  seqs.paged([], undefined);
  assert.equal(seqs.top, 0);
  assert.equal(seqs.live(1), false);
  assert.equal(seqs.live(3), true);
});

test("a server without seq leaves nothing tracked", () => {
  const seqs = new SeqTracker();
  seqs.paged([{ id: "x" }, { id: "y" }], undefined);
  assert.equal(seqs.top, undefined);
  assert.equal(seqs.live(undefined), false);
});
