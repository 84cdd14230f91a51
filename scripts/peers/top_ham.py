#!/usr/bin/env python3
"""The ham a filter ranks highest, and the best lam its ranking allows.

Reads results files (`ID SCORE GOLD JUDGED [TAUGHT]`, as `chaff eval
--results` and the peer replays write them) and prints, for each:

- the N highest-scoring ham, each with the share of spam scoring at or
  below it: the spam missed if the threshold sat just above that ham (so
  the 13th of trec06p's 12,909 ham gives "spam missed at 0.1 % ham");
- the lowest lam% any threshold on the score reaches, with the ham
  misfiled and spam missed there: whether a different cutoff could close
  a lam gap, or only a different ranking can.

Why: the low-false-positive end is decided by a handful of ham; reading
them is the first step of any change meant for it (docs/ACCURACY.md,
"The low-false-positive end of trec06p").

usage: scripts/peers/top_ham.py [-n N] RESULTS...
"""
import argparse
import bisect
import math


def load(path):
    out = []
    with open(path) as f:
        for line in f:
            if line.startswith("#") or not line.strip():
                continue
            fields = line.split()
            out.append((fields[0], float(fields[1]), fields[2]))
    return out


def rate(errors, n):
    # The same zero-rate correction as src/eval/metrics.rs.
    return (errors + 0.5) / (n + 1) if errors in (0, n) else errors / n


def logit(p):
    return math.log(p / (1 - p))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=16, help="ham to list (default 16)")
    ap.add_argument("results", nargs="+")
    args = ap.parse_args()
    for path in args.results:
        rows = load(path)
        ham = sorted((r for r in rows if r[2] == "ham"), key=lambda r: -r[1])
        spam = sorted(r[1] for r in rows if r[2] == "spam")
        print(f"{path}: {len(ham)} ham, {len(spam)} spam")
        for i, (mid, score, _) in enumerate(ham[: args.n]):
            below = bisect.bisect_right(spam, score)
            print(f"  {i + 1:3} {mid:50} {score:10.2f}  spam at or below {100 * below / len(spam):6.2f}%")
        best = None
        for k in range(min(len(ham), 200)):
            missed = bisect.bisect_right(spam, ham[k][1])
            x = (logit(rate(k, len(ham))) + logit(rate(missed, len(spam)))) / 2
            lam = 100 / (1 + math.exp(-x))
            if best is None or lam < best[0]:
                best = (lam, k, 100 * missed / len(spam))
        print("  best lam%% over thresholds: %.3f (%d ham misfiled, %.2f%% spam missed)" % best)


if __name__ == "__main__":
    main()
