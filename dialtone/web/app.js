// Entry point: the <dt-app> shell. Routes (in the fragment, so nothing reaches the server):
//   #/c/<channel id>   a channel      #/devices   your devices     #/admin   invites
//   #invite=<token>    registration with that invite
//   #/backup, #/restore   the key backup: set up, restore (backup.js)
import { attachBackup } from "./backup.js";
import { Client } from "./client.js";
import "./components/login.js";
import "./components/sidebar.js";
import "./components/channel-view.js";
import "./components/pages.js";
import "./components/key-backup.js";
import { h } from "./components/dom.js";
import "./components/voice-panel.js"; // registers <dt-voice-panel>, which the channel view places

const STATUS_TEXT = {
  idle: "Starting…",
  connecting: "Connecting…",
  open: "Connected",
  reconnecting: "Connection lost, reconnecting…",
  closed: "Disconnected",
  ended: "Signed out",
};

class DtApp extends HTMLElement {
  async connectedCallback() {
    this.addEventListener("signed-in", (e) => this.start(e.detail));
    // Escape folds the channel list away again on a phone.
    this.addEventListener("keydown", (e) => {
      if (e.key === "Escape" && this.classList.contains("nav-open")) {
        this.classList.remove("nav-open");
        this.querySelector("button.menu")?.setAttribute("aria-expanded", "false");
        this.querySelector("button.menu")?.focus();
      }
    });
    addEventListener("hashchange", () => this.route());
    let client = null;
    try {
      client = await Client.restore();
    } catch (e) {
      console.warn("dialtone: could not restore the session:", e.message);
    }
    if (client && !this.inviteToken()) this.start(client);
    else this.showLogin();
  }

  inviteToken() {
    const match = /^#invite=([^&]+)/.exec(location.hash);
    return match ? decodeURIComponent(match[1]) : null;
  }

  showLogin(notice = null) {
    this.client = null;
    document.title = "Dialtone";
    const login = h("dt-login", { invite: this.inviteToken() || null, notice });
    this.replaceChildren(h("main", { class: "center" }, login));
  }

  async start(client) {
    this.client?.stop();
    this.client = client;
    if (this.inviteToken()) history.replaceState(null, "", "#/");
    this.replaceChildren(h("main", { class: "center" }, h("p", { class: "boot", role: "status" }, "Opening your encrypted channels…")));
    client.on("ended", ({ message }) => this.showLogin(message));
    try {
      await client.start();
    } catch (e) {
      if (!client.ended) this.showLogin(`Could not load: ${e.friendly || e.message}`);
      return;
    }
    if (client.ended) return;
    this.layout(client);
    // Key backup hook: keeps the backup up to date; sign-up may ask to set one up now.
    attachBackup(client).catch((e) => console.warn("dialtone: key backup:", e.message));
    if (client.offerBackup) {
      client.offerBackup = false;
      location.hash = "#/backup";
      return;
    }
    this.route();
  }

  layout(client) {
    this.status = h("p", { class: "conn", role: "status", "aria-live": "polite" });
    this.notices = h("div", { class: "notices", role: "alert" });
    const notify = h("input", { type: "checkbox", id: "notify", checked: client.notifyWanted,
      onchange: (e) => client.setNotify(e.target.checked) });
    const menu = h("button", { type: "button", class: "menu", "aria-label": "Show channels", "aria-expanded": "false", "aria-controls": "sidebar",
      onclick: () => {
        const open = this.classList.toggle("nav-open");
        menu.setAttribute("aria-expanded", String(open));
      } }, "☰");
    this.main = h("main", { id: "main", class: "content" });
    // While a key has not reached this device: what is happening, and what can be done.
    this.keyBanner = h("div", { class: "key-banner", role: "status", "aria-live": "polite", hidden: true });
    this.replaceChildren(
      h("header", { class: "top" },
        menu,
        this.brand = h("a", { href: "#/", class: "brand" }, "Dialtone"),
        this.status,
        h("nav", { class: "user", "aria-label": "Account" },
          h("label", { class: "notify", for: "notify", title: "Notify me with a sound when a message arrives while this tab is hidden" }, notify, " Alerts"),
          h("a", { href: "#/devices", title: "Your name and devices" }, client.me.username),
          this.adminLink = h("a", { href: "#/admin", hidden: !client.canManageChannels }, "Admin"),
          h("button", { type: "button", onclick: () => client.logout().catch((e) => client.notice(e.friendly || e.message)) }, "Sign out"))),
      this.keyBanner,
      h("dt-sidebar", { id: "sidebar" }),
      this.main,
      this.notices,
    );
    const showStatus = ({ state, retryIn }) => {
      this.status.textContent = STATUS_TEXT[state] + (state === "reconnecting" && retryIn ? ` (in ${Math.ceil(retryIn / 1000)} s)` : "");
      this.status.dataset.state = state;
    };
    showStatus(client.status);
    client.on("notify", (wanted) => { notify.checked = wanted; });
    client.on("status", showStatus);
    client.on("notice", ({ message }) => {
      const item = h("p", {}, message, h("button", { type: "button", class: "link", "aria-label": "Dismiss", onclick: () => item.remove() }, "×"));
      this.notices.append(item);
    });
    // Operator announcements are plaintext from the server, and marked as such.
    client.on("announcement", ({ text, alert }) => {
      const item = h("p", { class: `announcement${alert ? " alert" : ""}`, role: alert ? "alert" : "status" },
        h("strong", {}, "Server announcement"), " (not end-to-end encrypted): ", text,
        h("button", { type: "button", class: "link", "aria-label": "Dismiss announcement", onclick: () => item.remove() }, "×"));
      this.notices.append(item);
    });
    client.on("server", ({ title }) => {
      this.brand.textContent = title || "Dialtone";
      this.adminLink.hidden = !(client.canManageChannels || client.isStaff);
    });
    client.on("channels", () => {
      const id = this.currentChannel();
      if (id && !client.channels.has(id)) location.hash = "#/";
    });
    const showKeys = () => this.renderKeyBanner(client);
    for (const what of ["keys", "channels", "people"]) client.on(what, showKeys);
    showKeys();
    // Promoted or demoted while here: the admin page and the home page follow at once.
    client.on("role", () => {
      this.adminLink.hidden = !(client.canManageChannels || client.isStaff);
      if (!this.currentChannel()) this.route();
    });
  }

  renderKeyBanner(client) {
    const banner = this.keyBanner;
    if (!client.keysMissing) {
      banner.hidden = true;
      banner.replaceChildren();
      return;
    }
    const n = client.othersOnline;
    const now = n === 0 ? "nobody else is now" : n === 1 ? "1 is now" : `${n} are now`;
    const locked = client.lockedChannels.length;
    const what = locked === 0
      ? "People's names are locked on this device: the key to read them has not arrived yet."
      : locked === 1
        ? "One channel is locked on this device: its key has not arrived yet."
        : `${locked} channels are locked on this device: their keys have not arrived yet.`;
    const text = `${what} Your keys arrive when another member is online — ${now}.`;
    const signature = `${text}\u0000${client.canRestore}`;
    if (!banner.hidden && banner.dataset.signature === signature) return;
    banner.dataset.signature = signature;
    const parts = [h("span", { class: "lock", "aria-hidden": "true" }, "🔒"), h("p", {}, text)];
    if (client.canRestore) {
      parts.push(h("button", { type: "button", class: "restore", onclick: () => client.requestRestore() }, "Restore from your recovery key"));
    }
    banner.replaceChildren(...parts);
    banner.hidden = false;
  }

  currentChannel() {
    return location.hash.startsWith("#/c/") ? location.hash.slice(4) : null;
  }

  route() {
    const client = this.client;
    if (!client || !this.main) {
      if (this.inviteToken() && !this.client) this.showLogin();
      return;
    }
    this.classList.remove("nav-open");
    this.querySelector("button.menu")?.setAttribute("aria-expanded", "false");
    const hash = location.hash;
    let view;
    if (hash.startsWith("#/c/") && client.channels.has(this.currentChannel())) {
      client.activeChannel = this.currentChannel();
      view = h("dt-channel-view", { "channel-id": this.currentChannel() });
    } else {
      client.activeChannel = null;
      if (hash === "#/devices") view = h("dt-devices");
      else if (hash === "#/backup" || hash === "#/restore") view = h("dt-key-backup");
      else if (hash === "#/admin" && (client.canManageChannels || client.isStaff)) view = h("dt-admin");
      else {
        const first = client.channels.keys().next().value;
        if (first && hash !== "#/home") {
          location.replace(`#/c/${first}`);
          return;
        }
        document.title = "Dialtone";
        view = h("section", { class: "page card" }, h("h2", {}, `Welcome, ${client.displayName}`),
          client.server.welcome ? h("p", { class: "welcome" }, client.server.welcome) : null,
          h("p", {}, client.canManageChannels ? "Create a channel on the left, then invite people from the Admin page." : "No channels yet: an admin will create one."));
      }
    }
    this.main.replaceChildren(view);
  }
}
customElements.define("dt-app", DtApp);
