#!/usr/bin/env bash
# Score throughput of one chaff replica over a Redis Cluster against one
# over sled, in the same run (docs/SCALING.md, "Score throughput"): both
# servers are started from one binary, their users trained first, then
# `chaff loadtest` Score rounds alternate between them; prints each round
# (with the load average at its end and the CPU time per answered call of
# the server and of the cluster's nodes) and the medians.
#
#   scripts/redis-vs-sled-score.sh CORPUS_INDEX [ROUNDS] [SECONDS] [SERVE FLAGS...]
#
# SERVE FLAGS go to every server. Environment (all optional):
#   CHAFF_BIN       the binary (default target/release/chaff)
#   RVS_PORT        the cluster's first port (default 31400; six ports)
#   RVS_APPENDFSYNC the cluster's appendfsync (default always)
#   RVS_CONFIGS     more servers over the same cluster, alternating with
#                   the two: "NAME=FLAGS;NAME=FLAGS", e.g.
#                   "reads16=--max-concurrent-reads 16" (an attribution run:
#                   one switch per server, every ratio from the same rounds);
#                   FLAGS starting with the word `sled` start one more sled
#                   server instead (its own data, trained as the first)
#   RVS_DECISION_PORT  start a second cluster there (six ports, the same
#                   appendfsync) and one more server, `declog`, over the
#                   first with `--decision-store` on the second: the
#                   decision log's writes off the primaries Scores read
#
# Needs redis-server (scripts/redis-cluster.sh starts the cluster).
set -euo pipefail
cd "$(dirname "$0")/.."
index=${1:?corpus index}; rounds=${2:-3}; secs=${3:-10}; shift $(( $# < 3 ? $# : 3 ))
bin=${CHAFF_BIN:-target/release/chaff}
port=${RVS_PORT:-31400}
tmp=target/tmp/score-figure-$port
rm -rf "$tmp"; mkdir -p "$tmp"
nodes=$(REDIS_APPENDFSYNC=${RVS_APPENDFSYNC:-always} scripts/redis-cluster.sh start "$tmp/rc" "$port" | tail -1)
dport=${RVS_DECISION_PORT:-}
if [ -n "$dport" ]; then
  dnodes=$(REDIS_APPENDFSYNC=${RVS_APPENDFSYNC:-always} scripts/redis-cluster.sh start "$tmp/dc" "$dport" | tail -1)
fi
cleanup() {
  # `start` runs in a command substitution (a subshell): pids go to a file.
  for p in $(cat "$tmp/pids" 2>/dev/null); do kill "$p" 2>/dev/null || true; done
  sleep 1
  scripts/redis-cluster.sh stop "$tmp/rc" "$port" >/dev/null 2>&1 || true
  [ -z "$dport" ] || scripts/redis-cluster.sh stop "$tmp/dc" "$dport" >/dev/null 2>&1 || true
  rm -rf "$tmp"
}
trap cleanup EXIT
start() { # name, flags...
  local name=$1; shift
  "$bin" serve --listen 127.0.0.1:0 --log warn --data "$tmp/$name" "$@" >"$tmp/$name.out" 2>"$tmp/$name.err" &
  echo $! >>"$tmp/pids"; echo $! >"$tmp/$name.pid"
  for _ in $(seq 600); do grep -q listening "$tmp/$name.out" 2>/dev/null && break; sleep 0.1; done
  sed -n 's/chaff listening on //p' "$tmp/$name.out"
}
store="redis://$(echo "$nodes" | sed 's#redis://##g')"
declare -A server
names=(sled redis)
trained=()
server[sled]=$(start sled "$@")
server[redis]=$(start redis --store "$store" "$@")
if [ -n "$dport" ]; then
  server[declog]=$(start declog --store "$store" --decision-store "redis://$(echo "$dnodes" | sed 's#redis://##g')" "$@")
  names+=(declog)
fi
IFS=';' read -r -a extra <<<"${RVS_CONFIGS:-}"
for c in "${extra[@]}"; do
  [ -n "$c" ] || continue
  name=${c%%=*}; flags=${c#*=}
  if [ "${flags%% *}" = sled ]; then
    # shellcheck disable=SC2086 # FLAGS are words
    server[$name]=$(start "$name" "$@" ${flags#sled})
    trained+=("${server[$name]}")
  else
    # shellcheck disable=SC2086 # FLAGS are words
    server[$name]=$(start "$name" --store "$store" "$@" $flags)
  fi
  names+=("$name")
done
# Train on each sled server and once on the cluster (every Redis server
# shares it).
for s in "${server[sled]}" "${server[redis]}" "${trained[@]}"; do
  "$bin" loadtest --server "$s" --corpus "$index" --rpc train --users 100 --concurrency 32 --duration 5s >/dev/null
done
for name in "${names[@]}"; do  # the trained users are there; models cached
  "$bin" user --server "${server[$name]}" -u loadtest-0 | sed -n 1,3p  # not head: chaff must not write into a closed pipe
  "$bin" loadtest --server "${server[$name]}" --corpus "$index" --users 100 --concurrency 8 --duration 2s >/dev/null
done
# CPU seconds (user + system) of processes so far: the server's, and the
# cluster's six redis-servers' together, read around each round.
redis_pids=$(for p in $(seq "$port" $((port + 5))); do redis-cli -p "$p" info server | sed -n 's/^process_id:\([0-9]*\).*/\1/p'; done)
cpu() { python3 -c "import os,sys; t=os.sysconf('SC_CLK_TCK'); print(sum(sum(map(int, open(f'/proc/{p}/stat').read().rsplit(')',1)[1].split()[11:13])) for p in sys.argv[1:]) / t)" "$@"; }
for r in $(seq "$rounds"); do
  for name in "${names[@]}"; do
    pid=$(cat "$tmp/$name.pid")
    # shellcheck disable=SC2086 # pids are words
    before="$(cpu "$pid") $(cpu $redis_pids)"
    "$bin" loadtest --server "${server[$name]}" --corpus "$index" --users 100 --concurrency 32 --duration "${secs}s" --json >"$tmp/round.json"
    # shellcheck disable=SC2086
    after="$(cpu "$pid") $(cpu $redis_pids)"
    python3 -c "
import json,sys,os
j=json.load(open('$tmp/round.json')); b=list(map(float,'$before'.split())); a=list(map(float,'$after'.split()))
calls=j['calls']
print('$name', j.get('calls_per_second', j.get('rate')), os.getloadavg()[0],
      f'cpu_us_per_call server {(a[0]-b[0])*1e6/max(calls,1):.0f} redis {(a[1]-b[1])*1e6/max(calls,1):.0f}', json.dumps(j))" |
      tee -a "$tmp/rounds"
  done
done
python3 - "$tmp/rounds" "${names[@]}" <<'PY'
import statistics, sys
runs, load = {}, []
for line in open(sys.argv[1]):
    name, rate, la, _ = line.split(' ', 3)
    runs.setdefault(name, []).append(float(rate))
    load.append(float(la))
m = {k: statistics.median(v) for k, v in runs.items()}
for k in sys.argv[2:]:
    print(f"{k}: {[round(x) for x in runs[k]]} median {m[k]:.0f} calls/s")
for k in sys.argv[3:]:
    print(f"{k}/sled = {m[k] / m['sled']:.2f}")
print(f"load average (1 min) at the rounds' ends: {min(load):.1f}-{max(load):.1f}")
PY
