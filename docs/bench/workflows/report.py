#!/usr/bin/python3
"""Turns the JSON lines of bullmq.js / celery_bench.py into results.md (stdout).
  report.py RAW.jsonl > results.md
Figures are medians over the runs; ratio = median group+callback / median plain."""
import json
import platform
import statistics as st
import subprocess
import sys
import time
from collections import defaultdict

runs = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
by = defaultdict(list)  # (peer, version, mode) -> runs
for r in runs:
    by[(r["peer"], r["version"], "plain" if r["mode"] == "plain" else "group")].append(r)


def sh(cmd):
    try:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True).stdout.strip()
    except OSError:
        return "?"


NAMES = {"bullmq": "BullMQ (FlowProducer: parent + children)", "celery": "Celery (chord, threads pool)",
         "forgeq": "forgeq (workflow.Group(...).Then)"}
n = runs[0]["n"] if runs else 0
print(f"""# Workflows peer bench: group of {n:,} no-op members + 1 callback

Issue #12. Produced by `docs/bench/workflows/run.sh` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.
Each figure is the median of {max((len(v) for v in by.values()), default=0)} runs; every run starts a fresh worker
(concurrency 50, otherwise the peer's defaults) on an empty redis-server of its own.

- **group+callback total**: from the start of the submission (flow add / chord apply) to the end of the callback.
- **plain total**: the same {n:,} no-op jobs enqueued the peer's normal bulk way (BullMQ `addBulk`, Celery a
  `delay()` loop, forgeq 32 concurrent enqueues), drained by the same worker, from the start of the enqueue to the end of the last job.
- **ratio**: group+callback total / plain total (the cost of the workflow machinery).
- **callback latency**: from the end of the last member's handler (latest finish time any member
  recorded) to the start of the callback's handler, both clocks in the worker process.

| peer | version | group+callback total ms | plain total ms | ratio | callback latency ms (p50 over runs) |
|---|---|---:|---:|---:|---:|""")
for peer in ("bullmq", "celery", "forgeq"):
    keys = [k for k in by if k[0] == peer]
    if not keys:
        print(f"| {NAMES[peer]} | not run | | | | |")
        continue
    ver = keys[0][1]
    g, p = by.get((peer, ver, "group"), []), by.get((peer, ver, "plain"), [])
    gt = st.median(r["total_ms"] for r in g) if g else None
    pt = st.median(r["total_ms"] for r in p) if p else None
    lat = st.median(r["cb_latency_ms"] for r in g) if g else None
    f = lambda v, d=0: "—" if v is None else f"{v:,.{d}f}"
    print(f"| {NAMES[peer]} | {ver} | {f(gt)} | {f(pt)} | {f(gt / pt if gt and pt else None, 2)} | {f(lat, 1)} |")

print("""
Notes: BullMQ parent and children share one queue and one worker; all jobs use
`removeOnComplete/removeOnFail: true` as in shared/bench/peers, and the plain path is one `addBulk` of all
jobs (FlowProducer.add is likewise one transaction). Celery runs `--pool threads -c 50` (its default pool is
prefork; threads 50 is the shared peer bench's setting) with a Redis result backend (a chord needs one), so
members store results in both modes and the callback receives all of them. In both peers the worker is
already running during the submission, so the totals include the submission (see the submit column).
forgeq runs `BenchmarkGroupCallback` (workflow/bench_test.go) on the same redis-server: a worker with its
defaults and concurrency 50; the plain path is 32 concurrent `Enqueue` calls (asynq has no bulk enqueue),
as `Submit` enqueues a group's members; its version column is the commit.""")
print("\n## Per run\n\n| peer | mode | run | submit ms | total ms | callback latency ms |\n|---|---|---:|---:|---:|---:|")
for r in runs:
    lat = "" if r["cb_latency_ms"] is None else f"{r['cb_latency_ms']:.3f}"
    print(f"| {r['peer']} {r['version']} | {r['mode']} | {r['run']} | {r['submit_ms']:,.1f} | {r['total_ms']:,.1f} | {lat} |")

cpu = sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2").strip()
env = [
    f"node {sh('node --version')}, ioredis " + sh("node -p \"require('ioredis/package.json').version\""),
    f"python {platform.python_version()}, "
    + sh("/usr/bin/python3 -c 'import kombu, redis; print(\"kombu\", kombu.__version__, \"redis-py\", redis.__version__)'"),
    sh("redis-server --version"),
    f"cpu: {cpu} x {sh('nproc')}, "
    f"load1 at the end: {open('/proc/loadavg').read().split()[0]}",
]
print("\n## Environment\n\n" + "\n".join("- " + e for e in env))
