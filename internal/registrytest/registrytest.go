// Package registrytest starts a real container registry for tests:
// Distribution (Debian's docker-registry, 2.8) with htpasswd basic auth
// and TLS from a certificate authority the test makes, behind a small
// reverse proxy that counts manifest requests and can be made to answer
// 500. The engines are made to trust the CA (or not) through their
// certs.d directories. Tests that use it skip when docker-registry or
// skopeo is missing, unless KILN_REQUIRE_ENGINES=1 (scripts/test.sh
// installs them).
package registrytest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/docker/docker/client"
	"golang.org/x/crypto/bcrypt"

	"github.com/kilnci/kiln/internal/testenv"
)

// Options says how to start a registry.
type Options struct {
	User, Password string // htpasswd's one user; defaults "kiln", a random password
	// Untrusted leaves the engines' certs.d alone: pulls fail on the
	// certificate.
	Untrusted bool
}

// Registry is a running registry. Host is the address images are named
// with ("192.0.2.2:PORT"): the counting front, on a non-loopback address
// (Docker treats 127.0.0.0/8 as an insecure registry and would skip the
// certificate check).
type Registry struct {
	Host           string
	User, Password string
	CAPEM          []byte

	manifests atomic.Int64
	fail      atomic.Bool
	dir       string
	front     *http.Server
}

// Manifests is how many manifest requests (GET or HEAD) the front has
// passed to the registry.
func (r *Registry) Manifests() int64 { return r.manifests.Load() }

// Fail makes the front answer every request with 500 (true) or pass them
// on again (false).
func (r *Registry) Fail(on bool) { r.fail.Store(on) }

// Require skips t when the registry's tools are missing, or fails it
// under KILN_REQUIRE_ENGINES=1.
func Require(t testing.TB) {
	t.Helper()
	for _, tool := range []string{"docker-registry", "skopeo"} {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("KILN_REQUIRE_ENGINES") == "1" {
				t.Fatalf("%s is not installed (apt-get install docker-registry skopeo; scripts/test.sh does)", tool)
			}
			t.Skipf("%s is not installed", tool)
		}
	}
}

// HostIP is the first non-loopback IPv4 address of the machine.
func HostIP(t testing.TB) string {
	t.Helper()
	ifs, err := net.Interfaces()
	if err != nil {
		t.Fatal(err)
	}
	for _, ifc := range ifs {
		if ifc.Flags&net.FlagLoopback != 0 || ifc.Flags&net.FlagUp == 0 || strings.HasPrefix(ifc.Name, "docker") || strings.HasPrefix(ifc.Name, "br-") {
			continue
		}
		addrs, _ := ifc.Addrs()
		for _, a := range addrs {
			if ipn, ok := a.(*net.IPNet); ok && ipn.IP.To4() != nil {
				return ipn.IP.String()
			}
		}
	}
	t.Skip("no non-loopback IPv4 address for a registry the engines check certificates of")
	return ""
}

// Start starts a registry and its front, stopped and removed at the end
// of the test (the engines' certs.d entries too).
func Start(t testing.TB, opts Options) *Registry {
	t.Helper()
	Require(t)
	if opts.User == "" {
		opts.User = "kiln"
	}
	if opts.Password == "" {
		b := make([]byte, 12)
		_, _ = rand.Read(b)
		opts.Password = "pw-" + base64.RawURLEncoding.EncodeToString(b)
	}
	ip := HostIP(t)
	dir := t.TempDir()
	caPEM, certPEM, keyPEM := makeCerts(t, ip)
	write(t, filepath.Join(dir, "ca.crt"), caPEM)
	write(t, filepath.Join(dir, "cert.pem"), certPEM)
	write(t, filepath.Join(dir, "key.pem"), keyPEM)
	hash, err := bcrypt.GenerateFromPassword([]byte(opts.Password), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(dir, "htpasswd"), []byte(opts.User+":"+string(hash)+"\n"))

	backAddr := freeAddr(t, "127.0.0.1")
	cfg := fmt.Sprintf(`version: 0.1
log: {level: warn, accesslog: {disabled: true}}
storage:
  filesystem: {rootdirectory: %s}
  delete: {enabled: true}
http:
  addr: %s
  tls: {certificate: %s, key: %s}
auth:
  htpasswd: {realm: kiln-test, path: %s}
`, filepath.Join(dir, "data"), backAddr, filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem"), filepath.Join(dir, "htpasswd"))
	write(t, filepath.Join(dir, "config.yml"), []byte(cfg))
	logf, err := os.Create(filepath.Join(dir, "registry.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("docker-registry", "serve", filepath.Join(dir, "config.yml"))
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatalf("start docker-registry: %v", err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		logf.Close()
	})

	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	backURL := &url.URL{Scheme: "https", Host: backAddr}
	r := &Registry{User: opts.User, Password: opts.Password, CAPEM: caPEM, dir: dir}
	proxy := httputil.NewSingleHostReverseProxy(backURL)
	proxy.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", ip+":0", &tls.Config{Certificates: []tls.Certificate{pair}})
	if err != nil {
		t.Fatal(err)
	}
	r.Host = ln.Addr().String()
	r.front = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if r.fail.Load() {
			http.Error(w, "injected failure", http.StatusInternalServerError)
			return
		}
		if strings.Contains(req.URL.Path, "/manifests/") && (req.Method == http.MethodGet || req.Method == http.MethodHead) {
			r.manifests.Add(1)
		}
		proxy.ServeHTTP(w, req)
	}), ReadHeaderTimeout: 10 * time.Second,
		// An engine that does not trust the CA hangs up mid-handshake: expected.
		ErrorLog: log.New(io.Discard, "", 0)}
	go func() { _ = r.front.Serve(ln) }()
	t.Cleanup(func() { _ = r.front.Close() })

	// Up when /v2/ asks for credentials.
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}, Timeout: 2 * time.Second}
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := c.Get(backURL.String() + "/v2/")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusUnauthorized {
				break
			}
		}
		if time.Now().After(deadline) {
			out, _ := os.ReadFile(filepath.Join(dir, "registry.log"))
			t.Fatalf("docker-registry did not come up on %s: %v\n%s", backAddr, err, out)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !opts.Untrusted {
		r.trust(t)
	}
	return r
}

// trust writes the CA where both engines read a registry's CA from, per
// HOST:PORT, read again on each pull.
func (r *Registry) trust(t testing.TB) {
	for _, base := range []string{"/etc/docker/certs.d", "/etc/containers/certs.d"} {
		d := filepath.Join(base, r.Host)
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatalf("trust the registry's CA: %v", err)
		}
		write(t, filepath.Join(d, "ca.crt"), r.CAPEM)
		t.Cleanup(func() { _ = os.RemoveAll(d) })
	}
}

// Push copies an image archive (docker save's format) into the registry
// as ref's repository and tag ("kiln/busybox:latest"), with skopeo, the
// credentials in an auth file (never in its arguments).
func (r *Registry) Push(t testing.TB, archive, ref string) {
	t.Helper()
	auth := map[string]any{"auths": map[string]any{r.Host: map[string]string{
		"auth": base64.StdEncoding.EncodeToString([]byte(r.User + ":" + r.Password)),
	}}}
	b, _ := json.Marshal(auth)
	authFile := filepath.Join(r.dir, "auth.json")
	write(t, authFile, b)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "skopeo", "copy", "-q", "--dest-authfile", authFile, "--dest-cert-dir", r.dir,
		"docker-archive:"+archive, "docker://"+r.Host+"/"+ref).CombinedOutput()
	if err != nil {
		t.Fatalf("skopeo copy %s to %s/%s: %v\n%s", archive, r.Host, ref, err, out)
	}
}

// DownAddr is an address on the registry's host where nothing listens.
func DownAddr(t testing.TB) string {
	return freeAddr(t, HostIP(t))
}

func freeAddr(t testing.TB, ip string) string {
	t.Helper()
	ln, err := net.Listen("tcp", ip+":0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func write(t testing.TB, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// makeCerts makes a CA and a server certificate it signed for ip and
// 127.0.0.1.
func makeCerts(t testing.TB, ip string) (caPEM, certPEM, keyPEM []byte) {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	ca := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "kiln registrytest CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	leaf := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: ip},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{net.ParseIP(ip), net.ParseIP("127.0.0.1")},
	}
	der, err := x509.CreateCertificate(rand.Reader, leaf, caCert, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}),
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb})
}

// SaveImage writes image, from the engine at engineHost (Docker's API:
// Docker or Podman's socket), to a file in docker save's format, for
// Push.
func SaveImage(t testing.TB, engineHost, image string) string {
	t.Helper()
	cli, err := client.NewClientWithOpts(client.WithHost(engineHost), client.WithAPIVersionNegotiation())
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	rc, err := cli.ImageSave(context.Background(), []string{image})
	if err != nil {
		t.Fatalf("save %s from %s: %v", image, engineHost, err)
	}
	defer rc.Close()
	path := filepath.Join(t.TempDir(), "image.tar")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(f, rc); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

// WithBase starts a registry (Start, default options) holding the base
// image (testenv.BaseImage, saved from the engine at engineHost) as
// kiln/busybox:latest, and returns it with that image's reference.
func WithBase(t testing.TB, engineHost string) (*Registry, string) {
	t.Helper()
	r := Start(t, Options{})
	r.Push(t, SaveImage(t, engineHost, testenv.BaseImage), "kiln/busybox:latest")
	return r, r.Host + "/kiln/busybox:latest"
}
