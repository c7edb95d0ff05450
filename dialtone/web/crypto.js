// The clients' end-to-end scheme in WebCrypto, byte-compatible with the other clients:
//   device keys   X25519; the public key travels as standard base64 of its 32 raw bytes
//   pairwise key  HKDF-SHA256(X25519 shared secret, no salt, info "dialtone-e2e-v1")
//   sealing       AES-256-GCM, random 12-byte nonce, base64(nonce || ciphertext || tag)
//   envelopes     a 32-byte channel or directory key sealed with a pairwise key
//
// What cannot be read by script: the device's private key is generated non-extractable
// and only ever used through deriveBits. Channel and directory keys are unwrapped
// straight into non-extractable AES keys (unwrapKey: their bytes never reach
// JavaScript). Re-wrapping a key for a new device needs it extractable for a moment:
// the envelope addressed to this device is unwrapped again as extractable, wrapped with
// wrapKey for the newcomer and dropped. A script injected into the page can therefore
// *use* the keys while it runs (as it could read the decrypted page), but it can never
// copy the device key out to use it elsewhere.

const subtle = globalThis.crypto.subtle;
const INFO = new TextEncoder().encode("dialtone-e2e-v1");
const NONCE_BYTES = 12;
const AES = { name: "AES-GCM", length: 256 };
const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: true });

export function b64(bytes) {
  const view = bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes);
  let binary = "";
  for (let i = 0; i < view.length; i += 0x8000) {
    binary += String.fromCharCode(...view.subarray(i, i + 0x8000));
  }
  return btoa(binary);
}

export function unb64(text) {
  if (typeof text !== "string" || !/^[A-Za-z0-9+/]*={0,2}$/.test(text) || text.length % 4 !== 0) {
    throw new TypeError("not standard base64");
  }
  const binary = atob(text);
  const out = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) out[i] = binary.charCodeAt(i);
  return out;
}

function concat(a, b) {
  const out = new Uint8Array(a.length + b.length);
  out.set(a, 0);
  out.set(b, a.length);
  return out;
}

// A new device key pair: the private half can be used but never exported.
export async function generateDeviceKey() {
  const pair = await subtle.generateKey({ name: "X25519" }, false, ["deriveBits"]);
  const raw = new Uint8Array(await subtle.exportKey("raw", pair.publicKey));
  return { privateKey: pair.privateKey, publicB64: b64(raw) };
}

// The pairwise AES key between our device and a peer device, usable only as asked.
export async function pairwiseKey(privateKey, peerPublicB64, usages) {
  const raw = unb64(peerPublicB64);
  if (raw.length !== 32) throw new TypeError("an X25519 public key is 32 bytes");
  const peer = await subtle.importKey("raw", raw, { name: "X25519" }, true, []);
  const shared = await subtle.deriveBits({ name: "X25519", public: peer }, privateKey, 256);
  const material = await subtle.importKey("raw", shared, "HKDF", false, ["deriveKey"]);
  return subtle.deriveKey(
    { name: "HKDF", hash: "SHA-256", salt: new Uint8Array(0), info: INFO },
    material,
    AES,
    false,
    usages,
  );
}

export async function seal(key, plaintext) {
  const nonce = globalThis.crypto.getRandomValues(new Uint8Array(NONCE_BYTES));
  const data = typeof plaintext === "string" ? encoder.encode(plaintext) : plaintext;
  const sealed = new Uint8Array(await subtle.encrypt({ name: "AES-GCM", iv: nonce }, key, data));
  return b64(concat(nonce, sealed));
}

export async function open(key, sealedB64) {
  const raw = unb64(sealedB64);
  if (raw.length < NONCE_BYTES + 16) throw new TypeError("sealed value too short");
  const plain = await subtle.decrypt(
    { name: "AES-GCM", iv: raw.subarray(0, NONCE_BYTES) },
    key,
    raw.subarray(NONCE_BYTES),
  );
  return new Uint8Array(plain);
}

export async function openText(key, sealedB64) {
  return decoder.decode(await open(key, sealedB64));
}

// A fresh channel or directory key, extractable only so that it can be wrapped for the
// devices right after; callers keep the non-extractable copy from unwrapEnvelope.
export function newSharedKey() {
  return subtle.generateKey(AES, true, ["encrypt", "decrypt"]);
}

// Seal `key` (an extractable AES key) for a recipient device: the envelope.
export async function wrapFor(privateKey, recipientPublicB64, key) {
  const pairwise = await pairwiseKey(privateKey, recipientPublicB64, ["wrapKey"]);
  const nonce = globalThis.crypto.getRandomValues(new Uint8Array(NONCE_BYTES));
  const wrapped = new Uint8Array(await subtle.wrapKey("raw", key, pairwise, { name: "AES-GCM", iv: nonce }));
  return b64(concat(nonce, wrapped));
}

// Open an envelope addressed to our device into an AES key (non-extractable unless asked).
export async function unwrapEnvelope(privateKey, senderPublicB64, envelopeB64, extractable = false) {
  const pairwise = await pairwiseKey(privateKey, senderPublicB64, ["unwrapKey"]);
  const raw = unb64(envelopeB64);
  if (raw.length !== NONCE_BYTES + 32 + 16) throw new TypeError("an envelope holds a 32-byte key");
  return subtle.unwrapKey(
    "raw",
    raw.subarray(NONCE_BYTES),
    pairwise,
    { name: "AES-GCM", iv: raw.subarray(0, NONCE_BYTES) },
    AES,
    extractable,
    ["encrypt", "decrypt"],
  );
}

// A key's commitment: standard base64 of HMAC-SHA256(key = the 32 key bytes, message =
// "dialtone-key-commitment-v1"). The server stores it with the channel (or for the
// directory); a key handed on by any member is accepted only when it matches, so a
// member cannot slip a key of their own to a newcomer, and the server cannot forge one.
const COMMITMENT_LABEL = encoder.encode("dialtone-key-commitment-v1");
const HMAC = { name: "HMAC", hash: "SHA-256", length: 256 };

async function macOf(hmacKey) {
  return b64(await subtle.sign("HMAC", hmacKey, COMMITMENT_LABEL));
}

// The commitment of a key we hold as bytes or as an extractable AES key (a fresh one).
export async function commitment(key) {
  const raw = key instanceof Uint8Array ? key : new Uint8Array(await subtle.exportKey("raw", key));
  if (raw.length !== 32) throw new TypeError("a shared key is 32 bytes");
  return macOf(await subtle.importKey("raw", raw, HMAC, false, ["sign"]));
}

// The commitment of the key inside an envelope addressed to our device, computed without
// its bytes ever reaching JavaScript: the envelope is unwrapped straight into an HMAC key.
export async function envelopeCommitment(privateKey, senderPublicB64, envelopeB64) {
  const pairwise = await pairwiseKey(privateKey, senderPublicB64, ["unwrapKey"]);
  const raw = unb64(envelopeB64);
  if (raw.length !== NONCE_BYTES + 32 + 16) throw new TypeError("an envelope holds a 32-byte key");
  const mac = await subtle.unwrapKey(
    "raw",
    raw.subarray(NONCE_BYTES),
    pairwise,
    { name: "AES-GCM", iv: raw.subarray(0, NONCE_BYTES) },
    HMAC,
    false,
    ["sign"],
  );
  return macOf(mac);
}
