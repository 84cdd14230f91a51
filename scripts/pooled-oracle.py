#!/usr/bin/env python3
"""The most a shared model could know when several mailboxes start together.

Merges TREC indexes into one stream interleaved by relative position (as
`chaff eval --arrival together` does), so `chaff eval` can replay it as ONE
user: every user's clicks in one uncapped model at full weight. Then reads
that replay's `--results` file back and prints each user's misfiled share
(spam not judged spam + ham judged spam) over their first N messages.

    scripts/pooled-oracle.py merge OUT_DIR INDEX...
    target/release/chaff eval --index OUT_DIR/index --results OUT_DIR/results
    scripts/pooled-oracle.py report OUT_DIR

docs/ACCURACY.md ("Per-user models over the shared model") uses it as the
bound for the issue #5 target in the `together`, nothing-seeded protocol.
"""
import os
import sys

WINDOWS = (50, 100, 500, None)


def merge(out_dir, indexes):
    rows = []
    for index in indexes:
        folder = os.path.dirname(os.path.abspath(index))
        user = os.path.basename(folder)
        lines = [line.split() for line in open(index) if line.strip()]
        for i, (label, path) in enumerate(lines):
            # Relative position, ties broken by the order the indexes were
            # given: the same interleaving as `Arrival::Together`.
            rows.append((i / len(lines), indexes.index(index), user, i, label,
                         os.path.join(folder, path)))
    rows.sort(key=lambda r: (r[0], r[1]))
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "index"), "w") as f:
        f.writelines(f"{r[4]} {r[5]}\n" for r in rows)
    with open(os.path.join(out_dir, "users"), "w") as f:
        f.writelines(f"{r[2]} {r[3]}\n" for r in rows)
    print(f"{len(rows)} messages from {len(indexes)} mailboxes -> {out_dir}/index")


def report(out_dir):
    users = [line.split() for line in open(os.path.join(out_dir, "users"))]
    results = [line.split() for line in open(os.path.join(out_dir, "results"))]
    if len(users) != len(results):
        sys.exit("results and users differ in length: replay the whole index")
    names = list(dict.fromkeys(u for u, _ in users))
    print("misfiled %   " + "".join(f"{('first ' + str(w)) if w else 'all':>11}" for w in WINDOWS))
    averages = [0.0] * len(WINDOWS)
    for name in names:
        mine = [r for (u, _), r in zip(users, results) if u == name]
        row = []
        for k, window in enumerate(WINDOWS):
            # results lines: id score gold judged
            head = mine[:window] if window else mine
            wrong = sum(1 for _, _, gold, judged in head
                        if (gold == "spam") != (judged == "spam"))
            pct = 100.0 * wrong / len(head)
            averages[k] += pct / len(names)
            row.append(pct)
        print(f"{name:<12}" + "".join(f"{p:>11.2f}" for p in row))
    print(f"{'average':<12}" + "".join(f"{p:>11.2f}" for p in averages))


if __name__ == "__main__":
    if len(sys.argv) >= 4 and sys.argv[1] == "merge":
        merge(sys.argv[2], sys.argv[3:])
    elif len(sys.argv) == 3 and sys.argv[1] == "report":
        report(sys.argv[2])
    else:
        sys.exit(__doc__)
