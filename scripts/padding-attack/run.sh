#!/bin/bash
# The padding attack on delivered learning, end to end through a real
# server (docs/ACCURACY.md, "Session 28"). A user clicks 150 spam and 150
# ham; a spam scores 1.0; the attacker sends 30 copies padded with the
# user's ham words, which are delivered and learned as ham; the plain spam
# is scored again (--dry-run: no learning).
#
# Usage: scripts/padding-attack/run.sh [K] [BIN] [PORT] [ENV=value...]
#   K     padding words per copy (default 20: the first copies still
#         score spam, then unsure, then ham)
#   BIN   chaff binary (default target/release/chaff)
#   ENV   passed to `chaff serve` (an experiment's switches)
# Needs the SpamAssassin corpus in target/corpus/spamassassin (README).
set -euo pipefail
cd "$(dirname "$0")/../.."
K=${1:-20}; BIN=${2:-target/release/chaff}; PORT=${3:-50790}; shift $(( $# < 3 ? $# : 3 ))
W=target/padding-attack
rm -rf "$W"; mkdir -p "$W"
python3 scripts/padding-attack/make.py target/corpus/spamassassin "$W" "$K"
env "$@" "$BIN" serve --data "$W/data" --listen "127.0.0.1:$PORT" >"$W/serve.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null || true' EXIT
for _ in $(seq 50); do grep -q serving "$W/serve.log" && break; sleep 0.1; done
grep -q serving "$W/serve.log" || { echo "chaff serve did not start:" >&2; cat "$W/serve.log" >&2; exit 1; }
S=(--server "127.0.0.1:$PORT" -u victim)
"$BIN" train "${S[@]}" --spam "$W"/train/spam/*.eml >/dev/null
"$BIN" train "${S[@]}" --ham "$W"/train/ham/*.eml >/dev/null
show() { python3 -c 'import json,sys
for l in sys.stdin:
    j = json.loads(l); print("%.3g %s" % (j["spam_probability"], j["verdict"]), end="; ")'; }
echo -n "plain spam before: "; "$BIN" score "${S[@]}" --dry-run --json "$W/plain.eml" | show; echo
echo -n "30 padded copies:  "
for i in $(seq 0 29); do "$BIN" score "${S[@]}" --json "$W/pad$i.eml" | show; done; echo
sleep 1   # the delivered learner runs off the Score path
echo -n "plain spam after:  "; "$BIN" score "${S[@]}" --dry-run --json "$W/plain.eml" | show; echo
