package enqueue

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// resendFile is the file of the lines of a --file run that are not known
// to be enqueued.
type resendFile struct {
	path  string // "" when none was written
	lines int
	err   error // writing it failed
}

// resendPath returns where the resend file of a run goes: --resend, or
// next to the input, named after it (tasks.jsonl: tasks.resend.jsonl;
// stdin: stdin.resend.jsonl in the working directory). The default is used
// only when some task was not enqueued; an explicit --resend is always
// written, empty when every task was.
func (c *cli) resendPath(allEnqueued bool) string {
	switch {
	case c.f.resend != "":
		return c.f.resend
	case allEnqueued:
		return ""
	case c.f.file == "-":
		return "stdin.resend.jsonl"
	}
	name := c.f.file
	return strings.TrimSuffix(name, filepath.Ext(name)) + ".resend.jsonl"
}

// resend writes the resend file of res: in input order, the line of every
// task not known to be enqueued (failed, unknown or not attempted), byte
// for byte, with the task id added to a line that had none. A rerun of the
// file cannot then enqueue a task twice: a task that did reach Redis
// conflicts on its id, and counts as enqueued.
func (c *cli) resend(res bulkResult) resendFile {
	path := c.resendPath(res.enqueued == len(res.tasks))
	if path == "" {
		return resendFile{}
	}
	rf := resendFile{path: path}
	var buf bytes.Buffer
	for i, t := range res.tasks {
		if res.outcomes[i] == enqueued {
			continue
		}
		line, err := withID(t)
		if err != nil {
			rf.err = fmt.Errorf("line %d: %w", t.line, err)
			return rf
		}
		buf.Write(line)
		buf.WriteByte('\n')
		rf.lines++
	}
	rf.err = writeFileAtomic(path, buf.Bytes())
	return rf
}

// withID returns the line of t with its id: as read when the line gave
// one, else with "id" set to the id it was enqueued under, in place of an
// "id": null or as the first field.
func withID(t bulkTask) ([]byte, error) {
	if !t.ownID {
		return t.text, nil
	}
	id, err := json.Marshal(t.id)
	if err != nil {
		return nil, err
	}
	line := t.text
	if !bytes.Contains(line, []byte(`"id"`)) { // the common case: no field to replace
		open := bytes.IndexByte(line, '{') + 1 // checkLine saw an object
		return concat(line[:open], []byte(`"id":`), id, []byte(","), line[open:]), nil
	}
	dec := json.NewDecoder(bytes.NewReader(line))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil, fmt.Errorf("not a JSON object: %v", err)
	}
	open := int(dec.InputOffset()) // just past '{'
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, err
		}
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return nil, err
		}
		if tok == "id" { // "id": null, which leaves the id to this program
			end := int(dec.InputOffset())
			start := end - len(raw)
			return concat(line[:start], id, line[end:]), nil
		}
	}
	return concat(line[:open], []byte(`"id":`), id, []byte(","), line[open:]), nil
}

func concat(parts ...[]byte) []byte {
	return bytes.Join(parts, nil)
}

// writeFileAtomic writes data to path through a temporary file in the same
// directory, so that path never holds part of it.
func writeFileAtomic(path string, data []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	_, werr := f.Write(data)
	cerr := f.Close()
	if err := errors.Join(werr, cerr); err != nil {
		_ = os.Remove(f.Name())
		return err
	}
	if err := os.Rename(f.Name(), path); err != nil {
		_ = os.Remove(f.Name())
		return err
	}
	return nil
}
