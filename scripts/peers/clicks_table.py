#!/usr/bin/env python3
"""Markdown tables of the click protocols (docs/ACCURACY.md "Click protocols").

Usage: clicks_table.py CHAFF RESULTS_DIR [--corpora C ...] [--modes M ...] [--filters F ...]
                       [--targets]

CHAFF is the chaff binary (e.g. target/release/chaff): every figure comes
from `chaff metrics --json` on RESULTS_DIR/FILTER-CORPUS-MODE.txt, the same
code for chaff and the peers. One table per corpus, a row per protocol and
filter; missing files are left out.

--targets prints the issue's target table instead: a row per corpus and
protocol with (1-ROCA)% / lam% / spam% missed at 0.1% ham of chaff and of
each peer, and the measures on which chaff is not lower than every peer
that has a results file for that cell (a tie is not lower); then how many
of the cells with any peer's results hold.
"""

import argparse
import json
import os
import subprocess
import sys


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("chaff")
    ap.add_argument("results_dir")
    ap.add_argument("--corpora", nargs="+",
                    default=["spamassassin", "enron1", "enron2", "enron3", "trec06p"])
    ap.add_argument("--modes", nargs="+", default=["every", "diligent", "typical", "spam-only"])
    ap.add_argument("--filters", nargs="+", default=["chaff", "bogofilter", "crm114"])
    ap.add_argument("--targets", action="store_true",
                    help="print the target table (chaff against every peer) instead")
    a = ap.parse_args()
    if a.targets:
        targets(a)
        return
    for corpus in a.corpora:
        rows = []
        for mode in a.modes:
            for name in a.filters:
                j = metrics(a, name, corpus, mode)
                if j is not None:
                    rows.append((mode, name, j))
        if not rows:
            continue
        n = rows[0][2]
        print(f"**{corpus}** ({n['messages']:,} messages: {n['spam']:,} spam, {n['ham']:,} ham)\n")
        print("| protocol | filter | (1-ROCA)% | lam% | spam% missed at 0.1% ham | "
              "spam% missed | ham% misfiled | clicks spam + ham | misfiled % first 100 / 500 |")
        print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
        for mode, name, j in rows:
            clicks = "—" if j["clicks"] is None else f"{j['spam_clicks']:,} + {j['ham_clicks']:,}"
            print(f"| {mode} | {name} | {j['one_minus_roca_pct']:.3f} | {j['lam_pct']:.2f} | "
                  f"{j['spam_misclassified_at_0_1_ham_pct']:.2f} | "
                  f"{j['spam_misclassified_pct']:.2f} | {j['ham_misclassified_pct']:.2f} | "
                  f"{clicks} | {j['misfiled_first_100_pct']:.0f} / "
                  f"{j['misfiled_first_500_pct']:.1f} |")
        print()


def metrics(a, name, corpus, mode):
    """`chaff metrics --json` of one results file, or None if it is missing."""
    path = os.path.join(a.results_dir, f"{name}-{corpus}-{mode}.txt")
    if not os.path.exists(path):
        return None
    run = subprocess.run([a.chaff, "metrics", "--json", path],
                         capture_output=True, text=True)
    if run.returncode != 0:
        # `chaff metrics` refuses what it cannot measure (e.g. a file with
        # one class only) and names the file; pass that on and stop.
        sys.exit(f"clicks_table.py: chaff metrics {path}: {run.stderr.strip()}")
    return json.loads(run.stdout.splitlines()[0])


MEASURES = [("one_minus_roca_pct", "(1-ROCA)%", "{:.3f}"), ("lam_pct", "lam%", "{:.2f}"),
            ("spam_misclassified_at_0_1_ham_pct", "0.1%", "{:.2f}")]


def cell(j):
    """One filter's three ranking measures, or "—" without a results file."""
    return "—" if j is None else " / ".join(f.format(j[k]) for k, _, f in MEASURES)


def targets(a):
    """The issue's first target, cell by cell: chaff lower than every peer
    on each of the three ranking measures (a tie is not lower)."""
    peers = [f for f in a.filters if f != "chaff"]
    print("| corpus | protocol | chaff | " + " | ".join(peers) + " | chaff not lower on |")
    print("|---|---|" + "---|" * (len(peers) + 2))
    held = cells = 0
    for corpus in a.corpora:
        for mode in a.modes:
            own = metrics(a, "chaff", corpus, mode)
            if own is None:
                continue
            theirs = {p: metrics(a, p, corpus, mode) for p in peers}
            if all(j is None for j in theirs.values()):
                verdict = "no peer results"
            else:
                lost = [label for k, label, _ in MEASURES
                        if any(j is not None and own[k] >= j[k] for j in theirs.values())]
                cells += 1
                held += not lost
                verdict = ", ".join(lost) if lost else "—"
            print(f"| {corpus} | {mode} | {cell(own)} | "
                  + " | ".join(cell(theirs[p]) for p in peers) + f" | {verdict} |")
    print(f"\nchaff is lower than every peer on all three measures in {held} of {cells} "
          "cells with peer results.")


if __name__ == "__main__":
    main()
