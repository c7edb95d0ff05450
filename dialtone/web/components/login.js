// Sign in, or register with an invite (opened directly by /#invite=<token>).
import { Client } from "../client.js";
import { h } from "./dom.js";

export class DtLogin extends HTMLElement {
  connectedCallback() {
    this.mode = this.getAttribute("invite") ? "register" : "login";
    this.render();
  }

  render() {
    const invite = this.getAttribute("invite") || "";
    const register = this.mode === "register";
    const error = h("p", { class: "form-error", role: "alert", id: "login-error" });
    const notice = this.getAttribute("notice");
    const form = h(
      "form",
      { class: "card login", "aria-labelledby": "login-title", onsubmit: (e) => this.submit(e, form, error) },
      h("h1", { id: "login-title" }, register ? "Join this Dialtone server" : "Sign in to Dialtone"),
      notice ? h("p", { class: "notice", role: "status" }, notice) : null,
      h("label", { for: "f-username" }, "Username"),
      h("input", { id: "f-username", name: "username", autocomplete: "username", required: true, minlength: 2, maxlength: 20, autocapitalize: "none", spellcheck: "false" }),
      h("label", { for: "f-password" }, "Password"),
      h("input", { id: "f-password", name: "password", type: "password", autocomplete: register ? "new-password" : "current-password", required: true, minlength: register ? 8 : 1 }),
      register ? h("p", { class: "hint", id: "pw-hint" }, "At least 8 characters, with a letter and a digit.") : null,
      register ? [
        h("label", { for: "f-display" }, "Display name (encrypted, seen only by members)"),
        h("input", { id: "f-display", name: "display", autocomplete: "nickname", maxlength: 64 }),
        h("label", { for: "f-invite" }, "Invite"),
        h("input", { id: "f-invite", name: "invite", required: true, value: invite, autocomplete: "off" }),
        // Key backup hook (backup.js): offered at sign-up, set up on the next page.
        h("div", { class: "row" },
          h("input", { type: "checkbox", id: "f-backup", name: "backup" }),
          h("label", { for: "f-backup" }, "Next, set up a key backup (recommended: lets a new device read everything)")),
      ] : null,
      error,
      h("button", { type: "submit", class: "primary" }, register ? "Create account" : "Sign in"),
      h("button", { type: "button", class: "link", onclick: () => { this.mode = register ? "login" : "register"; this.render(); } },
        register ? "I already have an account" : "I have an invite"),
    );
    this.replaceChildren(form);
    form.querySelector("#f-username").focus();
  }

  async submit(event, form, error) {
    event.preventDefault();
    const data = new FormData(form);
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    error.textContent = "";
    try {
      const client = await Client.signIn({
        mode: this.mode,
        username: data.get("username"),
        password: data.get("password"),
        invite: (data.get("invite") || "").trim(),
        displayName: (data.get("display") || "").trim(),
      });
      client.offerBackup = data.get("backup") === "on";
      this.dispatchEvent(new CustomEvent("signed-in", { bubbles: true, detail: client }));
    } catch (e) {
      error.textContent = this.explain(e);
      button.disabled = false;
    }
  }

  explain(e) {
    const register = this.mode === "register";
    switch (e.status) {
      case 400: return e.message ? `Not accepted: ${e.message}.` : "Check the form.";
      case 401: return "Wrong username or password.";
      case 404: return register ? "This invite does not exist. Ask for a new link." : e.friendly;
      case 409: return "That username is taken. Pick another one.";
      case 410: return "This invite has expired or was already used. Ask for a new one.";
      default: return e.friendly || e.message || String(e);
    }
  }
}
customElements.define("dt-login", DtLogin);
