// The stage, end to end, through the real pages in headless Chromium: a host
// creates a space on the home page, goes live and joins with the mic; two
// invited speakers (440 Hz and 1000 Hz fake microphones) join the stage; a
// listener plays the live stream, asks to speak, is approved, goes on stage,
// is moved back to the audience and listens again; the host ends the space;
// the ended page offers the replay and each speaker's track.
//
//   node stage.mjs BASE_URL ADMIN_TOKEN ARTIFACT_DIR
//
// stdout: one JSON object per line, for the Rust test that drives it:
//   {"event":"live","space":ID,"host_token":...}   host is live and on stage
//   {"event":"on-air","space":ID,...}              host, Ada and Grace connected
//   {"event":"talking","space":ID,"seconds":6}     tones keep going this long
//   {"event":"done",...} (exit 0) or {"event":"error","message":...} (exit 1)
// Progress goes to stderr. Screenshots (390x844) land in ARTIFACT_DIR.
// The ids and data-* attributes used here are listed in README.md.
import { launchWithMic, writeWav } from "./chromium.mjs";
import { playLive } from "./program.mjs";
import { mkdtempSync, mkdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const [base0, adminToken, artifacts] = process.argv.slice(2);
if (!base0 || !adminToken || !artifacts) {
  console.error("usage: node stage.mjs BASE_URL ADMIN_TOKEN ARTIFACT_DIR");
  process.exit(2);
}
const base = base0.replace(/\/+$/, "");
const T0 = Date.now();
const TOTAL_MS = 85_000;
const TALK_SECONDS = 6;
const PHONE = { width: 390, height: 844 };

const emit = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");
const log = (...a) => process.stderr.write(`[${((Date.now() - T0) / 1000).toFixed(1)}s] ${a.join(" ")}\n`);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** A sine tone WAV (freq 0 = silence). */
function writeTone(path, seconds, freq, amplitude) {
  const rate = 48000, samples = new Float32Array(rate * seconds);
  if (freq) for (let i = 0; i < samples.length; i++) samples[i] = amplitude * Math.sin((2 * Math.PI * freq * i) / rate);
  writeWav(path, samples);
}

const browsers = [];
const pages = {}; // name -> page, for screenshots on failure
const consoleErrors = {};
let step = "start";
const at = (name) => { step = name; log("step:", name); };

/** One Chromium process per fake microphone file (the file is per process). */
async function launch(name, wav) {
  const browser = await launchWithMic(wav);
  browsers.push(browser);
  return browser;
}
async function open(browser, name) {
  const context = await browser.newContext({ viewport: PHONE });
  await context.grantPermissions(["microphone"], { origin: base }).catch(() => {});
  const page = await context.newPage();
  page.setDefaultTimeout(10_000);
  consoleErrors[name] = [];
  page.on("console", (m) => { if (m.type() === "error") consoleErrors[name].push(m.text()); });
  page.on("pageerror", (e) => consoleErrors[name].push("pageerror: " + e.message));
  pages[name] = page;
  return page;
}
const shot = (page, file) => page.evaluate(() => window.scrollTo(0, 0)).catch(() => {}).then(() => page.screenshot({ path: join(artifacts, file), fullPage: true }).catch((e) => log("screenshot failed", file, e.message)));

/** Plays the first <audio> (the replay) and waits until it advanced `secs` (or the timeout). */
function playFor(page, secs, timeoutMs) {
  return page.evaluate(async ([secs, timeoutMs]) => {
    const a = document.querySelector("audio#program") || document.querySelector("audio");
    if (!a) return { error: "no <audio> element" };
    const t0 = performance.now();
    let playError = null;
    try {
      await Promise.race([a.play(), new Promise((_, no) => setTimeout(() => no(new Error("play() did not start within 8 s")), 8000))]);
    } catch (e) { playError = String(e); }
    const start = a.currentTime, t1 = performance.now();
    while (a.currentTime - start < secs && performance.now() - t0 < timeoutMs) await new Promise((r) => setTimeout(r, 200));
    return { src: a.currentSrc, start, currentTime: a.currentTime, played: a.currentTime - start, paused: a.paused,
             error: a.error ? a.error.code + " " + a.error.message : null, playError,
             start_ms: Math.round(t1 - t0), wall_ms: Math.round(performance.now() - t1) };
  }, [secs, timeoutMs]);
}

const connectedOnHost = (host) => host.evaluate(() =>
  [...document.querySelectorAll('#stage-members li.member[data-connected="true"]')].map((li) => li.dataset.name));

async function main() {
  mkdirSync(artifacts, { recursive: true });
  const tmp = mkdtempSync(join(tmpdir(), "tribune-stage-"));
  const wav = { silent: join(tmp, "silent.wav"), a440: join(tmp, "tone-440.wav"), a1000: join(tmp, "tone-1000.wav") };
  writeTone(wav.silent, 20, 0, 0);
  writeTone(wav.a440, 20, 440, 0.5);
  writeTone(wav.a1000, 20, 1000, 0.5);

  // Launch the three processes at once: the host's (also used by the listener).
  at("launch");
  const [hostBrowser, adaBrowser, graceBrowser] = await Promise.all([launch("host", wav.silent), launch("ada", wav.a440), launch("grace", wav.a1000)]);

  // 2. The host creates a space on the home page and lands on the console.
  at("create space");
  const host = await open(hostBrowser, "host");
  await host.goto(`${base}/#admin=${encodeURIComponent(adminToken)}`);
  await host.fill("#create-title", "Stage check");
  await host.click("#create-submit");
  await host.waitForURL(/\/spaces\/[a-z0-9-]+\/host$/, { timeout: 10_000 });
  const id = new URL(host.url()).pathname.split("/")[2];
  await host.waitForSelector('#space-state[data-state="scheduled"]');
  const hostToken = await host.evaluate((id) => JSON.parse(localStorage.getItem("tribune.hosts") || "{}")[id], id);
  log("space", id);

  at("go live");
  await host.click("#go-live");
  await host.waitForSelector('#space-state[data-state="live"]');
  at("host joins the stage");
  await host.click("#join-stage");
  await host.waitForSelector('#mic-panel[data-status="connected"]', { timeout: 15_000 });
  emit({ event: "live", space: id, host_token: hostToken });

  // 3. Two invite links from the console; Ada and Grace join with them.
  at("invite speakers");
  const invite = async (name) => {
    await host.fill("#invite-name", name);
    await host.click("#invite-create");
    return host.locator(`.invite[data-name="${name}"] .invite-link`).inputValue();
  };
  const links = { Ada: await invite("Ada"), Grace: await invite("Grace") };
  at("speakers join");
  const speaker = async (browser, name) => {
    const page = await open(browser, name.toLowerCase());
    await page.goto(links[name]);
    await page.waitForSelector('#space-state[data-state="live"]');
    // Music mode: no noise suppression or echo cancellation on a steady tone.
    await page.check("#music-mode");
    await page.click("#join-stage");
    await page.waitForSelector('#mic-panel[data-status="connected"]', { timeout: 15_000 });
    return page;
  };
  const [ada, grace] = await Promise.all([speaker(adaBrowser, "Ada"), speaker(graceBrowser, "Grace")]);
  at("host sees three on stage");
  await host.waitForFunction(() => document.querySelectorAll('#stage-members li.member[data-connected="true"]').length >= 3, null, { timeout: 15_000 });
  const onAir = await connectedOnHost(host);
  emit({ event: "on-air", space: id, members: onAir });
  log("on air:", onAir.join(", "));

  // 4. A listener: home page, then the space; the live stream plays.
  at("listener plays live");
  const listener = await open(hostBrowser, "listener");
  await listener.goto(`${base}/`);
  await listener.waitForSelector(`.space-item[data-id="${id}"][data-state="live"]`);
  await shot(listener, "home.png");
  await listener.click(`.space-item[data-id="${id}"] a.space-link`);
  await listener.waitForURL(new RegExp(`/spaces/${id}$`));
  await listener.waitForFunction(() => { const p = document.querySelector("#program"); return p && (p.dataset.src || "").includes("/live.opus?ticket="); });
  log("listener has the live src");
  const live = await playLive(listener, 2.0, 12_000);
  log("listener live:", JSON.stringify(live));
  if (!(live.played >= 2.0)) throw new Error(`the listener's live audio advanced only ${live.played} s: ${JSON.stringify(live)}`);
  // Wait for the talking indicators before the picture, with a bound.
  await Promise.all([
    ada.waitForSelector('#stage-avatars li[data-talking="true"]', { timeout: 4000 }).catch(() => {}),
    listener.waitForSelector('#stage-avatars li[data-talking="true"]', { timeout: 4000 }).catch(() => {}),
  ]);
  await Promise.all([shot(listener, "listener-live.png"), shot(ada, "speaker-ada.png")]);
  const talkingSeen = await host.evaluate(() => [...document.querySelectorAll('#stage-members li.member[data-talking="true"]')].map((li) => li.dataset.name));

  // Request to speak: ask, the host approves, the listener goes on stage in place.
  at("listener asks to speak");
  await listener.click("#request-speak");
  await listener.fill("#request-name", "Linus");
  await listener.click("#request-send");
  await listener.waitForSelector('#speak-card[data-state="pending"]');
  await host.waitForSelector('#requests li.request[data-name="Linus"]');
  await Promise.all([shot(listener, "listener-request.png"), shot(host, "host-console.png")]);
  at("host approves Linus");
  await host.click('#requests li.request[data-name="Linus"] button[data-action="approve"]');
  at("Linus on stage");
  await listener.waitForSelector('#speak-card[data-state="speaker"] #mic-panel[data-status="connected"]', { timeout: 15_000 });
  await host.waitForSelector('#stage-members li.member[data-name="Linus"][data-connected="true"]', { timeout: 10_000 });
  // The delayed program stops once the stage audio takes over (no echo of yourself).
  const programStopped = await listener.waitForFunction(() => { const p = document.querySelector("#program"); return p && p.dataset.state === "idle"; }, null, { timeout: 6000 })
    .then(() => true, () => false);
  await shot(listener, "listener-speaker.png");
  log("Linus on stage; program paused:", programStopped);

  at("host moves Linus to the audience");
  await host.click('#stage-members li.member[data-name="Linus"] button[data-action="remove"]');
  await listener.waitForSelector('#speak-card[data-state="removed"]', { timeout: 10_000 });
  await host.waitForSelector('#stage-members li.member[data-name="Linus"]', { state: "detached", timeout: 10_000 });
  at("listener plays live again");
  await listener.waitForFunction(() => { const p = document.querySelector("#program"); return p && p.dataset.state !== "idle" && (p.dataset.src || "").includes("/live.opus?ticket="); }, null, { timeout: 10_000 });
  const relisten = await playLive(listener, 1.5, 10_000);
  log("listener live again:", JSON.stringify(relisten));
  if (!(relisten.played >= 1.5)) throw new Error(`after leaving the stage the live audio advanced only ${relisten.played} s: ${JSON.stringify(relisten)}`);

  // 5. Everyone keeps talking while the Rust test decodes live.opus.
  at("talking");
  emit({ event: "talking", space: id, seconds: TALK_SECONDS });
  await sleep(TALK_SECONDS * 1000);
  const beforeEnd = await connectedOnHost(host);

  at("host ends the space");
  host.once("dialog", (d) => d.accept());
  await host.click("#end-space");
  await host.waitForSelector('#space-state[data-state="ended"]');

  // The open listener page turns into the replay by itself.
  at("replay page");
  await listener.waitForFunction(() => { const a = document.querySelector("audio#program") || document.querySelector("audio"); return a && /\/replay\.opus$/.test(a.src); }, null, { timeout: 10_000 });
  const tracks = await listener.waitForFunction(() => {
    const items = document.querySelectorAll("#tracks li.track");
    return items.length >= 3 ? [...items].map((li) => li.dataset.identity) : false;
  }, null, { timeout: 10_000 }).then((h) => h.jsonValue(), () => listener.evaluate(() => [...document.querySelectorAll("#tracks li.track")].map((li) => li.dataset.identity)));
  const replay = await playFor(listener, 1.0, 6000);
  const adaEnded = await ada.waitForSelector('#space-state[data-state="ended"]', { timeout: 5000 }).then(() => true, () => false);
  await shot(listener, "listener-replay.png");

  emit({
    event: "done", space: id,
    listener_played_s: +live.played.toFixed(2),
    relisten_played_s: +relisten.played.toFixed(2),
    replay_played_s: +(replay.played || 0).toFixed(2),
    replay_src: replay.src,
    members_on_air: onAir, members_before_end: beforeEnd, talking_seen: talkingSeen,
    program_paused_on_stage: programStopped, speaker_page_saw_end: adaEnded,
    tracks,
    console_errors: consoleErrors,
    seconds: +((Date.now() - T0) / 1000).toFixed(1),
  });
  rmSync(tmp, { recursive: true, force: true });
}

async function closeAll() {
  await Promise.race([Promise.all(browsers.map((b) => b.close().catch(() => {}))), sleep(5000)]);
}

const watchdog = setTimeout(async () => {
  emit({ event: "error", step, message: `timed out after ${TOTAL_MS / 1000} s (at: ${step})`, console_errors: consoleErrors });
  await closeAll();
  process.exit(1);
}, TOTAL_MS);

try {
  await main();
  clearTimeout(watchdog);
  await closeAll();
  process.exit(0);
} catch (e) {
  clearTimeout(watchdog);
  log("failed at", step, e.stack || e);
  await Promise.all(Object.entries(pages).map(([name, p]) => shot(p, `error-${name}.png`)));
  emit({ event: "error", step, message: `${step}: ${String(e.message || e).split("\n")[0]}`, console_errors: consoleErrors });
  await closeAll();
  process.exit(1);
}
