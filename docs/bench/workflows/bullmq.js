// BullMQ side of the workflows peer bench (issue #12).
//   node bullmq.js --port 6391 --n 10000 --runs 3
// Per run and mode it forks a fresh worker (this file with "worker"), waits
// until it is ready, submits from this process and waits for the worker's
// report. Modes:
//   flow:  FlowProducer.add of one parent ("callback") with N no-op children
//   plain: Queue.addBulk of the same N no-op jobs, no parent
// Prints one JSON line per run: {peer, version, mode, run, total_ms, cb_latency_ms}.
'use strict';
const { fork } = require('node:child_process');
const { performance } = require('node:perf_hooks');
const { Queue, Worker, FlowProducer } = require('bullmq');
const IORedis = require('ioredis');

const arg = (name, def) => {
  const i = process.argv.indexOf('--' + name);
  return i < 0 ? def : process.argv[i + 1];
};
const port = Number(arg('port', 6391));
const n = Number(arg('n', 10000));
const runs = Number(arg('runs', 3));
const QNAME = 'wf';
const connection = { host: '127.0.0.1', port, maxRetriesPerRequest: null };
// Wall clock in ms with µs resolution; comparable across the two processes.
const nowMs = () => performance.timeOrigin + performance.now();
// Same options as the shared peer bench: completed jobs are not kept.
const jobOpts = { removeOnComplete: true, removeOnFail: true };

// ---- worker process: concurrency 50, otherwise BullMQ's defaults.
// Members record their finish time in-process (end of the handler); the
// callback (or, in plain mode, the N-th member) reports to the parent.
function worker(mode) {
  let done = 0;
  let lastMemberEnd = 0;
  const w = new Worker(
    QNAME,
    async (job) => {
      if (job.name === 'callback') {
        const start = nowMs();
        // no-op callback; BullMQ marks it completed once this returns
        setImmediate(() => process.send({ lastMemberEnd, cbStart: start, cbEnd: nowMs(), done }));
        return;
      }
      lastMemberEnd = Math.max(lastMemberEnd, nowMs()); // no-op member
      if (++done === n && mode === 'plain') {
        setImmediate(() => process.send({ lastMemberEnd, cbEnd: nowMs(), done }));
      }
    },
    { connection, concurrency: 50 },
  );
  w.on('error', (e) => console.error('worker error', e));
  w.waitUntilReady().then(() => process.send('ready'));
}

// ---- driver: one measured run of a mode
async function oneRun(mode, run) {
  const child = fork(__filename, ['worker', mode, '--port', String(port), '--n', String(n)]);
  const msg = (m) => new Promise((res) => child.once('message', res));
  if ((await msg()) !== 'ready') throw new Error('worker not ready');
  const reply = msg();

  const t0 = nowMs();
  const children = Array.from({ length: n }, (_, i) => ({ name: 'member', queueName: QNAME, data: { i }, opts: jobOpts }));
  if (mode === 'flow') {
    const fp = new FlowProducer({ connection });
    await fp.add({ name: 'callback', queueName: QNAME, data: {}, opts: jobOpts, children });
    await fp.close();
  } else {
    const q = new Queue(QNAME, { connection });
    await q.addBulk(children.map(({ name, data, opts }) => ({ name, data, opts })));
    await q.close();
  }
  const submitMs = nowMs() - t0;
  const r = await reply;
  child.kill('SIGTERM');
  await new Promise((res) => child.once('exit', res));
  if (r.done !== n) throw new Error(`only ${r.done} of ${n} members ran`);
  return {
    peer: 'bullmq', version: require('bullmq/package.json').version, mode, run, n,
    submit_ms: +submitMs.toFixed(1),
    total_ms: +(r.cbEnd - t0).toFixed(1),
    cb_latency_ms: mode === 'flow' ? +(r.cbStart - r.lastMemberEnd).toFixed(3) : null,
  };
}

async function main() {
  const redis = new IORedis(connection);
  for (let run = 1; run <= runs; run++) {
    for (const mode of ['flow', 'plain']) {
      await redis.flushall(); // our own redis-server: start each run empty
      console.log(JSON.stringify(await oneRun(mode, run)));
    }
  }
  await redis.quit();
}

if (process.argv[2] === 'worker') worker(process.argv[3]);
else main().catch((e) => { console.error(e); process.exit(1); });
