// The wire: HTTP calls with the bearer token, and the WebSocket as an event bus.
// Nothing here knows about keys or plaintext; client.js puts the two together.

// A sentence a person can act on, for every status the server can answer.
const STATUS_TEXT = {
  400: "The server refused the request as invalid.",
  401: "Your session has ended or the credentials are wrong.",
  403: "You are not allowed to do that.",
  404: "That no longer exists.",
  405: "The server does not accept this request.",
  408: "The request took too long. Try again.",
  409: "That name is already taken.",
  410: "This invite has expired or was already used.",
  413: "That is too large to send.",
  426: "This needs a WebSocket connection.",
  429: "Too many attempts. Wait a moment and try again.",
  431: "The request headers are too large.",
  500: "The server had a problem. Try again later.",
  503: "The server is busy or cannot reach its database. Try again shortly.",
};

// The server's own `error` texts are short technical phrases ("too many attempts, try
// again later"); every code a page can meet gets a sentence of its own here.
// Codes whose server text carries the detail a person needs (which rule a password or a
// username breaks) are left out: their text is shown, made a sentence.
export const CODE_TEXT = {
  rate_limited: "You are doing that too often. Wait a moment and try again.",
  network: "Cannot reach the server. Check your connection.",
  unauthorized: "Your session has ended. Please sign in again.",
  banned: "You are banned from this server.",
  account_locked: "Your account is locked. Ask an admin.",
  forbidden: "You are not allowed to do that.",
  not_admin: "Only an admin can do that.",
  not_moderator: "Only admins and moderators can do that.",
  not_trusted: "Only trusted members can do that.",
  not_allowed: "You are not allowed to do that.",
  not_owner: "Only the owner can do that: of the account, or of the private room.",
  channel_not_found: "This channel no longer exists.",
  private_rooms_restricted: "You are not allowed to create private rooms on this server.",
  public_channel: "Public channels have no member list and no key rotation: this works in private rooms only.",
  direct_channel: "A direct conversation is always just the two of you.",
  not_a_member: "That person is not a member of this room.",
  message_not_found: "That message no longer exists.",
  user_not_found: "That person no longer has an account here.",
  user_deleted: "That person no longer has an account here.",
  direct_self: "You cannot open a direct message with yourself.",
  direct_messages_refused: "This person is not taking new direct messages from you.",
  block_self: "You cannot block yourself.",
  device_not_found: "That device is no longer signed in.",
  envelope_not_found: "This device does not hold that key yet.",
  unknown_device: "A device was removed while its key was being shared. Try again.",
  duplicate_device: "The same device was listed twice.",
  sender_mismatch: "Keys can only be shared from this device.",
  invalid_public_key: "The device key is not valid.",
  invalid_credentials: "Wrong username or password.",
  username_taken: "That username is taken. Pick another one.",
  registration_closed: "Registration is closed on this server.",
  invalid_invite: "That invite is not valid. Ask for a new link.",
  invite_not_found: "This invite does not exist. Ask for a new link.",
  invite_gone: "This invite has expired or was already used. Ask for a new one.",
  device_limit: "This account has too many devices. Remove one you no longer use.",
  last_admin: "At least one admin must remain.",
  invalid_role: "That role does not exist.",
  invalid_ban: "That ban is not valid.",
  invalid_address: "That is not an IP address or subnet.",
  ban_not_found: "That ban no longer exists.",
  invalid_setting: "That setting value is not valid.",
  unknown_setting: "That setting does not exist.",
  invalid_time: "That time is not valid.",
  invalid_state: "That state does not exist.",
  invalid_topic: "That log topic does not exist.",
  invalid_limit: "That limit is not valid.",
  invalid_cursor: "The page of history asked for is not valid.",
  invalid_input: "The server refused the request as invalid.",
  invalid_message: "The server refused this message.",
  invalid_commitment: "The key commitment is not valid.",
  invalid_key_version: "That key version does not exist yet.",
  commitment_set: "This key commitment was already set.",
  key_version_conflict: "The room's key changed meanwhile. Its new key is being fetched; try again in a moment.",
  not_a_member_device: "That device belongs to someone who is not a member of this room.",
  missing_parameter: "The request was incomplete.",
  turn_not_configured: "Voice relaying (TURN) is not configured on this server.",
  server_error: "The server had a problem. Try again later.",
  unavailable: "The server is busy or cannot reach its database. Try again shortly.",
  not_ready: "The server is starting or cannot reach its database. Try again shortly.",
  draining: "The server is restarting. Try again in a moment.",
  conflict: "That changed meanwhile. Reload and try again.",
  gone: "That is no longer available.",
  not_found: "That no longer exists.",
  device_exists: "This device is already signed in.",
  invalid_admin_token: "The admin token is wrong.",
  method_not_allowed: "The server does not accept this request.",
  payload_too_large: "That is too large to send.",
  unsupported_media_type: "The server did not understand the request's format.",
  timeout: "The request took too long. Try again.",
  bad_request: "The server could not read the request.",
  upgrade_required: "This needs a WebSocket connection.",
  unsupported_type: "The server does not know this kind of message.",
  no_backup: "There is no key backup on the server yet.",
  backup_conflict: "Another device changed your key backup meanwhile. Try again.",
  backup_too_large: "Your key backup is larger than this server accepts.",
  invalid_backup: "The key backup was not in a form the server accepts.",
  ban_too_wide: "That network is wider than an address ban may cover on this server.",
  staff_address: "That network holds the address of an admin or moderator who is connected now.",
  file_too_large: "That file is larger than this server accepts.",
  storage_quota_exceeded: "You have used all the file storage this server gives you. Delete some files first.",
  length_required: "The upload did not say how large the file is.",
  invalid_length: "The upload's size did not match the file sent.",
  file_not_found: "That file is no longer available.",
  invalid_range: "That part of the file does not exist.",
  invalid_attachment: "An attached file could not be sent with this message. Attach it again.",
  invalid_image: "That picture cannot be used as this channel's image. Upload it again.",
};

// A server phrase made into a sentence, for codes the page does not know yet.
export function sentence(text) {
  const clean = String(text).trim();
  if (!clean) return clean;
  const first = clean[0].toUpperCase() + clean.slice(1);
  return /[.!?]$/.test(first) ? first : `${first}.`;
}

export class ApiError extends Error {
  constructor(status, code, message, retryAfter = null) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter;
  }

  // What to show a person: a sentence for the code, else the server's text as one.
  get friendly() {
    const base = errorSentence(this.code, this.message, this.status);
    if (this.status === 429 && this.retryAfter) {
      const s = this.retryAfter === 1 ? "second" : "seconds";
      return `${base.replace(/\.$/, "")}: about ${this.retryAfter} ${s}.`;
    }
    return base;
  }
}

// One sentence for an error code, over HTTP or the socket.
export function errorSentence(code, message, status = 0) {
  return CODE_TEXT[code] || (message ? sentence(message) : STATUS_TEXT[status]) || `Request failed (${status}).`;
}

export function describeStatus(status) {
  return STATUS_TEXT[status] || `Request failed (${status}).`;
}

export class Api {
  constructor(token = null) {
    this.token = token;
  }

  async request(method, path, { body, query } = {}) {
    let url = path;
    if (query) {
      const params = new URLSearchParams();
      for (const [k, v] of Object.entries(query)) if (v !== undefined && v !== null) params.set(k, v);
      const text = params.toString();
      if (text) url += `?${text}`;
    }
    const headers = {};
    if (this.token) headers.Authorization = `Bearer ${this.token}`;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    let response;
    try {
      response = await fetch(url, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        cache: "no-store",
        credentials: "omit",
      });
    } catch {
      throw new ApiError(0, "network", "Cannot reach the server. Check your connection.");
    }
    // The server's clock, for asking later what changed since (deletions, for instance).
    const date = Date.parse(response.headers.get("Date") || "");
    if (!Number.isNaN(date)) this.serverDate = date;
    if (response.status === 204) return null;
    let data = null;
    const text = await response.text();
    if (text) {
      try {
        data = JSON.parse(text);
      } catch {
        data = text;
      }
    }
    if (!response.ok) {
      const message = data && typeof data === "object" && data.error ? data.error : describeStatus(response.status);
      const code = data && typeof data === "object" && data.code ? data.code : "http_" + response.status;
      const retry = response.headers.get("Retry-After");
      throw new ApiError(response.status, code, message, retry ? Number(retry) : null);
    }
    return data;
  }

  get(path, query) { return this.request("GET", path, { query }); }
  post(path, body, query) { return this.request("POST", path, { body, query }); }

  register(username, password, publicKey, inviteToken) {
    return this.post("/auth/register", { username, password, public_key: publicKey, invite_token: inviteToken });
  }
  login(username, password, publicKey) {
    return this.post("/auth/login", { username, password, public_key: publicKey });
  }
  logout(all = false) { return this.post("/auth/logout", undefined, all ? { all: 1 } : undefined); }

  channels() { return this.get("/channels"); }
  createChannel(nameEnc, keyCommitment = null) {
    return this.post("/channels", keyCommitment ? { name_enc: nameEnc, key_commitment: keyCommitment } : { name_enc: nameEnc });
  }
  setChannelCommitment(channelId, keyCommitment) {
    return this.request("PUT", "/channels/commitment", { body: { channel_id: channelId, key_commitment: keyCommitment } });
  }
  renameChannel(channelId, nameEnc) {
    return this.request("PATCH", "/channels", { body: { channel_id: channelId, name_enc: nameEnc } });
  }
  deleteChannel(channelId) { return this.request("DELETE", "/channels", { query: { channel_id: channelId } }); }
  history(channelId, { before, after, after_seq, limit } = {}) {
    return this.get("/channels/messages", { channel_id: channelId, before, after, after_seq, limit });
  }
  deletions(channelId, { since, cursor } = {}) {
    return this.get("/channels/messages/deleted", { channel_id: channelId, since, cursor, limit: 500 });
  }
  channelKey(channelId) { return this.get("/channels/keys", { channel_id: channelId }); }
  // Every envelope addressed to this device, one per sender device (preferred first).
  channelKeys(channelId) { return this.get("/channels/keys", { channel_id: channelId, all: 1 }); }
  postChannelKeys(channelId, envelopes) { return this.post("/channels/keys", { channel_id: channelId, envelopes }); }
  directoryKey() { return this.get("/directory/keys"); }
  directoryKeys() { return this.get("/directory/keys", { all: 1 }); }
  setDirectoryCommitment(keyCommitment) {
    return this.request("PUT", "/directory/commitment", { body: { key_commitment: keyCommitment } });
  }
  serverInfo() { return this.get("/server/info"); }
  postDirectoryKeys(envelopes) { return this.post("/directory/keys", { envelopes }); }
  // Which keys a device has confirmed (sealed for itself): a sharer skips those.
  keysHeld(deviceId) { return this.get("/keys/held", { device_id: deviceId }); }
  profiles() { return this.get("/users/profiles"); }
  setProfile(nameEnc) { return this.post("/users/profiles", { name_enc: nameEnc }); }
  allDeviceKeys() { return this.get("/devices/keys", { all: 1 }); }
  devices() { return this.get("/devices"); }
  revokeDevice(deviceId) { return this.request("DELETE", `/devices/${encodeURIComponent(deviceId)}`); }
  presence(userIds) { return this.post("/presence", { user_ids: userIds }); }
  createInvite() { return this.post("/server/invites"); }
  turn() { return this.get("/voice/turn"); }
}

// Close codes after which reconnecting is pointless: the session is over.
const FINAL_REASONS = new Set(["revoked", "session_expired", "banned", "locked"]);

// The WebSocket as an event bus. Subscribe with on(type, handler) to server events by
// their "type" ("channel.message.new", "voice_roster", ...), to "*" for every event, or to
// the socket's own lifecycle: "status" ({state, attempt, retryIn}), "open", "ended".
// send(frame) returns false when the socket is not open (the frame is not queued).
export class Socket {
  constructor(token, { url = null, maxDelay = 30000 } = {}) {
    this.token = token;
    this.url = url || `${location.protocol === "https:" ? "wss:" : "ws:"}//${location.host}/ws`;
    this.maxDelay = maxDelay;
    this.handlers = new Map();
    this.awaiting = [];
    this.ws = null;
    this.attempt = 0;
    this.timer = null;
    this.stopped = false;
    this.state = "idle";
    this.onOnline = () => this.reconnectNow();
  }

  on(type, handler) {
    if (!this.handlers.has(type)) this.handlers.set(type, new Set());
    this.handlers.get(type).add(handler);
    return () => this.off(type, handler);
  }

  off(type, handler) {
    this.handlers.get(type)?.delete(handler);
  }

  emit(type, value) {
    for (const handler of [...(this.handlers.get(type) || [])]) {
      const failed = (error) => console.warn("dialtone: handler for", type, "failed:", error);
      try {
        const result = handler(value);
        // Async handlers too: one that fails must not become an unhandled rejection.
        if (result && typeof result.catch === "function") result.catch(failed);
      } catch (error) {
        failed(error);
      }
    }
  }

  get isOpen() {
    return this.ws !== null && this.ws.readyState === WebSocket.OPEN;
  }

  send(frame) {
    if (!this.isOpen) return false;
    this.ws.send(JSON.stringify(frame));
    return true;
  }

  // A frame the server answers, with an event of its own or with an `error` that names no
  // frame. The server handles a socket's frames one at a time, in order, so an error
  // answers the oldest frame still awaiting its answer: the "error" event carries that
  // frame's `owner` as `answers` (null when none waits). Owners call answered(owner) when
  // the good answer comes.
  sendAwaiting(frame, owner) {
    if (!this.send(frame)) return false;
    this.awaiting.push(owner);
    return true;
  }

  answered(owner) {
    const at = this.awaiting.indexOf(owner);
    if (at >= 0) this.awaiting.splice(at, 1);
  }

  setState(state, extra = {}) {
    this.state = state;
    this.emit("status", { state, attempt: this.attempt, ...extra });
  }

  connect() {
    this.stopped = false;
    clearTimeout(this.timer);
    addEventListener("online", this.onOnline);
    this.setState("connecting");
    // Browsers cannot set headers on a WebSocket: the token travels as a subprotocol.
    const ws = new WebSocket(this.url, [`dialtone.bearer.${this.token}`]);
    this.ws = ws;
    ws.onopen = () => {
      if (this.ws !== ws) return;
      const reconnected = this.attempt > 0 || this.everOpened;
      this.everOpened = true;
      this.attempt = 0;
      this.setState("open");
      this.emit("open", { reconnected });
    };
    ws.onmessage = (message) => {
      if (this.ws !== ws || typeof message.data !== "string") return;
      let event;
      try {
        event = JSON.parse(message.data);
      } catch {
        return;
      }
      if (!event || typeof event.type !== "string") return;
      // Voice errors (voice_not_joined) answer voice frames nobody awaits (leave, relays).
      if (event.type === "error" && !String(event.code || "").startsWith("voice")) {
        event = { ...event, answers: this.awaiting.length ? this.awaiting.shift() : null };
      }
      this.emit(event.type, event);
      this.emit("*", event);
    };
    ws.onclose = (close) => {
      if (this.ws !== ws) return;
      this.ws = null;
      this.awaiting = []; // a new socket answers nothing sent on this one
      if (this.stopped) return;
      if (close.code === 1008 && FINAL_REASONS.has(close.reason)) {
        this.stopped = true;
        this.setState("ended", { reason: close.reason });
        this.emit("ended", { reason: close.reason });
        return;
      }
      this.scheduleReconnect();
    };
  }

  scheduleReconnect() {
    this.attempt += 1;
    // Exponential backoff with jitter, so a restarted server is not hit by everyone at once.
    const ceiling = Math.min(this.maxDelay, 500 * 2 ** Math.min(this.attempt, 10));
    const delay = Math.round(ceiling / 2 + Math.random() * (ceiling / 2));
    this.setState("reconnecting", { retryIn: delay });
    this.timer = setTimeout(() => this.connect(), delay);
  }

  reconnectNow() {
    if (this.stopped || this.isOpen || this.state === "connecting") return;
    clearTimeout(this.timer);
    this.connect();
  }

  close() {
    this.stopped = true;
    clearTimeout(this.timer);
    removeEventListener("online", this.onOnline);
    if (this.ws) this.ws.close(1000, "bye");
    this.ws = null;
    this.setState("closed");
  }
}
