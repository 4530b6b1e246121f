#!/usr/bin/env bash
# Workflows peer bench (issue #12): a group of N no-op jobs + one callback on
# BullMQ flows and Celery chords, against the same N jobs enqueued plainly.
# Writes results.md beside this file and prints it.
#   docs/bench/workflows/run.sh
# Knobs: N=10000 RUNS=3 PORT=6391 ONLY=bullmq,celery,forgeq
# forgeq runs workflow.BenchmarkGroupCallback (10,000 members: N does not
# apply to it) against the same redis-server.
# Installs what it needs (npm into ./node_modules, Debian's python3-celery),
# starts its own redis-server on PORT (no persistence) and stops it at the end.
set -euo pipefail
cd "$(dirname "$0")"
N=${N:-10000} RUNS=${RUNS:-3} PORT=${PORT:-6391} ONLY=${ONLY:-bullmq,celery,forgeq}
TMP=$(mktemp -d)
RAW=$TMP/raw.jsonl
: > "$RAW"

# ---- installs (pinned as in shared/bench/peers: bullmq 6.7.0, celery 5.2.6)
if [[ $ONLY == *bullmq* && "$(node -p "require('bullmq/package.json').version" 2>/dev/null)" != 6.7.0 ]]; then
  npm install --no-audit --no-fund
fi
if [[ $ONLY == *celery* ]] && ! /usr/bin/python3 -c 'import celery, redis' 2>/dev/null; then
  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-celery=5.2.6-5 python3-redis ||
    { echo "python3-celery not installable: skipping Celery" >&2; ONLY=${ONLY//celery/}; }
fi

# ---- our own redis-server
if redis-cli -p "$PORT" ping >/dev/null 2>&1; then echo "port $PORT is taken; set PORT=" >&2; exit 1; fi
redis-server --port "$PORT" --bind 127.0.0.1 --save '' --appendonly no --databases 64 --logfile "$TMP/redis.log" &
REDIS_PID=$!
trap 'kill "$REDIS_PID" 2>/dev/null; wait "$REDIS_PID" 2>/dev/null; rm -rf "$TMP"' EXIT
for _ in $(seq 50); do redis-cli -p "$PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done

# ---- run (each prints one JSON line per run; worker logs go to $TMP)
if [[ $ONLY == *bullmq* ]]; then
  node bullmq.js --port "$PORT" --n "$N" --runs "$RUNS" | tee -a "$RAW"
fi
if [[ $ONLY == *celery* ]]; then
  /usr/bin/python3 celery_bench.py --port "$PORT" --n "$N" --runs "$RUNS" --log "$TMP/celery.log" | tee -a "$RAW" ||
    { echo "celery run failed; worker log:" >&2; tail -30 "$TMP/celery.log" >&2; }
fi

if [[ $ONLY == *forgeq* ]]; then
  # The Go benchmark flushes its database and starts a fresh worker per run.
  (cd ../../.. && REDIS_TEST_URL="redis://127.0.0.1:$PORT" \
    go test -run '^$' -bench 'GroupCallback' -benchtime 1x -count "$RUNS" ./workflow) |
    /usr/bin/python3 gobench.py "$(cd ../../.. && git describe --always --dirty)" | tee -a "$RAW"
fi

/usr/bin/python3 report.py "$RAW" > results.md
cat results.md
