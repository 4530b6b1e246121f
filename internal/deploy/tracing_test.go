package deploy

import (
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
	"go.yaml.in/yaml/v3"
)

const (
	// tracingProfile is the compose profile of the tracing services.
	tracingProfile = "tracing"
	// collectorService and jaegerService are its services.
	collectorService = "otel-collector"
	jaegerService    = "jaeger"
	// collectorEndpoint is what compose.yaml tells to set
	// OTEL_EXPORTER_OTLP_ENDPOINT to: the collector's OTLP/HTTP receiver.
	collectorEndpoint = "http://otel-collector:4318"
	// jaegerUIPort is Jaeger's web UI.
	jaegerUIPort = 16686
	// jaegerOTLPPort is Jaeger's OTLP/gRPC receiver, the collector's
	// destination.
	jaegerOTLPPort = "4317"
)

// otelVars are the OTEL_* variables compose.yaml passes through to every
// forgeq service.
var otelVars = []string{
	"OTEL_EXPORTER_OTLP_ENDPOINT",
	"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
	"OTEL_EXPORTER_OTLP_PROTOCOL",
	"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
	"OTEL_EXPORTER_OTLP_HEADERS",
	"OTEL_TRACES_EXPORTER",
	"OTEL_TRACES_SAMPLER",
	"OTEL_TRACES_SAMPLER_ARG",
	"OTEL_SERVICE_NAME",
	"OTEL_RESOURCE_ATTRIBUTES",
	"OTEL_SDK_DISABLED",
}

// loadComposeProfiles loads compose.yaml like loadCompose, with only the
// given profiles enabled (none: what `docker compose up` runs).
func loadComposeProfiles(t *testing.T, env map[string]string, profiles []string) *types.Project {
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
		cli.WithProfiles(profiles),
	)
	if err != nil {
		t.Fatal(err)
	}
	p, err := opts.LoadProject(t.Context())
	if err != nil {
		t.Fatalf("load compose.yaml with profiles %q: %v", profiles, err)
	}
	return p
}

// forgeqServices are the services that run the forgeq image: the workers
// and the enqueue tool.
func forgeqServices(p *types.Project) []types.ServiceConfig {
	var out []types.ServiceConfig
	for _, name := range p.ServiceNames() {
		if s := p.Services[name]; s.Build != nil {
			out = append(out, s)
		}
	}
	return out
}

func TestComposeTracingProfile(t *testing.T) {
	all := mustLoadCompose(t)
	for _, name := range []string{collectorService, jaegerService} {
		s, err := all.GetService(name)
		if err != nil {
			t.Fatalf("compose.yaml has no service %q; services: %v", name, all.ServiceNames())
		}
		if !slices.Equal(s.Profiles, []string{tracingProfile}) {
			t.Errorf("%s has profiles %q, want only %q", name, s.Profiles, tracingProfile)
		}
		if s.Build != nil {
			t.Errorf("%s is built here, want a published image", name)
		}
		if img := s.Image; !strings.Contains(img, ":") || strings.HasSuffix(img, ":latest") {
			t.Errorf("%s image %q: want a pinned version", name, img)
		}
		if s.Restart != types.RestartPolicyUnlessStopped {
			t.Errorf("%s restart = %q, want %q", name, s.Restart, types.RestartPolicyUnlessStopped)
		}
	}

	t.Run("only under the profile", func(t *testing.T) {
		plain := loadComposeProfiles(t, composeEnv(), nil)
		for _, name := range []string{collectorService, jaegerService} {
			if _, ok := plain.Services[name]; ok {
				t.Errorf("`docker compose up` without --profile %s runs %s", tracingProfile, name)
			}
		}
		for _, s := range plain.Services {
			for dep := range s.DependsOn {
				if dep == collectorService || dep == jaegerService {
					t.Errorf("%s depends on %s, which only runs with --profile %s", s.Name, dep, tracingProfile)
				}
			}
		}
		traced := loadComposeProfiles(t, composeEnv(), []string{tracingProfile})
		for _, name := range []string{"redis", "worker", collectorService, jaegerService} {
			if _, ok := traced.Services[name]; !ok {
				t.Errorf("--profile %s does not run %s; services: %v", tracingProfile, name, traced.ServiceNames())
			}
		}
	})

	t.Run("collector", func(t *testing.T) {
		s, _ := all.GetService(collectorService)
		if !strings.HasPrefix(s.Image, "otel/opentelemetry-collector-contrib:") {
			t.Errorf("image %q, want otel/opentelemetry-collector-contrib", s.Image)
		}
		checkLoopbackPorts(t, s, 4317, 4318)
		if _, err := collectorConfigPath(t, s); err != nil {
			t.Error(err)
		}
		if _, ok := s.DependsOn[jaegerService]; !ok {
			t.Errorf("does not depend on %s, which it exports to", jaegerService)
		}
	})

	t.Run("jaeger", func(t *testing.T) {
		s, _ := all.GetService(jaegerService)
		if !strings.HasPrefix(s.Image, "jaegertracing/") {
			t.Errorf("image %q, want a jaegertracing/ image", s.Image)
		}
		checkLoopbackPorts(t, s, jaegerUIPort)
	})
}

// checkLoopbackPorts wants s to publish exactly the container ports want,
// each on the same host port of the host's loopback (no authentication).
func checkLoopbackPorts(t *testing.T, s types.ServiceConfig, want ...int) {
	t.Helper()
	var got []int
	for _, pc := range s.Ports {
		got = append(got, int(pc.Target))
		if pc.Published != strconv.Itoa(int(pc.Target)) {
			t.Errorf("%s publishes container port %d on host port %q, want the same number", s.Name, pc.Target, pc.Published)
		}
		if !isLoopbackHost(pc.HostIP) {
			t.Errorf("%s publishes port %d on host address %q: want loopback (no authentication)", s.Name, pc.Target, pc.HostIP)
		}
	}
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Errorf("%s publishes ports %v, want %v", s.Name, got, want)
	}
}

// collectorConfigPath returns the file of this repository the collector
// service runs with: the source of the read-only bind mount at the path
// its --config flag names.
func collectorConfigPath(t *testing.T, s types.ServiceConfig) (string, error) {
	t.Helper()
	var target string
	for _, a := range s.Command {
		if v, ok := strings.CutPrefix(a, "--config="); ok {
			target = v
		}
	}
	if target == "" {
		return "", fmt.Errorf("%s command %q has no --config=FILE", s.Name, s.Command)
	}
	for _, v := range s.Volumes {
		if v.Target != target {
			continue
		}
		if v.Type != types.VolumeTypeBind || !v.ReadOnly {
			return "", fmt.Errorf("%s mounts %s as a %s (read-only %v), want a read-only bind mount", s.Name, target, v.Type, v.ReadOnly)
		}
		rel, err := filepath.Rel(repoRoot(t), v.Source)
		if err != nil || strings.HasPrefix(rel, "..") {
			return "", fmt.Errorf("%s config %s is not in this repository", s.Name, v.Source)
		}
		if _, err := os.Stat(v.Source); err != nil {
			return "", fmt.Errorf("%s config: %v", s.Name, err)
		}
		return v.Source, nil
	}
	return "", fmt.Errorf("%s: nothing is mounted at its --config %s", s.Name, target)
}

// collectorConfig is the part of an OpenTelemetry Collector configuration
// the tests read.
type collectorConfig struct {
	Receivers  map[string]map[string]any `yaml:"receivers"`
	Processors map[string]map[string]any `yaml:"processors"`
	Exporters  map[string]map[string]any `yaml:"exporters"`
	Service    struct {
		Pipelines map[string]struct {
			Receivers  []string `yaml:"receivers"`
			Processors []string `yaml:"processors"`
			Exporters  []string `yaml:"exporters"`
		} `yaml:"pipelines"`
	} `yaml:"service"`
}

// componentType is the type of a component id "type[/name]".
func componentType(id string) string {
	typ, _, _ := strings.Cut(id, "/")
	return typ
}

// lookupPath returns the value at a dotted path of nested YAML maps.
func lookupPath(m map[string]any, path string) (any, bool) {
	var v any = m
	for _, k := range strings.Split(path, ".") {
		mm, ok := v.(map[string]any)
		if !ok {
			return nil, false
		}
		if v, ok = mm[k]; !ok {
			return nil, false
		}
	}
	return v, true
}

func TestComposeCollectorConfig(t *testing.T) {
	p := mustLoadCompose(t)
	collector, err := p.GetService(collectorService)
	if err != nil {
		t.Fatal(err)
	}
	path, err := collectorConfigPath(t, collector)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var c collectorConfig
	dec := yaml.NewDecoder(strings.NewReader(string(b)))
	dec.KnownFields(true) // no misspelt top-level section
	if err := dec.Decode(&c); err != nil {
		t.Fatalf("%s: %v", path, err)
	}

	traces, ok := c.Service.Pipelines["traces"]
	if !ok {
		t.Fatalf("%s: no traces pipeline; pipelines: %v", path, c.Service.Pipelines)
	}
	// Every component a pipeline names is configured.
	for name, pl := range c.Service.Pipelines {
		for _, sec := range []struct {
			kind string
			ids  []string
			defs map[string]map[string]any
		}{
			{"receiver", pl.Receivers, c.Receivers},
			{"processor", pl.Processors, c.Processors},
			{"exporter", pl.Exporters, c.Exporters},
		} {
			for _, id := range sec.ids {
				if _, ok := sec.defs[id]; !ok {
					t.Errorf("pipeline %s names %s %q, which is not configured", name, sec.kind, id)
				}
			}
		}
	}

	t.Run("OTLP receiver", func(t *testing.T) {
		var otlp map[string]any
		for _, id := range traces.Receivers {
			if componentType(id) == "otlp" {
				otlp = c.Receivers[id]
			}
		}
		if otlp == nil {
			t.Fatalf("the traces pipeline's receivers %q have no otlp one", traces.Receivers)
		}
		published := make(map[string]bool)
		for _, pc := range collector.Ports {
			published[strconv.Itoa(int(pc.Target))] = true
		}
		for proto, wantPort := range map[string]string{"grpc": "4317", "http": "4318"} {
			v, _ := lookupPath(otlp, "protocols."+proto+".endpoint")
			ep, _ := v.(string)
			host, port, err := net.SplitHostPort(ep)
			if err != nil {
				t.Errorf("otlp %s endpoint %q: %v", proto, ep, err)
				continue
			}
			if host != "0.0.0.0" && host != "" {
				t.Errorf("otlp %s listens on %q: other containers cannot reach it, want 0.0.0.0", proto, ep)
			}
			if port != wantPort {
				t.Errorf("otlp %s listens on port %s, want OTLP's %s", proto, port, wantPort)
			}
			if !published[port] {
				t.Errorf("otlp %s port %s is not among the collector's published ports", proto, port)
			}
		}
	})

	t.Run("Jaeger exporter", func(t *testing.T) {
		found := false
		for _, id := range traces.Exporters {
			if typ := componentType(id); typ != "otlp_grpc" && typ != "otlp" {
				continue
			}
			exp := c.Exporters[id]
			v, _ := lookupPath(exp, "endpoint")
			ep, _ := v.(string)
			host, port, err := net.SplitHostPort(strings.TrimPrefix(ep, "http://"))
			if err != nil || host != jaegerService {
				continue
			}
			found = true
			if port != jaegerOTLPPort {
				t.Errorf("exporter %s sends to port %s, want Jaeger's OTLP/gRPC %s", id, port, jaegerOTLPPort)
			}
			if ins, _ := lookupPath(exp, "tls.insecure"); ins != true && !strings.HasPrefix(ep, "http://") {
				t.Errorf("exporter %s uses TLS to %s, which Jaeger does not serve here: want tls.insecure: true", id, ep)
			}
		}
		if !found {
			t.Fatalf("the traces pipeline's exporters %q have no OTLP/gRPC one to %s:%s", traces.Exporters, jaegerService, jaegerOTLPPort)
		}
		if _, err := p.GetService(jaegerService); err != nil {
			t.Errorf("the collector exports to %s, which compose.yaml does not run", jaegerService)
		}
	})
}

func TestComposeTracingEnv(t *testing.T) {
	t.Run("off unless set", func(t *testing.T) {
		p := mustLoadCompose(t)
		for _, s := range forgeqServices(p) {
			for _, v := range otelVars {
				val, present := s.Environment[v]
				if !present {
					t.Errorf("%s: %s is not passed through", s.Name, v)
				} else if val != nil {
					// Compose drops a variable without a value when the
					// shell has none: the container has it unset.
					t.Errorf("%s: %s = %q with nothing set: tracing must stay off by default", s.Name, v, *val)
				}
			}
		}
	})

	t.Run("passed through", func(t *testing.T) {
		vars := composeEnv()
		want := make(map[string]string)
		for _, v := range otelVars {
			want[v] = "value-of-" + v
		}
		want["OTEL_EXPORTER_OTLP_ENDPOINT"] = collectorEndpoint
		for k, v := range want {
			vars[k] = v
		}
		p := loadComposeProfiles(t, vars, []string{"*"})
		svcs := forgeqServices(p)
		if len(svcs) < 2 {
			t.Fatalf("forgeq services %v: want the workers and the enqueue tool", svcs)
		}
		for _, s := range svcs {
			for k, w := range want {
				if got, _ := env(s, k); got != w {
					t.Errorf("%s: %s = %q, want the environment's %q", s.Name, k, got, w)
				}
			}
		}
	})

	t.Run("collector endpoint", func(t *testing.T) {
		// The endpoint compose.yaml tells to use is the collector's
		// OTLP/HTTP receiver, reachable by service name.
		b, err := os.ReadFile(filepath.Join(repoRoot(t), "compose.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(b), "OTEL_EXPORTER_OTLP_ENDPOINT="+collectorEndpoint+" docker compose --profile "+tracingProfile+" up") {
			t.Errorf("compose.yaml does not show how to start with tracing: OTEL_EXPORTER_OTLP_ENDPOINT=%s docker compose --profile %s up",
				collectorEndpoint, tracingProfile)
		}
		u, err := url.Parse(collectorEndpoint)
		if err != nil {
			t.Fatal(err)
		}
		p := mustLoadCompose(t)
		s, err := p.GetService(u.Hostname())
		if err != nil {
			t.Fatalf("%s names service %q, which compose.yaml lacks", collectorEndpoint, u.Hostname())
		}
		path, err := collectorConfigPath(t, s)
		if err != nil {
			t.Fatal(err)
		}
		b, err = os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		var c collectorConfig
		if err := yaml.Unmarshal(b, &c); err != nil {
			t.Fatal(err)
		}
		v, _ := lookupPath(c.Receivers["otlp"], "protocols.http.endpoint")
		ep, _ := v.(string)
		if _, port, _ := net.SplitHostPort(ep); port != u.Port() {
			t.Errorf("%s: the collector's OTLP/HTTP receiver listens on %q", collectorEndpoint, ep)
		}
	})
}
