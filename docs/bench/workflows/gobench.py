#!/usr/bin/python3
"""Turns `go test -bench GroupCallback -count N` output (stdin) into the JSON
lines report.py reads. gobench.py VERSION"""
import json
import re
import sys

runs = {"plain": 0, "group": 0}
for line in sys.stdin:
    m = re.match(r"BenchmarkGroupCallback/impl=(\w+)-\d+\s+\d+\s+(.*)", line)
    if not m:
        continue
    mode = "plain" if m.group(1) == "plain" else "group"
    metrics = {unit: float(v) for v, unit in re.findall(r"([\d.]+) ([\w/-]+)", m.group(2))}
    runs[mode] += 1
    print(json.dumps({
        "peer": "forgeq", "version": sys.argv[1], "mode": mode, "run": runs[mode], "n": 10000,
        "submit_ms": metrics.get("submit-ms", 0), "total_ms": metrics["total-ms"],
        "cb_latency_ms": metrics.get("callback-ms"),
    }), flush=True)
