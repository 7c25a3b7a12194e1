package forge

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
)

// verifyForges are the forges FuzzVerify picks from by its first argument.
var verifyForges = []string{"github", "gitea", "forgejo", "gitlab"}

// FuzzVerify holds the streaming Verifier to the whole-body HMAC: whatever
// the header and however the body is cut into writes, a delivery is
// accepted exactly when its signature header (GitHub, Gitea) is the hex
// HMAC-SHA256 of the whole body with the secret, or its token (GitLab) is
// the secret; the right signature of a body is always accepted and the
// same signature over a changed body never is. Seeds: every fixture,
// rightly and wrongly signed (testdata/fuzz/FuzzVerify, by TestFuzzSeeds).
func FuzzVerify(f *testing.F) {
	f.Add(uint8(0), "sha256="+hmacHex(testSecret, []byte(`{}`)), []byte(`{}`), uint16(1))
	f.Add(uint8(1), hmacHex(testSecret, []byte(`{"a":1}`)), []byte(`{"a":1}`), uint16(3))
	f.Add(uint8(3), testSecret, []byte(`{}`), uint16(0))
	f.Fuzz(func(t *testing.T, which uint8, sig string, body []byte, cut uint16) {
		forgeName := verifyForges[int(which)%len(verifyForges)]
		header := sigHeaders(forgeName, sig)
		err := streamVerify(forgeName, header, body, int(cut))
		if err != nil && !errors.Is(err, ErrSignature) {
			t.Fatalf("%s: error %v does not wrap ErrSignature", forgeName, err)
		}
		if want := wholeBodyValid(forgeName, sig, body); (err == nil) != want {
			t.Fatalf("%s %q over %d bytes (cut %d): accepted=%v, want %v (%v)", forgeName, sig, len(body), cut, err == nil, want, err)
		}
		if forgeName == "gitlab" {
			return
		}
		// The right signature, however the body is cut: accepted.
		good := hmacHex(testSecret, body)
		if forgeName == "github" {
			good = "sha256=" + good
		}
		if err := streamVerify(forgeName, sigHeaders(forgeName, good), body, int(cut)); err != nil {
			t.Fatalf("%s: the body's own signature refused: %v", forgeName, err)
		}
		if len(body) > 0 {
			changed := bytes.Clone(body)
			changed[int(cut)%len(changed)] ^= 1
			if err := streamVerify(forgeName, sigHeaders(forgeName, good), changed, int(cut)); !errors.Is(err, ErrSignature) {
				t.Fatalf("%s: a changed body accepted (%v)", forgeName, err)
			}
		}
	})
}

// TestVerifyBeforeBody: what the header alone proves wrong is refused
// before a byte of the body is read; the signature header a forge's
// verifier checks is the first one present.
func TestVerifyBeforeBody(t *testing.T) {
	body := []byte(`{"zen":"Design for failure."}`)
	for _, tc := range []struct {
		name, forge string
		header      http.Header
		msg         string
	}{
		{"github unsigned", "github", http.Header{}, "missing X-Hub-Signature-256 header"},
		{"github not hex", "github", sigHeaders("github", "sha256=zz"), "not a hex HMAC-SHA256"},
		{"github no prefix", "github", sigHeaders("github", hmacHex(testSecret, body)), `does not start with "sha256="`},
		{"gitea unsigned", "gitea", http.Header{}, "missing X-Forgejo-Signature or X-Gitea-Signature or X-Hub-Signature-256 header"},
		{"gitlab no token", "gitlab", http.Header{}, "missing X-Gitlab-Token header"},
		{"gitlab wrong token", "gitlab", sigHeaders("gitlab", "guess"), "X-Gitlab-Token does not match"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewVerifier(tc.forge, tc.header, testSecret)
			if !errors.Is(err, ErrSignature) || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("NewVerifier = %v, want ErrSignature saying %q", err, tc.msg)
			}
		})
	}
	if _, err := NewVerifier("github", sigHeaders("github", "sha256="+hmacHex(testSecret, body)), ""); !errors.Is(err, ErrSignature) {
		t.Errorf("empty secret: %v, want ErrSignature", err)
	}
	if _, err := NewVerifier("bitbucket", http.Header{}, testSecret); !errors.Is(err, ErrUnknownForge) {
		t.Errorf("unknown forge: %v", err)
	}
	// Gitea: X-Gitea-Signature is checked, not the X-Hub-Signature-256
	// that follows it, even when that one is right.
	h := sigHeaders("gitea", strings.Repeat("00", 32))
	h.Set("X-Hub-Signature-256", "sha256="+hmacHex(testSecret, body))
	if err := streamVerify("gitea", h, body, 7); err == nil || !strings.Contains(err.Error(), "X-Gitea-Signature does not match") {
		t.Errorf("gitea with a wrong X-Gitea-Signature: %v", err)
	}
}

// sigHeaders is a header carrying sig where forgeName puts its signature
// (or token).
func sigHeaders(forgeName, sig string) http.Header {
	h := http.Header{}
	switch forgeName {
	case "github":
		h.Set("X-Hub-Signature-256", sig)
	case "gitea", "forgejo":
		h.Set("X-Gitea-Signature", sig)
	case "gitlab":
		h.Set("X-Gitlab-Token", sig)
	}
	return h
}

// streamVerify verifies body written in pieces of at most cut+1 bytes
// (every size from one byte to the whole body, as cut varies).
func streamVerify(forgeName string, header http.Header, body []byte, cut int) error {
	v, err := NewVerifier(forgeName, header, testSecret)
	if err != nil {
		return err
	}
	for rest := body; len(rest) > 0; {
		n := min(len(rest), cut%4096+1)
		v.Write(rest[:n])
		rest = rest[n:]
	}
	return v.Verify()
}

// wholeBodyValid is the reference: the signature computed over the body
// held whole, as the forges document it.
func wholeBodyValid(forgeName, sig string, body []byte) bool {
	if forgeName == "gitlab" {
		return sig == testSecret
	}
	if forgeName == "github" {
		var ok bool
		if sig, ok = strings.CutPrefix(sig, "sha256="); !ok {
			return false
		}
	}
	got, err := hex.DecodeString(sig)
	if err != nil {
		return false
	}
	mac := hmac.New(sha256.New, []byte(testSecret))
	mac.Write(body)
	return hmac.Equal(got, mac.Sum(nil))
}

// verifySeeds are FuzzVerify's seeds: every fixture signed rightly, and
// wrongly (another secret) for the HMAC forges, with its token for GitLab.
func verifySeeds(t *testing.T) []fuzzSeed {
	var seeds []fuzzSeed
	files, err := filepath.Glob("testdata/*/*.json")
	if err != nil || len(files) == 0 {
		t.Fatalf("no fixtures: %v", err)
	}
	enc := func(which int, sig string, body []byte, cut int) []byte {
		return fmt.Appendf(nil, "go test fuzz v1\nbyte(%q)\nstring(%q)\n[]byte(%q)\nuint16(%d)\n", byte(which), sig, body, cut)
	}
	for i, file := range files {
		dir := filepath.Base(filepath.Dir(file))
		name := dir + "." + strings.TrimSuffix(filepath.Base(file), ".json")
		body := readFixture(t, file)
		switch dir {
		case "github":
			seeds = append(seeds,
				fuzzSeed{target: "FuzzVerify", name: name + ".signed", data: enc(0, "sha256="+hmacHex(testSecret, body), body, 61*i)},
				fuzzSeed{target: "FuzzVerify", name: name + ".wrong", data: enc(0, "sha256="+hmacHex("another secret", body), body, 509*i)})
		case "gitea":
			seeds = append(seeds,
				fuzzSeed{target: "FuzzVerify", name: name + ".signed", data: enc(1, hmacHex(testSecret, body), body, 1023)},
				fuzzSeed{target: "FuzzVerify", name: name + ".wrong", data: enc(1, hmacHex("another secret", body), body, 0)})
		case "gitlab":
			seeds = append(seeds,
				fuzzSeed{target: "FuzzVerify", name: name + ".token", data: enc(3, testSecret, body, 0)},
				fuzzSeed{target: "FuzzVerify", name: name + ".wrong", data: enc(3, "not the token", body, 0)})
		}
	}
	return seeds
}
