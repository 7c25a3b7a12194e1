package cache

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Job tokens are JWT-shaped (HS256). The client treats them as opaque and
// sends them back as "Authorization: Bearer …". Blob URLs carry their own
// signature (sig) over the entry id, the operation and the expiry, so the
// Azure SDK, which sends no Authorization header, can use them. The two
// signatures use different key derivations, so one can never stand in for
// the other.

var b64 = base64.RawURLEncoding

const jwtHeader = `{"alg":"HS256","typ":"JWT"}`

type tokenClaims struct {
	Project       string `json:"prj"`
	Branch        string `json:"br"`
	DefaultBranch string `json:"def,omitempty"`
	BaseBranch    string `json:"base,omitempty"`
	ReadOnly      bool   `json:"ro,omitempty"`
	IssuedAt      int64  `json:"iat"`
	Expires       int64  `json:"exp"`
}

func (s *Service) mac(purpose string, msg []byte) []byte {
	k := hmac.New(sha256.New, s.cfg.SigningKey)
	k.Write([]byte("kiln-cache/" + purpose))
	h := hmac.New(sha256.New, k.Sum(nil))
	h.Write(msg)
	return h.Sum(nil)
}

// IssueToken signs a token granting scope for ttl.
func (s *Service) IssueToken(scope Scope, ttl time.Duration) (string, error) {
	if scope.Project == "" || scope.Branch == "" {
		return "", errorf(ErrInvalid, "token scope needs a project and a branch")
	}
	if ttl <= 0 {
		return "", errorf(ErrInvalid, "token ttl must be positive")
	}
	now := s.now()
	payload, err := json.Marshal(tokenClaims{
		Project: scope.Project, Branch: scope.Branch, DefaultBranch: scope.DefaultBranch,
		BaseBranch: scope.BaseBranch, ReadOnly: scope.ReadOnly,
		IssuedAt: now.Unix(), Expires: now.Add(ttl).Unix(),
	})
	if err != nil {
		return "", err
	}
	signed := b64.EncodeToString([]byte(jwtHeader)) + "." + b64.EncodeToString(payload)
	return signed + "." + b64.EncodeToString(s.mac("token", []byte(signed))), nil
}

// verifyToken checks a token's signature and expiry and returns its scope.
func (s *Service) verifyToken(token string) (Scope, error) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return Scope{}, errorf(ErrUnauthenticated, "malformed token")
	}
	sig, err := b64.DecodeString(parts[2])
	if err != nil || !hmac.Equal(sig, s.mac("token", []byte(parts[0]+"."+parts[1]))) {
		return Scope{}, errorf(ErrUnauthenticated, "bad token signature")
	}
	if h, err := b64.DecodeString(parts[0]); err != nil || string(h) != jwtHeader {
		return Scope{}, errorf(ErrUnauthenticated, "unsupported token header")
	}
	raw, err := b64.DecodeString(parts[1])
	if err != nil {
		return Scope{}, errorf(ErrUnauthenticated, "malformed token payload")
	}
	var c tokenClaims
	if err := json.Unmarshal(raw, &c); err != nil {
		return Scope{}, errorf(ErrUnauthenticated, "malformed token payload")
	}
	if s.now().Unix() >= c.Expires {
		return Scope{}, errorf(ErrUnauthenticated, "token expired")
	}
	if c.Project == "" || c.Branch == "" {
		return Scope{}, errorf(ErrUnauthenticated, "token has no scope")
	}
	return Scope{Project: c.Project, Branch: c.Branch, DefaultBranch: c.DefaultBranch,
		BaseBranch: c.BaseBranch, ReadOnly: c.ReadOnly}, nil
}

// authenticate reads the bearer token of r.
func (s *Service) authenticate(r *http.Request) (Scope, error) {
	h := r.Header.Get("Authorization")
	token, ok := strings.CutPrefix(h, "Bearer ")
	if !ok {
		return Scope{}, errorf(ErrUnauthenticated, "missing bearer token")
	}
	return s.verifyToken(strings.TrimSpace(token))
}

// Blob URL operations.
const (
	opRead  = "r"
	opWrite = "w"
)

const blobPrefix = "/cache-blobs/"

// blobURL is the signed URL of entry id's blob for op, valid for ttl. The
// path has three segments so the Azure SDK, which reads
// /account/container/blob from IP-style hosts and /container/blob from
// others, finds a container and a blob name in either case.
func (s *Service) blobURL(id int64, op string, ttl time.Duration) string {
	exp := strconv.FormatInt(s.now().Add(ttl).Unix(), 10)
	q := url.Values{"sp": {op}, "se": {exp}, "sig": {s.blobSig(id, op, exp)}}
	return fmt.Sprintf("%s%s%d/cache?%s", s.cfg.PublicURL, blobPrefix, id, q.Encode())
}

func (s *Service) blobSig(id int64, op, exp string) string {
	return b64.EncodeToString(s.mac("blob", fmt.Appendf(nil, "%d\n%s\n%s", id, op, exp)))
}

// verifyBlobURL checks that q signs op on entry id and has not expired.
func (s *Service) verifyBlobURL(id int64, op string, q url.Values) error {
	exp := q.Get("se")
	if q.Get("sp") != op || exp == "" {
		return errorf(ErrForbidden, "URL does not permit this operation")
	}
	if !hmac.Equal([]byte(q.Get("sig")), []byte(s.blobSig(id, op, exp))) {
		return errorf(ErrForbidden, "bad URL signature")
	}
	e, err := strconv.ParseInt(exp, 10, 64)
	if err != nil || s.now().Unix() >= e {
		return errorf(ErrForbidden, "URL expired")
	}
	return nil
}
