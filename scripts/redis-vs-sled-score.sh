#!/usr/bin/env bash
# Score throughput of one chaff replica over a Redis Cluster against one
# over sled, in the same run (docs/SCALING.md, "Score throughput"): both
# servers are started from one binary, their users trained first, then
# `chaff loadtest` Score rounds alternate between them; prints each round
# and the medians.
#
#   scripts/redis-vs-sled-score.sh CORPUS_INDEX [ROUNDS] [SECONDS] [SERVE FLAGS...]
#
# Needs redis-server (scripts/redis-cluster.sh starts the cluster on ports
# 31400-31405) and target/release/chaff.
set -euo pipefail
cd "$(dirname "$0")/.."
index=${1:?corpus index}; rounds=${2:-3}; secs=${3:-10}; shift $(( $# < 3 ? $# : 3 ))
bin=target/release/chaff
tmp=target/tmp/score-figure
rm -rf "$tmp"; mkdir -p "$tmp"
nodes=$(scripts/redis-cluster.sh start "$tmp/rc" 31400 | tail -1)
cleanup() {
  # `start` runs in a command substitution (a subshell): pids go to a file.
  for p in $(cat "$tmp/pids" 2>/dev/null); do kill "$p" 2>/dev/null || true; done
  sleep 1
  scripts/redis-cluster.sh stop "$tmp/rc" 31400 >/dev/null 2>&1 || true
  rm -rf "$tmp"
}
trap cleanup EXIT
start() { # name, flags...
  local name=$1; shift
  "$bin" serve --listen 127.0.0.1:0 --log warn --data "$tmp/$name" "$@" >"$tmp/$name.out" 2>"$tmp/$name.err" &
  echo $! >>"$tmp/pids"
  for _ in $(seq 600); do grep -q listening "$tmp/$name.out" 2>/dev/null && break; sleep 0.1; done
  sed -n 's/chaff listening on //p' "$tmp/$name.out"
}
store="redis://$(echo "$nodes" | sed 's#redis://##g')"
sled=$(start sled "$@")
redis=$(start redis --store "$store" "$@")
for s in "$sled" "$redis"; do
  "$bin" loadtest --server "$s" --corpus "$index" --rpc train --users 100 --concurrency 32 --duration 5s >/dev/null
done
for s in "$sled" "$redis"; do  # the trained users are there
  "$bin" user --server "$s" -u loadtest-0 | sed -n 1,3p  # not head: chaff must not write into a closed pipe
done
for r in $(seq "$rounds"); do
  for name in sled redis; do
    s=$sled; [ "$name" = redis ] && s=$redis
    "$bin" loadtest --server "$s" --corpus "$index" --users 100 --concurrency 32 --duration "${secs}s" --json |
      python3 -c "import json,sys; j=json.load(sys.stdin); print('$name', j.get('calls_per_second', j.get('rate')), json.dumps(j))" |
      tee -a "$tmp/rounds"
  done
done
python3 - "$tmp/rounds" <<'PY'
import statistics, sys
runs = {}
for line in open(sys.argv[1]):
    name, rate, _ = line.split(' ', 2)
    runs.setdefault(name, []).append(float(rate))
m = {k: statistics.median(v) for k, v in runs.items()}
for k, v in runs.items():
    print(f"{k}: {v} median {m[k]:.0f} calls/s")
print(f"redis/sled = {m['redis'] / m['sled']:.2f}")
PY
