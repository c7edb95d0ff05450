// The key backup page (#/backup, #/restore): set up a backup with a recovery key shown
// once or a passphrase, and restore the keys from it in a new browser. The work is done
// by backup.js; this is the form around it.
import {
  MIN_PASSPHRASE,
  backupStatus,
  formatRecoveryKey,
  newRecoveryKey,
  onBackupStatus,
  passphraseProblem,
  restoreBackup,
  setUpBackup,
  turnOff,
} from "../backup.js";
import { currentClient } from "../client.js";
import { h } from "./dom.js";

const KDF_NAME = { "recovery-key": "a recovery key", "pbkdf2-sha256": "a passphrase" };

export class DtKeyBackup extends HTMLElement {
  connectedCallback() {
    this.client = currentClient();
    this.status = h("p", { class: "backup-status", role: "status", id: "backup-status" });
    this.setupArea = h("div", { class: "backup-setup" });
    this.restoreArea = h("div", { class: "backup-restore" });
    this.replaceChildren(h("section", { class: "page card", "aria-labelledby": "backup-title" },
      h("h2", { id: "backup-title" }, "Key backup"),
      h("p", {}, "Your messages are encrypted with keys that only your devices hold. A key backup keeps a copy of those keys on the server, locked with a recovery key or passphrase that only you know, so a new browser can read everything even when your other devices are closed. The server cannot open it; your login password is not used for it."),
      this.status,
      this.restoreArea,
      this.setupArea));
    this.off = onBackupStatus(this.client, () => this.showStatus());
    this.showStatus();
    this.renderRestore();
    this.renderSetup();
    if (location.hash === "#/restore") this.querySelector("#restore-secret")?.focus();
  }

  disconnectedCallback() {
    this.off?.();
  }

  showStatus() {
    const { on, kdf, version, error } = backupStatus(this.client);
    const parts = [on
      ? `Key backup is on in this browser, locked with ${KDF_NAME[kdf] || "a secret"}: new keys are added to it as they arrive.`
      : "Key backup is not set up in this browser."];
    if (on && version) parts.push(` Saved (version ${version}).`);
    if (error) parts.push(` Last attempt failed: ${error}`);
    this.status.textContent = parts.join("");
    if (this.offButton) this.offButton.hidden = !on;
  }

  renderRestore() {
    const error = h("p", { class: "form-error", role: "alert", id: "restore-error" });
    const done = h("p", { class: "notice", role: "status", id: "restore-done" });
    const input = h("input", { id: "restore-secret", name: "secret", required: true, autocomplete: "off", autocapitalize: "none", spellcheck: "false" });
    const button = h("button", { type: "submit", class: "primary" }, "Restore keys");
    const form = h("form", { "aria-labelledby": "restore-title", onsubmit: async (e) => {
      e.preventDefault();
      error.textContent = "";
      done.textContent = "";
      button.disabled = true;
      try {
        const got = await restoreBackup(this.client, input.value);
        input.value = "";
        const what = [`${got.channels} channel key${got.channels === 1 ? "" : "s"}`];
        if (got.directory) what.push("the key to members' names");
        done.textContent = `Restored ${what.join(" and ")} from your key backup.`
          + (got.skipped ? ` ${got.skipped} did not fit and were left out.` : "");
      } catch (err) {
        if (!this.client.guard(err)) error.textContent = err.friendly || err.message;
      } finally {
        button.disabled = false;
      }
    } },
      h("h3", { id: "restore-title" }, "Restore from your recovery key"),
      h("p", { class: "hint" }, "On a new browser: enter the recovery key (or the passphrase) you chose when you set up the backup."),
      h("label", { for: "restore-secret" }, "Recovery key or passphrase"),
      h("div", { class: "row" }, input, button),
      error, done);
    this.restoreArea.replaceChildren(form);
  }

  renderSetup(mode = null) {
    const error = h("p", { class: "form-error", role: "alert", id: "setup-error" });
    this.offButton = h("button", { type: "button", class: "link", hidden: !backupStatus(this.client).on,
      onclick: async () => {
        await turnOff(this.client);
        this.renderSetup();
      } }, "Stop backing up from this browser");
    const choose = h("div", { class: "row" },
      h("button", { type: "button", onclick: () => this.renderSetup("recovery") }, "Set up key backup with a recovery key"),
      h("button", { type: "button", class: "link", onclick: () => this.renderSetup("passphrase") }, "Use a passphrase instead"));
    let body = null;
    if (mode === "recovery") body = this.recoveryForm(error);
    else if (mode === "passphrase") body = this.passphraseForm(error);
    this.setupArea.replaceChildren(
      h("h3", {}, "Set up key backup"),
      body || choose,
      error,
      this.offButton);
    this.showStatus();
  }

  // Runs the set-up; offers to replace a backup made with another secret.
  async submit(secret, button, error, after) {
    error.textContent = "";
    button.disabled = true;
    try {
      await setUpBackup(this.client, secret, { replace: Boolean(this.replacing) });
      this.replacing = false;
      after();
    } catch (err) {
      if (this.client.guard(err)) return;
      error.replaceChildren(err.friendly || err.message);
      if (err.code === "exists") {
        error.append(" ", h("button", { type: "button", class: "danger", onclick: () => {
          this.replacing = true;
          button.click();
        } }, "Replace the existing backup"));
      }
    } finally {
      button.disabled = false;
    }
  }

  recoveryForm(error) {
    const raw = newRecoveryKey();
    const text = formatRecoveryKey(raw);
    const shown = h("input", { id: "recovery-key", readonly: true, value: text, class: "recovery-key", "aria-describedby": "recovery-hint" });
    const saved = h("input", { type: "checkbox", id: "recovery-saved" });
    const confirm = h("button", { type: "button", class: "primary", disabled: true }, "Turn on key backup");
    saved.addEventListener("change", () => { confirm.disabled = !saved.checked; });
    confirm.addEventListener("click", () => this.submit({ recoveryKey: raw }, confirm, error, () => {
      // Shown once: gone from the page as soon as the backup is on.
      this.renderSetup();
      this.status.textContent += " Keep your recovery key safe: it is not shown again.";
    }));
    return h("div", {},
      h("label", { for: "recovery-key" }, "Your recovery key"),
      h("div", { class: "row" }, shown,
        h("button", { type: "button", onclick: async () => {
          try { await navigator.clipboard.writeText(text); } catch { shown.select(); }
        } }, "Copy")),
      h("p", { class: "hint", id: "recovery-hint" }, "Write it down or keep it in a password manager. It is shown only now; without it (or another device of yours) a new browser cannot read your past messages."),
      h("div", { class: "row" }, saved, h("label", { for: "recovery-saved" }, "I saved my recovery key")),
      h("div", { class: "row" }, confirm,
        h("button", { type: "button", class: "link", onclick: () => this.renderSetup() }, "Cancel")));
  }

  passphraseForm(error) {
    const first = h("input", { id: "backup-passphrase", type: "password", autocomplete: "new-password", minlength: MIN_PASSPHRASE, required: true });
    const second = h("input", { id: "backup-passphrase-again", type: "password", autocomplete: "new-password", required: true });
    const confirm = h("button", { type: "submit", class: "primary" }, "Turn on key backup");
    return h("form", { onsubmit: (e) => {
      e.preventDefault();
      const problem = passphraseProblem(first.value) || (first.value !== second.value ? "The two passphrases differ." : null);
      if (problem) {
        error.textContent = problem;
        return;
      }
      this.submit({ passphrase: first.value }, confirm, error, () => this.renderSetup());
    } },
      h("label", { for: "backup-passphrase" }, "Backup passphrase"),
      first,
      h("p", { class: "hint" }, `At least ${MIN_PASSPHRASE} characters; a few unrelated words work well. Use a different one from your login password: the server sees that one.`),
      h("label", { for: "backup-passphrase-again" }, "Repeat the passphrase"),
      second,
      h("div", { class: "row" }, confirm,
        h("button", { type: "button", class: "link", onclick: () => this.renderSetup() }, "Cancel")));
  }
}
customElements.define("dt-key-backup", DtKeyBackup);
