#!/bin/bash
# A click protocol over many click draws (docs/ACCURACY.md, "Session 28":
# the `spam-only` target held at seed 0 and not at most other seeds; a
# one-sided clicker's trajectory is chaotic, so judge a change over seeds,
# not at one).
#
# Usage: scripts/seed-sweep.sh [PROFILE] [SEEDS] [BIN] [-- extra chaff eval flags]
#   PROFILE  a --profile of `chaff eval --train clicks` (default spam-only)
#   SEEDS    how many seeds, 0..SEEDS-1 (default 10)
#   BIN      chaff binary (default target/release/chaff)
# Env CORPORA limits the corpora (default: the five in target/corpus).
# Prints, per corpus, ham misfiled % per seed and how many exceed 0.5 %,
# then the median (1-ROCA)%, lam% and spam% missed at 0.1 % ham.
set -euo pipefail
cd "$(dirname "$0")/.."
PROFILE=${1:-spam-only}; SEEDS=${2:-10}; BIN=${3:-target/release/chaff}
shift $(( $# < 3 ? $# : 3 )); [ "${1:-}" = "--" ] && shift
CORPORA=${CORPORA:-"spamassassin enron1 enron2 enron3 trec06p"}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for c in $CORPORA; do for s in $(seq 0 $((SEEDS - 1))); do
  echo "$BIN eval --index target/corpus/$c/index --train clicks --profile $PROFILE --seed $s --json $* > $out/$c-$s.json"
done; done | xargs -P "$(nproc)" -I{} sh -c '{}'
python3 - "$out" "$SEEDS" $CORPORA <<'PY'
import json, statistics, sys
out, seeds, corpora = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
for c in corpora:
    runs = [json.load(open(f"{out}/{c}-{s}.json")) for s in range(seeds)]
    ham = [r["ham_misclassified_pct"] for r in runs]
    med = lambda k: statistics.median(r[k] for r in runs)
    print(f"{c:13} ham misfiled % by seed: {' '.join(f'{h:.2f}' for h in ham)}"
          f"  | over 0.5 %: {sum(h > 0.5 for h in ham)} of {seeds}"
          f"  | medians (1-ROCA)% {med('one_minus_roca_pct'):.3f} lam% {med('lam_pct'):.2f}"
          f" 0.1%-point {med('spam_misclassified_at_0_1_ham_pct'):.2f}")
PY
