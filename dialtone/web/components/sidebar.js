// Channels (with unread counts and who is in their voice room) and people (with presence)
// in the side panel.
import { currentClient } from "../client.js";
import { voicePresenceFor } from "../voice.js";
import { channelAvatar } from "./attachments.js";
import { h } from "./dom.js";
import { roomMark } from "./members.js";
import { directButton, personName } from "./people.js";

export class DtSidebar extends HTMLElement {
  connectedCallback() {
    this.client = currentClient();
    this.offs = [
      this.client.on("channels", () => this.render()),
      this.client.on("people", () => {
        this.renderPeople();
        this.render(); // names of people in voice
      }),
    ];
    // Voice presence (voice.presence / voice.presence.snapshot events) for every channel.
    this.voice = voicePresenceFor(this.client.socket);
    this.onVoice = () => this.render();
    this.voice.addEventListener("change", this.onVoice);
    this.channelsList = h("ul", { class: "channel-list", "aria-label": "Channels" });
    this.peopleList = h("ul", { class: "people", "aria-label": "People" });
    // Channel creation for admins, private rooms for everyone (the server may restrict
    // them by its private_rooms setting); it follows when an admin changes our roles.
    this.createSlot = h("div", { class: "create-slot" });
    this.renderCreate();
    this.offs.push(this.client.on("role", () => {
      this.renderCreate();
      this.render();
    }));
    this.replaceChildren(
      h("nav", { "aria-label": "Channels" }, h("h2", {}, "Channels"), this.channelsList, this.createSlot),
      h("dt-direct-list"),
      h("section", { "aria-label": "People" }, h("h2", {}, "People"), this.peopleList),
    );
    this.render();
    this.renderPeople();
    this.onRoute = () => this.render();
    addEventListener("hashchange", this.onRoute);
  }

  disconnectedCallback() {
    for (const off of this.offs) off();
    this.voice.removeEventListener("change", this.onVoice);
    removeEventListener("hashchange", this.onRoute);
  }

  renderCreate() {
    const may = this.client.canManageChannels;
    if (this.createSlot.firstChild && this.createSlot.dataset.admin === String(may)) return;
    this.createSlot.dataset.admin = String(may);
    const what = may ? "channel" : "private room";
    this.createSlot.replaceChildren(h("form", { class: "new-channel", onsubmit: (e) => this.create(e) },
      h("div", { class: "new-channel-row" },
        h("label", { for: "new-channel-name", class: "sr-only" }, `New ${what} name`),
        h("input", { id: "new-channel-name", name: "name", placeholder: may ? "New channel" : "New private room", maxlength: 80, required: true }),
        h("button", { type: "submit", "aria-label": `Create ${what}` }, "+")),
      may ? h("label", { class: "notify private-toggle", for: "new-channel-private" },
        h("input", { type: "checkbox", id: "new-channel-private", name: "private" }), " Private: members only") : null));
  }

  render() {
    const active = location.hash.startsWith("#/c/") ? location.hash.slice(4) : null;
    // Direct messages have their own section (<dt-direct-list>).
    const items = [...this.client.channels.values()].filter((ch) => !ch.direct).map((ch) => {
      const name = this.client.channelName(ch);
      const talking = this.voice.users(ch.id).map((id) => this.client.nameOf(id)).sort((a, b) => a.localeCompare(b));
      let label = ch.private ? `${name}, private` : name;
      if (ch.unread) label += `, ${ch.unread} unread`;
      if (talking.length) label += `, ${talking.length} in voice`;
      return h("li", {},
        h("a", { href: `#/c/${ch.id}`, "aria-label": label, "aria-current": ch.id === active ? "page" : null, class: ch.unread ? "unread" : null },
          channelAvatar(this.client, ch, "channel-avatar small") || h("span", { class: "hash", "aria-hidden": "true", title: ch.private ? "Private room" : null }, roomMark(ch)), h("span", { class: "name" }, name),
          talking.length ? h("span", { class: "voice-count", "aria-hidden": "true", title: "In voice" }, `🔊 ${talking.length}`) : null,
          ch.unread ? h("span", { class: "badge", "aria-hidden": "true" }, String(ch.unread)) : null),
        talking.length
          ? h("ul", { class: "voice-here", "aria-label": `In voice in ${name}` }, ...talking.map((who) => h("li", {}, who)))
          : null);
    });
    if (!items.length) items.push(h("li", { class: "empty" }, this.client.canManageChannels ? "No channels yet: create one." : "No channels yet."));
    this.channelsList.replaceChildren(...items);
    const unread = [...this.client.channels.values()].reduce((n, ch) => n + ch.unread, 0);
    document.title = document.title.replace(/^\(\d+\) /, "");
    if (unread) document.title = `(${unread}) ${document.title}`;
  }

  renderPeople() {
    const ids = this.client.knownUsers().sort((a, b) => this.client.nameOf(a).localeCompare(this.client.nameOf(b)));
    this.peopleList.replaceChildren(...ids.map((id) => {
      const online = this.client.online.has(id);
      const admin = this.client.admins.has(id);
      return h("li", { class: online ? "online" : "offline", "data-user-id": id },
        h("span", { class: "dot", "aria-hidden": "true" }),
        personName(this.client, id, [this.client.nameOf(id), id === this.client.me.id ? " (you)" : ""]),
        admin ? h("span", { class: "tag" }, "admin") : null,
        h("span", { class: "sr-only" }, online ? ", online" : ", offline"),
        id === this.client.me.id ? null : directButton(this.client, id));
    }));
  }

  async create(event) {
    event.preventDefault();
    const input = event.target.elements.name;
    const button = event.target.querySelector("button");
    const toggle = event.target.elements.private;
    const isPrivate = !this.client.canManageChannels || Boolean(toggle?.checked);
    button.disabled = true;
    try {
      const ch = await this.client.createChannel(input.value, { private: isPrivate });
      input.value = "";
      if (toggle) toggle.checked = false;
      location.hash = `#/c/${ch.id}`;
    } catch (e) {
      if (!e.status) this.client.notice(e.message);
    } finally {
      button.disabled = false;
    }
  }
}
customElements.define("dt-sidebar", DtSidebar);
