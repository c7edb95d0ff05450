// <dt-voice-panel>: join, leave and control the voice call of one channel.
//
// Mounted in the channel view as <dt-voice-panel channel-id="…">. It finds the signed-in
// client itself (client.js: socket, api, me, nameOf); panel.connect({socket, api, selfId,
// nameOf}) sets one explicitly instead.
// The call itself (voice.js) belongs to the socket, not to the panel: it goes on while
// the person reads another channel, and the panel of that channel offers to switch.
//
// Every control is a native button, checkbox or slider with an accessible name, so the
// panel works with a keyboard and a screen reader; connection states are words, not
// only colours. Each member's row carries data-user-id, data-state and data-speaking.

import { currentClient, onCurrentClient } from "../client.js";
import { voicePresenceFor, voiceRoomFor } from "../voice.js";

// Voice state belongs to the session: track room presence from the first socket event on
// (the client is made current before its socket connects, so the snapshot is not missed),
// and end the call, microphone and camera included, when the session ends.
let sessionSocket = null;
function follow(client) {
  if (sessionSocket && sessionSocket !== client?.socket) {
    voiceRoomFor({ socket: sessionSocket }).dispose();
    voicePresenceFor(sessionSocket).dispose();
    sessionSocket = null;
  }
  if (client && client.socket !== sessionSocket) {
    sessionSocket = client.socket;
    voicePresenceFor(client.socket);
    voiceRoomFor({ socket: client.socket, api: client.api, selfId: client.me.id });
  }
}
onCurrentClient(follow);
follow(currentClient());

const STATE_TEXT = {
  waiting: "waiting for their offer",
  new: "starting",
  connecting: "connecting",
  connected: "connected",
  disconnected: "reconnecting",
  failed: "failed",
  closed: "left",
};

let stylesheetAdded = false;

function addStylesheet() {
  if (stylesheetAdded) return;
  stylesheetAdded = true;
  const link = document.createElement("link");
  link.rel = "stylesheet";
  link.href = new URL("../voice.css", import.meta.url).href;
  document.head.append(link);
}

let panelCount = 0;

function el(tag, props = {}, children = []) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("data-") || key.startsWith("aria-") || key === "role" || key === "for") {
      node.setAttribute(key, value);
    } else node[key] = value;
  }
  node.append(...children);
  return node;
}

export class VoicePanel extends HTMLElement {
  static observedAttributes = ["channel-id"];

  constructor() {
    super();
    this.room = null;
    this.presence = null;
    this.nameOf = (userId) => `user ${String(userId).slice(0, 8)}`;
    this.selfId = null;
    this._channelId = null;
    this.rows = new Map();
    this.built = false;
    this.onChange = () => this.render();
    this.onError = () => this.render();
  }

  connect({ socket, api, selfId, nameOf }) {
    this.disconnectRoom();
    this.selfId = selfId;
    if (nameOf) this.nameOf = nameOf;
    this.room = voiceRoomFor({ socket, api, selfId });
    this.presence = voicePresenceFor(socket);
    if (this.isConnected) this.listen();
    this.render();
  }

  get channelId() {
    return this._channelId;
  }

  set channelId(value) {
    this._channelId = value || null;
    if (this.getAttribute("channel-id") !== (value || null)) {
      if (value) this.setAttribute("channel-id", value);
      else this.removeAttribute("channel-id");
    }
    this.render();
  }

  attributeChangedCallback(name, _old, value) {
    if (name === "channel-id" && value !== this._channelId) this.channelId = value;
  }

  connectedCallback() {
    addStylesheet();
    this.build();
    navigator.mediaDevices?.addEventListener?.("devicechange", this.onDeviceChange);
    if (!this.room) {
      const client = currentClient();
      if (client) {
        this.connect({
          socket: client.socket,
          api: client.api,
          selfId: client.me.id,
          nameOf: (userId) => client.nameOf(userId),
        });
      }
    }
    this.listen();
    this.render();
  }

  disconnectedCallback() {
    this.unlisten();
    navigator.mediaDevices?.removeEventListener?.("devicechange", this.onDeviceChange);
  }

  listen() {
    if (!this.room || this.listening) return;
    this.listening = true;
    this.room.addEventListener("change", this.onChange);
    this.room.addEventListener("error", this.onError);
    this.presence.addEventListener("change", this.onChange);
  }

  unlisten() {
    if (!this.room || !this.listening) return;
    this.listening = false;
    this.room.removeEventListener("change", this.onChange);
    this.room.removeEventListener("error", this.onError);
    this.presence.removeEventListener("change", this.onChange);
  }

  disconnectRoom() {
    this.unlisten();
    this.room = null;
    this.presence = null;
  }

  // ------------------------------------------------------------------ structure

  build() {
    if (this.built) return;
    this.built = true;
    const id = `dt-voice-${++panelCount}`;
    this.classList.add("dt-voice");
    this.heading = el("h2", { id: `${id}-title`, class: "voice-title", text: "Voice" });
    this.summary = el("p", { class: "voice-summary" });
    this.joinButton = el("button", { type: "button", class: "voice-join", text: "Join voice" });
    this.leaveButton = el("button", { type: "button", class: "voice-leave", text: "Leave voice" });
    this.muteButton = el("button", {
      type: "button",
      class: "voice-mute",
      text: "Mute microphone",
      "aria-pressed": "false",
    });
    this.cameraButton = el("button", {
      type: "button",
      class: "voice-camera",
      text: "Camera",
      "aria-pressed": "false",
    });
    this.relayBox = el("input", { type: "checkbox", id: `${id}-relay`, class: "voice-relay-only" });
    const relayLabel = el("label", { for: `${id}-relay` }, [
      "Relay only: hide my network address from the others (uses the server's TURN relay)",
    ]);
    this.micSelect = el("select", { id: `${id}-mic`, class: "voice-device" });
    this.camSelect = el("select", { id: `${id}-cam`, class: "voice-device" });
    this.settings = el("details", { class: "voice-settings" }, [
      el("summary", { text: "Voice settings" }),
      el("p", {}, [el("label", { for: this.micSelect.id, text: "Microphone" }), " ", this.micSelect]),
      el("p", {}, [el("label", { for: this.camSelect.id, text: "Camera" }), " ", this.camSelect]),
      el("p", {}, [this.relayBox, " ", relayLabel]),
    ]);
    this.status = el("p", { class: "voice-status", role: "status", "aria-live": "polite" });
    this.list = el("ul", { class: "voice-members", "aria-label": "People in this call" });
    const controls = el("div", { class: "voice-controls", role: "group", "aria-label": "Voice controls" }, [
      this.joinButton,
      this.leaveButton,
      this.muteButton,
      this.cameraButton,
    ]);
    const section = el("section", { class: "voice", "aria-labelledby": this.heading.id }, [
      this.heading,
      this.summary,
      controls,
      this.settings,
      this.status,
      this.list,
    ]);
    this.replaceChildren(section);

    this.joinButton.addEventListener("click", () => this.join());
    this.leaveButton.addEventListener("click", () => this.room?.leave());
    this.muteButton.addEventListener("click", () => this.room?.setMuted(!this.room.muted));
    this.cameraButton.addEventListener("click", () => this.room?.setCamera(!this.room.camera));
    this.relayBox.addEventListener("change", () => this.room?.setRelayOnly(this.relayBox.checked));
    this.micSelect.addEventListener("change", () => this.room?.setMicrophone(this.micSelect.value));
    this.camSelect.addEventListener("change", () => this.room?.setCameraDevice(this.camSelect.value));
    this.settings.addEventListener("toggle", () => {
      if (this.settings.open) this.listDevices();
    });
    this.onDeviceChange = () => {
      if (this.settings.open) this.listDevices();
    };
  }

  // Fill the device choices (names appear once the site may use the devices).
  async listDevices() {
    if (!this.room) return;
    let found;
    try {
      found = await this.room.devices();
    } catch {
      return;
    }
    const fill = (select, devices, chosen, noun) => {
      const options = [el("option", { value: "", text: `Default ${noun}` })];
      devices.forEach((device, index) => {
        options.push(el("option", { value: device.deviceId, text: device.label || `${noun} ${index + 1}` }));
      });
      select.replaceChildren(...options);
      select.value = devices.some((d) => d.deviceId === chosen) ? chosen : "";
    };
    fill(this.micSelect, found.microphones, this.room.microphoneId, "microphone");
    fill(this.camSelect, found.cameras, this.room.cameraId, "camera");
  }

  async join() {
    if (!this.room || !this._channelId) return;
    try {
      await this.room.join(this._channelId);
    } catch {
      // The room reported the reason through its "error" event.
    }
  }

  announce(text) {
    // Only real changes: a live region re-announces whatever is written to it.
    if (this.status && this.status.textContent !== (text || "")) this.status.textContent = text || "";
  }

  // ------------------------------------------------------------------ rendering

  render() {
    if (!this.built) return;
    const room = this.room;
    const here = !!room && room.active && room.channelId === this._channelId;
    const elsewhere = !!room && room.active && room.channelId !== this._channelId;
    const inRoom = this.presence && this._channelId ? this.presence.users(this._channelId) : [];

    const ready = !!room && !!this._channelId;
    this.joinButton.hidden = here;
    this.joinButton.disabled = !ready;
    this.joinButton.textContent = elsewhere ? "Move voice here" : "Join voice";
    this.leaveButton.hidden = !room?.active;
    this.leaveButton.textContent = elsewhere ? "Leave voice in the other channel" : "Leave voice";
    this.muteButton.hidden = !here || room.listenOnly;
    this.cameraButton.hidden = !here || room.state !== "joined";
    if (room) {
      this.muteButton.setAttribute("aria-pressed", String(room.muted));
      this.cameraButton.setAttribute("aria-pressed", String(room.camera));
      this.relayBox.checked = room.relayOnly;
    }
    this.relayBox.disabled = !!room?.active;

    if (here) this.summary.textContent = "";
    else if (inRoom.length === 0) this.summary.textContent = "Nobody is in voice here.";
    else {
      const names = inRoom.map((id) => (id === this.selfId ? "you (another device)" : this.nameOf(id)));
      this.summary.textContent = `In voice here: ${names.join(", ")}.`;
    }
    let status = "";
    if (room?.error && (here || !room.active)) status = room.error;
    else if (elsewhere) status = "You are in voice in another channel.";
    else if (here) status = this.describeCall(room);
    this.announce(status);

    this.renderMembers(here ? room : null);
    this.dataset.state = here ? room.state : elsewhere ? "elsewhere" : "idle";
  }

  describeCall(room) {
    if (room.state === "joining") return "Joining voice…";
    const peers = [...room.peers.values()];
    const connected = peers.filter((p) => p.state === "connected").length;
    const muted = room.listenOnly ? " You have no microphone: listening only." : room.muted ? " You are muted." : "";
    if (peers.length === 0) return `In voice. Nobody else is here yet.${muted}`;
    return `In voice with ${peers.length} ${peers.length === 1 ? "person" : "people"}, ${connected} connected.${muted}`;
  }

  renderMembers(room) {
    const wanted = new Map();
    if (room) {
      wanted.set(this.selfId, null);
      for (const peer of room.peers.values()) wanted.set(peer.userId, peer);
    }
    for (const [userId, row] of this.rows) {
      if (!wanted.has(userId)) {
        row.li.remove();
        this.rows.delete(userId);
      }
    }
    for (const [userId, peer] of wanted) {
      let row = this.rows.get(userId);
      if (!row) {
        row = this.makeRow(userId, peer === null);
        this.rows.set(userId, row);
      }
      this.list.append(row.li); // keeps order: self first, then join order
      this.updateRow(row, room, peer);
    }
  }

  makeRow(userId, self) {
    const name = self ? "You" : this.nameOf(userId);
    const li = el("li", { class: "voice-member", "data-user-id": userId });
    const dot = el("span", { class: "voice-speaking", "aria-hidden": "true" });
    const label = el("span", { class: "voice-name", text: name });
    const state = el("span", { class: "voice-state" });
    const video = el("video", { className: "voice-video", autoplay: true, playsInline: true, muted: true });
    video.setAttribute("aria-label", self ? "Your camera" : `Camera of ${name}`);
    video.hidden = true;
    const row = { li, label, state, video, slider: null, self };
    li.append(dot, label, " ", state);
    if (!self) {
      const slider = el("input", { type: "range", min: "0", max: "100", step: "5", class: "voice-volume" });
      slider.setAttribute("aria-label", `Volume of ${name}`);
      slider.addEventListener("input", () => this.room?.setVolume(userId, Number(slider.value) / 100));
      row.slider = slider;
      li.append(slider);
    }
    li.append(video);
    return row;
  }

  updateRow(row, room, peer) {
    const li = row.li;
    if (row.self) {
      li.dataset.state = room.state;
      li.dataset.speaking = String(room.speaking);
      row.state.textContent = room.listenOnly ? "listening only" : room.muted ? "muted" : room.speaking ? "speaking" : "";
      this.showVideo(row.video, room.camera ? room.cameraStream : null);
      return;
    }
    const name = this.nameOf(peer.userId);
    if (row.label.textContent !== name) {
      row.label.textContent = name;
      row.slider.setAttribute("aria-label", `Volume of ${name}`);
      row.video.setAttribute("aria-label", `Camera of ${name}`);
    }
    li.dataset.state = peer.state;
    li.dataset.speaking = String(peer.speaking);
    li.dataset.route = peer.route || "";
    let text = STATE_TEXT[peer.state] || peer.state;
    if (peer.state === "connected" && peer.route) text += peer.route === "relay" ? " via relay" : " directly";
    if (peer.speaking) text += ", speaking";
    row.state.textContent = `(${text})`;
    const percent = String(Math.round(peer.volume * 100));
    if (row.slider.value !== percent && document.activeElement !== row.slider) row.slider.value = percent;
    row.slider.setAttribute("aria-valuetext", `${percent} percent`);
    this.showVideo(row.video, peer.videoStream);
  }

  showVideo(video, stream) {
    if (video.srcObject !== stream) {
      video.srcObject = stream || null;
      if (stream) video.play().catch(() => {});
    }
    video.hidden = !stream;
  }
}

if (!customElements.get("dt-voice-panel")) customElements.define("dt-voice-panel", VoicePanel);
