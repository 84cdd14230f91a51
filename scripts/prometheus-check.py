#!/usr/bin/env python3
"""Real Prometheus scrapes a loaded chaff; every expression of
docs/grafana-chaff.json is then evaluated by Prometheus and printed.

    scripts/prometheus-check.py CORPUS_INDEX

Needs target/release/chaff and Debian's `prometheus` (apt-get install
prometheus). Ports 50985 (gRPC), 50986 (metrics), 19090 (Prometheus).
Exits non-zero if Prometheus refuses an expression. An empty result is
printed as such (no errors happened; a rate over a window with no calls).
"""
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

corpus = sys.argv[1]
binary = os.environ.get("BIN", "target/release/chaff")
work = tempfile.mkdtemp()
cfg = os.path.join(work, "prometheus.yml")
open(cfg, "w").write(
    "global: {scrape_interval: 1s}\n"
    "scrape_configs:\n"
    "  - job_name: chaff\n"
    "    static_configs: [{targets: ['127.0.0.1:50986']}]\n"
)
chaff = subprocess.Popen(
    [binary, "serve", "--data", os.path.join(work, "data"), "--listen", "127.0.0.1:50985",
     "--metrics-listen", "127.0.0.1:50986", "--log", "warn", "--stats-interval", "0s"],
    stdout=subprocess.DEVNULL)
prom = subprocess.Popen(
    ["prometheus", f"--config.file={cfg}", f"--storage.tsdb.path={work}/tsdb",
     "--web.listen-address=127.0.0.1:19090", "--log.level=warn"],
    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
try:
    time.sleep(2)
    lt = [binary, "loadtest", "--server", "http://127.0.0.1:50985", "--corpus", corpus,
          "--concurrency", "32", "--users", "100"]
    subprocess.run(lt + ["--rpc", "train", "--duration", "6s"], check=True, stdout=subprocess.DEVNULL)
    subprocess.run(lt + ["--duration", "10s"], check=True, stdout=subprocess.DEVNULL)
    time.sleep(2)
    dash = json.load(open("docs/grafana-chaff.json"))
    failed = 0
    for panel in dash["panels"]:
        for t in panel["targets"]:
            expr = (t["expr"].replace("$job", ".*").replace("$instance", ".*")
                    .replace("$__rate_interval", "10s"))
            url = "http://127.0.0.1:19090/api/v1/query?" + urllib.parse.urlencode({"query": expr})
            answer = json.load(urllib.request.urlopen(url))
            result = answer.get("data", {}).get("result", [])
            shown = ", ".join(
                f"{' '.join(v for k, v in r['metric'].items() if k not in ('job', 'instance', '__name__'))}"
                f"={float(r['value'][1]):.4g}" for r in result[:6])
            ok = answer.get("status") == "success"
            failed += not ok
            print(f"{'ok ' if ok else 'BAD'} {panel['title']} [{t['refId']}]: {shown or '(empty)'}")
    sys.exit(1 if failed else 0)
finally:
    prom.terminate()
    chaff.terminate()
    prom.wait()
    chaff.wait()
