#!/bin/sh
# Score throughput with metrics on (--metrics-listen, scraped every second)
# against metrics off: the same release binary, data directory and loadtest,
# alternating, ROUNDS rounds. Prints one line per run with its calls/s, and
# keeps every scrape (scripts/metrics-panels.py draws them).
#
#   scripts/metrics-cost.sh CORPUS_INDEX [ROUNDS] [SECONDS]
#
# Needs target/release/chaff (cargo build --release) and curl.
set -eu
CORPUS=${1:?corpus index (TREC format), e.g. target/corpus/spamassassin/index}
ROUNDS=${2:-3}
SECS=${3:-15}
BIN=${BIN:-target/release/chaff}
WORK=$(mktemp -d)
PORT=${PORT:-50983}
MPORT=${MPORT:-50984}
S="--data $WORK/data --listen 127.0.0.1:$PORT --log warn --stats-interval 0s"
LT="loadtest --server http://127.0.0.1:$PORT --corpus $CORPUS --concurrency 32 --users 100 --json"

start() { # extra serve flags
    rm -f "$WORK/serve.out"
    $BIN serve $S "$@" > "$WORK/serve.out" &
    PID=$!
    while ! grep -q "listening" "$WORK/serve.out" 2>/dev/null; do sleep 0.1; done
}
stop() { kill "$PID"; wait "$PID" || true; }
rate() { sed -n 's/.*"calls_per_second": *\([0-9.]*\).*/\1/p'; }

start
$BIN $LT --rpc train --duration 8s > /dev/null
stop

for round in $(seq "$ROUNDS"); do
    start
    off=$($BIN $LT --duration "${SECS}s" | rate)
    stop
    echo "round $round off $off load $(cut -d' ' -f1 /proc/loadavg)"
    start --metrics-listen "127.0.0.1:$MPORT"
    mkdir -p "$WORK/scrapes-$round"
    ( while kill -0 "$PID" 2>/dev/null; do
        curl -s "http://127.0.0.1:$MPORT/metrics" > "$WORK/scrapes-$round/$(date +%s.%N).txt" || true
        sleep 1
      done ) &
    SCRAPER=$!
    on=$($BIN $LT --duration "${SECS}s" | rate)
    stop
    wait "$SCRAPER" 2>/dev/null || true
    echo "round $round on  $on load $(cut -d' ' -f1 /proc/loadavg) ratio $(echo "$on / $off" | bc -l | cut -c1-5)"
done
echo "scrapes (one a second, metrics-on runs) kept in $WORK/scrapes-*"
