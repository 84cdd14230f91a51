#!/usr/bin/env bash
# Cut a TREC corpus into N mailboxes of consecutive messages, one folder
# per user (the folder's name is the user's in `chaff eval`'s multi-user
# mode), for replaying one corpus as several users:
#
#   scripts/split-index.sh target/corpus/trec06p 4 target/split
#   chaff eval --index target/split/trec06p1/index ... --index target/split/trec06p4/index
#
# Each folder gets the slice of `index` and a symlink to the corpus's
# message folders, so the index's relative paths resolve.
set -euo pipefail
corpus=$1 n=$2 out=$3
name=$(basename "$corpus")
total=$(wc -l < "$corpus/index")
per=$(( (total + n - 1) / n ))
for i in $(seq 1 "$n"); do
  dir="$out/$name$i"
  mkdir -p "$dir"
  for sub in "$corpus"/*/; do
    ln -sfn "$(realpath "$sub")" "$dir/$(basename "$sub")"
  done
  sed -n "$(( (i - 1) * per + 1 )),$(( i * per ))p" "$corpus/index" > "$dir/index"
  echo "$dir: $(wc -l < "$dir/index") messages"
done
