#!/usr/bin/env python3
"""Whether a generation seal in progress shows in Score or Train latency
(docs/FAULTS.md, "Corruption": the seal's cost), from the real binary.

A seal (`Store::seal_generation`, every `--seal-interval`, default 60 s) is
a sled flush, three fsyncs and a rename on the blocking pool. This script
trains 100 users first (`chaff loadtest --rpc train`, one server run on a
fresh data directory), then, on that same directory, alternates two server
settings round by round: `--seal-interval 1s` (a seal every second of the
phases) and the default 60 s (no seal within a phase: the first falls 60 s
after the start). Each server run takes a Score phase then a durable Train
phase (`chaff loadtest --users 100 --concurrency 8 --json`: within the
server's default admission bounds, so no call is shed), and prints one
JSON line per phase; the medians per setting and RPC come last.

  scripts/seal_latency.py --binary target/release/chaff \\
      --corpus target/corpus/spamassassin/index --rounds 3 --duration 10s
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys


class Server:
    def __init__(self, binary, data, flags):
        self.p = subprocess.Popen(
            [binary, "serve", "--data", data, "--listen", "127.0.0.1:0",
             "--log", "warn", "--stats-interval", "0s",
             "--shutdown-grace", "1s", *flags],
            stdout=subprocess.PIPE, text=True)
        first = self.p.stdout.readline().strip()
        if not first.startswith("chaff listening on "):
            sys.exit(f"chaff serve did not start: {first!r}")
        self.grpc = "http://" + first.removeprefix("chaff listening on ")

    def stop(self):
        self.p.terminate()
        self.p.wait(timeout=120)


def loadtest(binary, server, corpus, rpc, duration, users, concurrency):
    cmd = [binary, "loadtest", "--server", server.grpc, "--corpus", corpus,
           "--rpc", rpc, "--duration", duration, "--users", str(users),
           "--concurrency", str(concurrency), "--json"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"loadtest failed: {r.stderr}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--binary", default="target/release/chaff")
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--data", default="target/tmp/seal-latency")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", default="10s")
    ap.add_argument("--train-first", default="8s")
    ap.add_argument("--users", type=int, default=100)
    # Within `chaff serve`'s default admission (4 read slots and 16
    # waiting on 2 cores): no call shed, so every call is measured.
    ap.add_argument("--concurrency", type=int, default=8)
    a = ap.parse_args()

    shutil.rmtree(a.data, ignore_errors=True)
    os.makedirs(a.data, exist_ok=True)
    s = Server(a.binary, a.data, [])
    loadtest(a.binary, s, a.corpus, "train", a.train_first, a.users, a.concurrency)
    s.stop()

    settings = [("1s", ["--seal-interval", "1s"]), ("60s", [])]
    results = {}
    for rnd in range(a.rounds):
        for name, flags in settings:
            s = Server(a.binary, a.data, flags)
            for rpc in ["score", "train"]:
                r = loadtest(a.binary, s, a.corpus, rpc, a.duration, a.users,
                             a.concurrency)
                row = {"round": rnd, "seal_interval": name, "rpc": rpc,
                       "calls_per_second": round(r["calls_per_second"], 1),
                       "errors": r["errors_by_code"], **r["latency_ms"]}
                print(json.dumps(row), flush=True)
                results.setdefault((name, rpc), []).append(row)
            s.stop()
    for (name, rpc), rows in sorted(results.items()):
        med = {k: statistics.median(r[k] for r in rows)
               for k in ["calls_per_second", "p50", "p99", "max"]}
        print(json.dumps({"median_of": len(rows), "seal_interval": name,
                          "rpc": rpc, **med}))


if __name__ == "__main__":
    main()
