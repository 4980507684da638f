// Tribune's web app. One shell (index.html) serves every page:
//   /                    home: live, upcoming and past spaces; start or schedule one
//   /spaces/{id}         listener: program player, request to speak, replay and tracks
//   /spaces/{id}/host    host console (#token=HOST_TOKEN, kept in localStorage)
//   /spaces/{id}/speak   speaker (#token=SPEAKER_TOKEN, optional autojoin=1)
// Plain ES module, no framework, no build step, nothing fetched from
// elsewhere. The ids and data-* attributes that web/e2e/stage.mjs relies on
// are listed in web/e2e/README.md; keep them stable.

const app = document.getElementById("app");
const connBanner = document.getElementById("conn");

/* ---------------------------------------------------------------- basics */

const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
const $ = (sel, root = document) => root.querySelector(sel);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const TALKING = 0.05;

const ICON = {
  hand: '<svg viewBox="0 0 24 24" width="18" height="18" aria-hidden="true" fill="currentColor"><path d="M21 7c0-1.38-1.12-2.5-2.5-2.5-.17 0-.34.02-.5.05V4c0-1.38-1.12-2.5-2.5-2.5-.23 0-.46.03-.67.09C14.46.66 13.56 0 12.5 0c-1.23 0-2.25.89-2.46 2.06C9.87 2.02 9.69 2 9.5 2 8.12 2 7 3.12 7 4.5v5.89c-.34-.31-.76-.54-1.22-.66L5 9.5c-1.03-.28-2.1.32-2.41 1.33-.16.51-.11 1.06.13 1.54l3.88 7.52C7.97 22.27 10.36 24 13 24h1c3.86 0 7-3.14 7-7V7zm-2 10c0 2.76-2.24 5-5 5h-1c-1.89 0-3.6-1.24-4.58-3.27L4.6 11.71l.69.19c.38.1.71.34.91.68L8 15.5V4.5c0-.28.22-.5.5-.5s.5.22.5.5V11h2V2.5c0-.28.22-.5.5-.5s.5.22.5.5V11h2V4c0-.28.22-.5.5-.5s.5.22.5.5v7h2V7c0-.28.22-.5.5-.5s.5.22.5.5v10z"/></svg>',
  play: '<svg viewBox="0 0 24 24" aria-hidden="true"><path d="M8 5v14l11-7z"/></svg>',
  pause: '<svg viewBox="0 0 24 24" aria-hidden="true"><path d="M6 5h4v14H6zm8 0h4v14h-4z"/></svg>',
  micOff: '<svg viewBox="0 0 24 24" aria-hidden="true"><path d="M19 11h-1.7c0 .74-.16 1.43-.43 2.05l1.23 1.23c.56-.98.9-2.09.9-3.28zm-4.02.17c0-.06.02-.11.02-.17V5c0-1.66-1.34-3-3-3S9 3.34 9 5v.18l5.98 5.99zM4.27 3 3 4.27l6.01 6.01V11c0 1.66 1.33 3 2.99 3 .22 0 .44-.03.65-.08l1.66 1.66c-.71.33-1.5.52-2.31.52-2.76 0-5.3-2.1-5.3-5.1H5c0 3.41 2.72 6.23 6 6.72V21h2v-3.28c.91-.13 1.77-.45 2.54-.9L19.73 21 21 19.73 4.27 3z"/></svg>',
};

// Query and fragment flags. Tokens travel in the fragment so they never
// reach server logs; each page stores its token and removes the fragment.
const frag = new URLSearchParams(location.hash.slice(1));
const query = new URLSearchParams(location.search);
const flag = (name) => ["1", "true", "yes"].includes(frag.get(name) || query.get(name) || "");
function stripFragment() {
  if (location.hash) history.replaceState(history.state, "", location.pathname + location.search);
}

const store = {
  raw(key) { try { return localStorage.getItem(key) || ""; } catch { return ""; } },
  setRaw(key, v) { try { v ? localStorage.setItem(key, v) : localStorage.removeItem(key); } catch { /* private mode */ } },
  map(key) { try { return JSON.parse(localStorage.getItem(key) || "{}") || {}; } catch { return {}; } },
  put(key, id, v) { const m = store.map(key); if (v == null) delete m[id]; else m[id] = v; store.setRaw(key, JSON.stringify(m)); },
  session(key, v) {
    try {
      if (v === undefined) return JSON.parse(sessionStorage.getItem(key) || "null");
      if (v === null) sessionStorage.removeItem(key); else sessionStorage.setItem(key, JSON.stringify(v));
    } catch { return null; }
    return v;
  },
};
const adminToken = () => store.raw("tribune.token");
// A link with a token opened in a tab already on this page only changes the
// fragment: start over so the page picks the token up.
addEventListener("hashchange", () => { if (/(^|&)(admin|token)=/.test(location.hash.slice(1))) location.reload(); });
if (frag.get("admin")) { store.setRaw("tribune.token", frag.get("admin")); frag.delete("admin"); stripFragment(); }

/** The payload of a JWT (identity `sub`, `role`, `space`, `exp`), unverified. */
function claims(tok) {
  try {
    const part = tok.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const bin = atob(part + "===".slice((part.length + 3) % 4));
    return JSON.parse(new TextDecoder().decode(Uint8Array.from(bin, (c) => c.charCodeAt(0))));
  } catch { return null; }
}

class ApiError extends Error {
  constructor(message, status, data) { super(message); this.status = status; this.data = data || {}; }
}

function statusWords(status) {
  if (status === 401) return "Your link or token is missing, expired or invalid.";
  if (status === 403) return "You're not allowed to do that with this link.";
  if (status === 404) return "Not found.";
  if (status === 409) return "That isn't possible in the space's current state.";
  if (status === 429) return "Too many requests; wait a moment and try again.";
  if (status >= 500) return `The server had a problem (HTTP ${status}). Try again in a moment.`;
  return `The request failed (HTTP ${status}).`;
}

const sentence = (s) => { s = String(s || "").trim(); return s ? s[0].toUpperCase() + s.slice(1) + (/[.!?…]$/.test(s) ? "" : ".") : s; };

/* A private space is read with a token of the space (the listener link's,
   or the host's): every API read, event stream and recording URL carries it. */
let readToken = "";
const setReadToken = (t) => { readToken = t || ""; };
/** `url` with the read token as `?token=` (for <audio src>, EventSource, links). */
function withToken(url) {
  if (!readToken || !url) return url;
  return url + (url.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(readToken);
}

/** JSON API call; errors become ApiError with the server's words. */
async function api(method, path, body, tok) {
  const headers = {};
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (tok === undefined && readToken) tok = readToken;
  if (tok) headers.Authorization = "Bearer " + tok;
  let res;
  try {
    res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), cache: "no-store" });
  } catch {
    throw new ApiError("Can't reach the server. Check your connection and try again.", 0);
  }
  const data = await res.json().catch(() => ({}));
  if (!res.ok) throw new ApiError(data.error ? sentence(data.error) : statusWords(res.status), res.status, data);
  return data;
}

/* ------------------------------------------------------------ formatting */

const plural = (n, one, many = one + "s") => `${n} ${n === 1 ? one : many}`;
function fmtWhen(ms) {
  if (!ms) return "";
  const d = new Date(ms), now = new Date();
  const sameDay = d.toDateString() === now.toDateString();
  const opts = sameDay ? { hour: "2-digit", minute: "2-digit" } : { weekday: "short", day: "numeric", month: "short", hour: "2-digit", minute: "2-digit" };
  return (sameDay ? "today " : "") + d.toLocaleString(undefined, opts);
}
function fmtDuration(ms) {
  const s = Math.max(0, Math.floor(ms / 1000)), h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
  return (h ? h + ":" + String(m).padStart(2, "0") : String(m)) + ":" + String(sec).padStart(2, "0");
}
function fmtRelative(ms) {
  const diff = ms - Date.now(), abs = Math.abs(diff), min = Math.round(abs / 60000);
  const txt = min < 1 ? "less than a minute" : min < 60 ? plural(min, "minute") : min < 48 * 60 ? plural(Math.round(min / 60), "hour") : plural(Math.round(min / 1440), "day");
  return diff >= 0 ? "in " + txt : txt + " ago";
}
const fmtBytes = (n) => n >= 1e6 ? (n / 1e6).toFixed(1) + " MB" : n >= 1e3 ? Math.round(n / 1e3) + " kB" : n + " B";
const initials = (name) => String(name || "?").trim().split(/\s+/).map((w) => w[0]).join("").slice(0, 2).toUpperCase() || "?";
function hue(s) { let h = 0; for (const c of String(s)) h = (h * 31 + c.charCodeAt(0)) % 360; return h; }
const avatarStyle = (id) => `background:hsl(${hue(id)} 45% 38%)`;
const STATE_LABEL = { live: "Live", scheduled: "Scheduled", ended: "Ended" };
const badge = (state) => `<span class="badge ${esc(state)}">${esc(STATE_LABEL[state] || state)}</span>`;
const ROLE_LABEL = { host: "Host", cohost: "Co-host", speaker: "Speaker", admin: "Host" };

function setStateBadge(el, space) {
  if (!el) return;
  el.className = "badge " + space.state;
  el.dataset.state = space.state; // e2e: #space-state[data-state]
  el.textContent = STATE_LABEL[space.state] || space.state;
}

let toastTimer;
function toast(msg) {
  let t = $(".toast");
  if (!t) { t = document.createElement("div"); t.className = "toast"; t.setAttribute("role", "status"); document.body.append(t); }
  t.textContent = msg; t.hidden = false;
  clearTimeout(toastTimer); toastTimer = setTimeout(() => { t.hidden = true; }, 2500);
}

async function copyText(text, input) {
  try { await navigator.clipboard.writeText(text); toast("Link copied"); return; } catch { /* insecure context: fall back */ }
  if (input) {
    input.focus(); input.select();
    try { if (document.execCommand("copy")) { toast("Link copied"); return; } } catch { /* ignore */ }
  }
  toast("Select the link and copy it");
}

function say(el, msg, kind = "error") {
  if (!el) return;
  el.textContent = msg || "";
  el.className = msg ? kind : "muted";
  el.hidden = !msg;
}

/** Keyed list update in place, so buttons under the pointer survive updates. */
function reconcile(list, items, key, create, update) {
  const old = new Map([...list.children].map((el) => [el.dataset.key, el]));
  let prev = null;
  for (const item of items) {
    const k = String(key(item));
    let el = old.get(k);
    if (el) old.delete(k); else { el = create(item); el.dataset.key = k; }
    update(el, item);
    const want = prev ? prev.nextSibling : list.firstChild;
    if (want !== el) list.insertBefore(el, want);
    prev = el;
  }
  for (const el of old.values()) el.remove();
}
// Adopted into the page's document: a template's content belongs to an inert
// document with no frame, where an <audio> given a src before it is attached
// is refused for good ("Media load rejected by URL safety check").
function fromHTML(html) { const t = document.createElement("template"); t.innerHTML = html.trim(); return document.adoptNode(t.content.firstElementChild); }

/* -------------------------------------------------- connection status UI */

const conn = {
  bad: new Set(),
  set(key, isBad) {
    if (isBad) this.bad.add(key); else this.bad.delete(key);
    connBanner.hidden = this.bad.size === 0;
  },
};

/* ------------------------------------------------ live state of a space */

let stageApi = true; // false when the server has no /stage yet: plain space JSON
function normalize(d) {
  const st = d.stage || null;
  return {
    space: d.space,
    stage: {
      members: (st && st.members) || [], requests: (st && st.requests) || [], max_speakers: (st && st.max_speakers) || 13,
      pending_requests: (st && st.pending_requests) || 0, requests_open: !st || st.requests_open !== false,
    },
    partial: !st,
  };
}
async function fetchSnapshot(id) {
  if (stageApi) {
    try { return normalize(await api("GET", `/api/spaces/${id}/stage`)); } catch (e) { if (e.status !== 404 && e.status !== 405) throw e; }
  }
  const space = await api("GET", `/api/spaces/${id}`);
  stageApi = false;
  return normalize({ space, stage: null });
}

/**
 * Follows a space: Server-Sent Events (`event: stage`) and, if the server
 * refuses the stream, polling. Calls onSnapshot({space, stage}) on changes.
 */
function watchSpace(id, onSnapshot) {
  let es = null, pollTimer = null, closed = false, last = Date.now(), state = null, polls = 0;
  const deliver = (snap) => {
    last = Date.now(); state = snap.space && snap.space.state; conn.set("live", false);
    try { onSnapshot(snap); } catch (e) { console.error(e); }
  };
  const openSse = () => {
    if (closed || !window.EventSource) { startPolling(); return; }
    const src = new EventSource(withToken(`/api/spaces/${encodeURIComponent(id)}/events`));
    es = src;
    src.addEventListener("stage", (e) => {
      let snap; try { snap = normalize(JSON.parse(e.data)); } catch { return; }
      if (snap.space) { stopPolling(); deliver(snap); }
    });
    src.onopen = () => conn.set("live", false);
    src.onerror = () => {
      if (closed || es !== src) return;
      if (src.readyState === EventSource.CLOSED) { es = null; startPolling(); } // refused: poll instead
      else conn.set("live", true); // the browser reconnects by itself
    };
  };
  const poll = async () => {
    pollTimer = null;
    if (closed) return;
    try { deliver(await fetchSnapshot(id)); } catch (e) { conn.set("live", e.status === 0); }
    if (++polls % 15 === 0 && !es && !closed) openSse();
    if (!closed && pollTimer === null) pollTimer = setTimeout(poll, state === "live" ? 2000 : 4000);
  };
  const startPolling = () => { if (pollTimer === null && !closed) pollTimer = setTimeout(poll, 1000); };
  const stopPolling = () => { if (pollTimer !== null) { clearTimeout(pollTimer); pollTimer = null; } };
  // A live space sends about once a second: silence means a dead connection.
  const watchdog = setInterval(() => {
    if (closed || !es || state !== "live" || Date.now() - last < 10000) return;
    conn.set("live", true);
    es.close(); es = null; last = Date.now(); openSse();
  }, 3000);
  openSse();
  return {
    close() { closed = true; clearInterval(watchdog); stopPolling(); if (es) es.close(); es = null; conn.set("live", false); },
    refresh: async () => { try { deliver(await fetchSnapshot(id)); } catch { /* next event */ } },
  };
}

/* ------------------------------------------------- microphone and meter */

let audioCtx = null;
function getAudioContext() {
  if (!audioCtx) {
    const Ctx = window.AudioContext || window.webkitAudioContext;
    if (!Ctx) return null;
    audioCtx = new Ctx();
    const wake = () => { if (audioCtx.state === "suspended") audioCtx.resume().catch(() => {}); };
    for (const ev of ["pointerdown", "keydown", "touchend"]) document.addEventListener(ev, wake, { passive: true });
  }
  if (audioCtx.state === "suspended") audioCtx.resume().catch(() => {});
  return audioCtx;
}

/** Local input level from an AnalyserNode, drawn into a .meter element. */
class Meter {
  constructor(el) { this.el = el; this.fill = el && el.querySelector(".meter-fill"); this.level = 0; }
  attach(stream) {
    this.detach();
    const ctx = getAudioContext();
    if (!ctx || !stream) return;
    this.src = ctx.createMediaStreamSource(stream);
    this.an = ctx.createAnalyser();
    this.an.fftSize = 1024;
    this.sink = ctx.createGain(); this.sink.gain.value = 0; // keeps the graph pulled in every browser
    this.src.connect(this.an); this.an.connect(this.sink); this.sink.connect(ctx.destination);
    const buf = new Float32Array(this.an.fftSize);
    const tick = () => {
      if (!this.an) return;
      this.an.getFloatTimeDomainData(buf);
      let sum = 0; for (const v of buf) sum += v * v;
      const db = 20 * Math.log10(Math.sqrt(sum / buf.length) || 1e-8);
      const level = Math.min(1, Math.max(0, (db + 60) / 54));
      this.level = Math.max(level, this.level * 0.85);
      if (this.fill) this.fill.style.width = (this.level * 100).toFixed(1) + "%";
      if (this.el) this.el.dataset.level = this.level.toFixed(2); // e2e: #mic-meter[data-level]
      this.raf = requestAnimationFrame(tick);
    };
    this.raf = requestAnimationFrame(tick);
  }
  detach() {
    cancelAnimationFrame(this.raf);
    for (const n of [this.src, this.an, this.sink]) { try { n && n.disconnect(); } catch { /* gone */ } }
    this.src = this.an = this.sink = null; this.level = 0;
    if (this.fill) this.fill.style.width = "0";
    if (this.el) this.el.dataset.level = "0";
  }
}

function micError(e) {
  switch (e && e.name) {
    case "NotAllowedError": case "SecurityError":
      return "Microphone access is blocked. Allow the microphone for this site in the browser's settings, then try again.";
    case "NotFoundError": case "OverconstrainedError":
      return "No microphone was found. Plug one in and try again.";
    case "NotReadableError": case "AbortError":
      return "The microphone is busy or unavailable; another app may be using it.";
    default:
      return "Couldn't open the microphone: " + ((e && e.message) || e);
  }
}

function whipError(status, msg) {
  const m = msg ? sentence(msg) : "";
  if (status === 401 || status === 403) return `This link can't put you on stage. ${m} Ask the host for a new link.`.replace(/\s+/g, " ");
  if (status === 404) return m || "This space doesn't exist.";
  if (status === 409) return m || "The space isn't live, or the stage is full.";
  if (status === 415) return "Your browser didn't offer Opus audio, which the stage needs. Try a current Chrome, Firefox or Safari.";
  if (status === 400) return "The server couldn't read the browser's audio offer. " + m;
  return m || statusWords(status);
}

const musicMode = { get: () => store.raw("tribune.music") === "1", set: (on) => store.setRaw("tribune.music", on ? "1" : "") };
const liveSessions = new Set();
addEventListener("pagehide", () => { for (const s of liveSessions) s.hangUpQuietly(); });

/**
 * One WHIP session (RFC 9725) on the stage: the microphone goes up on a
 * sendrecv transceiver and the server's mix-minus comes back on it.
 */
class StageClient {
  constructor(spaceId, token, returnAudio) {
    this.spaceId = spaceId; this.token = token; this.returnAudio = returnAudio;
    this.pc = null; this.stream = null; this.track = null; this.resource = null;
    this.enabled = true; this.closed = false;
    this.onstate = () => {}; this.onremote = () => {}; this.ontrackended = () => {}; this.onblocked = () => {};
  }
  async openMic() {
    if (this.stream) return this.stream;
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      throw new Error(window.isSecureContext ? "This browser can't capture audio." : "The microphone only works over HTTPS (or on localhost). Open this page with https://.");
    }
    const music = musicMode.get();
    let stream;
    try {
      stream = await navigator.mediaDevices.getUserMedia({
        audio: { echoCancellation: !music, noiseSuppression: !music, autoGainControl: !music, channelCount: 1 },
      });
    } catch (e) { throw new Error(micError(e)); }
    if (this.closed) { stream.getTracks().forEach((t) => t.stop()); throw new Error("closed"); }
    this.useStream(stream);
    return stream;
  }
  useStream(stream) {
    this.stream = stream;
    this.track = stream.getAudioTracks()[0];
    this.track.contentHint = musicMode.get() ? "music" : "speech";
    this.track.enabled = this.enabled;
    this.track.onended = () => this.ontrackended();
  }
  /** Music mode on or off: a new capture with other processing, swapped in live. */
  async reopenMic() {
    if (!this.stream) return;
    const old = this.stream;
    this.stream = null;
    try { await this.openMic(); } catch (e) { this.useStream(old); throw e; }
    const sender = this.pc && this.pc.getSenders()[0];
    if (sender) await sender.replaceTrack(this.track);
    old.getTracks().forEach((t) => t.stop());
  }
  setEnabled(on) { this.enabled = on; if (this.track) this.track.enabled = on; }
  async connect() {
    const pc = new RTCPeerConnection({ iceServers: [], bundlePolicy: "max-bundle", rtcpMuxPolicy: "require" });
    this.pc = pc;
    liveSessions.add(this);
    pc.addTransceiver(this.track, { direction: "sendrecv", streams: [this.stream] });
    pc.ontrack = (e) => {
      const stream = e.streams[0] || new MediaStream([e.track]);
      if (this.returnAudio) {
        this.returnAudio.srcObject = stream;
        this.returnAudio.play().catch((err) => { if (err.name === "NotAllowedError") this.onblocked(); });
      }
      const heard = () => this.onremote();
      if (!e.track.muted) heard(); else e.track.addEventListener("unmute", heard, { once: true });
    };
    pc.onconnectionstatechange = () => { if (this.pc === pc) this.onstate(pc.connectionState); };
    const offer = await pc.createOffer();
    await pc.setLocalDescription(offer);
    const whip = `/spaces/${encodeURIComponent(this.spaceId)}/whip`;
    let res;
    try {
      res = await fetch(whip, {
        method: "POST",
        headers: { "Content-Type": "application/sdp", Authorization: "Bearer " + this.token },
        body: pc.localDescription.sdp,
      });
    } catch { throw new ApiError("Can't reach the server. Check your connection.", 0); }
    if (!res.ok) {
      const text = await res.text();
      let msg = ""; try { msg = JSON.parse(text).error; } catch { msg = text.length < 200 ? text : ""; }
      throw new ApiError(whipError(res.status, msg), res.status);
    }
    const loc = res.headers.get("Location");
    this.resource = loc ? new URL(loc, new URL(whip, location.href)).href : null;
    const answer = await res.text();
    if (this.closed) { this.hangUpQuietly(); throw new Error("closed"); }
    await pc.setRemoteDescription({ type: "answer", sdp: answer });
  }
  /** Ends the session (DELETE the WHIP resource) and releases the microphone. */
  async leave() {
    const resource = this.resource;
    this.teardown();
    if (resource) await fetch(resource, { method: "DELETE", headers: { Authorization: "Bearer " + this.token } }).catch(() => {});
  }
  hangUpQuietly() {
    if (this.resource) fetch(this.resource, { method: "DELETE", keepalive: true, headers: { Authorization: "Bearer " + this.token } }).catch(() => {});
    this.teardown();
  }
  teardown() {
    this.closed = true; this.resource = null;
    liveSessions.delete(this);
    if (this.pc) { this.pc.onconnectionstatechange = null; this.pc.ontrack = null; try { this.pc.close(); } catch { /* closed */ } }
    this.pc = null;
    if (this.stream) this.stream.getTracks().forEach((t) => t.stop());
    this.stream = this.track = null;
    if (this.returnAudio) { this.returnAudio.pause(); this.returnAudio.srcObject = null; }
  }
}

/**
 * The microphone card used by the host console, the speaker page and a
 * listener brought on stage: join, mute, leave, level, connection state.
 * data-status on #mic-panel: idle | waiting | connecting | connected |
 * reconnecting | failed | removed | left | ended.
 */
class MicPanel {
  constructor(root, opts) {
    this.o = Object.assign({
      joinLabel: "Join stage", idleText: "You're not on stage.", showJoin: true, onTakeover() {}, onExit() {},
      scheduledText: "Join now and you'll go on air as soon as the host goes live.",
    }, opts);
    this.status = "idle"; this.want = false; this.space = opts.space || null;
    this.selfMuted = false; this.hostMuted = false; this.seen = false; this.retries = 0;
    root.innerHTML = `
      <div class="mic-panel" id="mic-panel" data-status="idle">
        <div class="mic-state"><span class="status-dot" id="mic-dot"></span><span id="mic-status"></span></div>
        <div class="meter" id="mic-meter" title="Your microphone level" data-level="0"><div class="meter-fill"></div></div>
        <div class="controls">
          <button id="join-stage" type="button">${esc(this.o.joinLabel)}</button>
          <button id="mute-toggle" type="button" class="secondary mute" aria-pressed="false" hidden>Mute</button>
          <button id="leave-stage" type="button" class="ghost" hidden>Leave stage</button>
        </div>
        <label class="check small"><input type="checkbox" id="music-mode"${musicMode.get() ? " checked" : ""}>
          <span>Music mode: no noise suppression or echo cancellation (use headphones)</span></label>
        <p id="mic-error" class="error" role="alert" hidden></p>
        <audio id="stage-return" autoplay></audio>
      </div>`;
    this.el = $("#mic-panel", root);
    this.meter = new Meter($("#mic-meter", root));
    this.returnAudio = $("#stage-return", root);
    $("#join-stage", root).onclick = () => { getAudioContext(); this.join(); };
    $("#mute-toggle", root).onclick = () => this.toggleMute();
    $("#leave-stage", root).onclick = () => this.leave();
    $("#music-mode", root).onchange = (e) => this.setMusic(e.target.checked);
    this.render();
  }
  get identity() { return this.o.identity || (claims(this.o.token) || {}).sub; }
  get onStage() { return ["connecting", "connected", "reconnecting"].includes(this.status); }
  setStatus(s) { this.status = s; this.render(); }
  error(msg) { say($("#mic-error", this.el), msg); }
  render() {
    const s = this.status, muted = this.selfMuted || this.hostMuted;
    this.el.dataset.status = s; // e2e
    this.el.dataset.muted = String(muted);
    const text = {
      idle: this.space && this.space.state === "scheduled" && this.o.showJoin ? this.o.scheduledText : this.o.idleText,
      waiting: "Waiting for the host to go live. You'll join automatically.",
      connecting: "Connecting to the stage…",
      connected: this.hostMuted ? "On stage · the host muted you" : muted ? "On stage · you're muted" : "On stage · you're live",
      reconnecting: "Connection unstable · reconnecting…",
      failed: "Not connected.",
      removed: "The host moved you to the audience.",
      left: "You left the stage.",
      ended: "The space has ended.",
    }[s] || s;
    $("#mic-status", this.el).textContent = text;
    $("#mic-dot", this.el).className = "status-dot" + (s === "connected" ? (muted ? " off" : " on") : "");
    const join = $("#join-stage", this.el), mute = $("#mute-toggle", this.el), leave = $("#leave-stage", this.el);
    const ended = this.space && this.space.state === "ended";
    join.hidden = !this.o.showJoin || this.onStage || s === "waiting" || ended;
    join.disabled = this.busy;
    mute.hidden = !(this.onStage || s === "waiting");
    mute.textContent = muted ? "Unmute" : "Mute";
    mute.setAttribute("aria-pressed", String(muted));
    leave.hidden = !(this.onStage || s === "waiting");
    leave.textContent = s === "waiting" ? "Cancel" : "Leave stage";
    $("#music-mode", this.el).closest("label").hidden = ended;
  }
  setSpace(space) {
    this.space = space;
    if (space.state === "ended") {
      if (this.client || this.want) { this.want = false; this.drop(false); this.setStatus("ended"); this.o.onExit("ended"); }
      this.render();
      return;
    }
    if (space.state === "live" && this.want && this.status === "waiting" && !this.busy) this.connect();
    this.render();
  }
  setStage(stage) {
    if (!this.client || !this.onStage) return;
    const me = stage.members.find((m) => m.identity === this.identity);
    if (me) {
      this.seen = true;
      const hostMuted = !!me.muted && me.muted_by === "host";
      if (hostMuted !== this.hostMuted) { this.hostMuted = hostMuted; this.applyMute(); }
      this.el.dataset.talking = String((me.level || 0) > TALKING);
    } else if (this.seen && this.status !== "connecting") {
      // We were on stage and the host took us off: back to the audience.
      this.want = false;
      this.drop(false); // the server already closed the session
      this.setStatus("removed");
      this.o.onExit("removed");
    }
  }
  /** Joins by itself when the space goes live; the mic opens only then. */
  arm() {
    if (this.busy || this.onStage || this.want) return;
    this.want = true; this.retries = 0;
    this.setStatus("waiting");
  }
  async join() {
    if (this.busy || this.onStage) return;
    this.want = true; this.retries = 0; this.error("");
    if (!this.space || this.space.state !== "live") {
      // Open the mic now (permission prompt, level check), connect when live.
      try { await this.ensureMic(); } catch (e) { this.want = false; this.error(e.message); this.setStatus("failed"); return; }
      this.setStatus(this.space && this.space.state === "ended" ? "ended" : "waiting");
      return;
    }
    await this.connect();
  }
  async ensureMic() {
    if (!this.client) {
      this.client = new StageClient(this.o.spaceId, this.o.token, this.returnAudio);
      this.client.setEnabled(!(this.selfMuted || this.hostMuted));
    }
    await this.client.openMic();
    this.meter.attach(this.client.stream);
    this.client.ontrackended = () => { this.error("The microphone stopped (unplugged, or access was revoked)."); this.leave(); };
  }
  async connect() {
    this.busy = true; this.seen = false; this.tookOver = false;
    this.setStatus("connecting");
    try {
      await this.ensureMic();
      const c = this.client;
      c.onremote = () => this.takeover();
      c.onblocked = () => {
        this.error("Tap anywhere to hear the others (the browser is holding the sound back).");
        document.addEventListener("pointerdown", () => { this.returnAudio.play().catch(() => {}); this.error(""); }, { once: true });
      };
      c.onstate = (st) => this.onPeerState(st);
      await c.connect();
      clearTimeout(this.iceTimer);
      this.iceTimer = setTimeout(() => {
        if (this.client === c && this.status === "connecting") this.failed("Couldn't connect the audio. A firewall or VPN may be blocking UDP to the server.", true);
      }, 15000);
    } catch (e) {
      if (e.message === "closed") return;
      if (e.status === 409 && this.space && this.space.state !== "live") {
        // Not live after all: wait for the host, keep the mic open.
        this.busy = false; this.dropSession(); this.setStatus("waiting"); return;
      }
      this.failed(e.message, e.status === 0);
    } finally {
      this.busy = false; this.render();
    }
  }
  onPeerState(st) {
    if (st === "connected") {
      clearTimeout(this.iceTimer); this.retries = 0;
      this.setStatus("connected"); this.error("");
      if (this.selfMuted) this.postMute(true);
      // If no return audio arrives (alone on stage), still stop the delayed program.
      clearTimeout(this.takeoverTimer);
      this.takeoverTimer = setTimeout(() => this.takeover(), 2000);
    } else if (st === "disconnected") {
      if (this.status === "connected") this.setStatus("reconnecting");
    } else if (st === "failed") {
      this.failed("The audio connection was lost.", true);
    }
  }
  takeover() {
    if (this.tookOver || !this.onStage) return;
    this.tookOver = true;
    this.o.onTakeover();
  }
  failed(msg, retry) {
    this.dropSession();
    if (retry && this.want && this.retries < 3 && this.space && this.space.state === "live") {
      this.retries++;
      this.error(msg + " Trying again…");
      this.setStatus("reconnecting");
      setTimeout(() => { if (this.want && this.status === "reconnecting") this.connect(); }, 1500 * this.retries);
      return;
    }
    this.want = false;
    this.drop();
    this.error(msg);
    this.setStatus("failed");
    this.o.onExit("failed");
  }
  /** Closes the WebRTC session but keeps the microphone (for a retry). */
  dropSession() {
    clearTimeout(this.iceTimer); clearTimeout(this.takeoverTimer);
    const c = this.client;
    if (!c) return;
    if (c.resource) fetch(c.resource, { method: "DELETE", headers: { Authorization: "Bearer " + c.token } }).catch(() => {});
    c.resource = null;
    liveSessions.delete(c);
    if (c.pc) { c.pc.onconnectionstatechange = null; c.pc.close(); c.pc = null; }
    if (c.returnAudio) c.returnAudio.srcObject = null;
  }
  /** Closes everything, microphone included. */
  drop(hangUp = true) {
    clearTimeout(this.iceTimer); clearTimeout(this.takeoverTimer);
    this.meter.detach();
    if (this.client) { if (hangUp) this.client.leave(); else this.client.teardown(); this.client = null; }
    this.hostMuted = false;
    this.el.dataset.talking = "false";
  }
  async leave() {
    this.want = false;
    const wasOn = this.onStage || this.status === "waiting";
    this.drop();
    this.setStatus("left");
    if (wasOn) this.o.onExit("left");
  }
  applyMute() {
    if (this.client) this.client.setEnabled(!(this.selfMuted || this.hostMuted));
    this.render();
  }
  async toggleMute() {
    const muted = this.selfMuted || this.hostMuted;
    this.error("");
    if (muted) {
      const wasHost = this.hostMuted;
      this.selfMuted = false;
      if (wasHost) {
        // Ask the server first: the host's mute may not be ours to lift.
        try { await this.postMute(false, true); this.hostMuted = false; } catch (e) { this.error(e.message); }
      } else this.postMute(false);
    } else {
      this.selfMuted = true;
      this.postMute(true);
    }
    this.applyMute();
  }
  async postMute(muted, strict) {
    if (!this.client || this.status !== "connected") return;
    const path = `/api/spaces/${this.o.spaceId}/stage/members/${encodeURIComponent(this.identity)}/mute`;
    try { await api("POST", path, { muted }, this.o.token); } catch (e) {
      if (strict) throw e;
      this.error(`Muted on this device, but the server didn't record it: ${e.message}`);
    }
  }
  async setMusic(on) {
    musicMode.set(on);
    if (!this.client || !this.client.stream) return;
    try { await this.client.reopenMic(); this.meter.attach(this.client.stream); toast(on ? "Music mode on" : "Voice mode on"); } catch (e) { this.error(e.message); }
  }
  destroy() { this.want = false; this.drop(); }
}

/* -------------------------------------------------------- stage displays */

/**
 * The name to show for a stage member or a speaker track: the host's display
 * name (space.host_name, when the server gives one) for the space's creator,
 * else the member's name, else their identity.
 */
function displayName(space, identity, name) {
  if (space && space.host_name && identity === space.created_by && (!name || name === identity)) return space.host_name;
  return name || identity;
}

/** "Hosted by …" under a space's title, when the server names the host. */
function showHost(el, space) {
  if (!el) return;
  el.hidden = !space.host_name;
  el.textContent = space.host_name ? "Hosted by " + space.host_name : "";
}

/** Avatars of the people on stage (listener and speaker pages). */
function renderAvatars(list, members, space) {
  reconcile(list, members, (m) => m.identity,
    (m) => fromHTML(`<li class="member"><div class="avatar" style="${avatarStyle(m.identity)}"><span class="ini"></span><span class="mic-off">${ICON.micOff}</span></div><div class="name"></div><div class="sub"></div></li>`),
    (el, m) => {
      const name = displayName(space, m.identity, m.name);
      el.dataset.identity = m.identity;
      el.dataset.name = name;
      el.dataset.connected = String(m.connected !== false);
      el.dataset.muted = String(!!m.muted);
      el.dataset.talking = String(!m.muted && (m.level || 0) > TALKING);
      $(".ini", el).textContent = initials(name);
      $(".name", el).textContent = name;
      $(".sub", el).textContent = m.connected === false ? "connecting…" : ROLE_LABEL[m.role] || "Speaker";
    });
}

function memberStatus(m) {
  if (m.connected === false) return { text: "connecting…", dot: "" };
  if (m.muted) return { text: m.muted_by === "host" ? "muted by host" : "muted", dot: "off" };
  if ((m.level || 0) > TALKING) return { text: "talking", dot: "talk" };
  return { text: "connected", dot: "on" };
}

/* ------------------------------------------------------------------ home */

async function homePage() {
  document.body.dataset.page = "home";
  const tok = adminToken(), c = claims(tok);
  const canCreate = !!tok;
  app.innerHTML = `
    <details class="card" id="create-card"${canCreate ? " open" : ""}>
      <summary><h2 style="display:inline">Start a space</h2></summary>
      <form id="create-form" novalidate>
        <label for="create-title">Title</label>
        <input id="create-title" maxlength="200" placeholder="What is it about?" autocomplete="off">
        <label for="create-host-name">Your name, as listeners will see it</label>
        <input id="create-host-name" maxlength="60" placeholder="e.g. Ada Lovelace" autocomplete="name" value="${esc(store.raw("tribune.name"))}">
        <label for="create-when">Start time <span class="small">(optional; leave empty to go live when you're ready)</span></label>
        <input id="create-when" type="datetime-local">
        <label class="check"><input id="create-private" type="checkbox">
          <span>Private: only people with a listener link can listen</span></label>
        <details id="token-box"${tok ? "" : " open"} style="margin-top:10px">
          <summary class="small">${tok ? `Using the ${esc((c && c.role) || "saved")} token saved in this browser` : "Host or admin token"}</summary>
          <input id="create-token" type="password" autocomplete="off" placeholder="Paste a host or admin token" value="${esc(tok)}">
          <p class="muted small">Open the admin link that <code>tribune serve</code> prints, or paste a token from <code>tribune token --role host</code>.</p>
        </details>
        <div class="row" style="margin-top:12px"><button id="create-submit" type="submit">Create space</button></div>
        <p id="create-msg" class="muted" role="alert" hidden></p>
      </form>
    </details>
    <div id="lists"><p class="muted">Loading spaces…</p></div>`;

  const msg = $("#create-msg");
  $("#create-form").onsubmit = async (e) => {
    e.preventDefault();
    const title = $("#create-title").value.trim();
    const when = $("#create-when").value;
    const token = $("#create-token").value.trim();
    if (!title) return say(msg, "Give the space a title.");
    if (!token) { $("#token-box").open = true; return say(msg, "Paste a host or admin token first (tribune serve prints an admin link)."); }
    const tc = claims(token);
    if (!tc) { $("#token-box").open = true; return say(msg, "That doesn't look like a Tribune token."); }
    if (tc.role !== "admin" && tc.role !== "host") return say(msg, `That token is for a ${tc.role}; starting a space needs a host or admin token.`);
    if (tc.exp && tc.exp * 1000 < Date.now()) return say(msg, `That token expired ${fmtRelative(tc.exp * 1000)}. Get a new one from the admin.`);
    const body = { title };
    const hostName = $("#create-host-name").value.trim();
    if (hostName) { body.host_name = hostName; store.setRaw("tribune.name", hostName); }
    if (when) {
      const at = new Date(when).getTime();
      if (Number.isNaN(at)) return say(msg, "That start time isn't a valid date.");
      if (at < Date.now() - 60000) return say(msg, "Pick a start time in the future, or leave it empty.");
      body.scheduled_at = at;
    }
    if ($("#create-private").checked) body.private = true;
    const btn = $("#create-submit");
    btn.disabled = true; btn.textContent = "Creating…"; say(msg, "");
    try {
      const s = await api("POST", "/api/spaces", body, token);
      store.setRaw("tribune.token", token);
      store.put("tribune.hosts", s.id, s.host_token);
      location.href = `/spaces/${s.id}/host#token=${encodeURIComponent(s.host_token)}`;
    } catch (err) {
      say(msg, err.status === 401 ? "The server didn't accept that token. " + err.message : err.message);
      btn.disabled = false; btn.textContent = "Create space";
    }
  };

  const lists = $("#lists");
  const load = async () => {
    let spaces;
    try { spaces = (await api("GET", "/api/spaces", undefined, adminToken() || undefined)).spaces || []; conn.set("home", false); } catch (e) {
      conn.set("home", e.status === 0);
      if (!lists.querySelector(".space-list")) lists.innerHTML = `<p class="error">${esc(e.message)}</p>`;
      return;
    }
    const hosts = store.map("tribune.hosts"), admin = c && c.role === "admin";
    const live = spaces.filter((s) => s.state === "live").sort((a, b) => b.listeners - a.listeners);
    const sched = spaces.filter((s) => s.state === "scheduled").sort((a, b) => (a.scheduled_at || 9e15) - (b.scheduled_at || 9e15));
    const ended = spaces.filter((s) => s.state === "ended").sort((a, b) => (b.ended_at || 0) - (a.ended_at || 0));
    const item = (s) => {
      const sub = s.state === "live"
        ? `<strong>${esc(plural(s.listeners, "listener"))}</strong> · started ${esc(fmtRelative(s.started_at))}`
        : s.state === "scheduled"
          ? (s.scheduled_at ? `Starts ${esc(fmtWhen(s.scheduled_at))} (${esc(fmtRelative(s.scheduled_at))})` : "Not started yet")
          : `Ended ${esc(fmtRelative(s.ended_at))}${s.duration_ms ? " · " + fmtDuration(s.duration_ms) : ""} · replay available`;
      const hostLink = (hosts[s.id] || admin) && s.state !== "ended" ? `<a class="host-link" href="/spaces/${esc(s.id)}/host">Host</a>` : "";
      return `<li class="space-item ${esc(s.state)}" data-id="${esc(s.id)}" data-state="${esc(s.state)}">
        <a class="space-link" href="/spaces/${esc(s.id)}">
          <span class="row">${badge(s.state)}${s.private ? '<span class="badge">Private</span>' : ""}</span>
          <span class="title">${esc(s.title)}</span>
          <span class="muted">${sub}</span>
        </a>${hostLink}</li>`;
    };
    const section = (title, arr) => arr.length ? `<h3>${title}</h3><ul class="space-list">${arr.map(item).join("")}</ul>` : "";
    lists.innerHTML = spaces.length
      ? section("Live now", live) + section("Upcoming", sched) + section("Past · replays", ended)
      : `<div class="card"><p class="muted">No spaces yet.${canCreate ? " Start one above." : ""}</p></div>`;
  };
  await load();
  setInterval(() => { if (!document.hidden) load(); }, 5000);
}

/* ----------------------------------------------------------- live player */

// The live program plays through the page's own buffer: fetch() streams
// live.opus, Ogg pages are parsed here, Opus packets are decoded with
// WebCodecs and played by an AudioWorklet from a small jitter buffer. The
// server's ~1 s burst means sound can start as soon as it arrives, and the
// page chooses how far behind live it plays (an <audio> element waits for
// ~32 KB before it starts, 4-5 s at 32 kbps). Where WebCodecs or
// AudioWorklet is missing, an <audio> element plays the same URL.

const RATE = 48000;
/** Milestones of the page's first second, in performance.now() ms (web/e2e/listen.mjs reports them). */
const marks = { script: Math.round(performance.now()) };
const mark = (name) => { if (!(name in marks)) marks[name] = Math.round(performance.now()); };
const PLAYER = {
  startS: 0.4,   // buffered ahead when sound starts, and after a stall
  keepS: 0.25,   // the least the buffer should hold; more than this (+ slack) for 2 s is trimmed
  slackS: 0.15,
  maxStartS: 1.2, // each stall raises startS by 0.1 s, up to this
  holdS: 3,      // decoded audio kept ahead in the worklet; the rest waits encoded
};

/**
 * The page's one audio output for the program, whichever tier plays it:
 * each player has its own gain into `master`, so moving between the
 * low-latency stream and HLS is a cross-fade in one AudioContext (and
 * web/e2e records `master` across the move). Null without Web Audio.
 */
let programOut = null;
function programOutput() {
  if (programOut) return programOut;
  const Ctx = window.AudioContext || window.webkitAudioContext;
  if (!Ctx) return null;
  let ctx;
  try { ctx = new Ctx({ sampleRate: RATE, latencyHint: "interactive" }); } catch { ctx = new Ctx(); }
  mark("context");
  const master = ctx.createGain();
  master.connect(ctx.destination);
  programOut = { ctx, master };
  window.tribuneOutput = programOut; // web/e2e
  return programOut;
}

/** A gain node's level to `v` now, or along a ramp of `secs`. */
function rampGain(node, v, secs) {
  if (!node) return;
  const g = node.gain, t = node.context.currentTime;
  g.cancelScheduledValues(t);
  g.setValueAtTime(g.value, t);
  if (secs > 0) g.linearRampToValueAtTime(v, t + secs); else g.setValueAtTime(v, t);
}

/** Ogg pages from a byte stream that arrives in pieces; packets are reassembled across pages. */
class OggReader {
  constructor() { this.buf = new Uint8Array(0); this.partial = null; }
  push(chunk) {
    const b = new Uint8Array(this.buf.length + chunk.length);
    b.set(this.buf); b.set(chunk, this.buf.length);
    const pages = [];
    let at = 0;
    for (;;) {
      // resynchronise on "OggS"
      while (at + 4 <= b.length && !(b[at] === 0x4f && b[at + 1] === 0x67 && b[at + 2] === 0x67 && b[at + 3] === 0x53)) at++;
      if (at + 27 > b.length) break;
      const nseg = b[at + 26];
      if (at + 27 + nseg > b.length) break;
      let len = 0;
      for (let i = 0; i < nseg; i++) len += b[at + 27 + i];
      const end = at + 27 + nseg + len;
      if (end > b.length) break;
      const dv = new DataView(b.buffer, b.byteOffset + at, 27);
      const lo = dv.getUint32(6, true), hi = dv.getUint32(10, true);
      const page = { flags: b[at + 5], granule: lo === 0xffffffff && hi === 0xffffffff ? -1 : hi * 4294967296 + lo, sequence: dv.getUint32(18, true), packets: [] };
      let off = at + 27 + nseg, start = off, seg = 0;
      if (!(page.flags & 1)) this.partial = null; // a page that doesn't continue a packet drops a stale half
      for (let i = 0; i < nseg; i++) {
        seg = b[at + 27 + i]; off += seg;
        if (seg < 255) { // a lacing value under 255 ends a packet
          let p = b.subarray(start, off);
          if (this.partial) { const j = new Uint8Array(this.partial.length + p.length); j.set(this.partial); j.set(p, this.partial.length); p = j; this.partial = null; }
          page.packets.push(p.slice());
          start = off;
        }
      }
      if (start < off) { // a packet continues on the next page
        const rest = b.subarray(start, off);
        const j = new Uint8Array((this.partial ? this.partial.length : 0) + rest.length);
        if (this.partial) j.set(this.partial);
        j.set(rest, this.partial ? this.partial.length : 0);
        this.partial = j;
      }
      pages.push(page);
      at = end;
    }
    this.buf = b.slice(at);
    return pages;
  }
}

/** Samples (at 48 kHz) in one Opus packet, from its TOC byte (RFC 6716 §3.1). */
function opusSamples(p) {
  if (!p || !p.length) return 0;
  const config = p[0] >> 3, code = p[0] & 3;
  const frame = config < 12 ? [480, 960, 1920, 2880][config & 3] : config < 16 ? [480, 960][config & 1] : [120, 240, 480, 960][config & 3];
  const frames = code === 0 ? 1 : code === 3 ? (p.length > 1 ? p[1] & 63 : 0) : 2;
  return frame * frames;
}

/** OpusTags comments as a map (TRIBUNE_EPOCH_MS: the wall clock of granule 0). */
function opusTags(p) {
  const out = {};
  try {
    const dv = new DataView(p.buffer, p.byteOffset, p.byteLength), dec = new TextDecoder();
    let at = 8; const vlen = dv.getUint32(at, true); at += 4 + vlen;
    const n = dv.getUint32(at, true); at += 4;
    for (let i = 0; i < n && at + 4 <= p.length; i++) {
      const len = dv.getUint32(at, true); at += 4;
      const s = dec.decode(p.subarray(at, at + len)); at += len;
      const eq = s.indexOf("=");
      if (eq > 0) out[s.slice(0, eq).toUpperCase()] = s.slice(eq + 1);
    }
  } catch { /* malformed: no comments */ }
  return out;
}

/**
 * The seq of the next program packet this page needs, so a reconnect can ask
 * for `live.opus?from=SEQ`: the server's X-Tribune-Seq names the first audio
 * packet after the headers, and every audio packet received counts one.
 * `next` is null while the server doesn't say.
 */
function seqCounter(header) {
  let next = header != null && /^\d+$/.test(String(header).trim()) ? Number(header) : null;
  return {
    packet() { if (next !== null) next += 1; },
    get next() { return next; },
    /** `live` (a live.opus URL) to resume at the next packet, or as is when unknown. */
    resumeUrl(live) { return next === null ? live : live + (live.includes("?") ? "&" : "?") + "from=" + next; },
  };
}

// The AudioWorklet: a queue of decoded chunks played out in order. It
// starts (and restarts after running dry) once startS is buffered; while
// following live it trims what the buffer holds beyond keepS + slackS over a
// 2 s window; it reports what it plays and the first sound it makes.
const WORKLET = `
class TribuneOut extends AudioWorkletProcessor {
  constructor(o) {
    super();
    const p = o.processorOptions;
    this.start = p.start; this.keep = p.keep; this.slack = p.slack; this.maxStart = p.maxStart;
    this.q = []; this.off = 0; this.queued = 0; this.lastG = -1;
    this.playing = false; this.started = false; this.follow = true; this.ended = false; this.ready = false;
    this.stalls = 0; this.stallFrames = 0; this.played = 0; this.heard = false;
    this.winMin = Infinity; this.winFrames = 0; this.tick = 0; this.fade = null;
    this.port.onmessage = (e) => this.msg(e.data);
  }
  msg(m) {
    if (m.type === "pcm") { this.q.push(m); this.queued += m.ch[0].length; }
    else if (m.type === "ready") this.ready = true;
    else if (m.type === "live") { // back to live: keep m.keep samples (newer audio is on its way)
      this.follow = true; this.trimTo(m.keep);
      if (!m.keep) { this.playing = false; this.started = false; }
    }
    else if (m.type === "hold") this.follow = false;
    else if (m.type === "end") this.ended = true;
    else if (m.type === "reset") { this.q = []; this.off = 0; this.queued = 0; this.playing = false; this.started = false; this.ended = false; this.ready = false; }
  }
  trimTo(level) {
    let drop = this.queued - level;
    while (drop > 0 && this.q.length) {
      const c = this.q[0], left = c.ch[0].length - this.off;
      if (left <= drop) { this.q.shift(); this.off = 0; this.queued -= left; drop -= left; }
      else { this.off += drop; this.queued -= drop; drop = 0; }
    }
  }
  process(_in, outs) {
    const out = outs[0], n = out[0].length;
    if (!this.playing && this.ready && this.queued >= this.start) {
      if (!this.started) this.trimTo(this.start);
      this.playing = true; this.started = true;
    }
    let i = 0;
    if (this.playing) {
      while (i < n && this.q.length) {
        const c = this.q[0], len = c.ch[0].length, k = Math.min(n - i, len - this.off);
        for (let ch = 0; ch < out.length; ch++) out[ch].set(c.ch[Math.min(ch, c.ch.length - 1)].subarray(this.off, this.off + k), i);
        if (!this.heard) {
          const s = c.ch[0];
          for (let j = 0; j < k; j++) if (Math.abs(s[this.off + j]) > 1e-3) { this.heard = true; this.port.postMessage({ type: "first", frame: currentFrame + i + j }); break; }
        }
        this.lastG = c.g + this.off; i += k; this.off += k; this.queued -= k; this.played += k;
        if (this.off >= len) { this.q.shift(); this.off = 0; }
      }
      if (i < n && !this.ended) { // ran dry: a stall, until startS is buffered again
        this.playing = false; this.stalls++;
        this.port.postMessage({ type: "stall", frame: currentFrame + i, start: this.start });
        this.start = Math.min(this.maxStart, this.start + 4800); this.keep = Math.min(this.start - 4800, this.keep + 4800);
      }
    }
    for (let ch = 0; ch < out.length; ch++) out[ch].fill(0, i);
    if (this.started && !this.playing && !this.ended) this.stallFrames += n - i;
    if (this.playing && this.follow) {
      this.winMin = Math.min(this.winMin, this.queued);
      this.winFrames += n;
      if (this.winFrames >= 96000) {
        if (this.winMin > this.keep + this.slack) this.trimTo(this.queued - (this.winMin - this.keep));
        this.winMin = Infinity; this.winFrames = 0;
      }
    } else { this.winMin = Infinity; this.winFrames = 0; }
    if (++this.tick % 24 === 0) {
      this.port.postMessage({ type: "pos", frame: currentFrame, g: this.q.length ? this.q[0].g + this.off : this.lastG,
        queued: this.queued, start: this.start, playing: this.playing, stalls: this.stalls, stallFrames: this.stallFrames, played: this.played });
    }
    return true;
  }
}
registerProcessor("tribune-out", TribuneOut);
`;

/**
 * The live program through Web Audio. hooks.onchange() is called when state,
 * behind-live or stats change. state: idle | connecting | blocked (the
 * browser waits for a tap) | playing | stalled | paused | ended | failed.
 */
class WebAudioPlayer {
  static async supported() {
    if (typeof AudioDecoder !== "function" || typeof AudioWorkletNode !== "function" || typeof EncodedAudioChunk !== "function" || !window.ReadableStream) return false;
    try { return !!(await AudioDecoder.isConfigSupported({ codec: "opus", sampleRate: RATE, numberOfChannels: 1 })).supported; } catch { return false; }
  }
  constructor(hooks) {
    this.hooks = hooks; this.engine = "webaudio"; this.tier = "low";
    this.state = "idle"; this.src = ""; this.ctx = null; this.node = null; this.output = null;
    this.firstSoundMs = null; this.behindMs = null; this.stalls = 0; this.stallMs = 0; this.played = 0;
    this.gen = 0; this.paused = false; this.stallLog = []; this.resumes = 0; this.seqGap = 0;
  }
  /** The AudioContext and worklet, made ahead of the stream (they take a moment). */
  prepare() {
    if (this.ready) return this.ready;
    this.ready = (async () => {
      const out = programOutput(), ctx = out.ctx;
      this.ctx = ctx;
      const url = URL.createObjectURL(new Blob([WORKLET], { type: "text/javascript" }));
      try { await ctx.audioWorklet.addModule(url); } finally { URL.revokeObjectURL(url); }
      mark("worklet");
      this.output = ctx.createGain();
      this.output.connect(out.master);
      const wake = () => { if (ctx.state === "suspended" && !this.paused) ctx.resume().catch(() => {}); };
      for (const ev of ["pointerdown", "keydown", "touchend"]) document.addEventListener(ev, wake, { passive: true });
      ctx.addEventListener("statechange", () => this.update());
      if (ctx.state === "suspended") ctx.resume().catch(() => {});
      return ctx;
    })();
    return this.ready;
  }
  set(state) { if (this.state !== state) { this.state = state; this.hooks.onchange(); } }
  update() {
    if (this.state === "ended" || this.state === "failed" || this.state === "idle") return;
    if (this.paused) return this.set("paused");
    if (this.ctx && this.ctx.state !== "running" && this.gotAudio) return this.set("blocked");
    if (!this.pos || !this.pos.played) return this.set(this.state === "blocked" ? "connecting" : this.state);
    this.set(this.pos.playing ? "playing" : "stalled");
  }
  /** Where frame `frame` of the context leaves the speakers, in performance.now() ms. */
  outputPerfMs(frame) {
    const ts = this.ctx.getOutputTimestamp ? this.ctx.getOutputTimestamp() : null;
    if (ts && ts.performanceTime > 0) return ts.performanceTime + (frame / this.ctx.sampleRate - ts.contextTime) * 1000;
    return performance.now() + (frame / this.ctx.sampleRate - this.ctx.currentTime + (this.ctx.outputLatency || this.ctx.baseLatency || 0)) * 1000;
  }
  async start(url) {
    const gen = ++this.gen;
    this.src = url; this.paused = false; this.gotAudio = false; this.readySent = false; this.pos = null; this.behindMs = null; this.played = 0;
    this.streamEnded = false; this.minArrivalMs = null; this.arrivals = []; this.error = null;
    this.set("connecting");
    const abort = new AbortController();
    this.abort = abort;
    mark("stream-request");
    const response = fetch(url, { cache: "no-store", signal: abort.signal }); // the bytes come while the output gets ready
    response.catch(() => {});
    const ctx = await this.prepare();
    if (gen !== this.gen) { abort.abort(); return; }
    if (this.node) { this.node.port.onmessage = null; this.node.disconnect(); }
    const channels = 1;
    this.node = new AudioWorkletNode(ctx, "tribune-out", {
      numberOfInputs: 0, numberOfOutputs: 1, outputChannelCount: [channels],
      processorOptions: { start: PLAYER.startS * RATE, keep: PLAYER.keepS * RATE, slack: PLAYER.slackS * RATE, maxStart: PLAYER.maxStartS * RATE },
    });
    this.node.connect(this.output);
    this.node.port.onmessage = (e) => this.fromWorklet(e.data);
    if (ctx.state !== "running") ctx.resume().catch(() => {});
    let res;
    try {
      res = await response;
      mark("stream-headers");
    } catch (e) { if (gen === this.gen) this.fail("network", e); return; }
    if (gen !== this.gen) { abort.abort(); return; }
    if (!res.ok || !res.body) { this.fail("http", null, res.status); return; }
    this.seq = seqCounter(res.headers.get("X-Tribune-Seq"));
    this.read(res.body.getReader(), gen);
  }
  /**
   * The stream broke without the program's last page (its node went away):
   * when hooks.resumeAt(seq) names another node's URL for the packet this
   * page needs next, the stream goes on from there while the worklet plays
   * what it holds, so nothing is heard twice and, while that node's ring
   * still has it, nothing is missed. False when there is nowhere to go.
   */
  resumeElsewhere(gen) {
    const want = this.seq ? this.seq.next : null;
    const url = want != null && this.hooks.resumeAt ? this.hooks.resumeAt(want) : null;
    if (!url) return false;
    this.resumes += 1;
    this.follow(url, want, gen);
    return true;
  }
  async follow(url, want, gen) {
    this.src = url;
    const abort = new AbortController();
    this.abort = abort;
    let res;
    try { res = await fetch(url, { cache: "no-store", signal: abort.signal }); } catch (e) {
      if (gen === this.gen && !this.resumeElsewhere(gen)) this.fail("network", e);
      return;
    }
    if (gen !== this.gen) { abort.abort(); return; }
    if (!res.ok || !res.body) {
      abort.abort();
      if (!this.resumeElsewhere(gen)) this.fail("http", null, res.status);
      return;
    }
    this.seq = seqCounter(res.headers.get("X-Tribune-Seq"));
    // that node no longer had what we need: the packets between are lost
    if (this.seq.next != null && this.seq.next > want) this.seqGap += this.seq.next - want;
    this.read(res.body.getReader(), gen, true);
  }
  async read(reader, gen, resumed = false) {
    const ogg = new OggReader();
    let headers = 0, lastPage = false, heard = false;
    if (!resumed) { this.pending = []; this.inflight = 0; this.chunksInflight = 0; this.epochMs = null; this.decoder = null; }
    const pending = this.pending;
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (gen !== this.gen) { reader.cancel().catch(() => {}); return; }
        if (done) break;
        mark("stream-bytes");
        for (const page of ogg.push(value)) {
          if (page.flags & 4) lastPage = true;
          if (headers < 2) {
            for (const p of page.packets) {
              // a resumed stream has the same head: the decoder goes on
              if (headers === 0) { if (!this.decoder) this.configure(p, gen); }
              else this.epochMs = Number(opusTags(p).TRIBUNE_EPOCH_MS) || null;
              headers++;
            }
            continue;
          }
          // start granule of each packet from the page's end granule
          let total = 0;
          const durs = page.packets.map((p) => { const d = opusSamples(p); total += d; return d; });
          let g = page.granule >= 0 ? page.granule - total : (this.nextG || 0);
          for (let i = 0; i < page.packets.length; i++) {
            pending.push({ g, data: page.packets[i] });
            g += durs[i];
            this.seq.packet();
          }
          this.nextG = g;
          if (resumed && page.packets.length && !heard) { heard = true; this.hooks.onresumed && this.hooks.onresumed(); }
          if (page.granule >= 0 && this.epochMs) {
            // arrival minus the wall clock of the newest sample: the path's delay (and any clock skew)
            const d = Date.now() - (this.epochMs + page.granule / 48);
            this.arrivals.push(d);
            if (this.arrivals.length > 50) this.arrivals.shift();
            this.minArrivalMs = Math.min(...this.arrivals);
          }
        }
        this.pump();
      }
      if (gen !== this.gen) return;
      if (!lastPage && this.resumeElsewhere(gen)) return;
      this.streamEnded = true;
      this.pump();
      if (this.node) this.node.port.postMessage({ type: "end" });
      this.hooks.onclose && this.hooks.onclose("end");
    } catch (e) {
      if (gen === this.gen && !this.resumeElsewhere(gen)) this.fail("network", e);
    }
  }
  configure(head, gen) {
    const channels = head.length > 9 ? head[9] : 1;
    const dec = new AudioDecoder({
      output: (d) => this.decoded(d, gen),
      error: (e) => { console.error("Opus decoder:", e); if (gen === this.gen) this.fail("decode", e); },
    });
    dec.configure({ codec: "opus", sampleRate: RATE, numberOfChannels: channels, description: head.slice() });
    this.decoder = dec;
  }
  /** Decodes what waits encoded while the worklet holds less than holdS (a pause lets it wait). */
  pump() {
    const dec = this.decoder;
    if (!dec || dec.state !== "configured") return;
    const ahead = (this.pos ? this.pos.queued : 0) + this.inflight;
    let room = PLAYER.holdS * RATE - ahead;
    if (this.paused) room = Math.min(room, 0);
    while (this.pending.length && (room > 0 || !this.gotAudio)) {
      const p = this.pending.shift();
      const d = opusSamples(p.data) || 960;
      dec.decode(new EncodedAudioChunk({ type: "key", timestamp: Math.round(p.g * 1e6 / RATE), duration: Math.round(d * 1e6 / RATE), data: p.data }));
      this.inflight += d; room -= d; this.chunksInflight = (this.chunksInflight || 0) + 1;
    }
    if (this.pending.length > 3600 * 50) this.pending.splice(0, this.pending.length - 3600 * 50); // an hour paused at most
  }
  decoded(d, gen) {
    try {
      if (gen !== this.gen || !this.node) return;
      const n = d.numberOfFrames, chs = [];
      const cc = Math.min(d.numberOfChannels, 2);
      for (let c = 0; c < cc; c++) { const a = new Float32Array(n); d.copyTo(a, { planeIndex: c, format: "f32-planar" }); chs.push(a); }
      const g = Math.round(d.timestamp * RATE / 1e6);
      this.inflight = Math.max(0, this.inflight - Math.max(n, 960));
      this.node.port.postMessage({ type: "pcm", g, ch: chs }, chs.map((a) => a.buffer));
      if (!this.gotAudio) { mark("decoded"); this.gotAudio = true; this.pos = this.pos || { queued: 0 }; setTimeout(() => this.update(), 300); }
      if (this.pos) this.pos.queued += n;
      // the burst is decoded (or nearly: a decoder may hold one back): the worklet may start from its newest startS
      this.chunksInflight = Math.max(0, this.chunksInflight - 1);
      if (!this.readySent) {
        const ready = () => { if (!this.readySent && gen === this.gen && this.node) { this.readySent = true; this.node.port.postMessage({ type: "ready" }); } };
        if (this.chunksInflight <= 1) ready(); else if (!this.readyTimer) this.readyTimer = setTimeout(() => { this.readyTimer = null; ready(); }, 60);
      }
    } finally { d.close(); }
  }
  fromWorklet(m) {
    if (m.type === "first") {
      this.firstSoundMs = Math.round(this.outputPerfMs(m.frame));
      this.hooks.onfirst && this.hooks.onfirst(this.firstSoundMs);
    } else if (m.type === "stall") {
      this.stallLog.push(Math.round(this.outputPerfMs(m.frame)));
    } else if (m.type === "pos") {
      this.pos = m;
      this.stalls = m.stalls; this.stallMs = Math.round(m.stallFrames / RATE * 1000); this.played = m.played / RATE;
      if (m.g >= 0 && this.epochMs && m.played) {
        const wall = performance.timeOrigin + this.outputPerfMs(m.frame);
        this.rawBehindMs = wall - (this.epochMs + m.g / 48);
        // Audio can't arrive before it was live, nor (on a working path) seconds after: the least
        // delay of the last 5 s outside 0-300 ms means the clocks disagree (this device's and the
        // server's, or a program whose granules lag the wall clock): take that out.
        const least = this.minArrivalMs || 0;
        this.behindMs = Math.max(0, this.rawBehindMs - (least - Math.min(300, Math.max(0, least))));
      }
      this.pump();
      if (this.streamEnded && !m.queued && this.pending.length === 0 && !this.inflight) { this.set("ended"); return; }
      this.update();
      this.hooks.onchange();
    }
  }
  fail(kind, err, status) {
    if (this.state === "failed") return;
    this.error = { kind, status, message: err ? String(err.message || err) : "" };
    this.stopStream();
    this.set("failed");
    this.hooks.onclose && this.hooks.onclose(kind, status);
  }
  stopStream() {
    this.gen++;
    if (this.abort) this.abort.abort();
    if (this.decoder && this.decoder.state !== "closed") try { this.decoder.close(); } catch { /* closed */ }
    this.decoder = null;
  }
  pause() {
    this.paused = true;
    if (this.node) this.node.port.postMessage({ type: "hold" });
    if (this.ctx) this.ctx.suspend().catch(() => {});
    // paused, the output stops: live runs on without us
    countBehindWhilePaused(this);
    this.set("paused");
  }
  play() {
    clearInterval(this.pauseTimer);
    this.paused = false;
    if (this.ctx) this.ctx.resume().catch(() => {});
    this.pump();
    this.update();
  }
  /** Drops what is buffered beyond the start level: plays at the live edge again. */
  backToLive() {
    // the newest audio is at the end of what waits encoded; keep the start level of it, and 5 packets to warm the decoder
    const need = (this.pos && this.pos.start) || PLAYER.startS * RATE, warm = 5 * 960;
    let waiting = this.pending.reduce((n, p) => n + (opusSamples(p.data) || 960), 0);
    while (waiting - (opusSamples(this.pending[0]?.data) || 960) >= need + warm && this.pending.length) waiting -= opusSamples(this.pending.shift().data) || 960;
    if (this.node) this.node.port.postMessage({ type: "live", keep: Math.max(0, need - waiting) });
    this.play();
  }
  canResumeLocally() { return this.state !== "failed" && this.state !== "ended" && this.state !== "idle"; }
  /** Output level (0..1), at once or over `secs`: moving between tiers cross-fades. */
  setGain(v, secs = 0) { rampGain(this.output, v, secs); }
  stop() {
    clearInterval(this.pauseTimer);
    this.stopStream();
    if (this.node) { this.node.port.postMessage({ type: "reset" }); this.node.disconnect(); this.node = null; }
    this.paused = false; this.pos = null;
    this.set("idle");
  }
  stats() {
    return { engine: this.engine, tier: this.tier, state: this.state, src: this.src, firstSoundMs: this.firstSoundMs, behindMs: this.behindMs == null ? null : Math.round(this.behindMs),
      rawBehindMs: this.rawBehindMs == null ? null : Math.round(this.rawBehindMs), stalls: this.stalls, stallMs: this.stallMs, played: +this.played.toFixed(3),
      queuedMs: this.pos ? Math.round(this.pos.queued / 48) : 0, nextSeq: this.seq ? this.seq.next : null, resumes: this.resumes, seqGap: this.seqGap, contextState: this.ctx ? this.ctx.state : null, marks, stallAt: this.stallLog.slice(0, 20) };
  }
}

/** While a player is paused, live runs on: how far behind it is grows by the wall clock. */
function countBehindWhilePaused(player) {
  const at = Date.now(), base = player.behindMs || 0;
  clearInterval(player.pauseTimer);
  player.pauseTimer = setInterval(() => { player.behindMs = base + Date.now() - at; player.hooks.onchange(); }, 500);
}

/**
 * The fallback: an <audio> element on the same URL (the browser buffers and
 * decodes; it can't say how far behind live it is, so this counts the time
 * it spent paused or stalled since it started).
 */
class ElementPlayer {
  constructor(hooks, el) {
    this.hooks = hooks; this.engine = "element"; this.tier = "low"; this.el = el;
    this.state = "idle"; this.src = ""; this.firstSoundMs = null; this.behindMs = null; this.stalls = 0; this.stallMs = 0; this.played = 0;
    this.paused = false;
    const on = (ev, f) => el.addEventListener(ev, f);
    on("playing", () => {
      if (!this.src) return;
      if (this.firstSoundMs == null) { this.firstSoundMs = Math.round(performance.now()); this.hooks.onfirst && this.hooks.onfirst(this.firstSoundMs); }
      if (this.stallAt) { this.stallMs += Date.now() - this.stallAt; this.stallAt = 0; }
      if (this.wall0 == null) { this.wall0 = Date.now(); this.t0 = el.currentTime; }
      this.set("playing");
    });
    on("waiting", () => { if (this.src && !el.paused && this.firstSoundMs != null) { this.stalls++; this.stallAt = Date.now(); this.set("stalled"); } });
    on("pause", () => { if (this.src) this.set("paused"); });
    const lost = () => { if (this.src && this.state !== "idle") { this.set("failed"); this.hooks.onclose && this.hooks.onclose("network"); } };
    on("error", lost);
    on("ended", lost);
    on("timeupdate", () => {
      if (this.wall0 == null) return;
      this.played = el.currentTime - this.t0;
      const behind = (Date.now() - this.wall0) / 1000 - this.played;
      this.behindMs = Math.max(0, Math.round(behind * 1000));
      this.hooks.onchange();
    });
  }
  static supported() { return true; }
  prepare() { return Promise.resolve(); }
  set(state) { if (this.state !== state) { this.state = state; this.hooks.onchange(); } }
  start(url) {
    clearInterval(this.pauseTimer);
    this.src = url; this.paused = false; this.wall0 = null; this.behindMs = null;
    this.el.src = url;
    this.set("connecting");
    this.el.play().catch((err) => { if (err.name === "NotAllowedError") this.set("blocked"); });
  }
  pause() {
    this.paused = true; this.el.pause();
    countBehindWhilePaused(this);
  }
  play() { clearInterval(this.pauseTimer); this.paused = false; this.el.play().catch(() => {}); }
  backToLive() { this.start(this.src); }
  setGain(v) { this.el.volume = v; }
  canResumeLocally() { return this.state !== "failed" && !!this.el.getAttribute("src"); }
  stop() {
    clearInterval(this.pauseTimer);
    this.src = "";
    this.el.pause(); this.el.removeAttribute("src"); this.el.load();
    this.set("idle");
  }
  stats() {
    return { engine: this.engine, tier: this.tier, state: this.state, src: this.src, firstSoundMs: this.firstSoundMs, behindMs: this.behindMs, rawBehindMs: null,
      stalls: this.stalls, stallMs: this.stallMs, played: +this.played.toFixed(3), queuedMs: null, nextSeq: null, resumes: 0, seqGap: 0, contextState: null };
  }
}

/* ------------------------------------------------------------- HLS tier */

// The HLS tier (…/hls/master.m3u8) is what any HTTP cache or CDN carries,
// a few seconds behind live. The page plays it when the low-latency tier's
// door is full (and with ?player=hls): through hls.js (from the npm
// registry, embedded in the binary at /assets/hls.mjs) where Media Source
// Extensions take fMP4 Opus, or through the browser's own HLS player (the
// AAC rendition) where only that exists (Safari on iPhone).

const HLS_OPUS = 'audio/mp4; codecs="opus"';
let hlsModule = null;
/** hls.js, loaded the first time it is needed (an ES module; rejects when this build has none). */
function loadHlsJs() {
  if (!hlsModule) {
    hlsModule = import("/assets/hls.mjs").then((m) => m.default);
    hlsModule.catch(() => { hlsModule = null; });
  }
  return hlsModule;
}

/**
 * The HLS tier through an <audio> element. engine: `hls.js` or
 * `native-hls`; the same hooks, states and stats as the other players.
 * Behind live is the wall clock minus the PROGRAM-DATE-TIME of what plays
 * (hls.js `playingDate`, or the element's `getStartDate()` in Safari).
 */
class HlsPlayer {
  /** Which HLS player this browser has: "hls.js", "native-hls" or null. */
  static engine() {
    const MS = window.ManagedMediaSource || window.MediaSource;
    try { if (MS && typeof MS.isTypeSupported === "function" && MS.isTypeSupported(HLS_OPUS)) return "hls.js"; } catch { /* no MSE */ }
    const a = document.createElement("audio");
    if (a.canPlayType && a.canPlayType("application/vnd.apple.mpegurl")) return "native-hls";
    return null;
  }
  constructor(hooks, engine) {
    this.hooks = hooks; this.engine = engine; this.tier = "hls";
    this.state = "idle"; this.src = ""; this.firstSoundMs = null; this.behindMs = null; this.latencyMs = null;
    this.stalls = 0; this.stallMs = 0; this.played = 0; this.paused = false; this.gen = 0; this.codec = null;
    const el = this.el = fromHTML(`<audio id="hls-audio" preload="auto" hidden></audio>`);
    const on = (ev, f) => el.addEventListener(ev, f);
    on("playing", () => {
      if (!this.src) return;
      if (this.firstSoundMs == null) { this.firstSoundMs = Math.round(performance.now()); this.hooks.onfirst && this.hooks.onfirst(this.firstSoundMs); }
      if (this.stallAt) { this.stallMs += Date.now() - this.stallAt; this.stallAt = 0; }
      this.update();
    });
    on("waiting", () => { if (this.src && !el.paused && this.firstSoundMs != null && this.state === "playing") { this.stalls++; this.stallAt = Date.now(); this.set("stalled"); } });
    on("pause", () => { if (this.src && this.paused) this.set("paused"); });
    on("error", () => { if (this.src && this.engine === "native-hls") this.fail("media", el.error && el.error.message); });
    on("timeupdate", () => {
      if (!this.src) return;
      const t = el.currentTime;
      if (this.lastT != null && t > this.lastT && t - this.lastT < 2) this.played += t - this.lastT;
      this.lastT = t;
      this.measure();
      this.update();
      this.hooks.onchange();
    });
  }
  /** hls.js (when it is the engine) and, for it, the way into the page's audio output. */
  prepare() {
    if (this.ready) return this.ready;
    this.ready = (async () => {
      if (this.engine !== "hls.js") return;
      this.Hls = await loadHlsJs();
      if (!this.Hls || !this.Hls.isSupported()) throw new Error("hls.js can't play here");
      // MSE audio goes through the page's graph, so the tiers can cross-fade. (Not the
      // browser's own HLS player: Safari gives a media element source silence for HLS.)
      const out = programOutput();
      if (out) {
        this.ctx = out.ctx;
        this.output = out.ctx.createGain();
        this.output.connect(out.master);
        out.ctx.createMediaElementSource(this.el).connect(this.output);
      }
    })();
    this.ready.catch(() => { this.ready = null; });
    return this.ready;
  }
  set(state) { if (this.state !== state) { this.state = state; this.hooks.onchange(); } }
  update() {
    if (this.state === "failed" || this.state === "idle" || this.state === "ended") return;
    if (this.paused) return this.set("paused");
    if (this.ctx && this.ctx.state !== "running" && this.firstSoundMs != null) return this.set("blocked");
    if (this.el.paused || this.firstSoundMs == null) return;
    if (this.state !== "stalled" || this.el.readyState >= 3) this.set("playing");
  }
  /** Behind live from PROGRAM-DATE-TIME; hls.js's own estimate of its distance to the live edge too. */
  measure() {
    let at = null;
    if (this.hls) {
      const d = this.hls.playingDate;
      if (d && Number.isFinite(d.getTime())) at = d.getTime();
      const lat = this.hls.latency;
      this.latencyMs = Number.isFinite(lat) && lat > 0 ? Math.round(lat * 1000) : null;
    } else if (typeof this.el.getStartDate === "function") {
      const start = this.el.getStartDate().getTime();
      if (Number.isFinite(start) && start > 0) at = start + this.el.currentTime * 1000;
    }
    if (at != null) {
      const out = this.ctx ? (this.ctx.outputLatency || this.ctx.baseLatency || 0) * 1000 : 0;
      this.behindMs = Math.max(0, Date.now() + out - at);
    } else if (this.latencyMs != null) this.behindMs = this.latencyMs;
  }
  async start(url) {
    const gen = ++this.gen;
    clearInterval(this.pauseTimer);
    this.detach();
    this.src = url; this.paused = false; this.behindMs = null; this.lastT = null; this.error = null; this.recovered = 0;
    this.firstSoundMs = null;
    this.set("connecting");
    try { await this.prepare(); } catch (e) { if (gen === this.gen) this.fail("load", e); return; }
    if (gen !== this.gen) return;
    if (this.engine === "hls.js") {
      const Hls = this.Hls;
      const hls = new Hls({ lowLatencyMode: true, enableWorker: false, backBufferLength: 30, manifestLoadingMaxRetry: 4, levelLoadingMaxRetry: 6, fragLoadingMaxRetry: 6 });
      this.hls = hls;
      hls.on(Hls.Events.MANIFEST_PARSED, (_e, data) => {
        // the Opus rendition: the program's own packets, no transcoding
        const i = (data.levels || []).findIndex((l) => /opus/i.test(l.audioCodec || l.codecSet || ""));
        if (i >= 0) { hls.startLevel = i; hls.currentLevel = i; }
        const l = hls.levels[i >= 0 ? i : 0];
        this.codec = l ? l.audioCodec || l.codecSet || null : null;
      });
      hls.on(Hls.Events.ERROR, (_e, d) => {
        if (gen !== this.gen || !d.fatal) return;
        if (d.type === Hls.ErrorTypes.MEDIA_ERROR && this.recovered++ < 2) { hls.recoverMediaError(); return; }
        this.fail(d.type === Hls.ErrorTypes.NETWORK_ERROR ? "network" : "media", d.details, d.response && d.response.code);
      });
      hls.loadSource(url);
      hls.attachMedia(this.el);
    } else {
      this.codec = "native";
      this.el.src = url;
    }
    if (this.ctx && this.ctx.state !== "running") this.ctx.resume().catch(() => {});
    this.el.play().catch((err) => { if (gen === this.gen && err.name === "NotAllowedError") this.set("blocked"); });
  }
  detach() {
    if (this.hls) { try { this.hls.destroy(); } catch { /* gone */ } this.hls = null; }
    if (this.el.getAttribute("src")) { this.el.pause(); this.el.removeAttribute("src"); this.el.load(); }
  }
  fail(kind, detail, status) {
    if (this.state === "failed") return;
    this.error = { kind, status, message: detail ? String(detail.message || detail) : "" };
    this.gen++;
    this.detach();
    this.set("failed");
    this.hooks.onclose && this.hooks.onclose(kind, status);
  }
  pause() {
    this.paused = true; this.el.pause();
    countBehindWhilePaused(this);
    this.set("paused");
  }
  play() {
    clearInterval(this.pauseTimer);
    this.paused = false;
    if (this.ctx && this.ctx.state !== "running") this.ctx.resume().catch(() => {});
    this.el.play().catch(() => {});
    this.set(this.firstSoundMs == null ? "connecting" : "playing");
  }
  /** Back to the tier's usual distance from live. */
  backToLive() {
    const edge = this.hls ? this.hls.liveSyncPosition : null;
    if (Number.isFinite(edge)) { this.el.currentTime = edge; this.play(); } else this.start(this.src);
  }
  canResumeLocally() { return this.state !== "failed" && this.state !== "idle" && !!this.src; }
  setGain(v, secs = 0) { if (this.output) rampGain(this.output, v, secs); else this.el.volume = v; }
  stop() {
    clearInterval(this.pauseTimer);
    this.gen++;
    this.src = ""; this.paused = false;
    this.detach();
    this.set("idle");
  }
  stats() {
    return { engine: this.engine, tier: this.tier, state: this.state, src: this.src, firstSoundMs: this.firstSoundMs,
      behindMs: this.behindMs == null ? null : Math.round(this.behindMs), latencyMs: this.latencyMs, rawBehindMs: null,
      stalls: this.stalls, stallMs: this.stallMs, played: +this.played.toFixed(3), queuedMs: null, nextSeq: null, resumes: 0, seqGap: 0,
      codec: this.codec, contextState: this.ctx ? this.ctx.state : null, marks };
  }
}

/* -------------------------------------------------------------- listener */

async function listenerPage(id) {
  document.body.dataset.page = "listener";
  // Private spaces: the listener link carries #token=LISTENER_TOKEN.
  let listenToken = frag.get("token");
  if (listenToken) { store.put("tribune.listeners", id, listenToken); stripFragment(); } else listenToken = store.map("tribune.listeners")[id] || "";
  setReadToken(listenToken || store.map("tribune.hosts")[id] || "");

  let space = null, mode = null, retryTimer = null, pausedAt = 0, watcher = null;
  let speaking = null; // MicPanel while on stage
  // The first second: ask to listen (and start the stream) while the page
  // reads the space and the player gets its audio output ready.
  mark("listener");
  let early = (query.get("player") || frag.get("player")) === "hls" ? null : askAdmission(null);
  const snapshot = fetchSnapshot(id);
  snapshot.catch(() => {});
  /* the program players: #program (web/e2e relies on it and its data-*).
     `low` plays the low-latency Ogg stream (the default); `hlsP` the HLS
     tier, when the door is full (or ?player=hls); `player` is the one heard. */
  const want = query.get("player") || frag.get("player") || "";
  const low = (want === "element" || !(await WebAudioPlayer.supported()))
    ? new ElementPlayer(hooks(() => low), fromHTML(`<audio id="program" preload="auto" hidden></audio>`))
    : new WebAudioPlayer(hooks(() => low));
  const hlsEngine = HlsPlayer.engine();
  let hlsP = hlsEngine ? new HlsPlayer(hooks(() => hlsP), hlsEngine) : null;
  const forceHls = want === "hls" && !!hlsP;
  let player = low;
  window.tribunePlayer = player; // for web/e2e and the browser benchmark
  if (early) early.then(({ a }) => {
    if (a && a.state === "admitted" && a.live && player === low && low.state === "idle" && !speaking) { mark("admission"); low.start(a.live); }
  });
  /* the waiting room, while the page waits on the HLS tier: {ticket, position, due} */
  let line = null, switching = null;
  let snap;
  try { snap = await snapshot; } catch (e) { return fatal(e); }
  mark("snapshot");
  app.innerHTML = `
    <section class="card" id="space-card">
      <div class="row spread"><span id="space-state"></span><span class="muted" id="space-stats"></span></div>
      <h1 id="space-title"></h1>
      <p class="muted" id="space-host" hidden></p>
      <div id="player-area"></div>
    </section>
    <section class="card" id="stage-card" hidden>
      <div class="card-head"><h2>On stage</h2><span class="muted small" id="stage-count"></span></div>
      <ul class="avatars" id="stage-avatars"></ul>
    </section>
    <section class="card" id="speak-card" data-state="idle" hidden></section>
    <section class="card" id="tracks-card" hidden>
      <h2>Each speaker's own track</h2>
      <p class="muted small">Unedited, one file per person on stage.</p>
      <ul class="list tracks" id="tracks"></ul>
    </section>
    <p class="muted small" id="host-hint"></p>`;

  space = snap.space;
  let req = null; // {id, ticket, name} of our pending request
  let reqTimer = null, checking = false;
  const area = $("#player-area"), speak = $("#speak-card");
  if (store.map("tribune.hosts")[id]) $("#host-hint").innerHTML = `You host this space: <a href="/spaces/${esc(id)}/host">open the host console</a>.`;

  /** A player's hooks; only the one being heard (`self()` is `player`) drives the page. */
  function hooks(self) {
    const current = () => self() === player;
    return {
      onchange: () => { if (current()) renderPlayer(); },
      onfirst: () => { nodeTries = 0; if (current()) renderPlayer(); },
      resumeAt: (seq) => resumeUrl(seq),
      onresumed: () => { nodeTries = 0; },
      onclose: (kind, status) => {
        if (!current() || mode !== "live" || speaking || !player.src) return;
        renderPlayer();
        clearTimeout(retryTimer);
        if (player.tier === "hls") {
          // the HLS tier is any node's or cache's: try it again, keep the place in line
          const src = player.src;
          if (kind === "load") { hlsUnavailable(src); return; }
          retryTimer = setTimeout(() => { if (player.tier === "hls" && player.state === "failed") player.start(src); }, 2000);
          return;
        }
        retryTimer = setTimeout(() => admit(null), kind === "end" ? 500 : 2000);
        void status;
      },
    };
  }
  /**
   * hls.js didn't load (a build without it): the browser's own HLS player
   * if it has one, else no HLS tier (the waiting room, or the low-latency stream).
   */
  function hlsUnavailable(src) {
    const old = hlsP;
    old.el.remove();
    const native = old.engine === "hls.js" && document.createElement("audio").canPlayType("application/vnd.apple.mpegurl");
    hlsP = native ? new HlsPlayer(hooks(() => hlsP), "native-hls") : null;
    if (hlsP) {
      const ui = $("#player");
      if (ui) ui.append(hlsP.el);
      player = hlsP; window.tribunePlayer = hlsP;
      hlsP.start(src);
      return;
    }
    player = low; window.tribunePlayer = low;
    if (line) showLine(); else admit(null);
  }
  /** The HLS tier's URL (private spaces: with the token; the playlists hand it on). */
  function hlsUrl(a) {
    const base = (a && a.hls) || (space && space.urls && space.urls.hls) || `/spaces/${encodeURIComponent(id)}/hls/master.m3u8`;
    return listenToken ? base + (base.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(listenToken) : base;
  }
  /**
   * Moves what the listener hears to `next` at `url`: while the current
   * player still sounds, `next` starts silent, and once it plays the two
   * cross-fade (0.4 s) and the old one stops, so the move has no gap. The
   * low-latency stream is ~3 s ahead of HLS: moving to it skips those
   * seconds, moving to HLS hears them again. False if `next` didn't start.
   */
  async function switchTo(next, url) {
    const prev = player;
    if (next === prev) { if (next.src !== url || next.state === "failed" || next.state === "idle") next.start(url); return true; }
    const sounding = ["playing", "stalled"].includes(prev.state);
    if (!sounding) {
      prev.stop(); prev.setGain(1);
      player = next; window.tribunePlayer = next;
      next.setGain(1);
      next.start(url);
      renderPlayer();
      return true;
    }
    switching = next;
    try { await next.prepare(); } catch { /* start() says so */ }
    next.setGain(0);
    next.start(url);
    renderPlayer();
    const t0 = Date.now();
    while (switching === next && next.state !== "playing" && Date.now() - t0 < 20000) {
      if (next.state === "failed" || next.state === "idle") break;
      await sleep(100);
    }
    if (switching !== next || next.state !== "playing") {
      if (switching === next) switching = null;
      next.stop(); next.setGain(1);
      renderPlayer();
      return false;
    }
    switching = null;
    const fade = 0.4;
    prev.setGain(0, fade); next.setGain(1, fade);
    player = next; window.tribunePlayer = next;
    renderPlayer();
    await sleep(fade * 1000 + 100);
    if (player !== prev) { prev.stop(); prev.setGain(1); }
    return true;
  }
  /** Plays the HLS tier (the door is full, or the listener asked). */
  function toHls(a) {
    if (!hlsP) return false;
    if (player === hlsP && !["failed", "idle"].includes(hlsP.state)) return true;
    switchTo(hlsP, hlsUrl(a));
    return true;
  }
  /** "Back to low latency": ask the door now (a place in line is kept: it asks when its ticket is due). */
  function backToLow() {
    getAudioContext();
    if (line && Date.now() < line.due) { line.asked = true; renderPlayer(); return; }
    if (line) line.asked = true;
    admit(line ? line.ticket : null, true);
  }
  /** The waiting room without the HLS tier: the position, and the next try. */
  function showLine() {
    if (!line) return;
    clearTimeout(retryTimer);
    const w = line;
    const show = () => playerUI(`You're in line: position ${esc(w.position)}`,
      `Live audio starts by itself as soon as there's room (next try in ${Math.max(1, Math.ceil((w.due - Date.now()) / 1000))} s). Reloading loses your place.
       If live isn't possible, the full recording is published the moment the space ends.`, false);
    show();
    const tick = () => { if (line !== w) return; if (Date.now() < w.due) { show(); retryTimer = setTimeout(tick, 1000); } else admit(w.ticket); };
    retryTimer = setTimeout(tick, 1000);
  }
  /**
   * Where the stream goes on when its node went away: another node carrying
   * the space (the fleet's nodes, from the space JSON), at the packet this
   * page needs next; `live.opus?from=SEQ` gives the same pages on every
   * node. Null when there is no other node left to try.
   */
  let nodeTries = 0;
  function resumeUrl(seq) {
    const here = new URL(player.src, location.href).origin;
    const nodes = (space.nodes || []).filter((u) => u !== here);
    if (!nodes.length || nodeTries >= 2 * nodes.length) return null;
    const base = nodes[nodeTries++ % nodes.length];
    let url = `${base}/spaces/${encodeURIComponent(id)}/live.opus?from=${seq}`;
    if (listenToken) url += "&token=" + encodeURIComponent(listenToken);
    return url;
  }
  function playerUI(status, sub, canPlay = true) {
    let ui = $("#player");
    if (!ui) {
      ui = fromHTML(`<div id="player"><div class="player">
          <button id="play" class="big-play" type="button" aria-label="Play">${ICON.play}</button>
          <div class="player-text"><div class="player-status" id="player-status" role="status" aria-live="polite"></div><div class="muted" id="player-sub"></div></div>
        </div>
        <div class="behind" id="behind" hidden><span id="behind-text"></span><button id="back-to-live" type="button" class="secondary small">Back to live</button></div>
        <div class="behind tier" id="tier" hidden><span id="tier-text"></span><button id="back-to-low" type="button" class="secondary small">Back to low latency</button></div>
        </div>`);
      area.prepend(ui);
      $("#play").onclick = onPlayButton;
      $("#back-to-live").onclick = () => {
        getAudioContext(); pausedAt = 0;
        if ((player.engine === "webaudio" || player.tier === "hls") && player.canResumeLocally()) player.backToLive(); else admit(null);
      };
      $("#back-to-low").onclick = backToLow;
      const el = low.engine === "element" ? low.el : fromHTML(`<div id="program" hidden></div>`);
      ui.append(el);
      if (hlsP) ui.append(hlsP.el);
    }
    const p = $("#program");
    p.dataset.engine = player.engine; p.dataset.tier = player.tier;
    $("#player-status").innerHTML = status;
    $("#player-sub").innerHTML = sub || "";
    $("#play").disabled = !canPlay;
  }
  const fmtBehind = (ms) => ms < 10000 ? (ms / 1000).toFixed(1) + " s" : ms < 60000 ? Math.round(ms / 1000) + " s" : fmtDuration(ms);
  /** The player's state in words, its one button, how far behind live, and data-* for web/e2e. */
  function renderPlayer() {
    if (mode !== "live" || speaking) return;
    if (player.tier === "hls") return renderHls();
    const st = player.state, behind = player.behindMs;
    const far = behind != null && behind > 2000;
    const words = {
      idle: ["Connecting…", ""],
      connecting: ["Connecting…", "Joining the live audio."],
      blocked: ["Press play to listen live", "Your browser waits for a tap before it plays sound."],
      playing: far ? ["Playing", ""] : [`<span class="eq"><i></i><i></i><i></i></span>Live`, behind != null ? `${fmtBehind(behind)} behind the speakers` : "You're hearing it as it happens."],
      stalled: ["Buffering…", "The audio is arriving too slowly; it continues as soon as enough is here."],
      paused: ["Paused", far ? "" : "Press play to continue."],
      failed: ["Reconnecting…", "The live audio was cut; joining again."],
      ended: ["The live audio has ended", ""],
    }[st] || [st, ""];
    playerUI(words[0], words[1], st !== "failed");
    $("#tier").hidden = true;
    playerData();
  }
  /**
   * On the HLS tier: "Live · a few seconds behind" and how far, what the
   * waiting room says, and the way back to the low-latency stream.
   */
  function renderHls() {
    const st = player.state, behind = player.behindMs;
    const far = behind != null && behind > 12000;
    const ahead = line ? `Low latency is full: you're number ${line.position} in line${line.asked ? "; moving back as soon as there's room" : " and move back by yourself"}.` : "";
    const words = {
      idle: ["Connecting…", ""],
      connecting: ["Connecting…", "Joining the live audio a few seconds behind."],
      blocked: ["Press play to listen live", "Your browser waits for a tap before it plays sound."],
      playing: far ? ["Playing", ""] : [`<span class="eq"><i></i><i></i><i></i></span>Live · a few seconds behind`, behind != null ? `${fmtBehind(behind)} behind the speakers.` : ""],
      stalled: ["Buffering…", "The audio is arriving too slowly; it continues as soon as enough is here."],
      paused: ["Paused", far ? "" : "Press play to continue."],
      failed: ["Reconnecting…", "The live audio was cut; joining again."],
      ended: ["The live audio has ended", ""],
    }[st] || [st, ""];
    playerUI(words[0], words[1], st !== "failed");
    $("#tier").hidden = false;
    $("#tier-text").textContent = switching === low ? "Moving to the low-latency stream…" : ahead || "The stream every node and cache carries.";
    $("#back-to-low").disabled = switching === low || !!(line && line.asked);
    playerData();
  }
  /** The play button and #program's data-* (web/e2e). */
  function playerData() {
    const st = player.state, behind = player.behindMs;
    const far = behind != null && behind > (player.tier === "hls" ? 12000 : 2000);
    const playing = ["connecting", "playing", "stalled"].includes(st);
    const b = $("#play");
    b.innerHTML = playing ? ICON.pause : ICON.play;
    b.setAttribute("aria-label", playing ? "Pause" : "Play");
    $("#behind").hidden = !(far && (st === "playing" || st === "paused" || st === "stalled"));
    $("#behind-text").textContent = far ? `${fmtBehind(behind)} behind live` : "";
    const p = $("#program"), s = player.stats();
    if (p) {
      p.dataset.engine = player.engine; p.dataset.tier = player.tier;
      p.dataset.state = st; p.dataset.src = s.src || "";
      p.dataset.played = String(s.played || 0);
      for (const [k, v] of [["firstSoundMs", s.firstSoundMs], ["behindMs", s.behindMs], ["stalls", s.stalls], ["stallMs", s.stallMs], ["nextSeq", s.nextSeq]]) {
        if (v == null) delete p.dataset[k]; else p.dataset[k] = String(v);
      }
    }
  }
  function onPlayButton() {
    getAudioContext();
    const st = player.state;
    if (st === "playing" || st === "stalled" || st === "connecting") { player.pause(); pausedAt = Date.now(); return; }
    if (st === "blocked") { player.play(); return; }
    // an <audio> paused for a while has lost its place: join again at the live edge
    if (st === "paused" && player.canResumeLocally() && !(player.engine === "element" && pausedAt && Date.now() - pausedAt > 3000)) { player.play(); return; }
    if (player.tier === "hls" && player.src) { player.start(player.src); return; }
    admit(null);
  }
  /** The admission call: {res, a} (the answer's JSON), or {} when the server can't be reached. */
  async function askAdmission(ticket) {
    const params = new URLSearchParams();
    if (ticket) params.set("ticket", ticket);
    if (listenToken) params.set("token", listenToken);
    const q = params.toString() ? "?" + params : "";
    try {
      const res = await fetch(`/api/spaces/${id}/admission${q}`, { cache: "no-store" });
      return { res, a: await res.json().catch(() => ({})) };
    } catch { return {}; }
  }
  /**
   * Asks to listen: a pass for the live stream, or a place in line. In
   * line, the page plays the HLS tier meanwhile (where it can) and comes
   * back with its ticket when due; admitted, it moves to the low-latency
   * stream. `byListener`: the listener pressed "Back to low latency".
   */
  async function admit(ticket, byListener = false) {
    clearTimeout(retryTimer);
    if (mode !== "live" || speaking) { early = null; return; }
    if (player.state === "idle" || player.state === "failed") playerUI("Connecting…", "", false);
    low.prepare().catch(() => {}); // the audio output gets ready meanwhile
    const asked = early || askAdmission(ticket);
    early = null;
    const { res, a } = await asked;
    if (!res) {
      playerUI("Can't reach the server", "Trying again in a few seconds…", false);
      retryTimer = setTimeout(() => admit(ticket), 3000);
      return;
    }
    if (mode !== "live" || speaking) return;
    if (a.state === "admitted" && a.live) {
      pausedAt = 0;
      line = null;
      if (player.tier === "hls" && player.state === "paused" && !byListener) {
        // paused on purpose: don't start sound; "Back to low latency" asks again
        renderPlayer();
        return;
      }
      if (player.tier === "hls") {
        // from the HLS tier: cross-fade to the low-latency stream; if it won't start, stay and ask again later
        if (!(await switchTo(low, a.live)) && mode === "live" && !speaking) {
          if (byListener) toast("The low-latency stream didn't start; staying a few seconds behind.");
          retryTimer = setTimeout(() => admit(null), 10000);
        }
      } else if (low.src !== a.live) low.start(a.live); // else started already, from the page's first request
      renderPlayer();
    } else if (a.waiting_room) {
      const w = a.waiting_room;
      line = { ticket: w.ticket, position: w.position, due: Date.now() + Math.max(1, w.retry_after | 0) * 1000, asked: !!(line && line.asked) && !w.lost_place };
      if (toHls(a)) {
        // keep playing, a few seconds behind; come back for the low-latency stream when the ticket is due
        if (byListener) toast(`The low-latency stream is still full: you're number ${w.position} in line.`);
        renderPlayer();
        const w0 = line;
        retryTimer = setTimeout(() => { if (line === w0) admit(w0.ticket); }, Math.max(0, line.due - Date.now()));
      } else showLine();
    } else if (a.state === "scheduled" || a.state === "ended") {
      if (watcher) watcher.refresh();
    } else {
      let text = a.error ? sentence(a.error) : statusWords(res.status);
      if ((res.status === 401 || res.status === 403) && space.private) {
        text = listenToken ? "Your listener link for this private space isn't valid any more. Ask the host for a new one." : "This space is private: open the listener link the host shared with you.";
      }
      if (player.tier === "hls" && player.src) {
        // the HLS tier plays on; the low-latency stream is tried again later
        if (byListener) toast(text);
        if (res.status === 429 || res.status >= 500) retryTimer = setTimeout(() => admit(ticket), Math.max(2, a.retry_after || 3) * 1000);
        return;
      }
      playerUI("Can't play the live audio", esc(text), true);
      if (res.status === 429 || res.status >= 500) retryTimer = setTimeout(() => admit(ticket), Math.max(2, a.retry_after || 3) * 1000);
    }
  }
  /** On stage: stop the delayed program (and free the slot). */
  function releaseProgram() {
    switching = null; line = null;
    low.stop(); low.setGain(1);
    if (hlsP) { hlsP.stop(); hlsP.setGain(1); }
    player = low; window.tribunePlayer = low;
    clearTimeout(retryTimer);
    playerUI("You're on stage", "You hear the others directly, without delay.", false);
    $("#play").innerHTML = ICON.play;
    $("#behind").hidden = true;
    const p = $("#program");
    if (p) p.dataset.state = "idle";
  }

  function setMode(next) {
    if (next === mode) return;
    mode = next;
    clearTimeout(retryTimer);
    if (next === "live") {
      const wait = $("#not-live");
      if (wait) wait.remove();
      if (forceHls) { playerUI("Connecting…", "", false); toHls(null); } else admit(null);
    } else if (next === "scheduled") {
      const when = space.scheduled_at ? ` — scheduled for <strong>${esc(fmtWhen(space.scheduled_at))}</strong> (${esc(fmtRelative(space.scheduled_at))})` : "";
      area.innerHTML = `<div class="notice" id="not-live">Not live yet${when}.<br><span class="muted">This page starts the audio by itself when the host goes live.</span></div>`;
    } else if (next === "ended") {
      switching = null; line = null;
      low.stop();
      if (hlsP) hlsP.stop();
      if (speaking) { speaking.destroy(); speaking = null; }
      if (watcher) { watcher.close(); watcher = null; } // nothing changes after the end
      area.innerHTML = `<audio id="program" controls preload="metadata" src="${esc(withToken(space.urls.replay))}"></audio>
        <p class="muted">This space has ended; this is the full, unedited recording${space.duration_ms ? ` (${fmtDuration(space.duration_ms)})` : ""}.
        <a href="${esc(withToken(space.urls.replay))}" download>Download</a></p>`;
      loadTracks();
    }
  }

  async function loadTracks(attempt = 0) {
    const card = $("#tracks-card"), list = $("#tracks");
    let tracks;
    try { tracks = (await api("GET", `/api/spaces/${id}/tracks`)).tracks || []; } catch (e) {
      if (e.status === 404) { card.hidden = true; return; }
      if (attempt < 3) { setTimeout(() => loadTracks(attempt + 1), 2000); return; }
      card.hidden = false; list.innerHTML = `<li class="error">${esc(e.message)}</li>`; return;
    }
    if (!tracks.length && attempt < 2) { setTimeout(() => loadTracks(attempt + 1), 2000); return; }
    card.hidden = false;
    list.innerHTML = tracks.length ? tracks.map((t) => `
      <li class="track" data-identity="${esc(t.identity)}">
        <div class="track-head"><strong>${esc(displayName(space, t.identity, t.name))}</strong>
          <span class="muted small">${t.bytes ? fmtBytes(t.bytes) + " · " : ""}<a href="${esc(withToken(t.url))}" download>Download</a></span></div>
        <audio controls preload="none" src="${esc(withToken(t.url))}"></audio>
      </li>`).join("") : `<li class="empty">No separate speaker tracks were recorded in this space.</li>`;
  }

  /* request to speak */
  function setSpeak(state, note) {
    speak.dataset.state = state; // e2e: #speak-card[data-state]
    const again = (label) => `<button id="request-speak" type="button" class="secondary">${label}</button>`;
    const html = {
      idle: `<h2>Want to say something?</h2><p class="muted">Ask the host to bring you on stage. You keep listening while you wait.</p>
        <button id="request-speak" type="button">${ICON.hand} Request to speak</button>`,
      form: `<h2>Request to speak</h2><form id="request-form" novalidate>
        <label for="request-name">Your name, as everyone will see it</label>
        <div class="field-row"><input id="request-name" maxlength="40" autocomplete="nickname" placeholder="e.g. Linus" value="${esc(store.raw("tribune.name"))}">
        <button id="request-send" type="submit">Send</button></div></form>
        <p id="request-msg" class="error" hidden></p>
        <button id="request-cancel" type="button" class="ghost small" style="margin-top:8px">Cancel</button>`,
      pending: `<h2>Request sent</h2><p class="mic-state" id="request-status"><span class="status-dot talk"></span>Waiting for the host…</p>
        <p class="muted">You'll go on stage as soon as they approve. Your microphone turns on then.</p>
        <button id="request-withdraw" type="button" class="ghost">Withdraw request</button>`,
      declined: `<p id="request-status" class="error">The host declined your request.</p><p class="muted">You can keep listening.</p>${again("Ask again")}`,
      removed: `<p id="request-status">The host moved you back to the audience.</p><p class="muted">You're listening live again.</p>${again("Request to speak again")}`,
      left: `<p id="request-status">You left the stage.</p>${again("Request to speak again")}`,
      error: `<p id="request-status" class="error">${esc(note || "")}</p>${again("Try again")}`,
      speaker: `<div class="card-head"><h2>You're on stage</h2><span class="muted small">as ${esc(note || "")}</span></div><div id="mic-root"></div>
        <p class="muted small">Headphones keep the others from hearing themselves.</p>`,
    }[state];
    speak.innerHTML = html;
    const b = $("#request-speak", speak);
    if (b) b.onclick = () => setSpeak("form");
    if (state === "form") {
      const input = $("#request-name", speak);
      input.focus();
      $("#request-cancel", speak).onclick = () => setSpeak("idle");
      $("#request-form", speak).onsubmit = (e) => { e.preventDefault(); sendRequest(input.value.trim()); };
    }
    if (state === "pending") $("#request-withdraw", speak).onclick = withdraw;
  }
  async function sendRequest(name) {
    const msg = $("#request-msg", speak);
    if (!name) return say(msg, "Type the name everyone will see.");
    getAudioContext();
    const btn = $("#request-send", speak);
    btn.disabled = true;
    try {
      const r = await api("POST", `/api/spaces/${id}/stage/requests`, { name }, listenToken || undefined);
      store.setRaw("tribune.name", name);
      req = { id: r.id, ticket: r.ticket, name };
      setSpeak("pending");
      pollRequest();
    } catch (e) { btn.disabled = false; say(msg, e.status === 404 && !e.data.error ? "This server doesn't take requests to speak." : e.message); }
  }
  function clearRequest() { req = null; clearTimeout(reqTimer); }
  // Leaving the page lowers the hand: the host never approves someone gone.
  addEventListener("pagehide", () => {
    if (req) fetch(`/api/spaces/${id}/stage/requests/${req.id}`, { method: "DELETE", keepalive: true, headers: { Authorization: "Bearer " + req.ticket } }).catch(() => {});
  });
  async function withdraw() {
    const r = req;
    clearRequest();
    setSpeak("idle");
    if (r) {
      try { await api("DELETE", `/api/spaces/${id}/stage/requests/${r.id}`, undefined, r.ticket); toast("Request withdrawn"); } catch (e) { if (e.status !== 404) toast(e.message); }
    }
  }
  function pollRequest() { clearTimeout(reqTimer); reqTimer = setTimeout(() => { checkRequest(); pollRequest(); }, 4000); }
  async function checkRequest() {
    if (!req || checking) return;
    checking = true;
    const r = req;
    try {
      const t = await api("POST", `/api/spaces/${id}/stage/requests/${r.id}/token`, undefined, r.ticket);
      if (req !== r) return;
      clearRequest();
      goOnStage(t.token, t.identity || (claims(t.token) || {}).sub, r.name);
    } catch (e) {
      if (req !== r) return;
      if (e.status === 409 && (!e.data.state || e.data.state === "pending")) return; // still waiting
      if (e.status === 0) return; // offline: next try
      clearRequest();
      if (e.data.state === "declined") setSpeak("declined");
      else if (e.status === 404) setSpeak("error", "Your request is no longer open (it may have expired). You can ask again.");
      else setSpeak("error", e.message);
    } finally { checking = false; }
  }
  function goOnStage(token, identity, name) {
    setSpeak("speaker", name);
    speaking = new MicPanel($("#mic-root", speak), {
      spaceId: id, token, identity, space, showJoin: false,
      onTakeover: releaseProgram,
      onExit: (why) => {
        const panel = speaking;
        speaking = null;
        if (panel) panel.destroy();
        if (mode === "live") { setSpeak(why === "failed" ? "error" : why, why === "failed" ? $("#mic-error")?.textContent || "The stage connection failed." : undefined); admit(null); }
      },
    });
    speaking.join();
  }

  function renderStats() {
    $("#space-stats").textContent = space.state === "live"
      ? `${plural(space.listeners, "listener")}${space.started_at ? " · " + fmtDuration(Date.now() - space.started_at) : ""}`
      : space.state === "ended" ? `Ended ${fmtRelative(space.ended_at)}` : "";
  }
  function apply(s) {
    const prevState = mode;
    space = s.space;
    document.title = `${space.title} · Tribune`;
    setStateBadge($("#space-state"), space);
    $("#space-title").textContent = space.title;
    showHost($("#space-host"), space);
    renderStats();
    const members = space.state === "live" ? s.stage.members : [];
    $("#stage-card").hidden = !members.length;
    $("#stage-count").textContent = members.length ? `${members.filter((m) => m.connected !== false).length} / ${s.stage.max_speakers}` : "";
    renderAvatars($("#stage-avatars"), members, space);
    setMode(space.state);
    if (speaking) { speaking.setSpace(space); if (speaking) speaking.setStage(s.stage); }
    // request to speak: only while live, and only where the server has a stage
    speak.hidden = space.state !== "live" || s.partial;
    if (space.state !== "live") { if (req) clearRequest(); }
    else if (prevState !== "live" || !speak.innerHTML) { if (!speaking && !req) setSpeak("idle"); }
    if (req && space.state === "live" && !s.stage.requests.some((r) => r.id === req.id)) checkRequest();
  }

  apply(snap);
  if (mode !== "ended") watcher = watchSpace(id, apply);
  setInterval(renderStats, 1000);
}

/* ---------------------------------------------------------- host console */

async function hostPage(id) {
  document.body.dataset.page = "host";
  app.classList.add("wide");
  let tok = frag.get("token");
  if (tok) { store.put("tribune.hosts", id, tok); stripFragment(); } else tok = store.map("tribune.hosts")[id] || adminToken();
  if (!tok) return askForToken(id, "host");
  const me = claims(tok) || {};
  if (me.space && me.space !== id) return askForToken(id, "host", "The saved host token is for another space.");
  setReadToken(tok);

  let snap;
  try { snap = await fetchSnapshot(id); } catch (e) { return fatal(e); }
  const listenUrl = `${location.origin}/spaces/${id}`;
  app.innerHTML = `
    <div class="grid two" id="host-grid">
      <div>
        <section class="card" id="space-card">
          <div class="row spread"><span id="space-state"></span><span class="muted small">Host console</span></div>
          <h1 id="space-title"></h1>
          <p class="muted" id="space-host" hidden></p>
          <div id="space-live">
          <div class="stats"><span>Listening now <strong id="listeners-now">0</strong></span><span>Peak <strong id="listeners-peak">0</strong></span><span id="live-for"></span></div>
          <div class="row" style="margin-top:12px">
            <button id="go-live" type="button">Go live</button>
            <button id="end-space" type="button" class="danger">End space</button>
          </div>
          <p id="host-msg" class="error" role="alert" hidden></p>
          <label for="share-link">Listener link to share</label>
          <div class="field-row"><input id="share-link" readonly value="${esc(listenUrl)}"><button id="share-copy" type="button" class="secondary">Copy</button></div>
          <p class="muted small"><a href="/spaces/${esc(id)}" target="_blank" rel="noopener">Open the listener page</a></p>
          </div>
        </section>
        <section class="card" id="mic-card"><h2>Your microphone</h2><div id="mic-root"></div></section>
        <section class="card" id="requests-card">
          <div class="card-head"><h2>Requests to speak</h2><span class="badge count" id="requests-count" hidden></span></div>
          <ul class="list" id="requests"></ul>
          <p class="muted small" id="requests-more" hidden></p>
          <p class="empty" id="requests-empty">No requests right now. Listeners ask from the listener page.</p>
          <div class="row" id="queue-actions" style="margin-top:8px">
            <button id="queue-toggle" type="button" class="secondary small">Pause requests</button>
            <button id="queue-clear" type="button" class="ghost small" hidden>Decline all</button>
          </div>
          <p id="requests-msg" class="error" hidden></p>
        </section>
      </div>
      <div>
        <section class="card" id="stage-card">
          <div class="card-head"><h2>On stage</h2><span class="muted small" id="stage-count"></span></div>
          <ul class="list" id="stage-members"></ul>
          <p class="empty" id="stage-empty">Nobody is on stage yet.</p>
          <p id="stage-msg" class="error" hidden></p>
        </section>
        <section class="card" id="invite-card">
          <h2>Invite a speaker</h2>
          <p class="muted small">A link puts one named person on stage. It works for 12 hours; send it privately.</p>
          <form id="invite-form" novalidate>
            <label for="invite-name">Speaker's name</label>
            <div class="field-row"><input id="invite-name" maxlength="100" placeholder="e.g. Ada" autocomplete="off"><button id="invite-create" type="submit">Create link</button></div>
          </form>
          <p id="invite-msg" class="error" hidden></p>
          <div id="invites"></div>
          <div id="listener-links" hidden>
            <h3>Private space</h3>
            <p class="muted small">Only people with a listener link can listen.</p>
            <button id="listener-link-create" type="button" class="secondary">Create a listener link</button>
            <div id="listener-link"></div>
          </div>
        </section>
        <section class="card" id="source-card">
          <details id="source-details"><summary>Publish from ffmpeg, OBS or any Icecast client</summary><div id="source-body" class="muted">Loading…</div></details>
        </section>
      </div>
    </div>`;

  let space = snap.space, stage = snap.stage;
  const msg = $("#host-msg");
  const hostErr = (e) => say(msg, e.status === 401 || e.status === 403 ? `${e.message} Open this console with the host link from when the space was created.` : e.message);
  $("#share-copy").onclick = () => copyText(listenUrl, $("#share-link"));

  const mic = new MicPanel($("#mic-root"), {
    spaceId: id, token: tok, identity: me.sub, space, joinLabel: "Join stage with my mic", idleText: "Your mic is off.",
    scheduledText: "Your mic is off. Join now to be on air the moment you go live.",
  });

  $("#go-live").onclick = async () => {
    const b = $("#go-live"); b.disabled = true; say(msg, "");
    try { const s = await api("POST", `/api/spaces/${id}/start`, undefined, tok); apply({ space: s, stage, partial: false }); toast("You're live"); }
    catch (e) { hostErr(e); b.disabled = false; }
  };
  $("#end-space").onclick = async () => {
    const live = space.state === "live";
    if (!confirm(live ? "End the space for everyone? Listeners and speakers are disconnected and the recording is published." : "Cancel this space? It can't be started afterwards.")) return;
    const b = $("#end-space"); b.disabled = true; say(msg, "");
    try { const s = await api("POST", `/api/spaces/${id}/end`, undefined, tok); apply({ space: s, stage: { members: [], requests: [], max_speakers: stage.max_speakers }, partial: false }); }
    catch (e) { hostErr(e); b.disabled = false; }
  };

  /* invites */
  const invitesKey = "tribune.invites." + id;
  const invites = store.session(invitesKey) || [];
  const inviteEl = (inv) => {
    const el = fromHTML(`<div class="invite" data-name="${esc(inv.name)}">
      <div class="row spread"><strong>${esc(inv.name)}</strong><span class="muted small">valid until ${esc(fmtWhen(inv.exp))}</span></div>
      <div class="field-row"><input class="invite-link" readonly value="${esc(inv.link)}" aria-label="Invite link for ${esc(inv.name)}"><button type="button" class="secondary invite-copy">Copy</button></div></div>`);
    $(".invite-copy", el).onclick = () => copyText(inv.link, $(".invite-link", el));
    return el;
  };
  for (const inv of invites) $("#invites").append(inviteEl(inv));
  $("#invite-form").onsubmit = async (e) => {
    e.preventDefault();
    const im = $("#invite-msg"), name = $("#invite-name").value.trim();
    if (!name) return say(im, "Type the speaker's name.");
    say(im, "");
    const b = $("#invite-create"); b.disabled = true;
    try {
      const t = await api("POST", `/api/spaces/${id}/tokens`, { role: "speaker", identity: name, ttl: "12h" }, tok);
      const inv = { name, link: `${location.origin}/spaces/${id}/speak#token=${t.token}`, exp: (t.expires_at || (claims(t.token) || {}).exp || 0) * 1000 };
      invites.unshift(inv); store.session(invitesKey, invites.slice(0, 20));
      $("#invites").prepend(inviteEl(inv));
      $("#invite-name").value = "";
    } catch (err) { say(im, err.message); }
    b.disabled = false;
  };
  $("#listener-link-create").onclick = async () => {
    try {
      const t = await api("POST", `/api/spaces/${id}/tokens`, { role: "listener", ttl: "7d" }, tok);
      const link = `${location.origin}/spaces/${id}#token=${t.token}`;
      $("#listener-link").innerHTML = `<div class="field-row" style="margin-top:8px"><input readonly value="${esc(link)}" id="listener-link-input"><button type="button" class="secondary" id="listener-link-copy">Copy</button></div>`;
      $("#listener-link-copy").onclick = () => copyText(link, $("#listener-link-input"));
    } catch (e) { say($("#invite-msg"), e.message); }
  };

  /* Icecast source instructions, minted when opened */
  $("#source-details").ontoggle = async () => {
    if (!$("#source-details").open || $("#source-details").dataset.loaded) return;
    const body = $("#source-body");
    if (space.state === "ended") { body.textContent = "The space has ended."; return; }
    try {
      const t = await api("POST", `/api/spaces/${id}/tokens`, { role: "speaker", identity: "source", ttl: "12h" }, tok);
      const u = new URL(space.urls.source, location.href);
      $("#source-details").dataset.loaded = "1";
      body.innerHTML = `<p>Any Icecast source client can publish (the password is a token). With ffmpeg:</p>
        <pre id="source-command">ffmpeg -re -i talk.wav -c:a libopus -b:a 32k -page_duration 20000 -content_type audio/ogg -f ogg icecast://source:${esc(t.token)}@${esc(u.host)}${esc(u.pathname)}</pre>
        <p class="small"><code>-page_duration 20000</code> sends each 20 ms packet as it is encoded; the default adds up to a second of delay.
        The stream is live once the space is live.</p>`;
    } catch (e) { body.innerHTML = `<p class="error">${esc(e.message)}</p>`; }
  };

  /* request queue and stage list */
  async function act(path, body, errEl, done) {
    say(errEl, "");
    try { await api("POST", path, body, tok); if (done) done(); if (watcher) watcher.refresh(); } catch (e) { say(errEl, e.message); return false; }
    return true;
  }
  $("#requests").onclick = async (e) => {
    const b = e.target.closest("button[data-action]"), li = b && b.closest("li");
    if (!li) return;
    b.disabled = true;
    const ok = await act(`/api/spaces/${id}/stage/requests/${encodeURIComponent(li.dataset.rid)}/${b.dataset.action}`, undefined, $("#requests-msg"));
    if (ok) { li.dataset.handled = b.dataset.action; $(".sub", li).textContent = b.dataset.action === "approve" ? "approved · joining…" : "declined"; }
    else b.disabled = false;
  };
  let queueOpen = true;
  $("#queue-toggle").onclick = async () => {
    const b = $("#queue-toggle");
    b.disabled = true;
    await act(`/api/spaces/${id}/stage/queue`, { open: !queueOpen }, $("#requests-msg"));
    b.disabled = false;
  };
  $("#queue-clear").onclick = async () => {
    const b = $("#queue-clear");
    b.disabled = true;
    say($("#requests-msg"), "");
    try {
      const r = await api("DELETE", `/api/spaces/${id}/stage/queue`, undefined, tok);
      toast(`Declined ${plural(r.declined, "request")}`);
      if (watcher) watcher.refresh();
    } catch (e) { say($("#requests-msg"), e.message); }
    b.disabled = false;
  };
  $("#stage-members").onclick = async (e) => {
    const b = e.target.closest("button[data-action]"), li = b && b.closest("li");
    if (!li) return;
    const who = li.dataset.identity, name = $(".nm", li).textContent;
    const path = `/api/spaces/${id}/stage/members/${encodeURIComponent(who)}`;
    b.disabled = true;
    if (b.dataset.action === "mute") await act(path + "/mute", { muted: li.dataset.muted !== "true" }, $("#stage-msg"));
    else if (b.dataset.action === "remove") { if (await act(path + "/remove", undefined, $("#stage-msg"))) toast(`${name} is back in the audience`); }
    b.disabled = false;
  };

  function renderRequests(reqs) {
    const list = $("#requests");
    reconcile(list, reqs, (r) => r.id,
      (r) => fromHTML(`<li class="request"><span class="avatar avatar-sm" style="${avatarStyle(r.name)}"></span>
        <div class="who"><strong class="nm"></strong><div class="muted small sub"></div></div>
        <div class="actions"><button type="button" class="ok small" data-action="approve">Approve</button><button type="button" class="ghost small" data-action="decline">Decline</button></div></li>`),
      (el, r) => {
        el.dataset.rid = r.id; el.dataset.name = r.name;
        $(".avatar", el).textContent = initials(r.name);
        $(".nm", el).textContent = r.name;
        if (!el.dataset.handled) $(".sub", el).textContent = r.at ? "asked " + fmtRelative(r.at) : "wants to speak";
      });
    $("#requests-empty").hidden = reqs.length > 0;
    const count = $("#requests-count");
    const total = Math.max(reqs.length, stage.pending_requests || 0);
    count.hidden = !total; count.textContent = total;
    const more = $("#requests-more");
    more.hidden = total <= reqs.length;
    more.textContent = `…and ${plural(total - reqs.length, "more request")} waiting (oldest shown first).`;
    $("#queue-clear").hidden = !total;
    queueOpen = stage.requests_open !== false;
    $("#queue-toggle").textContent = queueOpen ? "Pause requests" : "Take requests again";
    $("#requests-empty").textContent = queueOpen ? "No requests right now. Listeners ask from the listener page." : "Requests to speak are paused: listeners can't ask right now.";
  }
  function renderMembers(members, max) {
    const list = $("#stage-members");
    reconcile(list, members, (m) => m.identity,
      (m) => fromHTML(`<li class="member"><span class="avatar avatar-sm" style="${avatarStyle(m.identity)}"><span class="ini"></span><span class="mic-off">${ICON.micOff}</span></span>
        <div class="who"><strong class="nm"></strong> <span class="badge role"></span>
          <div class="muted small"><span class="status-dot"></span><span class="st"></span></div></div>
        <div class="actions"></div></li>`),
      (el, m) => {
        const mine = m.identity === me.sub, st = memberStatus(m), name = displayName(space, m.identity, m.name);
        el.dataset.identity = m.identity;
        el.dataset.name = name;
        el.dataset.role = m.role;
        el.dataset.connected = String(m.connected !== false);
        el.dataset.muted = String(!!m.muted);
        el.dataset.talking = String(st.dot === "talk");
        $(".ini", el).textContent = initials(name);
        $(".nm", el).textContent = name + (mine ? " (you)" : "");
        const role = $(".badge.role", el);
        role.textContent = ROLE_LABEL[m.role] || m.role; role.classList.toggle("host", m.role === "host");
        $(".status-dot", el).className = "status-dot " + st.dot;
        $(".st", el).textContent = st.text;
        const actions = $(".actions", el);
        const want = mine ? "" : `${m.muted ? "unmute" : "mute"}|remove`;
        if (actions.dataset.want !== want) {
          actions.dataset.want = want;
          actions.innerHTML = mine ? "" : `<button type="button" class="secondary small" data-action="mute">${m.muted ? "Unmute" : "Mute"}</button>
            <button type="button" class="ghost small" data-action="remove">Move to audience</button>`;
        }
      });
    $("#stage-empty").hidden = members.length > 0;
    $("#stage-count").textContent = `${members.filter((m) => m.connected !== false).length} / ${max} on stage`;
  }

  function apply(s) {
    space = s.space; stage = s.stage;
    document.title = `Host · ${space.title} · Tribune`;
    setStateBadge($("#space-state"), space);
    $("#space-title").textContent = space.title;
    showHost($("#space-host"), space);
    $("#listeners-now").textContent = space.listeners;
    $("#listeners-peak").textContent = space.peak_listeners;
    $("#live-for").textContent = space.state === "live" && space.started_at ? "Live for " + fmtDuration(Date.now() - space.started_at)
      : space.state === "scheduled" ? (space.scheduled_at ? "Scheduled " + fmtWhen(space.scheduled_at) : "Not live yet")
        : space.state === "ended" ? "Ended · " + fmtDuration(space.duration_ms || 0) : "";
    $("#go-live").hidden = space.state !== "scheduled";
    $("#go-live").disabled = false;
    $("#end-space").textContent = space.state === "scheduled" ? "Cancel space" : "End space";
    $("#end-space").hidden = space.state === "ended";
    $("#listener-links").hidden = !space.private || space.state === "ended";
    const live = space.state === "live";
    const members = live ? stage.members : [], reqs = live ? stage.requests : [];
    renderMembers(members, stage.max_speakers);
    renderRequests(reqs);
    const ended = space.state === "ended";
    $("#requests-card").hidden = s.partial || ended;
    $("#invite-card").hidden = ended;
    $("#stage-card").hidden = ended;
    $("#source-card").hidden = ended;
    mic.setSpace(space);
    mic.setStage(stage);
    $("#host-grid").classList.toggle("ended", ended);
    $("#space-live").hidden = ended;
    if (ended && !$("#summary")) renderSummary();
    if (space.state !== "live") $("#mic-card").hidden = space.state === "ended";
  }
  /** After the end: what a host wants then (how it went, the recording and tracks, the replay link to share). */
  function renderSummary() {
    const replayPage = `${location.origin}/spaces/${id}`;
    const replay = withToken(space.urls.replay);
    $("#space-card").insertAdjacentHTML("beforeend", `<div id="summary">
      <div class="summary-stats">
        <div><strong id="summary-duration">${esc(fmtDuration(space.duration_ms || 0))}</strong><span>long</span></div>
        <div><strong id="summary-peak">${esc(space.peak_listeners || 0)}</strong><span>listeners at the peak</span></div>
        <div><strong id="summary-speakers">…</strong><span>speaker tracks</span></div>
        <div><strong>${esc(space.ended_at ? new Date(space.ended_at).toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit" }) : "—")}</strong><span>ended ${esc(space.ended_at ? fmtRelative(space.ended_at) : "")}</span></div>
      </div>
      <div class="grid two">
        <div>
          <h3>Share the replay</h3>
          <p class="muted small">The full recording plays on the space's page from now on.</p>
          <div class="field-row"><input id="replay-link" readonly value="${esc(replayPage)}"><button id="replay-copy" type="button" class="secondary">Copy</button></div>
          <h3>Recording</h3>
          <audio id="summary-replay" controls preload="metadata" src="${esc(replay)}"></audio>
          <p class="small"><a class="btn secondary small" href="${esc(replay)}" download>Download the recording (Ogg Opus)</a></p>
        </div>
        <div>
          <h3>Each speaker's own track</h3>
          <p class="muted small">Unedited, one file per person on stage: for editing or a clean re-mix.</p>
          <ul class="list tracks" id="summary-tracks"><li class="empty">Loading the tracks…</li></ul>
        </div>
      </div></div>`);
    $("#replay-copy").onclick = () => copyText(replayPage, $("#replay-link"));
    const load = async (attempt = 0) => {
      let tracks;
      try { tracks = (await api("GET", `/api/spaces/${id}/tracks`, undefined, tok)).tracks || []; } catch (e) {
        if (attempt < 3 && e.status !== 404) { setTimeout(() => load(attempt + 1), 2000); return; }
        $("#summary-tracks").innerHTML = `<li class="empty">${e.status === 404 ? "This server doesn't keep speaker tracks." : esc(e.message)}</li>`;
        $("#summary-speakers").textContent = "—";
        return;
      }
      if (!tracks.length && attempt < 2) { setTimeout(() => load(attempt + 1), 2000); return; }
      $("#summary-speakers").textContent = tracks.length;
      $("#summary-tracks").innerHTML = tracks.length ? tracks.map((t) => `<li class="track" data-identity="${esc(t.identity)}">
          <span class="avatar avatar-sm" style="${avatarStyle(t.identity)}">${esc(initials(displayName(space, t.identity, t.name)))}</span>
          <div class="who"><strong>${esc(displayName(space, t.identity, t.name))}</strong><div class="muted small">${t.bytes ? esc(fmtBytes(t.bytes)) : ""}</div></div>
          <a class="btn ghost small" href="${esc(withToken(t.url))}" download>Download</a></li>`).join("")
        : `<li class="empty">Nobody spoke from the stage (an Icecast source alone has no separate tracks).</li>`;
    };
    load();
  }
  let watcher = null;
  apply(snap);
  if (space.state !== "ended") watcher = watchSpace(id, (s) => { apply(s); if (space.state === "ended" && watcher) { watcher.close(); watcher = null; } });
  setInterval(() => { if (space.state === "live") $("#live-for").textContent = "Live for " + fmtDuration(Date.now() - space.started_at); }, 1000);
}

/* --------------------------------------------------------------- speaker */

async function speakerPage(id) {
  document.body.dataset.page = "speaker";
  const autojoin = flag("autojoin");
  let tok = frag.get("token");
  if (tok) { store.put("tribune.speakers", id, tok); stripFragment(); } else tok = store.map("tribune.speakers")[id] || "";
  if (!tok) return askForToken(id, "speaker");
  const c = claims(tok);
  if (!c) return askForToken(id, "speaker", "This invite link is damaged. Ask the host to send it again.");
  if (c.space && c.space !== id) return askForToken(id, "speaker", "This invite is for another space.");
  if (c.exp && c.exp * 1000 < Date.now()) return askForToken(id, "speaker", `This invite expired ${fmtRelative(c.exp * 1000)}. Ask the host for a new link.`);
  setReadToken(tok);

  let snap;
  try { snap = await fetchSnapshot(id); } catch (e) { return fatal(e); }
  app.innerHTML = `
    <section class="card" id="space-card">
      <div class="row spread"><span id="space-state"></span><span class="muted" id="space-stats"></span></div>
      <h1 id="space-title"></h1>
      <p class="muted">You're invited to speak as <strong>${esc(c.sub)}</strong>.</p>
      <div id="speaker-note"></div>
    </section>
    <section class="card" id="mic-card"><h2>Your microphone</h2><div id="mic-root"></div>
      <p class="muted small">Use headphones so the others don't hear themselves through your speakers.</p></section>
    <section class="card" id="stage-card">
      <div class="card-head"><h2>On stage</h2><span class="muted small" id="stage-count"></span></div>
      <ul class="avatars" id="stage-avatars"></ul>
      <p class="empty" id="stage-empty">Nobody is on stage yet.</p>
    </section>
    <p class="muted small" id="just-listen"><a href="/spaces/${esc(id)}">Just listen instead</a></p>`;

  let space = snap.space;
  const mic = new MicPanel($("#mic-root"), {
    spaceId: id, token: tok, identity: c.sub, space,
    joinLabel: "Join stage", idleText: "Press Join stage when you're ready.",
    onExit: (why) => {
      const note = $("#speaker-note");
      if (why === "removed") note.innerHTML = `<div class="notice warn">The host moved you to the audience. <a href="/spaces/${esc(id)}">Listen to the space</a></div>`;
    },
  });
  function apply(s) {
    space = s.space;
    document.title = `Speak · ${space.title} · Tribune`;
    setStateBadge($("#space-state"), space);
    $("#space-title").textContent = space.title;
    $("#space-stats").textContent = space.state === "live" ? plural(space.listeners, "listener") : "";
    const members = space.state === "live" ? s.stage.members : [];
    renderAvatars($("#stage-avatars"), members, space);
    $("#stage-empty").hidden = members.length > 0;
    $("#stage-count").textContent = members.length ? `${members.filter((m) => m.connected !== false).length} / ${s.stage.max_speakers}` : "";
    const note = $("#speaker-note");
    if (space.state === "scheduled") note.innerHTML = `<div class="notice">Waiting for the host to go live${space.scheduled_at ? ` (scheduled ${esc(fmtWhen(space.scheduled_at))})` : ""}.</div>`;
    else if (space.state === "ended") note.innerHTML = `<div class="notice">The space has ended. <a href="/spaces/${esc(id)}">Listen to the recording</a></div>`;
    else if (!note.querySelector(".warn")) note.innerHTML = "";
    const ended = space.state === "ended";
    $("#mic-card").hidden = ended; $("#stage-card").hidden = ended; $("#just-listen").hidden = ended;
    mic.setSpace(space);
    mic.setStage(s.stage);
  }
  apply(snap);
  if (space.state !== "ended") {
    const watcher = watchSpace(id, (s) => { apply(s); if (space.state === "ended") watcher.close(); });
  }
  if (autojoin && space.state !== "ended") mic.join();
  else if (space.state === "scheduled") mic.arm(); // the invite was opened to speak: go on air with the host
}

/* ------------------------------------------------------------ fallbacks */

function fatal(e) {
  const msg = e.status === 404 ? "There's no space here. It may have been mistyped or removed." : e.message;
  app.innerHTML = `<section class="card"><h1>Can't open this space</h1><p class="error" id="fatal">${esc(msg)}</p><p><a href="/">See all spaces</a></p></section>`;
}

function askForToken(id, role, problem) {
  const what = role === "host" ? "host console" : "speaker page";
  app.innerHTML = `<section class="card"><h1>${role === "host" ? "Host console" : "Join the stage"}</h1>
    <p class="${problem ? "error" : "muted"}">${esc(problem || `This ${what} needs the link with its token (…/${role === "host" ? "host" : "speak"}#token=…). Open the link you were given, or paste the token here.`)}</p>
    <form id="token-form"><label for="token-input">${role === "host" ? "Host" : "Speaker"} token</label>
      <div class="field-row"><input id="token-input" type="password" autocomplete="off"><button type="submit">Continue</button></div></form>
    <p><a href="/spaces/${esc(id)}">Listen to the space instead</a></p></section>`;
  $("#token-form").onsubmit = (e) => {
    e.preventDefault();
    const v = $("#token-input").value.trim();
    if (!v) return;
    store.put(role === "host" ? "tribune.hosts" : "tribune.speakers", id, v);
    location.reload();
  };
}

/* ---------------------------------------------------------------- router */

const path = location.pathname.replace(/\/+$/, "") || "/";
const route = path.match(/^\/spaces\/([a-z0-9-]{1,64})(?:\/(host|speak))?$/);
if (path === "/") homePage();
else if (!route) fatal({ status: 404 });
else if (route[2] === "host") hostPage(route[1]);
else if (route[2] === "speak") speakerPage(route[1]);
else listenerPage(route[1]);
