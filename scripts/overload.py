#!/usr/bin/env python3
"""Overload figures for docs/PERFORMANCE.md ("Overload"), from the real binary.

For each admission setting (off: no bound; on: `chaff serve`'s defaults, or
the flags given with --on), start `chaff serve` on a fresh data directory
with /metrics, then run `chaff loadtest` phases against it and print one
JSON line per phase: the loadtest report (accepted calls/s, p50/p99 of the
accepted, shed count and shed latency), the server's peak RSS during the
phase (VmHWM from /proc/PID/status, reset before the phase by writing 5 to
/proc/PID/clear_refs; needs the server to be ours), its RSS before, and
durable replies per storage flush over the phase (from /metrics:
chaff_storage_durable_waits_total / chaff_storage_flushes_total deltas).

Settings alternate within one run (off, on, off, on, ...) so they are
compared on the same machine minutes. Usage:

  scripts/overload.py --corpus target/corpus/spamassassin/index \\
      --score-capacity 8 --train-capacity 32 --rounds 2 --duration 10s

  scripts/overload.py --corpus ... --sweep 1,2,4,8,16,32   # find capacity
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request


def metrics(addr):
    text = urllib.request.urlopen(f"http://{addr}/metrics", timeout=10).read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith("#") or " " not in line:
            continue
        k, v = line.rsplit(" ", 1)
        try:
            out[k] = float(v)
        except ValueError:
            pass
    return out


def proc_kib(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


class Server:
    def __init__(self, binary, data, flags):
        shutil.rmtree(data, ignore_errors=True)
        os.makedirs(data, exist_ok=True)
        self.p = subprocess.Popen(
            [binary, "serve", "--data", data, "--listen", "127.0.0.1:0",
             "--metrics-listen", "127.0.0.1:0", "--log", "warn",
             "--stats-interval", "0s", "--shutdown-grace", "1s", *flags],
            stdout=subprocess.PIPE, text=True)
        first = self.p.stdout.readline().strip()
        second = self.p.stdout.readline().strip()
        self.grpc = "http://" + first.removeprefix("chaff listening on ")
        self.metrics = re.sub(r"^chaff metrics on http://|/metrics$", "", second)
        self.pid = self.p.pid

    def stop(self):
        self.p.terminate()
        self.p.wait(timeout=60)


def loadtest(binary, server, corpus, rpc, conc, duration, users, extra):
    cmd = [binary, "loadtest", "--server", server.grpc, "--corpus", corpus,
           "--rpc", rpc, "--concurrency", str(conc), "--duration", duration,
           "--users", str(users), "--json", *extra]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"loadtest failed: {r.stderr}")
    return json.loads(r.stdout)


def phase(args, server, setting, rpc, conc, users=100):
    with open(f"/proc/{server.pid}/clear_refs", "w") as f:
        f.write("5")
    rss_before = proc_kib(server.pid, "VmRSS")
    m0 = metrics(server.metrics)
    extra = []
    if args.deadline:
        extra += ["--deadline", args.deadline]
    if args.backoff:
        extra += ["--backoff", args.backoff]
    r = loadtest(args.bin, server, args.corpus, rpc, conc, args.duration, users, extra)
    m1 = metrics(server.metrics)
    hwm = proc_kib(server.pid, "VmHWM")
    d = lambda k: m1.get(k, 0) - m0.get(k, 0)
    waits, flushes = d("chaff_storage_durable_waits_total"), d("chaff_storage_flushes_total")
    out = {
        "setting": setting, "rpc": rpc, "concurrency": conc,
        "accepted_per_s": round(r["calls_per_second"], 1),
        "p50_ms": r["latency_ms"]["p50"], "p99_ms": r["latency_ms"]["p99"],
        "max_ms": r["latency_ms"]["max"],
        "shed": r["shed"]["calls"], "shed_per_s": round(r["shed"]["per_second"], 1),
        "shed_p50_ms": r["shed"]["latency_ms"]["p50"],
        "shed_p99_ms": r["shed"]["latency_ms"]["p99"],
        "errors_by_code": r["errors_by_code"],
        "rss_before_mib": round(rss_before / 1024, 1),
        "rss_peak_mib": round(hwm / 1024, 1),
        "replies_per_flush": round(waits / flushes, 2) if flushes else None,
        "flushes_per_s": round(flushes / r["duration_s"], 1),
        "refused": {k: m1[k] - m0.get(k, 0) for k in m1
                    if k.startswith("chaff_admission_refused_total")},
        "load_avg": os.getloadavg()[0],
        "utc": time.strftime("%H:%M:%S", time.gmtime()),
    }
    print(json.dumps(out), flush=True)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="target/release/chaff")
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--tmp", default="target/tmp/overload")
    ap.add_argument("--duration", default="10s")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--score-capacity", type=int, default=8)
    ap.add_argument("--train-capacity", type=int, default=32)
    ap.add_argument("--deadline", help="per-call grpc-timeout, e.g. 100ms")
    ap.add_argument("--backoff", help="client pause after a busy refusal, e.g. 10ms")
    ap.add_argument("--on", default="", help="serve flags for 'on' (default: serve's defaults)")
    ap.add_argument("--sweep", help="Score concurrencies to try with admission off")
    args = ap.parse_args()
    off = ["--max-concurrent-reads", "0", "--max-concurrent-writes", "0"]
    data = os.path.join(args.tmp, "data")
    if args.sweep:
        s = Server(args.bin, data, off)
        try:
            phase(args, s, "off", "train", 32)  # users with trained models
            for c in map(int, args.sweep.split(",")):
                phase(args, s, "off", "score", c)
        finally:
            s.stop()
        return
    settings = [("off", off), ("on", args.on.split())]
    for _ in range(args.rounds):
        for name, flags in settings:
            s = Server(args.bin, data, flags)
            try:
                phase(args, s, name, "train", args.train_capacity)
                phase(args, s, name, "train", 4 * args.train_capacity)
                phase(args, s, name, "score", args.score_capacity)
                phase(args, s, name, "score", 4 * args.score_capacity)
            finally:
                s.stop()
    shutil.rmtree(args.tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
