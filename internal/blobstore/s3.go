package blobstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// S3Config says where an S3 store's blobs live. Credentials come from the
// environment (CredentialsFromEnv), never from flags.
type S3Config struct {
	// Endpoint is host[:port], or an http(s):// URL without a path.
	Endpoint string
	Bucket   string
	// Region defaults to us-east-1 (most S3-compatible servers ignore it).
	Region string
	// Prefix is prepended to every name, joined with "/" (may be empty).
	Prefix string
	// Insecure speaks plain http to the endpoint (tests, a local server).
	Insecure bool

	AccessKey, SecretKey, SessionToken string
}

// Enabled reports whether an S3 store is configured at all.
func (c S3Config) Enabled() bool { return c.Endpoint != "" || c.Bucket != "" }

// S3CredentialsFromEnv fills the credentials from KILN_S3_ACCESS_KEY,
// KILN_S3_SECRET_KEY and KILN_S3_SESSION_TOKEN, or else from
// AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN.
func (c *S3Config) CredentialsFromEnv(getenv func(string) string) error {
	for _, names := range [][3]string{
		{"KILN_S3_ACCESS_KEY", "KILN_S3_SECRET_KEY", "KILN_S3_SESSION_TOKEN"},
		{"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"},
	} {
		ak, sk := getenv(names[0]), getenv(names[1])
		if ak == "" && sk == "" {
			continue
		}
		if ak == "" || sk == "" {
			return fmt.Errorf("blobstore: set both %s and %s, or neither", names[0], names[1])
		}
		c.AccessKey, c.SecretKey, c.SessionToken = ak, sk, getenv(names[2])
		return nil
	}
	return errors.New("blobstore: no S3 credentials in the environment: set KILN_S3_ACCESS_KEY and KILN_S3_SECRET_KEY (or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)")
}

// S3 keeps each blob as an object (Prefix/name) in a bucket of an
// S3-compatible store, through minio-go. Downloads can skip the caller
// entirely: PresignGet signs a GET URL (SigV4, query string).
type S3 struct {
	c      *minio.Client
	bucket string
	prefix string
	where  string // endpoint/bucket, for errors
}

// NewS3 connects to the store and checks that the bucket is reachable with
// the credentials, so a misconfiguration shows at start, not at the first
// upload.
func NewS3(ctx context.Context, cfg S3Config) (*S3, error) {
	host, secure, err := s3Endpoint(cfg.Endpoint, cfg.Insecure)
	if err != nil {
		return nil, err
	}
	if cfg.Bucket == "" {
		return nil, errors.New("blobstore: S3 bucket: required")
	}
	if cfg.AccessKey == "" || cfg.SecretKey == "" {
		return nil, errors.New("blobstore: S3 credentials: required (from the environment)")
	}
	prefix := strings.Trim(cfg.Prefix, "/")
	if prefix != "" {
		if err := CheckName(prefix); err != nil {
			return nil, fmt.Errorf("blobstore: S3 prefix %q: letters, digits, '.', '-', '_' and '/' only", cfg.Prefix)
		}
		prefix += "/"
	}
	region := cfg.Region
	if region == "" {
		region = "us-east-1" // known, so presigning needs no round trip
	}
	c, err := minio.New(host, &minio.Options{
		Creds:  credentials.NewStaticV4(cfg.AccessKey, cfg.SecretKey, cfg.SessionToken),
		Secure: secure,
		Region: region,
	})
	if err != nil {
		return nil, fmt.Errorf("blobstore: S3 endpoint %q: %w", cfg.Endpoint, err)
	}
	s := &S3{c: c, bucket: cfg.Bucket, prefix: prefix, where: c.EndpointURL().String() + "/" + cfg.Bucket}
	ok, err := c.BucketExists(ctx, cfg.Bucket)
	if err != nil {
		return nil, fmt.Errorf("blobstore: cannot reach S3 bucket %s: %w", s.where, err)
	}
	if !ok {
		return nil, fmt.Errorf("blobstore: S3 bucket %s does not exist (create it first)", s.where)
	}
	return s, nil
}

// s3Endpoint turns an endpoint into minio's host and TLS flag.
func s3Endpoint(ep string, insecure bool) (string, bool, error) {
	if ep == "" {
		return "", false, errors.New("blobstore: S3 endpoint: required")
	}
	if !strings.Contains(ep, "://") {
		return ep, !insecure, nil
	}
	u, err := url.Parse(ep)
	if err != nil || u.Host == "" || strings.Trim(u.Path, "/") != "" || u.RawQuery != "" || u.User != nil {
		return "", false, fmt.Errorf("blobstore: S3 endpoint %q: want host[:port] or scheme://host[:port], no path or credentials", ep)
	}
	switch {
	case u.Scheme == "https":
		return u.Host, true, nil
	case u.Scheme == "http" && insecure:
		return u.Host, false, nil
	case u.Scheme == "http":
		return "", false, fmt.Errorf("blobstore: S3 endpoint %q is plain http: allow it explicitly (insecure)", ep)
	}
	return "", false, fmt.Errorf("blobstore: S3 endpoint %q: scheme must be http or https", ep)
}

func (s *S3) key(name string) (string, error) {
	if err := CheckName(name); err != nil {
		return "", err
	}
	return s.prefix + name, nil
}

func (s *S3) Put(ctx context.Context, name string, r io.Reader, size int64) error {
	k, err := s.key(name)
	if err != nil {
		return err
	}
	// The client reads exactly size bytes; exactReader fails the upload
	// (so nothing is committed) if r holds fewer or more.
	_, err = s.c.PutObject(ctx, s.bucket, k, &exactReader{r: r, left: size}, size,
		minio.PutObjectOptions{ContentType: "application/octet-stream"})
	if err != nil {
		if errors.Is(err, ErrSize) {
			return err
		}
		return s.fail("put", name, err)
	}
	return nil
}

// PutFile uploads the file (in parallel parts above 16 MiB) and removes it.
// 64 MiB parts, 8 at a time: against versitygw on the same host a 1 GiB
// file took 8 s instead of the client's default 14 s (16 MiB parts, 4 at a
// time), with 67 MiB allocated; parts are read from the file, not held.
func (s *S3) PutFile(ctx context.Context, name, path string) error {
	k, err := s.key(name)
	if err != nil {
		return err
	}
	opts := minio.PutObjectOptions{ContentType: "application/octet-stream", PartSize: 64 << 20, NumThreads: 8}
	if _, err := s.c.FPutObject(ctx, s.bucket, k, path, opts); err != nil {
		return s.fail("put", name, err)
	}
	if err := os.Remove(path); err != nil {
		return fmt.Errorf("blobstore: %w", err)
	}
	return nil
}

type s3Blob struct {
	*minio.Object
	info Info
}

func (b s3Blob) Info() Info { return b.info }

// Open stats the object first, so a missing blob is ErrNotFound here and
// not at the first read; reads are ranged GETs as the reader seeks.
func (s *S3) Open(ctx context.Context, name string) (Blob, error) {
	k, err := s.key(name)
	if err != nil {
		return nil, err
	}
	o, err := s.c.GetObject(ctx, s.bucket, k, minio.GetObjectOptions{})
	if err != nil {
		return nil, s.fail("open", name, err)
	}
	st, err := o.Stat()
	if err != nil {
		o.Close()
		return nil, s.fail("open", name, err)
	}
	return s3Blob{o, Info{Size: st.Size, ModTime: st.LastModified}}, nil
}

func (s *S3) Stat(ctx context.Context, name string) (Info, error) {
	k, err := s.key(name)
	if err != nil {
		return Info{}, err
	}
	st, err := s.c.StatObject(ctx, s.bucket, k, minio.StatObjectOptions{})
	if err != nil {
		return Info{}, s.fail("stat", name, err)
	}
	return Info{Size: st.Size, ModTime: st.LastModified}, nil
}

func (s *S3) Delete(ctx context.Context, name string) error {
	k, err := s.key(name)
	if err != nil {
		return err
	}
	if err := s.c.RemoveObject(ctx, s.bucket, k, minio.RemoveObjectOptions{}); err != nil && !isNotFound(err) {
		return s.fail("delete", name, err)
	}
	return nil
}

// List returns the names under the prefix; keys that are not valid names
// were not put through a Store and are left out.
func (s *S3) List(ctx context.Context) ([]string, error) {
	var out []string
	for o := range s.c.ListObjects(ctx, s.bucket, minio.ListObjectsOptions{Prefix: s.prefix, Recursive: true}) {
		if o.Err != nil {
			return nil, fmt.Errorf("blobstore: list %s/%s: %w", s.where, s.prefix, o.Err)
		}
		if name := strings.TrimPrefix(o.Key, s.prefix); CheckName(name) == nil {
			out = append(out, name)
		}
	}
	return out, nil
}

// PresignGet signs a GET for ttl (S3 allows at most 7 days). Signing is
// local: nothing is sent to the store, and the URL works for a blob put
// later, until it expires.
func (s *S3) PresignGet(ctx context.Context, name string, ttl time.Duration) (string, error) {
	k, err := s.key(name)
	if err != nil {
		return "", err
	}
	u, err := s.c.PresignedGetObject(ctx, s.bucket, k, ttl, nil)
	if err != nil {
		return "", s.fail("presign", name, err)
	}
	return u.String(), nil
}

func (s *S3) fail(op, name string, err error) error {
	if isNotFound(err) {
		return fmt.Errorf("blobstore: %s: %w", name, ErrNotFound)
	}
	return fmt.Errorf("blobstore: %s %s in %s: %w", op, name, s.where, err)
}

func isNotFound(err error) bool {
	r := minio.ToErrorResponse(err)
	return r.Code == "NoSuchKey" || r.StatusCode == http.StatusNotFound && r.Code != "NoSuchBucket"
}

// exactReader yields exactly left bytes of r and fails, instead of ending,
// if r ends early or holds more.
type exactReader struct {
	r    io.Reader
	left int64
	read int64
}

func (e *exactReader) Read(p []byte) (int, error) {
	if e.left == 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > e.left {
		p = p[:e.left]
	}
	n, err := e.r.Read(p)
	e.left -= int64(n)
	e.read += int64(n)
	if e.left == 0 {
		var one [1]byte
		if k, _ := io.ReadFull(e.r, one[:]); k > 0 {
			// Withhold the last byte: a client that reads with
			// io.ReadFull drops an error that comes with a full buffer.
			return n - 1, fmt.Errorf("%w: body is longer than the %d bytes announced", ErrSize, e.read)
		}
		return n, nil
	}
	if errors.Is(err, io.EOF) {
		return n, fmt.Errorf("%w: body ended after %d of %d bytes", ErrSize, e.read, e.read+e.left)
	}
	return n, err
}
