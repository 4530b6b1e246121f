package deploy

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
)

const (
	// passwordVar is the variable compose.yaml requires for the web login.
	passwordVar = "FORGEQ_HTTP_PASSWORD"
	// redisURL is where every forgeq service must find Redis.
	redisURL = "redis://redis:6379"
	// readyPath is the worker's readiness endpoint.
	readyPath = "/health/ready"

	// Defaults that apply when compose.yaml or the worker's environment
	// sets none: Docker's stop grace period, asynq's shutdown timeout (the
	// worker's WORKER_SHUTDOWN_TIMEOUT) and the web process's
	// HTTP_SHUTDOWN_TIMEOUT.
	defaultStopGracePeriod = 10 * time.Second
	defaultWorkerShutdown  = 8 * time.Second
	defaultHTTPShutdown    = 5 * time.Second
	// shutdownMargin is what the stop grace period must leave after the
	// longer of the two shutdown timeouts, for the steps that follow them:
	// draining accepted async cache writes and closing Redis.
	shutdownMargin = 2 * time.Second
)

// repoRoot is the repository root: the compose build context.
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("repository root: %v", err)
	}
	return root
}

// composeEnv is the environment compose.yaml is interpolated with: only
// what the test gives, never the caller's environment or a .env file.
func composeEnv() map[string]string {
	return map[string]string{passwordVar: "test-password"}
}

// loadCompose loads compose.yaml as `docker compose` would, with every
// profile enabled, through compose-go's loader, which interpolates,
// validates against the Compose schema, and normalizes.
func loadCompose(t *testing.T, env map[string]string) (*types.Project, error) {
	t.Helper()
	root := repoRoot(t)
	var pairs []string
	for k, v := range env {
		pairs = append(pairs, k+"="+v)
	}
	opts, err := cli.NewProjectOptions(
		[]string{filepath.Join(root, "compose.yaml")},
		cli.WithWorkingDirectory(root),
		cli.WithEnv(pairs),
		cli.WithProfiles([]string{"*"}),
	)
	if err != nil {
		t.Fatal(err)
	}
	return opts.LoadProject(context.Background())
}

func mustLoadCompose(t *testing.T) *types.Project {
	t.Helper()
	p, err := loadCompose(t, composeEnv())
	if err != nil {
		t.Fatalf("load compose.yaml: %v", err)
	}
	return p
}

// env is a service's environment variable, "" when unset.
func env(s types.ServiceConfig, name string) (string, bool) {
	v, ok := s.Environment[name]
	if !ok || v == nil {
		return "", false
	}
	return *v, true
}

// workerServices are the services that run the worker: built from the
// Dockerfile with its entrypoint (the worker) kept.
func workerServices(t *testing.T, p *types.Project) []types.ServiceConfig {
	t.Helper()
	var out []types.ServiceConfig
	for _, name := range slices.Sorted(func(yield func(string) bool) {
		for n := range p.Services {
			if !yield(n) {
				return
			}
		}
	}) {
		s := p.Services[name]
		if s.Build != nil && len(s.Entrypoint) == 0 {
			out = append(out, s)
		}
	}
	if len(out) == 0 {
		t.Fatal("compose.yaml has no service that runs the worker image's entrypoint")
	}
	return out
}

// parseSettingDuration parses a duration setting as the worker does: a Go
// duration or plain seconds.
func parseSettingDuration(s string) (time.Duration, error) {
	if n, err := strconv.ParseFloat(s, 64); err == nil {
		return time.Duration(n * float64(time.Second)), nil
	}
	return time.ParseDuration(s)
}

// isLoopbackHost reports whether host (an IP address or "localhost") can
// only be reached from its own machine.
func isLoopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Unmap().IsLoopback()
}

func TestComposeLoads(t *testing.T) {
	p := mustLoadCompose(t)
	for _, want := range []string{"redis", "worker"} {
		if _, ok := p.Services[want]; !ok {
			t.Errorf("compose.yaml has no service %q; services: %v", want, p.ServiceNames())
		}
	}
	if len(p.DisabledServices) != 0 {
		t.Errorf("services disabled with every profile enabled: %v", p.DisabledServiceNames())
	}
}

func TestComposeNeedsPassword(t *testing.T) {
	for name, env := range map[string]map[string]string{
		"unset": {},
		"empty": {passwordVar: ""},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := loadCompose(t, env)
			if err == nil {
				t.Fatalf("compose.yaml loads with %s %s: a default password would be committed", passwordVar, name)
			}
			if msg := err.Error(); !strings.Contains(msg, "set "+passwordVar) {
				t.Errorf("error %q does not tell to set %s", msg, passwordVar)
			}
		})
	}
	t.Run("no default in the file", func(t *testing.T) {
		// The interpolated project must carry exactly what the environment
		// gave, so no literal password can hide in the file.
		p := mustLoadCompose(t)
		for _, s := range workerServices(t, p) {
			if pw, ok := env(s, "HTTP_AUTH_PASSWORD"); ok && pw != composeEnv()[passwordVar] {
				t.Errorf("service %s: HTTP_AUTH_PASSWORD = %q, not the value of %s", s.Name, pw, passwordVar)
			}
		}
	})
}

func TestComposeRedis(t *testing.T) {
	p := mustLoadCompose(t)
	s, err := p.GetService("redis")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(s.Image, "redis:7") {
		t.Errorf("redis image = %q, want redis:7*", s.Image)
	}
	hc := s.HealthCheck
	if hc == nil || hc.Disable || len(hc.Test) < 2 {
		t.Fatalf("redis healthcheck = %+v, want one", hc)
	}
	if test := strings.Join(hc.Test, " "); !strings.Contains(test, "redis-cli") || !strings.Contains(test, "ping") {
		t.Errorf("redis healthcheck %q does not run redis-cli ping", test)
	}
	if s.Restart != types.RestartPolicyUnlessStopped {
		t.Errorf("redis restart = %q, want %q", s.Restart, types.RestartPolicyUnlessStopped)
	}
	if len(s.Ports) != 0 {
		t.Errorf("redis publishes %+v: it has no password", s.Ports)
	}

	// Persistence: append-only file on a named volume at /data, the
	// image's data directory.
	cmd := strings.Join(s.Command, " ")
	if !strings.Contains(cmd, "--appendonly yes") {
		t.Errorf("redis command %q does not turn on the append-only file", cmd)
	}
	var data *types.ServiceVolumeConfig
	for i, v := range s.Volumes {
		if v.Target == "/data" {
			data = &s.Volumes[i]
		}
	}
	switch {
	case data == nil:
		t.Error("redis has no volume on /data: its append-only file would die with the container")
	case data.Type != types.VolumeTypeVolume:
		t.Errorf("redis /data is a %s, want a named volume", data.Type)
	default:
		if _, ok := p.Volumes[data.Source]; !ok {
			t.Errorf("redis /data volume %q is not declared under volumes", data.Source)
		}
	}
}

func TestComposeWorkers(t *testing.T) {
	p := mustLoadCompose(t)
	df := parseDockerfile(t)
	root := repoRoot(t)
	for _, s := range workerServices(t, p) {
		t.Run(s.Name, func(t *testing.T) {
			// Built from this repository's Dockerfile.
			if s.Build.Context != root {
				t.Errorf("build context = %q, want the repository root %q", s.Build.Context, root)
			}
			if d := s.Build.Dockerfile; d != "Dockerfile" && d != filepath.Join(root, "Dockerfile") {
				t.Errorf("build dockerfile = %q, want Dockerfile", d)
			}

			dep, ok := s.DependsOn["redis"]
			if !ok {
				t.Errorf("does not depend on redis")
			} else if dep.Condition != types.ServiceConditionHealthy {
				t.Errorf("depends on redis with condition %q, want %q", dep.Condition, types.ServiceConditionHealthy)
			}

			if got, _ := env(s, "REDIS_CONNECTION_URL"); got != redisURL {
				t.Errorf("REDIS_CONNECTION_URL = %q, want %q", got, redisURL)
			}

			if s.Restart != types.RestartPolicyUnlessStopped {
				t.Errorf("restart = %q, want %q", s.Restart, types.RestartPolicyUnlessStopped)
			}
			if s.StopSignal != "" && s.StopSignal != "SIGTERM" {
				t.Errorf("stop_signal = %q: the worker shuts down gracefully on SIGTERM", s.StopSignal)
			}
			checkGracePeriod(t, s)

			// Non-root: the image's user, unless the service overrides it.
			user := df.final().user()
			if s.User != "" {
				user = s.User
			}
			if !isNonRoot(user) {
				t.Errorf("runs as user %q, want a non-root one", user)
			}

			httpAddr := workerEnv(t, df, s)["HTTP_ADDR"]
			checkHealthcheck(t, s, df, httpAddr)
			checkExposure(t, s, httpAddr)
		})
	}
}

// checkGracePeriod checks that Docker waits, after SIGTERM, longer than the
// worker's shutdown needs before it kills the container.
func checkGracePeriod(t *testing.T, s types.ServiceConfig) {
	t.Helper()
	grace := defaultStopGracePeriod
	if s.StopGracePeriod != nil {
		grace = time.Duration(*s.StopGracePeriod)
	}
	shutdown := defaultWorkerShutdown
	if v, ok := env(s, "WORKER_SHUTDOWN_TIMEOUT"); ok {
		d, err := parseSettingDuration(v)
		if err != nil {
			t.Fatalf("WORKER_SHUTDOWN_TIMEOUT %q: %v", v, err)
		}
		shutdown = d
	}
	httpShutdown := defaultHTTPShutdown
	if v, ok := env(s, "HTTP_SHUTDOWN_TIMEOUT"); ok {
		d, err := parseSettingDuration(v)
		if err != nil {
			t.Fatalf("HTTP_SHUTDOWN_TIMEOUT %q: %v", v, err)
		}
		httpShutdown = d
	}
	need := max(shutdown, httpShutdown) + shutdownMargin
	if grace < need {
		t.Errorf("stop_grace_period %v, shutdown timeouts worker %v and HTTP %v: want a grace period of at least %v",
			grace, shutdown, httpShutdown, need)
	}
}

// checkHealthcheck checks that the service's healthcheck asks the worker
// binary of the image to probe the readiness endpoint on the port the web
// process listens on.
func checkHealthcheck(t *testing.T, s types.ServiceConfig, df dockerfile, httpAddr string) {
	t.Helper()
	hc := s.HealthCheck
	if hc == nil || hc.Disable {
		t.Errorf("no healthcheck")
		return
	}
	probe, err := probeCommand(hc.Test)
	if err != nil {
		t.Errorf("healthcheck %q: %v", hc.Test, err)
		return
	}
	if bin := df.final().entrypoint(t); len(bin) == 0 || probe.binary != bin[0] {
		t.Errorf("healthcheck runs %q, not the image's worker %q", probe.binary, bin)
	}
	if probe.url.Path != readyPath {
		t.Errorf("healthcheck probes %s, want the readiness endpoint %s", probe.url, readyPath)
	}
	if !isLoopbackHost(probe.url.Hostname()) {
		t.Errorf("healthcheck probes %s, want the container's loopback", probe.url)
	}
	_, port, err := net.SplitHostPort(httpAddr)
	if err != nil {
		t.Errorf("HTTP_ADDR %q: %v", httpAddr, err)
	} else if probe.url.Port() != port {
		t.Errorf("healthcheck probes port %q, the web process listens on HTTP_ADDR %q", probe.url.Port(), httpAddr)
	}
	if hc.Timeout == nil || time.Duration(*hc.Timeout) < 4*time.Second {
		t.Errorf("healthcheck timeout %v: the probe itself allows 3s", hc.Timeout)
	}
}

// checkExposure checks that the web process is never reachable without
// credentials (the worker would refuse a non-loopback address anyway), and
// that a published port stays on the host's loopback.
func checkExposure(t *testing.T, s types.ServiceConfig, httpAddr string) {
	t.Helper()
	user, _ := env(s, "HTTP_AUTH_USERNAME")
	pass, _ := env(s, "HTTP_AUTH_PASSWORD")
	creds := user != "" && pass != ""
	if strings.Contains(user, ":") {
		t.Errorf("HTTP_AUTH_USERNAME %q has a colon", user)
	}
	host, port, err := net.SplitHostPort(httpAddr)
	if err != nil {
		t.Errorf("HTTP_ADDR %q: %v", httpAddr, err)
		return
	}
	if !isLoopbackHost(host) && !creds {
		t.Errorf("HTTP_ADDR %q is not loopback and credentials are missing: the worker refuses to start", httpAddr)
	}
	for _, pc := range s.Ports {
		if strconv.Itoa(int(pc.Target)) != port {
			t.Errorf("publishes container port %d, the web process listens on %q", pc.Target, httpAddr)
		}
		// Loopback even with credentials: the web process speaks plain
		// HTTP, so a password sent across a network would be readable.
		switch {
		case !creds:
			t.Errorf("publishes port %d without credentials", pc.Target)
		case !isLoopbackHost(pc.HostIP):
			t.Errorf("publishes port %d on host address %q: want loopback (plain HTTP; put a TLS proxy in front)", pc.Target, pc.HostIP)
		}
		if isLoopbackHost(host) {
			t.Errorf("publishes port %d but HTTP_ADDR %q is the container's loopback: nothing would answer", pc.Target, httpAddr)
		}
	}
}

func TestComposeEnqueueTool(t *testing.T) {
	p := mustLoadCompose(t)
	s, err := p.GetService("enqueue")
	if err != nil {
		t.Skip("compose.yaml has no enqueue service")
	}
	if s.Build == nil {
		t.Fatal("enqueue is not built from the Dockerfile")
	}
	if len(s.Profiles) == 0 {
		t.Error("enqueue has no profile: `docker compose up` would run the CLI with no arguments")
	}
	if len(s.Entrypoint) != 1 || !slices.Contains(parseDockerfile(t).final().files(t), s.Entrypoint[0]) {
		t.Errorf("enqueue entrypoint %q is not a binary of the image", s.Entrypoint)
	}
	if got, _ := env(s, "REDIS_CONNECTION_URL"); got != redisURL {
		t.Errorf("REDIS_CONNECTION_URL = %q, want %q", got, redisURL)
	}
	if dep := s.DependsOn["redis"]; dep.Condition != types.ServiceConditionHealthy {
		t.Errorf("depends on redis with condition %q, want %q", dep.Condition, types.ServiceConditionHealthy)
	}
	if s.HealthCheck == nil || !s.HealthCheck.Disable {
		t.Error("enqueue keeps the image's healthcheck, which probes a worker that does not run there")
	}
}

// probe is a parsed healthcheck `CMD /worker --probe URL`.
type probe struct {
	binary string
	url    *url.URL
}

func probeCommand(test []string) (probe, error) {
	if len(test) != 4 || test[0] != "CMD" || test[2] != "--probe" {
		return probe{}, fmt.Errorf(`want ["CMD", "/worker", "--probe", "http://127.0.0.1:PORT%s"] (no shell in the image)`, readyPath)
	}
	u, err := url.Parse(test[3])
	if err != nil || u.Scheme != "http" {
		return probe{}, fmt.Errorf("probe URL %q is not an http:// URL", test[3])
	}
	return probe{binary: test[1], url: u}, nil
}

// isNonRoot reports whether a Docker user ("name", "uid", "uid:gid") is
// not root.
func isNonRoot(user string) bool {
	name, _, _ := strings.Cut(user, ":")
	return name != "" && name != "root" && name != "0"
}
