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

export class ApiError extends Error {
  constructor(status, code, message, retryAfter = null) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter;
  }

  // What to show a person: the server's own sentence when it gave one.
  get friendly() {
    const base = this.message || STATUS_TEXT[this.status] || `Request failed (${this.status}).`;
    if (this.status === 429 && this.retryAfter) return `${base} (retry in ${this.retryAfter} s)`;
    return base;
  }
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
  createChannel(nameEnc) { return this.post("/channels", { name_enc: nameEnc }); }
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
  postChannelKeys(channelId, envelopes) { return this.post("/channels/keys", { channel_id: channelId, envelopes }); }
  directoryKey() { return this.get("/directory/keys"); }
  postDirectoryKeys(envelopes) { return this.post("/directory/keys", { envelopes }); }
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
