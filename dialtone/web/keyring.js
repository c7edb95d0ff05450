// A channel's keys, one per key version (docs/API.md, "Key rotation"): the pure rules,
// with no page, socket or storage, so that they run under node as well
// (tests/web/keyring.test.mjs). rotation.js puts them to work for the client.
//
// A channel object of client.js gets `versions`: a Map from key version to
// {key, envelope, commitment} for every version this device holds, the current one
// included. `ch.key` stays the key of the current version (`ch.keyVersion` says which
// version it is), so the rest of the page keeps working on it unchanged.

// The version a message, envelope, event or record names: absent (or nonsense) is 1.
export function versionOf(item) {
  const v = item && item.key_version;
  return Number.isInteger(v) && v > 0 ? v : 1;
}

export function versionsOf(ch) {
  if (!ch.versions) ch.versions = new Map();
  return ch.versions;
}

// The key that opens what was sealed with `version`, or null when this device lacks it.
export function keyFor(ch, version) {
  if (ch.key && (ch.keyVersion || 1) === version) return ch.key;
  return versionsOf(ch).get(version)?.key || null;
}

// Keep a verified key of one version (the newest write of a version wins: the same key).
export function keep(ch, version, entry) {
  versionsOf(ch).set(version, { key: entry.key, envelope: entry.envelope, commitment: entry.commitment || null });
}

// What IndexedDB stores for a channel: {versions: {"1": {key, envelope, commitment}}}
// (CryptoKeys are kept as they are, non-extractable).
export function toRecord(ch) {
  const versions = {};
  for (const [version, entry] of versionsOf(ch)) versions[String(version)] = entry;
  return { versions };
}

export function fromRecord(ch, record) {
  for (const [version, entry] of Object.entries((record && record.versions) || {})) {
    const n = Number(version);
    if (Number.isInteger(n) && n > 0 && entry && entry.key && !versionsOf(ch).has(n)) keep(ch, n, entry);
  }
}

// The version of the key a cached current-key record (`chan:<device>:<channel>`) holds:
// written with `version` from now on; older records name it in their envelope, or are 1.
export function recordVersion(record) {
  if (record && Number.isInteger(record.version) && record.version > 0) return record.version;
  return versionOf(record && record.envelope);
}

// Whether a key held for `version` may be trusted: it matches the commitment the server
// serves for the current version, or the one this device recorded when it took it.
export function fitsVersion(ch, version, commitment) {
  if (!commitment) return false;
  if (version === (ch.key_version || 1)) return Boolean(ch.key_commitment) && commitment === ch.key_commitment;
  const known = versionsOf(ch).get(version)?.commitment;
  return Boolean(known) && known === commitment;
}

// The versions named by `messages` (history or live) that this device cannot open.
export function missingVersions(ch, messages) {
  const missing = new Set();
  for (const m of messages) {
    if (m.local) continue;
    const v = versionOf(m);
    if (!keyFor(ch, v)) missing.add(v);
  }
  return [...missing].sort((a, b) => a - b);
}

// Who may rotate a private room's key: one of its owners, or an admin who is a member.
export function mayRotate(ch, isAdmin) {
  if (!ch.private) return false;
  return ch.role === "owner" || (Boolean(isAdmin) && Boolean(ch.role));
}

// The devices that get a private room's key: those of its current members only (the
// server refuses the others). Public channels: every device, as before.
export function recipientsOf(ch, devices, memberIds) {
  if (!ch.private) return devices;
  if (!memberIds) return [];
  return devices.filter((d) => memberIds.has(d.user_id));
}

// The local record of which devices this device has handed a channel key on to: one per
// key version (version 1 keeps the name it always had, so nothing is sent twice).
export function sharedRecord(deviceId, channelId, version) {
  return version === 1 ? `shared:${deviceId}:${channelId}` : `shared:${deviceId}:${channelId}:v${version}`;
}

// The versions of a channel to hand on, newest first: those this device holds and has
// verified. The current one only when it matches the channel's commitment.
export function shareableVersions(ch) {
  const out = [];
  for (const [version, entry] of versionsOf(ch)) {
    if (!entry.envelope) continue;
    if (version === (ch.key_version || 1)) {
      if (ch.key_commitment && entry.commitment === ch.key_commitment) out.push(version);
    } else if (version < (ch.key_version || 1)) {
      out.push(version);
    }
  }
  return out.sort((a, b) => b - a);
}

// A key backup's channel entry {"1": key, "2": key} as [version, base64] pairs, oldest
// first, skipping what is not a version number.
export function backupVersions(entry) {
  const out = [];
  for (const [version, raw] of Object.entries(entry || {})) {
    const n = Number(version);
    if (Number.isInteger(n) && n > 0 && typeof raw === "string") out.push([n, raw]);
  }
  return out.sort((a, b) => a[0] - b[0]);
}
