// People and privacy (issue 16): the direct-message button and the person card of the
// people list, the "Direct messages" section of the side panel, and the user page's
// do-not-disturb choice and block list (<dt-privacy>).
import { mayManage, partitionChannels } from "../rooms.js";
import { currentClient } from "../client.js";
import { h } from "./dom.js";

const REFUSED = "This person does not accept direct messages from you.";

// The styles of these screens and of members.js (the page's CSP takes them as a file).
const sheet = document.createElement("link");
sheet.rel = "stylesheet";
sheet.href = new URL("../rooms.css", import.meta.url).href;
document.head.append(sheet);

// Open the DM with a person, and go there.
async function message(client, userId) {
  try {
    const ch = await client.rooms.openDirect(userId);
    location.hash = `#/c/${ch.id}`;
  } catch {
    // Said by the client's notice.
  }
}

// The direct-message button of a person in the people list: greyed out, with the reason
// as its tooltip, when GET /channels/direct says they cannot be messaged now.
export function directButton(client, userId) {
  if (client.rooms.noDirect) return null; // a server without direct messages
  const name = client.nameOf(userId);
  const known = client.rooms.knownAllowed(userId);
  const refused = known && !known.allowed && !client.rooms.existingDirect(userId);
  const button = h("button", { type: "button", class: "dm", "aria-label": `Direct message to ${name}`,
    title: refused ? REFUSED : `Direct message to ${name}`, disabled: refused,
    onclick: () => message(client, userId) }, "✉");
  // Asked when not known or older than a moment (an answer that changed redraws the list).
  client.rooms.directAllowed(userId).then((answer) => {
    const no = !answer.allowed && !client.rooms.existingDirect(userId);
    button.disabled = no;
    button.title = no ? REFUSED : `Direct message to ${name}`;
  }).catch(() => {});
  return button;
}

// The people list's person: their name opens the card.
export function personName(client, userId, text) {
  if (userId === client.me.id) return h("span", { class: "name" }, text);
  return h("button", { type: "button", class: "name person link", "aria-label": `About ${client.nameOf(userId)}`,
    onclick: () => openPerson(client, userId) }, text);
}

// A person's card: message them, block or unblock them, add them to a private room.
export function openPerson(client, userId) {
  const dialog = h("dialog", { class: "card person-card", "aria-labelledby": "person-title" });
  const body = h("div");
  const error = h("p", { class: "form-error", role: "alert" });
  const status = h("p", { class: "hint", role: "status" });
  dialog.append(body, error, status, h("div", { class: "row" }, h("button", { type: "button", onclick: () => dialog.close() }, "Close")));
  document.body.append(dialog);
  const run = async (action) => {
    error.textContent = "";
    status.textContent = "";
    try {
      await action();
    } catch (e) {
      error.textContent = e.friendly || e.message;
    }
  };
  let allowed = null;
  const render = () => {
    const name = client.nameOf(userId);
    const blocked = client.rooms.isBlocked(userId);
    const existing = client.rooms.existingDirect(userId);
    const refused = allowed && !allowed.allowed && !existing;
    const dm = h("button", { type: "button", class: "primary", disabled: allowed === null || refused,
      title: refused ? REFUSED : null, "aria-describedby": refused ? "person-dm-refused" : null,
      onclick: () => { dialog.close(); message(client, userId); } }, "Send a direct message");
    const rooms = partitionChannels(client.channels.values()).rooms.filter((ch) => mayManage(ch, client.canManageChannels));
    const select = h("select", { id: "person-room", name: "room" }, rooms.map((ch) => h("option", { value: ch.id }, client.channelName(ch))));
    body.replaceChildren(
      h("h2", { id: "person-title" }, name),
      h("p", { class: "hint" }, client.online.has(userId) ? "Online" : "Offline", client.admins.has(userId) ? " · admin" : "", blocked ? " · blocked by you" : ""),
      h("div", { class: "row" }, dm,
        h("button", { type: "button", class: blocked ? null : "danger",
          onclick: () => run(async () => {
            if (blocked) await client.rooms.unblock(userId);
            else await client.rooms.block(userId);
            allowed = await client.rooms.directAllowed(userId, { fresh: true });
            render();
          }) }, blocked ? `Unblock ${name}` : `Block ${name}`)),
      refused ? h("p", { class: "hint", id: "person-dm-refused" }, REFUSED) : null,
      rooms.length
        ? h("form", { class: "row add-to-room", onsubmit: (e) => {
            e.preventDefault();
            run(async () => {
              await client.rooms.invite(select.value, userId);
              status.textContent = `${name} was added to ${client.channelName(client.channels.get(select.value))}.`;
            });
          } }, h("label", { for: "person-room" }, "Private room"), select, h("button", { type: "submit" }, "Add to room"))
        : null);
  };
  const offs = [client.on("people", render), client.on("channels", render)];
  dialog.addEventListener("close", () => {
    for (const off of offs) off();
    dialog.remove();
  });
  render();
  dialog.showModal();
  client.rooms.directAllowed(userId, { fresh: true }).then((answer) => {
    allowed = answer;
    if (dialog.open) render();
  }).catch(() => {});
  return dialog;
}

// The side panel's "Direct messages": one link per conversation, named after the other
// person, with its unread count.
export class DtDirectList extends HTMLElement {
  connectedCallback() {
    this.client = currentClient();
    this.list = h("ul", { class: "channel-list direct-list", "aria-label": "Direct messages" });
    this.replaceChildren(h("nav", { "aria-label": "Direct messages" }, h("h2", {}, "Direct messages"), this.list));
    this.offs = [this.client.on("channels", () => this.render()), this.client.on("people", () => this.render())];
    this.onRoute = () => this.render();
    addEventListener("hashchange", this.onRoute);
    this.render();
  }

  disconnectedCallback() {
    for (const off of this.offs) off();
    removeEventListener("hashchange", this.onRoute);
  }

  render() {
    const active = location.hash.startsWith("#/c/") ? location.hash.slice(4) : null;
    const { directs } = partitionChannels(this.client.channels.values());
    const items = directs.map((ch) => {
      const name = this.client.channelName(ch);
      return h("li", {},
        h("a", { href: `#/c/${ch.id}`, "aria-label": ch.unread ? `${name}, ${ch.unread} unread` : name,
          "aria-current": ch.id === active ? "page" : null, class: ch.unread ? "unread" : null },
          h("span", { class: "hash", "aria-hidden": "true" }, "@"), h("span", { class: "name" }, name),
          ch.unread ? h("span", { class: "badge", "aria-hidden": "true" }, String(ch.unread)) : null));
    });
    if (!items.length) items.push(h("li", { class: "empty" }, "None yet: message someone from the people list."));
    this.list.replaceChildren(...items);
  }
}
customElements.define("dt-direct-list", DtDirectList);

// The user page's privacy: who may open a new DM with them, and whom they blocked.
export class DtPrivacy extends HTMLElement {
  connectedCallback() {
    this.client = currentClient();
    this.error = h("p", { class: "form-error", role: "alert" });
    this.saved = h("p", { class: "hint", role: "status" });
    this.choices = h("fieldset", { class: "dm-policy" });
    this.blockList = h("ul", { class: "blocks", "aria-label": "Blocked people" });
    this.replaceChildren(h("section", { class: "privacy", "aria-labelledby": "privacy-title" },
      h("h3", { id: "privacy-title" }, "Privacy"),
      this.choices, this.saved,
      h("h4", {}, "Blocked people"),
      h("p", { class: "hint" }, "Blocked people cannot open a direct message with you; their messages are not delivered to you and are hidden here. They are not told."),
      this.blockList, this.error));
    this.off = this.client.on("privacy", () => this.renderBlocks());
    this.offPeople = this.client.on("people", () => this.renderBlocks());
    this.load();
  }

  disconnectedCallback() {
    this.off?.();
    this.offPeople?.();
  }

  async load() {
    try {
      const { direct_messages: policy } = await this.client.rooms.preferences();
      this.renderChoices(policy);
      await this.client.rooms.blocks();
      this.renderBlocks();
    } catch (e) {
      this.error.textContent = e.friendly || e.message;
    }
  }

  renderChoices(policy) {
    const labels = {
      anyone: "Anyone may message me",
      trusted: "Only trusted members, moderators and admins",
      nobody: "Nobody: do not disturb",
    };
    this.choices.replaceChildren(h("legend", {}, "Who may start a direct message with you"),
      ...Object.entries(labels).map(([value, label]) => h("div", { class: "row" },
        h("input", { type: "radio", name: "dm-policy", id: `dm-policy-${value}`, value, checked: value === policy,
          onchange: async () => {
            this.error.textContent = "";
            this.saved.textContent = "";
            try {
              await this.client.rooms.setDirectMessages(value);
              this.saved.textContent = "Saved. Conversations that exist already stay open.";
            } catch (e) {
              this.error.textContent = e.friendly || e.message;
            }
          } }),
        h("label", { for: `dm-policy-${value}` }, label))));
  }

  renderBlocks() {
    const ids = [...this.client.rooms.blocked].sort((a, b) => this.client.nameOf(a).localeCompare(this.client.nameOf(b)));
    if (!ids.length) {
      this.blockList.replaceChildren(h("li", { class: "empty" }, "You have blocked nobody."));
      return;
    }
    this.blockList.replaceChildren(...ids.map((id) => {
      const name = this.client.nameOf(id);
      return h("li", {}, h("span", {}, name), h("button", { type: "button", "aria-label": `Unblock ${name}`,
        onclick: async () => {
          this.error.textContent = "";
          try {
            await this.client.rooms.unblock(id);
          } catch (e) {
            this.error.textContent = e.friendly || e.message;
          }
        } }, "Unblock"));
    }));
  }
}
customElements.define("dt-privacy", DtPrivacy);
