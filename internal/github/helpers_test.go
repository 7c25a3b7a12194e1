package github_test

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/kilnci/kiln/internal/github"
	"github.com/kilnci/kiln/internal/github/fakegithub"
)

const (
	appID          = 4242
	installationID = 31337
	pat            = "github_pat_11AAAAAAA0test"
)

// Two keys for the whole package: RSA key generation is slow.
var keys = sync.OnceValue(func() [2]*rsa.PrivateKey {
	var k [2]*rsa.PrivateKey
	for i := range k {
		var err error
		if k[i], err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
			panic(err)
		}
	}
	return k
})

func pemOf(k *rsa.PrivateKey) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)})
}

func newFake(t *testing.T, opts ...fakegithub.Option) *fakegithub.Server {
	t.Helper()
	s := fakegithub.New(opts...)
	t.Cleanup(s.Close)
	s.RegisterApp(appID, &keys()[0].PublicKey, installationID)
	s.AddToken(pat)
	return s
}

func appConfig(s *fakegithub.Server) github.Config {
	return github.Config{BaseURL: s.URL(), AppID: appID, PrivateKeyPEM: pemOf(keys()[0]), InstallationID: installationID}
}

func newClient(t *testing.T, cfg github.Config) *github.Client {
	t.Helper()
	c, err := github.New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return c
}

func appClient(t *testing.T, s *fakegithub.Server) *github.Client {
	return newClient(t, appConfig(s))
}

func tokenClient(t *testing.T, s *fakegithub.Server) *github.Client {
	return newClient(t, github.Config{BaseURL: s.URL(), Token: pat})
}

// register plays the runner: it hands the JIT config to the fake broker.
func register(t *testing.T, s *fakegithub.Server, jit github.JITConfig) fakegithub.Assignment {
	t.Helper()
	body, _ := json.Marshal(map[string]string{"jitconfig": jit.EncodedJITConfig})
	resp, err := http.Post(s.BrokerURL()+"_fake/runner/register", "application/json", strings.NewReader(string(body)))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("register: %s", resp.Status)
	}
	var a fakegithub.Assignment
	if err := json.NewDecoder(resp.Body).Decode(&a); err != nil {
		t.Fatal(err)
	}
	return a
}
