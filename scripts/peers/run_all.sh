#!/usr/bin/env bash
# Replay every peer x corpus x mode and print one table.
#
# Usage (from anywhere):  scripts/peers/run_all.sh [--install] [--table-only | --no-table]
#   env PEERS="bogofilter crm114"  CORPORA="enron1"  MODES="every"  to narrow it.
#   MODES: every, errors, and the click profiles diligent, typical, spam-only
#   (replay.py MODE clicks --profile NAME; SEED=N changes the clicks' seed, 0
#   by default, as `chaff eval --seed`).
#
# Results go to target/peers/PEER-CORPUS-MODE.txt (or $OUT/...; corpora are read
# from target/corpus/NAME/index or $CORPUS_DIR/NAME/index) (+ .log with the replay's
# stderr, which carries the messages/s figure).  A result that already exists
# is skipped, so the script can be stopped and restarted; replay.py only
# renames its output into place when a run completed.
# Runs are strictly one at a time: the machine has 2 cores and timing figures
# would be meaningless if replays competed with each other.
set -euo pipefail

cd "$(dirname "$0")/../.."
root=$PWD
out=${OUT:-target/peers}
corpus_dir=${CORPUS_DIR:-target/corpus}
mkdir -p "$out"

install=0
table_only=0
no_table=0
for a in "$@"; do
    case $a in
        --install) install=1 ;;
        --table-only) table_only=1 ;;
        --no-table) no_table=1 ;;
        *) echo "unknown option $a" >&2; exit 2 ;;
    esac
done
[[ $install == 1 ]] && scripts/peers/install.sh

# Cheapest first, so a time-boxed run gets the most results.
PEERS=${PEERS:-"crm114 rspamd bogofilter spamassassin"}
CORPORA=${CORPORA:-"spamassassin enron1 enron2 enron3"}
MODES=${MODES:-"every errors"}
SEED=${SEED:-0}

if [[ ! -d $corpus_dir/spamassassin ]]; then
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
                case $mode in
                    every|errors) how=("$mode") ;;
                    diligent|typical|spam-only) how=(clicks --profile "$mode" --seed "$SEED") ;;
                    *) echo "unknown mode $mode" >&2; exit 2 ;;
                esac
                if ! python3 scripts/peers/replay.py "$peer" "$corpus_dir/$corpus/index" \
                        "${how[0]}" "$res" "${how[@]:1}" 2> "$out/$peer-$corpus-$mode.log"; then
                    echo "FAILED: $peer $corpus $mode (see $out/$peer-$corpus-$mode.log)" >&2
                fi
            done
        done
    done
fi

[[ $no_table == 1 ]] && exit 0

# The table: the repo's own metrics code on each results file, plus the
# replay speed from the .log.
python3 - "$root/target/release/chaff" "$out" <<'EOF'
import json, os, re, subprocess, sys
chaff, out = sys.argv[1], sys.argv[2]
rows = []
for name in sorted(os.listdir(out)):
    m = re.fullmatch(r"(\w+)-(\w+)-(every|errors|diligent|typical|spam-only)\.txt", name)
    if not m:
        continue
    path = os.path.join(out, name)
    j = json.loads(subprocess.run([chaff, "metrics", "--json", path], check=True,
                                  capture_output=True, text=True).stdout.splitlines()[0])
    speed = trained = "?"
    log = path[:-4] + ".log"
    if os.path.exists(log):
        t = open(log).read()
        s = re.search(r"= ([0-9.]+) messages/s, (?:fed back \d+, )?trained (\d+)", t)
        if s:
            speed, trained = s.group(1), s.group(2)
    rows.append((m.group(3), m.group(2), m.group(1), j, speed, trained))
hdr = (f"{'mode':9} {'corpus':12} {'peer':12} {'msgs':>5} {'(1-ROCA)%':>9} {'lam%':>7} "
       f"{'sm@0.1%':>7} {'ham mis%':>8} {'spam mis%':>9} {'first100':>8} {'first500':>8} "
       f"{'clicks':>11} {'trained':>7} {'msg/s':>7}")
print(hdr)
print("-" * len(hdr))
order = {"every": 0, "errors": 1, "diligent": 2, "typical": 3, "spam-only": 4}
for mode, corpus, peer, j, speed, trained in sorted(rows, key=lambda r: (order[r[0]], r[1], r[2])):
    clicks = "?" if j["clicks"] is None else f"{j['spam_clicks']}+{j['ham_clicks']}"
    print(f"{mode:9} {corpus:12} {peer:12} {j['messages']:5d} {j['one_minus_roca_pct']:9.3f} "
          f"{j['lam_pct']:7.3f} {j['spam_misclassified_at_0_1_ham_pct']:7.2f} "
          f"{j['ham_misclassified_pct']:8.3f} {j['spam_misclassified_pct']:9.3f} "
          f"{j['misfiled_first_100_pct']:8.2f} {j['misfiled_first_500_pct']:8.2f} "
          f"{clicks:>11} {trained:>7} {speed:>7}")
EOF
