#!/usr/bin/env python3
"""Spam missed, ham misfiled and lam% across cutoffs, under a ham ceiling.

Reads results files (`ID SCORE GOLD JUDGED [TAUGHT]`, as `chaff eval
--results` and the peer replays write them; a message is called spam iff
its score is at or above the cutoff) and prints, for each:

- the filter's own verdict (the JUDGED column): spam missed %, ham
  misfiled %, lam%;
- for each ham-misfiled ceiling (0, 0.1, 0.2, 0.5, 1 %): the cutoff on the
  score with the fewest spam missed whose ham misfiled stays within the
  ceiling — where a provider holding that ceiling would put the spam
  folder's cutoff — and lam% there;
- the lowest lam% over all cutoffs, and the ham misfiled it costs.

Why: lam% is measured at a filter's own verdict, and it rewards a cutoff
that trades ham for spam; what a provider fears is ham in the spam folder,
so the ceiling on ham misfiled decides where the cutoff goes, and lam% is
only comparable between filters held to the same ceiling
(docs/ACCURACY.md, "Session 11").

usage: scripts/peers/cutoffs.py [--tsv] RESULTS...
"""
import argparse
import math

CEILINGS = [0.0, 0.1, 0.2, 0.5, 1.0]


def load(path):
    out = []
    with open(path) as f:
        for line in f:
            if line.startswith("#") or not line.strip():
                continue
            fields = line.split()
            out.append((float(fields[1]), fields[2] == "spam", fields[3] == "spam"))
    return out


def rate(errors, n):
    # The same zero-rate correction as src/eval/metrics.rs.
    return (errors + 0.5) / (n + 1) if errors in (0, n) else errors / n


def logit(p):
    return math.log(p / (1 - p))


def lam(ham_err, ham, spam_err, spam):
    x = (logit(rate(ham_err, ham)) + logit(rate(spam_err, spam))) / 2
    return 100 / (1 + math.exp(-x))


def points(rows):
    """(cutoff, ham misfiled, spam missed) for every distinct cutoff, from
    above the highest score (nothing called spam) down to the lowest."""
    rows = sorted(rows, key=lambda r: -r[0])
    spam = sum(1 for r in rows if r[1])
    out = [(math.inf, 0, spam)]
    ham_err, caught = 0, 0
    i = 0
    while i < len(rows):
        s = rows[i][0]
        while i < len(rows) and rows[i][0] == s:
            if rows[i][1]:
                caught += 1
            else:
                ham_err += 1
            i += 1
        out.append((s, ham_err, spam - caught))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tsv", action="store_true", help="one line per file")
    ap.add_argument("results", nargs="+")
    args = ap.parse_args()
    for path in args.results:
        rows = load(path)
        ham = sum(1 for r in rows if not r[1])
        spam = len(rows) - ham
        v_ham = sum(1 for r in rows if not r[1] and r[2])
        v_spam = sum(1 for r in rows if r[1] and not r[2])
        pts = points(rows)
        cells = [f"{100 * v_spam / spam:.2f}/{100 * v_ham / ham:.2f}/{lam(v_ham, ham, v_spam, spam):.2f}"]
        lines = []
        for c in CEILINGS:
            ok = [p for p in pts if 100 * p[1] / ham <= c + 1e-12]
            best = min(ok, key=lambda p: (p[2], p[1]))
            at = lam(best[1], ham, best[2], spam)
            cells.append(f"{100 * best[2] / spam:.2f}/{at:.2f}")
            lines.append(
                f"  ham ≤ {c:4.1f} %: fewest spam missed {100 * best[2] / spam:6.2f} % "
                f"(cutoff {best[0]:.3g}, {best[1]} ham misfiled), lam% there {at:.3f}"
            )
        m = min(pts, key=lambda p: lam(p[1], ham, p[2], spam))
        cells.append(f"{lam(m[1], ham, m[2], spam):.2f}@{100 * m[1] / ham:.2f}")
        if args.tsv:
            print("\t".join([path] + cells))
            continue
        print(f"{path}: {ham} ham, {spam} spam")
        print(
            f"  own verdict: spam missed {100 * v_spam / spam:.2f} %, ham misfiled "
            f"{100 * v_ham / ham:.2f} %, lam% {lam(v_ham, ham, v_spam, spam):.3f}"
        )
        print("\n".join(lines))
        print(
            f"  lowest lam% at any cutoff: {lam(m[1], ham, m[2], spam):.3f} "
            f"(ham misfiled {100 * m[1] / ham:.2f} %, spam missed {100 * m[2] / spam:.2f} %, cutoff {m[0]:.3g})"
        )


if __name__ == "__main__":
    main()
