// The devices page (revocation) and the admin page (invites).
import { currentClient } from "../client.js";
import { h } from "./dom.js";

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
    this.replaceChildren(h("section", { class: "page card", "aria-labelledby": "devices-title" },
      h("h2", { id: "devices-title" }, "You and your devices"),
      profile,
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

export class DtAdmin extends HTMLElement {
  connectedCallback() {
    this.client = currentClient();
    const out = h("div", { class: "invite-out", role: "status" });
    const error = h("p", { class: "form-error", role: "alert" });
    this.replaceChildren(h("section", { class: "page card", "aria-labelledby": "admin-title" },
      h("h2", { id: "admin-title" }, "Server administration"),
      h("h3", {}, "Invites"),
      h("p", {}, "An invite link lets one person create an account within 24 hours."),
      h("button", { type: "button", class: "primary", onclick: () => this.invite(out, error) }, "Create invite link"),
      out, error));
  }

  async invite(out, error) {
    error.textContent = "";
    try {
      const { token, expires_at: expires } = await this.client.api.createInvite();
      const link = `${location.origin}/#invite=${encodeURIComponent(token)}`;
      const field = h("input", { id: "invite-link", readonly: true, value: link });
      out.replaceChildren(
        h("label", { for: "invite-link" }, `Invite link (valid until ${new Date(expires).toLocaleString()})`),
        h("div", { class: "row" }, field,
          h("button", { type: "button", onclick: async () => {
            try { await navigator.clipboard.writeText(link); } catch { field.select(); }
          } }, "Copy")));
      field.select();
    } catch (e) {
      error.textContent = e.friendly || e.message;
    }
  }
}
customElements.define("dt-admin", DtAdmin);
