package forge

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"hash"
	"io"
	"net/http"
	"strings"
)

// sigHeader is a header that carries the hex HMAC-SHA256 of the body, and
// the text the forge puts in front of the hex ("sha256=" for GitHub's).
type sigHeader struct {
	name, prefix string
}

// Verifier checks one delivery's signature or token while its body is
// read, so that the body need not be held whole before it is known to be
// authentic: write the body to it as it arrives (it is an io.Writer), then
// call Verify.
//
// What can be checked from the header alone is checked by NewVerifier,
// before any byte of the body is read: a missing or ill-formed signature
// header (GitHub, Gitea) and GitLab's token, which is the secret itself.
type Verifier struct {
	mac    hash.Hash // nil for a token forge: nothing to compute
	want   []byte    // the signature the header carries
	header string    // its name, for errors
}

// NewVerifier starts verifying a delivery of forgeName with header against
// the project's secret. Errors wrap ErrUnknownForge, or ErrSignature: an
// empty secret accepts nothing; a missing or ill-formed signature header or
// a wrong GitLab token is refused at once.
func NewVerifier(forgeName string, header http.Header, secret string) (*Verifier, error) {
	f, ok := lookupForge(forgeName)
	if !ok {
		return nil, fmt.Errorf("%w %q: want github, gitlab, gitea or forgejo", ErrUnknownForge, forgeName)
	}
	if secret == "" {
		return nil, fmt.Errorf("%w: project has no webhook secret", ErrSignature)
	}
	if f.sigs == nil {
		if err := verifyGitLabToken(header, secret); err != nil {
			return nil, err
		}
		return &Verifier{}, nil
	}
	// Only the first signature header present is checked: a forge that
	// sends several computes them all from the same secret and body, so a
	// second chance would prove nothing more.
	for _, sh := range f.sigs {
		v := header.Get(sh.name)
		if v == "" {
			continue
		}
		digest, ok := strings.CutPrefix(v, sh.prefix)
		if !ok {
			return nil, fmt.Errorf("%w: %s does not start with %q", ErrSignature, sh.name, sh.prefix)
		}
		got, err := hex.DecodeString(digest)
		if err != nil || len(got) != sha256.Size {
			return nil, fmt.Errorf("%w: %s is not a hex HMAC-SHA256", ErrSignature, sh.name)
		}
		return &Verifier{mac: hmac.New(sha256.New, []byte(secret)), want: got, header: sh.name}, nil
	}
	names := make([]string, len(f.sigs))
	for i, sh := range f.sigs {
		names[i] = sh.name
	}
	return nil, fmt.Errorf("%w: missing %s header", ErrSignature, strings.Join(names, " or "))
}

// Write adds p to the body being verified. It never fails.
func (v *Verifier) Write(p []byte) (int, error) {
	if v.mac != nil {
		v.mac.Write(p)
	}
	return len(p), nil
}

// Verify reports whether the body written so far is the one the forge
// signed (constant time); an error wraps ErrSignature. A token forge's
// delivery was verified by NewVerifier already.
func (v *Verifier) Verify() error {
	if v.mac == nil {
		return nil
	}
	if !hmac.Equal(v.want, v.mac.Sum(nil)) {
		return fmt.Errorf("%w: %s does not match the body and the project's secret", ErrSignature, v.header)
	}
	return nil
}

// Verify checks a whole body read into memory: NewVerifier, Write, Verify.
func Verify(forgeName string, header http.Header, body io.Reader, secret string) error {
	v, err := NewVerifier(forgeName, header, secret)
	if err != nil {
		return err
	}
	if _, err := io.Copy(v, body); err != nil {
		return err
	}
	return v.Verify()
}

// verifyGitLabToken checks X-Gitlab-Token, which GitLab sends as the secret
// itself. Both sides are hashed first so that the comparison takes the same
// time whatever the lengths, and leaks neither the secret's length nor how
// much of it a guess got right.
func verifyGitLabToken(h http.Header, secret string) error {
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
