// Attachments in the page (docs/WEB.md "Attachments"): the composer's files (attach
// button, drag and drop, paste) with upload progress; a message's files shown as
// thumbnails (pictures, by their decrypted bytes) or download cards; the channel image in
// the header and the side panel. The wire and the encryption are in ../files.js.
import * as files from "../files.js";
import { h } from "./dom.js";

let stylesheetAdded = false;

function addStylesheet() {
  if (stylesheetAdded || typeof document === "undefined") return;
  stylesheetAdded = true;
  const link = document.createElement("link");
  link.rel = "stylesheet";
  link.href = new URL("../files.css", import.meta.url).href;
  document.head.append(link);
}
addStylesheet();

const THUMB_WIDTH = 320;
const THUMB_HEIGHT = 240;
const AVATAR = 64;
// Pictures up to this size are fetched and shown at once; larger ones wait for a click.
const AUTO_PICTURE_BYTES = 10 * 1024 * 1024;

// ---- decrypted files, kept by id (a small cache: the page shows a channel at a time) ----

const CACHE_MAX = 150;
const opened = new Map(); // key → Promise<{ url, picture, width, height, size }>
const ready = new Map(); // key → the resolved value, for synchronous rendering

function remember(key, make) {
  let entry = opened.get(key);
  if (entry) {
    opened.delete(key); // most recently used last
    opened.set(key, entry);
    return entry;
  }
  entry = make().then(
    (value) => {
      ready.set(key, value);
      return value;
    },
    (error) => {
      opened.delete(key);
      throw error;
    },
  );
  opened.set(key, entry);
  while (opened.size > CACHE_MAX) {
    const [oldest] = opened.keys();
    opened.delete(oldest);
    const gone = ready.get(oldest);
    ready.delete(oldest);
    if (gone) URL.revokeObjectURL(gone.url);
  }
  return entry;
}

// The decrypted bytes as a Blob URL, with what the bytes are: a picture kind (by magic
// numbers only) and its size in pixels when the browser can decode it.
async function describe(plain) {
  let picture = files.sniffImage(plain);
  const blob = new Blob([plain], { type: picture || "application/octet-stream" });
  let width = 0;
  let height = 0;
  if (picture) {
    try {
      const bitmap = await createImageBitmap(blob);
      width = bitmap.width;
      height = bitmap.height;
      bitmap.close();
    } catch {
      picture = null; // the right magic number, but not a picture the browser decodes
    }
  }
  const typed = picture ? blob : new Blob([plain], { type: "application/octet-stream" });
  return { url: URL.createObjectURL(typed), picture, width, height, size: plain.length };
}

function openFile(client, file, onProgress) {
  return remember(file.id, async () => {
    const sealed = await files.downloadFile(client.api.token, file.id, { onProgress, expected: file.size + 28 });
    return describe(await files.decryptFile(file.key, sealed));
  });
}

// Our own upload: its plaintext is here already, no need to fetch it back.
function seed(fileId, plain) {
  remember(fileId, () => describe(plain)).catch(() => {});
}

// A label for the card's icon: the name's extension, as the sender named the file.
function extension(name) {
  const dot = name.lastIndexOf(".");
  const ext = dot > 0 ? name.slice(dot + 1, dot + 5).toUpperCase() : "";
  return /^[A-Z0-9]+$/.test(ext) ? ext : "FILE";
}

function save(url, name) {
  const link = h("a", { href: url, download: name, hidden: true });
  document.body.append(link);
  link.click();
  link.remove();
}

function thumbSize(width, height) {
  const scale = Math.min(1, THUMB_WIDTH / width, THUMB_HEIGHT / height);
  return [Math.max(1, Math.round(width * scale)), Math.max(1, Math.round(height * scale))];
}

function progressBar(label) {
  return h("progress", { max: 1, value: 0, "aria-label": label });
}

// ---- a message's files ----

const views = new Map(); // message id + file ids → element, kept across re-renders

export function attachmentsView(client, m) {
  const key = `${m.id}:${m.files.map((f) => f.id).join(",")}`;
  let view = views.get(key);
  if (!view) {
    view = h("div", { class: "attachments" }, ...m.files.map((f) => fileView(client, f)));
    views.set(key, view);
    if (views.size > 500) views.delete(views.keys().next().value);
  }
  return view;
}

function fileView(client, file) {
  const box = h("div", { class: "attachment" });
  const known = ready.get(file.id);
  if (known) show(client, box, file, known);
  else if (files.claimsPicture(file.type) && file.size <= AUTO_PICTURE_BYTES) loadPicture(client, box, file);
  else box.replaceChildren(card(client, file));
  return box;
}

function show(client, box, file, value) {
  box.replaceChildren(value.picture ? thumbnail(file, value) : card(client, file, value));
}

function loadPicture(client, box, file) {
  const bar = progressBar(`Downloading ${file.name}`);
  const holder = h("div", { class: "thumb-loading" }, h("span", { class: "name" }, file.name), bar);
  // Room held for the picture, from the sender's claimed size (a hint, clamped).
  if (file.width && file.height) {
    const [w, hgt] = thumbSize(file.width, file.height);
    holder.style.width = `${w}px`;
    holder.style.aspectRatio = `${w} / ${hgt}`;
  }
  box.replaceChildren(holder);
  openFile(client, file, (loaded, total) => { bar.value = total ? loaded / total : 0; })
    .then((value) => show(client, box, file, value))
    .catch((error) => box.replaceChildren(card(client, file, null, error)));
}

function thumbnail(file, value) {
  const [width, height] = thumbSize(value.width, value.height);
  const img = h("img", { src: value.url, alt: file.name, width, height, class: "thumb" });
  return h("button", { type: "button", class: "thumb-button", "aria-label": `Open picture ${file.name} full size`,
    onclick: () => viewer(file, value) }, img);
}

function viewer(file, value) {
  const dialog = h("dialog", { class: "picture-viewer", "aria-label": file.name });
  const close = () => dialog.close();
  dialog.append(
    h("div", { class: "viewer-bar" },
      h("span", { class: "name" }, file.name),
      h("span", { class: "size" }, `${value.width} × ${value.height}, ${files.formatSize(value.size)}`),
      h("button", { type: "button", onclick: () => save(value.url, file.name) }, "Download"),
      h("button", { type: "button", onclick: close }, "Close")),
    h("div", { class: "viewer-body" }, h("img", { src: value.url, alt: file.name, class: "full", width: value.width, height: value.height })),
  );
  dialog.addEventListener("close", () => dialog.remove());
  document.body.append(dialog);
  dialog.showModal();
}

// A download card: the name and size from the encrypted message; the button fetches,
// decrypts and saves under that name.
function card(client, file, value = null, failure = null) {
  const status = h("span", { class: "card-status", role: "status" }, failure ? (failure.friendly || "This file cannot be opened.") : "");
  const button = h("button", { type: "button", "aria-label": `Download ${file.name}` }, "Download");
  const node = h("div", { class: "file-card" },
    h("span", { class: "file-icon", "aria-hidden": "true" }, extension(file.name)),
    h("span", { class: "file-info" }, h("span", { class: "name" }, file.name), h("span", { class: "size" }, files.formatSize(file.size))),
    button, status);
  button.addEventListener("click", async () => {
    if (value) {
      save(value.url, file.name);
      return;
    }
    const bar = progressBar(`Downloading ${file.name}`);
    button.disabled = true;
    status.replaceChildren(bar);
    try {
      value = await openFile(client, file, (loaded, total) => { bar.value = total ? loaded / total : 0; });
      bar.value = 1;
      status.replaceChildren();
      save(value.url, file.name);
    } catch (error) {
      if (!client.guard(error)) status.textContent = error.friendly || "This file cannot be decrypted.";
    } finally {
      button.disabled = false;
    }
  });
  return node;
}

// ---- the composer's files ----

export class ComposerFiles {
  // view: the channel view (client, channelId, input, error, sendButton).
  constructor(view) {
    this.view = view;
    this.items = [];
    this.picker = h("input", { type: "file", multiple: true, hidden: true, id: "attach-input",
      onchange: () => { this.add([...this.picker.files]); this.picker.value = ""; } });
    this.button = h("button", { type: "button", class: "attach", "aria-label": "Attach files", title: "Attach files",
      onclick: () => this.picker.click() }, h("span", { class: "attach-plus", "aria-hidden": "true" }, "+"), this.picker);
    this.tray = h("ul", { class: "attach-tray", "aria-label": "Files to send", hidden: true });
    view.input.addEventListener("paste", (e) => {
      const pasted = [...(e.clipboardData?.files || [])];
      if (!pasted.length) return;
      e.preventDefault();
      this.add(pasted);
    });
    wireDrops(view);
  }

  get count() {
    return this.items.length;
  }

  add(list) {
    for (const file of list) {
      if (this.items.length >= files.MAX_ATTACHMENTS) {
        this.view.error.textContent = `At most ${files.MAX_ATTACHMENTS} files go in one message.`;
        break;
      }
      this.items.push({ file, name: files.cleanName(file.name || "pasted file"), uploaded: null });
    }
    this.render();
    this.view.input.focus();
  }

  render() {
    this.tray.hidden = !this.items.length;
    this.tray.replaceChildren(...this.items.map((item) => {
      item.bar ||= progressBar(`Uploading ${item.name}`);
      item.bar.hidden = !item.uploading && !item.uploaded;
      return h("li", {},
        h("span", { class: "name" }, item.name), " ",
        h("span", { class: "size" }, files.formatSize(item.file.size)),
        item.bar,
        h("button", { type: "button", class: "link", "aria-label": `Remove ${item.name}`, disabled: this.busy,
          onclick: () => { this.items = this.items.filter((x) => x !== item); this.render(); } }, "✕"));
    }));
  }

  // Encrypt and upload what is not uploaded yet (one at a time, each with its bar), then
  // send the message. On failure the files stay, and what was uploaded is not sent again.
  async send(text) {
    const { client, channelId } = this.view;
    const ch = client.channels.get(channelId);
    if (!ch?.key) throw new Error("This channel's key has not reached this device yet.");
    this.busy = true;
    this.view.sendButton.disabled = true;
    try {
      for (const item of this.items) {
        if (item.uploaded) continue;
        item.uploading = true;
        this.render();
        const plain = new Uint8Array(await item.file.arrayBuffer());
        const picture = files.sniffImage(plain);
        const meta = { name: item.name, type: picture || item.file.type || "application/octet-stream", size: plain.length };
        if (picture) {
          try {
            const bitmap = await createImageBitmap(new Blob([plain]));
            meta.width = bitmap.width;
            meta.height = bitmap.height;
            bitmap.close();
          } catch {
            // Not decodable: sent as a file all the same, shown as a download card.
          }
        }
        const { key, sealed } = await files.encryptFile(plain);
        const answer = await files.uploadFile(client.api.token, channelId, sealed, {
          onProgress: (loaded, total) => { item.bar.value = total ? loaded / total : 0; },
        });
        item.bar.value = 1;
        item.uploading = false;
        item.uploaded = { ...meta, id: answer.id, key };
        seed(answer.id, plain);
      }
      await client.sendMessage(channelId, text, this.items.map((item) => item.uploaded));
      this.items = [];
    } catch (error) {
      for (const item of this.items) item.uploading = false;
      if (client.guard(error)) return;
      throw error;
    } finally {
      this.busy = false;
      this.view.sendButton.disabled = false;
      this.render();
    }
  }
}

const wired = new WeakSet();

// Files dropped anywhere on the channel view go to its composer.
function wireDrops(view) {
  if (wired.has(view)) return;
  wired.add(view);
  const hasFiles = (e) => [...(e.dataTransfer?.types || [])].includes("Files");
  view.addEventListener("dragover", (e) => {
    if (!hasFiles(e) || view.input.disabled) return;
    e.preventDefault();
    view.classList.add("dropping");
  });
  view.addEventListener("dragleave", (e) => {
    if (!view.contains(e.relatedTarget)) view.classList.remove("dropping");
  });
  view.addEventListener("drop", (e) => {
    view.classList.remove("dropping");
    if (!hasFiles(e) || view.input.disabled) return;
    e.preventDefault();
    view.attach?.add([...e.dataTransfer.files]);
  });
}

// ---- the channel image ----

function openChannelImage(client, ch) {
  const fileId = ch.image_file_id;
  return remember(`channel:${ch.id}:${fileId}`, async () => {
    const sealed = await files.downloadFile(client.api.token, fileId);
    const value = await describe(await files.openWithChannelKey(ch.key, sealed));
    if (!value.picture) throw new TypeError("the channel image is not a picture");
    return value;
  });
}

// Channel images that could not be opened with the key held then: not fetched again.
const unopenable = new Set();

// The channel's picture as a small image (decorative: the name is beside it), or null.
export function channelAvatar(client, ch, className = "channel-avatar") {
  if (!ch?.image_file_id || !ch.key) return null;
  const attempt = `${ch.id}:${ch.image_file_id}:${ch.keyCommitment}`;
  if (unopenable.has(attempt)) return null;
  const img = h("img", { class: className, alt: "", width: AVATAR, height: AVATAR, "data-file-id": ch.image_file_id });
  const known = ready.get(`channel:${ch.id}:${ch.image_file_id}`);
  if (known) img.src = known.url;
  else {
    img.hidden = true;
    openChannelImage(client, ch).then((value) => {
      img.src = value.url;
      img.hidden = false;
    }).catch(() => unopenable.add(attempt));
  }
  return img;
}

// The image button for whoever may rename the channel: pick a picture (sealed with the channel's
// key, uploaded to the channel, named with PUT /channels/image), or remove it.
export function channelImageButton(client, ch, onError) {
  const picker = h("input", { type: "file", accept: "image/png,image/jpeg,image/webp,image/gif", hidden: true,
    "aria-label": "Channel image file" });
  const name = client.channelName(ch);
  const button = h("button", { type: "button", class: "set-image", "aria-label": `Set the image of channel ${name}`, title: "Channel image",
    onclick: () => picker.click() }, "Image");
  picker.addEventListener("change", async () => {
    const file = picker.files[0];
    picker.value = "";
    if (!file) return;
    button.disabled = true;
    try {
      await setChannelPicture(client, ch, new Uint8Array(await file.arrayBuffer()));
    } catch (error) {
      if (!client.guard(error)) onError(error.friendly || error.message);
    } finally {
      button.disabled = false;
    }
  });
  const remove = ch.image_file_id
    ? h("button", { type: "button", "aria-label": `Remove the image of channel ${name}`, title: "Remove the channel image", onclick: async () => {
        try {
          await files.setChannelImage(client.api, ch.id, null);
          ch.image_file_id = null;
          client.emit("channels");
        } catch (error) {
          if (!client.guard(error)) onError(error.friendly || error.message);
        }
      } }, "No image")
    : null;
  return [button, picker, remove].filter(Boolean);
}

export async function setChannelPicture(client, ch, plain) {
  if (!files.sniffImage(plain)) throw new Error("A channel image is a PNG, JPEG, WebP or GIF picture.");
  if (!ch.key) throw new Error("This device does not hold the channel key yet.");
  const sealed = await files.sealWithChannelKey(ch.key, plain);
  const answer = await files.uploadFile(client.api.token, ch.id, sealed);
  await files.setChannelImage(client.api, ch.id, answer.id);
  remember(`channel:${ch.id}:${answer.id}`, () => describe(plain)).catch(() => {});
  ch.image_file_id = answer.id;
  client.emit("channels");
}
