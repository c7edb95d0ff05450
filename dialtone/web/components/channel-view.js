// One channel: its messages (older ones load when scrolled to the top), the composer, the
// admin actions, and a slot where the voice panel (<dt-voice-panel channel-id>) sits.
import { currentClient, LOCKED_REASON } from "../client.js";
import { attachmentsView, channelAvatar, channelImageButton, ComposerFiles } from "./attachments.js";
import { dayOf, h, timeOf } from "./dom.js";
import { roomActions, roomMark } from "./members.js";
import { withoutBlocked } from "../rooms.js";

export class DtChannelView extends HTMLElement {
  static get observedAttributes() {
    return ["channel-id"];
  }

  connectedCallback() {
    this.client = currentClient();
    this.nodes = new Map();
    this.offs = [
      this.client.on("messages", (id) => { if (id === null || id === this.channelId) this.renderMessages(); }),
      this.client.on("channels", () => this.renderHeader()),
      this.client.on("server", () => this.renderMessages()),
      this.client.on("members", (id) => { if (id === this.channelId) this.renderHeader(); }),
    ];
    this.onVisible = () => { if (document.visibilityState === "visible") this.client.openChannel(this.channelId); };
    document.addEventListener("visibilitychange", this.onVisible);
    this.build();
  }

  disconnectedCallback() {
    for (const off of this.offs || []) off();
    document.removeEventListener("visibilitychange", this.onVisible);
    this.observer?.disconnect();
  }

  attributeChangedCallback() {
    if (this.client) this.build();
  }

  get channelId() {
    return this.getAttribute("channel-id");
  }

  build() {
    this.nodes = new Map();
    this.observer?.disconnect();
    this.heading = h("h2", { id: "channel-title" });
    this.actions = h("div", { class: "actions" });
    this.older = h("button", { type: "button", class: "older link", onclick: () => this.loadOlder() }, "Load older messages");
    this.list = h("ol", { class: "messages" });
    this.scroller = h("div", { class: "scroller", role: "log", "aria-labelledby": "channel-title", tabindex: "0" }, this.older, this.list);
    this.input = h("textarea", { id: "composer-input", rows: 1, maxlength: 12000, placeholder: "Write a message", "aria-label": "Message", enterkeyhint: "send",
      onkeydown: (e) => { if (e.key === "Enter" && !e.shiftKey && !e.isComposing) { e.preventDefault(); this.form.requestSubmit(); } } });
    this.sendButton = h("button", { type: "submit", class: "primary" }, "Send");
    this.form = h("form", { class: "composer", onsubmit: (e) => this.send(e) }, this.input, this.sendButton);
    // Files: attach button, drag and drop, paste (attachments.js).
    this.attach = new ComposerFiles(this);
    this.form.prepend(this.attach.button);
    this.avatar = h("span", { class: "avatar-slot" });
    // Why the composer is disabled, while this channel's key has not reached the device.
    this.lockReason = h("p", { class: "lock-reason", id: "composer-locked", hidden: true }, LOCKED_REASON);
    this.error = h("p", { class: "form-error", role: "alert" });
    // The voice helper's panel goes here; it upgrades whenever its module is loaded.
    this.voiceSlot = h("div", { class: "voice-slot" }, h("dt-voice-panel", { "channel-id": this.channelId }));
    this.replaceChildren(
      h("header", { class: "channel-head" }, this.avatar, this.heading, this.actions),
      this.voiceSlot,
      this.scroller,
      this.error,
      this.lockReason,
      this.attach.tray,
      this.form,
    );
    this.observer = new IntersectionObserver((entries) => {
      if (entries.some((e) => e.isIntersecting)) this.loadOlder();
    }, { root: this.scroller });
    this.observer.observe(this.older);
    this.renderHeader();
    this.client.openChannel(this.channelId).then(() => this.renderMessages());
    this.renderMessages();
    this.input.focus();
  }

  loadOlder() {
    const ch = this.client.channels.get(this.channelId);
    if (ch && ch.loaded && !ch.complete) this.client.loadOlder(this.channelId).catch(() => {});
  }

  renderHeader() {
    const ch = this.client.channels.get(this.channelId);
    if (!ch) {
      this.heading.textContent = "This channel was deleted.";
      this.actions.replaceChildren();
      this.form.hidden = true;
      return;
    }
    const name = this.client.channelName(ch);
    this.heading.textContent = `${roomMark(ch)} ${name}`;
    if (this.avatar.dataset.fileId !== String(ch.image_file_id && ch.key ? ch.image_file_id : "")) {
      this.avatar.dataset.fileId = ch.image_file_id && ch.key ? ch.image_file_id : "";
      this.avatar.replaceChildren(channelAvatar(this.client, ch) || "");
    }
    const locked = !ch.key;
    if (this.input.disabled !== locked) {
      this.input.disabled = locked;
      this.sendButton.disabled = locked;
      this.attach.button.disabled = locked;
      this.lockReason.hidden = !locked;
      this.input.placeholder = locked ? "Locked until this channel's key arrives" : "Write a message";
      if (locked) this.input.setAttribute("aria-describedby", "composer-locked");
      else {
        this.input.removeAttribute("aria-describedby");
        if (!document.activeElement || document.activeElement === document.body) this.input.focus();
      }
    }
    document.title = `${ch.direct ? "@" : "#"}${name} · Dialtone`;
    const admin = this.client.canManageChannels;
    this.actions.replaceChildren(...roomActions(this.client, ch), ...(admin && !ch.direct ? [
      ...channelImageButton(this.client, ch, (text) => { this.error.textContent = text; }),
      h("button", { type: "button", onclick: () => this.rename(), "aria-label": `Rename channel ${name}` }, "Rename"),
      h("button", { type: "button", class: "danger", onclick: () => this.remove(), "aria-label": `Delete channel ${name}` }, "Delete"),
    ] : []));
  }

  nodeFor(m) {
    let li = this.nodes.get(m.id);
    const who = this.client.profiles.get(m.sender) || m.senderName || this.client.nameOf(m.sender);
    const text = m.text ?? (m.unreadable ? "🔒 This message cannot be decrypted on this device." : "🔒 Waiting for the channel key…");
    const signature = [who, text, m.status, m.error, this.client.server.moderation, this.client.isStaff, m.files?.map((f) => f.id)].join("\u0000");
    if (li && li.dataset.signature === signature) return li;
    const state = m.status === "pending" ? h("span", { class: "state" }, "Sending…")
      : m.status === "failed" ? h("span", { class: "state failed" }, m.error || "Not sent.", " ",
          h("button", { type: "button", class: "link", onclick: () => this.client.retry(this.channelId, m.id) }, "Retry"))
      : null;
    const mayDelete = !m.local && this.client.server.moderation && (m.sender === this.client.me.id || this.client.isStaff);
    const remove = mayDelete
      ? h("button", { type: "button", class: "link delete-msg", "aria-label": `Delete message from ${who}`,
          onclick: () => this.client.deleteMessage(this.channelId, m.id).catch(() => {}) }, "Delete")
      : null;
    const fresh = h("li", { class: `msg ${m.status}${m.sender === this.client.me.id ? " mine" : ""}${m.text === null ? " locked" : ""}`, "data-id": m.id, "data-status": m.status },
      h("div", { class: "meta" }, h("span", { class: "who" }, who), " ", h("time", { datetime: m.sent_at, title: new Date(m.sent_at).toLocaleString() }, timeOf(m.sent_at)), remove),
      text || !m.files?.length ? h("p", { class: "text" }, text) : null,
      m.files?.length ? attachmentsView(this.client, m) : null,
      state);
    fresh.dataset.signature = signature;
    if (li) li.replaceWith(fresh);
    this.nodes.set(m.id, fresh);
    return fresh;
  }

  renderMessages() {
    const ch = this.client.channels.get(this.channelId);
    if (!ch) return;
    const s = this.scroller;
    const atBottom = s.scrollHeight - s.scrollTop - s.clientHeight < 40;
    const fromBottom = s.scrollHeight - s.scrollTop;
    const firstBefore = this.list.firstElementChild;
    const items = [];
    let day = null;
    const keep = new Set();
    // Messages of people this user blocked are not shown.
    for (const m of withoutBlocked(ch.messages, this.client.rooms.blocked)) {
      const d = dayOf(m.sent_at);
      if (d !== day) {
        day = d;
        items.push(h("li", { class: "day", role: "separator" }, d));
      }
      items.push(this.nodeFor(m));
      keep.add(m.id);
    }
    for (const id of [...this.nodes.keys()]) if (!keep.has(id)) this.nodes.delete(id);
    this.list.replaceChildren(...items);
    this.older.hidden = !ch.loaded || ch.complete;
    if (!ch.messages.length && ch.loaded) this.list.append(h("li", { class: "empty" }, "No messages yet. Say hello!"));
    if (atBottom) s.scrollTop = s.scrollHeight;
    else if (firstBefore && this.list.firstElementChild !== firstBefore) s.scrollTop = s.scrollHeight - fromBottom;
  }

  async send(event) {
    event.preventDefault();
    const text = this.input.value;
    if (!text.trim() && !this.attach.count) return;
    if (this.attach.busy) return;
    this.error.textContent = "";
    try {
      if (this.attach.count) await this.attach.send(text);
      else await this.client.sendMessage(this.channelId, text);
      this.input.value = "";
      this.scroller.scrollTop = this.scroller.scrollHeight;
    } catch (e) {
      this.error.textContent = e.friendly || e.message;
    }
  }

  async rename() {
    const ch = this.client.channels.get(this.channelId);
    const dialog = h("dialog", { class: "card", "aria-labelledby": "rename-title" });
    const form = h("form", { method: "dialog" },
      h("h2", { id: "rename-title" }, "Rename channel"),
      h("label", { for: "rename-input" }, "New name"),
      h("input", { id: "rename-input", name: "name", required: true, maxlength: 80, value: ch?.name || "" }),
      h("div", { class: "row" },
        h("button", { type: "submit", value: "ok", class: "primary" }, "Rename"),
        h("button", { type: "submit", value: "cancel", formnovalidate: true }, "Cancel")));
    dialog.append(form);
    this.append(dialog);
    dialog.addEventListener("close", async () => {
      const name = form.elements.name.value;
      dialog.remove();
      if (dialog.returnValue !== "ok") return;
      try {
        await this.client.renameChannel(this.channelId, name);
      } catch (e) {
        this.error.textContent = e.friendly || e.message;
      }
    });
    dialog.showModal();
  }

  async remove() {
    const ch = this.client.channels.get(this.channelId);
    const dialog = h("dialog", { class: "card", "aria-labelledby": "delete-title" });
    dialog.append(h("form", { method: "dialog" },
      h("h2", { id: "delete-title" }, `Delete #${this.client.channelName(ch)}?`),
      h("p", {}, "Its messages and keys are deleted for everyone."),
      h("div", { class: "row" },
        h("button", { type: "submit", value: "ok", class: "danger" }, "Delete"),
        h("button", { type: "submit", value: "cancel" }, "Cancel"))));
    this.append(dialog);
    dialog.addEventListener("close", async () => {
      dialog.remove();
      if (dialog.returnValue !== "ok") return;
      try {
        await this.client.deleteChannel(this.channelId);
        location.hash = "#/";
      } catch (e) {
        this.error.textContent = e.friendly || e.message;
      }
    });
    dialog.showModal();
  }
}
customElements.define("dt-channel-view", DtChannelView);
