package deploy

import (
	"bytes"
	"debug/elf"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/compose-spec/compose-go/v2/types"
)

// TestDockerBuild runs the Dockerfile's go build commands as written (only
// the -o directory changes), checks that the binaries are static, and runs
// the built worker as each compose service would: with the image's and the
// service's environment (Redis and the listen address pointed at this
// machine), until the service's own healthcheck command passes, then
// SIGTERM, which it must survive with exit 0 within the stop grace period.
func TestDockerBuild(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the image's binaries (about a minute): not with -short")
	}
	root := repoRoot(t)
	df := parseDockerfile(t)
	dir := t.TempDir()

	built := map[string]string{} // -o path in the build stage: local path
	for _, b := range df.buildStage(t).goBuilds(t) {
		local := filepath.Join(dir, path.Base(b.output))
		args := slices.Clone(b.args)
		for i, a := range args {
			if a == "-o" {
				args[i+1] = local
			} else if strings.HasPrefix(a, "-o=") {
				args[i] = "-o=" + local
			}
		}
		cmd := exec.Command("go", args...)
		cmd.Dir = root // the compose build context, the Dockerfile's COPY . .
		cmd.Env = append(buildEnv(), b.env...)
		start := time.Now()
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("Dockerfile:%d: %s go %s: %v\n%s", b.line, strings.Join(b.env, " "), strings.Join(b.args, " "), err, out)
		}
		t.Logf("Dockerfile:%d: go %s: %v", b.line, strings.Join(b.args, " "), time.Since(start).Round(time.Millisecond))
		built[b.output] = local
	}

	image := map[string]string{} // path in the final image: local path
	for _, c := range df.final().copiedFrom(t) {
		local, ok := built[c.src]
		if !ok {
			t.Fatalf("final stage copies %s, which no go build wrote", c.src)
		}
		image[c.dst] = local
	}
	for _, dst := range slices.Sorted(func(yield func(string) bool) {
		for k := range image {
			if !yield(k) {
				return
			}
		}
	}) {
		checkStatic(t, dst, image[dst])
		cmd := exec.Command(image[dst], "--help")
		cmd.Env = []string{}
		if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), "Usage:") {
			t.Errorf("%s --help: %v\n%s", dst, err, out)
		}
	}
	if t.Failed() {
		return
	}

	p := mustLoadCompose(t)
	for _, s := range workerServices(t, p) {
		t.Run(s.Name, func(t *testing.T) { runService(t, p, df, s, image) })
	}
}

// buildEnv is this process's environment without the settings the golang
// image does not set either, so that a developer's GOFLAGS or GOARCH cannot
// change what the Dockerfile's commands build.
func buildEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch k {
		case "GOFLAGS", "GOOS", "GOARCH", "CGO_ENABLED", "GOEXPERIMENT":
			continue
		}
		env = append(env, kv)
	}
	return env
}

// checkStatic checks that an ELF binary needs no dynamic loader and no
// shared library: the final image has neither.
func checkStatic(t *testing.T, name, bin string) {
	t.Helper()
	deps, err := dynamicDeps(bin)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	if len(deps) != 0 {
		t.Errorf("%s is not a static binary: it needs %v", name, deps)
	}
}

// dynamicDeps lists what an ELF binary needs at run time beyond the
// kernel: its interpreter, a dynamic section, shared libraries.
func dynamicDeps(bin string) ([]string, error) {
	f, err := elf.Open(bin)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var deps []string
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
			deps = append(deps, p.Type.String())
		}
	}
	libs, err := f.ImportedLibraries()
	if err != nil {
		return nil, err
	}
	return append(deps, libs...), nil
}

func TestDynamicDeps(t *testing.T) {
	// The checker itself: a dynamically linked system binary must fail it.
	const sh = "/bin/sh"
	deps, err := dynamicDeps(sh)
	if err != nil {
		t.Skipf("%s: %v", sh, err)
	}
	if len(deps) == 0 {
		t.Skipf("%s is static here", sh)
	}
	if !slices.Contains(deps, elf.PT_INTERP.String()) {
		t.Errorf("dynamicDeps(%s) = %v, want its interpreter among them", sh, deps)
	}
}

// runService runs the built worker with a compose service's environment.
func runService(t *testing.T, p *types.Project, df dockerfile, s types.ServiceConfig, image map[string]string) {
	redis := miniredis.RunT(t)
	port := freePort(t)
	env := localEnv(t, workerEnv(t, df, s), redis.Addr())
	host, _, err := net.SplitHostPort(env["HTTP_ADDR"])
	if err != nil || !isLoopbackHost(host) {
		// A non-loopback address would listen beyond this machine; the
		// static checks cover the credentials it needs.
		host = "127.0.0.1"
	}
	env["HTTP_ADDR"] = net.JoinHostPort(host, port)

	// The service's healthcheck, aimed at the port chosen here.
	pr, err := probeCommand(s.HealthCheck.Test)
	if err != nil {
		t.Fatal(err)
	}
	bin, ok := image[pr.binary]
	if !ok {
		t.Fatalf("healthcheck runs %s, which the image does not have", pr.binary)
	}
	probeURL := *pr.url
	probeURL.Host = net.JoinHostPort(pr.url.Hostname(), port)
	healthy := func() bool {
		cmd := exec.Command(bin, "--probe", probeURL.String())
		cmd.Env = envList(env) // docker runs it in the container's environment
		return cmd.Run() == nil
	}
	if healthy() {
		t.Fatalf("the healthcheck passes before the worker runs: something else answers on %s", probeURL.Host)
	}

	var out bytes.Buffer
	worker := exec.Command(image[df.final().entrypoint(t)[0]])
	worker.Env = envList(env)
	worker.Stdout, worker.Stderr = &out, &out
	if err := worker.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- worker.Wait() }()
	stopped := false
	defer func() {
		if !stopped {
			_ = worker.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("worker output:\n%s", out.String())
		}
	}()

	// Healthy within what the healthcheck allows: the start period, then
	// its retries.
	hc := s.HealthCheck
	allow := 30 * time.Second
	if hc.StartPeriod != nil && hc.Interval != nil && hc.Retries != nil {
		allow = time.Duration(*hc.StartPeriod) + time.Duration(*hc.Interval)*time.Duration(*hc.Retries)
	}
	start := time.Now()
	for !healthy() {
		select {
		case err := <-exited:
			stopped = true
			t.Fatalf("the worker exited before it was healthy: %v", err)
		case <-time.After(200 * time.Millisecond):
		}
		if time.Since(start) > allow {
			t.Fatalf("the healthcheck %q did not pass within %v", hc.Test, allow)
		}
	}
	t.Logf("healthy after %v", time.Since(start).Round(time.Millisecond))

	// The compose enqueue tool puts a task through this worker.
	if tool, err := p.GetService("enqueue"); err == nil && len(tool.Entrypoint) == 1 {
		cmd := exec.Command(image[tool.Entrypoint[0]], "--wait", "--wait-timeout", "30s",
			"data:process", `{"key":"deploy:`+s.Name+`","work":100}`)
		cmd.Env = envList(localEnv(t, workerEnv(t, df, tool), redis.Addr()))
		b, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("enqueue --wait data:process: %v\n%s", err, b)
		}
		t.Logf("enqueue --wait data:process: %s", lastLine(b))
	}

	// docker stop: the stop signal, then SIGKILL after the grace period.
	grace := defaultStopGracePeriod
	if s.StopGracePeriod != nil {
		grace = time.Duration(*s.StopGracePeriod)
	}
	if err := worker.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	select {
	case err := <-exited:
		stopped = true
		if err != nil {
			t.Errorf("the worker exited with %v after SIGTERM, want 0", err)
		}
		t.Logf("stopped %v after SIGTERM (grace period %v)", time.Since(start).Round(time.Millisecond), grace)
	case <-time.After(grace):
		t.Fatalf("the worker still runs %v after SIGTERM: Docker would kill it", grace)
	}
	if healthy() {
		t.Error("the healthcheck passes after the worker exited")
	}
}

// localEnv is a container environment with Redis's service name replaced by
// a local address. It keeps nothing of this process's environment.
func localEnv(t *testing.T, env map[string]string, redisAddr string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for k, v := range env {
		out[k] = v
	}
	u, err := url.Parse(out["REDIS_CONNECTION_URL"])
	if err != nil || u.Hostname() != "redis" {
		t.Fatalf("REDIS_CONNECTION_URL %q does not name the redis service", out["REDIS_CONNECTION_URL"])
	}
	u.Host = redisAddr
	out["REDIS_CONNECTION_URL"] = u.String()
	return out
}

func envList(env map[string]string) []string {
	var out []string
	for k, v := range env {
		out = append(out, k+"="+v)
	}
	slices.Sort(out)
	return out
}

// freePort is a loopback TCP port nothing listens on now.
func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
}

func lastLine(b []byte) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return lines[len(lines)-1]
}
