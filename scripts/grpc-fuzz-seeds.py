#!/usr/bin/env python3
"""Writes fuzz/seeds-grpc/: each message of fuzz/seeds/ as a ScoreRequest
(first byte 0) and a TrainRequest (first byte 1), and one 4-item
ScoreBatchRequest (first byte 2), protobuf-encoded by hand (chaff.v1).
Deterministic. Run from the repository root."""
import glob
import os


def varint(n):
    out = b""
    while True:
        b, n = n & 0x7F, n >> 7
        if n:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])


def field(num, payload):
    """A length-delimited field, or a varint field when payload is an int."""
    if isinstance(payload, int):
        return varint(num << 3) + varint(payload)
    return varint(num << 3 | 2) + varint(len(payload)) + payload


seeds = sorted(glob.glob("fuzz/seeds/*.eml"))
os.makedirs("fuzz/seeds-grpc", exist_ok=True)
for i, path in enumerate(seeds):
    msg = open(path, "rb").read()
    name = os.path.basename(path)[:-4]
    user = b"user%d" % (i % 3)
    score = field(1, user) + field(2, msg)
    if i % 2:
        score += field(3, b"192.0.2.%d" % i)
    open("fuzz/seeds-grpc/score-%s.bin" % name, "wb").write(b"\x00" + score)
    train = field(1, user) + field(2, msg) + field(3, 1 + i % 2)
    if i % 3:
        train += field(4, b"id-%d" % i)
    open("fuzz/seeds-grpc/train-%s.bin" % name, "wb").write(b"\x01" + train)
batch = b"".join(
    field(1, field(1, b"u%d" % i) + field(2, open(p, "rb").read()))
    for i, p in enumerate(seeds[:4])
)
open("fuzz/seeds-grpc/batch-4.bin", "wb").write(b"\x02" + batch)
