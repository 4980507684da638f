"""Table and SVG chart from bench/levels.sh results (no plotting library).

Latency is ingest-to-listener, from the epoch in the stream's OpusTags:
present for every server when the runs were fed by `tribune-load source`
(bench/live.sh's default), only for Tribune with SOURCE=ffmpeg ("–")."""
import glob, json, os, sys

out_dir, svg_path = sys.argv[1], sys.argv[2]
rows = {}
for path in glob.glob(os.path.join(out_dir, "server-*.json")):
    s = json.load(open(path))
    load = json.load(open(path.replace("server-", "load-")))
    rows[(s["server"], s["listeners"])] = (s, load)
servers = ["floor", "tribune", "icecast"]
levels = sorted({n for _, n in rows})
print("| server | listeners | passed | stalls | unanswered | first audio p50 / p99 ms | latency p50 / p99 ms | CPU µs per listener-s | KiB per listener |")
print("|---|---|---|---|---|---|---|---|---|")
for n in levels:
    for srv in servers:
        if (srv, n) not in rows:
            continue
        s, l = rows[(srv, n)]
        t, lat = l["time_to_first_audio_ms"], l["latency_ms"]
        ms = lambda v: "–" if v is None else v
        print(f"| {srv} | {n} | {l['passed']} | {l['stalls']} | {l['unanswered']} | {ms(t['p50'])} / {ms(t['p99'])} | "
              f"{ms(lat['p50'])} / {ms(lat['p99'])} | {s['cpu_us_per_listener_second']:.1f} | {s['rss_kib_per_listener']:.2f} |")

# chart: CPU per listener-second by level, one line per server
W, H, L, B = 640, 360, 60, 40
ymax = max([rows[k][0]["cpu_us_per_listener_second"] for k in rows] + [1]) * 1.15
colors = {"floor": "#888", "tribune": "#2a6ef5", "icecast": "#e5533d"}
def x(i): return L + 20 + i * (W - L - 90) / max(1, len(levels) - 1)
def y(v): return H - B - v / ymax * (H - B - 20)
parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
         f'<rect width="{W}" height="{H}" fill="white"/>',
         f'<text x="{W/2}" y="14" text-anchor="middle">server CPU per listener-second (µs), 32 kbps Opus, 200 ms flush</text>']
for k in range(5):
    v = ymax * k / 4
    parts.append(f'<line x1="{L}" y1="{y(v)}" x2="{W-20}" y2="{y(v)}" stroke="#eee"/>'
                 f'<text x="{L-6}" y="{y(v)+4}" text-anchor="end">{v:.0f}</text>')
for i, n in enumerate(levels):
    parts.append(f'<text x="{x(i)}" y="{H-B+18}" text-anchor="middle">{n} listeners</text>')
for j, srv in enumerate(servers):
    pts = [(x(i), y(rows[(srv, n)][0]["cpu_us_per_listener_second"])) for i, n in enumerate(levels) if (srv, n) in rows]
    if pts:
        parts.append(f'<polyline fill="none" stroke="{colors[srv]}" stroke-width="2" points="{" ".join(f"{a:.1f},{b:.1f}" for a, b in pts)}"/>')
        parts += [f'<circle cx="{a:.1f}" cy="{b:.1f}" r="3" fill="{colors[srv]}"/>' for a, b in pts]
    parts.append(f'<text x="{L+10+j*110}" y="{34}" fill="{colors[srv]}">■ {srv}</text>')
parts.append("</svg>")
open(svg_path, "w").write("\n".join(parts))
print(f"\nchart: {svg_path}")
