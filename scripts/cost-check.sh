#!/bin/sh
# Score throughput of one release binary under four configurations, in
# alternating rounds against one data directory (100 users trained first):
#   plain       open mode, plaintext loopback (the defaults)
#   no-learn    the same with --learn-delivered false (what learning from
#               delivered mail costs Score)
#   metrics     plain with --metrics-listen, scraped every second (issue #20)
#   tls-key     TLS (a P-256 CA and server certificate made here with
#               openssl) and an API key per call (issue #15)
# `metrics` and `tls-key` run with --learn-delivered false, and are to be
# compared with `no-learn`: with learning on, every Score of new mail for a
# trained user also writes, and that write's noise swamps a few percent.
# Prints one line per run with calls/s; ratios against the same round's
# run are what to compare on a noisy machine.
#
# The `plain` rounds learn every delivered message for 100 users into the
# shared data directory, so every later round scores bigger models; PLAIN=0
# leaves them out, keeping the data directory as trained (what the
# metrics and tls-key ratios need).
#
#   [PLAIN=0] scripts/cost-check.sh CORPUS_INDEX [ROUNDS] [SECONDS]
set -eu
CORPUS=${1:?corpus index, e.g. target/corpus/spamassassin/index}
ROUNDS=${2:-3}
SECS=${3:-10}
PLAIN=${PLAIN:-1}
BIN=${BIN:-target/release/chaff}
WORK=$(mktemp -d)
PORT=${PORT:-50991}
MPORT=${MPORT:-50992}
S="--data $WORK/data --listen 127.0.0.1:$PORT --log warn --stats-interval 0s"
LT="loadtest --corpus $CORPUS --concurrency 32 --users 100 --json"

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
    -subj /CN=cost-ca -keyout "$WORK/ca.key" -out "$WORK/ca.pem" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=localhost \
    -keyout "$WORK/server.key" -out "$WORK/server.csr" 2>/dev/null
printf 'subjectAltName=DNS:localhost\n' > "$WORK/ext"
openssl x509 -req -in "$WORK/server.csr" -CA "$WORK/ca.pem" -CAkey "$WORK/ca.key" \
    -CAcreateserial -days 1 -extfile "$WORK/ext" -out "$WORK/server.pem" 2>/dev/null
$BIN keys create --data "$WORK/keys" --name cost --scopes score,train > "$WORK/key.out"
KEY=$(grep -o 'chaff_[A-Za-z0-9_-]*' "$WORK/key.out" | head -1)

start() { # extra serve flags
    rm -f "$WORK/serve.out"
    $BIN serve $S "$@" > "$WORK/serve.out" &
    PID=$!
    while ! grep -q "listening" "$WORK/serve.out" 2>/dev/null; do sleep 0.1; done
}
stop() { kill "$PID"; wait "$PID" || true; }
rate() { sed -n 's/.*"calls_per_second": *\([0-9.]*\).*/\1/p'; }
calls() { sed -n 's/.*"calls": *\([0-9]*\).*/\1/p'; }
# The server's CPU time (user + system, clock ticks) so far.
ticks() { awk '{print $14 + $15}' "/proc/$PID/stat"; }
# Runs a load test (the command given), printing calls/s and the server's
# CPU microseconds per call: the client shares the machine's cores, so
# calls/s also carries the client's own TLS work; CPU per call is the
# server's alone.
measure() {
    t0=$(ticks)
    out=$("$@")
    t1=$(ticks)
    n=$(echo "$out" | calls)
    hz=$(getconf CLK_TCK)
    echo "$(echo "$out" | rate) cpu_us_per_call $(echo "$t0 $t1 $n $hz" | awk '{printf "%.1f", ($2 - $1) * 1e6 / $4 / $3}')"
}
plain_lt() { $BIN $LT --server "http://127.0.0.1:$PORT" "$@"; }

start
plain_lt --rpc train --duration 8s > /dev/null
stop

for round in $(seq "$ROUNDS"); do
    if [ "$PLAIN" = 1 ]; then
        start
        echo "round $round plain $(measure plain_lt --duration "${SECS}s") load $(cut -d' ' -f1 /proc/loadavg)"
        stop
    fi
    start --learn-delivered false
    echo "round $round no-learn $(measure plain_lt --duration "${SECS}s")"
    stop
    start --learn-delivered false --metrics-listen "127.0.0.1:$MPORT"
    ( while kill -0 "$PID" 2>/dev/null; do curl -s "http://127.0.0.1:$MPORT/metrics" > /dev/null || true; sleep 1; done ) &
    echo "round $round metrics $(measure plain_lt --duration "${SECS}s")"
    stop
    start --learn-delivered false --keys-file "$WORK/keys/keys.json" --tls-cert "$WORK/server.pem" --tls-key "$WORK/server.key"
    echo "round $round tls-key $(measure $BIN --token "$KEY" --tls-ca "$WORK/ca.pem" $LT --server "https://localhost:$PORT" --duration "${SECS}s")"
    stop
done
rm -rf "$WORK"
