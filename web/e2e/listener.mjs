// A listener's first second, in a fresh headless Chromium at phone size:
// opens the listener page of a live space, waits for the first sound,
// records the page's own output, pauses (behind live), plays on, goes back
// to live, and after the space ends shows the replay. For
// server/tests/listener_browser.rs.
//
//   node listener.mjs PAGE_URL ARTIFACT_DIR
//
// stdout, one JSON object a line: {"event":"live", first_sound_ms, engine,
// wav, behind_ms, after_pause_behind_ms, back_to_live_behind_ms, stalls, ...}
// once the live checks are done (the test then ends the space), then
// {"event":"done"} (exit 0) or {"event":"error","message"} (exit 1).
// Screenshots (390x844) in ARTIFACT_DIR: listener-connecting.png (before
// the first sound), listener-live.png, listener-behind.png (paused 3 s),
// listener-ended.png; listener-live.wav is what the page played.
import { chromium } from "playwright-core";
import { mkdtempSync, rmSync, mkdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { writeWav } from "./chromium.mjs";
import { recordProgram } from "./program.mjs";

const [url, artifacts] = process.argv.slice(2);
if (!url || !artifacts) { console.error("usage: node listener.mjs PAGE_URL ARTIFACT_DIR"); process.exit(2); }
mkdirSync(artifacts, { recursive: true });
const emit = (o) => process.stdout.write(JSON.stringify(o) + "\n");
const T0 = Date.now();
const log = (...a) => process.stderr.write(`[${((Date.now() - T0) / 1000).toFixed(1)}s] ${a.join(" ")}\n`);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
let step = "launch";
const profile = mkdtempSync(join(tmpdir(), "tribune-listener-"));
const ctx = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true, timeout: 30_000,
  args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-quic",
         "--no-first-run", "--disable-component-update", "--disable-sync",
         "--autoplay-policy=no-user-gesture-required"],
  viewport: { width: 390, height: 844 },
});
const page = ctx.pages()[0] || await ctx.newPage();
page.setDefaultTimeout(15_000);
const errors = [];
page.on("console", (m) => { if (m.type() === "error") errors.push(m.text()); });
page.on("pageerror", (e) => errors.push("pageerror: " + e.message));
const shot = (name) => page.screenshot({ path: join(artifacts, name), fullPage: true });
const program = () => page.evaluate(() => window.tribunePlayer && window.tribunePlayer.stats());
const watchdog = setTimeout(async () => { emit({ event: "error", step, message: `timed out at ${step}` }); await ctx.close().catch(() => {}); process.exit(1); }, 90_000);

try {
  step = "open";
  await page.goto(url, { waitUntil: "commit" });

  step = "first sound";
  await page.waitForFunction(() => window.tribunePlayer && window.tribunePlayer.firstSoundMs != null, null, { timeout: 20_000 });
  const first = await program();
  log("first sound:", first.firstSoundMs, "ms", JSON.stringify(first.marks));

  step = "record";
  const rec = await recordProgram(page, 3);
  if (rec.error) throw new Error(rec.error);
  const wav = join(artifacts, "listener-live.wav");
  writeWav(wav, Float32Array.from(rec.samples, (v) => v / 32767));
  await page.waitForFunction(() => window.tribunePlayer.behindMs != null);
  const live = await program();
  await shot("listener-live.png");

  step = "pause";
  await page.click("#play");
  await sleep(3000);
  const paused = await program();
  await shot("listener-behind.png");
  step = "play on";
  await page.click("#play");
  await page.waitForFunction(() => window.tribunePlayer.state === "playing" && window.tribunePlayer.behindMs > 2000, null, { timeout: 5000 });
  const behind = await program();
  const backButton = await page.isVisible("#back-to-live");
  step = "back to live";
  await page.click("#back-to-live");
  await page.waitForFunction(() => window.tribunePlayer.state === "playing" && window.tribunePlayer.behindMs < 2000, null, { timeout: 5000 });
  await sleep(1000);
  const back = await program();
  // Before the first sound: a second page whose stream is held back 3 s.
  step = "connecting";
  const held = await ctx.newPage();
  await held.route((u) => u.pathname.endsWith("/live.opus"), async (route) => { await sleep(3000); await route.continue().catch(() => {}); });
  await held.goto(url);
  await held.waitForSelector("#player");
  await sleep(300);
  const before = await held.evaluate(() => ({ state: document.querySelector("#program")?.dataset.state, status: document.querySelector("#player-status")?.textContent }));
  await held.screenshot({ path: join(artifacts, "listener-connecting.png"), fullPage: true });
  await held.close();
  log("before the first sound:", JSON.stringify(before));
  emit({ event: "live", first_sound_ms: first.firstSoundMs, marks: first.marks, engine: first.engine, src: first.src, wav,
    captured_s: rec.samples.length / rec.rate, behind_ms: live.behindMs, paused_state: paused.state,
    after_pause_behind_ms: behind.behindMs, back_button_shown: backButton, back_to_live_behind_ms: back.behindMs,
    stalls: back.stalls, next_seq: back.nextSeq, status_before: before });

  step = "ended";
  await page.waitForSelector('#space-state[data-state="ended"]', { timeout: 30_000 });
  await page.waitForFunction(() => { const a = document.querySelector("#program"); return a && /\/replay\.opus/.test(a.src || ""); });
  await sleep(500);
  await shot("listener-ended.png");
  emit({ event: "done", console_errors: errors });
  clearTimeout(watchdog);
  await ctx.close();
  rmSync(profile, { recursive: true, force: true });
} catch (e) {
  clearTimeout(watchdog);
  await shot("listener-error.png").catch(() => {});
  emit({ event: "error", step, message: String(e.message || e).split("\n")[0], console_errors: errors });
  await ctx.close().catch(() => {});
  process.exit(1);
}
