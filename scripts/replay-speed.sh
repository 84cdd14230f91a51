#!/usr/bin/env bash
# `chaff eval` replay speed against the fastest peer, measured in one run.
#
# This machine is a shared 2-core VM whose speed moves by 15-20% between
# minutes, so a speed measured now and a peer's measured yesterday do not
# compare. This alternates, ROUNDS times (default 3): one crm114 replay of
# the SpamAssassin corpus, every message learned (scripts/peers/replay.py,
# the replay docs/ACCURACY.md reports), then RUNS (default 5) `chaff eval`
# replays of each chaff binary given. It prints each one's median
# messages/s and its ratio to crm114's median in the same run.
#
#   scripts/replay-speed.sh                              # target/release/chaff
#   scripts/replay-speed.sh /tmp/chaff-old target/release/chaff
#
# Needs crm114 (scripts/peers/install.sh) and target/corpus/spamassassin.
set -euo pipefail
cd "$(dirname "$0")/.."
index=target/corpus/spamassassin/index
rounds=${ROUNDS:-3}
runs=${RUNS:-5}
[ $# -gt 0 ] || set -- target/release/chaff
out=$(mktemp)
trap 'rm -f "$out" "$out.crm"' EXIT
for round in $(seq 1 "$rounds"); do
  python3 scripts/peers/replay.py crm114 "$index" every "$out.crm" 2>&1 |
    sed -n 's/.*messages in .* = \([0-9.]*\) messages\/s.*/crm114 \1/p' >>"$out"
  for _ in $(seq 1 "$runs"); do
    for bin in "$@"; do
      "$bin" eval --index "$index" | awk -v b="$bin" '/^speed/ {print b, $2}' >>"$out"
    done
  done
  echo "round $round of $rounds done" >&2
done
python3 - "$out" <<'PY'
import collections, statistics, sys
runs = collections.defaultdict(list)
for line in open(sys.argv[1]):
    name, speed = line.rsplit(maxsplit=1)
    runs[name].append(float(speed))
peer = statistics.median(runs.pop("crm114"))
print(f"crm114 (every message learned): median {peer:.1f} messages/s")
for name, speeds in runs.items():
    m = statistics.median(speeds)
    print(f"{name}: median {m:,.0f} messages/s = {m / peer:.1f}x crm114 "
          f"(runs {', '.join(f'{s:,.0f}' for s in sorted(speeds))})")
PY
