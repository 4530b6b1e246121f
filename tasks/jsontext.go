package tasks

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

// This file holds the checks of JSON text that encoding/json does not
// make: it decodes a string that is not valid UTF-8 (or has an unpaired
// UTF-16 surrogate escape) by replacing the bad bytes with U+FFFD, and an
// object that names a member twice by keeping the last. Payloads, the
// enqueue CLI's --file lines and the bodies of POST /api/tasks/{type}
// refuse both instead, naming the field.

// member is a member of the top-level object of a document, as scanJSON
// reads it: its name (unescaped) and whether its value is anything but
// null.
type member struct {
	name    []byte
	nonNull bool
}

// scanFrame is an object or array scanJSON is inside.
type scanFrame struct {
	object    bool
	expectKey bool                // object: the next string is a member name
	index     int                 // array: the current element
	key       []byte              // object: the current member's name
	keys      int                 // object: where its names start in scanJSON's list
	set       map[string]struct{} // object: its names, once it has many
}

// manyKeys is when an object's names move from a list to a map, so that
// an object of a million members is checked in linear time.
const manyKeys = 16

// scanJSON checks data, which must be valid JSON (json.Valid), and
// appends the members of its top-level object, if it is one, to dst.
// It reports the first string (a value or a member name) that is not
// valid UTF-8 or has an unpaired surrogate escape, and the first object
// that names a member twice, naming the field: `duplicate field
// "opts.x"`, `field "tags[1]": not valid UTF-8`. With topOnly it checks
// only the names of the top-level object's members, not its values (an
// envelope whose payload is checked as a payload).
func scanJSON(dst []member, data []byte, topOnly bool) ([]member, error) {
	var (
		stackBuf [8]scanFrame
		stack    = stackBuf[:0]
		keyBuf   [16][]byte
		keys     = keyBuf[:0]
		pending  = -1 // the member of dst awaiting its value
	)
	// value notes the start of a value at data[i].
	value := func(c byte) {
		if len(stack) == 1 && pending >= 0 {
			dst[pending].nonNull = c != 'n'
			pending = -1
		}
	}
	for i := 0; i < len(data); {
		c := data[i]
		switch c {
		case '"':
			end, escaped, problem := scanString(data, i)
			top := len(stack) - 1
			if top >= 0 && stack[top].object && stack[top].expectKey {
				f := &stack[top]
				f.expectKey = false
				if topOnly && top > 0 {
					i = end
					continue
				}
				name := data[i+1 : end-1]
				if escaped {
					var s string
					if json.Unmarshal(data[i:end], &s) == nil {
						name = []byte(s)
					}
				}
				f.key = name
				if problem != "" {
					return dst, fmt.Errorf("field %q: name %s", fieldPathOf(stack), problem)
				}
				var dup bool
				if keys, dup = f.add(keys, name); dup {
					return dst, fmt.Errorf("duplicate field %q", fieldPathOf(stack))
				}
				if top == 0 {
					dst = append(dst, member{name: name})
					pending = len(dst) - 1
				}
				i = end
				continue
			}
			value(c)
			if problem != "" && !topOnly {
				if p := fieldPathOf(stack); p != "" {
					return dst, fmt.Errorf("field %q: %s", p, problem)
				}
				return dst, fmt.Errorf("a string %s", problem)
			}
			i = end
			continue
		case '{', '[':
			value(c)
			f := scanFrame{object: c == '{', expectKey: c == '{', keys: len(keys)}
			stack = append(stack, f)
		case '}', ']':
			if n := len(stack); n > 0 {
				keys = keys[:stack[n-1].keys]
				stack = stack[:n-1]
			}
		case ',':
			if n := len(stack); n > 0 {
				if stack[n-1].object {
					stack[n-1].expectKey = true
				} else {
					stack[n-1].index++
				}
			}
		case ' ', '\t', '\n', '\r', ':':
		default:
			value(c)
		}
		i++
	}
	return dst, nil
}

// add records name among the names of object f, whose names start at
// f.keys in keys, and returns keys; dup reports whether f already had it.
func (f *scanFrame) add(keys [][]byte, name []byte) (_ [][]byte, dup bool) {
	if f.set != nil {
		if _, dup := f.set[string(name)]; dup {
			return keys, true
		}
		f.set[string(name)] = struct{}{}
		return keys, false
	}
	for _, k := range keys[f.keys:] {
		if bytes.Equal(k, name) {
			return keys, true
		}
	}
	keys = append(keys, name)
	if len(keys)-f.keys > manyKeys {
		f.set = make(map[string]struct{}, 2*manyKeys)
		for _, k := range keys[f.keys:] {
			f.set[string(k)] = struct{}{}
		}
		keys = keys[:f.keys]
	}
	return keys, false
}

// fieldPathOf names the value scanJSON is at, as the payload errors do:
// "opts.x", "tags[1]", "rows[0].name".
func fieldPathOf(stack []scanFrame) string {
	var b strings.Builder
	for _, f := range stack {
		if f.object {
			if b.Len() > 0 {
				b.WriteByte('.')
			}
			b.Write(f.key)
		} else {
			b.WriteString("[" + strconv.Itoa(f.index) + "]")
		}
	}
	return b.String()
}

// scanString reads the JSON string that starts at data[i], a quote. It
// returns the index just past its closing quote, whether it has escapes,
// and what is wrong with its text: "" or "is not valid UTF-8" or "has an
// unpaired surrogate escape \udxxx" (which encoding/json would also
// decode as U+FFFD).
func scanString(data []byte, i int) (end int, escaped bool, problem string) {
	j := i + 1
	for j < len(data) {
		b := data[j]
		switch {
		case b == '"':
			return j + 1, escaped, problem
		case b == '\\':
			escaped = true
			if j+1 < len(data) && data[j+1] == 'u' {
				r := hex4(data, j+2)
				switch {
				case r >= 0xD800 && r < 0xDC00:
					if lo := hex4(data, j+8); j+7 < len(data) && data[j+6] == '\\' && data[j+7] == 'u' && lo >= 0xDC00 && lo < 0xE000 {
						j += 12
						continue
					}
					fallthrough
				case r >= 0xDC00 && r < 0xE000:
					if problem == "" {
						problem = "has an unpaired surrogate escape " + string(data[j:min(j+6, len(data))])
					}
				}
				j += 6
				continue
			}
			j += 2
		case b < utf8.RuneSelf:
			j++
		default:
			r, size := utf8.DecodeRune(data[j:])
			if r == utf8.RuneError && size == 1 && problem == "" {
				problem = "is not valid UTF-8"
			}
			j += size
		}
	}
	return len(data), escaped, problem
}

// hex4 returns the value of the four hex digits at data[i:], or -1.
func hex4(data []byte, i int) rune {
	if i+4 > len(data) {
		return -1
	}
	var r rune
	for _, c := range data[i : i+4] {
		switch {
		case c >= '0' && c <= '9':
			r = r<<4 | rune(c-'0')
		case c >= 'a' && c <= 'f':
			r = r<<4 | rune(c-'a'+10)
		case c >= 'A' && c <= 'F':
			r = r<<4 | rune(c-'A'+10)
		default:
			return -1
		}
	}
	return r
}

// CheckJSON checks data, a JSON document, for what encoding/json decodes
// without a word: a string (a value or a member name, at any depth) that
// is not valid UTF-8 or has an unpaired surrogate escape, and an object
// that names a member twice. The error names the field (`duplicate field
// "opts.x"`, `field "key": is not valid UTF-8`); text that is not JSON at
// all is left to the decoder (nil).
func CheckJSON(data []byte) error {
	if !json.Valid(data) {
		return nil
	}
	_, err := scanJSON(nil, data, false)
	return err
}

// CheckEnvelope checks data, a JSON document, as CheckJSON does, but only
// the names of its top-level object's members: the envelope of a task
// (an enqueue CLI --file line, the body of POST /api/tasks/{type}) whose
// "payload" is then checked as a payload, and whose other values are
// checked as options.
func CheckEnvelope(data []byte) error {
	if !json.Valid(data) {
		return nil
	}
	_, err := scanJSON(nil, data, true)
	return err
}

// errNotObject is scanPayload's error for valid JSON that is neither an
// object nor null, should encoding/json accept it into a map.
var errNotObject = errors.New("payload must be a JSON object")

// scanPayload checks trimmed, a payload, as decodeStrict needs: valid
// JSON, an object (or null, read as {}), passing scanJSON. It appends the
// top-level members to dst. The error is the message of a payload error.
func scanPayload(dst []member, trimmed []byte) ([]member, string) {
	if !json.Valid(trimmed) || (trimmed[0] != '{' && string(trimmed) != "null") {
		// The slow path, for the decoder's own message.
		var present map[string]nonNull
		if err := json.Unmarshal(trimmed, &present); err != nil {
			return dst, describeJSONError(err)
		}
		return dst, errNotObject.Error()
	}
	dst, err := scanJSON(dst, trimmed, false)
	if err != nil {
		return dst, err.Error()
	}
	return dst, ""
}
