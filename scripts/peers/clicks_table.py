#!/usr/bin/env python3
"""Markdown tables of the click protocols (docs/ACCURACY.md "Click protocols").

Usage: clicks_table.py CHAFF RESULTS_DIR [--corpora C ...] [--modes M ...] [--filters F ...]

CHAFF is the chaff binary (e.g. target/release/chaff): every figure comes
from `chaff metrics --json` on RESULTS_DIR/FILTER-CORPUS-MODE.txt, the same
code for chaff and the peers. One table per corpus, a row per protocol and
filter; missing files are left out.
"""

import argparse
import json
import os
import subprocess


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("chaff")
    ap.add_argument("results_dir")
    ap.add_argument("--corpora", nargs="+",
                    default=["spamassassin", "enron1", "enron2", "enron3", "trec06p"])
    ap.add_argument("--modes", nargs="+", default=["every", "diligent", "typical", "spam-only"])
    ap.add_argument("--filters", nargs="+", default=["chaff", "bogofilter", "crm114"])
    a = ap.parse_args()
    for corpus in a.corpora:
        rows = []
        for mode in a.modes:
            for name in a.filters:
                path = os.path.join(a.results_dir, f"{name}-{corpus}-{mode}.txt")
                if not os.path.exists(path):
                    continue
                out = subprocess.run([a.chaff, "metrics", "--json", path], check=True,
                                     capture_output=True, text=True).stdout
                rows.append((mode, name, json.loads(out.splitlines()[0])))
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


if __name__ == "__main__":
    main()
