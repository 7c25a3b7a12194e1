// Package brokertap puts a recording proxy in front of fakegithub's runner
// broker, for tests and benchmarks of runners in containers: it listens on
// every address of the host, so a container on any bridge network reaches
// it through its default gateway (the fake runner resolves host.kiln.test
// to that gateway), points the fake's JIT configurations at itself, and
// notes every register call: when it arrived, which runner it registered,
// and the JIT configuration it carried (so a test can look for that
// secret where it must not be). The fake itself stays on loopback.
package brokertap

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"sync"
	"time"

	"github.com/kilnci/kiln/internal/github/fakegithub"
)

// HostAlias is the name the fake runner resolves to its default gateway.
const HostAlias = "host.kiln.test"

// Register is one successful register call.
type Register struct {
	RunnerID  int64
	JobID     int64 // the job the broker assigned at once; 0: none yet
	JITConfig string
	At        time.Time // when the call arrived
}

// Tap is the proxy.
type Tap struct {
	srv  *http.Server
	port int

	mu   sync.Mutex
	regs []Register
}

type arrival struct{}

type pending struct {
	at  time.Time
	jit string
}

// Start serves the tap on 0.0.0.0 and makes fake's JIT configurations
// from now on send runners to http://host.kiln.test:PORT.
func Start(fake *fakegithub.Server) (*Tap, error) {
	ln, err := net.Listen("tcp", "0.0.0.0:0")
	if err != nil {
		return nil, err
	}
	target, err := url.Parse(fake.URL())
	if err != nil {
		ln.Close()
		return nil, err
	}
	t := &Tap{port: ln.Addr().(*net.TCPAddr).Port}
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.ModifyResponse = t.record
	t.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/_fake/runner/register" {
			p := &pending{at: time.Now()}
			body, _ := io.ReadAll(r.Body)
			r.Body = io.NopCloser(bytes.NewReader(body))
			var req struct {
				JITConfig string `json:"jitconfig"`
			}
			_ = json.Unmarshal(body, &req)
			p.jit = req.JITConfig
			r = r.WithContext(context.WithValue(r.Context(), arrival{}, p))
		}
		rp.ServeHTTP(w, r)
	})}
	go t.srv.Serve(ln)
	fake.SetBrokerURL(t.URL())
	return t, nil
}

// URL is the broker's address as runners in containers see it.
func (t *Tap) URL() string { return fmt.Sprintf("http://%s:%d", HostAlias, t.port) }

// Close stops the tap.
func (t *Tap) Close() { t.srv.Close() }

// record notes a successful register call from the broker's answer.
func (t *Tap) record(resp *http.Response) error {
	p, ok := resp.Request.Context().Value(arrival{}).(*pending)
	if !ok || resp.StatusCode != http.StatusOK {
		return nil
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	resp.Body = io.NopCloser(bytes.NewReader(body))
	if err != nil {
		return err
	}
	var a fakegithub.Assignment
	if err := json.Unmarshal(body, &a); err != nil {
		return nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.regs = append(t.regs, Register{RunnerID: a.RunnerID, JobID: a.JobID, JITConfig: p.jit, At: p.at})
	return nil
}

// Registered returns the register call of runner id.
func (t *Tap) Registered(id int64) (Register, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, r := range t.regs {
		if r.RunnerID == id {
			return r, true
		}
	}
	return Register{}, false
}

// Registers returns every successful register call, in order.
func (t *Tap) Registers() []Register {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]Register(nil), t.regs...)
}
