#!/bin/bash
# RSS of a real `chaff serve` against its memory flags (issue #16,
# docs/PERFORMANCE.md "Memory within the flags"):
#
#   scripts/memory.sh CHAFF_BIN SEED_INDEX USER_INDEX USERS SECONDS MODEL_MEMORY CACHE_MB [SERVE_FLAGS...]
#
# Starts `chaff serve` on a fresh data directory under target/tmp, reads its
# VmRSS/VmHWM from /proc when idle, after `chaff seed --index SEED_INDEX`
# (the shared model) and after SECONDS of durable Train calls spread over
# USERS users (`chaff loadtest --rpc train --users USERS`, 8 in flight),
# then a Score pass over the same users; prints `chaff stats`, the RSS split
# into the binary's mapped files (RssFile: code, the idle process) and
# anonymous memory (RssAnon: heap, tables, stacks), and stops the server
# with SIGTERM.
#
# MALLOC_STATS=1 (needs gdb) also has the server print glibc's
# malloc_stats() to its stderr at the end: per arena, the bytes glibc holds
# ("system") against those in use, i.e. what is free but still resident.
# The heap profile in docs/PERFORMANCE.md ("Where the overhead goes") was
# taken with heaptrack, as written there.
set -euo pipefail
bin=$1 seed=$2 corpus=$3 users=$4 secs=$5 mem=$6 cache=$7
shift 7
mkdir -p target/tmp
dir=$(mktemp -d target/tmp/memory.XXXXXX)
out=$(mktemp target/tmp/memory-out.XXXXXX)
"$bin" serve --listen 127.0.0.1:0 --data "$dir" --log warn --stats-interval 0s \
    --model-memory "$mem" --cache-mb "$cache" "$@" >"$out" &
pid=$!
trap 'kill -TERM $pid 2>/dev/null || true; wait $pid 2>/dev/null || true; rm -rf "$dir" "$out"' EXIT
for _ in $(seq 100); do grep -q listening "$out" && break; sleep 0.1; done
addr=$(awk '/listening/ {print $NF}' "$out")
rss() {
    printf '%-34s VmRSS %6d MiB   VmHWM %6d MiB\n' "$1" \
        $(( $(awk '/^VmRSS/ {print $2}' /proc/$pid/status) / 1024 )) \
        $(( $(awk '/^VmHWM/ {print $2}' /proc/$pid/status) / 1024 ))
}
echo "chaff serve --model-memory $mem --cache-mb $cache $*"
rss "started, idle"
"$bin" seed --server "$addr" --index "$seed" >/dev/null
"$bin" shared --server "$addr" | head -3
rss "after the seed"
"$bin" loadtest --server "$addr" --corpus "$corpus" --rpc train --users "$users" \
    --concurrency 8 --duration "${secs}s" --json >/dev/null
rss "after Train over $users users"
"$bin" loadtest --server "$addr" --corpus "$corpus" --rpc score --users "$users" \
    --concurrency 8 --duration 10s --json >/dev/null
rss "after 10 s of Score over them"
"$bin" stats --server "$addr"
awk '/^(RssAnon|RssFile|RssShmem|VmRSS)/ {printf "%s %d MiB  ", $1, $2 / 1024} END {print ""}' /proc/$pid/status
if [ "${MALLOC_STATS:-0}" = 1 ]; then
    gdb -p "$pid" -batch -ex 'call (void)malloc_stats()' >/dev/null 2>&1 || true
fi
