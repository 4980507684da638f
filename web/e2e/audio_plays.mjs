// Opens a Tribune space page in headless Chromium, plays its first <audio>
// (#program: the replay, or the live fallback player with ?player=element), and
// prints what the element did as JSON. Usage:
//   node audio_plays.mjs PAGE_URL SECONDS SCREENSHOT.png
import { chromium } from "playwright-core";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const [url, seconds = "4", shot] = process.argv.slice(2);
const profile = mkdtempSync(join(tmpdir(), "tribune-chromium-"));
const browser = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-quic",
         "--no-first-run", "--disable-component-update", "--disable-sync",
         "--autoplay-policy=no-user-gesture-required"],
  viewport: { width: 420, height: 800 },
});
let result;
try {
  const page = await browser.newPage();
  const consoleErrors = [];
  page.on("console", m => { if (m.type() === "error") consoleErrors.push(m.text()); });
  // the space's snapshot answers late, so the page's first admission
  // answer (and the player's start) comes before it draws the player: the
  // order a slow API answer gives, which once left the <audio> silent
  await page.route(/\/api\/spaces\/[^/?]+(\/stage)?$/, async (route) => {
    await new Promise((r) => setTimeout(r, 1500));
    await route.continue();
  });
  await page.goto(url, { waitUntil: "load" });
  // the program's element (#program: the live fallback, or the replay);
  // the page may also hold the HLS tier's own <audio>, idle
  await page.waitForSelector("audio#program", { state: "attached", timeout: 10000 });
  result = await page.evaluate(async (secs) => {
    const a = document.querySelector("audio#program");
    const events = [];
    for (const e of ["playing", "waiting", "stalled", "error", "ended"]) a.addEventListener(e, () => events.push(e));
    let playError = null;
    // play() settles when sound starts: bounded, so a silent stream fails the check instead of hanging
    const timeout = new Promise((_, no) => setTimeout(() => no(new Error("no sound within 20 s")), 20000));
    try { await Promise.race([a.play(), timeout]); } catch (e) { playError = String(e); }
    const start = a.currentTime;
    await new Promise(r => setTimeout(r, secs * 1000));
    return { src: a.currentSrc, start, currentTime: a.currentTime, paused: a.paused, readyState: a.readyState,
             duration: a.duration, error: a.error ? a.error.code + " " + a.error.message : null, playError, events };
  }, Number(seconds));
  result.consoleErrors = consoleErrors;
  if (shot) await page.screenshot({ path: shot, fullPage: true });
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
