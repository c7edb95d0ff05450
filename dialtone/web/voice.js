// Voice: a full-mesh WebRTC call with everyone in a channel's voice room.
//
// The server keeps the rooms and relays signalling; it never sees media. Frames:
//   → voice_join / voice_leave {channel_id}
//   → webrtc_offer / webrtc_answer {channel_id, recipient, sdp}
//   → ice_candidate {channel_id, recipient, candidate}
//   ← voice_roster {channel_id, users}       (to us, after our voice_join; we are in it)
//   ← voice_join / voice_leave {channel_id, sender}   (others entering / leaving our room)
//   ← voice.presence {channel_id, sender, active}     (every room, to every socket)
//   ← voice.presence.snapshot {voice_rooms}           (on every (re)connect)
//   ← webrtc_offer / webrtc_answer / ice_candidate with `sender` set by the server
//
// Every pair of members has one RTCPeerConnection. Negotiation follows the "perfect
// negotiation" pattern: the member with the lexicographically smaller user id is the
// impolite side and makes the first offer; the other one is polite, answers, and backs
// off (rolls back) if both ever offer at once (e.g. when one of them turns a camera on
// while the other renegotiates). So two peers never end up in glare.
//
// Media paths: ICE servers come from GET /voice/turn (coturn REST credentials). With
// "relay only" on (a per-browser setting, see RELAY_ONLY_KEY), the connection uses only
// the TURN relay: peers never learn each other's network addresses.

export const RELAY_ONLY_KEY = "dialtone.voice.relayOnly";
const VOLUME_KEY = "dialtone.voice.volume.";
const MICROPHONE_KEY = "dialtone.voice.microphone";
const CAMERA_KEY = "dialtone.voice.camera";

function audioConstraints(deviceId) {
  const audio = { echoCancellation: true, noiseSuppression: true, autoGainControl: true };
  if (deviceId) audio.deviceId = { exact: deviceId };
  return { audio, video: false };
}

function videoConstraints(deviceId) {
  const video = { width: { ideal: 640 }, height: { ideal: 480 }, frameRate: { ideal: 24 } };
  if (deviceId) video.deviceId = { exact: deviceId };
  return { video };
}

// The chosen device ("exact": browsers prefer a device already open over an "ideal" one),
// or the default one when the chosen device is gone.
async function openDevice(media, constraints, deviceId) {
  try {
    return await media.getUserMedia(constraints(deviceId));
  } catch (error) {
    const gone = error && (error.name === "OverconstrainedError" || error.name === "NotFoundError");
    if (!deviceId || !gone) throw error;
    return media.getUserMedia(constraints(""));
  }
}

// Speaking indicator: RMS level of the last analyser window above this counts as speech,
// and the indicator stays on this long after the level drops (no flicker between words).
const SPEAKING_LEVEL = 0.015;
const SPEAKING_HOLD_MS = 350;
const LEVEL_INTERVAL_MS = 100;
// The polite side of a pair waits this long for the other's first offer before offering
// itself (covers a peer whose client uses another convention for who offers first).
const OFFER_WAIT_MS = 4000;
// TURN credentials older than this are fetched again before they are used anew.
const ICE_REFRESH_MS = 60 * 60 * 1000;

function readStorage(key) {
  try {
    return globalThis.localStorage?.getItem(key) ?? null;
  } catch {
    return null;
  }
}

function writeStorage(key, value) {
  try {
    if (value === null) globalThis.localStorage?.removeItem(key);
    else globalThis.localStorage?.setItem(key, value);
  } catch {
    // Storage may be unavailable (private mode); the setting then lasts for this page only.
  }
}

export function relayOnlySetting() {
  return readStorage(RELAY_ONLY_KEY) === "1";
}

export function setRelayOnlySetting(on) {
  writeStorage(RELAY_ONLY_KEY, on ? "1" : null);
}

// RTCIceServer list from the server's TURN credentials; [] when the server has no TURN.
export async function iceServersFrom(api) {
  let turn;
  try {
    turn = await api.turn();
  } catch (error) {
    if (error && error.status === 404) return [];
    throw error;
  }
  if (!turn || !Array.isArray(turn.uris) || turn.uris.length === 0) return [];
  const servers = [{ urls: turn.uris, username: turn.username, credential: turn.credential }];
  // coturn answers STUN on its TURN ports too: offer those for direct (server-reflexive)
  // paths, so a relay is used only when peers cannot reach each other.
  const stun = turn.uris
    .filter((uri) => /^turn:/i.test(uri) && !/transport=tcp/i.test(uri))
    .map((uri) => "stun:" + uri.slice(5).split("?")[0]);
  if (stun.length) servers.push({ urls: [...new Set(stun)] });
  return servers;
}

// Who is in which voice room, for every channel: from the snapshot every new socket gets
// and the voice.presence events after it. Emits "change".
export class VoicePresence extends EventTarget {
  constructor(socket) {
    super();
    this.rooms = new Map();
    this.unsubscribe = [
      socket.on("voice.presence.snapshot", (event) => {
        this.rooms = new Map();
        for (const [channelId, users] of Object.entries(event.voice_rooms || {})) {
          if (Array.isArray(users) && users.length) this.rooms.set(channelId, new Set(users));
        }
        this.changed();
      }),
      socket.on("voice.presence", (event) => {
        const users = this.rooms.get(event.channel_id) || new Set();
        if (event.active) users.add(event.sender);
        else users.delete(event.sender);
        if (users.size) this.rooms.set(event.channel_id, users);
        else this.rooms.delete(event.channel_id);
        this.changed();
      }),
    ];
  }

  users(channelId) {
    return [...(this.rooms.get(channelId) || [])].sort();
  }

  changed() {
    this.dispatchEvent(new Event("change"));
  }

  dispose() {
    for (const off of this.unsubscribe) off();
    this.unsubscribe = [];
  }
}

// A readable sentence for getUserMedia failures.
function mediaError(error, what) {
  switch (error && error.name) {
    case "NotAllowedError":
    case "SecurityError":
      return `Access to your ${what} was refused. Allow it in the browser's site settings.`;
    case "NotFoundError":
    case "OverconstrainedError":
      return `No ${what} was found.`;
    case "NotReadableError":
    case "AbortError":
      return `Your ${what} is in use by another program or cannot be opened.`;
    default:
      return `Cannot use your ${what}: ${(error && error.message) || error}`;
  }
}

// The remote side sent either a bare "candidate:…" line (as the published protocol shows)
// or a JSON RTCIceCandidateInit; accept both.
export function parseCandidate(text) {
  if (typeof text !== "string" || !text) return null;
  if (text.startsWith("{")) {
    try {
      const init = JSON.parse(text);
      if (init && typeof init.candidate === "string") return init;
    } catch {
      return null;
    }
    return null;
  }
  // With BUNDLE (what browsers negotiate) every candidate belongs to the first m-line.
  return { candidate: text, sdpMLineIndex: 0 };
}

// Each RTCPeerConnection has its own DTLS certificate: an offer whose fingerprint differs
// from the one we negotiated comes from a new connection, not a renegotiation.
function fingerprint(sdp) {
  const match = /^a=fingerprint:(.+)$/m.exec(sdp || "");
  return match ? match[1].trim().toLowerCase() : null;
}

export function isNewSession(pc, offerSdp) {
  const known = fingerprint(pc.remoteDescription?.sdp);
  const offered = fingerprint(offerSdp);
  return !!known && !!offered && known !== offered;
}

// The server limits signalling frames per socket (by default a burst of 50, then 20 per
// second) and drops what goes over. Joining a big room produces an offer or answer and a
// handful of ICE candidates per member at once, so signalling goes out through a token
// bucket a little below those defaults; frames wait their turn, in order.
export class SignalPacer {
  constructor(
    send,
    {
      burst = 40,
      rate = 15,
      now = () => performance.now(),
      setTimer = (fn, ms) => setTimeout(fn, ms),
      clearTimer = (id) => clearTimeout(id),
    } = {},
  ) {
    Object.assign(this, { sendFrame: send, burst, rate, now, setTimer, clearTimer });
    this.tokens = burst;
    this.updated = now();
    this.queue = [];
    this.timer = null;
  }

  refill() {
    const at = this.now();
    this.tokens = Math.min(this.burst, this.tokens + ((at - this.updated) * this.rate) / 1000);
    this.updated = at;
  }

  // A frame sent directly (voice_join / voice_leave) still counts against the budget.
  spend() {
    this.refill();
    this.tokens -= 1;
  }

  send(frame) {
    this.queue.push(frame);
    this.pump();
  }

  pump() {
    this.refill();
    while (this.queue.length && this.tokens >= 1) {
      this.tokens -= 1;
      this.sendFrame(this.queue.shift());
    }
    if (this.queue.length && this.timer === null) {
      const wait = Math.max(1, Math.ceil(((1 - this.tokens) * 1000) / this.rate));
      this.timer = this.setTimer(() => {
        this.timer = null;
        this.pump();
      }, wait);
    }
  }

  // Frames for a connection that is gone are not worth sending.
  drop(recipient) {
    this.queue = this.queue.filter((frame) => frame.recipient !== recipient);
  }

  clear() {
    this.queue = [];
    if (this.timer !== null) this.clearTimer(this.timer);
    this.timer = null;
  }
}

// Audio level of one MediaStream through an AnalyserNode. Each reading looks at the
// whole time since the previous one (the analyser's window spans more than
// LEVEL_INTERVAL_MS), cut into short blocks: the loudest block's RMS is the level, so a
// short sound between two readings is not missed.
const LEVEL_BLOCK = 512;

export class LevelMeter {
  constructor(context, stream) {
    this.source = context.createMediaStreamSource(stream);
    this.analyser = context.createAnalyser();
    const wanted = (context.sampleRate * LEVEL_INTERVAL_MS * 1.5) / 1000;
    let size = LEVEL_BLOCK;
    while (size < wanted && size < 32768) size *= 2;
    this.analyser.fftSize = size;
    this.buffer = new Float32Array(size);
    this.source.connect(this.analyser);
    this.lastLoud = -Infinity;
  }

  // True while speaking (with a short hold after the last loud block).
  speaking(now) {
    const buffer = this.buffer;
    this.analyser.getFloatTimeDomainData(buffer);
    let loudest = 0;
    for (let start = 0; start < buffer.length; start += LEVEL_BLOCK) {
      let sum = 0;
      for (let i = start; i < start + LEVEL_BLOCK; i++) sum += buffer[i] * buffer[i];
      loudest = Math.max(loudest, sum / LEVEL_BLOCK);
    }
    if (Math.sqrt(loudest) > SPEAKING_LEVEL) this.lastLoud = now;
    return now - this.lastLoud < SPEAKING_HOLD_MS;
  }

  disconnect() {
    try {
      this.source.disconnect();
    } catch {
      // already disconnected
    }
  }
}

class LeftError extends Error {
  constructor() {
    super("left the voice room");
    this.name = "LeftError";
  }
}

// One other member of the room and our connection to them.
class Peer {
  constructor(userId, polite) {
    this.userId = userId;
    this.polite = polite;
    this.pc = null;
    this.makingOffer = false;
    this.ignoreOffer = false;
    this.chain = Promise.resolve();
    this.offerTimer = null;
    // What the UI shows.
    this.state = "new"; // RTCPeerConnection.connectionState, or "waiting" before one exists
    this.route = null; // "direct" | "relay" once connected
    this.speaking = false;
    this.volume = 1;
    this.audioStream = null;
    this.videoStream = null;
    this.audio = null;
    this.meter = null;
    this.audioSender = null;
    this.videoSender = null;
  }
}

// The call. One VoiceRoom per signed-in client: joining another channel's room leaves the
// current one. Emits "change" whenever anything the UI shows changed, and "error" with
// {detail: message} for a problem to show a person.
export class VoiceRoom extends EventTarget {
  constructor({ socket, api, selfId, media = globalThis.navigator?.mediaDevices }) {
    super();
    this.socket = socket;
    this.api = api;
    this.selfId = selfId;
    this.media = media;
    this.state = "idle"; // idle | joining | joined
    this.channelId = null;
    this.peers = new Map();
    this.muted = false;
    this.camera = false;
    this.speaking = false;
    this.listenOnly = false;
    this.relayOnly = relayOnlySetting();
    this.microphoneId = readStorage(MICROPHONE_KEY) || "";
    this.cameraId = readStorage(CAMERA_KEY) || "";
    this.localStream = null;
    this.cameraTrack = null;
    this.cameraStream = null;
    this.iceServers = [];
    this.iceFetchedAt = 0;
    this.context = null;
    this.localMeter = null;
    this.levelTimer = null;
    this.pendingJoin = null;
    this.joinsSent = [];
    this.offerToAll = false;
    this.cameraOpening = false;
    this.error = null;
    this.changeQueued = false;
    this.signals = new SignalPacer((frame) => this.socket.send(frame));
    this.unsubscribe = [
      socket.on("voice_roster", (e) => this.onRoster(e)),
      socket.on("voice_join", (e) => this.onMemberJoined(e)),
      socket.on("voice_leave", (e) => this.onMemberLeft(e)),
      socket.on("voice.presence", (e) => this.onPresence(e)),
      socket.on("webrtc_offer", (e) => this.onSignal(e, "offer")),
      socket.on("webrtc_answer", (e) => this.onSignal(e, "answer")),
      socket.on("ice_candidate", (e) => this.onSignal(e, "candidate")),
      socket.on("error", (e) => this.onServerError(e)),
      socket.on("open", (e) => this.onSocketOpen(e)),
      socket.on("ended", () => this.teardown()),
    ];
  }

  // ------------------------------------------------------------------ public controls

  get active() {
    return this.state !== "idle";
  }

  setRelayOnly(on) {
    this.relayOnly = !!on;
    setRelayOnlySetting(this.relayOnly);
    this.changed();
  }

  async join(channelId) {
    if (this.active && this.channelId === channelId) return;
    if (this.active) await this.leave();
    this.state = "joining";
    this.channelId = channelId;
    this.error = null;
    this.changed();
    try {
      const [mic, ice] = await Promise.allSettled([this.openMicrophone(), iceServersFrom(this.api)]);
      if (mic.status === "rejected") throw mic.reason;
      const stream = mic.value;
      if (ice.status === "rejected") {
        // No ICE servers (e.g. the session ended): release the microphone we just opened.
        for (const track of stream?.getTracks() || []) track.stop();
        throw ice.reason;
      }
      const iceServers = ice.value;
      if (this.channelId !== channelId || this.state !== "joining") {
        // Left (or switched) while we waited for the microphone.
        for (const track of stream?.getTracks() || []) track.stop();
        throw new LeftError();
      }
      if (this.relayOnly && iceServers.length === 0) {
        for (const track of stream?.getTracks() || []) track.stop();
        throw new Error("Relay only is on, but this server has no TURN relay. Turn relay only off to join.");
      }
      this.iceServers = iceServers;
      this.iceFetchedAt = Date.now();
      this.localStream = stream;
      this.listenOnly = !stream;
      this.applyMute();
      this.startLevels();
      await this.sendJoin();
    } catch (error) {
      if (error instanceof LeftError) return; // left (or switched rooms) while joining
      if (this.channelId === channelId) this.teardown();
      this.fail(error && error.friendly ? error.friendly : error.message || String(error));
      throw error;
    }
  }

  async leave() {
    if (!this.active) return;
    const channelId = this.channelId;
    this.teardown();
    this.signals.spend();
    this.socket.send({ type: "voice_leave", channel_id: channelId });
  }

  setMuted(muted) {
    this.muted = !!muted;
    this.applyMute();
    this.changed();
  }

  setVolume(userId, volume) {
    const value = Math.min(1, Math.max(0, Number(volume)));
    if (!Number.isFinite(value)) return;
    writeStorage(VOLUME_KEY + userId, value === 1 ? null : String(value));
    const peer = this.peers.get(userId);
    if (peer) {
      peer.volume = value;
      if (peer.audio) peer.audio.volume = value;
    }
    this.changed();
  }

  async setCamera(on) {
    if (!this.active || !!on === this.camera || this.cameraOpening) return;
    if (on) {
      let stream;
      this.cameraOpening = true;
      try {
        stream = await openDevice(this.media, videoConstraints, this.cameraId);
      } catch (error) {
        this.fail(mediaError(error, "camera"));
        return;
      } finally {
        this.cameraOpening = false;
      }
      if (!this.active) {
        for (const track of stream.getTracks()) track.stop();
        return;
      }
      this.cameraStream = stream;
      this.cameraTrack = stream.getVideoTracks()[0];
      this.camera = true;
      for (const peer of this.peers.values()) this.addCamera(peer);
    } else {
      this.camera = false;
      for (const peer of this.peers.values()) {
        if (peer.pc && peer.videoSender && peer.pc.signalingState !== "closed") {
          peer.pc.removeTrack(peer.videoSender);
        }
        peer.videoSender = null;
      }
      this.stopCamera();
    }
    this.changed();
  }

  // The microphones and cameras there are ({deviceId, label}); labels are empty until
  // the person has allowed this site to use them once.
  async devices() {
    if (!this.media || !this.media.enumerateDevices) return { microphones: [], cameras: [] };
    const all = await this.media.enumerateDevices();
    const pick = (kind) =>
      all.filter((d) => d.kind === kind && d.deviceId).map((d) => ({ deviceId: d.deviceId, label: d.label }));
    return { microphones: pick("audioinput"), cameras: pick("videoinput") };
  }

  // Choose the microphone ("" = the browser's default); in a call, switch to it at once on
  // every connection (no renegotiation: the new track replaces the old in each sender).
  async setMicrophone(deviceId) {
    this.microphoneId = deviceId || "";
    writeStorage(MICROPHONE_KEY, this.microphoneId || null);
    if (this.active && this.localStream) {
      let stream;
      try {
        stream = await openDevice(this.media, audioConstraints, this.microphoneId);
      } catch (error) {
        this.fail(mediaError(error, "microphone"));
        return;
      }
      if (!this.active || !this.localStream) {
        for (const track of stream.getTracks()) track.stop();
        return;
      }
      const track = stream.getAudioTracks()[0];
      await Promise.all(
        [...this.peers.values()].filter((p) => p.audioSender).map((p) => p.audioSender.replaceTrack(track)),
      );
      for (const old of this.localStream.getTracks()) old.stop();
      this.localStream = stream;
      this.applyMute();
      this.localMeter?.disconnect();
      this.localMeter = this.context ? new LevelMeter(this.context, stream) : null;
    }
    this.changed();
  }

  async setCameraDevice(deviceId) {
    this.cameraId = deviceId || "";
    writeStorage(CAMERA_KEY, this.cameraId || null);
    if (this.camera && this.cameraTrack) {
      let stream;
      try {
        stream = await openDevice(this.media, videoConstraints, this.cameraId);
      } catch (error) {
        this.fail(mediaError(error, "camera"));
        return;
      }
      if (!this.camera) {
        for (const track of stream.getTracks()) track.stop();
        return;
      }
      const track = stream.getVideoTracks()[0];
      await Promise.all(
        [...this.peers.values()].filter((p) => p.videoSender).map((p) => p.videoSender.replaceTrack(track)),
      );
      for (const old of this.cameraStream.getTracks()) old.stop();
      this.cameraStream = stream;
      this.cameraTrack = track;
    }
    this.changed();
  }

  dispose() {
    this.teardown();
    for (const off of this.unsubscribe) off();
    this.unsubscribe = [];
  }

  // ------------------------------------------------------------------ joining

  async openMicrophone() {
    if (!this.media || !this.media.getUserMedia) {
      throw new Error("This browser cannot make calls (no media devices; voice needs HTTPS or localhost).");
    }
    try {
      return await openDevice(this.media, audioConstraints, this.microphoneId);
    } catch (error) {
      // Without a microphone one can still listen.
      if (error && error.name === "NotFoundError") return null;
      throw new Error(mediaError(error, "microphone"));
    }
  }

  sendJoin() {
    const channelId = this.channelId;
    return new Promise((resolve, reject) => {
      this.pendingJoin = { channelId, resolve, reject };
      this.signals.spend();
      if (!this.sendJoinFrame(this.pendingJoin)) {
        // Not connected right now: the socket's "open" handler sends it again.
        this.fail("Not connected to the server; joining when the connection is back.");
      }
    });
  }

  // Every voice_join awaits its answer (a roster, or an error) at the socket, so that an
  // error is never taken for another part's (a chat message's) and the reverse.
  sendJoinFrame(owner) {
    if (!this.socket.sendAwaiting({ type: "voice_join", channel_id: owner.channelId }, owner)) return false;
    this.joinsSent.push(owner);
    return true;
  }

  settleJoin(owner) {
    this.joinsSent = this.joinsSent.filter((o) => o !== owner);
    this.socket.answered(owner);
  }

  onRoster(event) {
    const answered = this.joinsSent.find((o) => o.channelId === event.channel_id);
    if (answered) this.settleJoin(answered);
    if (this.state === "idle" || event.channel_id !== this.channelId) return;
    const pending = this.pendingJoin;
    this.pendingJoin = null;
    this.state = "joined";
    this.error = null;
    const members = new Set((event.users || []).filter((id) => id !== this.selfId));
    for (const userId of [...this.peers.keys()]) {
      if (!members.has(userId)) this.removePeer(userId);
    }
    const offerNow = this.offerToAll;
    this.offerToAll = false;
    for (const userId of members) this.ensurePeer(userId, { offerNow });
    this.changed();
    if (pending) pending.resolve();
  }

  onServerError(event) {
    // Only an error that answers our voice_join (the socket knows which frame it answers).
    if (event.answers && this.joinsSent.includes(event.answers)) this.settleJoin(event.answers);
    if (this.state === "joining" && event.answers?.rejoin && event.answers.channelId === this.channelId) {
      this.teardown();
      this.fail(event.code === "channel_not_found" ? "This channel no longer exists." : event.message);
    } else if (this.state === "joining" && this.pendingJoin && event.answers === this.pendingJoin) {
      const pending = this.pendingJoin;
      this.pendingJoin = null;
      const reason = event.code === "channel_not_found" ? "This channel no longer exists." : event.message;
      pending.reject(new Error(reason || "The server refused to join this room.")); // join() tears down
    } else if (this.state === "joined" && event.code === "voice_not_joined") {
      // The server no longer has us in the room (e.g. the socket was replaced): rejoin.
      this.rejoin();
    }
  }

  onSocketOpen() {
    this.joinsSent = []; // the old socket's frames get no answer on this one
    // A new socket is in no room: the old one's seat ended with it. Join again and
    // rebuild every connection (the others dropped theirs on our voice_leave).
    if (this.state !== "idle") this.rejoin();
  }

  // TURN credentials expire (DIALTONE_TURN_TTL, a day by default): fetch new ones when
  // the ones we hold are more than an hour old, before connections that will use them.
  async refreshIceServers() {
    if (Date.now() - this.iceFetchedAt < ICE_REFRESH_MS) return;
    try {
      this.iceServers = await iceServersFrom(this.api);
      this.iceFetchedAt = Date.now();
    } catch {
      // Keep the ones we have; the server may be briefly unreachable.
    }
  }

  async rejoin() {
    for (const userId of [...this.peers.keys()]) this.removePeer(userId);
    this.state = "joining";
    this.changed();
    const channelId = this.channelId;
    await this.refreshIceServers();
    if (this.state !== "joining" || this.channelId !== channelId) return;
    // The others may never hear that we were gone (the server may not have noticed our
    // old socket die): offer to each of them at once, whoever usually goes first, so they
    // see a new connection (by its fingerprint) instead of waiting for the old to fail.
    this.offerToAll = true;
    this.signals.clear();
    this.signals.spend();
    if (!this.sendJoinFrame({ channelId: this.channelId, rejoin: true })) {
      this.fail("Not connected to the server; joining when the connection is back.");
    }
  }

  onPresence(event) {
    // Our own seat ended without our asking (the channel was deleted, or our last socket
    // in the room went away): the call is over.
    if (
      this.state === "joined" &&
      event.sender === this.selfId &&
      event.channel_id === this.channelId &&
      event.active === false
    ) {
      this.teardown();
      this.fail("The voice room ended.");
    }
  }

  // ------------------------------------------------------------------ members

  onMemberJoined(event) {
    if (this.state !== "joined" || event.channel_id !== this.channelId) return;
    if (event.sender === this.selfId) return;
    // A member we still hold a connection to re-entered: theirs is new, start over.
    if (this.peers.has(event.sender)) this.removePeer(event.sender);
    this.ensurePeer(event.sender);
    this.changed();
  }

  onMemberLeft(event) {
    if (event.channel_id !== this.channelId) return;
    this.removePeer(event.sender);
    this.changed();
  }

  ensurePeer(userId, { offerNow = false } = {}) {
    let peer = this.peers.get(userId);
    if (peer) return peer;
    peer = new Peer(userId, this.selfId > userId);
    const saved = readStorage(VOLUME_KEY + userId);
    if (saved !== null && Number.isFinite(Number(saved))) peer.volume = Number(saved);
    this.peers.set(userId, peer);
    if (!peer.polite || offerNow) {
      this.connect(peer);
    } else {
      // The other side offers first; if it never does, offer ourselves.
      peer.state = "waiting";
      peer.offerTimer = setTimeout(() => {
        peer.offerTimer = null;
        if (!peer.pc && this.peers.get(userId) === peer) {
          this.connect(peer);
          this.changed();
        }
      }, OFFER_WAIT_MS);
    }
    return peer;
  }

  removePeer(userId) {
    const peer = this.peers.get(userId);
    if (!peer) return;
    this.peers.delete(userId);
    this.signals.drop(userId);
    clearTimeout(peer.offerTimer);
    this.closePeer(peer);
  }

  closePeer(peer) {
    if (peer.pc) {
      peer.pc.onnegotiationneeded = null;
      peer.pc.onicecandidate = null;
      peer.pc.ontrack = null;
      peer.pc.onconnectionstatechange = null;
      peer.pc.close();
    }
    peer.audioSender = null;
    peer.videoSender = null;
    peer.speaking = false;
    peer.state = "closed";
    peer.meter?.disconnect();
    peer.meter = null;
    if (peer.audio) {
      peer.audio.pause();
      peer.audio.srcObject = null;
      peer.audio = null;
    }
    peer.audioStream = null;
    peer.videoStream = null;
  }

  // ------------------------------------------------------------------ connections

  // Create the RTCPeerConnection (once per peer) and put our tracks on it; adding tracks
  // makes the browser ask for negotiation, which sends our offer.
  connect(peer, { addTracks = true } = {}) {
    if (peer.pc) return peer.pc;
    const pc = new RTCPeerConnection({
      iceServers: this.iceServers,
      iceTransportPolicy: this.relayOnly ? "relay" : "all",
      bundlePolicy: "max-bundle",
    });
    peer.pc = pc;
    peer.state = pc.connectionState;
    const recipient = peer.userId;
    const channelId = this.channelId;

    pc.onnegotiationneeded = async () => {
      try {
        peer.makingOffer = true;
        await pc.setLocalDescription();
        this.signals.send({ type: "webrtc_offer", channel_id: channelId, recipient, sdp: pc.localDescription.sdp });
      } catch (error) {
        console.warn("dialtone voice: offer failed", error);
      } finally {
        peer.makingOffer = false;
      }
    };
    pc.onicecandidate = ({ candidate }) => {
      // The end-of-candidates marker (empty candidate) is not sent: the protocol has none.
      if (candidate && candidate.candidate) {
        this.signals.send({ type: "ice_candidate", channel_id: channelId, recipient, candidate: candidate.candidate });
      }
    };
    pc.onicecandidateerror = (event) => {
      // 401: the TURN server refused our credentials. Worth saying when we rely on it.
      if (event.errorCode === 401 && this.relayOnly) {
        this.fail("The TURN relay refused this server's credentials; ask the operator to check DIALTONE_TURN_SECRET.");
      }
    };
    pc.ontrack = ({ track, streams }) => this.onTrack(peer, track, streams[0] || new MediaStream([track]));
    pc.onconnectionstatechange = () => {
      if (peer.pc !== pc) return;
      peer.state = pc.connectionState;
      if (pc.connectionState === "connected") this.updateRoute(peer);
      // A broken path: the impolite side restarts ICE (one side only, so they don't race).
      if (pc.connectionState === "failed" && !peer.polite) this.restartIce(peer, pc);
      this.changed();
    };
    if (addTracks) this.addLocalTracks(peer);
    return pc;
  }

  async restartIce(peer, pc) {
    await this.refreshIceServers();
    if (peer.pc !== pc || pc.signalingState === "closed") return;
    try {
      pc.setConfiguration({ ...pc.getConfiguration(), iceServers: this.iceServers });
    } catch {
      // A configuration the connection cannot take now: restart with the one it has.
    }
    pc.restartIce();
  }

  addLocalTracks(peer) {
    const pc = peer.pc;
    const track = this.localStream?.getAudioTracks()[0];
    if (track) peer.audioSender = pc.addTrack(track, this.localStream);
    else if (!pc.getTransceivers().some((t) => t.receiver.track.kind === "audio")) {
      // Listen-only: still ask for the other side's audio.
      pc.addTransceiver("audio", { direction: "recvonly" });
    }
    if (this.camera && this.cameraTrack) this.addCamera(peer);
  }

  addCamera(peer) {
    if (!peer.pc || peer.videoSender || !this.cameraTrack || peer.pc.signalingState === "closed") return;
    peer.videoSender = peer.pc.addTrack(this.cameraTrack, this.cameraStream);
  }

  onTrack(peer, track, stream) {
    if (track.kind === "audio") {
      peer.audioStream = stream;
      if (!peer.audio) {
        peer.audio = new Audio();
        peer.audio.autoplay = true;
      }
      peer.audio.srcObject = stream;
      peer.audio.volume = peer.volume;
      peer.audio.play().catch(() => {
        // Autoplay refused: the next click anywhere on the page (e.g. unmute) starts it.
        addEventListener("click", () => peer.audio?.play().catch(() => {}), { once: true });
      });
      if (this.context) {
        peer.meter?.disconnect();
        peer.meter = new LevelMeter(this.context, stream);
      }
    } else if (track.kind === "video") {
      const video = new MediaStream([track]);
      peer.videoStream = video;
      const drop = () => {
        if (peer.videoStream === video) {
          peer.videoStream = null;
          this.changed();
        }
      };
      track.addEventListener("ended", drop);
      track.addEventListener("mute", drop);
      track.addEventListener("unmute", () => {
        if (peer.pc && track.readyState === "live" && !peer.videoStream) {
          peer.videoStream = video;
          this.changed();
        }
      });
    }
    this.changed();
  }

  async updateRoute(peer) {
    const pc = peer.pc;
    try {
      const stats = await pc.getStats();
      let pair = null;
      stats.forEach((report) => {
        if (report.type === "transport" && report.selectedCandidatePairId) {
          pair = stats.get(report.selectedCandidatePairId);
        }
      });
      if (!pair) {
        stats.forEach((report) => {
          if (report.type === "candidate-pair" && report.nominated && report.state === "succeeded") pair = report;
        });
      }
      const local = pair && stats.get(pair.localCandidateId);
      const remote = pair && stats.get(pair.remoteCandidateId);
      if (!local || !remote || peer.pc !== pc) return;
      peer.route = local.candidateType === "relay" || remote.candidateType === "relay" ? "relay" : "direct";
      this.changed();
    } catch {
      // Closed meanwhile.
    }
  }

  // Signalling from one peer is handled strictly in arrival order.
  onSignal(event, kind) {
    if (this.state !== "joined" || event.channel_id !== this.channelId) return;
    if (!event.sender || event.sender === this.selfId) return;
    const peer = kind === "offer" ? this.ensurePeer(event.sender) : this.peers.get(event.sender);
    if (!peer) return;
    peer.chain = peer.chain
      .then(() => this.handleSignal(peer, event, kind))
      .catch((error) => console.warn("dialtone voice: signalling with a peer failed", error));
  }

  async handleSignal(peer, event, kind) {
    if (this.peers.get(peer.userId) !== peer) return; // left meanwhile
    if (kind === "offer") {
      clearTimeout(peer.offerTimer);
      peer.offerTimer = null;
      if (peer.pc && isNewSession(peer.pc, event.sdp)) {
        // The other side started over with a new connection (its page reloaded or its
        // socket was replaced before the server noticed the old one had gone): ours is
        // dead, replace it rather than renegotiate it.
        this.closePeer(peer);
        peer.pc = null;
        peer.makingOffer = false;
        peer.ignoreOffer = false;
        peer.route = null;
      }
      const fresh = !peer.pc;
      const pc = this.connect(peer, { addTracks: false });
      const collision = peer.makingOffer || pc.signalingState !== "stable";
      peer.ignoreOffer = !peer.polite && collision;
      if (peer.ignoreOffer) return;
      await pc.setRemoteDescription({ type: "offer", sdp: event.sdp }); // rolls back our offer if any
      // A new connection takes our tracks now, so they ride on the transceivers the offer
      // created and the answer carries them (no second round of negotiation).
      if (fresh) this.addLocalTracks(peer);
      await pc.setLocalDescription();
      this.signals.send({
        type: "webrtc_answer",
        channel_id: this.channelId,
        recipient: peer.userId,
        sdp: pc.localDescription.sdp,
      });
    } else if (kind === "answer") {
      const pc = peer.pc;
      if (!pc || pc.signalingState !== "have-local-offer") return; // stale or duplicate
      await pc.setRemoteDescription({ type: "answer", sdp: event.sdp });
    } else {
      const pc = peer.pc;
      const init = parseCandidate(event.candidate);
      if (!pc || !init) return;
      try {
        await pc.addIceCandidate(init);
      } catch (error) {
        // Candidates of an offer we ignored, or of an ICE generation already replaced.
        if (!peer.ignoreOffer) console.debug("dialtone voice: candidate not added", error);
      }
    }
  }

  // ------------------------------------------------------------------ local media

  applyMute() {
    for (const track of this.localStream?.getAudioTracks() || []) track.enabled = !this.muted;
  }

  startLevels() {
    const Context = globalThis.AudioContext || globalThis.webkitAudioContext;
    if (!Context) return;
    this.context = new Context();
    this.context.resume().catch(() => {});
    if (this.localStream) this.localMeter = new LevelMeter(this.context, this.localStream);
    this.levelTimer = setInterval(() => this.sampleLevels(), LEVEL_INTERVAL_MS);
  }

  sampleLevels() {
    const now = performance.now();
    let changed = false;
    const self = !this.muted && !!this.localMeter && this.localMeter.speaking(now);
    if (self !== this.speaking) {
      this.speaking = self;
      changed = true;
    }
    for (const peer of this.peers.values()) {
      const speaking = !!peer.meter && peer.state === "connected" && peer.meter.speaking(now);
      if (speaking !== peer.speaking) {
        peer.speaking = speaking;
        changed = true;
      }
    }
    if (changed) this.changed();
  }

  stopCamera() {
    for (const track of this.cameraStream?.getTracks() || []) track.stop();
    this.cameraStream = null;
    this.cameraTrack = null;
    this.camera = false;
  }

  // Close every connection, stop every track, forget the room. Idempotent.
  teardown() {
    for (const userId of [...this.peers.keys()]) this.removePeer(userId);
    this.signals.clear();
    clearInterval(this.levelTimer);
    this.levelTimer = null;
    this.localMeter?.disconnect();
    this.localMeter = null;
    if (this.context) {
      this.context.close().catch(() => {});
      this.context = null;
    }
    for (const track of this.localStream?.getTracks() || []) track.stop();
    this.localStream = null;
    this.stopCamera();
    this.speaking = false;
    this.listenOnly = false;
    const pending = this.pendingJoin;
    this.pendingJoin = null;
    const wasActive = this.state !== "idle";
    this.state = "idle";
    this.channelId = null;
    if (pending) pending.reject(new LeftError());
    if (wasActive) this.changed();
  }

  fail(message) {
    this.error = message;
    this.dispatchEvent(new CustomEvent("error", { detail: message }));
    this.changed();
  }

  // Coalesce many changes in one task into one "change" event.
  changed() {
    if (this.changeQueued) return;
    this.changeQueued = true;
    queueMicrotask(() => {
      this.changeQueued = false;
      this.dispatchEvent(new Event("change"));
    });
  }
}

// One VoiceRoom per socket, so a call survives moving between channel views.
const rooms = new WeakMap();

export function voiceRoomFor({ socket, api, selfId }) {
  let room = rooms.get(socket);
  if (!room) {
    room = new VoiceRoom({ socket, api, selfId });
    rooms.set(socket, room);
  }
  return room;
}

const presences = new WeakMap();

export function voicePresenceFor(socket) {
  let presence = presences.get(socket);
  if (!presence) {
    presence = new VoicePresence(socket);
    presences.set(socket, presence);
  }
  return presence;
}
