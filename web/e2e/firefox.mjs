// Debian's Firefox ESR driven through WebDriver BiDi, with no npm package:
// node's WebSocket (node 20: run with --experimental-websocket) speaks the
// protocol directly. Enough for web/e2e/listen.mjs: open a page, evaluate
// functions in it, take screenshots, collect console errors.
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

/** Plain JS values out of a BiDi RemoteValue. */
function fromRemote(v) {
  if (!v) return undefined;
  switch (v.type) {
    case "undefined": return undefined;
    case "null": return null;
    case "string": case "boolean": return v.value;
    case "number": return typeof v.value === "string" ? Number(v.value) : v.value;
    case "array": return (v.value || []).map(fromRemote);
    case "object": return Object.fromEntries((v.value || []).map(([k, x]) => [typeof k === "string" ? k : fromRemote(k), fromRemote(x)]));
    default: return v.value;
  }
}
function toLocal(x) {
  if (x === undefined) return { type: "undefined" };
  if (x === null) return { type: "null" };
  if (typeof x === "number") return { type: "number", value: Number.isFinite(x) ? x : String(x) };
  if (typeof x === "string" || typeof x === "boolean") return { type: typeof x, value: x };
  if (Array.isArray(x)) return { type: "array", value: x.map(toLocal) };
  return { type: "object", value: Object.entries(x).map(([k, v]) => [k, toLocal(v)]) };
}

export async function launchFirefox({ viewport, assets } = {}) {
  if (assets) throw new Error("--assets is for Chromium only (Firefox plays the binary's embedded page)");
  if (typeof WebSocket !== "function") throw new Error("node has no WebSocket: run node with --experimental-websocket (node 20) or use node 22+");
  const profile = mkdtempSync(join(tmpdir(), "tribune-firefox-"));
  writeFileSync(join(profile, "user.js"), [
    'user_pref("media.autoplay.default", 0);', 'user_pref("media.autoplay.block-webaudio", false);', 'user_pref("media.autoplay.blocking_policy", 0);',
    'user_pref("browser.shell.checkDefaultBrowser", false);', 'user_pref("datareporting.policy.dataSubmissionEnabled", false);',
    'user_pref("toolkit.telemetry.reportingpolicy.firstRun", false);', 'user_pref("browser.aboutwelcome.enabled", false);',
    'user_pref("app.update.auto", false);', 'user_pref("network.http.http3.enable", false);',
  ].join("\n"));
  const bin = process.env.FIREFOX || "/usr/bin/firefox-esr";
  const proc = spawn(bin, ["--headless", "--no-remote", "--profile", profile, "--remote-debugging-port", "0", "about:blank"],
    { stdio: ["ignore", "ignore", "pipe"], env: { ...process.env, MOZ_HEADLESS: "1" } });
  const wsUrl = await new Promise((ok, no) => {
    let err = "";
    const t = setTimeout(() => no(new Error("Firefox did not start its BiDi server in 30 s: " + err.slice(-500))), 30_000);
    proc.stderr.on("data", (d) => {
      err += d;
      const m = err.match(/WebDriver BiDi listening on (ws:\/\/\S+)/);
      if (m) { clearTimeout(t); ok(m[1]); }
    });
    proc.on("exit", (c) => { clearTimeout(t); no(new Error(`Firefox exited (${c}): ${err.slice(-500)}`)); });
  });
  const ws = new WebSocket(wsUrl.replace(/\/?$/, "") + "/session");
  await new Promise((ok, no) => { ws.onopen = ok; ws.onerror = () => no(new Error("BiDi connection failed")); });
  let id = 0;
  const waiting = new Map(), errors = [];
  ws.onmessage = (m) => {
    const msg = JSON.parse(m.data);
    if (msg.id != null && waiting.has(msg.id)) {
      const { ok, no } = waiting.get(msg.id); waiting.delete(msg.id);
      if (msg.type === "error") no(new Error(`${msg.error}: ${msg.message}`)); else ok(msg.result);
    } else if (msg.method === "log.entryAdded" && msg.params.level === "error") errors.push(msg.params.text);
  };
  const send = (method, params = {}) => new Promise((ok, no) => { const n = ++id; waiting.set(n, { ok, no }); ws.send(JSON.stringify({ id: n, method, params })); });
  await send("session.new", { capabilities: { alwaysMatch: { acceptInsecureCerts: true } } });
  await send("session.subscribe", { events: ["log.entryAdded"] });
  const tree = await send("browsingContext.getTree", {});
  const context = tree.contexts[0].context;
  if (viewport) await send("browsingContext.setViewport", { context, viewport });
  return {
    goto: (url) => send("browsingContext.navigate", { context, url, wait: "none" }),
    eval: async (fn, arg) => {
      const r = await send("script.callFunction", { functionDeclaration: fn.toString(), awaitPromise: true, target: { context },
        arguments: arg === undefined ? [] : [toLocal(arg)], resultOwnership: "none" });
      if (r.type === "exception") throw new Error(r.exceptionDetails.text);
      return fromRemote(r.result);
    },
    shot: async (path) => {
      const r = await send("browsingContext.captureScreenshot", { context, origin: "document" });
      writeFileSync(path, Buffer.from(r.data, "base64"));
    },
    errors,
    close: async () => {
      await Promise.race([send("browser.close", {}).catch(() => {}), new Promise((r) => setTimeout(r, 3000))]);
      try { ws.close(); } catch { /* closed */ }
      if (proc.exitCode == null) proc.kill("SIGKILL");
      await new Promise((r) => (proc.exitCode != null ? r() : proc.on("exit", r)));
      rmSync(profile, { recursive: true, force: true });
    },
  };
}
