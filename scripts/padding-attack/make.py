#!/usr/bin/env python3
"""Builds the padding attack's mail (docs/ACCURACY.md, "Session 25" and
"Session 28"): a trained user's 150 spam and 150 ham clicks, a spam the
user's model scores as spam, and 30 copies of it each padded with K words
drawn from the user's ham (words of 4-12 letters seen in the 150 ham and
in none of the 150 spam).

Usage: make.py CORPUS_DIR OUT_DIR K [TARGET]
CORPUS_DIR is the SpamAssassin corpus in TREC form (target/corpus/spamassassin);
TARGET, a path under it, defaults to spam/00114.e337195587d1dbb42e8a2b693e9fc938,
which the trained model scores 1.0 (85 tokens combined).
"""
import os
import random
import re
import sys
from collections import Counter

root, out, k = sys.argv[1], sys.argv[2], int(sys.argv[3])
target = sys.argv[4] if len(sys.argv) > 4 else "spam/00114.e337195587d1dbb42e8a2b693e9fc938"
random.seed(7)
idx = [line.split() for line in open(os.path.join(root, "index"))]
spam = [os.path.join(root, p) for label, p in idx if label == "spam"]
ham = [os.path.join(root, p) for label, p in idx if label == "ham"]
random.shuffle(spam)
random.shuffle(ham)
for kind, files in (("spam", spam[:150]), ("ham", ham[:150])):
    os.makedirs(os.path.join(out, "train", kind), exist_ok=True)
    for i, p in enumerate(files):
        with open(os.path.join(out, "train", kind, f"{i}.eml"), "wb") as f:
            f.write(open(p, "rb").read())


def words(p):
    body = open(p, "rb").read().decode("latin-1").split("\n\n", 1)[-1]
    return re.findall(r"[a-z]{4,12}", body.lower())


in_ham, in_spam = Counter(), Counter()
for p in ham[:150]:
    in_ham.update(set(words(p)))
for p in spam[:150]:
    in_spam.update(set(words(p)))
hammy = [w for w, _ in in_ham.most_common(3000) if in_spam[w] == 0][:300]

raw = open(os.path.join(root, target), "rb").read().decode("latin-1")
head, body = raw.split("\n\n", 1)
head = re.sub(r"(?im)^content-type:.*\n([ \t].*\n)*", "", head + "\n")
head = re.sub(r"(?im)^content-transfer-encoding:.*\n", "", head)
head = re.sub(r"(?im)^message-id:.*\n?", "", head).rstrip("\n")
text = re.sub(r"<[^>]+>", " ", body)


def write(name, message_id, extra):
    with open(os.path.join(out, name), "w", encoding="latin-1") as f:
        f.write(f"{head}\nMessage-ID: <{message_id}@x.example>\n"
                f"Content-Type: text/plain\n\n{text}{extra}")


write("plain.eml", "plain", "")
for i in range(30):
    write(f"pad{i}.eml", f"pad{i}", "\n\n" + " ".join(random.sample(hammy, k)) + "\n")
