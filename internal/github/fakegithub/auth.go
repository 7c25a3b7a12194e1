package fakegithub

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

type app struct {
	id  int64
	pub *rsa.PublicKey
}

// RegisterApp registers a GitHub App: the token exchange accepts JWTs with
// iss = appID signed (RS256) by the private half of pub, for the given
// installations. The first installation registered is the one
// WorkflowJobPayload puts in webhooks.
func (s *Server) RegisterApp(appID int64, pub *rsa.PublicKey, installations ...int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.apps[appID] = &app{id: appID, pub: pub}
	for _, id := range installations {
		if _, ok := s.installations[id]; !ok {
			s.instOrder = append(s.instOrder, id)
		}
		s.installations[id] = appID
	}
}

// AddToken accepts token (a personal access token, say) on every API call.
func (s *Server) AddToken(token string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tokens[token] = time.Time{}
}

// SetTokenTTL sets the lifetime of installation tokens issued from now on
// (GitHub's is an hour). A TTL under a minute makes ghinstallation, which
// refreshes a token a minute before it expires, fetch a new one on every
// request.
func (s *Server) SetTokenTTL(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tokenTTL = d
}

// TokensIssued is how many installation tokens the fake has issued.
func (s *Server) TokensIssued() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.issued
}

// authenticated reports whether r carries a live token. Called with s.mu held.
func (s *Server) authenticated(r *http.Request) bool {
	scheme, tok, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || (!strings.EqualFold(scheme, "token") && !strings.EqualFold(scheme, "bearer")) {
		return false
	}
	exp, ok := s.tokens[tok]
	return ok && (exp.IsZero() || s.now().Before(exp))
}

// accessToken is POST /app/installations/{id}/access_tokens.
func (s *Server) accessToken(w http.ResponseWriter, r *http.Request) {
	scheme, jwt, _ := strings.Cut(r.Header.Get("Authorization"), " ")
	if !strings.EqualFold(scheme, "bearer") {
		writeError(w, http.StatusUnauthorized, "A JSON web token could not be decoded")
		return
	}
	instID, ok := pathID(r, "id")
	s.mu.Lock()
	defer s.mu.Unlock()
	appID, err := verifyJWT(jwt, s.apps, s.now())
	if err != nil {
		writeError(w, http.StatusUnauthorized, err.Error())
		return
	}
	if !ok || s.installations[instID] != appID {
		writeError(w, http.StatusNotFound, "Not Found")
		return
	}
	tok := "ghs_" + randomString(36)
	exp := s.now().Add(s.tokenTTL).Truncate(time.Second)
	s.tokens[tok] = exp
	s.issued++
	writeJSON(w, http.StatusCreated, map[string]any{
		"token":      tok,
		"expires_at": exp.UTC().Format(time.RFC3339),
		"permissions": map[string]string{
			"actions":                          "read",
			"administration":                   "write",
			"checks":                           "write",
			"metadata":                         "read",
			"organization_self_hosted_runners": "write",
			"statuses":                         "write",
		},
		"repository_selection": "all",
	})
}

// verifyJWT checks a GitHub App JWT as GitHub documents it: RS256, iss the
// app id, integer iat and exp, exp in the future and at most 10 minutes
// after iat. It is written here from the spec, not with the library that
// signs, so that the two check each other.
func verifyJWT(tok string, apps map[int64]*app, now time.Time) (int64, error) {
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return 0, errors.New("A JSON web token could not be decoded")
	}
	var hdr struct {
		Alg string `json:"alg"`
	}
	var claims struct {
		Iss json.RawMessage `json:"iss"`
		Iat json.Number     `json:"iat"`
		Exp json.Number     `json:"exp"`
	}
	if err := decodeSegment(parts[0], &hdr); err != nil {
		return 0, errors.New("A JSON web token could not be decoded")
	}
	if hdr.Alg != "RS256" {
		return 0, fmt.Errorf("JWT algorithm %q is not RS256", hdr.Alg)
	}
	if err := decodeSegment(parts[1], &claims); err != nil {
		return 0, errors.New("A JSON web token could not be decoded")
	}
	// GitHub takes iss as a number or a string of digits.
	iss := strings.Trim(string(claims.Iss), `"`)
	appID, err := strconv.ParseInt(iss, 10, 64)
	a := apps[appID]
	if err != nil || a == nil {
		return 0, fmt.Errorf("'Issuer' claim ('iss') must be an Integer of a registered app, got %s", claims.Iss)
	}
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil {
		return 0, errors.New("A JSON web token could not be decoded")
	}
	digest := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	if err := rsa.VerifyPKCS1v15(a.pub, crypto.SHA256, digest[:], sig); err != nil {
		return 0, errors.New("Signature verification failed") //nolint:staticcheck // GitHub's own message
	}
	iat, err1 := claims.Iat.Int64()
	exp, err2 := claims.Exp.Int64()
	switch {
	case err1 != nil:
		return 0, errors.New("'Issued at' claim ('iat') must be an Integer representing the time that the assertion was issued")
	case err2 != nil:
		return 0, errors.New("'Expiration time' claim ('exp') must be a numeric value representing the future time at which the assertion expires")
	case exp <= now.Unix():
		return 0, errors.New("'Expiration time' claim ('exp') is too far in the past")
	case iat > now.Unix()+60:
		return 0, errors.New("'Issued at' claim ('iat') must be an Integer representing a time in the past")
	case exp-iat > 600:
		return 0, errors.New("'Expiration time' claim ('exp') is too far in the future")
	}
	return appID, nil
}

func decodeSegment(seg string, v any) error {
	b, err := base64.RawURLEncoding.DecodeString(seg)
	if err != nil {
		return err
	}
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	return d.Decode(v)
}

func randomString(n int) string {
	const alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
	b := make([]byte, n)
	_, _ = rand.Read(b)
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b)
}
