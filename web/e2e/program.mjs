// The listener page's program player as web/e2e sees it: #program carries
// data-engine (webaudio | element), data-state, data-src, data-played
// (seconds of audio played), data-first-sound-ms, data-behind-ms,
// data-stalls, data-stall-ms, data-next-seq; window.tribunePlayer.stats()
// has the same and more. Works in any playwright page.

/** Waits until the live program has played `secs` more (or timeoutMs); returns what it saw. */
export function playLive(page, secs, timeoutMs) {
  return page.evaluate(async ([secs, timeoutMs]) => {
    const t0 = performance.now();
    const el = () => document.querySelector("#program");
    while (!(el() && el().dataset.src && el().dataset.src.includes("/live.opus")) && performance.now() - t0 < timeoutMs) await new Promise((r) => setTimeout(r, 50));
    const p = el();
    if (!p) return { error: "no #program element" };
    const played = () => Number(p.dataset.played || 0);
    const start = played();
    while (played() - start < secs && performance.now() - t0 < timeoutMs) await new Promise((r) => setTimeout(r, 100));
    return { engine: p.dataset.engine, src: p.dataset.src, state: p.dataset.state, played: played() - start,
             firstSoundMs: Number(p.dataset.firstSoundMs), behindMs: p.dataset.behindMs == null ? null : Number(p.dataset.behindMs),
             stalls: Number(p.dataset.stalls || 0), wall_ms: Math.round(performance.now() - t0) };
  }, [secs, timeoutMs]);
}

/** In the page: records `secs` of the Web Audio player's output (after its gain node) as 16-bit samples. */
export async function recordInPage(secs) {
  const p = window.tribunePlayer;
  if (!p || !p.ctx || !p.output) return { error: "no Web Audio player" };
  const ctx = p.ctx, want = Math.round(secs * ctx.sampleRate), chunks = [];
  let got = 0;
  const tap = ctx.createScriptProcessor(4096, 1, 1);
  const sink = ctx.createGain(); sink.gain.value = 0;
  await new Promise((done) => {
    tap.onaudioprocess = (e) => {
      if (got >= want) return;
      const x = e.inputBuffer.getChannelData(0);
      chunks.push(Array.from(x.subarray(0, Math.min(x.length, want - got)), (v) => Math.round(v * 32767)));
      got += x.length;
      if (got >= want) done();
    };
    p.output.connect(tap); tap.connect(sink); sink.connect(ctx.destination);
  });
  p.output.disconnect(tap); tap.disconnect(); sink.disconnect();
  return { rate: ctx.sampleRate, samples: chunks.flat() };
}
export const recordProgram = (page, secs) => page.evaluate(recordInPage, secs);

/**
 * In the page: records the program output (`window.tribuneOutput.master`,
 * whichever tier plays) as 16-bit samples, for at least `minSecs` and until
 * `until` (a function body evaluated in the page) is true, at most `maxSecs`.
 */
export async function recordMasterInPage([minSecs, maxSecs, until]) {
  const out = window.tribuneOutput;
  if (!out) return { error: "no program output" };
  const done = until ? new Function("return (" + until + ")") : () => true;
  const ctx = out.ctx, chunks = [];
  let got = 0;
  const tap = ctx.createScriptProcessor(4096, 1, 1);
  const sink = ctx.createGain(); sink.gain.value = 0;
  await new Promise((finish) => {
    tap.onaudioprocess = (e) => {
      const x = e.inputBuffer.getChannelData(0);
      chunks.push(Array.from(x, (v) => Math.round(v * 32767)));
      got += x.length;
      if (got >= maxSecs * ctx.sampleRate || (got >= minSecs * ctx.sampleRate && done())) { tap.onaudioprocess = null; finish(); }
    };
    out.master.connect(tap); tap.connect(sink); sink.connect(ctx.destination);
  });
  out.master.disconnect(tap); tap.disconnect(); sink.disconnect();
  return { rate: ctx.sampleRate, samples: chunks.flat() };
}
export const recordMaster = (page, minSecs, maxSecs = minSecs, until = null) => page.evaluate(recordMasterInPage, [minSecs, maxSecs, until]);
