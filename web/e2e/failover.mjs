// A listener page whose node goes away: opens the listener page of a live
// space on one node of a fleet, waits until it plays, says so, then waits
// for the test to kill that node and for the page to go on from another
// node of the fleet. For server/tests/fleet.rs.
//
//   node failover.mjs PAGE_URL
//
// stdout, one JSON object a line: {"event":"playing", src, nextSeq} (the
// test then kills the node), then {"event":"resumed", before, after, wav}
// once the page has played 3 s more after resuming (before/after are the
// player's stats), or {"event":"error","message"} (exit 1).
import { chromium } from "playwright-core";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { writeWav } from "./chromium.mjs";
import { recordProgram } from "./program.mjs";

const [url] = process.argv.slice(2);
if (!url) { console.error("usage: node failover.mjs PAGE_URL"); process.exit(2); }
const emit = (o) => process.stdout.write(JSON.stringify(o) + "\n");
let step = "launch";
const profile = mkdtempSync(join(tmpdir(), "tribune-failover-"));
const ctx = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true, timeout: 30_000,
  args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-quic",
         "--no-first-run", "--disable-component-update", "--disable-sync",
         "--autoplay-policy=no-user-gesture-required"],
});
const page = ctx.pages()[0] || await ctx.newPage();
page.setDefaultTimeout(20_000);
const stats = () => page.evaluate(() => window.tribunePlayer && window.tribunePlayer.stats());
const watchdog = setTimeout(async () => { emit({ event: "error", step, message: `timed out at ${step}` }); await ctx.close().catch(() => {}); process.exit(1); }, 90_000);

try {
  step = "open";
  await page.goto(url, { waitUntil: "commit" });
  step = "first sound";
  await page.waitForFunction(() => window.tribunePlayer && window.tribunePlayer.played > 1, null, { timeout: 30_000 });
  const before = await stats();
  emit({ event: "playing", src: before.src, nextSeq: before.nextSeq });

  step = "resume";
  await page.waitForFunction(() => window.tribunePlayer.stats().resumes > 0, null, { timeout: 30_000 });
  const at = await stats();
  step = "play on";
  await page.waitForFunction((p) => window.tribunePlayer.played > p + 3, at.played, { timeout: 20_000 });
  step = "record";
  const rec = await recordProgram(page, 2);
  if (rec.error) throw new Error(rec.error);
  const wav = join(tmpdir(), `tribune-failover-${process.pid}.wav`);
  writeWav(wav, Float32Array.from(rec.samples, (v) => v / 32767));
  const after = await stats();
  emit({ event: "resumed", before, at, after, wav });
} catch (e) {
  emit({ event: "error", step, message: String(e && e.message || e) });
  await ctx.close().catch(() => {});
  rmSync(profile, { recursive: true, force: true });
  process.exit(1);
}
clearTimeout(watchdog);
await ctx.close().catch(() => {});
rmSync(profile, { recursive: true, force: true });
