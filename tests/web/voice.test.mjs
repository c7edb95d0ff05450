// Unit tests of voice.js's parts that need no browser: room presence, ICE servers from
// GET /voice/turn, candidate parsing, telling a new connection from a renegotiation, and
// the speaking meter.
// Run by tests/web/test_voice_js.py with `node --test`.
import assert from "node:assert/strict";
import { test } from "node:test";

import {
  LevelMeter,
  SignalPacer,
  VoicePresence,
  iceServersFrom,
  isNewSession,
  parseCandidate,
} from "../../dialtone/web/voice.js";

class FakeSocket {
  constructor() {
    this.handlers = new Map();
  }
  on(type, handler) {
    if (!this.handlers.has(type)) this.handlers.set(type, new Set());
    this.handlers.get(type).add(handler);
    return () => this.handlers.get(type).delete(handler);
  }
  emit(event) {
    for (const handler of this.handlers.get(event.type) || []) handler(event);
  }
}

test("presence follows the snapshot and voice.presence events", () => {
  const socket = new FakeSocket();
  const presence = new VoicePresence(socket);
  let changes = 0;
  presence.addEventListener("change", () => changes++);
  socket.emit({ type: "voice.presence.snapshot", voice_rooms: { c1: ["u2", "u1"], c2: [] } });
  assert.deepEqual(presence.users("c1"), ["u1", "u2"]);
  assert.deepEqual(presence.users("c2"), []);
  socket.emit({ type: "voice.presence", channel_id: "c2", sender: "u3", active: true });
  socket.emit({ type: "voice.presence", channel_id: "c1", sender: "u1", active: false });
  assert.deepEqual(presence.users("c1"), ["u2"]);
  assert.deepEqual(presence.users("c2"), ["u3"]);
  socket.emit({ type: "voice.presence", channel_id: "c2", sender: "u3", active: false });
  assert.equal(presence.rooms.has("c2"), false);
  // A new socket's snapshot replaces everything known before.
  socket.emit({ type: "voice.presence.snapshot", voice_rooms: {} });
  assert.deepEqual(presence.users("c1"), []);
  assert.equal(changes, 5);
  presence.dispose();
  socket.emit({ type: "voice.presence", channel_id: "c1", sender: "u9", active: true });
  assert.deepEqual(presence.users("c1"), []);
});

test("ICE servers: TURN credentials, the same hosts for STUN, none without TURN", async () => {
  const turn = {
    username: "1795446017:u1",
    credential: "c2VjcmV0",
    ttl: 86400,
    uris: [
      "turn:turn.example.org:3478?transport=udp",
      "turn:turn.example.org:3478?transport=tcp",
      "turns:turn.example.org:5349?transport=tcp",
    ],
  };
  assert.deepEqual(await iceServersFrom({ turn: async () => turn }), [
    { urls: turn.uris, username: turn.username, credential: turn.credential },
    { urls: ["stun:turn.example.org:3478"] },
  ]);
  const notConfigured = Object.assign(new Error("TURN is not configured"), { status: 404 });
  assert.deepEqual(await iceServersFrom({ turn: async () => { throw notConfigured; } }), []);
  const expired = Object.assign(new Error("session ended"), { status: 401 });
  await assert.rejects(iceServersFrom({ turn: async () => { throw expired; } }), expired);
});

test("candidates: a bare line or a JSON RTCIceCandidateInit", () => {
  const line = "candidate:1 1 UDP 2122260223 192.0.2.2 50000 typ host";
  assert.deepEqual(parseCandidate(line), { candidate: line, sdpMLineIndex: 0 });
  const init = { candidate: line, sdpMid: "0", sdpMLineIndex: 0, usernameFragment: "abcd" };
  assert.deepEqual(parseCandidate(JSON.stringify(init)), init);
  assert.equal(parseCandidate("{not json"), null);
  assert.equal(parseCandidate('{"sdpMid": "0"}'), null);
  assert.equal(parseCandidate(""), null);
  assert.equal(parseCandidate(undefined), null);
});

test("a new DTLS fingerprint means a new connection, the same one a renegotiation", () => {
  const sdp = (fp) => `v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\na=fingerprint:sha-256 ${fp}\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n`;
  const pc = { remoteDescription: { sdp: sdp("AA:BB") } };
  assert.equal(isNewSession(pc, sdp("aa:bb")), false);
  assert.equal(isNewSession(pc, sdp("CC:DD")), true);
  assert.equal(isNewSession({ remoteDescription: null }, sdp("CC:DD")), false);
  assert.equal(isNewSession(pc, "v=0\r\n"), false);
});

test("signalling is paced: a burst, then the rate, in order; dropped and cleared frames never go", () => {
  let clock = 0;
  const timers = [];
  const sent = [];
  const pacer = new SignalPacer((frame) => sent.push(frame.n), {
    burst: 3,
    rate: 2, // per second: one token every 500 ms
    now: () => clock,
    setTimer: (fn, ms) => timers.push({ fn, at: clock + ms }) - 1,
    clearTimer: (id) => { timers[id] = null; },
  });
  const run = (to) => {
    clock = to;
    for (let i = 0; i < timers.length; i++) {
      const timer = timers[i];
      if (timer && timer.at <= clock) {
        timers[i] = null;
        timer.fn();
      }
    }
  };
  for (let n = 1; n <= 6; n++) pacer.send({ n, recipient: n === 5 ? "gone" : "peer" });
  assert.deepEqual(sent, [1, 2, 3]);
  run(499);
  assert.deepEqual(sent, [1, 2, 3]);
  run(500);
  assert.deepEqual(sent, [1, 2, 3, 4]);
  pacer.drop("gone");
  run(1000);
  assert.deepEqual(sent, [1, 2, 3, 4, 6]);
  // A frame sent directly spends a token too; the budget refills to the burst at most.
  run(10_000);
  pacer.spend();
  for (let n = 7; n <= 10; n++) pacer.send({ n, recipient: "peer" });
  assert.deepEqual(sent.slice(5), [7, 8]);
  pacer.clear();
  run(20_000);
  assert.deepEqual(sent.slice(5), [7, 8]);
});

// An AudioContext whose analyser returns `samples` (the newest last), as Web Audio does.
function fakeContext(sampleRate, samples) {
  const analyser = {
    fftSize: 2048,
    getFloatTimeDomainData(buffer) {
      buffer.set(samples.subarray(samples.length - buffer.length));
    },
  };
  return {
    sampleRate,
    analyser,
    createMediaStreamSource: () => ({ connect() {}, disconnect() {} }),
    createAnalyser: () => analyser,
  };
}

test("the speaking meter hears a short sound anywhere since its last reading", () => {
  const rate = 48000;
  const samples = new Float32Array(32768);
  const context = fakeContext(rate, samples);
  const meter = new LevelMeter(context, {});
  // Its window spans more than one reading interval (100 ms).
  assert.ok(context.analyser.fftSize >= rate * 0.1);
  assert.equal(meter.speaking(0), false); // silence
  // A 20 ms beep 90 ms before the reading, long before the newest 512 samples.
  const end = samples.length - Math.round(rate * 0.09);
  for (let i = end - Math.round(rate * 0.02); i < end; i++) samples[i] = i % 120 < 60 ? 0.3 : -0.3;
  assert.equal(meter.speaking(1000), true);
  samples.fill(0);
  assert.equal(meter.speaking(1100), true); // held briefly after the sound
  assert.equal(meter.speaking(2000), false);
});
