// The signed-in client: keys, channels, messages, profiles and presence, kept in sync with
// the server over HTTP (api.js) and the WebSocket bus, encrypted with crypto.js.
// Components read its state and subscribe with client.on(what, handler); `what` is one of
// "channels", "messages" (detail: channel id), "people", "status", "notice", "ended",
// "keys" (a key arrived or went), "role" (our own roles changed) and "restore-requested"
// (the key banner's restore action: the key backup module handles it).
// The voice panel uses client.socket (on/send), client.api, client.me and client.nameOf().

import { Api, ApiError, Socket, errorSentence } from "./api.js";
import * as e2e from "./crypto.js";
import { store } from "./store.js";
import { newClientMessageId, Outbox, SeqTracker } from "./outbox.js";
import * as rotation from "./rotation.js";
import { applyRow, Rooms } from "./rooms.js";
import { buildBody, parseBody } from "./files.js";

const PAGE = 50;
const CATCH_UP_PAGE = 200;
const MAX_BODY_BYTES = 16384;
const PENDING_TIMEOUT_MS = 15000;
// Every member hands on the keys it holds: each waits a random moment first, so that
// members online together do not all wrap for a newcomer in the same instant.
const SHARE_JITTER_MS = 3000;
// Why a channel cannot be written in yet, shown by the composer.
export const LOCKED_REASON =
  "You cannot write here yet: this channel's key has not reached this device. It arrives when another member is online.";
// Keys we lack are shared by others when this device comes online, a moment later; no
// event says when, so ask again: often at first, then rarely (about a minute in all).
const KEY_RETRY_MS = [300, 600, 1000, 1000, 2000, 2000, 4000, 8000, 15000, 30000];

// Why the server closed our socket for good, in words.
const ENDED = {
  revoked: "This device was signed out.",
  session_expired: "Your session has expired.",
  banned: "You are banned from this server.",
  locked: "Your account is locked. Ask an admin.",
};

let current = null;
const currentListeners = new Set();

// The client of the signed-in session (null when signed out), for components that are
// placed anywhere in the page (the voice panel, for instance).
export function currentClient() {
  return current;
}

export function onCurrentClient(handler) {
  currentListeners.add(handler);
  return () => currentListeners.delete(handler);
}

function setCurrent(client) {
  current = client;
  for (const handler of currentListeners) handler(client);
}

function normalise(username) {
  return username.trim().toLowerCase();
}

async function deviceFor(username) {
  // One device key per account in this browser; created once, kept in IndexedDB.
  const id = `device:${normalise(username)}`;
  let device = await store.get(id);
  if (!device) {
    device = await e2e.generateDeviceKey();
    await store.put(id, device);
  }
  return device;
}

export class Client {
  static async signIn({ mode, username, password, invite, displayName }) {
    const device = await deviceFor(username);
    const api = new Api();
    const body =
      mode === "register"
        ? await api.register(username, password, device.publicB64, invite)
        : await api.login(username, password, device.publicB64);
    const session = {
      token: body.token,
      user_id: body.user_id,
      device_id: body.device_id,
      username: body.username,
      is_admin: body.is_admin,
      expires_at: body.expires_at,
      // The name chosen at sign-up waits here until the directory key arrives and it can
      // be sealed; kept with the session so a reload before then does not lose it.
      wanted_name: displayName || null,
    };
    await store.put("session", session);
    return new Client(session, device);
  }

  static async restore() {
    const session = await store.get("session");
    if (!session) return null;
    if (Date.parse(session.expires_at) <= Date.now()) {
      await store.delete("session");
      return null;
    }
    const device = await store.get(`device:${normalise(session.username)}`);
    if (!device) return null;
    return new Client(session, device);
  }

  constructor(session, device) {
    this.session = session;
    this.device = device;
    this.me = {
      id: session.user_id,
      deviceId: session.device_id,
      username: session.username,
      isAdmin: session.is_admin,
      publicKey: device.publicB64,
    };
    this.wantedName = session.wanted_name || null;
    this.api = new Api(session.token);
    this.socket = new Socket(session.token);
    this.channels = new Map();
    this.profiles = new Map();
    this.devicesAll = [];
    this.online = new Set();
    this.admins = new Set();
    this.dirKey = null;
    this.dirEnvelope = null;
    this.dirCommitment = null; // the server's directory key commitment (null: unset)
    this.dirKeyCommitment = null; // the commitment of the directory key we hold
    this.reported = new Set(); // refused envelopes already reported in the console
    this.shareTimers = new Set();
    this.sharesDone = 0; // hand-on rounds finished (whether or not anything was wrapped)
    this.activeChannel = null;
    this.pending = [];
    this.listeners = new Map();
    this.localSeq = 0;
    // Sends not yet acknowledged, sent again after a reconnect (outbox.js).
    this.outbox = new Outbox();
    this.keyRetries = new Map();
    this.notifyWanted = localStorage.getItem("dialtone.notify") === "1";
    this.status = { state: "idle" };
    // What the server offers beyond the published API, learnt from server.hello.
    this.server = { moderation: false, title: "", welcome: "" };
    // Private rooms, direct messages, blocks, do-not-disturb, /sync (rooms.js).
    this.rooms = new Rooms(this);
  }

  on(what, handler) {
    if (!this.listeners.has(what)) this.listeners.set(what, new Set());
    this.listeners.get(what).add(handler);
    return () => this.listeners.get(what)?.delete(handler);
  }

  emit(what, detail) {
    for (const handler of [...(this.listeners.get(what) || [])]) handler(detail);
  }

  notice(message, kind = "error") {
    this.emit("notice", { message, kind });
  }

  // Any 401 means the session is over, as does a ban: sign out locally and say why.
  guard(error) {
    if (error instanceof ApiError && error.status === 401) {
      this.end("Your session has ended. Please sign in again.");
      return true;
    }
    if (error instanceof ApiError && error.status === 403 && error.code === "banned") {
      this.end(ENDED.banned);
      return true;
    }
    return false;
  }

  async attempt(action, what) {
    try {
      return await action();
    } catch (error) {
      if (!this.guard(error)) this.notice(`${what}: ${error.friendly || error.message}`);
      throw error;
    }
  }

  async start() {
    setCurrent(this);
    const socket = this.socket;
    socket.on("status", (status) => {
      this.status = status;
      this.emit("status", status);
      // A handshake refused with 401 looks like any failed connection to a browser:
      // after two failures, ask over HTTP whether the session is still good.
      if (status.state === "reconnecting" && status.attempt === 2) {
        this.api.devices().catch((error) => this.guard(error));
      }
    });
    // Kept so that signing out can wait for the reads an opening socket started: the
    // token must not be revoked while they are on their way (they would meet 401s).
    socket.on("open", () => { this.opening = this.onOpen(); });
    socket.on("ended", ({ reason }) => this.end(ENDED[reason] || ENDED.revoked));
    socket.on("channel.message.new", (event) => {
      // Our own message's echo is its answer: settled now, before any later error.
      const ours = event.sender === this.me.id;
      const mine = (ours && this.outbox.acknowledged(event.client_message_id)) || this.pending.find((p) => p.body === event.body);
      if (mine) socket.answered(mine);
      this.onMessage(event);
    });
    socket.on("channel.updated", (event) => this.onChannelUpdated(event));
    socket.on("channel.deleted", (event) => this.onChannelDeleted(event));
    socket.on("user.profile.updated", () => this.refreshProfiles().catch((e) => this.guard(e)));
    socket.on("device.joined", (event) => this.onDeviceJoined(event));
    socket.on("presence.updated", (event) => this.onPresence(event));
    socket.on("user.role.updated", (event) => this.onRoleUpdated(event));
    socket.on("device.revoked", () => this.refreshDevices().catch((e) => this.guard(e)));
    socket.on("error", (event) => this.onServerError(event));
    // Administration events (servers with the /admin API; older servers never send them).
    socket.on("server.hello", (event) => this.onHello(event));
    socket.on("server.info.updated", (event) => {
      this.server = { ...this.server, title: event.server_title, welcome: event.welcome_message };
      this.emit("server", this.server);
      // The directory key commitment may just have been set (by an admin's page).
      if (this.dirCommitment === null) this.checkDirectory().catch((e) => this.guard(e));
    });
    socket.on("server.announcement", (event) => this.emit("announcement", event));
    socket.on("channel.message.deleted", (event) => this.onDeleted(event));
    rotation.attach(this);
    this.rooms.listen(socket);
    try {
      await this.refreshDevices();
      await this.refreshProfiles();
      await this.refreshServerInfo();
      await this.loadDirectory();
      await this.refreshChannels();
      await this.refreshPresence();
      await this.rooms.start();
    } catch (error) {
      if (this.guard(error)) return;
      throw error;
    }
    // Presence changes arrive as presence.updated events from here on; every socket open
    // reads it once more for what changed while the socket was down.
    socket.connect();
  }

  stop() {
    this.rooms.stop();
    clearTimeout(this.dirTimer);
    for (const timer of this.shareTimers) clearTimeout(timer);
    for (const timer of this.keyRetries.values()) clearTimeout(timer);
    this.socket.close();
    if (current === this) setCurrent(null);
  }

  async end(message) {
    if (this.ended) return;
    this.ended = true;
    this.stop();
    await store.delete("session");
    this.emit("ended", { message });
  }

  async logout() {
    // Our own socket is closed first, so its "revoked" close is not taken for a removal.
    this.socket.close();
    // At most a few seconds: a server that stopped answering must not hold the sign-out.
    await Promise.race([Promise.resolve(this.opening).catch(() => {}), new Promise((done) => setTimeout(done, 3000))]);
    let message = "You are signed out.";
    try {
      await this.api.logout();
    } catch (error) {
      // Signed out here all the same; say that the server may still accept the token.
      if (!(error instanceof ApiError && error.status === 401)) {
        message = `Signed out on this device, but the server could not be told: ${error.friendly || error.message}`;
      }
    }
    await this.end(message);
  }

  // ---- people ----

  async refreshDevices() {
    const { keys } = await this.api.allDeviceKeys();
    this.devicesAll = keys;
    this.emit("people");
  }

  knownUsers() {
    const ids = new Set(this.devicesAll.map((d) => d.user_id));
    for (const id of this.profiles.keys()) ids.add(id);
    ids.add(this.me.id);
    return [...ids];
  }

  async refreshPresence() {
    const ids = this.knownUsers().slice(0, 5000);
    const { statuses, admins } = await this.api.presence(ids);
    this.online = new Set(Object.keys(statuses).filter((id) => statuses[id]));
    this.admins = new Set(Object.keys(admins).filter((id) => admins[id]));
    this.emit("people");
  }

  // How many other people are online now: the ones who can hand us a key we lack.
  get othersOnline() {
    let n = 0;
    for (const id of this.online) if (id !== this.me.id) n += 1;
    return n;
  }

  onPresence(event) {
    if (typeof event.sender !== "string") return;
    const had = this.online.has(event.sender);
    if (event.online) this.online.add(event.sender);
    else this.online.delete(event.sender);
    if (had === Boolean(event.online)) return;
    // Someone new to us (no device listed yet): their name and devices are read once.
    if (event.online && !this.knownUsers().includes(event.sender)) {
      this.refreshDevices().catch((e) => this.guard(e));
    }
    this.emit("people");
    // A member coming online is someone who can hand us what we lack: ask again.
    if (event.online && event.sender !== this.me.id) this.askAgainForKeys();
  }

  // Roles changed by an admin: our own controls follow at once, and others' badges.
  onRoleUpdated(event) {
    if (typeof event.sender !== "string") return;
    if (event.is_admin) this.admins.add(event.sender);
    else this.admins.delete(event.sender);
    if (event.sender === this.me.id) {
      this.me.isAdmin = Boolean(event.is_admin);
      this.me.isModerator = Boolean(event.is_moderator);
      this.session = { ...this.session, is_admin: this.me.isAdmin };
      store.put("session", this.session).catch(() => {});
      this.emit("role", { isAdmin: this.me.isAdmin, isModerator: this.me.isModerator });
      this.emit("server", this.server);
      this.emit("channels");
      this.emit("messages", null);
      // An admin may set the commitments still missing, and share channels' keys.
      if (this.canManageChannels) this.settleCommitments().catch((e) => this.guard(e));
    }
    this.emit("people");
  }

  nameOf(userId) {
    const name = this.profiles.get(userId);
    if (name) return name;
    if (userId === this.me.id) return this.displayName;
    // Readable, and telling people apart, until the directory key opens their names.
    const tag = userId.replace(/-/g, "").slice(0, 4);
    return this.dirKey ? `Member ${tag}` : `Member ${tag}, name locked`;
  }

  // Ours: the sealed profile, else the name chosen at sign-up that waits for the
  // directory key, else the username.
  get displayName() {
    return this.profiles.get(this.me.id) || this.wantedName || this.me.username;
  }

  async refreshProfiles() {
    const { profiles } = await this.api.profiles();
    this.profileRows = profiles;
    await this.decryptProfiles();
  }

  async decryptProfiles() {
    if (!this.dirKey || !this.profileRows) return;
    for (const row of this.profileRows) {
      try {
        this.profiles.set(row.user_id, await e2e.openText(this.dirKey, row.name_enc));
      } catch {
        // Sealed with a directory key this device does not hold; shown by id.
      }
    }
    this.emit("people");
    this.emit("messages", null);
  }

  async setDisplayName(name) {
    const clean = name.trim();
    if (!clean) throw new Error("A display name cannot be empty.");
    if (!this.dirKey) throw new Error("The directory key has not reached this device yet.");
    await this.attempt(async () => this.api.setProfile(await e2e.seal(this.dirKey, clean)), "Saving your name");
    this.profiles.set(this.me.id, clean);
    this.emit("people");
  }

  // ---- directory key ----

  // The directory key commitment, where clients read server-wide state. Best effort: a
  // server without it answers no commitment, and the directory key is taken as before.
  async refreshServerInfo() {
    try {
      const info = await this.api.serverInfo();
      this.dirCommitment = (info && info.directory_key_commitment) || null;
    } catch (error) {
      console.warn("dialtone: could not read the server information:", error.message);
    }
  }

  async loadDirectory() {
    const record = `dir:${this.me.deviceId}`;
    const cached = await store.get(record);
    if (cached && (await this.keyFits(record, cached, this.dirCommitment, "directory"))) {
      this.dirKey = cached.key;
      this.dirEnvelope = cached.envelope;
      this.dirKeyCommitment = cached.commitment;
    } else if (!(await this.fetchDirectory())) {
      if ((!this.profileRows || this.profileRows.length === 0) && this.dirCommitment === null) {
        // Nobody has written a profile yet, so nobody holds a directory key: make it.
        await this.createDirectoryKey();
      } else {
        // Others hold it and hand it on when they see this device online.
        this.retryDirectoryLater();
      }
    }
    await this.settleDirectoryCommitment();
    await this.directoryReady();
  }

  async directoryReady() {
    await this.decryptProfiles();
    this.emit("keys");
    if (this.dirKey && !this.profiles.has(this.me.id)) {
      try {
        await this.setDisplayName(this.wantedName || this.me.username);
      } catch {
        return; // kept for the next start; the error was already shown
      }
      if (this.wantedName) {
        this.wantedName = null;
        this.session = { ...this.session, wanted_name: null };
        await store.put("session", this.session);
      }
    }
  }

  retryDirectoryLater(attempt = 1) {
    clearTimeout(this.dirTimer);
    if (attempt > KEY_RETRY_MS.length || this.ended) {
      this.dirTimer = null;
      return;
    }
    this.dirTimer = setTimeout(async () => {
      if (this.dirKey) {
        this.dirTimer = null;
        return;
      }
      try {
        if (await this.fetchDirectory()) {
          this.dirTimer = null;
          await this.settleDirectoryCommitment();
          await this.directoryReady();
          return;
        }
      } catch (error) {
        if (this.guard(error)) return;
      }
      this.retryDirectoryLater(attempt + 1);
    }, KEY_RETRY_MS[attempt - 1]);
  }

  // Every directory key envelope addressed to us, one per sender: the first whose key
  // matches the commitment is taken. Without a commitment yet, as before: an envelope
  // from any device the server lists.
  async fetchDirectory() {
    const answer = await this.api.directoryKeys();
    if (!answer) return false; // 204: none yet
    const envelopes = Array.isArray(answer.envelopes) ? answer.envelopes : [answer];
    for (const envelope of envelopes) {
      const commitment = await this.commitmentOf(envelope, "directory");
      if (commitment === null) continue;
      if (this.dirCommitment !== null) {
        if (commitment === this.dirCommitment) {
          await this.acceptDirectoryEnvelope(envelope, commitment);
          await this.confirmDirectoryKey(envelopes);
          return true;
        }
        this.report("directory", envelope, "its key does not match the directory key commitment");
      } else if (await this.listedSender(envelope)) {
        return this.acceptDirectoryEnvelope(envelope, commitment);
      } else {
        this.report("directory", envelope, "its sender is not a device the server lists");
      }
    }
    return false;
  }

  async acceptDirectoryEnvelope(envelope, commitment) {
    const key = await e2e.unwrapEnvelope(this.device.privateKey, envelope.sender_public_key, envelope.envelope);
    this.dirKey = key;
    this.dirEnvelope = envelope;
    this.dirKeyCommitment = commitment;
    await store.put(`dir:${this.me.deviceId}`, { key, envelope, commitment });
    this.emit("keys");
    return true;
  }

  async createDirectoryKey() {
    const fresh = await e2e.newSharedKey();
    const commitment = await e2e.commitment(fresh);
    const envelopes = await this.wrapForAll(fresh, this.devicesAll);
    await this.api.postDirectoryKeys(envelopes);
    await store.put(`shared:${this.me.deviceId}:directory`, envelopes.map((e) => e.device_id));
    const mine = envelopes.find((e) => e.device_id === this.me.deviceId);
    await this.acceptDirectoryEnvelope({ ...mine, created_at: new Date().toISOString() }, commitment);
  }

  // An admin's page holding the directory key sets its commitment once, if nobody has.
  async settleDirectoryCommitment() {
    if (!this.dirKey || !this.dirKeyCommitment || this.dirCommitment !== null || !this.canManageChannels) return;
    if (this.noDirectoryCommitment) return;
    try {
      const answer = await this.api.setDirectoryCommitment(this.dirKeyCommitment);
      this.dirCommitment = answer.directory_key_commitment || this.dirKeyCommitment;
    } catch (error) {
      if (this.guard(error)) return;
      if (error instanceof ApiError && error.status === 409) await this.checkDirectory();
      else {
        // A server without directory commitments (404, 405): asked once per session.
        if (error instanceof ApiError && (error.status === 404 || error.status === 405)) this.noDirectoryCommitment = true;
        console.warn("dialtone: could not set the directory key commitment:", error.message);
      }
    }
  }

  // The commitment is read again (someone set it): a key we hold that does not match it
  // is dropped and the right one asked for.
  async checkDirectory() {
    await this.refreshServerInfo();
    if (this.dirCommitment === null) return;
    if (this.dirKey && this.dirKeyCommitment !== this.dirCommitment) {
      console.warn("dialtone: the directory key held here does not match its commitment; asking for the right one");
      this.dirKey = null;
      this.dirEnvelope = null;
      this.dirKeyCommitment = null;
      await store.delete(`dir:${this.me.deviceId}`);
      this.emit("keys");
      if (await this.fetchDirectory()) await this.directoryReady();
      else this.retryDirectoryLater();
    }
  }

  // ---- commitments ----

  // The commitment of the key inside an envelope, or null (reported) when it cannot be
  // opened with this device's key.
  async commitmentOf(envelope, what) {
    try {
      return await e2e.envelopeCommitment(this.device.privateKey, envelope.sender_public_key, envelope.envelope);
    } catch {
      this.report(what, envelope, "it cannot be opened with this device's key");
      return null;
    }
  }

  // Whether a stored key may still be used: without a commitment, yes (it was taken by
  // the rule of its day); with one, only when it matches. Records from before commitments
  // get theirs computed once.
  async keyFits(record, cached, wanted, what) {
    if (!cached.commitment) {
      cached.commitment = await this.commitmentOf(cached.envelope, what);
      if (cached.commitment === null) {
        await store.delete(record);
        return false;
      }
      await store.put(record, cached);
    }
    if (wanted === null || cached.commitment === wanted) return true;
    this.report(what, cached.envelope, "the key held here does not match the commitment");
    await store.delete(record);
    return false;
  }

  // Once per envelope: a refused key is said in the console, and never used.
  report(what, envelope, why) {
    const id = `${what}:${envelope.sender_device_id}:${envelope.envelope}`;
    if (this.reported.has(id)) return;
    this.reported.add(id);
    const kind = what === "directory" ? "directory" : "channel";
    console.warn(`dialtone: refused a ${kind} key envelope from device ${envelope.sender_device_id}: ${why}`);
  }

  async listedSender(envelope) {
    let sender = this.devicesAll.find((d) => d.device_id === envelope.sender_device_id);
    if (!sender) {
      await this.refreshDevices();
      sender = this.devicesAll.find((d) => d.device_id === envelope.sender_device_id);
    }
    return sender && sender.public_key === envelope.sender_public_key ? sender : null;
  }

  // Commitments still unset that this page may set: channels it created (or any, as an
  // admin) and the directory (as an admin), for keys it holds.
  async settleCommitments() {
    for (const ch of [...this.channels.values()]) await this.settleCommitment(ch);
    await this.settleDirectoryCommitment();
  }
  async wrapForAll(key, devices) {
    return Promise.all(
      devices.map(async (d) => ({
        device_id: d.device_id,
        sender_device_id: this.me.deviceId,
        sender_public_key: this.me.publicKey,
        envelope: await e2e.wrapFor(this.device.privateKey, d.public_key, key),
      })),
    );
  }

  // ---- channels ----

  async refreshChannels() {
    const { channels } = await this.api.channels();
    const seen = new Set();
    for (const row of channels) {
      seen.add(row.id);
      const ch = this.channels.get(row.id) || this.newChannel(row);
      ch.created_by = row.created_by;
      ch.created_at = row.created_at;
      ch.key_commitment = row.key_commitment || null;
      ch.key_version = row.key_version || 1;
      ch.image_file_id = row.image_file_id || null;
      rotation.noteRow(this, ch, row);
      applyRow(ch, row);
      if (ch.name_enc !== row.name_enc) {
        ch.name_enc = row.name_enc;
        ch.name = null;
      }
    }
    for (const id of [...this.channels.keys()]) if (!seen.has(id)) this.channels.delete(id);
    await Promise.all([...this.channels.values()].map((ch) => this.ensureKey(ch)));
    this.emit("channels");
    this.emit("keys");
    await this.settleCommitments();
  }

  newChannel(row) {
    const ch = {
      id: row.id,
      created_by: row.created_by,
      created_at: row.created_at,
      key_commitment: row.key_commitment || null,
      key_version: row.key_version || 1,
      name_enc: row.name_enc,
      name: null,
      image_file_id: row.image_file_id || null, // the channel's picture (files.js)
      key: null,
      envelope: null,
      keyCommitment: null, // the commitment of the key we hold
      messages: [],
      loaded: false,
      complete: false,
      loading: false,
      unread: 0,
    };
    applyRow(ch, row);
    this.channels.set(row.id, ch);
    return ch;
  }

  // Channels in the order they were made, so a locked one has a number that stays put.
  positionOf(ch) {
    let n = 1;
    for (const other of this.channels.values()) {
      if (other === ch) continue;
      if (other.created_at < ch.created_at || (other.created_at === ch.created_at && other.id < ch.id)) n += 1;
    }
    return n;
  }

  channelName(ch) {
    if (ch.direct) return this.rooms.directName(ch);
    return ch.name || (ch.key ? "(unreadable name)" : `Channel ${this.positionOf(ch)}, locked`);
  }

  // What the page lacks: channels whose key has not reached this device (not counting one
  // being created here), and the directory key while there are names to read.
  get lockedChannels() {
    return [...this.channels.values()].filter((ch) => !ch.key && !ch.creating);
  }

  get keysMissing() {
    return this.lockedChannels.length > 0 || (!this.dirKey && Boolean(this.profileRows?.length));
  }

  // The key banner's restore action: the key backup module listens for it.
  get canRestore() {
    return Boolean(this.listeners.get("restore-requested")?.size);
  }

  requestRestore() {
    this.emit("restore-requested");
  }

  async ensureKey(ch) {
    const record = `chan:${this.me.deviceId}:${ch.id}`;
    // A key of an older version (the room's key was rotated) is kept for history only.
    await rotation.settle(this, ch);
    if (ch.key && ch.key_commitment && ch.keyCommitment && ch.keyCommitment !== ch.key_commitment) {
      // The commitment was set since, and not to our key: it was not the channel's key.
      this.report(ch.id, ch.envelope, "the key held here does not match the channel's key commitment");
      ch.key = null;
      ch.envelope = null;
      ch.keyCommitment = null;
      ch.name = null;
      await store.delete(record);
      this.emit("keys");
    }
    if (!ch.key) {
      const cached = await store.get(record);
      if (cached && (await this.keyFits(record, cached, ch.key_commitment, ch.id))) {
        ch.key = cached.key;
        ch.envelope = cached.envelope;
        ch.keyCommitment = cached.commitment;
        await rotation.held(this, ch, ch.key_version || 1, cached);
      } else if (!ch.creating) {
        await this.fetchKey(ch);
      }
    }
    if (ch.key && ch.name === null) ch.name = await rotation.openName(ch);
  }

  async fetchKey(ch) {
    let answer;
    try {
      answer = await this.api.channelKeys(ch.id);
    } catch (error) {
      if (error instanceof ApiError && error.status === 404) {
        this.retryKeyLater(ch);
        return;
      }
      throw error;
    }
    // One envelope per sender device; a server without `all` answers just one.
    const envelopes = Array.isArray(answer.envelopes) ? answer.envelopes : [answer];
    const chosen = await this.pickChannelEnvelope(ch, envelopes);
    if (!chosen) {
      this.retryKeyLater(ch);
      return;
    }
    await this.acceptChannelEnvelope(ch, chosen.envelope, chosen.commitment);
    await this.confirmChannelKey(ch, envelopes);
  }

  // A key that matched the channel's commitment is sealed once from this device to
  // itself, unless a device of our own user already sealed one for us: GET /keys/held
  // then lists it, and the members who see this device skip it instead of all wrapping
  // for it. Nobody else can make such an envelope, so a wrong one never makes them skip.
  async confirmChannelKey(ch, envelopes) {
    if (!ch.key || !ch.key_commitment || ch.keyCommitment !== ch.key_commitment) return;
    const version = ch.key_version || 1;
    if (envelopes.some((e) => e.sender_user_id === this.me.id && (e.key_version || 1) === version)) return;
    try {
      const mine = await this.sealForMyself(ch.envelope);
      await this.api.postChannelKeys(ch.id, mine.map((e) => ({ ...e, key_version: version })));
    } catch (error) {
      if (!this.guard(error)) console.warn("dialtone: could not confirm a channel key:", error.message);
    }
  }

  // The key in an accepted envelope, sealed again from this device to itself (opened as
  // extractable for this only, as for handing on: the key kept stays non-extractable).
  async sealForMyself(envelope) {
    const key = await e2e.unwrapEnvelope(this.device.privateKey, envelope.sender_public_key, envelope.envelope, true);
    return this.wrapForAll(key, [{ device_id: this.me.deviceId, public_key: this.me.publicKey }]);
  }

  // The same for the directory key, once it matched the directory's commitment.
  async confirmDirectoryKey(envelopes) {
    if (!this.dirKey || this.dirCommitment === null || this.dirKeyCommitment !== this.dirCommitment) return;
    if (envelopes.some((e) => e.sender_user_id === this.me.id)) return;
    try {
      const mine = await this.sealForMyself(this.dirEnvelope);
      await this.api.postDirectoryKeys(mine);
    } catch (error) {
      if (!this.guard(error)) console.warn("dialtone: could not confirm the directory key:", error.message);
    }
  }

  // The first envelope whose key matches the channel's commitment, from whichever member
  // sent it; the others are reported once and never used. A channel without a commitment
  // yet keeps the old rule: only its creator's or an admin's devices.
  async pickChannelEnvelope(ch, envelopes) {
    for (const envelope of envelopes) {
      if (envelope.key_version && envelope.key_version !== ch.key_version) continue;
      const commitment = await this.commitmentOf(envelope, ch.id);
      if (commitment === null) continue;
      if (ch.key_commitment) {
        if (commitment === ch.key_commitment) return { envelope, commitment };
        this.report(ch.id, envelope, "its key does not match the channel's key commitment");
      } else if (await this.trustedSender(ch, envelope)) {
        return { envelope, commitment };
      } else {
        this.report(ch.id, envelope, "the channel has no key commitment yet and the sender is neither its creator nor an admin");
      }
    }
    return null;
  }

  // The check the server cannot make: a channel key counts only when it comes from the
  // channel's creator or from an admin, through a device the server lists for that user.
  async trustedSender(ch, envelope) {
    const sender = await this.listedSender(envelope);
    if (!sender) return false;
    if (sender.user_id === ch.created_by) return true;
    const { admins } = await this.api.presence([sender.user_id]);
    return Boolean(admins[sender.user_id]);
  }

  async acceptChannelEnvelope(ch, envelope, commitment) {
    ch.key = await e2e.unwrapEnvelope(this.device.privateKey, envelope.sender_public_key, envelope.envelope);
    ch.envelope = envelope;
    ch.keyCommitment = commitment;
    ch.name = null;
    await store.put(`chan:${this.me.deviceId}:${ch.id}`, { key: ch.key, envelope, commitment, version: ch.key_version || 1 });
    await rotation.held(this, ch, ch.key_version || 1, { key: ch.key, envelope, commitment });
    await this.ensureKey(ch);
    this.emit("channels");
    this.emit("keys");
    if (ch.loaded) {
      for (const m of ch.messages) await this.decryptMessage(ch, m);
      this.emit("messages", ch.id);
    }
    await this.settleCommitment(ch);
  }

  // The creator (or an admin) holding the key of a channel made before commitments sets
  // its commitment, once; when someone else was first (409), the channel is read again
  // and a key that does not match it is dropped.
  async settleCommitment(ch) {
    if (!ch.key || !ch.keyCommitment || ch.key_commitment || ch.settling || ch.creating) return;
    if (!(ch.created_by === this.me.id || this.canManageChannels)) return;
    ch.settling = true;
    try {
      // The commitment may have been set meanwhile (a new room's channel.updated can
      // arrive after its key): read the channel first, and set it only if still unset.
      const { channels } = await this.api.channels();
      const row = channels.find((c) => c.id === ch.id);
      if (!row) return;
      if (row.key_commitment) {
        await this.refreshChannels(); // as after a 409: a key that does not match is dropped
        return;
      }
      const { channel } = await this.api.setChannelCommitment(ch.id, ch.keyCommitment);
      ch.key_commitment = (channel && channel.key_commitment) || ch.keyCommitment;
    } catch (error) {
      if (this.guard(error)) return;
      if (error instanceof ApiError && error.status === 409) {
        await this.refreshChannels().catch((e) => this.guard(e));
      } else if (!(error instanceof ApiError && error.code === "channel_not_found")) {
        console.warn("dialtone: could not set a channel's key commitment:", error.message);
      }
    } finally {
      ch.settling = false;
    }
  }

  // A message our key cannot open may mean the key was replaced: read the envelopes
  // addressed to us again, once per session and channel. A key that matches the
  // channel's commitment is the channel's key: nothing to look for then.
  recheckKey(ch) {
    if (ch.rechecked || !ch.envelope || (ch.key_commitment && ch.keyCommitment === ch.key_commitment)) return;
    ch.rechecked = true;
    this.api
      .channelKeys(ch.id)
      .then(async (answer) => {
        const envelopes = (Array.isArray(answer.envelopes) ? answer.envelopes : [answer]).filter(
          (e) => e.envelope !== ch.envelope.envelope,
        );
        const chosen = await this.pickChannelEnvelope(ch, envelopes);
        if (chosen) {
          await this.acceptChannelEnvelope(ch, chosen.envelope, chosen.commitment);
          await this.confirmChannelKey(ch, envelopes);
        }
      })
      .catch(() => {});
  }

  // Keys we lack are handed on by members when they see this device online, a moment
  // later; no event says when, so ask again: often at first, then rarely (about a minute
  // in all), and from the start again whenever another member comes online.
  retryKeyLater(ch, attempt = (ch.keyAttempt || 0) + 1) {
    if (attempt > KEY_RETRY_MS.length || this.keyRetries.has(ch.id) || this.ended) return;
    ch.keyAttempt = attempt;
    const timer = setTimeout(async () => {
      this.keyRetries.delete(ch.id);
      if (!this.channels.has(ch.id) || ch.key) return;
      await this.fetchKey(ch).catch(() => {});
      if (ch.key) this.emit("channels");
    }, KEY_RETRY_MS[attempt - 1]);
    this.keyRetries.set(ch.id, timer);
  }

  askAgainForKeys() {
    for (const ch of this.channels.values()) {
      if (ch.key || ch.creating) continue;
      clearTimeout(this.keyRetries.get(ch.id));
      this.keyRetries.delete(ch.id);
      this.retryKeyLater(ch, 1);
    }
    if (!this.dirKey) this.retryDirectoryLater(1);
  }
  get canManageChannels() {
    return this.me.isAdmin || this.admins.has(this.me.id);
  }

  get isStaff() {
    return this.canManageChannels || Boolean(this.me.isModerator);
  }

  onHello(event) {
    this.me.isAdmin = event.is_admin;
    this.me.isModerator = event.is_moderator;
    this.server = { moderation: true, title: event.server_title, welcome: event.welcome_message };
    this.emit("server", this.server);
    this.emit("channels");
  }

  onDeleted(event) {
    const ch = this.channels.get(event.channel_id);
    if (!ch) return;
    const gone = new Set(event.message_ids);
    // A page of history on its way may still hold them: remembered, and left out of it.
    ch.deleted ||= new Set();
    for (const id of gone) ch.deleted.add(id);
    const before = ch.messages.length;
    ch.messages = ch.messages.filter((m) => !gone.has(m.id));
    if (ch.messages.length !== before) this.emit("messages", ch.id);
  }

  async deleteMessage(channelId, messageId) {
    await this.attempt(
      () => this.api.request("DELETE", "/channels/messages", { query: { message_id: messageId } }),
      "Deleting the message",
    );
    this.onDeleted({ channel_id: channelId, message_ids: [messageId] });
  }

  async createChannel(name, { private: isPrivate = false } = {}) {
    const clean = name.trim();
    if (!clean) throw new Error("A channel needs a name.");
    const key = await e2e.newSharedKey();
    const nameEnc = await e2e.seal(key, clean);
    // The commitment goes with the channel: any member may then hand its key on.
    const commitment = await e2e.commitment(key);
    const { channel } = await this.attempt(
      () => (isPrivate ? this.api.post("/channels", { name_enc: nameEnc, key_commitment: commitment, private: true }) : this.api.createChannel(nameEnc, commitment)),
      isPrivate ? "Creating the room" : "Creating the channel",
    );
    const ch = this.channels.get(channel.id) || this.newChannel(channel);
    applyRow(ch, channel);
    ch.key_commitment = channel.key_commitment || null;
    ch.creating = true;
    await this.refreshDevices();
    // A private room's key goes to its members only: at first, the creator's devices.
    const envelopes = await this.wrapForAll(key, isPrivate ? this.devicesAll.filter((d) => d.user_id === this.me.id) : this.devicesAll);
    for (let i = 0; i < envelopes.length; i += 1000) {
      await this.attempt(() => this.api.postChannelKeys(channel.id, envelopes.slice(i, i + 1000)), "Sharing the channel key");
    }
    await store.put(`shared:${this.me.deviceId}:${channel.id}`, envelopes.map((e) => e.device_id));
    const mine = envelopes.find((e) => e.device_id === this.me.deviceId);
    ch.creating = false;
    await this.acceptChannelEnvelope(ch, mine, commitment);
    this.emit("channels");
    return ch;
  }

  async renameChannel(channelId, name) {
    const ch = this.channels.get(channelId);
    const clean = name.trim();
    if (!clean) throw new Error("A channel needs a name.");
    if (!ch?.key) throw new Error("This device does not hold the channel key yet.");
    const nameEnc = await e2e.seal(ch.key, clean);
    await this.attempt(() => this.api.renameChannel(channelId, nameEnc), "Renaming the channel");
    ch.name_enc = nameEnc;
    ch.name = clean;
    this.emit("channels");
  }

  async deleteChannel(channelId) {
    await this.attempt(() => this.api.deleteChannel(channelId), "Deleting the channel");
    this.channels.delete(channelId);
    this.emit("channels");
  }

  async onChannelUpdated(event) {
    let ch = this.channels.get(event.channel_id);
    if (!ch) {
      await this.refreshChannels().catch(() => {});
      return;
    }
    const commitment = "key_commitment" in event ? event.key_commitment || null : ch.key_commitment;
    if ("image_file_id" in event && (event.image_file_id || null) !== ch.image_file_id) {
      ch.image_file_id = event.image_file_id || null;
      this.emit("channels");
    }
    if (ch.name_enc !== event.channel_name_enc || commitment !== ch.key_commitment) {
      ch.name_enc = event.channel_name_enc;
      ch.key_commitment = commitment;
      if (event.key_version) ch.key_version = event.key_version;
      ch.name = null;
      await this.ensureKey(ch);
      this.emit("channels");
      this.emit("keys");
    }
  }

  onChannelDeleted(event) {
    if (this.channels.delete(event.channel_id)) this.emit("channels");
  }

  // ---- messages ----

  async decryptMessage(ch, m) {
    if (m.local) return;
    // Each message with the key of the version it was sealed with (after a rotation).
    const key = rotation.keyFor(ch, rotation.versionOf(m));
    if (!key) {
      m.text = null;
      if (ch.key) rotation.wantVersion(this, ch, rotation.versionOf(m));
      return;
    }
    try {
      m.text = await e2e.openText(key, m.body);
      m.unreadable = false;
      // A message with attachments carries JSON: its text and each file's key (files.js).
      if (m.attachments?.length) {
        try {
          ({ text: m.text, files: m.files } = parseBody(m.text, m.attachments));
        } catch {
          m.text = "⚠ This message's attachments cannot be read.";
          m.files = [];
        }
      }
    } catch {
      m.text = null;
      m.unreadable = true;
      if (key === ch.key) this.recheckKey(ch);
    }
    try {
      m.senderName = await e2e.openText(key, m.sender_name_enc);
    } catch {
      m.senderName = null;
    }
  }

  fromWire(row) {
    return {
      id: row.id || row.message_id,
      sender: row.sender_id || row.sender,
      sent_at: row.sent_at,
      body: row.body,
      sender_name_enc: row.sender_name_enc,
      status: "sent",
      seq: row.seq,
      client_message_id: row.client_message_id,
      key_version: row.key_version || 1,
      attachments: Array.isArray(row.attachments) ? row.attachments : undefined,
    };
  }

  async openChannel(channelId) {
    this.activeChannel = channelId;
    const ch = this.channels.get(channelId);
    if (!ch) return;
    if (ch.unread) {
      ch.unread = 0;
      this.emit("channels");
    }
    if (!ch.key) await this.fetchKey(ch).catch(() => {});
    if (!ch.loaded) await this.loadOlder(channelId);
  }

  async loadOlder(channelId) {
    const ch = this.channels.get(channelId);
    if (!ch || ch.loading || ch.complete) return;
    ch.loading = true;
    try {
      const oldest = ch.messages.find((m) => !m.local);
      const { messages } = await this.attempt(
        () => this.api.history(channelId, { before: oldest?.id, limit: PAGE }),
        "Loading history",
      );
      if (!oldest) (ch.seqs ||= new SeqTracker()).paged(messages, undefined);
      const known = new Set(ch.messages.map((m) => m.id));
      const older = [];
      for (const row of messages) {
        if (known.has(row.id) || ch.deleted?.has(row.id)) continue;
        const m = this.fromWire(row);
        await this.decryptMessage(ch, m);
        older.push(m);
      }
      ch.messages = [...older, ...ch.messages];
      ch.complete = messages.length < PAGE;
      if (!ch.loaded) {
        // Live messages that came while the first page was on its way, not already in it.
        ch.loaded = true;
        const have = new Set(ch.messages.map((m) => m.id));
        for (const m of ch.early || []) if (!have.has(m.id)) ch.messages.push(m);
        ch.early = null;
      }
    } finally {
      ch.loading = false;
    }
    this.emit("messages", channelId);
  }

  async catchUp(ch) {
    if (ch.seqs?.top !== undefined) return this.fillGap(ch);
    let last = [...ch.messages].reverse().find((m) => !m.local);
    if (!last) return;
    for (;;) {
      const { messages } = await this.api.history(ch.id, { after: last.id, limit: CATCH_UP_PAGE });
      for (const row of messages) await this.addMessage(ch, this.fromWire(row), false);
      if (messages.length < CATCH_UP_PAGE) break;
      last = { id: messages[messages.length - 1].id };
    }
  }

  // Page everything after the highest place we hold without a hole (`after_seq`): what
  // a lost event or a dropped socket left out, however old, even below newer messages.
  async fillGap(ch) {
    if (ch.filling) return ch.filling;
    ch.filling = (async () => {
      for (;;) {
        const from = ch.seqs.top;
        const { messages } = await this.api.history(ch.id, { after_seq: from, limit: CATCH_UP_PAGE });
        for (const row of messages) {
          if (row.sender_id === this.me.id) this.acknowledge(row.client_message_id);
          await this.addMessage(ch, this.fromWire(row), false);
        }
        ch.seqs.paged(messages, from);
        // Short page: done. Items without seq: a server that ignores after_seq.
        if (messages.length < CATCH_UP_PAGE || !messages.every((m) => Number.isInteger(m.seq))) break;
      }
    })();
    try {
      await ch.filling;
    } finally {
      ch.filling = null;
    }
  }

  // One of our sends found stored (in history after a reconnect): it needs no resend.
  acknowledge(clientMessageId) {
    const owner = this.outbox.acknowledged(clientMessageId);
    if (owner) this.socket.answered(owner);
  }

  // What is still unacknowledged goes again, same id and ciphertext: stored only once.
  resendUnacknowledged() {
    this.outbox.resend((frame, m) => {
      if (!this.socket.sendAwaiting(frame, m)) return false;
      if (m.status === "failed") {
        m.status = "pending";
        m.error = null;
        if (!this.pending.includes(m)) this.pending.push(m);
      }
      clearTimeout(m.timer);
      m.timer = setTimeout(() => this.fail(m, "No answer from the server."), PENDING_TIMEOUT_MS);
      this.emit("messages", m.channelId || null);
      return true;
    });
  }

  // Messages deleted while we were away (no channel.message.deleted reached us): read the
  // deletions feed from the last time we were in step with it, or else from the oldest
  // message we hold (nothing older than it can matter), and drop those we still show.
  async catchUpDeletions(ch) {
    if (!this.server.moderation) return; // an older server: no deletions, no feed
    const held = ch.messages.filter((m) => !m.local);
    if (!held.length) return;
    let since = Date.parse(held[0].sent_at);
    if (ch.deletionsSyncedAt && ch.deletionsSyncedAt > since) since = ch.deletionsSyncedAt;
    let cursor;
    let syncedAt = null;
    const gone = [];
    do {
      const page = await this.api.deletions(ch.id, { since: new Date(since).toISOString(), cursor });
      // The socket is open again, so later deletions come as events: the next catch-up
      // starts from the server's time of this answer (its Date header has whole seconds).
      if (syncedAt === null && this.api.serverDate) syncedAt = this.api.serverDate - 2000;
      for (const d of page.deletions) gone.push(d.message_id);
      cursor = page.next_cursor;
    } while (cursor);
    if (syncedAt !== null) ch.deletionsSyncedAt = syncedAt;
    if (gone.length) this.onDeleted({ channel_id: ch.id, message_ids: gone });
  }

  async onOpen() {
    const presence = this.refreshPresence().catch(() => {});
    // Events sent while we were away are lost, and so are those sent on the first
    // connection's way up (start() reads everything before it connects): fetch what
    // changed since, every time the socket opens.
    try {
      await this.refreshDevices();
      await presence;
      // Devices that came online while we were away never sent us a device.joined: the
      // keys we may hand on go to those online now that we have not served yet.
      this.shareSoon(() => this.devicesAll.filter((d) => this.online.has(d.user_id)));
      this.askAgainForKeys();
      // The directory key commitment may have been set while we were away.
      if (this.dirCommitment === null) await this.checkDirectory();
      await this.refreshChannels();
      await this.refreshProfiles();
      // One POST /sync for every channel; a server without it: channel by channel.
      const synced = await this.rooms.sync();
      for (const ch of this.channels.values()) {
        if (!ch.loaded || synced) continue;
        try {
          await this.catchUp(ch);
          await this.catchUpDeletions(ch);
        } catch (error) {
          // Deleted meanwhile (its channel.deleted is lost too): the others still catch up.
          if (!(error instanceof ApiError && error.status === 404)) throw error;
          this.onChannelDeleted({ channel_id: ch.id });
        }
      }
      this.emit("messages", null);
      this.resendUnacknowledged();
    } catch (error) {
      this.guard(error);
    }
  }

  async onMessage(event) {
    let ch = this.channels.get(event.channel_id);
    if (!ch) {
      await this.refreshChannels().catch(() => {});
      ch = this.channels.get(event.channel_id);
      if (!ch) return;
    }
    if (!ch.key) await this.fetchKey(ch).catch(() => {});
    const hole = ch.loaded && ch.seqs?.live(event.seq);
    await this.addMessage(ch, this.fromWire(event), true);
    // A place skipped in the channel's numbering: page the messages we missed.
    if (hole) await this.fillGap(ch).catch(() => {});
  }

  async addMessage(ch, m, live) {
    if (ch.messages.some((x) => x.id === m.id) || ch.deleted?.has(m.id)) return;
    await this.decryptMessage(ch, m);
    // Our own message coming back: its ciphertext is unique (random nonce).
    const mine = ch.messages.findIndex((x) => x.local && x.body === m.body);
    if (mine >= 0) {
      const local = ch.messages[mine];
      clearTimeout(local.timer);
      this.pending = this.pending.filter((p) => p !== local);
      ch.messages.splice(mine, 1);
    }
    if (ch.loaded || mine >= 0) ch.messages.push(m);
    else if (ch.loading) (ch.early ||= []).push(m);
    if (live && m.sender !== this.me.id) {
      const seen = this.activeChannel === ch.id && document.visibilityState === "visible";
      if (!seen) {
        ch.unread += 1;
        this.emit("channels");
      }
      if (document.visibilityState === "hidden") this.alert(ch, m);
    }
    this.emit("messages", ch.id);
  }

  // `files`: uploaded attachments ({id, key, name, type, size, width?, height?}, files.js).
  async sendMessage(channelId, text, files = []) {
    const ch = this.channels.get(channelId);
    if (!ch) throw new Error("This channel no longer exists.");
    // Never with an older key once the room has a newer one (a removed member holds it).
    if (!ch.key || rotation.writeVersion(ch) < (ch.key_version || 1)) throw new Error(LOCKED_REASON);
    const clean = text.trim();
    if (!clean && !files.length) return;
    const keyVersion = rotation.writeVersion(ch);
    const plain = files.length ? buildBody(clean, files) : clean;
    const body = await e2e.seal(ch.key, plain);
    if (body.length > MAX_BODY_BYTES) throw new Error("That message is too long.");
    const m = {
      id: `local-${++this.localSeq}`,
      local: true,
      sender: this.me.id,
      sent_at: new Date().toISOString(),
      text: clean,
      plain,
      body,
      senderName: this.displayName,
      status: "pending",
      key_version: keyVersion,
    };
    if (files.length) {
      m.attachments = files.map((f) => f.id);
      m.files = files;
    }
    ch.messages.push(m);
    this.emit("messages", channelId);
    await this.transmit(ch, m);
  }

  async transmit(ch, m) {
    m.clientMessageId ||= newClientMessageId();
    const frame = {
      type: "channel.message.send",
      channel_id: ch.id,
      body: m.body,
      sender_name_enc: await e2e.seal(rotation.keyFor(ch, m.key_version || 1) || ch.key, this.displayName),
      client_message_id: m.clientMessageId,
    };
    // The key version the body is sealed with; absent means 1, as older servers expect.
    if ((m.key_version || 1) > 1) frame.key_version = m.key_version;
    if (m.attachments) frame.attachments = m.attachments;
    m.status = "pending";
    m.error = null;
    m.channelId = ch.id;
    // Kept until acknowledged; sent again after a reconnect.
    this.outbox.track(frame, m);
    if (!this.socket.sendAwaiting(frame, m)) {
      this.fail(m, "Not connected: the message will be sent when the connection is back.");
      return;
    }
    if (!this.pending.includes(m)) this.pending.push(m);
    m.timer = setTimeout(() => this.fail(m, "No answer from the server."), PENDING_TIMEOUT_MS);
    this.emit("messages", ch.id);
  }

  async retry(channelId, localId) {
    const ch = this.channels.get(channelId);
    const m = ch?.messages.find((x) => x.id === localId);
    if (!m || m.status !== "failed") return;
    // Same id and ciphertext: if the first try was stored after all, the server answers
    // with it instead of storing it twice. A refused send (no outbox entry) gets a new one.
    if (!this.outbox.has(m)) {
      m.clientMessageId = null;
      m.key_version = rotation.writeVersion(ch);
      m.body = await e2e.seal(ch.key, m.plain ?? m.text);
    }
    await this.transmit(ch, m);
  }

  fail(m, reason) {
    clearTimeout(m.timer);
    this.socket.answered(m);
    this.pending = this.pending.filter((p) => p !== m);
    m.status = "failed";
    m.error = reason;
    this.emit("messages", m.channelId || null);
  }

  onServerError(event) {
    // The socket tells which frame an error answers: one of our messages, or another
    // part's frame (a voice_join: the voice room says why itself).
    if (event.answers && !this.pending.includes(event.answers)) return;
    const m = event.answers;
    const reasons = {
      rate_limited: "Sending too fast: wait a moment and retry.",
      channel_not_found: "This channel no longer exists.",
      invalid_message: "The server refused this message.",
      invalid_attachment: "The server refused this message's attachments.",
      server_error: "The server could not store the message; retry later.",
    };
    const reason = reasons[event.code] || (event.code || event.message ? errorSentence(event.code, event.message) : "The server refused this.");
    // Refused for good (not "try again"): not sent again after a reconnect.
    if (m && !["server_error", "rate_limited"].includes(event.code)) this.outbox.acknowledged(m.clientMessageId);
    if (m && event.code in reasons) this.fail(m, reason);
    else if (!String(event.code || "").startsWith("voice")) this.notice(reason);
  }

  // ---- handing keys on ----

  // Every member hands on the keys it holds, once the key is known to be the right one:
  // it matches the commitment. A channel without a commitment yet keeps the old rule
  // (only its creator's or an admin's devices), since others would refuse the key.
  mayShareChannel(ch) {
    if (!ch.key || !ch.envelope || ch.creating) return false;
    if (ch.key_commitment) return ch.keyCommitment === ch.key_commitment;
    return ch.created_by === this.me.id || this.canManageChannels;
  }

  // The directory key: checked against its commitment when there is one; before that,
  // as always, any holder shares it.
  mayShareDirectory() {
    if (!this.dirKey || !this.dirEnvelope) return false;
    return this.dirCommitment === null || this.dirKeyCommitment === this.dirCommitment;
  }

  async onDeviceJoined(event) {
    if (event.device_id === this.me.deviceId) return;
    if (!this.online.has(event.sender)) {
      this.online.add(event.sender);
      this.emit("people");
    }
    // A key holder coming online hands on what we lack: ask again for missing keys.
    this.askAgainForKeys();
    let target = this.devicesAll.find((d) => d.device_id === event.device_id);
    if (!target) {
      await this.refreshDevices().catch(() => {});
      target = this.devicesAll.find((d) => d.device_id === event.device_id);
    }
    if (target) this.shareSoon(() => [target]);
  }

  // One sharer is enough: every page waits a random moment (so those online together do
  // not all wrap at once), then wraps only for devices it has not served yet and that
  // have not confirmed the key already (GET /keys/held: another member was quicker).
  shareSoon(targets) {
    const timer = setTimeout(async () => {
      this.shareTimers.delete(timer);
      if (this.ended) return;
      try {
        await this.shareKeys(targets());
      } catch (error) {
        if (!this.guard(error)) console.warn("dialtone: key sharing failed:", error.message);
      } finally {
        this.sharesDone += 1;
      }
    }, Math.random() * SHARE_JITTER_MS);
    this.shareTimers.add(timer);
  }

  // Wrap each key we may hand on for the given devices we have not served yet
  // (remembered per key in IndexedDB, so a device is served once by each member).
  async shareKeys(targets) {
    // Every version of each channel key held, private rooms' to their members only.
    const jobs = rotation.shareJobs(this);
    if (this.mayShareDirectory()) {
      jobs.push({
        record: `shared:${this.me.deviceId}:directory`,
        holds: (held) => held.directory === true,
        envelope: this.dirEnvelope,
        post: (envelopes) => this.api.postDirectoryKeys(envelopes),
      });
    }
    // What each target already confirmed it holds (GET /keys/held, read once per target
    // and share, after the jitter): another member was quicker, so this one skips it.
    const held = new Map();
    const heldBy = async (d) => {
      if (!held.has(d.device_id)) {
        held.set(
          d.device_id,
          this.api.keysHeld(d.device_id).catch((error) => {
            // Signed out or banned: the job's catch ends the session. A server without
            // the endpoint, or a device gone: wrap as before.
            if (error instanceof ApiError && (error.status === 401 || error.status === 403)) throw error;
            return { channels: [], directory: false };
          }),
        );
      }
      return held.get(d.device_id);
    };
    // Each key on its own: one refused upload must not keep the others from the newcomer.
    for (const job of jobs) {
      try {
        const done = new Set((await store.get(job.record)) || []);
        done.add(this.me.deviceId);
        const unserved = (job.pick ? await job.pick(targets) : targets).filter((d) => !done.has(d.device_id));
        const fresh = [];
        for (const d of unserved) {
          if (!job.holds(await heldBy(d))) fresh.push(d);
        }
        if (!fresh.length) continue;
        const key = await e2e.unwrapEnvelope(this.device.privateKey, job.envelope.sender_public_key, job.envelope.envelope, true);
        const envelopes = await this.wrapForAll(key, fresh);
        for (let i = 0; i < envelopes.length; i += 1000) await job.post(envelopes.slice(i, i + 1000));
        // Read again: another share may have finished meanwhile.
        const now = new Set((await store.get(job.record)) || []);
        for (const d of fresh) now.add(d.device_id);
        await store.put(job.record, [...now]);
      } catch (error) {
        if (this.guard(error)) return;
        console.warn("dialtone: could not hand a key on to a device:", error.message);
      }
    }
  }
  // ---- devices ----

  async myDevices() {
    const { devices } = await this.attempt(() => this.api.devices(), "Loading devices");
    return devices;
  }

  async revokeDevice(deviceId) {
    await this.attempt(() => this.api.revokeDevice(deviceId), "Removing the device");
    if (deviceId === this.me.deviceId) await this.end("This device was removed.");
    else await this.refreshDevices();
  }

  // ---- alerts for a hidden tab (opt-in) ----

  async setNotify(wanted) {
    if (wanted && "Notification" in window && Notification.permission === "default") {
      await Notification.requestPermission();
    }
    this.notifyWanted = wanted;
    localStorage.setItem("dialtone.notify", wanted ? "1" : "0");
    this.emit("notify", wanted);
  }

  alert(ch, m) {
    if (!this.notifyWanted) return;
    const who = this.profiles.get(m.sender) || m.senderName || "someone";
    if ("Notification" in window && Notification.permission === "granted") {
      new Notification(`#${this.channelName(ch)}`, { body: `New message from ${who}`, tag: ch.id });
    }
    try {
      this.audio ||= new AudioContext();
      const osc = this.audio.createOscillator();
      const gain = this.audio.createGain();
      osc.frequency.value = 880;
      gain.gain.setValueAtTime(0.08, this.audio.currentTime);
      gain.gain.exponentialRampToValueAtTime(0.0001, this.audio.currentTime + 0.25);
      osc.connect(gain).connect(this.audio.destination);
      osc.start();
      osc.stop(this.audio.currentTime + 0.25);
    } catch {
      // No audio output: the notification is enough.
    }
  }
}
