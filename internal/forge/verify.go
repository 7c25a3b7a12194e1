package forge

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"net/http"
	"strings"
)

// sigHeader is a header that carries the hex HMAC-SHA256 of the body, and
// the text the forge puts in front of the hex ("sha256=" for GitHub's).
type sigHeader struct {
	name, prefix string
}

// verifyHMAC returns a verifier that checks the first of headers present
// against the HMAC-SHA256 of the body keyed with the secret. Only that one
// is checked: a forge that sends several computes them all from the same
// secret and body, so a second chance would prove nothing more.
func verifyHMAC(headers ...sigHeader) func(http.Header, []byte, string) error {
	return func(h http.Header, body []byte, secret string) error {
		for _, sh := range headers {
			v := h.Get(sh.name)
			if v == "" {
				continue
			}
			digest, ok := strings.CutPrefix(v, sh.prefix)
			if !ok {
				return fmt.Errorf("%w: %s does not start with %q", ErrSignature, sh.name, sh.prefix)
			}
			got, err := hex.DecodeString(digest)
			if err != nil || len(got) != sha256.Size {
				return fmt.Errorf("%w: %s is not a hex HMAC-SHA256", ErrSignature, sh.name)
			}
			mac := hmac.New(sha256.New, []byte(secret))
			mac.Write(body)
			if !hmac.Equal(got, mac.Sum(nil)) {
				return fmt.Errorf("%w: %s does not match the body and the project's secret", ErrSignature, sh.name)
			}
			return nil
		}
		names := make([]string, len(headers))
		for i, sh := range headers {
			names[i] = sh.name
		}
		return fmt.Errorf("%w: missing %s header", ErrSignature, strings.Join(names, " or "))
	}
}

// verifyGitLabToken checks X-Gitlab-Token, which GitLab sends as the secret
// itself. Both sides are hashed first so that the comparison takes the same
// time whatever the lengths, and leaks neither the secret's length nor how
// much of it a guess got right.
func verifyGitLabToken(h http.Header, _ []byte, secret string) error {
	token := h.Get("X-Gitlab-Token")
	if token == "" {
		return fmt.Errorf("%w: missing X-Gitlab-Token header", ErrSignature)
	}
	got, want := sha256.Sum256([]byte(token)), sha256.Sum256([]byte(secret))
	if subtle.ConstantTimeCompare(got[:], want[:]) != 1 {
		return fmt.Errorf("%w: X-Gitlab-Token does not match the project's secret", ErrSignature)
	}
	return nil
}
