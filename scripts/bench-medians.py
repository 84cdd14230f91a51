#!/usr/bin/env python3
"""Prints the median of every criterion benchmark under target/criterion.

criterion's console line shows a confidence interval of the mean; docs quote
medians (robust on this noisy 2-core machine), which criterion stores in
target/criterion/<group>/<bench>/new/estimates.json.
"""
import json
import pathlib
import sys

root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "target/criterion")
for est in sorted(root.glob("*/*/new/estimates.json")):
    name = str(est.parent.parent.relative_to(root))
    median_ns = json.loads(est.read_text())["median"]["point_estimate"]
    print(f"{name:<45} median {median_ns / 1000:10.2f} µs")
