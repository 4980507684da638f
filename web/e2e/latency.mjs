// Speaker-to-speaker mouth-to-ear latency on the stage, in real headless
// Chromium over loopback (issue 4; target p95 <= 150 ms).
//
//   node latency.mjs BASE_URL SPACE_ID TOKEN_A TOKEN_B [options]
//     --seconds N        measurement window after warm-up (default 30)
//     --warmup N         seconds between B's first audio and the window (default 3)
//     --apm              echo cancellation, noise suppression and AGC on (the app's
//                        speech mode); default off (the app's music mode)
//     --no-transform     no encoded-frame taps (the breakdown needs them)
//     --jitter-target MS set B's receiver.jitterBufferTarget (NetEq floor hint)
//
// Two Chromium processes, each a speaker on the stage through WHIP, the
// same as web/app.js does it (one sendrecv transceiver; the server's
// mix-minus comes back on it):
//   A, the talker: its fake microphone is a WAV of silence with a 1 kHz
//     burst (-6 dBFS) every 713 ms, 14, 28, 42 or 56 ms long in turn (the
//     length tells clicks apart even when the latency exceeds the period).
//     713 is not a multiple of 10 or 20 ms (700 would be 35 frames), so
//     successive clicks step 13 ms through the phase of the 10 ms capture
//     chunks, the 20 ms Opus frames and the mixer tick.
//   B, the listener: a silent fake microphone; its mix-minus is A's audio.
//     The remote stream plays in a muted <audio> element: Chrome only pulls a
//     remote track out of its jitter buffer (NetEq) while something plays it.
//
// Clocks: both processes run on one machine, and every timestamp here is
// performance.timeOrigin + a performance-timeline time (ms since the Unix
// epoch, one system clock), so A's and B's times compare to about 1 ms.
//
// "Mouth" (A) and "ear" (B) are found in the raw audio of the tracks with a
// MediaStreamTrackProcessor (the primary method): every AudioData chunk
// (10 ms) carries Chrome's capture timestamp.
//   - On A's microphone track, Chrome stamps a chunk with its capture time;
//     the fake device stamps it when it hands the chunk over (a device delay
//     of zero), so the sample at index i of an N-sample chunk entered the
//     "microphone" at ts - (N - i) / rate. Mouth = that: it includes the
//     capture buffer (one 10 ms chunk) and everything after it in Chrome
//     (audio processing, encoder framing, pacing).
//   - On B's remote track, a chunk is stamped when the WebRTC audio renderer
//     pulls it out of NetEq for the output device (10 ms at a time), so the
//     sample at index i plays at ts + i / rate + the output device's buffer.
//     Ear = ts + i / rate: it includes the network, the server, NetEq and the
//     decoder, but not the output device buffer, which is reported apart
//     (getStats media-playout totalPlayoutDelay; headless Chromium has no
//     sound card, so this is the fake output stream's).
//   Not included, on real hardware: the microphone's own buffer before
//   Chrome and the sound card's buffer after the pull (the fake devices have
//   neither); together typically 10-40 ms more.
// A cross-check with AudioWorklets (createMediaStreamSource on the same
// tracks): an onset's time is its context frame mapped to the wall clock by
// the running minimum of Date.now() - currentTime over render quanta (i.e.
// when WebAudio could first render it). Each side's WebAudio FIFO mostly
// cancels out; the mouth side can't take back the 10 ms capture chunk, so
// this figure reads about 10 ms lower than the primary one.
//
// Breakdown (default on): RTCRtpScriptTransform taps on A's sender and
// B's receiver stamp every Opus frame (A: as the encoder hands it on; B: the
// packet's receiveTime, before NetEq) and decode a copy with WebCodecs, which
// tells which frame carries the click onset and how far into it (ao on A,
// bo on B). Per click, in the sample's own terms (so each part is the same
// for every click phase and the three add up to the total exactly):
//   A:      mouth -> A's frame out, + ao   (20 ms frame + 6.5 ms Opus
//           lookahead + capture hand-over and encode; ~28 ms)
//   server: A's frame out + ao -> B's frame received + bo   (loopback, the
//           server's 40 ms jitter buffer and the wait for its 20 ms tick,
//           decode, mix-minus, encode with its own 6.5 ms lookahead)
//   B:      B's frame received + bo -> ear   (NetEq's hold, decode, pull)
// The A part checks the mouth convention above: with the capture stamp taken
// as the chunk's first sample instead, it would come out 10 ms short of the
// Opus algorithmic delay (26.5 ms), which can't be.
//
// Onsets: |sample| > 0.1 after at least 300 ms below it; a burst ends 5 ms
// after its last such sample. A mouth onset pairs with the first unused ear
// onset of the same length (+-6 ms) 0..2.65 s after it, so a lost click
// can't pair with the next one. The window's clicks get >= 2.5 s to arrive;
// "lost" counts those that didn't.
//
// stdout: human-readable lines, then one JSON line. Progress on stderr.
// Exit 0 with a measurement, 1 on failure, 2 on bad usage. Bounded: 85 s
// (more with a longer --seconds). LATENCY_DUMP=FILE writes the raw data.
import { launchWithMic, writeWav } from "./chromium.mjs";
import { mkdtempSync, writeFileSync, readFileSync, rmSync } from "node:fs";
import { tmpdir, loadavg, cpus } from "node:os";
import { join } from "node:path";

const argv = process.argv.slice(2);
const positional = argv.filter((a, i) => !a.startsWith("--") && !(i > 0 && ["--seconds", "--warmup", "--jitter-target"].includes(argv[i - 1])));
const flag = (name) => argv.includes(name);
const opt = (name, dflt) => { const i = argv.indexOf(name); return i >= 0 ? Number(argv[i + 1]) : dflt; };
const [base0, spaceId, tokenA, tokenB] = positional;
if (!base0 || !spaceId || !tokenA || !tokenB) {
  console.error("usage: node latency.mjs BASE_URL SPACE_ID TOKEN_A TOKEN_B [--seconds 30] [--warmup 3] [--apm] [--no-transform] [--jitter-target MS]");
  process.exit(2);
}
const base = base0.replace(/\/+$/, "");
const SECONDS = opt("--seconds", 30);
const WARMUP = opt("--warmup", 3);
const APM = flag("--apm");
const TRANSFORM = !flag("--no-transform");
const JITTER_TARGET = opt("--jitter-target", null);
const TOTAL_MS = Math.max(85_000, (SECONDS + WARMUP + 45) * 1000);
const PERIOD_MS = 713, CLICK_LENS = [14, 28, 42, 56], CLICK_HZ = 1000, CLICK_AMP = 0.5, FIRST_CLICK_MS = 200;
const THRESHOLD = 0.1, QUIET_MS = 300, LEN_TOL_MS = 6;
// a click pairs with the next one of its length: 4 lengths tell clicks apart up to 4 periods
const MAX_LATENCY_MS = CLICK_LENS.length * PERIOD_MS - 200;
const TAIL_MS = 1000, GRACE_MS = 1500; // clicks in the window's last second get 2.5 s to arrive
const T0 = Date.now();

const log = (...a) => process.stderr.write(`[${((Date.now() - T0) / 1000).toFixed(1)}s] ${a.join(" ")}\n`);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
/** Load average and CPU pressure (share of time some task waited for a CPU, last 10 s). */
const busy = () => {
  let psi = null;
  try { psi = Number(/some avg10=([\d.]+)/.exec(readFileSync("/proc/pressure/cpu", "utf8"))[1]); } catch { /* no PSI */ }
  return { load1: Math.round(loadavg()[0] * 100) / 100, cpu_pressure_pct: psi };
};

/** A WAV `periods` x PERIOD_MS long (so Chrome's loop is seamless), with clicks or silent. */
function writeClicks(path, periods, clicks) {
  const rate = 48000, per = (rate * PERIOD_MS) / 1000;
  const samples = new Float32Array(per * periods);
  if (clicks) {
    const start = (rate * FIRST_CLICK_MS) / 1000;
    for (let p = 0; p < periods; p++) {
      const len = (rate * CLICK_LENS[p % CLICK_LENS.length]) / 1000;
      for (let i = 0; i < len; i++) {
        samples[p * per + start + i] = CLICK_AMP * Math.sin((2 * Math.PI * CLICK_HZ * i) / rate);
      }
    }
  }
  writeWav(path, samples);
}

const browsers = [];
async function launch(wav) {
  const browser = await launchWithMic(wav);
  browsers.push(browser);
  return browser;
}

// A blank page on the server's origin (served by Playwright, not the server),
// so the WHIP fetch is same-origin and 127.0.0.1 is a secure context.
const PAGE_PATH = "/__latency-bench";
const pageErrors = { a: [], b: [] };
async function open(browser, name) {
  const context = await browser.newContext();
  await context.grantPermissions(["microphone"], { origin: base }).catch(() => {});
  const page = await context.newPage();
  page.setDefaultTimeout(15_000);
  page.on("console", (m) => { if (m.type() === "error" || m.type() === "warning") pageErrors[name].push(m.text()); });
  page.on("pageerror", (e) => pageErrors[name].push("pageerror: " + e.message));
  await page.route(base + PAGE_PATH, (r) => r.fulfill({ contentType: "text/html", body: "<!doctype html><meta charset=utf-8><title>latency</title><body></body>" }));
  await page.goto(base + PAGE_PATH);
  return page;
}

// ---- in-page code (serialized by page.evaluate) ----

// A burst: |sample| > threshold after QUIET_MS below it; it ends 5 ms after
// the last sample above. emit(onset ms, length ms, what was current at the onset).
const BURSTS = `
class Bursts {
  constructor(thr, quietMs, emit) { this.thr = thr; this.quiet = quietMs; this.emit = emit; this.on = null; this.info = null; this.last = -1e15; }
  sample(v, t, info) {
    if (v > this.thr || v < -this.thr) {
      if (this.on === null && t - this.last > this.quiet) { this.on = t; this.info = info; }
      this.last = t;
    } else if (this.on !== null && t - this.last > 5) { this.emit(this.on, this.last - this.on, this.info); this.on = null; }
  }
}`;

const WORKLET = BURSTS + `
registerProcessor("onsets", class extends AudioWorkletProcessor {
  constructor(o) {
    super();
    const { threshold, quietMs } = o.processorOptions;
    this.bursts = new Bursts(threshold, quietMs, (t, len) => this.port.postMessage({ t, len }));
    this.minCur = Infinity; this.minPrev = Infinity; this.windowStart = 0;
  }
  process(inputs) {
    const ms = 1000 / sampleRate;
    const d = Date.now() - currentFrame * ms;  // wall minus context time at this quantum
    if (currentFrame - this.windowStart >= sampleRate) { this.minPrev = this.minCur; this.minCur = Infinity; this.windowStart = currentFrame; }
    if (d < this.minCur) this.minCur = d;
    const off = Math.min(this.minCur, this.minPrev);
    const ch = inputs[0] && inputs[0][0];
    if (ch) for (let i = 0; i < ch.length; i++) this.bursts.sample(ch[i], (currentFrame + i) * ms + off);
    return true;
  }
});`;

// Encoded-frame taps: stamp each Opus frame, pass it on untouched, and
// decode a copy (WebCodecs) to find the frame that carries a click onset.
const WORKER = BURSTS + `
onrtctransform = (e) => {
  const { side, threshold, quietMs } = e.transformer.options;
  const o = performance.timeOrigin;
  const frames = []; // k -> { k, t, rx, cap, ... }
  let k = 0, first = true, decoded = 0, buf = new Float32Array(0);
  const bursts = new Bursts(threshold, quietMs, (t, len, info) => self.postMessage({ side, onset: true, ...info, len }));
  const dec = new AudioDecoder({
    output: (a) => {
      const n = a.numberOfFrames, fr = frames[Math.round(a.timestamp / 20000)];
      if (buf.length < n) buf = new Float32Array(n);
      a.copyTo(buf, { planeIndex: 0, format: "f32-planar" });
      a.close();
      for (let i = 0; i < n; i++) bursts.sample(buf[i], (decoded + i) / 48, { ...fr, offset_ms: i / 48 });
      decoded += n;
      if (fr) delete frames[fr.k - 50];
    },
    error: (err) => self.postMessage({ side, error: String(err) }),
  });
  dec.configure({ codec: "opus", sampleRate: 48000, numberOfChannels: 2 });
  e.transformer.readable.pipeThrough(new TransformStream({
    transform(f, c) {
      const t = o + performance.now();
      const md = f.getMetadata ? f.getMetadata() : {};
      const data = f.data.slice(0);
      c.enqueue(f);
      const fr = { k, t, n: data.byteLength, rtp: md.rtpTimestamp, cap: md.captureTime != null ? o + md.captureTime : null, rx: md.receiveTime != null ? o + md.receiveTime : null };
      if (first) { first = false; self.postMessage({ side, keys: Object.keys(md) }); }
      frames[k] = fr;
      self.postMessage({ side, ...fr });
      if (dec.state === "configured") dec.decode(new EncodedAudioChunk({ type: "key", timestamp: k * 20000, data }));
      k++;
    },
  })).pipeTo(e.transformer.writable);
};`;

async function pageSetup(o) {
  const L = (window.L = { role: o.role, mstp: [], worklet: [], frames: [], frameOnsets: [], frameKeys: null, chunks: { n: 0, sizes: {}, rates: {}, lateMax: 0, lateSum: 0, gaps: 0, steps: {}, prevTs: null }, peak: 0, errors: [] });
  const now = () => performance.timeOrigin + performance.now();
  const blobUrl = (src) => URL.createObjectURL(new Blob([src], { type: "text/javascript" }));
  const Bursts = new Function(o.bursts + "; return Bursts;")();

  const mic = await navigator.mediaDevices.getUserMedia({
    audio: { echoCancellation: o.apm, noiseSuppression: o.apm, autoGainControl: o.apm, channelCount: 1 },
  });
  const micTrack = mic.getAudioTracks()[0];
  micTrack.contentHint = o.apm ? "speech" : "music";
  L.micSettings = micTrack.getSettings();

  const ctx = new AudioContext({ latencyHint: "interactive", sampleRate: 48000 });
  await ctx.audioWorklet.addModule(blobUrl(o.worklet));
  await ctx.resume();
  L.ctx = () => ({ baseLatency: ctx.baseLatency, outputLatency: ctx.outputLatency, sampleRate: ctx.sampleRate, state: ctx.state });

  // primary: raw chunks with Chrome's timestamps
  const tapChunks = async (track, kind) => {
    const reader = new MediaStreamTrackProcessor({ track }).readable.getReader();
    const bursts = new Bursts(o.threshold, o.quietMs, (t, len) => L.mstp.push({ t, len }));
    let buf = new Float32Array(0), prevEnd = null;
    for (;;) {
      const { value: a, done } = await reader.read();
      if (done) return;
      const got = now();
      const n = a.numberOfFrames, rate = a.sampleRate, ms = 1000 / rate;
      if (buf.length < n) buf = new Float32Array(n);
      a.copyTo(buf, { planeIndex: 0, format: "f32-planar" });
      const ts = performance.timeOrigin + a.timestamp / 1000;
      a.close();
      const c = L.chunks; c.n++; c.sizes[n] = (c.sizes[n] || 0) + 1; c.rates[rate] = (c.rates[rate] || 0) + 1;
      const late = got - ts; c.lateSum += late; if (late > c.lateMax) c.lateMax = late;
      if (prevEnd !== null && Math.abs(ts - prevEnd) > 5) c.gaps++;
      if (c.prevTs != null) { const st = Math.round(ts - c.prevTs); c.steps[st] = (c.steps[st] || 0) + 1; }
      c.prevTs = ts;
      prevEnd = ts + n * ms;
      // A's capture stamp is the chunk's hand-over (its last sample); B's is the playout pull (its first)
      const t0 = kind === "mouth" ? ts - n * ms : ts;
      for (let i = 0; i < n; i++) {
        const v = buf[i];
        if (v > L.peak) L.peak = v;
        bursts.sample(v, t0 + i * ms);
      }
    }
  };
  const tapWorklet = (stream) => {
    const node = new AudioWorkletNode(ctx, "onsets", { processorOptions: { threshold: o.threshold, quietMs: o.quietMs }, outputChannelCount: [1] });
    node.port.onmessage = (e) => L.worklet.push(e.data);
    ctx.createMediaStreamSource(stream).connect(node);
    node.connect(ctx.destination); // silent: the processor writes nothing
  };

  const pc = (L.pc = new RTCPeerConnection({ iceServers: [], bundlePolicy: "max-bundle", rtcpMuxPolicy: "require" }));
  const tr = pc.addTransceiver(micTrack, { direction: "sendrecv", streams: [mic] });
  if (o.transform) {
    const worker = new Worker(blobUrl(o.worker));
    worker.onmessage = (e) => {
      const m = e.data;
      if (m.keys) L.frameKeys = m;
      else if (m.error) L.errors.push(m.side + " decoder: " + m.error);
      else if (m.onset) L.frameOnsets.push(m);
      else L.frames.push(m);
    };
    const opts = { threshold: o.threshold, quietMs: o.quietMs };
    if (o.role === "a") tr.sender.transform = new RTCRtpScriptTransform(worker, { side: "send", ...opts });
    else tr.receiver.transform = new RTCRtpScriptTransform(worker, { side: "recv", ...opts });
  }
  if (o.role === "b" && o.jitterTarget != null) tr.receiver.jitterBufferTarget = o.jitterTarget;
  if (o.role === "a") {
    tapChunks(micTrack, "mouth").catch((e) => L.errors.push("mouth tap: " + e));
    tapWorklet(mic);
  }
  pc.ontrack = (e) => {
    if (o.role !== "b") return;
    const stream = e.streams[0] || new MediaStream([e.track]);
    const el = document.createElement("audio");
    el.muted = true; el.autoplay = true; el.srcObject = stream;
    document.body.append(el);
    el.play().catch((err) => L.errors.push("play: " + err));
    tapChunks(e.track, "ear").catch((err) => L.errors.push("ear tap: " + err));
    tapWorklet(stream);
  };
  const connected = new Promise((ok, no) => {
    pc.onconnectionstatechange = () => {
      if (pc.connectionState === "connected") ok();
      if (pc.connectionState === "failed") no(new Error("peer connection failed"));
    };
  });
  await pc.setLocalDescription(await pc.createOffer());
  const res = await fetch(`/spaces/${encodeURIComponent(o.spaceId)}/whip`, {
    method: "POST",
    headers: { "Content-Type": "application/sdp", Authorization: "Bearer " + o.token },
    body: pc.localDescription.sdp,
  });
  const answer = await res.text();
  if (res.status !== 201) throw new Error(`WHIP answered ${res.status}: ${answer.slice(0, 300)}`);
  L.resource = res.headers.get("Location");
  await pc.setRemoteDescription({ type: "answer", sdp: answer });
  await Promise.race([connected, new Promise((_, no) => setTimeout(() => no(new Error("not connected after 10 s (state " + pc.connectionState + ")")), 10_000))]);
  L.connectedAt = now();
  L.neteq = [];
  if (o.role === "b") {
    const sample = async () => {
      (await pc.getStats()).forEach((s) => {
        if (s.type === "inbound-rtp" && s.kind === "audio") L.neteq.push({ t: now(), jbd: s.jitterBufferDelay, jbt: s.jitterBufferTargetDelay, emitted: s.jitterBufferEmittedCount });
      });
    };
    setInterval(() => sample().catch(() => {}), 1000);
  }
  return { settings: L.micSettings, ctx: L.ctx(), codec: (answer.match(/a=rtpmap:\d+ (\S+)/) || [])[1], fmtp: (answer.match(/a=fmtp:\d+ (.*)/) || [])[1] || null };
}

async function pageStats() {
  const keep = ["inbound-rtp", "outbound-rtp", "remote-inbound-rtp", "media-playout", "candidate-pair", "media-source", "codec"];
  const out = [];
  (await window.L.pc.getStats()).forEach((s) => { if (keep.includes(s.type)) out.push({ ...s }); });
  return { at: performance.timeOrigin + performance.now(), stats: out };
}

async function pageCollect() {
  const L = window.L;
  const r = { neteq: L.neteq, mstp: L.mstp, worklet: L.worklet, frames: L.frames, frameOnsets: L.frameOnsets, frameKeys: L.frameKeys, chunks: L.chunks, peak: L.peak, errors: L.errors, ctx: L.ctx(), connectedAt: L.connectedAt };
  if (L.resource) await fetch(L.resource, { method: "DELETE", headers: { Authorization: "Bearer " + window.__token } }).catch(() => {});
  return r;
}

// ---- analysis ----

const pct = (xs, q) => { if (!xs.length) return null; const s = [...xs].sort((a, b) => a - b); return s[Math.min(s.length - 1, Math.max(0, Math.ceil(q * s.length) - 1))]; };
const summary = (xs) => ({ n: xs.length, p50: r1(pct(xs, 0.5)), p95: r1(pct(xs, 0.95)), max: r1(xs.length ? Math.max(...xs) : null), min: r1(xs.length ? Math.min(...xs) : null) });
const r1 = (x) => (x == null || !Number.isFinite(x) ? null : Math.round(x * 10) / 10);
const fmt = (s) => (s.n ? `p50 ${s.p50.toFixed(1)} ms, p95 ${s.p95.toFixed(1)} ms, max ${s.max.toFixed(1)} ms (min ${s.min.toFixed(1)})` : "no data");

const sameClick = (a, b) => Math.abs(a.len - b.len) <= LEN_TOL_MS;
/** Pairs each burst in `from` with the first unused burst of its length in `to` 0..MAX_LATENCY_MS after it. */
function pair(from, to) {
  const used = new Set(), out = [];
  const sorted = [...to].sort((x, y) => x.t - y.t);
  for (const f of from) {
    const hit = sorted.find((e) => !used.has(e) && e.t - f.t >= 0 && e.t - f.t < MAX_LATENCY_MS && sameClick(e, f));
    if (hit) { used.add(hit); out.push({ from: f.t, len: f.len, to: hit.t, d: hit.t - f.t }); } else out.push({ from: f.t, len: f.len, to: null, d: null });
  }
  return out;
}

function statsDelta(s0, s1, type, filter = () => true) {
  const a = s0.stats.find((s) => s.type === type && filter(s)), b = s1.stats.find((s) => s.type === type && filter(s));
  return { a, b, d: (k) => (a && b && b[k] != null && a[k] != null ? b[k] - a[k] : null) };
}

async function main() {
  tmp = mkdtempSync(join(tmpdir(), "tribune-latency-"));
  const wavA = join(tmp, "clicks.wav"), wavB = join(tmp, "silence.wav");
  writeClicks(wavA, 88, true); // 63 s, longer than any run; a whole number of length cycles
  writeClicks(wavB, 1, false);

  const busy0 = busy();
  log("launching two Chromium processes");
  const [ba, bb] = await Promise.all([launch(wavA), launch(wavB)]);
  const [pa, pb] = await Promise.all([open(ba, "a"), open(bb, "b")]);
  const common = { spaceId, apm: APM, transform: TRANSFORM, threshold: THRESHOLD, quietMs: QUIET_MS, bursts: BURSTS, worklet: WORKLET, worker: WORKER, jitterTarget: JITTER_TARGET };
  await pa.evaluate((t) => { window.__token = t; }, tokenA);
  await pb.evaluate((t) => { window.__token = t; }, tokenB);
  log("WHIP: both speakers join");
  const [infoA, infoB] = await Promise.all([
    pa.evaluate(pageSetup, { ...common, role: "a", token: tokenA }),
    pb.evaluate(pageSetup, { ...common, role: "b", token: tokenB }),
  ]);
  log("connected; A mic", JSON.stringify(infoA.settings), "ctx", JSON.stringify(infoA.ctx), "codec", infoA.codec, infoA.fmtp);
  // wait until B hears the first click, then warm up (NetEq adapts)
  await pb.waitForFunction(() => window.L.mstp.length > 0, null, { timeout: 10_000 }).catch(() => { throw new Error("B heard no click within 10 s of connecting"); });
  log(`B hears clicks; warming up ${WARMUP} s`);
  await sleep(WARMUP * 1000);
  const [sa0, sb0] = await Promise.all([pa.evaluate(pageStats), pb.evaluate(pageStats)]);
  const tStart = Math.max(sa0.at, sb0.at);
  log(`measuring ${SECONDS} s`);
  await sleep(SECONDS * 1000);
  const [sa1, sb1] = await Promise.all([pa.evaluate(pageStats), pb.evaluate(pageStats)]);
  const tEnd = Math.min(sa1.at, sb1.at);
  await sleep(GRACE_MS); // the window's last clicks still arrive
  const [A, B] = await Promise.all([pa.evaluate(pageCollect), pb.evaluate(pageCollect)]);
  const busyMid = busy(); // the window's last 10 s
  if (process.env.LATENCY_DUMP) writeFileSync(process.env.LATENCY_DUMP, JSON.stringify({ A, B, sa0, sa1, sb0, sb1, tStart, tEnd }));

  const inWindow = (b) => b.t >= tStart && b.t < tEnd - TAIL_MS;
  // primary
  const mouth = A.mstp.filter(inWindow);
  const m2e = pair(mouth, B.mstp);
  const d = m2e.filter((p) => p.d != null).map((p) => p.d);
  const lost = m2e.filter((p) => p.d == null).length;
  // ear onsets in the window (shifted by the typical latency) that no click explains
  const med = pct(d, 0.5) ?? 0, matched = new Set(m2e.filter((p) => p.to != null).map((p) => p.to));
  const spurious = B.mstp.filter((b) => b.t >= tStart + med && b.t < tEnd - TAIL_MS + med && !matched.has(b.t)).length;
  // cross-check
  const wm = A.worklet.filter(inWindow);
  const w2e = pair(wm, B.worklet);
  const wd = w2e.filter((p) => p.d != null).map((p) => p.d);
  // cadence: how steady each side's onsets are (the timing method's jitter)
  const cadence = (bs) => { const ts = bs.map((b) => b.t), iv = []; for (let i = 1; i < ts.length; i++) iv.push(ts[i] - ts[i - 1]); const ok = iv.filter((x) => Math.abs(x - PERIOD_MS) < 50); const mean = ok.reduce((a, b) => a + b, 0) / (ok.length || 1); return { mean: r1(mean), sd: r1(Math.sqrt(ok.reduce((a, b) => a + (b - mean) ** 2, 0) / (ok.length || 1))), off: iv.length - ok.length }; };

  // breakdown through the encoded-frame taps: per click, the first Opus
  // frame whose decoded audio holds the onset, on A's way out (when A's
  // encoder emitted it) and on B's way in (when B's transport received it)
  let breakdown = null;
  const clicks = [];
  if (TRANSFORM) {
    const oa = A.frameOnsets.filter((f) => f.side === "send"), ob = B.frameOnsets.filter((f) => f.side === "recv");
    for (const p of m2e) {
      if (p.d == null) continue;
      const sent = oa.find((f) => f.t - p.from >= -5 && f.t - p.from < 200 && sameClick(f, p));
      if (!sent) continue;
      const got = ob.find((f) => (f.rx ?? f.t) - sent.t >= 0 && (f.rx ?? f.t) <= p.to + 1 && sameClick(f, p));
      if (!got) continue;
      const out = sent.t, arr = got.rx ?? got.t, ao = sent.offset_ms, bo = got.offset_ms;
      // per sample: the onset is ao ms into A's decoded frame and bo ms into B's
      clicks.push({
        at_s: r1((p.from - tStart) / 1000), total: r1(p.d),
        a_mouth_to_encoded: r1(out - p.from + ao), server: r1(arr + bo - (out + ao)), b_neteq_to_ear: r1(p.to - (arr + bo)),
        a_frame_sent: r1(out - p.from), frames_sent_to_received: r1(arr - out), a_offset: r1(ao), b_offset: r1(bo),
      });
    }
    const seg = (k) => { const xs = clicks.map((c) => c[k]); return { ...summary(xs), mean: r1(xs.reduce((a, b) => a + b, 0) / (xs.length || 1)) }; };
    const fa = A.frames.filter((f) => f.side === "send"), fb = B.frames.filter((f) => f.side === "recv");
    breakdown = {
      clicks: clicks.length,
      total: seg("total"),
      a_mouth_to_encoded: seg("a_mouth_to_encoded"),
      server: seg("server"),
      b_neteq_to_ear: seg("b_neteq_to_ear"),
      frame_bytes: { a_median: pct(fa.map((f) => f.n), 0.5), a_max: Math.max(0, ...fa.map((f) => f.n)), b_median: pct(fb.map((f) => f.n), 0.5), b_max: Math.max(0, ...fb.map((f) => f.n)) },
      frame_metadata: { a: A.frameKeys && A.frameKeys.keys, b: B.frameKeys && B.frameKeys.keys },
    };
  }
  // B's NetEq, second by second over the whole session
  const neteq = [];
  for (let i = 1; i < B.neteq.length; i++) {
    const a = B.neteq[i - 1], b = B.neteq[i], e = b.emitted - a.emitted;
    if (e > 0) neteq.push({ at_s: r1((b.t - tStart) / 1000), delay: r1(((b.jbd - a.jbd) / e) * 1000), target: r1(((b.jbt - a.jbt) / e) * 1000) });
  }

  // getStats over the window
  const inb = statsDelta(sb0, sb1, "inbound-rtp", (s) => s.kind === "audio");
  const emitted = inb.d("jitterBufferEmittedCount");
  const per = (k) => (emitted ? r1((inb.d(k) / emitted) * 1000) : null);
  const playoutStat = statsDelta(sb0, sb1, "media-playout");
  const outA = statsDelta(sa0, sa1, "outbound-rtp", (s) => s.kind === "audio");
  const rinA = sa1.stats.find((s) => s.type === "remote-inbound-rtp");
  const cpA = sa1.stats.find((s) => s.type === "candidate-pair" && s.nominated) || sa1.stats.find((s) => s.type === "candidate-pair" && s.state === "succeeded");
  const stats = {
    b_neteq: {
      jitter_buffer_delay_ms: per("jitterBufferDelay"),
      jitter_buffer_target_ms: per("jitterBufferTargetDelay"),
      jitter_buffer_minimum_ms: per("jitterBufferMinimumDelay"),
      concealed_pct: inb.d("totalSamplesReceived") ? r1((100 * inb.d("concealedSamples")) / inb.d("totalSamplesReceived")) : null,
      inserted_for_deceleration: inb.d("insertedSamplesForDeceleration"),
      removed_for_acceleration: inb.d("removedSamplesForAcceleration"),
      packets_received: inb.d("packetsReceived"),
      packets_lost: inb.d("packetsLost"),
      jitter_ms: inb.b && inb.b.jitter != null ? r1(inb.b.jitter * 1000) : null,
      flushes: inb.d("jitterBufferFlushes"),
    },
    b_playout_device_ms: playoutStat.d("totalSamplesCount") ? r1((playoutStat.d("totalPlayoutDelay") / playoutStat.d("totalSamplesCount")) * 1000) : null,
    b_playout_synthesized_ms: playoutStat.d("synthesizedSamplesDuration") != null ? r1(playoutStat.d("synthesizedSamplesDuration") * 1000) : null,
    a_send_kbps: outA.d("bytesSent") != null ? r1((outA.d("bytesSent") * 8) / (tEnd - tStart)) : null,
    a_packets_sent: outA.d("packetsSent"),
    a_rtt_ms: rinA && rinA.roundTripTime != null ? r1(rinA.roundTripTime * 1000) : null,
    a_ice_rtt_ms: cpA && cpA.currentRoundTripTime != null ? r1(cpA.currentRoundTripTime * 1000) : null,
  };

  const result = {
    event: "done",
    mouth_to_ear: { ...summary(d), clicks_sent: mouth.length, lost, spurious },
    latencies_ms: d.map(r1),
    worklet_cross_check: { ...summary(wd), clicks_sent: wm.length, lost: w2e.filter((p) => p.d == null).length },
    breakdown,
    stats,
    clicks,
    neteq_per_second: neteq,
    cadence: { a_mstp: cadence(A.mstp), b_mstp: cadence(B.mstp), a_worklet: cadence(A.worklet), b_worklet: cadence(B.worklet) },
    click_lengths_ms: { sent: CLICK_LENS, a_heard: [...new Set(A.mstp.map((b) => Math.round(b.len)))].sort((x, y) => x - y), b_heard: [...new Set(B.mstp.map((b) => Math.round(b.len)))].sort((x, y) => x - y) },
    chunks: { a: A.chunks, b: B.chunks },
    audio_context: { a: A.ctx, b: B.ctx },
    peak: { a: r1(A.peak * 100) / 100, b: r1(B.peak * 100) / 100 },
    apm: APM, transform: TRANSFORM, jitter_target_ms: JITTER_TARGET,
    mic: infoA.settings, codec: infoA.codec, fmtp: infoA.fmtp,
    window_s: r1((tEnd - tStart) / 1000),
    machine: { cpus: cpus().length, before: busy0, end_of_window: busyMid },
    errors: { a: [...A.errors, ...pageErrors.a], b: [...B.errors, ...pageErrors.b] },
    seconds: r1((Date.now() - T0) / 1000),
  };

  const L = (s) => process.stdout.write(s + "\n");
  L(`speaker-to-speaker mouth-to-ear in headless Chromium (${(await ba.version())}), loopback, ${result.window_s} s window, ` +
    `processing ${APM ? "on (speech mode)" : "off (music mode)"}${JITTER_TARGET != null ? `, B jitterBufferTarget ${JITTER_TARGET} ms` : ""}`);
  L(`  mouth (A's capture) -> ear (B's NetEq playout pull): ${d.length}/${mouth.length} clicks, ${fmt(result.mouth_to_ear)}; lost ${lost}, spurious ${spurious}`);
  L(`  cross-check, AudioWorklet taps on both sides:          ${wd.length}/${wm.length} clicks, ${fmt(result.worklet_cross_check)}`);
  if (breakdown && breakdown.clicks) {
    const b = breakdown, m = (x) => `${x.p50.toFixed(1)} ms (${x.min.toFixed(0)}..${x.max.toFixed(0)})`;
    L(`  where it goes, per click onset, p50 (range) over ${b.clicks} clicks (decoded copies of the Opus frames on both sides):`);
    L(`    A: mouth -> Opus frame out (20 ms frame, 6.5 ms lookahead, capture and encode): ${m(b.a_mouth_to_encoded)}`);
    L(`    A's frame out -> B's transport (loopback; server jitter buffer, tick wait, decode, mix, encode): ${m(b.server)}`);
    L(`    B: transport -> played (NetEq hold, decode, 10 ms playout pull):                ${m(b.b_neteq_to_ear)}`);
    const first = clicks.slice(0, 5), last = clicks.slice(-5), avg = (xs, k) => (xs.reduce((a, c) => a + c[k], 0) / xs.length).toFixed(0);
    L(`    first 5 clicks: ${avg(first, "total")} = ${avg(first, "a_mouth_to_encoded")} + ${avg(first, "server")} + ${avg(first, "b_neteq_to_ear")} ms; ` +
      `last 5: ${avg(last, "total")} = ${avg(last, "a_mouth_to_encoded")} + ${avg(last, "server")} + ${avg(last, "b_neteq_to_ear")} ms`);
  }
  const n = stats.b_neteq;
  L(`  B's NetEq over the window: jitterBufferDelay ${n.jitter_buffer_delay_ms} ms/sample (target ${n.jitter_buffer_target_ms}, minimum ${n.jitter_buffer_minimum_ms}), ` +
    `concealed ${n.concealed_pct}%, accelerate -${n.removed_for_acceleration} / decelerate +${n.inserted_for_deceleration} samples, lost ${n.packets_lost}, jitter ${n.jitter_ms} ms`);
  if (neteq.length) L(`  B's NetEq per second (delay/target ms): ${neteq.map((x) => `${x.at_s}s ${x.delay}/${x.target}`).join(", ")}`);
  L(`  not in the figure: B's output device buffer ${stats.b_playout_device_ms ?? "n/a"} ms (media-playout; a fake output stream here)`);
  L(`  A: ${stats.a_send_kbps} kbps sent, RTT to the server ${stats.a_rtt_ms ?? "n/a"} ms (RTCP), ${stats.a_ice_rtt_ms ?? "n/a"} ms (ICE)`);
  const quiet = (b) => b.load1 <= cpus().length && (b.cpu_pressure_pct == null || b.cpu_pressure_pct < 20);
  L(`  machine: ${cpus().length} CPUs, load average ${busy0.load1} before, ${busyMid.load1} at the end; CPU pressure ${busy0.cpu_pressure_pct ?? "n/a"}% -> ${busyMid.cpu_pressure_pct ?? "n/a"}%` +
    (quiet(busy0) && quiet(busyMid) ? "" : " -- BUSY: other work competed for the CPUs, so the figure includes scheduling delays"));
  if (d.length < Math.max(5, mouth.length * 0.5)) {
    result.event = "error";
    result.message = `only ${d.length} of ${mouth.length} clicks reached B`;
    L(JSON.stringify(result));
    log("failed:", result.message);
    return false;
  }
  L(JSON.stringify(result));
  return true;
}

let tmp = null;
async function closeAll() {
  await Promise.race([Promise.all(browsers.map((b) => b.close().catch(() => {}))), sleep(5000)]);
  if (tmp) rmSync(tmp, { recursive: true, force: true });
}

const watchdog = setTimeout(async () => {
  process.stdout.write(JSON.stringify({ event: "error", message: `timed out after ${TOTAL_MS / 1000} s`, errors: pageErrors }) + "\n");
  await closeAll();
  process.exit(1);
}, TOTAL_MS);

try {
  const ok = await main();
  clearTimeout(watchdog);
  await closeAll();
  process.exit(ok ? 0 : 1);
} catch (e) {
  clearTimeout(watchdog);
  log("failed:", e.stack || e);
  process.stdout.write(JSON.stringify({ event: "error", message: String(e.message || e).split("\n")[0], errors: pageErrors }) + "\n");
  await closeAll();
  process.exit(1);
}
