"""Celery app for the workflows peer bench (Debian's python3-celery, Redis broker
and result backend; a chord needs a result backend).

The worker runs with the threads pool, so all tasks share this process and
record their times in-process (Celery redirects stdout, so they report
through Redis instead: RPUSH of one JSON object to REPORT_KEY).
  WFB_PORT   redis-server port (broker db 0, results db 1)
  WFB_MODE   chord | plain   (plain: the N-th member reports; chord: the callback)
  WFB_N      number of members
"""
import json
import os
import threading
import time

import redis
from celery import Celery
from celery.signals import worker_ready

PORT = int(os.environ.get("WFB_PORT", "6391"))
MODE = os.environ.get("WFB_MODE", "chord")
N = int(os.environ.get("WFB_N", "10000"))
READY_KEY, REPORT_KEY = "wfbench:ready", "wfbench:report"

app = Celery("wfbench", broker=f"redis://127.0.0.1:{PORT}/0", backend=f"redis://127.0.0.1:{PORT}/1")
app.conf.update(broker_connection_retry_on_startup=True, worker_hijack_root_logger=False)

_r = redis.Redis(port=PORT)
_lock = threading.Lock()
_st = {"done": 0, "last_member_end": 0.0}


def _report(**kw):
    _r.rpush(REPORT_KEY, json.dumps(dict(kw, done=_st["done"])))


@worker_ready.connect
def _ready(**_):
    _r.set(READY_KEY, 1)


@app.task(name="wf.member")
def member(i):
    """No-op member: records when it finished."""
    with _lock:
        _st["done"] += 1
        _st["last_member_end"] = max(_st["last_member_end"], time.time())
        done = _st["done"]
    if MODE == "plain" and done == N:
        _report(last_member_end=_st["last_member_end"], cb_end=time.time())


@app.task(name="wf.callback")
def callback(results):
    """No-op chord callback (receives the N member results)."""
    start = time.time()
    _report(last_member_end=_st["last_member_end"], cb_start=start, cb_end=time.time(), nresults=len(results))
