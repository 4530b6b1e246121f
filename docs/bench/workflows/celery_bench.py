#!/usr/bin/python3
"""Celery side of the workflows peer bench (issue #12).
  /usr/bin/python3 celery_bench.py --port 6391 --n 10000 --runs 3
Per run and mode: flush the (own) redis-server, start a fresh worker
(threads pool, concurrency 50), wait for it, submit, wait for its report.
  chord: chord(group of N no-op members, callback).apply_async()
  plain: the same N members with member.delay() in a loop, no callback
Prints one JSON line per run like bullmq.js.
"""
import argparse
import json
import os
import subprocess
import sys
import time

ap = argparse.ArgumentParser()
ap.add_argument("--port", type=int, default=6391)
ap.add_argument("--n", type=int, default=10000)
ap.add_argument("--runs", type=int, default=3)
ap.add_argument("--log", default=os.devnull, help="worker output goes here")
a = ap.parse_args()
os.environ.update(WFB_PORT=str(a.port), WFB_N=str(a.n))

import celery  # noqa: E402
from celery import chord, group  # noqa: E402
import celery_tasks as t  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
WORKER = [sys.executable, "-m", "celery", "-A", "celery_tasks", "worker", "--pool", "threads", "-c", "50",
          # same flags as the shared peer bench: no cluster chatter at start-up
          "--without-heartbeat", "--without-gossip", "--without-mingle", "-l", "WARNING"]


def one_run(mode, run):
    t._r.flushall()
    with open(a.log, "a") as log:
        w = subprocess.Popen(WORKER, cwd=HERE, env=dict(os.environ, WFB_MODE=mode), stdout=log, stderr=log)
    try:
        for _ in range(600):  # up to 60 s for the worker to come up
            if t._r.get(t.READY_KEY):
                break
            time.sleep(0.1)
        else:
            raise SystemExit("celery worker did not become ready")
        t0 = time.time()
        if mode == "chord":
            chord(group(t.member.s(i) for i in range(a.n)), t.callback.s()).apply_async()
        else:
            for i in range(a.n):
                t.member.delay(i)
        submit = time.time() - t0
        got = t._r.blpop(t.REPORT_KEY, timeout=600)
        if not got:
            raise SystemExit(f"no report from the celery worker ({mode})")
        r = json.loads(got[1])
    finally:
        w.terminate()  # warm shutdown; everything has run by now
        w.wait(timeout=60)
    if r["done"] != a.n:
        raise SystemExit(f"only {r['done']} of {a.n} members ran")
    if mode == "chord" and r["nresults"] != a.n:
        raise SystemExit(f"callback got {r['nresults']} results, not {a.n}")
    return dict(peer="celery", version=celery.__version__, mode=mode, run=run, n=a.n,
                submit_ms=round(submit * 1e3, 1), total_ms=round((r["cb_end"] - t0) * 1e3, 1),
                cb_latency_ms=round((r["cb_start"] - r["last_member_end"]) * 1e3, 3) if mode == "chord" else None)


for run in range(1, a.runs + 1):
    for mode in ("chord", "plain"):
        print(json.dumps(one_run(mode, run)), flush=True)
