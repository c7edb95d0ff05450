// The key backup (docs/API.md, "Key backup"): one blob per account on the server, sealed
// with a key that only the user can make again, from a recovery key shown once or from a
// passphrase. The server sees neither, nor anything derived from the login password.
//
//   recovery key   32 random bytes, shown as base32 (RFC 4648, no padding, upper case)
//                  in groups of four joined by "-"; read back ignoring case, spaces, dashes
//   passphrase     NFKC, UTF-8 → PBKDF2-HMAC-SHA256 (16-byte salt, 600000 rounds) → 32 bytes
//   backup key     HKDF-SHA256(those 32 bytes, the salt, "dialtone-key-backup-v1") → AES-256
//   blob           base64 of the JSON {"v":1,"kdf","salt","iterations"?,"data"}, data being
//                  AES-GCM(nonce || ciphertext || tag) of {"channels":{id:{version:key}},
//                  "directory":key|null}
//
// The backup key is kept in IndexedDB as a non-extractable CryptoKey (with its salt), so
// the page can add every key it gets later without asking again: read, open, merge
// (union), write with the version read; a 409 means another device wrote first, so read,
// merge and write again. Restoring installs each key as if it had come in an envelope
// (a sealed copy addressed from this device to itself), after checking it against the
// channel's key commitment when the channel has one.

import { ApiError } from "./api.js";
import { currentClient } from "./client.js";
import * as e2e from "./crypto.js";
import * as ring from "./keyring.js";
import * as rotation from "./rotation.js";
import { store } from "./store.js";

const subtle = globalThis.crypto.subtle;
const encoder = new TextEncoder();
const INFO = encoder.encode("dialtone-key-backup-v1");
export const PBKDF2_ITERATIONS = 600000;
export const MIN_PASSPHRASE = 12;
const BASE32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
const SYNC_DELAY_MS = 300;
const MAX_ROUNDS = 8;

// A failure the page can show as it is: `code` says which ("wrong_secret", "not_recovery_key",
// "no_backup", "exists", "weak_passphrase", "replaced").
export class BackupError extends Error {
  constructor(code, message) {
    super(message);
    this.name = "BackupError";
    this.code = code;
  }

  get friendly() {
    return this.message;
  }
}

// ---- the format ----

export function base32(bytes) {
  let bits = 0;
  let value = 0;
  let out = "";
  for (const byte of bytes) {
    value = (value << 8) | byte;
    bits += 8;
    while (bits >= 5) {
      out += BASE32[(value >>> (bits - 5)) & 31];
      bits -= 5;
    }
  }
  if (bits > 0) out += BASE32[(value << (5 - bits)) & 31];
  return out;
}

export function formatRecoveryKey(bytes) {
  return base32(bytes).match(/.{1,4}/g).join("-");
}

export function parseRecoveryKey(text) {
  const compact = String(text).replace(/[\s-]/g, "").toUpperCase();
  const wrong = new BackupError(
    "not_recovery_key",
    "That is not a recovery key: a recovery key is 52 letters and digits (2 to 7), in groups of four.",
  );
  if (compact.length !== 52 || ![...compact].every((c) => BASE32.includes(c))) throw wrong;
  const out = new Uint8Array(32);
  let bits = 0;
  let value = 0;
  let at = 0;
  for (const c of compact) {
    value = ((value << 5) | BASE32.indexOf(c)) & 0xfff;
    bits += 5;
    if (bits >= 8) {
      if (at < 32) out[at] = (value >>> (bits - 8)) & 0xff;
      at += 1;
      bits -= 8;
    }
  }
  return out;
}

export function newRecoveryKey() {
  return globalThis.crypto.getRandomValues(new Uint8Array(32));
}

// The passphrase rule shown to the user: long enough to resist guessing at 600000 rounds.
export function passphraseProblem(passphrase) {
  if (passphrase.length < MIN_PASSPHRASE) return `A backup passphrase needs at least ${MIN_PASSPHRASE} characters.`;
  if (new Set(passphrase).size < 5) return "A backup passphrase needs at least 5 different characters.";
  return null;
}

async function hkdfKey(ikm, salt) {
  const material = await subtle.importKey("raw", ikm, "HKDF", false, ["deriveKey"]);
  return subtle.deriveKey(
    { name: "HKDF", hash: "SHA-256", salt, info: INFO },
    material,
    { name: "AES-GCM", length: 256 },
    false,
    ["encrypt", "decrypt"],
  );
}

async function passphraseBits(passphrase, salt, iterations) {
  const material = await subtle.importKey("raw", encoder.encode(passphrase.normalize("NFKC")), "PBKDF2", false, ["deriveBits"]);
  return new Uint8Array(await subtle.deriveBits({ name: "PBKDF2", hash: "SHA-256", salt, iterations }, material, 256));
}

// secret: {recoveryKey: Uint8Array} or {passphrase: string}; header: the blob's JSON.
async function deriveFor(secret, header) {
  const salt = e2e.unb64(header.salt);
  if (header.kdf === "recovery-key") {
    if (!secret.recoveryKey) throw new BackupError("wrong_secret", "This backup opens with a recovery key, not a passphrase.");
    return hkdfKey(secret.recoveryKey, salt);
  }
  if (header.kdf === "pbkdf2-sha256") {
    if (secret.passphrase === undefined) throw new BackupError("wrong_secret", "This backup opens with a passphrase, not a recovery key.");
    return hkdfKey(await passphraseBits(secret.passphrase, salt, header.iterations), salt);
  }
  throw new BackupError("unknown_format", "This key backup was made in a format this page does not know.");
}

function parseBlob(backup) {
  let header;
  try {
    header = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(e2e.unb64(backup)));
  } catch {
    throw new BackupError("unknown_format", "The stored key backup is not readable by this page.");
  }
  if (!header || header.v !== 1 || typeof header.salt !== "string" || typeof header.data !== "string") {
    throw new BackupError("unknown_format", "This key backup was made in a format this page does not know.");
  }
  return header;
}

async function openWith(key, header, wrongMessage) {
  let plain;
  try {
    plain = await e2e.openText(key, header.data);
  } catch {
    throw new BackupError("wrong_secret", wrongMessage);
  }
  const body = JSON.parse(plain);
  return { channels: body.channels || {}, directory: body.directory ?? null };
}

async function sealWith(record, keys) {
  const header = { v: 1, kdf: record.kdf, salt: record.salt };
  if (record.kdf === "pbkdf2-sha256") header.iterations = record.iterations;
  header.data = await e2e.seal(record.key, JSON.stringify({ channels: keys.channels, directory: keys.directory }));
  return e2e.b64(encoder.encode(JSON.stringify(header)));
}

function wrongMessage(kdf) {
  return kdf === "recovery-key"
    ? "Wrong recovery key: it does not open your key backup. Check it and try again."
    : "Wrong passphrase: it does not open your key backup. Check it and try again.";
}

// Union per channel and key version; `a` wins where both hold one (they are the same key).
export function mergeKeys(a, b) {
  const channels = {};
  for (const source of [b, a]) {
    for (const [id, versions] of Object.entries(source.channels || {})) {
      channels[id] = { ...(channels[id] || {}), ...versions };
    }
  }
  return { channels, directory: a.directory || b.directory || null };
}

function holdsAll(have, wanted) {
  if (wanted.directory && !have.directory) return false;
  for (const [id, versions] of Object.entries(wanted.channels)) {
    for (const version of Object.keys(versions)) if (!have.channels[id]?.[version]) return false;
  }
  return true;
}

// The one commitment function of the page (crypto.js), under the name restore uses.
export const keyCommitment = (raw) => e2e.commitment(raw);

// Open a blob with the text the user typed (a recovery key or a passphrase, as the blob
// says): its keys, and the record (backup key and salt) to keep for later writes.
export async function openBlob(backup, text) {
  const header = parseBlob(backup);
  const secret = header.kdf === "recovery-key" ? { recoveryKey: parseRecoveryKey(text) } : { passphrase: String(text) };
  const key = await deriveFor(secret, header);
  const keys = await openWith(key, header, wrongMessage(header.kdf));
  return { keys, record: { key, kdf: header.kdf, salt: header.salt, iterations: header.iterations } };
}

async function newRecord(secret, iterations = PBKDF2_ITERATIONS) {
  const salt = e2e.b64(globalThis.crypto.getRandomValues(new Uint8Array(16)));
  const header = secret.recoveryKey ? { kdf: "recovery-key", salt } : { kdf: "pbkdf2-sha256", salt, iterations };
  return { ...header, key: await deriveFor(secret, header) };
}

// A new blob of `keys` under a fresh salt (secret: {recoveryKey} or {passphrase}).
export async function makeBlob(keys, secret) {
  return sealWith(await newRecord(secret), keys);
}

// ---- this page's keys ----

function recordName(client) {
  return `backup:${client.me.id}`;
}

async function rawOf(client, envelope) {
  const key = await e2e.unwrapEnvelope(client.device.privateKey, envelope.sender_public_key, envelope.envelope, true);
  return e2e.b64(new Uint8Array(await subtle.exportKey("raw", key)));
}

async function localKeys(client) {
  const channels = {};
  for (const ch of client.channels.values()) {
    // Every version held (a rotated room's older keys read its older history).
    const held = new Map([...ring.versionsOf(ch)].map(([version, entry]) => [version, entry.envelope]));
    if (ch.envelope && !held.has(ch.keyVersion || ch.key_version || 1)) held.set(ch.keyVersion || ch.key_version || 1, ch.envelope);
    for (const [version, envelope] of held) {
      if (!envelope) continue;
      try {
        (channels[ch.id] ||= {})[String(version)] = await rawOf(client, envelope);
      } catch {
        // An envelope this device cannot open holds nothing to back up.
      }
    }
  }
  let directory = null;
  if (client.dirEnvelope) {
    try {
      directory = await rawOf(client, client.dirEnvelope);
    } catch {
      directory = null;
    }
  }
  return { channels, directory };
}

async function readBackup(client) {
  try {
    return await client.api.get("/keys/backup");
  } catch (error) {
    if (error instanceof ApiError && error.status === 404) return null;
    throw error;
  }
}

function putBackup(client, backup, version) {
  return client.api.request("PUT", "/keys/backup", { body: { backup, version } });
}

// ---- keeping the backup up to date ----

const states = new WeakMap();

function stateOf(client) {
  let state = states.get(client);
  if (!state) {
    state = { chain: Promise.resolve(), timer: null, attached: false, version: null, kdf: null, error: null, listeners: new Set() };
    states.set(client, state);
  }
  return state;
}

function changed(client) {
  const state = stateOf(client);
  for (const handler of [...state.listeners]) handler(backupStatus(client));
}

// What the page shows: {on, kdf, version, error}.
export function backupStatus(client = currentClient()) {
  const state = stateOf(client);
  return { on: Boolean(state.kdf), kdf: state.kdf, version: state.version, error: state.error };
}

export function onBackupStatus(client, handler) {
  const state = stateOf(client);
  state.listeners.add(handler);
  return () => state.listeners.delete(handler);
}

// Called once the client has started: from then on every new key goes into the backup
// (when this browser holds a backup key for the account).
export async function attachBackup(client) {
  const state = stateOf(client);
  if (!state.attached) {
    state.attached = true;
    client.on("keys", () => scheduleSync(client));
    client.on("ended", () => clearTimeout(state.timer));
  }
  const record = await store.get(recordName(client));
  state.kdf = record ? record.kdf : null;
  changed(client);
  if (record) scheduleSync(client);
  // A page missing keys: its banner offers a restore when the account has a backup.
  if (!record && client.keysMissing && !state.offersRestore && (await readBackup(client))) {
    state.offersRestore = true;
    client.on("restore-requested", () => openRestore(client));
    client.emit("keys"); // the banner redraws with its restore button
  }
}

function scheduleSync(client) {
  const state = stateOf(client);
  clearTimeout(state.timer);
  state.timer = setTimeout(() => {
    syncNow(client).catch(() => {});
  }, SYNC_DELAY_MS);
}

// Write what this page holds into the backup now (after any write already under way);
// resolves with the backup's version, or null when this browser has no backup key.
export function syncNow(client = currentClient()) {
  const state = stateOf(client);
  const run = state.chain.then(() => writeBackup(client));
  state.chain = run.catch(() => {});
  return run;
}

async function writeBackup(client) {
  const state = stateOf(client);
  const record = await store.get(recordName(client));
  if (!record || client.ended) return null;
  try {
    const local = await localKeys(client);
    for (let round = 0; round < MAX_ROUNDS; round++) {
      const current = await readBackup(client);
      let remote = { channels: {}, directory: null };
      if (current) {
        const header = parseBlob(current.backup);
        if (header.kdf !== record.kdf || header.salt !== record.salt) {
          // Set up again elsewhere with another secret: this browser's key cannot open it.
          await forget(client);
          throw new BackupError(
            "replaced",
            "Your key backup was set up again on another device. Restore from its recovery key or passphrase here to keep this browser's keys in it.",
          );
        }
        remote = await openWith(record.key, header, wrongMessage(header.kdf));
      }
      const merged = mergeKeys(remote, local);
      if (current && holdsAll(remote, local)) {
        state.version = current.version;
        state.error = null;
        changed(client);
        return current.version;
      }
      try {
        const answer = await putBackup(client, await sealWith(record, merged), current ? current.version : 0);
        state.version = answer.version;
        state.error = null;
        changed(client);
        return answer.version;
      } catch (error) {
        // Another device wrote first: read its version, merge, write again.
        if (error instanceof ApiError && error.status === 409 && error.code === "backup_conflict") continue;
        throw error;
      }
    }
    throw new BackupError("busy", "The key backup kept changing while this page wrote to it; it will try again with the next key.");
  } catch (error) {
    if (client.guard?.(error)) return null;
    // Rate limited: try again when the server says, with whatever keys have come by then.
    if (error instanceof ApiError && error.status === 429) {
      clearTimeout(state.timer);
      state.timer = setTimeout(() => syncNow(client).catch(() => {}), (error.retryAfter || 5) * 1000);
    }
    state.error = error.friendly || error.message;
    changed(client);
    if (error instanceof BackupError && error.code === "replaced") client.notice(error.message);
    throw error;
  }
}

async function forget(client) {
  await store.delete(recordName(client));
  const state = stateOf(client);
  state.kdf = null;
  state.version = null;
  changed(client);
}

// Turn this browser's backup off (the stored backup stays for other devices), or delete
// the stored backup for every device with `everywhere`.
export async function turnOff(client = currentClient(), { everywhere = false } = {}) {
  if (everywhere) await client.api.request("DELETE", "/keys/backup");
  await forget(client);
}

// ---- setting it up ----

// secret: {recoveryKey: Uint8Array} or {passphrase}. When a backup exists already and
// this secret opens it, this page's keys join it; when it does not, the backup is replaced
// only with `replace` (the keys that only it holds are lost), else a BackupError "exists".
export async function setUpBackup(client, secret, { replace = false } = {}) {
  if (secret.passphrase !== undefined) {
    const problem = passphraseProblem(secret.passphrase);
    if (problem) throw new BackupError("weak_passphrase", problem);
  }
  const state = stateOf(client);
  const local = await localKeys(client);
  for (let round = 0; round < MAX_ROUNDS; round++) {
    const current = await readBackup(client);
    let record = null;
    let remote = { channels: {}, directory: null };
    if (current) {
      const header = parseBlob(current.backup);
      try {
        const key = await deriveFor(secret, header);
        remote = await openWith(key, header, wrongMessage(header.kdf));
        record = { key, kdf: header.kdf, salt: header.salt, iterations: header.iterations };
      } catch (error) {
        if (!(error instanceof BackupError && error.code === "wrong_secret")) throw error;
        if (!replace) {
          throw new BackupError(
            "exists",
            "Your account already has a key backup, made with another recovery key or passphrase. Restore from it, or replace it (keys that only it holds are then lost).",
          );
        }
      }
    }
    if (!record) record = await newRecord(secret);
    try {
      const answer = await putBackup(client, await sealWith(record, mergeKeys(remote, local)), current ? current.version : 0);
      await store.put(recordName(client), record);
      state.kdf = record.kdf;
      state.version = answer.version;
      state.error = null;
      changed(client);
      await attachBackup(client);
      return answer.version;
    } catch (error) {
      if (error instanceof ApiError && error.status === 409 && error.code === "backup_conflict") continue;
      throw error;
    }
  }
  throw new BackupError("busy", "The key backup kept changing while this page wrote to it. Try again.");
}

// ---- restoring ----

// `text` is the recovery key or the passphrase, whichever the stored backup was made
// with. Installs every key that fits and keeps the backup key, so this browser adds its
// own keys from now on. Resolves with {channels, directory, skipped}.
export async function restoreBackup(client, text) {
  const current = await readBackup(client);
  if (!current) throw new BackupError("no_backup", "There is no key backup for your account yet: set one up on a device that holds your keys.");
  const { keys, record } = await openBlob(current.backup, text);
  await store.put(recordName(client), record);
  const installed = await installKeys(client, keys);
  const state = stateOf(client);
  state.version = current.version;
  await attachBackup(client);
  return installed;
}

// A copy of `raw` sealed by this device for itself: what acceptChannelEnvelope and
// acceptDirectoryEnvelope take, so a restored key is stored and used like any other.
async function selfEnvelope(client, raw) {
  const key = await subtle.importKey("raw", raw, { name: "AES-GCM" }, true, ["encrypt", "decrypt"]);
  return {
    device_id: client.me.deviceId,
    sender_device_id: client.me.deviceId,
    sender_public_key: client.me.publicKey,
    envelope: await e2e.wrapFor(client.device.privateKey, client.me.publicKey, key),
    created_at: new Date().toISOString(),
  };
}

async function opens(raw, sealed) {
  try {
    const key = await subtle.importKey("raw", raw, { name: "AES-GCM" }, false, ["decrypt"]);
    await e2e.open(key, sealed);
    return true;
  } catch {
    return false;
  }
}

// A key fits a channel when it matches the channel's commitment; a channel without one
// (made before commitments) takes a key only if it opens the channel's name.
async function fitsChannel(raw, row) {
  if (row.key_commitment) return (await keyCommitment(raw)) === row.key_commitment;
  return opens(raw, row.name_enc);
}

async function fitsDirectory(client, raw) {
  let info = null;
  try {
    info = await client.api.get("/server/info");
  } catch {
    info = null;
  }
  if (info && info.directory_key_commitment) return (await keyCommitment(raw)) === info.directory_key_commitment;
  const rows = client.profileRows || [];
  if (!rows.length) return true;
  for (const row of rows) if (await opens(raw, row.name_enc)) return true;
  return false;
}

async function installKeys(client, keys) {
  const { channels: rows } = await client.api.channels();
  let channels = 0;
  let skipped = 0;
  let older = 0;
  for (const row of rows) {
    const ch = client.channels.get(row.id);
    const versions = keys.channels[row.id];
    if (!ch || !versions) continue;
    const current = row.key_version || ch.key_version || 1;
    // Old backups hold one key per channel, version 1; newer ones every version held.
    for (const [version, stored] of ring.backupVersions(versions)) {
      if (version > current || ring.keyFor(ch, version)) continue;
      let raw;
      try {
        raw = e2e.unb64(stored);
      } catch {
        raw = null;
      }
      if (version < current) {
        // An older version of a rotated room's key: the server keeps no commitment for
        // it, and this blob is the user's own (sealed with their secret): taken as it is.
        if (!raw || raw.length !== 32) continue;
        const envelope = { ...(await selfEnvelope(client, raw)), key_version: version };
        const key = await e2e.unwrapEnvelope(client.device.privateKey, envelope.sender_public_key, envelope.envelope);
        await rotation.held(client, ch, version, { key, envelope, commitment: await keyCommitment(raw) });
        older += 1;
        continue;
      }
      if (!raw || raw.length !== 32 || !(await fitsChannel(raw, row))) {
        console.warn("dialtone: a key in the backup does not fit its channel and was not used");
        skipped += 1;
        continue;
      }
      await client.acceptChannelEnvelope(ch, await selfEnvelope(client, raw));
      channels += 1;
    }
  }
  let directory = false;
  if (!client.dirKey && keys.directory) {
    const raw = e2e.unb64(keys.directory);
    if (raw.length === 32 && (await fitsDirectory(client, raw))) {
      directory = await client.acceptDirectoryEnvelope(await selfEnvelope(client, raw));
      if (directory) {
        clearTimeout(client.dirTimer);
        client.dirTimer = null;
        await client.directoryReady();
      }
    } else {
      console.warn("dialtone: the directory key in the backup does not fit and was not used");
      skipped += 1;
    }
  }
  client.emit("channels");
  // Messages of older versions whose keys just came: read them again.
  if (older) {
    for (const ch of client.channels.values()) {
      if (!ch.loaded) continue;
      for (const m of ch.messages) if (m.text == null) await client.decryptMessage(ch, m);
    }
  }
  client.emit("messages", null);
  return { channels, directory, skipped, older };
}

// For a banner or a link elsewhere in the page: open the restore form.
export function openRestore(client = currentClient()) {
  if (client) stateOf(client).wantRestore = true;
  location.hash = "#/restore";
}
