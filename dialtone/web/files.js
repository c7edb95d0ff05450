// Encrypted files (docs/API.md "Files", docs/WEB.md "Attachments"): the page encrypts
// each file with a fresh random AES-256-GCM key before it leaves the browser, uploads the
// opaque bytes, and sends the key inside the encrypted message. Nothing here touches the
// DOM, so the parts without a network (encryption, sniffing, the message body) run under
// Node too (tests/web/files.test.mjs).
//
//   uploaded bytes  nonce(12) ‖ ciphertext ‖ tag(16), raw (the scheme's `seal`, on bytes)
//   message body    JSON {"v":1,"text","files":[{id,key,name,type,size,width?,height?}]}
//                   sealed as usual; the frame's `attachments` lists the same ids in order
//   channel image   the picture sealed with the channel's current key the same way

import { ApiError, describeStatus } from "./api.js";
import { b64, unb64 } from "./crypto.js";

const subtle = globalThis.crypto.subtle;
const NONCE_BYTES = 12;
const TAG_BYTES = 16;
const decoder = new TextDecoder("utf-8", { fatal: true });

// What the server takes in one message (docs/API.md, channel.message.send).
export const MAX_ATTACHMENTS = 10;

function bytesOf(data) {
  if (data instanceof Uint8Array) return data;
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  throw new TypeError("expected bytes");
}

async function sealWith(key, plain) {
  const nonce = globalThis.crypto.getRandomValues(new Uint8Array(NONCE_BYTES));
  const sealed = new Uint8Array(await subtle.encrypt({ name: "AES-GCM", iv: nonce }, key, bytesOf(plain)));
  const out = new Uint8Array(NONCE_BYTES + sealed.length);
  out.set(nonce, 0);
  out.set(sealed, NONCE_BYTES);
  return out;
}

async function openWith(key, sealed) {
  const raw = bytesOf(sealed);
  if (raw.length < NONCE_BYTES + TAG_BYTES) throw new TypeError("an encrypted file is at least 28 bytes");
  const plain = await subtle.decrypt({ name: "AES-GCM", iv: raw.subarray(0, NONCE_BYTES) }, key, raw.subarray(NONCE_BYTES));
  return new Uint8Array(plain);
}

async function fileKey(raw, usages) {
  if (!(raw instanceof Uint8Array) || raw.length !== 32) throw new TypeError("a file key is 32 bytes");
  return subtle.importKey("raw", raw, { name: "AES-GCM" }, false, usages);
}

// A file sealed under a fresh random key: { key (32 bytes), sealed (nonce‖ct‖tag) }.
export async function encryptFile(plain) {
  const key = globalThis.crypto.getRandomValues(new Uint8Array(32));
  const sealed = await sealWith(await fileKey(key, ["encrypt"]), plain);
  return { key, sealed };
}

// The plaintext of a downloaded file; throws when the bytes or the key are not the right ones.
export async function decryptFile(key, sealed) {
  return openWith(await fileKey(key, ["decrypt"]), sealed);
}

// The channel image: sealed and opened with the channel's own (non-extractable) key.
export function sealWithChannelKey(channelKey, plain) {
  return sealWith(channelKey, plain);
}

export function openWithChannelKey(channelKey, sealed) {
  return openWith(channelKey, sealed);
}

// The picture kinds the page shows inline, told by the decrypted bytes alone. The type a
// sender claims only decides whether to try; SVG, HTML and anything else is a download.
export function sniffImage(data) {
  const b = bytesOf(data);
  const at = (offset, ...values) => values.every((v, i) => b[offset + i] === v);
  if (b.length >= 8 && at(0, 0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a)) return "image/png";
  if (b.length >= 3 && at(0, 0xff, 0xd8, 0xff)) return "image/jpeg";
  if (b.length >= 6 && (at(0, 0x47, 0x49, 0x46, 0x38, 0x37, 0x61) || at(0, 0x47, 0x49, 0x46, 0x38, 0x39, 0x61))) return "image/gif";
  if (b.length >= 12 && at(0, 0x52, 0x49, 0x46, 0x46) && at(8, 0x57, 0x45, 0x42, 0x50)) return "image/webp";
  return null;
}

// Claimed types worth fetching at once to try as a picture.
export function claimsPicture(type) {
  return ["image/png", "image/jpeg", "image/webp", "image/gif"].includes(String(type).toLowerCase());
}

function positiveInt(value) {
  return Number.isSafeInteger(value) && value > 0 ? value : undefined;
}

// The plaintext of a message with attachments. `files`: [{id, key (32 bytes), name, type,
// size, width?, height?}], in the order of the frame's `attachments`.
export function buildBody(text, files) {
  if (!files.length || files.length > MAX_ATTACHMENTS) throw new RangeError(`1 to ${MAX_ATTACHMENTS} files in one message`);
  return JSON.stringify({
    v: 1,
    text: String(text),
    files: files.map((f) => {
      const entry = { id: f.id, key: b64(f.key), name: String(f.name), type: String(f.type || "application/octet-stream"), size: f.size };
      if (positiveInt(f.width) && positiveInt(f.height)) {
        entry.width = f.width;
        entry.height = f.height;
      }
      return entry;
    }),
  });
}

// Read the body of a message that has `attachments`: its text and files, each file's key
// as bytes. Throws TypeError when it is not the convention, or names other files than the
// frame's `attachments` (a sender cannot point us at someone else's upload unnoticed).
export function parseBody(plaintext, attachments) {
  const raw = typeof plaintext === "string" ? plaintext : decoder.decode(bytesOf(plaintext));
  let body;
  try {
    body = JSON.parse(raw);
  } catch {
    throw new TypeError("the body of a message with attachments is not JSON");
  }
  if (!body || typeof body !== "object" || body.v !== 1) throw new TypeError("unknown attachment body version");
  if (typeof body.text !== "string" || !Array.isArray(body.files)) throw new TypeError("attachment body without text or files");
  const ids = Array.isArray(attachments) ? attachments : [];
  if (body.files.length !== ids.length) throw new TypeError("the body lists other files than the message");
  const files = body.files.map((f, i) => {
    if (!f || typeof f !== "object" || f.id !== ids[i]) throw new TypeError("the body lists other files than the message");
    const key = unb64(f.key);
    if (key.length !== 32) throw new TypeError("a file key is 32 bytes");
    if (typeof f.name !== "string" || !Number.isSafeInteger(f.size) || f.size < 0) throw new TypeError("a file without name or size");
    const file = { id: f.id, key, name: cleanName(f.name), type: typeof f.type === "string" ? f.type : "", size: f.size };
    if (positiveInt(f.width) && positiveInt(f.height)) {
      file.width = f.width;
      file.height = f.height;
    }
    return file;
  });
  return { text: body.text, files };
}

// A name for showing and saving: no path, no control characters, not empty, not endless.
export function cleanName(name) {
  const base = String(name).split(/[\\/]/).pop().replace(/[\u0000-\u001f\u007f]/g, "").trim();
  const short = base.length > 200 ? base.slice(0, 200) : base;
  return short && short !== "." && short !== ".." ? short : "file";
}

export function formatSize(bytes) {
  if (!Number.isFinite(bytes) || bytes < 0) return "";
  if (bytes < 1024) return `${bytes} B`;
  const units = ["KiB", "MiB", "GiB"];
  let value = bytes / 1024;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${value >= 10 ? Math.round(value) : value.toFixed(1)} ${units[unit]}`;
}

function errorFrom(status, text, retryAfter) {
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  const message = data && data.error ? data.error : describeStatus(status);
  const code = data && data.code ? data.code : `http_${status}`;
  return new ApiError(status, code, message, retryAfter ? Number(retryAfter) : null);
}

// POST /files with the encrypted bytes as the body. XMLHttpRequest, because its upload
// progress events are what Chromium offers (fetch streams a request body only over
// HTTP/2). The token goes in the Authorization header, never in the URL.
export function uploadFile(token, channelId, sealed, { onProgress, signal } = {}) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", `/files?channel_id=${encodeURIComponent(channelId)}`);
    xhr.setRequestHeader("Authorization", `Bearer ${token}`);
    xhr.setRequestHeader("Content-Type", "application/octet-stream");
    xhr.upload.onprogress = (e) => {
      if (onProgress) onProgress(e.loaded, e.lengthComputable ? e.total : sealed.length);
    };
    xhr.onload = () => {
      if (xhr.status >= 200 && xhr.status < 300) {
        try {
          resolve(JSON.parse(xhr.responseText));
        } catch {
          reject(new ApiError(xhr.status, "bad_request", "The server's answer was not understood."));
        }
      } else {
        reject(errorFrom(xhr.status, xhr.responseText, xhr.getResponseHeader("Retry-After")));
      }
    };
    xhr.onerror = () => reject(new ApiError(0, "network", "Cannot reach the server. Check your connection."));
    xhr.onabort = () => reject(new ApiError(0, "aborted", "The upload was cancelled."));
    if (signal) signal.addEventListener("abort", () => xhr.abort(), { once: true });
    xhr.send(sealed);
  });
}

// GET /files/{id}: the encrypted bytes, read as a stream for the progress bar.
export async function downloadFile(token, fileId, { onProgress, expected } = {}) {
  let response;
  try {
    response = await fetch(`/files/${encodeURIComponent(fileId)}`, {
      headers: { Authorization: `Bearer ${token}` },
      credentials: "omit",
    });
  } catch {
    throw new ApiError(0, "network", "Cannot reach the server. Check your connection.");
  }
  if (!response.ok) throw errorFrom(response.status, await response.text(), response.headers.get("Retry-After"));
  const total = Number(response.headers.get("Content-Length")) || expected || 0;
  const reader = response.body.getReader();
  const chunks = [];
  let loaded = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    chunks.push(value);
    loaded += value.length;
    if (onProgress) onProgress(loaded, total);
  }
  const out = new Uint8Array(loaded);
  let at = 0;
  for (const chunk of chunks) {
    out.set(chunk, at);
    at += chunk.length;
  }
  return out;
}

// PUT /channels/image: the channel's picture (an upload to that channel), or null to clear.
export function setChannelImage(api, channelId, fileId) {
  return api.request("PUT", "/channels/image", { body: { channel_id: channelId, file_id: fileId } });
}
