#!/usr/bin/env bash
# Two chaff builds alternated three rounds on the paths a store change can
# touch: replay (throwaway and --durable), durable Train and Score through a
# real server, its clean shutdown, and what the shutdown leaves on disk.
#   scripts/store-speed.sh OLD_CHAFF NEW_CHAFF [CORPUS_INDEX]
# (docs/PERFORMANCE.md, "A clean close gives sled's unused log segments back")
set -u
old=${1:?old chaff binary}; new=${2:?new chaff binary}
C=${3:-target/corpus/spamassassin/index}
for i in 1 2 3; do
  for b in old new; do
    X=${!b}; d=$(mktemp -d); port=$((51900 + i))
    echo "== $b round $i $(date +%T) load $(cut -d' ' -f1 /proc/loadavg)"
    echo -n "eval: "; nice -n 5 "$X" eval --index "$C" 2>/dev/null | grep -i speed
    echo -n "eval --durable: "; nice -n 5 "$X" eval --index "$C" --durable 2>/dev/null | grep -i speed
    "$X" serve --data "$d/data" --listen 127.0.0.1:$port --log warn > "$d/serve.log" 2>&1 &
    pid=$!; sleep 2
    echo -n "train: "; "$X" loadtest --server http://127.0.0.1:$port --corpus "$C" --concurrency 32 \
      --duration 10s --rpc train --users 100 --json 2>/dev/null | tail -1
    echo -n "score: "; "$X" loadtest --server http://127.0.0.1:$port --corpus "$C" --concurrency 32 \
      --duration 10s --users 100 --json 2>/dev/null | tail -1
    kill -TERM $pid; s=$(date +%s.%N); wait $pid
    echo "shutdown: $(echo "$(date +%s.%N) - $s" | bc) s, du $(du -s -B1 "$d/data" | cut -f1), len $(stat -c %s "$d/data/db")"
    rm -rf "$d"
  done
done
