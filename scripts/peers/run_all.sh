#!/usr/bin/env bash
# Replay every peer x corpus x mode and print one table.
#
# Usage (from anywhere):  scripts/peers/run_all.sh [--install] [--table-only]
#   env PEERS="bogofilter crm114"  CORPORA="enron1"  MODES="every"  to narrow it.
#
# Results go to target/peers/PEER-CORPUS-MODE.txt (+ .log with the replay's
# stderr, which carries the messages/s figure).  A result that already exists
# is skipped, so the script can be stopped and restarted; replay.py only
# renames its output into place when a run completed.
# Runs are strictly one at a time: the machine has 2 cores and timing figures
# would be meaningless if replays competed with each other.
set -euo pipefail

cd "$(dirname "$0")/../.."
root=$PWD
out=target/peers
mkdir -p "$out"

install=0
table_only=0
for a in "$@"; do
    case $a in
        --install) install=1 ;;
        --table-only) table_only=1 ;;
        *) echo "unknown option $a" >&2; exit 2 ;;
    esac
done
[[ $install == 1 ]] && scripts/peers/install.sh

# Cheapest first, so a time-boxed run gets the most results.
PEERS=${PEERS:-"crm114 rspamd bogofilter spamassassin"}
CORPORA=${CORPORA:-"spamassassin enron1 enron2 enron3"}
MODES=${MODES:-"every errors"}

if [[ ! -d target/corpus/spamassassin ]]; then
    mkdir -p target/corpus
    for a in ../shared/corpus/*.tar.zst; do tar --zstd -xf "$a" -C target/corpus; done
fi
[[ -x target/release/chaff ]] || cargo build --release

if [[ $table_only == 0 ]]; then
    for mode in $MODES; do
        for corpus in $CORPORA; do
            for peer in $PEERS; do
                res=$out/$peer-$corpus-$mode.txt
                if [[ -e $res ]]; then
                    echo "skip $res (exists)" >&2
                    continue
                fi
                echo "$(date +%T) run $peer $corpus $mode" >&2
                if ! python3 scripts/peers/replay.py "$peer" "target/corpus/$corpus/index" \
                        "$mode" "$res" 2> "$out/$peer-$corpus-$mode.log"; then
                    echo "FAILED: $peer $corpus $mode (see $out/$peer-$corpus-$mode.log)" >&2
                fi
            done
        done
    done
fi

# The table: the repo's own metrics code on each results file, plus the
# replay speed from the .log.
python3 - "$root/target/release/chaff" "$out" <<'EOF'
import json, os, re, subprocess, sys
chaff, out = sys.argv[1], sys.argv[2]
rows = []
for name in sorted(os.listdir(out)):
    m = re.fullmatch(r"(\w+)-(\w+)-(every|errors)\.txt", name)
    if not m:
        continue
    path = os.path.join(out, name)
    j = json.loads(subprocess.run([chaff, "metrics", "--json", path], check=True,
                                  capture_output=True, text=True).stdout.splitlines()[0])
    speed = trained = "?"
    log = path[:-4] + ".log"
    if os.path.exists(log):
        t = open(log).read()
        s = re.search(r"= ([0-9.]+) messages/s, trained (\d+)", t)
        if s:
            speed, trained = s.group(1), s.group(2)
    rows.append((m.group(3), m.group(2), m.group(1), j, speed, trained))
hdr = f"{'mode':6} {'corpus':12} {'peer':12} {'msgs':>5} {'(1-ROCA)%':>9} {'lam%':>7} {'ham mis%':>8} {'spam mis%':>9} {'trained':>7} {'msg/s':>7}"
print(hdr)
print("-" * len(hdr))
order = {"every": 0, "errors": 1}
for mode, corpus, peer, j, speed, trained in sorted(rows, key=lambda r: (order[r[0]], r[1], r[2])):
    print(f"{mode:6} {corpus:12} {peer:12} {j['messages']:5d} {j['one_minus_roca_pct']:9.3f} "
          f"{j['lam_pct']:7.3f} {j['ham_misclassified_pct']:8.3f} {j['spam_misclassified_pct']:9.3f} "
          f"{trained:>7} {speed:>7}")
EOF
