// The listener page on the HLS tier, in a fresh headless Chromium: the page
// plays …/hls/master.m3u8 through hls.js (the Opus rendition, through MSE)
// and moves back to the low-latency stream. For server/tests/hls_browser.rs.
//
//   node hls_tier.mjs forced PAGE_URL ARTIFACT_DIR
//     the page opened with ?player=hls; then "Back to low latency" pressed
//   node hls_tier.mjs overflow PAGE_URL ARTIFACT_DIR
//     (a node that admits one listener) page A takes the low-latency slot,
//     page B finds the door full and plays HLS; A leaves; B moves back by
//     itself when the waiting room lets it in
//
// stdout, one JSON object a line: {"event":"hls", engine, codec, behind_ms,
// status, tier_text, wav, ...} while HLS plays, {"event":"back", wav (the
// move, recorded through it), after_wav (3 s on the low-latency stream),
// engine, ...}, then {"event":"done", console_errors} (exit 0) or
// {"event":"error", step, message} (exit 1). Recordings are the page's own
// program output (window.tribuneOutput.master), whichever tier plays.
import { chromium } from "playwright-core";
import { mkdtempSync, rmSync, mkdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { writeWav } from "./chromium.mjs";
import { recordMaster } from "./program.mjs";

const [mode, url, artifacts] = process.argv.slice(2);
if (!["forced", "overflow"].includes(mode) || !url || !artifacts) {
  console.error("usage: node hls_tier.mjs forced|overflow PAGE_URL ARTIFACT_DIR"); process.exit(2);
}
mkdirSync(artifacts, { recursive: true });
const emit = (o) => process.stdout.write(JSON.stringify(o) + "\n");
const T0 = Date.now();
const log = (...a) => process.stderr.write(`[${((Date.now() - T0) / 1000).toFixed(1)}s] ${a.join(" ")}\n`);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
let step = "launch";
const profile = mkdtempSync(join(tmpdir(), "tribune-hls-"));
const ctx = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true, timeout: 30_000,
  args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-quic",
         "--no-first-run", "--disable-component-update", "--disable-sync",
         "--autoplay-policy=no-user-gesture-required"],
  viewport: { width: 390, height: 844 },
});
const errors = [];
const watch = (page, name) => {
  page.setDefaultTimeout(20_000);
  page.on("console", (m) => { if (m.type() === "error") errors.push(`${name}: ${m.text()}`); });
  page.on("pageerror", (e) => errors.push(`${name}: pageerror: ${e.message}`));
};
const stats = (page) => page.evaluate(() => window.tribunePlayer && window.tribunePlayer.stats());
const text = (page, sel) => page.evaluate((s) => { const e = document.querySelector(s); return e && !e.closest("[hidden]") ? e.textContent.trim() : null; }, sel);
const saveWav = (rec, name) => { const path = join(artifacts, name); writeWav(path, Float32Array.from(rec.samples, (v) => v / 32767)); return path; };
// generous bounds: a 2-core machine shared with builds starts Chromium and its media slowly
const playing = (page, tier, secs, timeout) => page.waitForFunction(([tier, secs]) => {
  const p = window.tribunePlayer;
  return p && p.tier === tier && p.state === "playing" && p.played >= secs;
}, [tier, secs], { timeout });
const watchdog = setTimeout(async () => { emit({ event: "error", step, message: `timed out at ${step}` }); await ctx.close().catch(() => {}); process.exit(1); }, 150_000);

/** HLS plays on `page`: what it says, and 4 s of what it plays. */
async function onHls(page, name) {
  step = `${name}: HLS plays`;
  await playing(page, "hls", 1, 45_000);
  step = `${name}: record HLS`;
  const rec = await recordMaster(page, 4);
  if (rec.error) throw new Error(rec.error);
  await page.waitForFunction(() => window.tribunePlayer.behindMs != null, null, { timeout: 10_000 });
  const s = await stats(page);
  await page.screenshot({ path: join(artifacts, `${name}-hls.png`), fullPage: true });
  const ev = { event: "hls", engine: s.engine, tier: s.tier, codec: s.codec, src: s.src, behind_ms: s.behindMs, latency_ms: s.latencyMs,
    stalls: s.stalls, status: await text(page, "#player-status"), sub: await text(page, "#player-sub"),
    tier_text: await text(page, "#tier-text"), back_to_low_shown: await page.isVisible("#back-to-low"),
    program: await page.evaluate(() => ({ ...document.querySelector("#program").dataset })), wav: saveWav(rec, `${name}-hls.wav`) };
  log("on HLS:", JSON.stringify({ ...ev, wav: undefined }));
  emit(ev);
}

/** Records `page` through its move back to the low-latency stream (started by `move`), then 3 s after it. */
async function back(page, name, move) {
  step = `${name}: back to low latency`;
  const recording = recordMaster(page, 1, 60, "window.tribunePlayer.tier === 'low' && window.tribunePlayer.state === 'playing' && window.tribunePlayer.played >= 2");
  await sleep(500);
  await move();
  const rec = await recording;
  if (rec.error) throw new Error(rec.error);
  const s = await stats(page);
  if (s.tier !== "low") throw new Error(`still on ${s.tier} (${s.state}) after 60 s`);
  step = `${name}: record low latency`;
  const after = await recordMaster(page, 3);
  const s2 = await stats(page);
  await page.screenshot({ path: join(artifacts, `${name}-back.png`), fullPage: true });
  const ev = { event: "back", engine: s2.engine, tier: s2.tier, state: s2.state, src: s2.src, behind_ms: s2.behindMs,
    tier_shown: await page.isVisible("#tier"), status: await text(page, "#player-status"),
    wav: saveWav(rec, `${name}-move.wav`), after_wav: saveWav(after, `${name}-low.wav`) };
  log("back:", JSON.stringify({ ...ev, wav: undefined }));
  emit(ev);
}

try {
  if (mode === "forced") {
    step = "open";
    const page = ctx.pages()[0] || await ctx.newPage();
    watch(page, "page");
    const forced = new URL(url);
    forced.searchParams.set("player", "hls"); // before any #token= fragment
    await page.goto(forced.href, { waitUntil: "commit" });
    await onHls(page, "forced");
    await back(page, "forced", () => page.click("#back-to-low"));
  } else {
    step = "open A";
    const a = ctx.pages()[0] || await ctx.newPage();
    watch(a, "A");
    await a.goto(url, { waitUntil: "commit" });
    step = "A plays low latency";
    await playing(a, "low", 1, 45_000);
    step = "open B";
    const b = await ctx.newPage();
    watch(b, "B");
    await b.goto(url, { waitUntil: "commit" });
    await onHls(b, "overflow");
    await back(b, "overflow", () => a.close());
  }
  emit({ event: "done", console_errors: errors });
  clearTimeout(watchdog);
  await ctx.close();
  rmSync(profile, { recursive: true, force: true });
} catch (e) {
  clearTimeout(watchdog);
  for (const [i, p] of ctx.pages().entries()) await p.screenshot({ path: join(artifacts, `error-${mode}-${i}.png`), fullPage: true }).catch(() => {});
  const s = await Promise.all(ctx.pages().map((p) => stats(p).catch(() => null)));
  emit({ event: "error", step, message: String(e.message || e).split("\n")[0], console_errors: errors, players: s });
  await ctx.close().catch(() => {});
  process.exit(1);
}
