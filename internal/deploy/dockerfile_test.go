package deploy

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/types"
)

// instruction is one Dockerfile instruction, continuation lines joined.
type instruction struct {
	cmd  string // upper case: FROM, RUN, ...
	args string
	line int
}

// stage is one FROM and the instructions after it.
type stage struct {
	image, name string
	line        int
	instrs      []instruction
}

type dockerfile struct {
	stages []stage
}

// parseDockerfile reads the repository's Dockerfile. It knows the subset of
// the syntax a plain Dockerfile uses: comments, blank lines, backslash
// continuations and one instruction per logical line.
func parseDockerfile(t *testing.T) dockerfile {
	t.Helper()
	f, err := os.Open(filepath.Join(repoRoot(t), "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var (
		df      dockerfile
		logical strings.Builder
		start   int
	)
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue // also inside a continuation, as Docker does
		}
		if logical.Len() == 0 {
			start = n
		}
		if cont, ok := strings.CutSuffix(line, `\`); ok {
			logical.WriteString(cont + " ")
			continue
		}
		logical.WriteString(line)
		cmd, args, _ := strings.Cut(logical.String(), " ")
		logical.Reset()
		in := instruction{cmd: strings.ToUpper(cmd), args: strings.TrimSpace(args), line: start}
		if in.cmd == "FROM" {
			words := strings.Fields(in.args)
			st := stage{line: start}
			for _, w := range words {
				if !strings.HasPrefix(w, "--") { // --platform=...
					st.image = w
					break
				}
			}
			if i := slices.IndexFunc(words, func(w string) bool { return strings.EqualFold(w, "AS") }); i >= 0 && i+1 < len(words) {
				st.name = words[i+1]
			}
			df.stages = append(df.stages, st)
			continue
		}
		if len(df.stages) == 0 {
			if in.cmd == "ARG" {
				continue
			}
			t.Fatalf("Dockerfile:%d: %s before the first FROM", start, in.cmd)
		}
		last := &df.stages[len(df.stages)-1]
		last.instrs = append(last.instrs, in)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if logical.Len() != 0 {
		t.Fatal("Dockerfile ends in a continuation line")
	}
	if len(df.stages) == 0 {
		t.Fatal("Dockerfile has no FROM")
	}
	return df
}

func (df dockerfile) final() stage { return df.stages[len(df.stages)-1] }

// stage returns the stage with the given name or index, as COPY --from
// names it.
func (df dockerfile) stage(ref string) (stage, bool) {
	for i, st := range df.stages {
		if st.name == ref || strconv.Itoa(i) == ref {
			return st, true
		}
	}
	return stage{}, false
}

func (st stage) all(cmd string) []instruction {
	var out []instruction
	for _, in := range st.instrs {
		if in.cmd == cmd {
			out = append(out, in)
		}
	}
	return out
}

// user is the stage's last USER, "" for none (root).
func (st stage) user() string {
	us := st.all("USER")
	if len(us) == 0 {
		return ""
	}
	return us[len(us)-1].args
}

// execForm parses the JSON (exec) form of ENTRYPOINT, CMD and HEALTHCHECK
// CMD; the shell form needs a shell the final image does not have.
func execForm(t *testing.T, in instruction, args string) []string {
	t.Helper()
	var argv []string
	if err := json.Unmarshal([]byte(args), &argv); err != nil || len(argv) == 0 {
		t.Fatalf("Dockerfile:%d: %s %s is not in exec form [\"...\"]", in.line, in.cmd, args)
	}
	return argv
}

// entrypoint is the stage's last ENTRYPOINT.
func (st stage) entrypoint(t *testing.T) []string {
	t.Helper()
	eps := st.all("ENTRYPOINT")
	if len(eps) == 0 {
		return nil
	}
	in := eps[len(eps)-1]
	return execForm(t, in, in.args)
}

// healthcheck is the command of the stage's last HEALTHCHECK, nil for none.
func (st stage) healthcheck(t *testing.T) []string {
	t.Helper()
	hcs := st.all("HEALTHCHECK")
	if len(hcs) == 0 {
		return nil
	}
	in := hcs[len(hcs)-1]
	_, cmd, ok := strings.Cut(in.args, "CMD ")
	if !ok {
		t.Fatalf("Dockerfile:%d: HEALTHCHECK %s has no CMD", in.line, in.args)
	}
	return execForm(t, in, strings.TrimSpace(cmd))
}

// env is the stage's ENV, in the KEY=VALUE form.
func (st stage) env(t *testing.T) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, in := range st.all("ENV") {
		words, err := shellWords(in.args)
		if err != nil {
			t.Fatalf("Dockerfile:%d: ENV %s: %v", in.line, in.args, err)
		}
		for _, w := range words {
			k, v, ok := strings.Cut(w, "=")
			if !ok {
				t.Fatalf("Dockerfile:%d: ENV %s: want KEY=VALUE", in.line, in.args)
			}
			out[k] = v
		}
	}
	return out
}

// copied is one file a COPY --from puts into a stage.
type copied struct {
	from, src, dst string
}

// copiedFrom lists what the stage's COPY --from instructions copy, with
// the destination path of each source.
func (st stage) copiedFrom(t *testing.T) []copied {
	t.Helper()
	var out []copied
	for _, in := range st.all("COPY") {
		words := strings.Fields(in.args)
		from := ""
		for len(words) > 0 && strings.HasPrefix(words[0], "--") {
			if v, ok := strings.CutPrefix(words[0], "--from="); ok {
				from = v
			}
			words = words[1:]
		}
		if from == "" {
			continue
		}
		if len(words) < 2 {
			t.Fatalf("Dockerfile:%d: COPY %s: want sources and a destination", in.line, in.args)
		}
		srcs, dst := words[:len(words)-1], words[len(words)-1]
		for _, src := range srcs {
			d := dst
			if strings.HasSuffix(dst, "/") || len(srcs) > 1 {
				d = path.Join(dst, path.Base(src))
			}
			out = append(out, copied{from: from, src: src, dst: d})
		}
	}
	return out
}

// files are the paths COPY --from puts into the stage.
func (st stage) files(t *testing.T) []string {
	t.Helper()
	var out []string
	for _, c := range st.copiedFrom(t) {
		out = append(out, c.dst)
	}
	return out
}

// goBuild is one `go build` of a RUN line.
type goBuild struct {
	line   int
	env    []string // the stage's ENV and the command's own assignments
	args   []string // after "go"
	output string   // the -o path, in the build container
}

// goBuilds extracts the stage's go build commands from its RUN lines. It
// understands plain commands joined by &&, with leading VAR=value
// assignments and quoted words; anything else fails the test rather than
// being misread.
func (st stage) goBuilds(t *testing.T) []goBuild {
	t.Helper()
	stageEnv := st.env(t)
	var out []goBuild
	for _, in := range st.all("RUN") {
		words, err := shellWords(in.args)
		if err != nil {
			t.Fatalf("Dockerfile:%d: RUN %s: %v", in.line, in.args, err)
		}
		for argv := range splitAnd(words) {
			var env []string
			for k, v := range stageEnv {
				env = append(env, k+"="+v)
			}
			slices.Sort(env)
			for len(argv) > 0 && assignment.MatchString(argv[0]) {
				env = append(env, argv[0])
				argv = argv[1:]
			}
			if len(argv) < 2 || argv[0] != "go" || argv[1] != "build" {
				continue
			}
			b := goBuild{line: in.line, env: env, args: argv[1:]}
			for i, a := range b.args {
				if a == "-o" && i+1 < len(b.args) {
					b.output = b.args[i+1]
				} else if v, ok := strings.CutPrefix(a, "-o="); ok {
					b.output = v
				}
			}
			if b.output == "" {
				t.Fatalf("Dockerfile:%d: go build without -o", in.line)
			}
			out = append(out, b)
		}
	}
	return out
}

// assignment is a shell word that sets a variable for its command.
var assignment = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*=`)

// splitAnd yields the commands of a word list joined by &&.
func splitAnd(words []string) func(yield func([]string) bool) {
	return func(yield func([]string) bool) {
		for {
			i := slices.Index(words, "&&")
			if i < 0 {
				yield(words)
				return
			}
			if !yield(words[:i]) {
				return
			}
			words = words[i+1:]
		}
	}
}

// getenv is the value a build's environment gives name, the last one
// winning, as in a shell.
func (b goBuild) getenv(name string) string {
	v := ""
	for _, kv := range b.env {
		if k, val, _ := strings.Cut(kv, "="); k == name {
			v = val
		}
	}
	return v
}

// packages are the build's package arguments.
func (b goBuild) packages() []string {
	var pkgs []string
	for i := 1; i < len(b.args); i++ {
		a := b.args[i]
		switch {
		case a == "-o" || a == "-ldflags" || a == "-tags" || a == "-gcflags":
			i++ // its value
		case strings.HasPrefix(a, "-"):
		default:
			pkgs = append(pkgs, a)
		}
	}
	return pkgs
}

// shellWords splits a shell command line into words as sh would for the
// plain commands a Dockerfile's RUN uses: whitespace, single and double
// quotes, backslash escapes, and && as a word of its own. Expansions,
// pipes, redirections and other operators are errors.
func shellWords(s string) ([]string, error) {
	var (
		words  []string
		cur    strings.Builder
		inWord bool
	)
	flush := func() {
		if inWord {
			words = append(words, cur.String())
			cur.Reset()
			inWord = false
		}
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n':
			flush()
		case c == '&' && i+1 < len(s) && s[i+1] == '&':
			flush()
			words = append(words, "&&")
			i++
		case strings.IndexByte("|;&<>()$`*?[~{}", c) >= 0:
			return nil, fmt.Errorf("shell syntax %q at %d: the test's parser does not handle it", c, i)
		case c == '\\':
			if i+1 == len(s) {
				return nil, errors.New("trailing backslash")
			}
			i++
			cur.WriteByte(s[i])
			inWord = true
		case c == '\'':
			j := strings.IndexByte(s[i+1:], '\'')
			if j < 0 {
				return nil, errors.New("unclosed single quote")
			}
			cur.WriteString(s[i+1 : i+1+j])
			i += j + 1
			inWord = true
		case c == '"':
			i++
			for ; i < len(s) && s[i] != '"'; i++ {
				switch s[i] {
				case '$', '`':
					return nil, fmt.Errorf("expansion %q in double quotes: the test's parser does not handle it", s[i])
				case '\\':
					if i+1 < len(s) && strings.IndexByte("\"\\$`", s[i+1]) >= 0 {
						i++
					}
				}
				cur.WriteByte(s[i])
			}
			if i == len(s) {
				return nil, errors.New("unclosed double quote")
			}
			inWord = true
		default:
			cur.WriteByte(c)
			inWord = true
		}
	}
	flush()
	return words, nil
}

// buildStage is the stage the final stage copies the worker from.
func (df dockerfile) buildStage(t *testing.T) stage {
	t.Helper()
	cs := df.final().copiedFrom(t)
	if len(cs) == 0 {
		t.Fatal("the final stage copies nothing from a build stage")
	}
	st, ok := df.stage(cs[0].from)
	if !ok {
		t.Fatalf("COPY --from=%s: no such stage", cs[0].from)
	}
	return st
}

// workerEnv is the environment of a compose service's container: the
// image's ENV, then the service's environment.
func workerEnv(t *testing.T, df dockerfile, s types.ServiceConfig) map[string]string {
	t.Helper()
	out := df.final().env(t)
	for k, v := range s.Environment {
		if v != nil {
			out[k] = *v
		}
	}
	return out
}

func TestDockerfile(t *testing.T) {
	df := parseDockerfile(t)
	if len(df.stages) < 2 {
		t.Fatalf("%d stage(s): want a multi-stage build (a Go toolchain stage, a small final one)", len(df.stages))
	}
	build, final := df.buildStage(t), df.final()
	if !strings.HasPrefix(build.image, "golang:1.26") {
		t.Errorf("build stage FROM %s, want golang:1.26 (go.mod's Go)", build.image)
	}
	if strings.Contains(final.image, "golang") {
		t.Errorf("final stage FROM %s: the Go toolchain would ship in the image", final.image)
	}
	if runs := final.all("RUN"); len(runs) != 0 {
		t.Errorf("Dockerfile:%d: RUN in the final stage, which has no shell", runs[0].line)
	}
	if u := final.user(); !isNonRoot(u) {
		t.Errorf("final stage USER %q, want a non-root user", u)
	} else if uid, _, _ := strings.Cut(u, ":"); !regexp.MustCompile(`^[0-9]+$`).MatchString(uid) {
		t.Errorf("final stage USER %q: want a numeric uid, which runtimes can check without /etc/passwd", u)
	}

	// Cache-friendly: go.mod and go.sum, then go mod download, then the
	// sources.
	order := map[string]int{}
	for i, in := range build.instrs {
		switch {
		case in.cmd == "COPY" && strings.Fields(in.args)[0] == "go.mod":
			order["copy go.mod"] = i + 1
		case in.cmd == "RUN" && strings.Contains(in.args, "go mod download"):
			order["go mod download"] = i + 1
		case in.cmd == "COPY" && strings.HasPrefix(in.args, ". "):
			order["copy sources"] = i + 1
		}
	}
	if !(0 < order["copy go.mod"] && order["copy go.mod"] < order["go mod download"] && order["go mod download"] < order["copy sources"]) {
		t.Errorf("build stage order %v: want COPY go.mod go.sum, RUN go mod download, COPY . .", order)
	}

	builds := build.goBuilds(t)
	if len(builds) == 0 {
		t.Fatal("the build stage has no go build")
	}
	outputs := map[string]bool{}
	for _, b := range builds {
		if got := b.getenv("CGO_ENABLED"); got != "0" {
			t.Errorf("Dockerfile:%d: go build with CGO_ENABLED=%q, want 0 (a static binary)", b.line, got)
		}
		if !slices.Contains(b.args, "-trimpath") {
			t.Errorf("Dockerfile:%d: go build without -trimpath", b.line)
		}
		outputs[b.output] = true
	}
	files := final.files(t)
	for _, c := range final.copiedFrom(t) {
		if !outputs[c.src] {
			t.Errorf("final stage copies %s, which no go build writes", c.src)
		}
	}
	ep := final.entrypoint(t)
	if len(ep) == 0 || !slices.Contains(files, ep[0]) {
		t.Errorf("ENTRYPOINT %q is not a binary the final stage copies (%v)", ep, files)
	}

	// The web process: on every interface, on the exposed port.
	addr := final.env(t)["HTTP_ADDR"]
	_, port, _ := strings.Cut(addr, ":")
	exposed := final.all("EXPOSE")
	if len(exposed) == 0 || strings.Fields(exposed[0].args)[0] != port {
		t.Errorf("EXPOSE %v, HTTP_ADDR %q: want the web process's port exposed", exposed, addr)
	}

	// The image's healthcheck is the compose worker's.
	if hc := final.healthcheck(t); hc != nil {
		p := mustLoadCompose(t)
		w, err := p.GetService("worker")
		if err != nil {
			t.Fatal(err)
		}
		if w.HealthCheck == nil || !slices.Equal(hc, w.HealthCheck.Test[1:]) {
			t.Errorf("Dockerfile HEALTHCHECK %q, compose worker healthcheck %v: want the same command", hc, w.HealthCheck)
		}
	}
}

func TestShellWords(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
		bad  bool
	}{
		{in: `CGO_ENABLED=0 go build -ldflags="-s -w" -o /out/w ./cmd/w`,
			want: []string{"CGO_ENABLED=0", "go", "build", "-ldflags=-s -w", "-o", "/out/w", "./cmd/w"}},
		{in: `a 'b c'  d\ e && f`, want: []string{"a", "b c", "d e", "&&", "f"}},
		{in: `"a\"b\\c"`, want: []string{`a"b\c`}},
		{in: `go build -o $OUT ./x`, bad: true},
		{in: `go build ./x | tee log`, bad: true},
		{in: `go build "-o=$OUT"`, bad: true},
		{in: `go build ./x; true`, bad: true},
		{in: `echo "open`, bad: true},
	} {
		got, err := shellWords(tc.in)
		if tc.bad {
			if err == nil {
				t.Errorf("shellWords(%q) = %q, want an error", tc.in, got)
			}
			continue
		}
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("shellWords(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

// TestDockerignore checks that .dockerignore keeps every file the
// Dockerfile's builds compile in the build context, and keeps secrets and
// the repository's history out.
func TestDockerignore(t *testing.T) {
	root := repoRoot(t)
	ignored := dockerignore(t, root)
	for _, p := range []string{".git", ".env"} {
		if !ignored(p) {
			t.Errorf(".dockerignore does not exclude %s", p)
		}
	}
	need := []string{"go.mod", "go.sum"}
	var pkgs []string
	for _, b := range parseDockerfile(t).buildStage(t).goBuilds(t) {
		pkgs = append(pkgs, b.packages()...)
	}
	// Every file of this module that the builds compile or embed.
	cmd := exec.Command("go", append([]string{"list", "-deps", "-f",
		`{{if and .Module .Module.Main}}{{$d := .Dir}}{{range .GoFiles}}{{$d}}/{{.}}{{"\n"}}{{end}}{{range .EmbedFiles}}{{$d}}/{{.}}{{"\n"}}{{end}}{{end}}`},
		pkgs...)...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for f := range strings.FieldsSeq(string(out)) {
		rel, err := filepath.Rel(root, f)
		if err != nil {
			t.Fatal(err)
		}
		need = append(need, filepath.ToSlash(rel))
	}
	if len(need) < 4 {
		t.Fatalf("go list %v found only %v", pkgs, need)
	}
	for _, f := range need {
		if ignored(f) {
			t.Errorf(".dockerignore excludes %s, which the image's build needs", f)
		}
	}
}

// dockerignore returns whether .dockerignore excludes a slash-separated
// path of the build context. It implements the rules of the patterns the
// file uses: * and ? within a path element, ** across elements, a match of
// a parent directory excluding everything below it. An exception (!) or a
// character class fails the test, since this matcher would misread it.
func dockerignore(t *testing.T, root string) func(string) bool {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(root, ".dockerignore"))
	if err != nil {
		t.Fatal(err)
	}
	var res []*regexp.Regexp
	for line := range strings.Lines(string(data)) {
		p := strings.TrimSpace(line)
		if p == "" || strings.HasPrefix(p, "#") {
			continue
		}
		if strings.HasPrefix(p, "!") || strings.ContainsAny(p, `[\`) {
			t.Fatalf(".dockerignore pattern %q: the test's matcher does not handle exceptions or classes", p)
		}
		p = strings.TrimPrefix(path.Clean("/"+p), "/")
		var re strings.Builder
		re.WriteString("^")
		for i := 0; i < len(p); i++ {
			switch {
			case strings.HasPrefix(p[i:], "**/"):
				re.WriteString("(.*/)?")
				i += 2
			case strings.HasPrefix(p[i:], "**"):
				re.WriteString(".*")
				i++
			case p[i] == '*':
				re.WriteString("[^/]*")
			case p[i] == '?':
				re.WriteString("[^/]")
			default:
				re.WriteString(regexp.QuoteMeta(p[i : i+1]))
			}
		}
		re.WriteString("(/.*)?$") // a directory excludes what is under it
		res = append(res, regexp.MustCompile(re.String()))
	}
	return func(p string) bool {
		return slices.ContainsFunc(res, func(re *regexp.Regexp) bool { return re.MatchString(p) })
	}
}
