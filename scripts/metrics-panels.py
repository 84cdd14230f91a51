#!/usr/bin/env python3
"""Draws the main panels of docs/grafana-chaff.json from real scrapes.

    scripts/metrics-panels.py SCRAPE_DIR OUT.svg

SCRAPE_DIR holds one `/metrics` scrape per file named by its Unix time
(scripts/metrics-cost.sh writes them, one a second). Grafana does not run
here, so this computes the dashboard's PromQL by hand on consecutive scrapes
(rate = difference / time; quantiles by linear interpolation inside the
bucket, as histogram_quantile does) and writes a plain SVG.
"""
import os
import re
import sys

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$')


def parse(path):
    out = {}
    for line in open(path):
        m = SAMPLE.match(line.strip())
        if m:
            labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
            out.setdefault(m.group(1), []).append((labels, float(m.group(3))))
    return out


def total(scrape, name, **want):
    return sum(v for l, v in scrape.get(name, []) if all(l.get(k) == x for k, x in want.items()))


def quantile(q, buckets):
    """buckets: [(le, cumulative count)] sorted, +Inf last."""
    n = buckets[-1][1]
    if n <= 0:
        return None
    rank, prev_le, prev_c = q * n, 0.0, 0.0
    for le, c in buckets:
        if c >= rank:
            if le == float("inf"):
                return prev_le
            return prev_le + (le - prev_le) * (rank - prev_c) / max(c - prev_c, 1e-9)
        prev_le, prev_c = le, c
    return prev_le


def series(scrapes, step):
    """[(t, value)] from step(prev, cur, dt) over consecutive scrapes."""
    out = []
    for (t0, a), (t1, b) in zip(scrapes, scrapes[1:]):
        v = step(a, b, t1 - t0)
        if v is not None:
            out.append((t1 - scrapes[0][0], v))
    return out


def rate(name, **want):
    return lambda a, b, dt: (total(b, name, **want) - total(a, name, **want)) / dt


def chart(x0, y0, w, h, title, lines, unit):
    colors = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd"]
    pts = [v for _, s in lines for _, v in s]
    ts = [t for _, s in lines for t, _ in s]
    top = max(pts + [1e-9]) * 1.15
    tmax = max(ts + [1])
    sx = lambda t: x0 + 50 + (w - 60) * t / tmax
    sy = lambda v: y0 + h - 30 - (h - 60) * v / top
    svg = [f'<rect x="{x0}" y="{y0}" width="{w}" height="{h}" fill="#fff" stroke="#ccc"/>',
           f'<text x="{x0 + 10}" y="{y0 + 18}" font-size="14" font-weight="bold">{title}</text>']
    for i in range(5):
        v = top * i / 4
        svg.append(f'<line x1="{x0 + 50}" x2="{x0 + w - 10}" y1="{sy(v):.1f}" y2="{sy(v):.1f}" stroke="#eee"/>')
        svg.append(f'<text x="{x0 + 46}" y="{sy(v) + 4:.1f}" font-size="10" text-anchor="end">{fmt(v, unit)}</text>')
    svg.append(f'<text x="{x0 + w - 10}" y="{y0 + h - 8}" font-size="10" text-anchor="end">seconds into the run</text>')
    for i, (label, s) in enumerate(lines):
        c = colors[i % len(colors)]
        if s:
            path = " ".join(f"{sx(t):.1f},{sy(v):.1f}" for t, v in s)
            svg.append(f'<polyline fill="none" stroke="{c}" stroke-width="2" points="{path}"/>')
        svg.append(f'<text x="{x0 + 60 + 150 * i}" y="{y0 + 36}" font-size="11" fill="{c}">■ {label}</text>')
    return svg


def fmt(v, unit):
    if unit == "s":
        return f"{v * 1000:.1f} ms"
    return f"{v:,.0f}" if v >= 10 else f"{v:.2f}"


def main():
    d, out = sys.argv[1], sys.argv[2]
    files = sorted(f for f in os.listdir(d) if f.endswith(".txt"))
    scrapes = [(float(f[:-4]), parse(os.path.join(d, f))) for f in files]
    scrapes = [s for s in scrapes if s[1]]
    score = dict(grpc_service="chaff.v1.Chaff", grpc_method="Score")

    def quant(q):
        def step(a, b, dt):
            les = sorted({l["le"] for l, _ in b.get("grpc_server_handling_seconds_bucket", [])
                          if l.get("grpc_method") == "Score"},
                         key=lambda x: float("inf") if x == "+Inf" else float(x))
            bk = [(float("inf") if le == "+Inf" else float(le),
                   total(b, "grpc_server_handling_seconds_bucket", le=le, **score)
                   - total(a, "grpc_server_handling_seconds_bucket", le=le, **score)) for le in les]
            return quantile(q, bk) if bk else None
        return step

    verdicts = sorted({l["verdict"] for _, s in scrapes for l, _ in s.get("chaff_scores_total", [])})
    panels = [
        ("Score calls/s (grpc_server_handled_total, OK)",
         [("Score", series(scrapes, rate("grpc_server_handled_total", grpc_code="OK", **score)))], ""),
        ("Score handling time (grpc_server_handling_seconds)",
         [("p50", series(scrapes, quant(0.5))), ("p99", series(scrapes, quant(0.99)))], "s"),
        ("Scores/s by verdict (chaff_scores_total)",
         [(v, series(scrapes, rate("chaff_scores_total", verdict=v))) for v in verdicts], ""),
        ("Decision log queue depth (chaff_decision_log_queue_depth)",
         [("queued", series(scrapes, lambda a, b, dt: total(b, "chaff_decision_log_queue_depth")))], ""),
    ]
    w, h = 520, 260
    svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{2 * w + 30}" height="{2 * h + 30}" '
           f'font-family="sans-serif"><rect width="100%" height="100%" fill="#f7f7f7"/>']
    for i, (title, lines, unit) in enumerate(panels):
        svg += chart(10 + (i % 2) * (w + 10), 10 + (i // 2) * (h + 10), w, h, title, lines, unit)
    svg.append("</svg>")
    open(out, "w").write("\n".join(svg) + "\n")
    print(f"{out}: {len(scrapes)} scrapes")


if __name__ == "__main__":
    main()
