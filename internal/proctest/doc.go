// Package proctest runs forgeq's binaries and real redis-server processes
// for tests that need whole processes: scale-out, faults and end-to-end
// tests.
//
// Every helper takes a [testing.TB], fails the test with tb.Fatal and
// registers its teardown with tb.Cleanup: processes still running when the
// test ends are killed, servers are shut down, temp dirs removed.
//
// # Binaries
//
// [BuildWorker] and [BuildEnqueue] build cmd/worker and cmd/enqueue once per
// test process (with -race when the tests run with it) and return the
// binary's path; [Build] does the same for another main package of the
// module, and [BuildModule] for the main package of another module in the
// tree (examples/reports). The binaries live in one temp dir for the whole test
// process; a TestMain that calls [RemoveBuilds] after m.Run deletes it.
//
// # Processes
//
// [Start] runs a binary with a small environment (PATH, HOME and TMPDIR of
// the test, then the given variables) and captures its stdout and stderr:
// [Proc.Logs], [Proc.WaitForLog], [Proc.JSONLogLines] (the worker logs JSON
// when its stderr is not a terminal), [Proc.Signal], [Proc.Kill],
// [Proc.Wait]. [StartTerminal] runs it on a pseudo-terminal instead, for
// what a program does differently on a terminal (colours, progress bars,
// console logs). The output also goes to a file in the test's temp dir, and is
// printed (its tail) when the test fails; with FORGEQ_ARTIFACTS_DIR set, a
// failed test's process logs are copied there.
//
// # Redis servers
//
// [RedisServer] starts a private redis-server on a free port, without
// persistence, for tests that stop, restart or freeze their server
// ([Redis.Stop], [Redis.Start], [Redis.Pause]) without disturbing the shared
// servers that .ci/run starts (see internal/redistest). [Sentinel] starts a
// master, a replica and three sentinels monitoring the master "forgeq", and
// can force a failover ([SentinelSet.Failover]).
//
// redis-server is looked up in PATH. When it is missing, the helpers skip
// the test, except under CI (CI non-empty), where they fail it.
//
// Sketch:
//
//	func TestOutage(t *testing.T) {
//		r := proctest.RedisServer(t)
//		w := proctest.Start(t, proctest.BuildWorker(t),
//			[]string{"REDIS_CONNECTION_URL=" + r.URL(), "HTTP_ADDR=off"})
//		if !w.WaitForLog(`"worker started"`, 10*time.Second) {
//			t.Fatal("worker did not start")
//		}
//		r.Stop()
//		time.Sleep(3 * time.Second)
//		r.Start()
//		...
//	}
package proctest
