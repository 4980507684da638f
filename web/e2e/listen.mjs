// A listener's first second, in real browsers: N fresh loads of a space's
// listener page, each in its own browser process with a fresh profile,
// listening SECONDS each; prints one JSON line per load and a summary.
//
//   node listen.mjs PAGE_URL [--loads N] [--seconds S] [--parallel P]
//        [--browser chromium|firefox] [--assets DIR] [--capture FILE.wav]
//        [--shots DIR] [--player element]
//
// What it measures, per load, as the page itself sees it (window.tribunePlayer):
// - first sound: ms from navigation start (performance.timeOrigin) to the
//   first non-silent sample leaving the page's AudioWorklet, placed on the
//   performance clock by AudioContext.getOutputTimestamp() (so it includes
//   the output latency the browser reports); for the <audio> fallback, the
//   'playing' event.
// - stalls: the worklet running dry after sound started (count, total ms).
// - behind live: every 500 ms after the first sound, when the sample then
//   leaving the speakers was live (TRIBUNE_EPOCH_MS + granule/48000, the
//   server's clock) minus the wall clock it leaves at (the browser's clock;
//   on loopback the same clock).
// --assets DIR serves app.js, app.css and index.html from DIR instead of the
// binary's embedded copies (to try a page change without a rebuild).
// --capture records the player's output for the first load to a WAV file
// (48 kHz mono), for a tone check; --shots writes phone-size screenshots.
import { chromium } from "playwright-core";
import { mkdtempSync, rmSync, readFileSync, mkdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { writeWav } from "./chromium.mjs";
import { launchFirefox } from "./firefox.mjs";
import { recordInPage } from "./program.mjs";

const argv = process.argv.slice(2);
const url = argv.find((a) => !a.startsWith("--") && !argv[argv.indexOf(a) - 1]?.startsWith("--"));
const opt = (name, def) => { const i = argv.indexOf("--" + name); return i >= 0 ? argv[i + 1] : def; };
if (!url) { console.error("usage: node listen.mjs PAGE_URL [--loads N] [--seconds S] [--parallel P] [--browser chromium|firefox] [--assets DIR] [--capture FILE.wav] [--shots DIR] [--player element]"); process.exit(2); }
const loads = Number(opt("loads", 1)), seconds = Number(opt("seconds", 10)), parallel = Number(opt("parallel", 1));
const browserName = opt("browser", "chromium"), assets = opt("assets", ""), capture = opt("capture", ""), shots = opt("shots", "");
const playerKind = opt("player", "");
const pageUrl = playerKind ? url + (url.includes("?") ? "&" : "?") + "player=" + playerKind : url;
const PHONE = { width: 390, height: 844 };
const log = (...a) => process.stderr.write(a.join(" ") + "\n");
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const ASSETS = { "/assets/app.js": "app.js", "/assets/app.css": "app.css" };

/** One fresh Chromium (own profile) with the page open; returns {page, close}. */
async function openChromium() {
  const profile = mkdtempSync(join(tmpdir(), "tribune-listen-"));
  const ctx = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    timeout: 30_000,
    args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-quic",
           "--no-first-run", "--disable-component-update", "--disable-sync",
           "--autoplay-policy=no-user-gesture-required"],
    viewport: PHONE,
  });
  const page = ctx.pages()[0] || await ctx.newPage();
  const errors = [];
  page.on("console", (m) => { if (m.type() === "error") errors.push(m.text()); });
  page.on("pageerror", (e) => errors.push("pageerror: " + e.message));
  if (assets) {
    await page.route((u) => u.pathname in ASSETS || (u.pathname.startsWith("/spaces/") && !u.pathname.includes(".")), async (route) => {
      const p = new URL(route.request().url()).pathname;
      if (p in ASSETS) return route.fulfill({ body: readFileSync(join(assets, ASSETS[p])), contentType: p.endsWith(".js") ? "text/javascript" : "text/css" });
      return route.fulfill({ body: readFileSync(join(assets, "index.html")), contentType: "text/html" });
    });
  }
  return {
    goto: (u) => page.goto(u, { waitUntil: "commit" }),
    eval: (fn, arg) => page.evaluate(fn, arg),
    shot: (path) => page.screenshot({ path, fullPage: true }),
    errors,
    close: async () => { await ctx.close().catch(() => {}); rmSync(profile, { recursive: true, force: true }); },
  };
}

const open = browserName === "firefox" ? () => launchFirefox({ viewport: PHONE, assets }) : openChromium;

const stats = () => window.tribunePlayer ? window.tribunePlayer.stats() : null;

async function oneLoad(i) {
  const t0 = Date.now();
  const b = await open();
  const r = { load: i, browser: browserName };
  try {
    await b.goto(pageUrl);
    // before the first sound
    if (shots && i === 0) {
      await b.eval(() => new Promise((ok) => { const t = () => (document.querySelector("#player") ? ok() : setTimeout(t, 5)); t(); }));
      await b.shot(join(shots, "listener-connecting.png"));
    }
    const deadline = Date.now() + 20_000;
    let s = null;
    while (Date.now() < deadline) {
      s = await b.eval(stats).catch(() => null);
      if (s && s.firstSoundMs != null) break;
      await sleep(50);
    }
    r.engine = s && s.engine;
    r.first_sound_ms = s ? s.firstSoundMs : null;
    r.marks = s && s.marks;
    if (r.first_sound_ms == null) { r.error = "no sound within 20 s: " + JSON.stringify(s); return r; }
    if (capture && i === 0) {
      const rec = await b.eval(recordInPage, Math.min(4, seconds));
      if (rec.samples) { writeWav(capture, Float32Array.from(rec.samples, (v) => v / 32767)); r.captured_s = rec.samples.length / rec.rate; }
      else r.capture_error = rec.error;
    }
    const behind = [];
    const end = Date.now() + seconds * 1000;
    while (Date.now() < end) {
      await sleep(500);
      s = await b.eval(stats);
      if (s.rawBehindMs != null) behind.push(s.rawBehindMs);
      else if (s.behindMs != null) behind.push(s.behindMs);
    }
    if (shots && i === 0) await b.shot(join(shots, "listener-live.png"));
    Object.assign(r, { state: s.state, played_s: s.played, stalls: s.stalls, stall_ms: s.stallMs, stall_at_ms: s.stallAt, next_seq: s.nextSeq,
      behind_ms: behind, src: s.src });
    r.console_errors = b.errors.slice(0, 5);
  } catch (e) {
    r.error = String(e.message || e).split("\n")[0];
  } finally {
    await b.close();
    r.wall_s = (Date.now() - t0) / 1000;
  }
  return r;
}

const pct = (xs, q) => { const a = [...xs].sort((x, y) => x - y); return a.length ? a[Math.min(a.length - 1, Math.max(0, Math.ceil(a.length * q) - 1))] : null; };
if (shots) mkdirSync(shots, { recursive: true });
const results = [];
let next = 0;
await Promise.all(Array.from({ length: Math.min(parallel, loads) }, async () => {
  while (next < loads) {
    const i = next++;
    const r = await oneLoad(i);
    results.push(r);
    const { behind_ms, ...short } = r;
    if (behind_ms) short.behind_ms_p50 = pct(behind_ms, 0.5);
    console.log(JSON.stringify(short));
  }
}));
const ok = results.filter((r) => !r.error);
const first = ok.map((r) => r.first_sound_ms), behind = ok.flatMap((r) => r.behind_ms || []);
const summary = {
  event: "summary", browser: browserName, engine: ok[0] && ok[0].engine, loads, ok: ok.length, seconds,
  first_sound_ms: { p50: pct(first, 0.5), p95: pct(first, 0.95), max: pct(first, 1) },
  stalls: ok.reduce((a, r) => a + (r.stalls || 0), 0), stall_ms: ok.reduce((a, r) => a + (r.stall_ms || 0), 0),
  loads_with_stalls: ok.filter((r) => r.stalls).length,
  behind_live_ms: { p50: pct(behind, 0.5), p95: pct(behind, 0.95), max: pct(behind, 1), samples: behind.length },
  errors: results.filter((r) => r.error).map((r) => r.error),
};
console.log(JSON.stringify(summary));
process.exit(ok.length === loads ? 0 : 1);
