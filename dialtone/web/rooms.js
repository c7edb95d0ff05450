// Private rooms, direct messages, blocks, do-not-disturb and the catch-up in one call
// (issue 16), for the signed-in client. `client.rooms` is a Rooms; components read it
// and subscribe with client.on("members", channelId) / client.on("privacy") besides the
// client's own events. The wire is in docs/API.md ("Private rooms", "Direct messages",
// "Blocks", "/sync"); the top of this file is pure and unit-tested under node.

import { ApiError } from "./api.js";
import * as e2e from "./crypto.js";
import { store } from "./store.js";

// What a person may choose for who opens a new direct message with them.
export const DM_POLICIES = ["anyone", "trusted", "nobody"];
// At most this many channels per POST /sync (the server's bound).
export const SYNC_BATCH = 200;
// How long an answer of GET /channels/direct?user_id= stands for the DM buttons.
const ALLOWED_TTL_MS = 30000;

// ---- pure helpers ----

// The issue-16 fields of a channel object (absent from older servers: public channel).
// Role and peer are the caller's view: an object without them (channel.created's) keeps
// what is known.
export function applyRow(ch, row) {
  ch.private = Boolean(row.private);
  ch.direct = Boolean(row.direct);
  ch.role = row.role ?? ch.role ?? null;
  ch.peer_user_id = row.peer_user_id ?? ch.peer_user_id ?? null;
  ch.rekey_required = Boolean(row.rekey_required);
  return ch;
}

// Rooms (public and private) and direct messages, each in the order they were made.
export function partitionChannels(channels) {
  const order = (a, b) => (a.created_at < b.created_at ? -1 : a.created_at > b.created_at ? 1 : a.id < b.id ? -1 : 1);
  const list = [...channels];
  return {
    rooms: list.filter((ch) => !ch.direct).sort(order),
    directs: list.filter((ch) => ch.direct).sort(order),
  };
}

// Where a channel's catch-up starts: the message at the highest place held without a
// hole below it (issue 20's `seq`: the catch-up then also fills an old hole), else the
// last stored message it shows, else the last one announced live while its history was
// not loaded.
export function lastMessageId(ch) {
  const top = ch.seqs?.top;
  if (Number.isInteger(top) && top > 0) {
    const at = ch.messages.find((m) => m.seq === top && !m.local && !ch.deleted?.has(m.id));
    if (at) return at.id;
  }
  for (let i = ch.messages.length - 1; i >= 0; i -= 1) {
    const m = ch.messages[i];
    if (!m.local && typeof m.id === "string" && !m.id.startsWith("local-")) return m.id;
  }
  // One deleted since is no place to start from (the server answers invalid_cursor).
  return ch.lastSeenId && !ch.deleted?.has(ch.lastSeenId) ? ch.lastSeenId : null;
}

// Since when deletions matter for a channel: the later of the oldest message it shows and
// the last time it was in step with the deletions feed (ms); null when it shows nothing.
export function deletionsSince(ch) {
  const held = ch.messages.filter((m) => !m.local);
  if (!held.length) return null;
  let since = Date.parse(held[0].sent_at);
  if (ch.deletionsSyncedAt && ch.deletionsSyncedAt > since) since = ch.deletionsSyncedAt;
  return Number.isNaN(since) ? null : new Date(since).toISOString();
}

// The entries of POST /sync: every channel whose place we know. A channel never loaded
// and never announced is left out (from the start would be its oldest page, not what is
// new): the answer's `added` still tells it exists.
export function syncEntries(channels) {
  const entries = [];
  for (const ch of channels) {
    const last = lastMessageId(ch);
    if (!last && !ch.loaded) continue;
    const entry = { channel_id: ch.id, last_message_id: last };
    const since = deletionsSince(ch);
    if (since) entry.last_deletion_at = since;
    entries.push(entry);
  }
  return entries;
}

export function batches(items, size = SYNC_BATCH) {
  const out = [];
  for (let i = 0; i < items.length; i += size) out.push(items.slice(i, i + size));
  return out.length ? out : [[]];
}

// Which known channels are gone after a sync in one or more batches: those named `gone`,
// and those neither requested nor `added` (added lists every visible channel that was not
// in a batch, so a known one missing from it is no longer visible).
export function goneAfterSync(known, answers) {
  const requested = new Set();
  const gone = new Set();
  const added = new Set();
  for (const { request, answer } of answers) {
    for (const entry of request) requested.add(entry.channel_id);
    for (const id of answer.gone || []) gone.add(id);
    for (const row of answer.added || []) added.add(row.id);
  }
  const out = [];
  for (const id of known) {
    if (gone.has(id)) out.push(id);
    else if (!requested.has(id) && !added.has(id)) out.push(id);
  }
  return out;
}

// Messages shown: those of people this user blocked are left out.
export function withoutBlocked(messages, blocked) {
  if (!blocked || !blocked.size) return messages;
  return messages.filter((m) => m.sender === undefined || !blocked.has(m.sender));
}

// Who may add and remove members of a private room: its owners and admins.
export function mayManage(ch, isAdmin) {
  return Boolean(ch && ch.private && !ch.direct && (ch.role === "owner" || isAdmin));
}

// ---- the client side ----

export class Rooms {
  constructor(client) {
    this.client = client;
    this.blocked = new Set();
    this.allowed = new Map(); // user id → { allowed, channel_id, at } or a promise of it
    this.syncing = null;
    this.noSync = false;
    this.lastWake = 0;
  }

  get api() {
    return this.client.api;
  }

  emit(what, detail) {
    this.client.emit(what, detail);
  }

  // Socket events; called once by client.start() before the socket connects.
  listen(socket) {
    socket.on("channel.created", (event) => this.onCreated(event));
    socket.on("channel.member.added", (event) => this.onMemberAdded(event));
    socket.on("channel.member.removed", (event) => this.onMemberRemoved(event));
    // Where a channel whose history is not loaded has got to, for the next /sync.
    socket.on("channel.message.new", (event) => {
      const ch = this.client.channels.get(event.channel_id);
      if (ch && event.message_id) ch.lastSeenId = event.message_id;
    });
    this.onWake = () => {
      if (document.visibilityState !== "visible" || !socket.isOpen) return;
      // Woken often (a tab switched to and fro): once every few seconds is plenty.
      if (Date.now() - this.lastWake < 5000) return;
      this.lastWake = Date.now();
      this.sync().catch((error) => this.client.guard(error));
    };
    document.addEventListener("visibilitychange", this.onWake);
    addEventListener("online", this.onWake);
  }

  stop() {
    document.removeEventListener("visibilitychange", this.onWake);
    removeEventListener("online", this.onWake);
  }

  // Read at start: the block list (messages of blocked people are hidden).
  async start() {
    try {
      const { blocks } = await this.api.get("/users/blocks");
      this.blocked = new Set(blocks.map((b) => b.user_id));
    } catch (error) {
      if (error instanceof ApiError && (error.status === 401 || error.status === 403)) throw error;
      console.warn("dialtone: could not read the block list:", error.message);
    }
  }

  // ---- names ----

  directName(ch) {
    const peer = ch.peer_user_id || [...(ch.memberIds || [])].find((id) => id !== this.client.me.id);
    return peer ? this.client.nameOf(peer) : "Direct message";
  }

  // ---- members ----

  async members(channelId) {
    const answer = await this.api.get("/channels/members", { channel_id: channelId });
    const ch = this.client.channels.get(channelId);
    if (ch && ch.private) ch.memberIds = new Set(answer.members.map((m) => m.user_id));
    return answer;
  }

  // The devices among `targets` that may get a channel's key: all for a public channel,
  // the members' for a private room (the server refuses envelopes for anyone else).
  async recipients(ch, targets) {
    if (!ch.private) return targets;
    if (!ch.memberIds) {
      try {
        await this.members(ch.id);
      } catch (error) {
        if (error instanceof ApiError && (error.status === 401 || error.status === 403)) throw error;
        return [];
      }
    }
    return targets.filter((d) => ch.memberIds?.has(d.user_id));
  }

  async invite(channelId, userId) {
    await this.client.attempt(() => this.api.post("/channels/members", { channel_id: channelId, user_id: userId }), "Adding a member");
    const ch = this.client.channels.get(channelId);
    ch?.memberIds?.add(userId);
    this.emit("members", channelId);
  }

  async remove(channelId, userId) {
    await this.client.attempt(
      () => this.api.request("DELETE", "/channels/members", { query: { channel_id: channelId, user_id: userId } }),
      userId === this.client.me.id ? "Leaving the room" : "Removing a member",
    );
    if (userId === this.client.me.id) this.drop(channelId);
    else {
      this.client.channels.get(channelId)?.memberIds?.delete(userId);
      this.emit("members", channelId);
    }
  }

  leave(channelId) {
    return this.remove(channelId, this.client.me.id);
  }

  drop(channelId) {
    this.client.onChannelDeleted({ channel_id: channelId });
  }

  async onCreated(event) {
    const row = event.channel;
    if (!row || typeof row.id !== "string") return;
    const ch = this.client.channels.get(row.id);
    if (!ch) {
      // Ours from another device, or made here and not answered yet: read the list.
      await this.client.refreshChannels().catch((e) => this.client.guard(e));
    }
    const now = this.client.channels.get(row.id);
    if (now && Array.isArray(event.members)) now.memberIds = new Set(event.members.map((m) => m.user_id));
    this.emit("members", row.id);
  }

  async onMemberAdded(event) {
    const client = this.client;
    let ch = client.channels.get(event.channel_id);
    if (event.user_id === client.me.id) {
      if (!ch) {
        // Added to a room: it appears, and its key comes from a member who holds it.
        await client.refreshChannels().catch((e) => client.guard(e));
        ch = client.channels.get(event.channel_id);
        if (ch && !ch.key) client.askAgainForKeys();
      } else {
        ch.role = event.role || ch.role;
        client.emit("channels");
      }
      this.emit("members", event.channel_id);
      return;
    }
    if (!ch) return;
    ch.memberIds?.add(event.user_id);
    this.emit("members", event.channel_id);
    // A new member needs the key: members who hold it hand it on, after the usual jitter
    // and only to devices that have not confirmed it (the key holders' shareKeys).
    if (client.mayShareChannel(ch)) {
      if (!client.devicesAll.some((d) => d.user_id === event.user_id)) await client.refreshDevices().catch(() => {});
      client.shareSoon(() => client.devicesAll.filter((d) => d.user_id === event.user_id));
    }
  }

  onMemberRemoved(event) {
    if (event.user_id === this.client.me.id) {
      this.drop(event.channel_id);
      return;
    }
    this.client.channels.get(event.channel_id)?.memberIds?.delete(event.user_id);
    this.emit("members", event.channel_id);
  }

  // ---- direct messages ----

  // Whether this user may open a DM with `userId` now, from a short-lived cache.
  async directAllowed(userId, { fresh = false } = {}) {
    if (this.noDirect) return { allowed: false, channel_id: null, at: Date.now(), unsupported: true };
    const held = this.allowed.get(userId);
    if (held && !fresh) {
      if (held.then) return held;
      if (Date.now() - held.at < ALLOWED_TTL_MS) return held;
    }
    const asking = this.api
      .get("/channels/direct", { user_id: userId })
      .then((answer) => {
        const value = { allowed: Boolean(answer.allowed), channel_id: answer.channel_id || null, at: Date.now() };
        this.allowed.set(userId, value);
        // A changed answer greys the DM button out (or back) wherever it is shown.
        if (held && !held.then && held.allowed !== value.allowed) this.emit("people");
        return value;
      })
      .catch((error) => {
        if (this.client.guard(error)) {
          this.allowed.delete(userId);
          throw error;
        }
        // A server without direct messages (no such route): never asked again. Any other
        // failure stands for the usual while (the button stays, the server decides).
        if (error instanceof ApiError && ((error.status === 404 && error.code === "not_found") || error.status === 405)) {
          this.noDirect = true;
          this.emit("people");
        }
        const value = { allowed: true, channel_id: null, at: Date.now(), unknown: true };
        this.allowed.set(userId, value);
        return value;
      });
    this.allowed.set(userId, asking);
    return asking;
  }

  // The cached answer without asking (null: not asked yet or on its way).
  knownAllowed(userId) {
    const held = this.allowed.get(userId);
    return held && !held.then ? held : null;
  }

  existingDirect(userId) {
    for (const ch of this.client.channels.values()) if (ch.direct && ch.peer_user_id === userId) return ch;
    return null;
  }

  // Open (or make) the one DM with `userId`; the page that made it makes its key.
  async openDirect(userId) {
    const client = this.client;
    const known = this.existingDirect(userId);
    if (known) return known;
    const { channel } = await client.attempt(() => this.api.post("/channels/direct", { user_id: userId }), "Opening the conversation");
    this.allowed.set(userId, { allowed: true, channel_id: channel.id, at: Date.now() });
    const ch = client.channels.get(channel.id) || client.newChannel(channel);
    applyRow(ch, channel);
    // Made just now by us (two racing pages get one room; only its maker keys it).
    const ours = !channel.key_commitment && (!channel.created_by || channel.created_by === client.me.id);
    if (ours && !ch.key) await this.keyDirect(ch, userId);
    else await client.ensureKey(ch).catch(() => {});
    client.emit("channels");
    client.emit("keys");
    return ch;
  }

  // A DM's first key: its commitment set first (so the peer's page accepts it from any
  // of our devices), then envelopes for both users' devices.
  async keyDirect(ch, peerId) {
    const client = this.client;
    const key = await e2e.newSharedKey();
    const commitment = await e2e.commitment(key);
    ch.creating = true;
    try {
      try {
        const { channel } = await this.api.request("PUT", "/channels/commitment", { body: { channel_id: ch.id, key_commitment: commitment } });
        ch.key_commitment = (channel && channel.key_commitment) || commitment;
      } catch (error) {
        if (client.guard(error)) return;
        // Another of our devices was first: take its key like any other.
        if (error instanceof ApiError && error.status === 409) {
          ch.creating = false;
          await client.refreshChannels().catch(() => {});
          return;
        }
        throw error;
      }
      await client.refreshDevices();
      const devices = client.devicesAll.filter((d) => d.user_id === client.me.id || d.user_id === peerId);
      const envelopes = await client.wrapForAll(key, devices);
      for (let i = 0; i < envelopes.length; i += 1000) {
        await client.attempt(() => this.api.postChannelKeys(ch.id, envelopes.slice(i, i + 1000)), "Sharing the conversation key");
      }
      await store.put(`shared:${client.me.deviceId}:${ch.id}`, envelopes.map((e) => e.device_id));
      const mine = envelopes.find((e) => e.device_id === client.me.deviceId);
      ch.creating = false;
      await client.acceptChannelEnvelope(ch, mine, commitment);
    } finally {
      ch.creating = false;
    }
  }

  // ---- do-not-disturb ----

  async preferences() {
    return this.api.get("/users/preferences");
  }

  async setDirectMessages(value) {
    if (!DM_POLICIES.includes(value)) throw new Error("That choice does not exist.");
    const answer = await this.client.attempt(
      () => this.api.request("PUT", "/users/preferences", { body: { direct_messages: value } }),
      "Saving who may message you",
    );
    this.emit("privacy");
    return answer;
  }

  // ---- blocks ----

  isBlocked(userId) {
    return this.blocked.has(userId);
  }

  async blocks() {
    const { blocks } = await this.api.get("/users/blocks");
    this.blocked = new Set(blocks.map((b) => b.user_id));
    return blocks;
  }

  async block(userId) {
    await this.client.attempt(() => this.api.post("/users/blocks", { user_id: userId }), "Blocking");
    this.blocked.add(userId);
    this.allowed.delete(userId);
    this.changedBlocks();
  }

  async unblock(userId) {
    await this.client.attempt(() => this.api.request("DELETE", "/users/blocks", { query: { user_id: userId } }), "Unblocking");
    this.blocked.delete(userId);
    this.allowed.delete(userId);
    this.changedBlocks();
  }

  changedBlocks() {
    this.emit("privacy");
    this.emit("people");
    this.emit("messages", null);
  }

  // ---- catch-up in one call ----

  // POST /sync for every channel: new messages, deletions, rooms gone and rooms added.
  // False on a server without /sync (the caller catches up channel by channel).
  sync() {
    if (this.noSync) return Promise.resolve(false);
    if (!this.syncing) {
      this.syncing = this.syncOnce().finally(() => {
        this.syncing = null;
      });
    }
    return this.syncing;
  }

  async syncOnce() {
    const client = this.client;
    // Signed out meanwhile, or nothing whose place is known (the channel list was just
    // read, or the socket's events kept it): nothing to ask.
    if (client.ended || !client.socket.isOpen) return true;
    const entries = syncEntries(client.channels.values());
    if (!entries.length) return true;
    const known = [...client.channels.keys()];
    const answers = [];
    for (const request of batches(entries)) {
      let answer;
      try {
        answer = await this.api.post("/sync", { channels: request });
      } catch (error) {
        // A server without /sync: no such route.
        if (error instanceof ApiError && ((error.status === 404 && error.code === "not_found") || error.status === 405)) {
          this.noSync = true;
          return false;
        }
        // A message we started from was deleted meanwhile: channel by channel this time.
        if (error instanceof ApiError && error.code === "invalid_cursor") return false;
        throw error;
      }
      answers.push({ request, answer, at: this.api.serverDate });
    }
    for (const id of goneAfterSync(known, answers)) client.onChannelDeleted({ channel_id: id });
    let fresh = false;
    for (const { answer } of answers) {
      for (const row of answer.added || []) {
        if (client.channels.has(row.id)) continue;
        applyRow(client.newChannel(row), row);
        fresh = true;
      }
    }
    if (fresh) {
      await Promise.all([...client.channels.values()].filter((ch) => !ch.key).map((ch) => client.ensureKey(ch).catch(() => {})));
      client.askAgainForKeys();
    }
    for (const { request, answer, at } of answers) {
      const from = new Map(request.map((entry) => [entry.channel_id, entry.last_message_id]));
      for (const result of answer.channels || []) await this.applyResult(result, at, from.get(result.channel_id));
    }
    client.emit("channels");
    client.emit("messages", null);
    return true;
  }

  async applyResult(result, at, fromId) {
    const client = this.client;
    const ch = client.channels.get(result.channel_id);
    if (!ch) return;
    // Asked from the highest place held without a hole: the answer fills up from there.
    const top = ch.seqs?.top;
    const fromTop = Number.isInteger(top) && ch.messages.some((m) => m.id === fromId && m.seq === top);
    const seen = client.activeChannel === ch.id && document.visibilityState === "visible";
    for (const row of result.messages || []) {
      const m = client.fromWire(row);
      if (m.sender === client.me.id) client.acknowledge(row.client_message_id);
      const had = ch.messages.some((x) => x.id === m.id) || ch.deleted?.has(m.id);
      ch.lastSeenId = m.id;
      if (had) continue;
      await client.addMessage(ch, m, false);
      if (!seen && m.sender !== client.me.id && !this.blocked.has(m.sender)) ch.unread += 1;
    }
    if (result.deleted?.length) {
      client.onDeleted({ channel_id: ch.id, message_ids: result.deleted.map((d) => d.message_id) });
    }
    const rows = result.messages || [];
    if (fromTop && !result.more) ch.seqs.paged(rows, top);
    // More deletions than one answer holds: the feed pages the rest (from where this
    // channel was last in step); else in step as of the server's time of the answer.
    if (result.deleted_more) await client.catchUpDeletions(ch);
    else if (at) ch.deletionsSyncedAt = at - 2000;
    // More than one answer holds: the rest is paged with history, as before.
    if (result.more && ch.loaded) await client.catchUp(ch);
  }
}
