// The devices page (revocation) and the admin page (invites).
import { currentClient } from "../client.js";
import { formatSize } from "../files.js";
import { h } from "./dom.js";
import "./people.js"; // <dt-privacy>: do-not-disturb and the block list

export class DtDevices extends HTMLElement {
  connectedCallback() {
    this.client = currentClient();
    this.render();
  }

  async render() {
    const error = h("p", { class: "form-error", role: "alert" });
    const list = h("ul", { class: "devices", "aria-label": "Your devices" });
    const profile = h("form", { class: "row", onsubmit: (e) => this.rename(e, error) },
      h("label", { for: "display-name" }, "Your display name"),
      h("input", { id: "display-name", name: "name", required: true, maxlength: 64, value: this.client.displayName }),
      h("button", { type: "submit" }, "Save"));
    const alerts = h("div", { class: "row" },
      h("input", { type: "checkbox", id: "alerts-here", checked: this.client.notifyWanted,
        onchange: (e) => this.client.setNotify(e.target.checked) }),
      h("label", { for: "alerts-here" }, "Alert me (notification and sound) about new messages while Dialtone is in the background"));
    this.replaceChildren(h("section", { class: "page card", "aria-labelledby": "devices-title" },
      h("h2", { id: "devices-title" }, "You and your devices"),
      profile,
      alerts,
      h("dt-privacy"),
      // Key backup hook (backup.js, components/key-backup.js).
      h("p", { class: "row" }, h("a", { href: "#/backup" }, "Set up key backup"), " · ",
        h("a", { href: "#/restore" }, "Restore from recovery key")),
      h("p", {}, "Each browser or app you sign in from is a device with its own key. Remove one you no longer use: it is signed out and gets no new keys."),
      list, error));
    try {
      const devices = await this.client.myDevices();
      list.replaceChildren(...devices.map((d) => h("li", {},
        h("code", { title: d.public_key }, d.public_key.slice(0, 12) + "…"),
        h("span", {}, d.current ? " this device" : ` last seen ${new Date(d.last_seen_at).toLocaleString()}`),
        h("button", { type: "button", class: "danger", "aria-label": d.current ? "Remove this device and sign out" : `Remove device ${d.public_key.slice(0, 12)}`,
          onclick: async () => {
            try {
              await this.client.revokeDevice(d.id);
              if (!d.current) this.render();
            } catch (e) {
              error.textContent = e.friendly || e.message;
            }
          } }, "Remove"))));
    } catch (e) {
      error.textContent = e.friendly || e.message;
    }
  }

  async rename(event, error) {
    event.preventDefault();
    try {
      await this.client.setDisplayName(event.target.elements.name.value);
      error.textContent = "";
    } catch (e) {
      error.textContent = e.friendly || e.message;
    }
  }
}
customElements.define("dt-devices", DtDevices);

// Each live setting (GET /admin/settings) in words: its group, a label, the unit its
// number is in and a line of help. A setting the server has and this list does not
// (a newer server) still shows, under "Other", by its name.
const SETTING_GROUPS = [
  ["general", "General"],
  ["registration", "Registration"],
  ["limits", "Limits"],
  ["retention", "Retention"],
  ["other", "Other"],
];
const SETTINGS = {
  server_title: { group: "general", label: "Server name", help: "Shown to everyone in the page's title." },
  welcome_message: { group: "general", label: "Welcome message", help: "Shown to everyone when they connect. Not end-to-end encrypted." },
  private_rooms: { group: "general", label: "Who may create private rooms", choices: { everyone: "Everyone", trusted: "Trusted members, moderators and admins", admins: "Admins only" }, help: "Public channels are always made by admins." },
  registration_open: { group: "registration", label: "Registration open", help: "When off, nobody can create an account, even with an invite link." },
  invite_ttl_seconds: { group: "registration", label: "Link lifetime", unit: "seconds", help: "How long a new invite link works (86400 seconds is one day)." },
  invite_max_uses: { group: "registration", label: "Accounts per link", unit: "accounts", help: "How many accounts one new invite link can create." },
  login_burst: { group: "limits", label: "Sign-in attempts at once", unit: "attempts", help: "Tries one address may make in a row before it has to wait." },
  login_refill_seconds: { group: "limits", label: "One more sign-in attempt every", unit: "seconds", help: "How fast an address earns a sign-in attempt back." },
  register_burst: { group: "limits", label: "Registrations at once", unit: "accounts", help: "Accounts one address may create in a row." },
  register_refill_seconds: { group: "limits", label: "One more registration every", unit: "seconds", help: "How fast an address earns a registration back." },
  ws_chat_burst: { group: "limits", label: "Chat messages in a burst", unit: "messages", help: "Per connection, before the rate below applies." },
  ws_chat_rate: { group: "limits", label: "Chat messages per second", unit: "per second", help: "Per connection, after a burst." },
  ws_signal_burst: { group: "limits", label: "Voice signals in a burst", unit: "signals", help: "Call set-up messages per connection, before the rate below applies." },
  ws_signal_rate: { group: "limits", label: "Voice signals per second", unit: "per second", help: "Call set-up messages per connection, after a burst." },
  max_connections_per_address: { group: "limits", label: "Connections per address", unit: "at once", help: "Requests and open connections one address may hold at the same time." },
  ban_min_prefix_ipv4: { group: "limits", label: "Widest IPv4 address ban", unit: "prefix bits", help: "An address ban must name a network at least this narrow: 16 allows a /16 (65 536 addresses) at most." },
  ban_min_prefix_ipv6: { group: "limits", label: "Widest IPv6 address ban", unit: "prefix bits", help: "The same for IPv6: 48 allows a /48 (one site) at most." },
  log_retention_days: { group: "retention", label: "Keep the server log for", unit: "days", help: "Older log entries are deleted." },
  message_retention_days: { group: "retention", label: "Keep messages for", unit: "days", help: "Older messages are deleted; 0 keeps them forever." },
  max_file_bytes: { group: "limits", label: "Largest file", unit: "bytes", help: "One upload, encrypted (26214400 bytes is 25 MiB)." },
  user_storage_quota_bytes: { group: "limits", label: "File storage per person", unit: "bytes", help: "What one person's uploads may take in all (1073741824 bytes is 1 GiB); 0 allows no uploads." },
};

// The admin page. Invite links always; with a server that has the /admin API (it says
// so with server.hello), also the overview, users, bans, invites, log, settings and
// announcements. Moderators see users and bans; admins see everything.
export class DtAdmin extends HTMLElement {
  connectedCallback() {
    this.client = currentClient();
    this.error = h("p", { class: "form-error", role: "alert" });
    const out = h("div", { class: "invite-out", role: "status" });
    const sections = [];
    if (this.client.canManageChannels) {
      sections.push(h("section", { class: "admin-section", "aria-labelledby": "invite-title" },
        h("h3", { id: "invite-title" }, "Invite someone"),
        h("p", {}, "An invite link lets one person create an account."),
        h("button", { type: "button", class: "primary", onclick: () => this.invite(out) }, "Create invite link"),
        out));
    }
    this.extra = h("div");
    // The headline figures come first: what an admin opens the page to see.
    this.headline = h("div", { class: "headline" });
    this.replaceChildren(h("section", { class: "page card wide", "aria-labelledby": "admin-title" },
      h("h2", { id: "admin-title" }, "Server administration"), this.error, this.headline, ...sections, this.extra));
    this.offServer = this.client.on("server", () => this.loadExtra());
    this.offPeople = this.client.on("people", () => this.namesChanged());
    this.loadExtra();
  }

  disconnectedCallback() {
    this.offServer?.();
    this.offPeople?.();
    clearInterval(this.statsTimer);
  }

  async call(action, after) {
    this.error.textContent = "";
    try {
      const result = await action();
      if (after) await after(result);
      return result;
    } catch (e) {
      this.error.textContent = e.friendly || e.message;
      return null;
    }
  }

  async invite(out) {
    const made = await this.call(() => this.client.api.createInvite());
    if (!made) return;
    const link = `${location.origin}/#invite=${encodeURIComponent(made.token)}`;
    const field = h("input", { id: "invite-link", readonly: true, value: link });
    out.replaceChildren(
      h("label", { for: "invite-link" }, `Invite link (valid until ${new Date(made.expires_at).toLocaleString()})`),
      h("div", { class: "row" }, field,
        h("button", { type: "button", onclick: async () => {
          try { await navigator.clipboard.writeText(link); } catch { field.select(); }
        } }, "Copy")));
    field.select();
    if (this.invitesBody) this.loadInvites();
  }

  async loadExtra() {
    if (!this.client.server.moderation || this.loaded) return;
    this.loaded = true;
    const admin = this.client.canManageChannels;
    const parts = [];
    if (admin) parts.push(this.section("stats", "Overview", this.statsBody = h("div")));
    parts.push(this.section("users", "People", this.usersBody = h("div")));
    parts.push(this.section("bans", "Bans", this.bansBody = h("div")));
    if (admin) {
      parts.push(this.section("invites", "Invites", this.invitesBody = h("div")));
      parts.push(this.section("announce", "Announcement", this.announceForm()));
      parts.push(this.section("settings", "Settings", this.settingsBody = h("div")));
      parts.push(this.section("log", "Server log", this.logBody = h("div")));
    }
    this.extra.replaceChildren(...parts);
    const loads = [this.loadUsers(), this.loadBans()];
    if (admin) loads.push(this.loadStats(), this.loadInvites(), this.loadSettings(), this.loadLog());
    // The headline figures stay current while the page is open.
    if (admin) this.statsTimer = setInterval(() => this.loadStats(), 15000);
    await Promise.all(loads);
  }

  section(id, title, body) {
    return h("section", { class: "admin-section", "aria-labelledby": `admin-${id}` }, h("h3", { id: `admin-${id}` }, title), body);
  }

  table(caption, headers, rows) {
    if (!rows.length) return h("p", { class: "hint" }, `No ${caption.toLowerCase()}.`);
    return h("table", { class: "admin" }, h("caption", { class: "sr-only" }, caption),
      h("thead", {}, h("tr", {}, headers.map((t) => h("th", { scope: "col" }, t)))),
      h("tbody", {}, rows));
  }

  when(iso) {
    return iso ? new Date(iso).toLocaleString() : "—";
  }

  async loadStats() {
    await this.call(() => this.client.api.get("/admin/stats"), (s) => {
      const figure = (key, label, value) => h("div", { class: "figure", role: "group", "aria-labelledby": `figure-${key}` },
        h("span", { class: "figure-value" }, String(value ?? "—")), h("span", { class: "figure-label", id: `figure-${key}` }, label));
      this.headline.replaceChildren(
        figure("online", "Users online", s.online_users),
        figure("sockets", "Open connections", s.sockets),
        figure("rate", "Messages per minute", s.messages_last_minute));
      const item = (label, value) => h("li", {}, h("b", {}, String(value)), " ", label);
      this.statsBody.replaceChildren(h("ul", { class: "stats" },
        item("accounts", s.users), item("online", s.online_users), item("connections", s.sockets),
        item("channels", s.channels), item("messages", s.messages), item("in voice", s.voice_rooms.reduce((n, r) => n + r.members, 0)),
        item("active bans", s.bans),
        // Servers with files (issue 17): how many are stored, and their (encrypted) bytes.
        "storage_bytes" in s ? item(`in ${s.files ?? 0} files`, formatSize(s.storage_bytes)) : null,
        item("version", s.version)));
    });
  }

  async loadUsers() {
    await this.call(() => this.client.api.get("/admin/users", { limit: 200 }), ({ users }) => this.renderUsers(users));
  }

  // Drawn again, without asking the server, when a name is opened after the table was
  // (a newcomer's profile arrives a moment after their account).
  namesChanged() {
    if (!this.users) return;
    const names = this.users.map((u) => this.client.nameOf(u.id)).join("\u0000");
    if (names !== this.userNames) this.renderUsers(this.users);
  }

  renderUsers(users) {
    this.users = users;
    this.userNames = users.map((u) => this.client.nameOf(u.id)).join("\u0000");
    const me = this.client.me.id;
    const admin = this.client.canManageChannels;
    // A server with files says how much each person stores.
    const files = users.some((u) => "storage_bytes" in u);
    const rows = users.map((u) => {
      const name = this.client.nameOf(u.id);
      const roles = [u.is_admin && "admin", u.is_moderator && "moderator", u.is_locked && "locked"].filter(Boolean).join(", ") || "member";
      const flag = (label, field, value) => h("button", { type: "button", "aria-label": `${label} ${name}`,
        onclick: () => this.call(() => this.client.api.request("PATCH", `/admin/users/${u.id}`, { body: { [field]: value } }), () => this.loadUsers()) }, label);
      const actions = [];
      if (admin && u.id !== me) {
        actions.push(u.is_locked ? flag("Unlock", "is_locked", false) : flag("Lock", "is_locked", true));
        actions.push(u.is_admin ? flag("Remove admin", "is_admin", false) : flag("Make admin", "is_admin", true));
        actions.push(u.is_moderator ? flag("Remove moderator", "is_moderator", false) : flag("Make moderator", "is_moderator", true));
      }
      if (u.id !== me) {
        actions.push(h("button", { type: "button", "aria-label": `Disconnect ${name}`,
          onclick: () => this.call(() => this.client.api.post(`/admin/users/${u.id}/kick`), () => this.loadUsers()) }, "Disconnect"));
        actions.push(h("button", { type: "button", class: "danger", "aria-label": `Ban ${name}`,
          onclick: () => this.call(() => this.client.api.post("/admin/bans", { user_id: u.id, comment: "banned from the web admin page" }), () => Promise.all([this.loadBans(), this.loadUsers()])) }, "Ban"));
      }
      return h("tr", { "data-user-id": u.id },
        h("td", {}, name, u.id === me ? " (you)" : "", h("br"),
          // The id the `dialtone admin` commands and the /admin API take, selectable to copy.
          h("code", { class: "user-id", title: "User id (for dialtone admin commands)" }, u.id)), h("td", {}, roles), h("td", {}, u.online ? "online" : "offline"),
        h("td", {}, String(u.device_count)), h("td", {}, this.when(u.last_seen_at)),
        files ? h("td", {}, formatSize(u.storage_bytes ?? 0)) : null, h("td", { class: "actions" }, actions));
    });
    const headers = ["Name", "Role", "Status", "Devices", "Last seen", ...(files ? ["Files"] : []), "Actions"];
    this.usersBody.replaceChildren(this.table("People", headers, rows));
  }

  async loadBans() {
    await this.call(() => this.client.api.get("/admin/bans", { active: "true", limit: 200 }), ({ bans }) => {
      const rows = bans.map((b) => {
        const who = b.user_id ? this.client.nameOf(b.user_id) : b.address;
        return h("tr", {}, h("td", {}, who), h("td", {}, this.when(b.expires_at)), h("td", {}, b.comment),
          h("td", { class: "actions" }, h("button", { type: "button", "aria-label": `Lift the ban on ${who}`,
            onclick: () => this.call(() => this.client.api.request("DELETE", `/admin/bans/${b.id}`), () => this.loadBans()) }, "Lift")));
      });
      this.bansBody.replaceChildren(this.table("Active bans", ["Who", "Until", "Comment", "Actions"], rows));
    });
  }

  async loadInvites() {
    await this.call(() => this.client.api.get("/admin/invites", { limit: 100 }), ({ invites }) => {
      const rows = invites.map((i) => h("tr", {},
        h("td", {}, this.when(i.created_at)), h("td", {}, this.when(i.expires_at)), h("td", {}, i.state), h("td", {}, `${i.uses}/${i.max_uses}`),
        h("td", { class: "actions" }, i.state === "active" || i.state === "usable"
          ? h("button", { type: "button", "aria-label": `Revoke the invite made ${this.when(i.created_at)}`,
              onclick: () => this.call(() => this.client.api.request("DELETE", `/admin/invites/${i.id}`), () => this.loadInvites()) }, "Revoke")
          : null)));
      this.invitesBody.replaceChildren(this.table("Invites", ["Made", "Expires", "State", "Used", "Actions"], rows));
    });
  }

  announceForm() {
    const form = h("form", { onsubmit: async (e) => {
      e.preventDefault();
      const text = form.elements.text.value.trim();
      if (!text) return;
      await this.call(() => this.client.api.post("/admin/announce", { text, alert: form.elements.alert.checked }), () => { form.reset(); });
    } },
      h("p", { class: "hint" }, "Sent to everyone connected. Announcements are not end-to-end encrypted."),
      h("label", { for: "announce-text" }, "Announcement text"),
      h("textarea", { id: "announce-text", name: "text", maxlength: 2000, rows: 2 }),
      h("div", { class: "row" },
        h("label", { class: "notify", for: "announce-alert" }, h("input", { type: "checkbox", id: "announce-alert", name: "alert" }), " Show as an alert"),
        h("button", { type: "submit", class: "primary" }, "Send announcement")));
    return form;
  }

  async loadSettings() {
    await this.call(() => this.client.api.get("/admin/settings"), ({ settings }) => {
      // One aligned grid per group: label, field, unit; the help line under the field.
      const rows = new Map(SETTING_GROUPS.map(([group]) => [group, []]));
      for (const [key, value] of Object.entries(settings)) {
        const info = SETTINGS[key] || { group: "other", label: key.replaceAll("_", " ") };
        const id = `setting-${key}`;
        const helpId = `${id}-help`;
        const described = info.help ? { "aria-describedby": helpId } : {};
        const input = typeof value === "boolean"
          ? h("input", { type: "checkbox", id, name: key, checked: value, ...described })
          : info.choices
          ? h("select", { id, name: key, ...described },
              Object.entries(info.choices).map(([choice, words]) => h("option", { value: choice, selected: choice === value }, words)))
          : h("input", { id, name: key, value: String(value), type: typeof value === "number" ? "number" : "text", step: "any", ...described });
        rows.get(info.group).push(
          h("label", { for: id }, info.label),
          h("div", { class: "setting-field" }, input, info.unit ? h("span", { class: "unit" }, info.unit) : null),
          info.help ? h("p", { class: "hint setting-help", id: helpId }, info.help) : null);
      }
      const inputs = SETTING_GROUPS.filter(([group]) => rows.get(group).length).map(([group, title]) =>
        h("fieldset", { class: "settings-group" }, h("legend", {}, title),
          h("div", { class: "settings-grid" }, rows.get(group))));
      const form = h("form", { onsubmit: async (e) => {
        e.preventDefault();
        const changed = {};
        for (const [key, value] of Object.entries(settings)) {
          const el = form.elements[key];
          const next = typeof value === "boolean" ? el.checked : typeof value === "number" ? Number(el.value) : el.value;
          if (next !== value) changed[key] = next;
        }
        if (!Object.keys(changed).length) return;
        await this.call(() => this.client.api.request("PUT", "/admin/settings", { body: changed }), () => this.loadSettings());
      } }, inputs, h("button", { type: "submit", class: "primary" }, "Save settings"));
      this.settingsBody.replaceChildren(form);
    });
  }

  async loadLog() {
    await this.call(() => this.client.api.get("/admin/log", { limit: 50 }), ({ entries }) => {
      const rows = entries.map((e) => h("tr", {}, h("td", {}, this.when(e.at)), h("td", {}, e.level), h("td", {}, e.topic),
        h("td", {}, e.user_id ? this.client.nameOf(e.user_id) : ""), h("td", {}, e.message)));
      this.logBody.replaceChildren(this.table("Log entries", ["When", "Level", "Topic", "User", "What"], rows),
        h("button", { type: "button", onclick: () => this.loadLog() }, "Refresh log"));
    });
  }
}
customElements.define("dt-admin", DtAdmin);
