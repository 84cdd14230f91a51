#!/usr/bin/env bash
# Does a clean shutdown give sled's unused log segments back? (docs/OPERATIONS.md,
# "Disk space"). Starts `chaff serve` on a fresh data directory, trains USERS users
# BATCHES batches of 25 SpamAssassin messages each (`chaff train`, a fixed
# shuffle), stops it with SIGTERM, and prints `du -k` and the length of sled's
# log file (DIR/db) while it runs and after the stop.
#
#   USERS=1 BATCHES=200 scripts/close-space.sh target/release/chaff /tmp/close-space
set -euo pipefail
bin=$1 dir=$2
corpus=${CORPUS:-target/corpus/spamassassin}
rm -rf "$dir" "$dir.out" "$dir.err" "$dir.train" && mkdir -p "$dir"
"$bin" serve --data "$dir" --listen 127.0.0.1:0 --log warn >"$dir.out" 2>"$dir.err" &
pid=$!
trap 'kill "$pid" 2>/dev/null || true' EXIT
for _ in $(seq 600); do grep -qs "listening on" "$dir.out" && break; sleep 0.1; done
addr=$(sed -n 's/chaff listening on //p' "$dir.out")
[ -n "$addr" ] || { echo "chaff serve did not start (see $dir.err)" >&2; exit 1; }
mapfile -t lines < <(shuf -n 6000 --random-source=<(yes) "$corpus/index")
n=0
for u in $(seq "${USERS:-1}"); do
  for _ in $(seq "${BATCHES:-200}"); do
    spam=() ham=()
    for _ in $(seq 25); do
      line=${lines[n++]}
      if [ "${line%% *}" = spam ]; then spam+=("$corpus/${line#* }"); else ham+=("$corpus/${line#* }"); fi
    done
    [ ${#spam[@]} -eq 0 ] || "$bin" train --server "$addr" --user "u$u" --spam "${spam[@]}" >/dev/null 2>>"$dir.train"
    [ ${#ham[@]} -eq 0 ] || "$bin" train --server "$addr" --user "u$u" --ham "${ham[@]}" >/dev/null 2>>"$dir.train"
  done
done
sleep 1
echo "running:      du -k $(du -k "$dir/db" | cut -f1) KB, length $(stat -c %s "$dir/db") bytes"
kill -TERM "$pid"
wait "$pid"
echo "after SIGTERM: du -k $(du -k "$dir/db" | cut -f1) KB, length $(stat -c %s "$dir/db") bytes"
