package forge

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"strings"
)

// decode unmarshals a payload into v. Any JSON error becomes ErrMalformed
// with the event name, the reason and, where json tells it, the byte offset,
// so that the sender's log shows where its payload went wrong.
func decode(event string, body []byte, v any) error {
	err := json.Unmarshal(body, v)
	if err == nil {
		return nil
	}
	var syntaxErr *json.SyntaxError
	var typeErr *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syntaxErr):
		return fmt.Errorf("%w: %s: %v (at byte %d)", ErrMalformed, event, err, syntaxErr.Offset)
	case errors.As(err, &typeErr):
		field := "the payload"
		if typeErr.Field != "" {
			field = strconv.Quote(typeErr.Field)
		}
		return fmt.Errorf("%w: %s: %s is a JSON %s where %s was expected (at byte %d)",
			ErrMalformed, event, field, typeErr.Value, jsonKind(typeErr.Type), typeErr.Offset)
	}
	return fmt.Errorf("%w: %s: %v", ErrMalformed, event, err)
}

// jsonKind names the JSON value a Go type is decoded from.
func jsonKind(t reflect.Type) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.Struct, reflect.Map:
		return "an object"
	case reflect.Slice, reflect.Array:
		return "an array"
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "a boolean"
	}
	return "a number"
}

// payloadCommit is a commit as every forge's push payload describes it.
type payloadCommit struct {
	ID      string `json:"id"`
	Message string `json:"message"`
	URL     string `json:"url"` // the commit's web page
}

// normalizePush checks what every forge's push must have and derives the
// forge-neutral fields: Deleted from an all-zero after, Branch or Tag from
// the ref, Commit (defaulting to after) as lower-case hex, the first line
// of Message. A push that deletes nothing must have a commit SHA as after,
// and as head commit id when the payload names one: Kiln builds it.
func normalizePush(event string, p *Push, after string) error {
	if p.Ref == "" {
		return fmt.Errorf("%w: %s: missing \"ref\"", ErrMalformed, event)
	}
	if after == "" {
		return fmt.Errorf("%w: %s: missing \"after\"", ErrMalformed, event)
	}
	if err := CheckRef(p.Ref); err != nil {
		return fmt.Errorf("%w: %s: \"ref\" %.100q %v", ErrMalformed, event, p.Ref, err)
	}
	if name, ok := strings.CutPrefix(p.Ref, "refs/heads/"); ok {
		p.Branch = name
	} else if name, ok := strings.CutPrefix(p.Ref, "refs/tags/"); ok {
		p.Tag = name
	}
	p.Message = firstLine(p.Message)
	p.Deleted = p.Deleted || isZeroSHA(after)
	if p.Deleted {
		p.Commit = ""
		return nil
	}
	if after = strings.ToLower(after); !isSHA(after) {
		return fmt.Errorf("%w: %s: \"after\" %.100q is not a commit SHA", ErrMalformed, event, after)
	}
	if p.Commit == "" {
		p.Commit = after
	} else if p.Commit = strings.ToLower(p.Commit); !isSHA(p.Commit) || isZeroSHA(p.Commit) {
		return fmt.Errorf("%w: %s: head commit id %.100q is not a commit SHA", ErrMalformed, event, p.Commit)
	}
	return nil
}

// maxRef bounds a ref name; git has no limit, but forges stop far below.
const maxRef = 1024

// checkRef accepts a full ref name (refs/...) that git itself would accept,
// less a few rules no forge would break; it guards what later reaches git's
// command line and the dashboard.
// CheckRef reports whether ref is a full ref name git accepts.
func CheckRef(ref string) error {
	name, ok := strings.CutPrefix(ref, "refs/")
	switch {
	case !ok:
		return errors.New(`does not start with "refs/"`)
	case len(ref) > maxRef:
		return fmt.Errorf("is longer than %d bytes", maxRef)
	case name == "" || strings.HasSuffix(name, "/") || strings.HasSuffix(name, "."):
		return errors.New("names nothing")
	case strings.Contains(name, "//") || strings.Contains(name, "..") || strings.Contains(name, "@{"):
		return errors.New("is not a valid ref name")
	}
	for _, r := range name {
		if r < 0x20 || r == 0x7f || strings.ContainsRune(" ~^:?*[\\", r) {
			return fmt.Errorf("contains %q", r)
		}
	}
	return nil
}

// isSHA reports whether s is a lower-case hex SHA-1 or SHA-256 object name.
func isSHA(s string) bool {
	if len(s) != 40 && len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// isZeroSHA reports whether s is the all-zero object name forges send as
// "after" for a deleted ref (and as "before" for a new one).
func isZeroSHA(s string) bool {
	return isSHA(s) && strings.Trim(s, "0") == ""
}

// firstLine returns the first line of a commit message, trimmed.
func firstLine(msg string) string {
	line, _, _ := strings.Cut(strings.TrimSpace(msg), "\n")
	return strings.TrimSpace(line)
}

// firstNonEmpty returns the first of values that is not empty.
func firstNonEmpty(values ...string) string {
	for _, v := range values {
		if v != "" {
			return v
		}
	}
	return ""
}
