package config_test

import (
	"bufio"
	"errors"
	"io/fs"
	"os"
	"strings"
	"testing"

	"github.com/spf13/pflag"

	"github.com/forgeq/forgeq/config"
)

func TestSettings(t *testing.T) {
	t.Parallel()

	seen := map[string]bool{}
	for _, s := range config.Settings() {
		wantFlag := "--" + strings.NewReplacer(".", "-", "_", "-").Replace(s.Key)
		if s.Flag != wantFlag {
			t.Errorf("%s: Flag = %q, want %q", s.Key, s.Flag, wantFlag)
		}
		if s.Env == "" || s.Help == "" {
			t.Errorf("%s: Env %q or Help %q is empty", s.Key, s.Env, s.Help)
		}
		if s.Env != strings.ToUpper(s.Env) {
			t.Errorf("%s: Env %q is not upper case", s.Key, s.Env)
		}
		for _, name := range []string{s.Key, s.Env, s.Flag} {
			if seen[name] {
				t.Errorf("%q is used twice", name)
			}
			seen[name] = true
		}
	}

	got := config.Settings()
	got[0].Key = "changed"
	if config.Settings()[0].Key == "changed" {
		t.Error("Settings returns a shared slice")
	}
}

func TestRegisterFlags(t *testing.T) {
	t.Parallel()

	fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
	config.RegisterFlags(fs)
	if fs.Lookup("config") == nil {
		t.Error("no --config flag")
	}
	for _, s := range config.Settings() {
		f := fs.Lookup(strings.TrimPrefix(s.Flag, "--"))
		if f == nil {
			t.Errorf("no flag %s", s.Flag)
			continue
		}
		if f.DefValue != s.Default {
			t.Errorf("%s: DefValue = %q, want %q", s.Flag, f.DefValue, s.Default)
		}
		if !strings.Contains(f.Usage, s.Env) {
			t.Errorf("%s: usage %q does not name %s", s.Flag, f.Usage, s.Env)
		}
	}

	usage := fs.FlagUsages()
	for _, want := range []string{
		"--redis-default-ttl duration",
		"(default 1h)",
		"--redis-pool-size int",
		`(default "cache:")`,
		"--worker-strict-priority ",
		"--config file",
		`--http-rate-limit rate`,
		`(default 100/1s)`,
		"--http-cookie-secure ",
	} {
		if !strings.Contains(usage, want) {
			t.Errorf("usage does not contain %q:\n%s", want, usage)
		}
	}
}

func TestSecretSettings(t *testing.T) {
	t.Parallel()

	var secret []string
	for _, s := range config.Settings() {
		if s.Secret {
			secret = append(secret, s.Env)
			if s.Default != "" {
				t.Errorf("%s: secret with a default", s.Env)
			}
		}
	}
	if len(secret) != 1 || secret[0] != "HTTP_AUTH_PASSWORD" {
		t.Errorf("secret settings %q, want only HTTP_AUTH_PASSWORD", secret)
	}
}

// TestREADME checks that the README's configuration table has a row for
// every setting. It is skipped until the README exists.
func TestREADME(t *testing.T) {
	t.Parallel()

	f, err := os.Open("../README.md")
	if errors.Is(err, fs.ErrNotExist) {
		t.Skip("no README.md yet")
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var rows []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if line := strings.TrimSpace(sc.Text()); strings.HasPrefix(line, "|") {
			rows = append(rows, line)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	want := []string{"FORGEQ_CONFIG"}
	for _, s := range config.Settings() {
		want = append(want, s.Env)
	}
	for _, env := range want {
		found := false
		for _, row := range rows {
			if strings.Contains(row, env) {
				found = true
				break
			}
		}
		if !found {
			t.Errorf("README.md has no table row for %s", env)
		}
	}
}
