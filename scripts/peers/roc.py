#!/usr/bin/env python3
"""Draw the low-false-positive end of the ROC curve of chaff and the peers.

Usage: roc.py RESULTS_DIR OUT_DIR [--corpora C ...] [--modes M ...] [--filters F ...]

Reads RESULTS_DIR/FILTER-CORPUS-MODE.txt (the results files `chaff eval
--results` and scripts/peers/replay.py write: "ID SCORE GOLD JUDGED [TAUGHT]")
and writes OUT_DIR/roc-CORPUS.png: one panel per protocol, one curve per
filter. x: ham misfiled % (log scale, 0.01 % to 10 %); y: spam missed %
(log scale). A point (x, y) of a curve is a threshold t: x = ham scoring at
or above t, y = spam scoring below t -- the same tie rule as
`spam_missed_at_ham_rate` in src/eval/metrics.rs. The dot on each curve is
the filter's own verdict (JUDGED), the dotted line x = 0.1 % the yardstick
"spam missed at 0.1 % ham misfiled".

Needs matplotlib: Debian's python3-matplotlib (installed with apt-get if
missing; the script then runs itself with /usr/bin/python3).
"""

import argparse
import os
import subprocess
import sys


def ensure_matplotlib():
    try:
        import matplotlib  # noqa: F401
        return
    except ImportError:
        pass
    system = "/usr/bin/python3"
    probe = [system, "-c", "import matplotlib"]
    if os.path.exists(system) and subprocess.run(probe, capture_output=True).returncode != 0:
        sudo = [] if os.geteuid() == 0 else ["sudo"]
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(sudo + ["apt-get", "install", "-y", "--no-install-recommends",
                               "python3-matplotlib"], check=True, env=env)
    if os.path.realpath(sys.executable) != os.path.realpath(system):
        os.execv(system, [system] + sys.argv)
    sys.exit("roc.py: matplotlib is missing (apt-get install python3-matplotlib)")


def read_results(path):
    """(score, is_spam, judged_spam) per message."""
    out = []
    with open(path) as f:
        for line in f:
            if not line.strip() or line.startswith("#"):
                continue
            fields = line.split()
            out.append((float(fields[1]), fields[2] == "spam", fields[3] == "spam"))
    return out


def roc(rows):
    """[(ham misfiled %, spam missed %)] at every distinct score as the
    threshold, strictest first, starting from 'nothing filed as spam'."""
    nspam = sum(1 for _, s, _ in rows if s)
    nham = len(rows) - nspam
    rows = sorted(rows, key=lambda r: -r[0])
    pts = [(0.0, 100.0)]
    ham_above = spam_above = 0
    i = 0
    while i < len(rows):
        j = i
        while j < len(rows) and rows[j][0] == rows[i][0]:
            if rows[j][1]:
                spam_above += 1
            else:
                ham_above += 1
            j += 1
        pts.append((100.0 * ham_above / nham, 100.0 * (nspam - spam_above) / nspam))
        i = j
    return pts


def verdict_point(rows):
    nspam = sum(1 for _, s, _ in rows if s)
    nham = len(rows) - nspam
    hm = sum(1 for _, s, j in rows if not s and j)
    sm = sum(1 for _, s, j in rows if s and not j)
    return 100.0 * hm / nham, 100.0 * sm / nspam


STYLE = {"chaff": ("C0", "-"), "bogofilter": ("C1", "--"), "crm114": ("C2", "-."),
         "spamassassin": ("C3", ":"), "rspamd": ("C4", ":")}


def main():
    ensure_matplotlib()
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results_dir")
    ap.add_argument("out_dir")
    ap.add_argument("--corpora", nargs="+",
                    default=["spamassassin", "enron1", "enron2", "enron3", "trec06p"])
    ap.add_argument("--modes", nargs="+", default=["every", "diligent", "typical", "spam-only"])
    ap.add_argument("--filters", nargs="+", default=["chaff", "bogofilter", "crm114"])
    a = ap.parse_args()
    os.makedirs(a.out_dir, exist_ok=True)
    for corpus in a.corpora:
        fig, axes = plt.subplots(2, 2, figsize=(8, 6.4), sharex=True, sharey=True)
        drawn = False
        for ax, mode in zip(axes.flat, a.modes):
            for name in a.filters:
                path = os.path.join(a.results_dir, f"{name}-{corpus}-{mode}.txt")
                if not os.path.exists(path):
                    continue
                rows = read_results(path)
                color, dash = STYLE.get(name, ("k", "-"))
                xs, ys = zip(*roc(rows))
                # Clip to the plotted range; zero misses draw at the floor.
                ax.step([max(x, 1e-3) for x in xs], [max(y, 0.01) for y in ys], where="post",
                        color=color, linestyle=dash, linewidth=1.3, label=name)
                vx, vy = verdict_point(rows)
                ax.plot([max(vx, 0.01)], [max(vy, 0.01)], "o", color=color, markersize=4)
                drawn = True
            ax.axvline(0.1, color="grey", linestyle=":", linewidth=0.8)
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlim(0.01, 10)
            ax.set_ylim(0.05, 150)
            ax.set_title(f"train {mode}", fontsize=10)
            ax.grid(True, which="major", linewidth=0.3)
        if not drawn:
            plt.close(fig)
            continue
        for ax in axes[1]:
            ax.set_xlabel("ham misfiled % (log)")
        for ax in axes[:, 0]:
            ax.set_ylabel("spam missed % (log)")
        # One legend for the figure: a filter may be missing from a panel.
        handles = {}
        for ax in axes.flat:
            for h, label in zip(*ax.get_legend_handles_labels()):
                handles.setdefault(label, h)
        fig.legend(handles.values(), handles.keys(), fontsize=8, loc="lower center",
                   ncol=len(handles), frameon=False)
        fig.suptitle(f"{corpus}: ROC, low-false-positive end (dot: own verdict)", fontsize=11)
        fig.tight_layout(rect=(0, 0.04, 1, 1))
        out = os.path.join(a.out_dir, f"roc-{corpus}.png")
        fig.savefig(out, dpi=80)
        plt.close(fig)
        print(f"{out}: {os.path.getsize(out)} bytes")


if __name__ == "__main__":
    main()
