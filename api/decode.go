package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"reflect"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/gin-gonic/gin"
)

// requestError is a 4xx answer found while reading a request.
type requestError struct {
	status  int
	code    string
	message string
}

func badRequest(format string, args ...any) *requestError {
	return &requestError{status: http.StatusBadRequest, code: "invalid_request", message: fmt.Sprintf(format, args...)}
}

// decodeJSON reads the request body into v (a pointer to a struct of the
// request's fields) with [checkBody] and [decodeStrict]. It answers the
// request itself and returns false on any problem.
func decodeJSON(c *gin.Context, v any) bool {
	rerr := checkBody(c.Request.Header)
	if rerr == nil {
		var data []byte
		if c.Request.Body != nil {
			var err error
			data, err = io.ReadAll(c.Request.Body) // bounded by limitBody
			var tooBig *http.MaxBytesError
			switch {
			case errors.As(err, &tooBig):
				rerr = tooLarge(tooBig.Limit)
			case err != nil:
				rerr = badRequest("the body could not be read")
			}
		}
		if rerr == nil {
			rerr = decodeStrict(data, v)
		}
	}
	if rerr != nil {
		abort(c, rerr.status, rerr.code, rerr.message)
		return false
	}
	return true
}

func tooLarge(limit int64) *requestError {
	return &requestError{status: http.StatusRequestEntityTooLarge, code: "payload_too_large",
		message: fmt.Sprintf("the body is larger than %d bytes", limit)}
}

// checkBody checks the headers that say how to read a body. The body is
// always read as JSON; a Content-Type, if sent, must be JSON
// (application/json, application/*+json) or one of the types plain tools
// send by default (application/x-www-form-urlencoded from curl -d,
// text/plain from a browser's fetch), with no charset but UTF-8. Any other
// type, and any Content-Encoding but identity, is 415.
func checkBody(h http.Header) *requestError {
	unsupported := func(msg string) *requestError {
		return &requestError{status: http.StatusUnsupportedMediaType, code: "unsupported_media_type", message: msg}
	}
	if enc := h.Get("Content-Encoding"); enc != "" && !strings.EqualFold(enc, "identity") {
		return unsupported("the body must not be encoded (Content-Encoding)")
	}
	ct := h.Get("Content-Type")
	if ct == "" {
		return nil
	}
	const want = "the body must be JSON (Content-Type: application/json)"
	mt, params, err := mime.ParseMediaType(ct)
	if err != nil {
		return unsupported(want)
	}
	switch {
	case mt == "application/json", strings.HasPrefix(mt, "application/") && strings.HasSuffix(mt, "+json"),
		mt == "application/x-www-form-urlencoded", mt == "text/plain":
	default:
		return unsupported(want)
	}
	if cs, ok := params["charset"]; ok && !strings.EqualFold(cs, "utf-8") && !strings.EqualFold(cs, "utf8") {
		return unsupported("the body must be UTF-8")
	}
	return nil
}

// decodeStrict decodes data into v, a pointer to a struct whose json tags
// name the request's fields. data must be valid UTF-8 holding exactly one
// JSON object whose keys are among the field names (matched exactly, not
// ignoring case as encoding/json does), none twice, with values of the
// fields' types, and nothing after it but white space. Missing fields are
// left alone: the caller checks which it requires.
func decodeStrict(data []byte, v any) *requestError {
	if !utf8.Valid(data) {
		return badRequest("the body must be UTF-8")
	}
	fields := jsonFields(v)
	dec := json.NewDecoder(bytes.NewReader(data))
	tok, err := dec.Token()
	switch {
	case errors.Is(err, io.EOF):
		return badRequest("the body is empty; want a JSON object")
	case err != nil:
		return badRequest("the body is not valid JSON")
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return badRequest("the body must be a JSON object")
	}
	seen := make(map[string]bool, len(fields))
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return badRequest("the body is not valid JSON")
		}
		key, _ := tok.(string) // the decoder only returns strings as keys
		switch {
		case !fields[key]:
			return badRequest("unknown field %s", quoteShort(key))
		case seen[key]:
			return badRequest("duplicate field %s", quoteShort(key))
		}
		seen[key] = true
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return badRequest("the body is not valid JSON")
		}
	}
	if _, err := dec.Token(); err != nil { // the closing brace
		return badRequest("the body is not valid JSON")
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return badRequest("unexpected data after the JSON object")
	}
	if hasLoneSurrogate(data) {
		return badRequest("the body holds a \\u escape of a lone UTF-16 surrogate, which is no character")
	}
	if err := json.Unmarshal(data, v); err != nil {
		var typeErr *json.UnmarshalTypeError
		if errors.As(err, &typeErr) {
			return badRequest("field %s must be %s", quoteShort(typeErr.Field), jsonType(typeErr.Type))
		}
		return badRequest("the body is not valid JSON")
	}
	return nil
}

// jsonFields returns the JSON names of the fields of the struct v points to.
func jsonFields(v any) map[string]bool {
	t := reflect.TypeOf(v).Elem()
	out := make(map[string]bool, t.NumField())
	for f := range t.Fields() {
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		switch name {
		case "-":
		case "":
			out[f.Name] = true
		default:
			out[name] = true
		}
	}
	return out
}

// quoteShort quotes a client-supplied name for an error message, cut to 64
// bytes.
func quoteShort(s string) string {
	if len(s) > 64 {
		s = strings.ToValidUTF8(s[:64], "") + "..."
	}
	return strconv.Quote(s)
}

func jsonType(t reflect.Type) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return "an integer (within range)"
	case reflect.String:
		return "a string"
	}
	return "of another type"
}

// parseWait reads the ?wait= of an order read: a Go duration ("10s",
// "500ms") or whole seconds ("10"), not negative, capped at limit.
func parseWait(v string, limit time.Duration) (time.Duration, bool) {
	n, err := strconv.ParseInt(v, 10, 64)
	if errors.Is(err, strconv.ErrRange) {
		return limit, !strings.HasPrefix(v, "-") // a huge number of seconds
	}
	if err == nil {
		switch {
		case n < 0:
			return 0, false
		case n > int64(limit/time.Second):
			return limit, true
		}
		return min(time.Duration(n)*time.Second, limit), true
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		return 0, false
	}
	return min(d, limit), true
}

// hasLoneSurrogate reports whether data, valid JSON, holds a \uD800-\uDFFF
// escape that is not a high surrogate followed by a low one. encoding/json
// turns one into U+FFFD, so what was stored would differ from what was
// sent; utf8.Valid cannot see it, the escape being ASCII.
func hasLoneSurrogate(data []byte) bool {
	hex4 := func(b []byte) rune {
		n, err := strconv.ParseUint(string(b), 16, 16)
		if err != nil {
			return -1
		}
		return rune(n)
	}
	for i := 0; i < len(data); i++ {
		if data[i] != '\\' {
			continue
		}
		i++ // the escaped character: a backslash escaping a backslash is skipped whole
		if i >= len(data) || data[i] != 'u' || i+5 > len(data) {
			continue
		}
		switch r := hex4(data[i+1 : i+5]); {
		case r >= 0xD800 && r < 0xDC00: // high: a low must follow
			if i+11 <= len(data) && data[i+5] == '\\' && data[i+6] == 'u' {
				if lo := hex4(data[i+7 : i+11]); lo >= 0xDC00 && lo < 0xE000 {
					i += 10
					continue
				}
			}
			return true
		case r >= 0xDC00 && r < 0xE000:
			return true
		}
		i += 4
	}
	return false
}
