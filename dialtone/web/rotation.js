// Keys that rotate (docs/API.md, "Key rotation"; docs/WEB.md, "Keys that rotate"): the
// page keeps every version of a channel's key it has had, reads each message with the key
// of its `key_version`, writes with the current one, and, on a device of an owner (or of
// an admin member), replaces a private room's key by itself when someone left.
//
// client.js calls in at a few places (ensureKey, acceptChannelEnvelope, decryptMessage,
// transmit, shareKeys, refreshChannels) and `attach(client)` subscribes to the events;
// the rules themselves are in keyring.js.

import { ApiError } from "./api.js";
import * as e2e from "./crypto.js";
import * as ring from "./keyring.js";
import { store as browserStore } from "./store.js";

export { keyFor, versionOf } from "./keyring.js";

// Owners' devices online together each wait a random moment before rotating: usually
// one of them does it, and the others see its channel.updated and stand down (a race
// that still happens is settled by the server: one 409 key_version_conflict).
const ROTATE_JITTER_MS = 1500;
// Asking again for an older version's envelope: the member who holds it may come later.
const OLDER_RETRY_MS = [1000, 3000, 10000, 30000];
const CHUNK = 1000;

// Where keys are kept: IndexedDB in the page; the node unit tests put a Map here.
export const io = { store: browserStore };

function keyringRecord(client, ch) {
  return `keys:${client.me.deviceId}:${ch.id}`;
}

function currentRecord(client, ch) {
  return `chan:${client.me.deviceId}:${ch.id}`;
}

async function load(client, ch) {
  ch.keyringLoading ||= io.store
    .get(keyringRecord(client, ch))
    .then((record) => ring.fromRecord(ch, record))
    .catch(() => {});
  await ch.keyringLoading;
}

async function save(client, ch) {
  await io.store.put(keyringRecord(client, ch), ring.toRecord(ch));
}

// A channel row (GET /channels, POST /sync's `added`): what rotation needs of it.
export function noteRow(client, ch, row) {
  ch.private = Boolean(row.private);
  ch.role = row.role ?? null;
  ch.rekey_required = Boolean(row.rekey_required);
  if (ch.rekey_required) rekeySoon(client, ch, ch.key_version || 1);
}

// Before ensureKey looks at a channel: a key held for a version that is no longer the
// current one stays in the keyring for history and stops being the key to write with,
// and a current-version key the keyring already holds (this device made it) is taken.
export async function settle(client, ch) {
  await load(client, ch);
  const current = ch.key_version || 1;
  if (ch.key && (ch.keyVersion || 1) < current) {
    ch.key = null;
    ch.envelope = null;
    ch.keyCommitment = null;
    ch.keyVersion = null;
    ch.keyAttempt = 0; // the new version's envelope is on its way: ask from the start
  }
  if (ch.key) return;
  const cached = await io.store.get(currentRecord(client, ch));
  if (cached && ring.recordVersion(cached) < current) {
    // Cached as the current key before the version changed: it was checked then.
    const version = ring.recordVersion(cached);
    if (!ring.versionsOf(ch).has(version)) {
      ring.keep(ch, version, cached);
      await save(client, ch);
    }
    await io.store.delete(currentRecord(client, ch));
  }
  const entry = ring.versionsOf(ch).get(current);
  if (entry && entry.envelope && ring.fitsVersion(ch, current, entry.commitment)) {
    ch.key = entry.key;
    ch.envelope = entry.envelope;
    ch.keyCommitment = entry.commitment;
    ch.keyVersion = current;
    await io.store.put(currentRecord(client, ch), { ...entry, version: current });
  }
}

// The page now holds `entry` as the key of `version` (checked by the caller): kept in the
// keyring for good, so that history of that version stays readable after a rotation.
export async function held(client, ch, version, entry) {
  await load(client, ch);
  if (ch.key === entry.key) ch.keyVersion = version;
  const had = ring.versionsOf(ch).get(version);
  if (had && had.key === entry.key && had.commitment === (entry.commitment || null)) return;
  ring.keep(ch, version, entry);
  await save(client, ch);
}

// The version new messages are sealed with (the frame's `key_version`, sent when not 1).
export function writeVersion(ch) {
  return ch.keyVersion || 1;
}

// A channel's name, sealed with whichever version of its key was current when it was
// named: the current key first, then older ones, newest first. null when none opens it.
export async function openName(ch) {
  const keys = [ch.key, ...[...ring.versionsOf(ch).entries()].sort((a, b) => b[0] - a[0]).map(([, e]) => e.key)];
  for (const key of keys) {
    if (!key) continue;
    try {
      return await e2e.openText(key, ch.name_enc);
    } catch {
      // sealed with another version
    }
  }
  return null;
}

// ---- older versions ----

// A message of a version this device lacks: an older one is asked for (its envelope,
// from whichever member handed it on); a newer one means the channel changed meanwhile.
export function wantVersion(client, ch, version) {
  const current = ch.key_version || 1;
  if (version > current) {
    if (!ch.refreshingForVersion) {
      ch.refreshingForVersion = client
        .refreshChannels()
        .catch((error) => client.guard(error))
        .finally(() => {
          ch.refreshingForVersion = null;
        });
    }
    return;
  }
  if (version === current) return; // the current key: client.js asks for it already
  ch.olderAsked ||= new Map();
  if (ch.olderAsked.has(version)) return;
  ch.olderAsked.set(version, 0);
  fetchOlder(client, ch, version).catch((error) => client.guard(error));
}

async function opensOne(key, messages) {
  for (const m of messages) {
    try {
      await e2e.openText(key, m.body);
      return true;
    } catch {
      // not this one
    }
  }
  return false;
}

async function fetchOlder(client, ch, version) {
  if (client.ended || !client.channels.has(ch.id) || ring.keyFor(ch, version)) return;
  let answer = null;
  try {
    answer = await client.api.get("/channels/keys", { channel_id: ch.id, all: 1, key_version: version });
  } catch (error) {
    if (client.guard(error)) return;
    if (!(error instanceof ApiError && error.status === 404)) throw error;
  }
  const envelopes = ((answer && answer.envelopes) || []).filter((e) => ring.versionOf(e) === version);
  // What proves an older key: the commitment recorded here when this device had it (or
  // one the server serves for that version), else a message of that version it opens.
  const served = answer && ring.versionOf(answer) === version ? answer.key_commitment || null : null;
  const probes = ch.messages.filter((m) => !m.local && ring.versionOf(m) === version).slice(-5);
  for (const envelope of envelopes) {
    const commitment = await client.commitmentOf(envelope, ch.id);
    if (commitment === null) continue;
    let fits = ring.fitsVersion(ch, version, commitment) || (served !== null && served === commitment);
    const key = await e2e.unwrapEnvelope(client.device.privateKey, envelope.sender_public_key, envelope.envelope);
    if (!fits && served === null) fits = await opensOne(key, probes);
    if (!fits) {
      client.report(ch.id, envelope, `its key does not open this channel's messages of key version ${version}`);
      continue;
    }
    await held(client, ch, version, { key, envelope, commitment });
    await redecrypt(client, ch, version);
    client.emit("keys");
    return;
  }
  // Nobody has handed it on yet: ask again a little later, a few times.
  const attempt = ch.olderAsked.get(version) || 0;
  if (attempt >= OLDER_RETRY_MS.length) return;
  ch.olderAsked.set(version, attempt + 1);
  const timer = setTimeout(() => {
    client.shareTimers.delete(timer);
    fetchOlder(client, ch, version).catch((error) => client.guard(error));
  }, OLDER_RETRY_MS[attempt]);
  client.shareTimers.add(timer);
}

async function redecrypt(client, ch, version) {
  let any = false;
  for (const m of ch.messages) {
    if (m.local || ring.versionOf(m) !== version) continue;
    await client.decryptMessage(ch, m);
    any = true;
  }
  if (any) client.emit("messages", ch.id);
}

// ---- members ----

// The member ids of a private room, read once and kept until a member event changes them.
export async function memberIds(client, ch, fresh = false) {
  if (!ch.private) return null;
  if (!fresh && ch.memberIds) return ch.memberIds;
  const { members } = await client.api.get("/channels/members", { channel_id: ch.id });
  ch.memberIds = new Set(members.map((m) => m.user_id));
  return ch.memberIds;
}

// ---- handing keys on, every version ----

// The devices among `targets` that may get a channel's key: all for a public channel, the
// members' for a private room (the server refuses envelopes for anyone else).
async function recipients(client, ch, targets) {
  if (!ch.private) return targets;
  if (client.rooms?.recipients) return client.rooms.recipients(ch, targets);
  let ids;
  try {
    ids = await memberIds(client, ch);
  } catch (error) {
    if (error instanceof ApiError && (error.status === 401 || error.status === 403)) throw error;
    return []; // gone, or no longer ours
  }
  return ring.recipientsOf(ch, targets, ids);
}

// The hand-on jobs of client.shareKeys for channel keys: the current key when the page may
// hand it on (client.mayShareChannel), and every older version it holds; a private
// room's only to its members' devices (`pick`).
export function shareJobs(client) {
  const jobs = [];
  for (const ch of [...client.channels.values()]) {
    const versions = [];
    if (client.mayShareChannel(ch)) versions.push([writeVersion(ch), ch.envelope, true]);
    for (const version of ring.shareableVersions(ch)) {
      if (version !== writeVersion(ch)) versions.push([version, ring.versionsOf(ch).get(version).envelope, false]);
    }
    for (const [version, envelope, current] of versions) {
      jobs.push({
        record: ring.sharedRecord(client.me.deviceId, ch.id, version),
        // GET /keys/held speaks of the current version only.
        holds: current ? (h) => h.channels.includes(ch.id) : () => false,
        pick: (devices) => recipients(client, ch, devices),
        envelope,
        post: async (items) => {
          try {
            return await client.api.postChannelKeys(ch.id, items.map((e) => ({ ...e, key_version: version })));
          } catch (error) {
            // Someone left between the member list and the upload: read it again next time.
            if (error instanceof ApiError && error.code === "not_a_member_device") ch.memberIds = null;
            throw error;
          }
        },
      });
    }
  }
  return jobs;
}

// ---- rotation ----

function rekeySoon(client, ch, replaced) {
  if (!ring.mayRotate(ch, client.canManageChannels) || ch.rotating || client.ended) return;
  ch.rotating = true;
  const timer = setTimeout(async () => {
    client.shareTimers.delete(timer);
    try {
      await rotate(client, ch, replaced);
    } catch (error) {
      if (!client.guard(error)) console.warn("dialtone: could not rotate a room's key:", error.message);
    } finally {
      ch.rotating = false;
    }
  }, Math.random() * ROTATE_JITTER_MS);
  client.shareTimers.add(timer);
}

// Make the next version's key, register its commitment (one device wins), hand it to
// every device of the remaining members, this user's other devices included, and write
// with it from now on.
export async function rotate(client, ch, replaced) {
  if (client.ended || !client.channels.has(ch.id)) return false;
  if ((ch.key_version || 1) > replaced) return false; // another device was quicker
  const next = replaced + 1;
  const fresh = await e2e.newSharedKey();
  const commitment = await e2e.commitment(fresh);
  let answer;
  try {
    answer = await client.api.post("/channels/rotate", { channel_id: ch.id, key_version: next, key_commitment: commitment });
  } catch (error) {
    if (client.guard(error)) return false;
    if (error instanceof ApiError && error.code === "key_version_conflict") {
      // Another device rotated first: its envelope for this device is on its way.
      await client.refreshChannels();
      return false;
    }
    if (!(error instanceof ApiError && (error.status === 403 || error.status === 404))) throw error;
    return false;
  }
  const channel = (answer && answer.channel) || {};
  ch.rekey_required = false;
  ch.key_commitment = channel.key_commitment || commitment;
  ch.key_version = channel.key_version || next;
  // Taken (and stored) before anything is uploaded: should the upload fail, this device
  // still holds the room's key and hands it on as any key, when members come online.
  const [mine] = await client.wrapForAll(fresh, [{ device_id: client.me.deviceId, public_key: client.me.publicKey }]);
  await client.acceptChannelEnvelope(ch, { ...mine, key_version: ch.key_version, created_at: new Date().toISOString() }, commitment);
  // Our own envelope goes up with the others: sealed from this device to itself, it is
  // also its confirmation (GET /keys/held lists the room for this device).
  await handOut(client, ch, fresh, ch.key_version, mine);
  await resealName(client, ch);
  return true;
}

// The room's name sealed again with the new key (owners and admins may rename a room), so
// that a member who joins later reads it with the one key it gets first, and the member
// who left cannot read a later name. A direct room has no name.
async function resealName(client, ch) {
  if (ch.direct || !ch.name || !ch.key) return;
  try {
    const nameEnc = await e2e.seal(ch.key, ch.name);
    await client.api.renameChannel(ch.id, nameEnc);
    ch.name_enc = nameEnc;
  } catch (error) {
    if (!client.guard(error)) console.warn("dialtone: could not seal a room's name with its new key:", error.message);
  }
}

async function handOut(client, ch, key, version, mine) {
  for (let attempt = 1; ; attempt++) {
    const ids = await memberIds(client, ch, true);
    await client.refreshDevices();
    const others = ring.recipientsOf(ch, client.devicesAll, ids).filter((d) => d.device_id !== client.me.deviceId);
    const envelopes = [mine, ...(await client.wrapForAll(key, others))].map((e) => ({ ...e, key_version: version }));
    try {
      for (let i = 0; i < envelopes.length; i += CHUNK) await client.api.postChannelKeys(ch.id, envelopes.slice(i, i + CHUNK));
    } catch (error) {
      // Someone left (or a device went) between the members read and the upload.
      const moved = error instanceof ApiError && ["not_a_member_device", "unknown_device"].includes(error.code);
      if (moved && attempt < 3) continue;
      throw error;
    }
    await io.store.put(
      ring.sharedRecord(client.me.deviceId, ch.id, version),
      envelopes.map((e) => e.device_id),
    );
    return envelopes;
  }
}

// ---- events ----

export function attach(client) {
  const socket = client.socket;
  socket.on("channel.rekey_required", (event) => {
    const ch = client.channels.get(event.channel_id);
    if (!ch) return;
    ch.rekey_required = true;
    rekeySoon(client, ch, Number.isInteger(event.key_version) ? event.key_version : ch.key_version || 1);
  });
  // rooms.js (when present) follows membership for the page; this keeps what rotation
  // needs without it: the member lists, our role, and a room we were added to.
  socket.on("channel.member.added", (event) => {
    const ch = client.channels.get(event.channel_id);
    if (!ch) {
      if (event.user_id === client.me.id && !client.rooms) client.refreshChannels().catch((error) => client.guard(error));
      return;
    }
    ch.memberIds?.add(event.user_id);
    if (event.user_id === client.me.id && event.role) ch.role = event.role;
    else if (!client.rooms) client.shareSoon(() => client.devicesAll.filter((d) => d.user_id === event.user_id));
  });
  socket.on("channel.member.removed", (event) => {
    const ch = client.channels.get(event.channel_id);
    if (ch) ch.memberIds?.delete(event.user_id);
  });
}
