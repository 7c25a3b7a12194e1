package api

import (
	"net/http/httptest"
	"testing"
)

// clientAddr believes X-Forwarded-For only from a trusted proxy, and of
// it only the hops that trusted proxies wrote: from the right, the first
// address that is not a trusted proxy is the client.
func TestClientAddr(t *testing.T) {
	trusted, err := ParseTrustedProxies("10.0.0.0/8,2001:db8::/32")
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{cfg: Config{TrustedProxies: trusted}}
	for _, c := range []struct {
		peer string
		xff  []string
		want string
	}{
		{"192.0.2.1:5000", nil, "192.0.2.1"},
		{"192.0.2.1:5000", []string{"198.51.100.7"}, "192.0.2.1"}, // not from a proxy: ignored
		{"10.0.0.2:5000", nil, "10.0.0.2"},
		{"10.0.0.2:5000", []string{"198.51.100.7"}, "198.51.100.7"},
		{"10.0.0.2:5000", []string{"203.0.113.9, 198.51.100.7"}, "198.51.100.7"}, // the left one the client wrote
		{"10.0.0.2:5000", []string{"198.51.100.7, 10.1.1.1"}, "198.51.100.7"},    // two proxies
		{"10.0.0.2:5000", []string{"198.51.100.7", "10.1.1.1"}, "198.51.100.7"},  // in two headers
		{"10.0.0.2:5000", []string{"not-an-address, 10.1.1.1"}, "10.1.1.1"},      // nothing left of garbage
		{"10.0.0.2:5000", []string{"10.1.1.1"}, "10.1.1.1"},                      // all proxies: the farthest
		{"[2001:db8::5]:5000", []string{"::ffff:198.51.100.7"}, "198.51.100.7"},
		{"[::ffff:10.0.0.2]:5000", []string{"198.51.100.7"}, "198.51.100.7"},
	} {
		r := httptest.NewRequest("GET", "/", nil)
		r.RemoteAddr = c.peer
		for _, v := range c.xff {
			r.Header.Add("X-Forwarded-For", v)
		}
		if got := s.clientAddr(r); got != c.want {
			t.Errorf("peer %s, X-Forwarded-For %q: %s, want %s", c.peer, c.xff, got, c.want)
		}
	}
}
