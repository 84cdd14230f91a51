#!/usr/bin/env bash
# The issue's one-sided case on real mail: a fresh `chaff serve`, user `a`
# clicks Spam on the first N spam of a TREC corpus and nothing else, then
# scores the corpus's ham from position FROM on, one at a time, as mail
# arrives (so delivered mail is learned between them, as in service), then
# the next 100 spam after the clicked ones, unclicked (what a fix costs).
# Prints one letter per ham (S spam, u unsure, . ham), then the counts.
#
#   scripts/spam-only-probe.sh target/corpus/trec06p 100 2001 [--learn-delivered false]
set -euo pipefail
corpus=$1 n=$2 from=$3; shift 3
bin=${CHAFF:-target/release/chaff}
dir=$(mktemp -d)
port=$(( 40000 + RANDOM % 20000 ))
"$bin" serve --data "$dir/data" --listen "127.0.0.1:$port" --log warn "$@" > "$dir/out" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null; rm -rf "$dir"' EXIT
sleep 2
export CHAFF_SERVER=127.0.0.1:$port
awk -v n="$n" -v c="$corpus" '$1 == "spam" && k++ < n { print c "/" $2 }' "$corpus/index" |
  xargs "$bin" train -u a --spam > /dev/null 2>&1
score_each() {
  while read -r f; do
    "$bin" score -u a --json "$f"
    sleep 0.05 # Score queues the delivered mail's learning; let it land
  done
}
ham=$(awk -v from="$from" -v c="$corpus" '$1 == "ham" && ++k >= from && k < from + 100 { print c "/" $2 }' "$corpus/index" | score_each)
spam=$(awk -v n="$n" -v c="$corpus" '$1 == "spam" && ++k > n && k <= n + 100 { print c "/" $2 }' "$corpus/index" | score_each)
HAM=$ham SPAM=$spam python3 -c "
import json, os
v = [json.loads(l)['verdict'] for l in os.environ['HAM'].splitlines()]
s = [json.loads(l)['verdict'] for l in os.environ['SPAM'].splitlines()]
print('$n spam clicks:', ''.join({'spam': 'S', 'unsure': 'u', 'ham': '.'}[x] for x in v))
print(v.count('spam'), 'of', len(v), 'ham filed as spam;', s.count('spam'), 'of', len(s), 'next spam filed as spam')"
