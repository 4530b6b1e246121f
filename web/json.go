package web

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"

	"github.com/forgeq/forgeq/tasks"
)

// writeJSON writes v as the JSON body of a response with status. The
// responses of the API are never cached.
func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		// Unreachable with the types this package writes.
		status = http.StatusInternalServerError
		b = []byte(`{"error":{"code":"internal","message":"encode response"}}`)
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}

// mediaType returns the media type of r's body, lower-case, without
// parameters; "" when there is none or it does not parse.
func mediaType(r *http.Request) string {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil {
		return ""
	}
	return mt
}

// isJSONType reports whether mt is application/json or a +json type.
func isJSONType(mt string) bool {
	return mt == "application/json" || strings.HasSuffix(mt, "+json")
}

// decodeJSON decodes r's body, which must be exactly one JSON value of
// Content-Type application/json, into dst, refusing unknown fields and a
// field given twice (tasks.CheckEnvelope: encoding/json would keep the
// last). On failure it writes the error response (400, 413 or 415) and
// returns false.
func decodeJSON(w http.ResponseWriter, r *http.Request, dst any) bool {
	if !isJSONType(mediaType(r)) {
		fail(w, r, http.StatusUnsupportedMediaType, codeUnsupportedMedia,
			fmt.Sprintf("the body must be JSON, sent with Content-Type: application/json (got %q)", r.Header.Get("Content-Type")))
		return false
	}
	dec := json.NewDecoder(r.Body)
	var raw json.RawMessage
	err := dec.Decode(&raw)
	if err == nil {
		if err = dec.Decode(new(json.RawMessage)); err == io.EOF {
			err = nil
		} else if err == nil {
			err = errors.New("trailing data after the JSON value")
		}
	}
	if err == nil {
		if err := tasks.CheckEnvelope(raw); err != nil {
			fail(w, r, http.StatusBadRequest, codeMalformedJSON, err.Error())
			return false
		}
		strict := json.NewDecoder(bytes.NewReader(raw))
		strict.DisallowUnknownFields()
		if err = strict.Decode(dst); err == nil {
			return true
		}
	}
	var tooLarge *http.MaxBytesError
	if errors.As(err, &tooLarge) {
		fail(w, r, http.StatusRequestEntityTooLarge, codeTooLarge,
			fmt.Sprintf("the request body is over the %d-byte limit", tooLarge.Limit))
		return false
	}
	fail(w, r, http.StatusBadRequest, codeMalformedJSON, describeJSONError(err))
	return false
}

// describeJSONError turns an encoding/json error into a message for the
// client.
func describeJSONError(err error) string {
	var (
		syntaxErr *json.SyntaxError
		typeErr   *json.UnmarshalTypeError
	)
	switch {
	case err == io.EOF:
		return "the body is empty: want a JSON object"
	case errors.Is(err, io.ErrUnexpectedEOF):
		return "malformed JSON: the body ends in the middle of a value"
	case errors.As(err, &syntaxErr):
		return fmt.Sprintf("malformed JSON at byte %d: %s", syntaxErr.Offset, strings.TrimPrefix(syntaxErr.Error(), "json: "))
	case errors.As(err, &typeErr) && typeErr.Field == "":
		return fmt.Sprintf("the body must be a JSON object, not %s", typeErr.Value)
	case errors.As(err, &typeErr):
		return fmt.Sprintf("field %q: want %s, got %s", typeErr.Field, jsonKind(typeErr.Type.Kind().String()), typeErr.Value)
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		return "unknown field " + strings.TrimPrefix(err.Error(), "json: unknown field ")
	}
	return "malformed JSON: " + strings.TrimPrefix(err.Error(), "json: ")
}

// jsonKind names a Go kind as a JSON type.
func jsonKind(kind string) string {
	switch kind {
	case "string":
		return "a string"
	case "bool":
		return "a boolean"
	case "int", "int8", "int16", "int32", "int64", "uint", "uint8", "uint16", "uint32", "uint64":
		return "an integer"
	case "float32", "float64":
		return "a number"
	case "slice", "array":
		return "an array"
	case "ptr", "pointer":
		return "a value"
	}
	return "an object"
}
