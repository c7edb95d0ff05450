// Delivery bookkeeping for chat (issue 20), kept apart from client.js:
//
// - Outbox: every send carries a client_message_id. A send stays here until the
//   server acknowledges it (our own channel.message.new, live or found in history),
//   and whatever is still here when the socket opens again is sent again with the same
//   id and the same ciphertext: the server stores it once and answers a repeat with the
//   stored message.
// - SeqTracker: history items and channel.message.new carry `seq`, the message's place
//   in its channel (1, 2, 3, ...). `top` is the highest place up to which this client has
//   everything the server has (a place that stays empty after paging over it is a
//   deleted message). A live message above top + 1 reveals a hole, paged with
//   `after_seq=top`. Servers without `seq` leave it undefined: nothing is tracked.

export function newClientMessageId() {
  if (globalThis.crypto?.randomUUID) return crypto.randomUUID();
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

export class Outbox {
  constructor() {
    this.unacked = new Map(); // client_message_id → { frame, owner }
  }

  track(frame, owner) {
    this.unacked.set(frame.client_message_id, { frame, owner });
  }

  // The owner of an acknowledged send (null when it is not one of ours, or was already).
  acknowledged(clientMessageId) {
    if (!clientMessageId) return null;
    const entry = this.unacked.get(clientMessageId);
    if (!entry) return null;
    this.unacked.delete(clientMessageId);
    return entry.owner;
  }

  has(owner) {
    for (const entry of this.unacked.values()) if (entry.owner === owner) return true;
    return false;
  }

  get size() {
    return this.unacked.size;
  }

  // Send again, in their original order, what is still unacknowledged; `send(frame,
  // owner)` returns false when the socket closed meanwhile (the rest waits for the next).
  resend(send) {
    for (const { frame, owner } of [...this.unacked.values()]) {
      if (!send(frame, owner)) return;
    }
  }
}

export class SeqTracker {
  constructor() {
    this.top = undefined;
  }

  // A page of history read from `after_seq=from` (or the newest page: from undefined):
  // everything up to its last item is now known.
  paged(items, from) {
    // An empty channel: its first message will be 1 (an older server, whose items
    // have no seq, is then paged once from 0 and the page tells: see fillGap).
    if (from === undefined && !items.length) this.top ??= 0;
    const seqs = items.map((m) => m.seq).filter((s) => Number.isInteger(s));
    if (!seqs.length) return;
    const last = Math.max(...seqs);
    if (from !== undefined || this.top === undefined || last > this.top) {
      this.top = Math.max(this.top ?? 0, last);
    }
  }

  // A live message: true when it leaves a hole below it (page from `top`).
  live(seq) {
    if (!Number.isInteger(seq) || this.top === undefined) return false;
    if (seq === this.top + 1) {
      this.top = seq;
      return false;
    }
    return seq > this.top + 1;
  }
}
